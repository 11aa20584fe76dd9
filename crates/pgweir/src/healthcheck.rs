//! `pgweir healthcheck`: GET `/healthz` on the HTTP endpoint and succeed on `200`, so
//! a container image needs no curl for its `HEALTHCHECK`. Plain HTTP/1.0 over
//! `std::net` with a deadline on every step; an unspecified listen address
//! (`0.0.0.0`, `[::]`) is probed on loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Connecting, writing or reading failed (or timed out).
    #[error("{addr}: {source}")]
    Io {
        /// The address probed.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The endpoint answered with something other than 200.
    #[error("{addr}{path}: answered {status:?}")]
    Status {
        /// The address probed.
        addr: SocketAddr,
        /// The path probed.
        path: String,
        /// The status line.
        status: String,
    },
}

/// The address to connect to for a listen address: loopback for an unspecified one.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `path` on `listen` (see [`probe_addr`]) within `timeout` per step.
///
/// # Errors
/// [`HealthError::Io`] when the endpoint cannot be reached or read,
/// [`HealthError::Status`] when it answers anything but `200`.
pub fn probe(listen: SocketAddr, path: &str, timeout: Duration) -> Result<(), HealthError> {
    let addr = probe_addr(listen);
    let io = |source| HealthError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(io)?;
    // The status line is all we need; cap what is read.
    let mut head = Vec::with_capacity(256);
    stream.take(4096).read_to_end(&mut head).map_err(io)?;
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or("").to_owned();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(HealthError::Status {
            addr,
            path: path.to_owned(),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9930".parse().expect("addr");
        assert_eq!(probe_addr(any).to_string(), "127.0.0.1:9930");
        let any6: SocketAddr = "[::]:9930".parse().expect("addr");
        assert_eq!(probe_addr(any6).to_string(), "[::1]:9930");
        let fixed: SocketAddr = "10.0.0.5:9930".parse().expect("addr");
        assert_eq!(probe_addr(fixed), fixed);
    }

    #[test]
    fn a_closed_port_fails() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        assert!(probe(port, "/healthz", Duration::from_secs(2)).is_err());
    }
}
