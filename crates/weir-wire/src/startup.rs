//! The untagged packets a connection starts with: StartupMessage, SSLRequest,
//! GSSENCRequest and CancelRequest (PostgreSQL docs, "Message Formats").
//!
//! Limits are PostgreSQL's own: a startup packet is at most 10 000 bytes
//! (`MAX_STARTUP_PACKET_LENGTH`), protocol major version 3.

use bytes::{Buf, BufMut, BytesMut};

/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// Longest cancel key protocol 3.2 allows.
pub const MAX_CANCEL_KEY_LEN: usize = 256;

/// Why an initial packet was refused; the connection is closed after an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// Length field below the 8 bytes of length + code.
    #[error("invalid length of startup packet")]
    TooShort,
    /// Length field above [`MAX_STARTUP_LEN`].
    #[error("invalid length of startup packet: {0} bytes exceeds the limit of 10000")]
    TooLong(usize),
    /// Not protocol 3.x.
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0 to 3.2")]
    UnsupportedProtocol(u16, u16),
    /// Structure broken inside the packet.
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
}

/// A parsed StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Major protocol version (always 3).
    pub major: u16,
    /// Minor protocol version requested (0 for classic clients, 2 for PostgreSQL 18 ones).
    pub minor: u16,
    /// Parameters in the order sent (`user`, `database`, `options`, `_pq_.*`, ...).
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a startup parameter, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `user` parameter (required by PostgreSQL).
    pub fn user(&self) -> Option<&str> {
        self.get("user").filter(|u| !u.is_empty())
    }

    /// The `database` parameter, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> Option<&str> {
        self.get("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.user())
    }
}

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialPacket {
    /// Client asks for TLS.
    SslRequest,
    /// Client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running on the connection with this key.
    Cancel {
        /// Process ID from BackendKeyData.
        pid: i32,
        /// Secret key (4 bytes in protocol 3.0, up to 256 in 3.2).
        key: Vec<u8>,
    },
    /// A normal connection start.
    Startup(StartupMessage),
}

/// Splits and parses one initial packet off `buf`; `Ok(None)` until it is complete.
///
/// # Errors
/// A length outside 8..=10 000, an unknown protocol, or a malformed body.
pub fn parse_initial(buf: &mut BytesMut) -> Result<Option<InitialPacket>, StartupError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len < 8 {
        return Err(StartupError::TooShort);
    }
    let len = len as usize;
    if len > MAX_STARTUP_LEN {
        return Err(StartupError::TooLong(len));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_i32();
    let body = &packet[..];
    let parsed = match code {
        SSL_REQUEST_CODE if body.is_empty() => InitialPacket::SslRequest,
        GSSENC_REQUEST_CODE if body.is_empty() => InitialPacket::GssEncRequest,
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            return Err(StartupError::Malformed("encryption request with a body"))
        }
        CANCEL_REQUEST_CODE => {
            if body.len() < 8 || body.len() > 4 + MAX_CANCEL_KEY_LEN {
                return Err(StartupError::Malformed("cancel request key length"));
            }
            let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            InitialPacket::Cancel {
                pid,
                key: body[4..].to_vec(),
            }
        }
        code => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol(major, minor));
            }
            InitialPacket::Startup(StartupMessage {
                major,
                minor,
                params: parse_params(body)?,
            })
        }
    };
    Ok(Some(parsed))
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    // Drivers send four to eight (user, database, application_name, client_encoding…).
    let mut params = Vec::with_capacity(8);
    loop {
        let (name, rest) = crate::frame::read_cstr(body)
            .ok_or(StartupError::Malformed("parameter name not terminated"))?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(StartupError::Malformed("bytes after the parameter list"));
            }
            return Ok(params);
        }
        let (value, rest) = crate::frame::read_cstr(rest)
            .ok_or(StartupError::Malformed("parameter value not terminated"))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| StartupError::Malformed("parameter name is not UTF-8"))?;
        let value = std::str::from_utf8(value)
            .map_err(|_| StartupError::Malformed("parameter value is not UTF-8"))?;
        params.push((name.to_owned(), value.to_owned()));
        body = rest;
    }
}

/// Appends a protocol 3.0 StartupMessage with `params` (e.g. user, database).
pub fn put_startup_message<'a>(
    buf: &mut BytesMut,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let start = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        crate::build::put_cstr(buf, k.as_bytes());
        crate::build::put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - start) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends an SSLRequest (asks the server to switch to TLS; it answers `S` or `N`).
pub fn put_ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST_CODE);
}

/// Appends a CancelRequest for a server's `pid` and secret `key`.
pub fn put_cancel_request(buf: &mut BytesMut, pid: i32, key: &[u8]) {
    buf.put_i32((12 + key.len()) as i32);
    buf.put_i32(CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_slice(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_roundtrip() {
        let mut buf = BytesMut::new();
        put_startup_message(&mut buf, [("user", "app"), ("database", "db")]);
        let whole = buf.clone();
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(parse_initial(&mut partial), Ok(None));
        let Some(InitialPacket::Startup(m)) = parse_initial(&mut buf).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!((m.major, m.minor), (3, 0));
        assert_eq!(m.user(), Some("app"));
        assert_eq!(m.database(), Some("db"));
        assert!(buf.is_empty());
    }

    #[test]
    fn database_defaults_to_user() {
        let mut buf = BytesMut::new();
        put_startup_message(&mut buf, [("user", "app")]);
        let Some(InitialPacket::Startup(m)) = parse_initial(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(m.database(), Some("app"));
    }

    #[test]
    fn limits() {
        let mut buf = BytesMut::from(&[0, 0, 0, 4, 0, 0, 0, 0][..]);
        assert_eq!(parse_initial(&mut buf), Err(StartupError::TooShort));
        let mut buf = BytesMut::from(&[0, 0, 0x27, 0x11, 0, 3, 0, 0][..]);
        assert_eq!(parse_initial(&mut buf), Err(StartupError::TooLong(10_001)));
        let mut buf = BytesMut::from(&[0, 0, 0, 9, 0, 2, 0, 0, 0][..]);
        assert_eq!(
            parse_initial(&mut buf),
            Err(StartupError::UnsupportedProtocol(2, 0))
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 10, 0, 3, 0, 0, b'u', b'x'][..]);
        assert!(matches!(
            parse_initial(&mut buf),
            Err(StartupError::Malformed(_))
        ));
    }

    #[test]
    fn ssl_and_cancel() {
        let mut buf = BytesMut::new();
        buf.put_i32(8);
        buf.put_i32(SSL_REQUEST_CODE);
        put_cancel_request(&mut buf, 42, &[1, 2, 3, 4]);
        assert_eq!(parse_initial(&mut buf), Ok(Some(InitialPacket::SslRequest)));
        assert_eq!(
            parse_initial(&mut buf),
            Ok(Some(InitialPacket::Cancel {
                pid: 42,
                key: vec![1, 2, 3, 4]
            }))
        );
    }
}
