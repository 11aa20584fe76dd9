//! The Unix-domain socket (`unix_socket_dir`): `<dir>/.s.PGSQL.<port>`, the name libpq
//! looks for with `host=<dir>`, so a sidecar's application reaches the proxy without
//! loopback TCP. As PgBouncer: a stale socket file left by a crash is replaced, a live
//! one is an error, the file gets `unix_socket_mode` and is removed at exit.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::error::ProxyError;

/// A bound Unix socket; its file is removed when this is dropped.
pub(crate) struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl UnixSocket {
    /// Binds `<dir>/.s.PGSQL.<port>` with permissions `mode`.
    ///
    /// # Errors
    /// Another process listens there, or the socket cannot be created.
    pub(crate) fn bind(dir: &Path, port: u16, mode: u32) -> Result<UnixSocket, ProxyError> {
        let path = dir.join(format!(".s.PGSQL.{port}"));
        let failed = |source: io::Error| ProxyError::BindUnix {
            path: path.clone(),
            source,
        };
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(failed(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process is listening on this socket",
                )));
            }
            // Left behind by a proxy that did not exit cleanly.
            std::fs::remove_file(&path).map_err(failed)?;
        }
        let listener = UnixListener::bind(&path).map_err(failed)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
        Ok(UnixSocket { listener, path })
    }

    /// The socket file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next client.
    pub(crate) async fn accept(&self) -> io::Result<UnixStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepts from `socket`, or waits forever when there is none (the branch is off then).
pub(crate) async fn accept(socket: Option<&UnixSocket>) -> io::Result<UnixStream> {
    match socket {
        Some(s) => s.accept().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_a_live_one_refused_and_the_file_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = UnixSocket::bind(dir.path(), 6543, 0o700).expect("bind");
        let mode = std::fs::metadata(first.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let live = UnixSocket::bind(dir.path(), 6543, 0o700);
        assert!(matches!(live, Err(ProxyError::BindUnix { .. })), "in use");
        let path = first.path().to_owned();
        // A crash leaves the file: std's listener does not remove it on drop.
        let stale = std::os::unix::net::UnixListener::bind(dir.path().join(".s.PGSQL.6544"))
            .expect("stale");
        drop(stale);
        let again = UnixSocket::bind(dir.path(), 6544, 0o777).expect("stale file replaced");
        drop(again);
        drop(first);
        assert!(!path.exists(), "removed at exit");
    }
}
