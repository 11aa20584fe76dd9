//! The upstream URL: a libpq connection URI such as
//! `postgres://app:secret@db.internal:5432/app`, turned into one database and one user.
//!
//! Follows libpq's URI rules where they apply to a single TCP server: `postgres://` or
//! `postgresql://`, percent-decoding of every part, port 5432 by default, the database
//! name defaulting to the user name, IPv6 hosts in brackets, and the query parameters
//! `user`, `password`, `dbname` and `port` overriding the URI's parts. A Unix-domain
//! socket directory is a host that starts with `/`, percent-encoded in the URI
//! (`postgres://app@%2Fvar%2Frun%2Fpostgresql/app`) or given as `?host=/dir` with the
//! URI's host left empty, as libpq takes them. Host lists and abstract sockets (`@`) are
//! rejected; other query parameters (`sslmode`, `application_name`, ...) are ignored.
//! Errors never echo the URL, which holds a password.

use crate::{Config, ConfigError, DatabaseConfig, Secret, DEFAULT_SERVER_PORT};

/// The parts of an upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
}

impl Config {
    /// Add a one-database, one-user upstream from a libpq URL
    /// `postgres://user:password@host:port/dbname`: the database is registered under its
    /// dbname (replacing one of that name), the user with [`Secret::Plain`] of the password.
    ///
    /// # Errors
    /// [`ConfigError::Url`] for a malformed URL, another scheme, no user or host, a host
    /// list, an abstract-namespace socket, or a bad port. Does not validate the rest of the config.
    pub fn apply_upstream_url(&mut self, url: &str) -> Result<(), ConfigError> {
        let up = parse(url)?;
        self.databases.insert(
            up.dbname,
            DatabaseConfig {
                host: up.host,
                port: up.port,
                ..DatabaseConfig::default()
            },
        );
        let user = self.users.entry(up.user).or_default();
        if let Some(password) = up.password {
            user.password = Some(Secret::Plain(password));
        }
        Ok(())
    }
}

fn url_err(message: impl Into<String>) -> ConfigError {
    ConfigError::Url {
        message: message.into(),
    }
}

/// Parse a libpq connection URI into its parts.
pub(crate) fn parse(url: &str) -> Result<Upstream, ConfigError> {
    let url = url.trim();
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(|| match url.split_once("://") {
            Some((scheme, _)) if !scheme.contains(['@', '/']) => url_err(format!(
                "unsupported scheme `{scheme}`; use postgres:// or postgresql://"
            )),
            _ => url_err("expected a URL like postgres://user:password@host:5432/dbname"),
        })?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (mut user, mut password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (decode(u, "user name")?, Some(decode(p, "password")?)),
            None => (decode(info, "user name")?, None),
        },
        None => (String::new(), None),
    };
    let (host, port) = split_host_port(hostport)?;
    let mut port = match port {
        Some(p) => parse_port(&decode(p, "port")?)?,
        None => DEFAULT_SERVER_PORT,
    };
    let mut dbname = decode(path, "database name")?;
    let mut host = decode(host, "host")?;

    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k, "query parameter name")?;
        let value = || decode(v, "query parameter");
        match key.as_str() {
            "user" => user = value()?,
            "password" => password = Some(value()?),
            "dbname" => dbname = value()?,
            "port" => port = parse_port(&value()?)?,
            "host" | "hostaddr" => {
                let v = value()?;
                // libpq's way to name a socket directory: postgres://user@/db?host=/dir
                if key == "host" && host.is_empty() && v.starts_with('/') {
                    if v.contains(',') {
                        return Err(url_err(
                            "host lists (several comma-separated hosts) are not supported; give exactly one host",
                        ));
                    }
                    host = v;
                } else {
                    return Err(url_err(format!(
                        "the `{key}` query parameter is not supported; \
                         write one host in the URL itself (postgres://user@HOST:PORT/db)"
                    )));
                }
            }
            // sslmode, application_name, connect_timeout...: not ours to apply.
            _ => {}
        }
    }

    if host.is_empty() {
        return Err(url_err(
            "a host is required: a TCP host name or address, or a Unix socket directory \
             (postgres://user@%2Fvar%2Frun%2Fpostgresql/db or ?host=/var/run/postgresql)",
        ));
    }
    if host.starts_with('@') {
        return Err(url_err(
            "abstract-namespace Unix sockets (@name) are not supported; give a socket directory or a TCP host",
        ));
    }
    if user.is_empty() {
        return Err(url_err(
            "a user name is required: postgres://USER:PASSWORD@host/dbname",
        ));
    }
    if dbname.is_empty() {
        dbname.clone_from(&user);
    }
    Ok(Upstream {
        user,
        password,
        host,
        port,
        dbname,
    })
}

/// Split `host`, `host:port`, `[v6]` or `[v6]:port`; reject host lists.
fn split_host_port(hostport: &str) -> Result<(&str, Option<&str>), ConfigError> {
    if hostport.contains(',') {
        return Err(url_err(
            "host lists (several comma-separated hosts) are not supported; give exactly one host",
        ));
    }
    if let Some(inner) = hostport.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| url_err("missing `]` after an IPv6 address"))?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port).filter(|p| !p.is_empty()))),
                None => Err(url_err("unexpected text after `]`; expected `:port`")),
            },
        };
    }
    match hostport.split_once(':') {
        Some((_, port)) if port.contains(':') => Err(url_err(
            "an IPv6 address must be written in brackets, e.g. postgres://u@[::1]:5432/db",
        )),
        Some((host, port)) => Ok((host, Some(port).filter(|p| !p.is_empty()))),
        None => Ok((hostport, None)),
    }
}

fn parse_port(text: &str) -> Result<u16, ConfigError> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(url_err(format!(
            "invalid port `{text}`; expected a number from 1 to 65535"
        ))),
    }
}

/// Percent-decode one part; the result must be UTF-8. `what` names the part in errors.
fn decode(s: &str, what: &str) -> Result<String, ConfigError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let digit = |at: usize| bytes.get(at).and_then(|c| hex_value(*c));
        let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) else {
            return Err(url_err(format!(
                "invalid percent-encoding in the {what} (`%` must be followed by two hex digits)"
            )));
        };
        let hex = hi * 16 + lo;
        out.push(hex);
        i += 3;
    }
    String::from_utf8(out)
        .map_err(|_| url_err(format!("the {what} is not valid UTF-8 once decoded")))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rules() {
        assert_eq!(decode("a%40b%3Ac", "x").ok(), Some("a@b:c".to_owned()));
        assert_eq!(decode("p+q", "x").ok(), Some("p+q".to_owned()));
        assert_eq!(decode("%C3%A9", "x").ok(), Some("é".to_owned()));
        assert!(decode("%", "x").is_err());
        assert!(decode("%4", "x").is_err());
        assert!(decode("%zz", "x").is_err());
        assert!(decode("%+1", "x").is_err());
        assert!(decode("%FF", "x").is_err());
    }

    #[test]
    fn ipv6() {
        let up = parse("postgres://u@[::1]:6000/db").expect("parses");
        assert_eq!((up.host.as_str(), up.port), ("::1", 6000));
        let up = parse("postgres://u@[fe80::1]/db").expect("parses");
        assert_eq!((up.host.as_str(), up.port), ("fe80::1", 5432));
        assert!(parse("postgres://u@::1/db").is_err());
        assert!(parse("postgres://u@[::1/db").is_err());
    }
}
