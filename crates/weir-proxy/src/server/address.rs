//! Where a PostgreSQL server listens. A host that starts with `/` names the directory
//! of a Unix socket, as in libpq and PgBouncer: the socket file is
//! `<dir>/.s.PGSQL.<port>`. Anything else is a TCP host name or address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The address a server connection was made to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAddr {
    /// TCP.
    Tcp(SocketAddr),
    /// A Unix socket file.
    Unix(PathBuf),
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp(a) => a.fmt(f),
            ServerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The socket file for `host` and `port` when `host` is a Unix socket directory.
pub fn unix_socket_path(host: &str, port: u16) -> Option<PathBuf> {
    host.starts_with('/')
        .then(|| Path::new(host).join(format!(".s.PGSQL.{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_host_names_the_servers_socket_file() {
        assert_eq!(
            unix_socket_path("/var/run/postgresql", 5433),
            Some(PathBuf::from("/var/run/postgresql/.s.PGSQL.5433"))
        );
        assert_eq!(unix_socket_path("127.0.0.1", 5432), None);
        assert_eq!(unix_socket_path("db.internal", 5432), None);
        assert_eq!(
            ServerAddr::Unix(PathBuf::from("/tmp/.s.PGSQL.5432")).to_string(),
            "unix:/tmp/.s.PGSQL.5432"
        );
    }
}
