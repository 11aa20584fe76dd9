//! Builders for the messages the proxy synthesizes; each appends one complete frame.

use bytes::{BufMut, BytesMut};

/// `n` in decimal, written into `buf`: for text built on a hot path (a SCRAM iteration
/// count, a log line's address) without the formatting machinery.
pub fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).unwrap_or_default()
}

/// Appends `s` and a NUL terminator.
#[inline]
pub fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Appends a frame with `tag` whose body is written by `body`; the length is patched in afterwards.
#[inline]
pub fn put_frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let len_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - len_at) as i32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// One whole frame as a vector (for tests and benchmarks).
pub fn frame_bytes(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(5 + body.len());
    put_frame(&mut buf, tag, |b| b.put_slice(body));
    buf.to_vec()
}

/// Severity of a synthesized error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Severity::Error => b"ERROR",
            Severity::Fatal => b"FATAL",
        }
    }
}

/// An error the proxy reports to a client in PostgreSQL's own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage<'a> {
    /// ERROR or FATAL.
    pub severity: Severity,
    /// Five-character SQLSTATE (see [`crate::sqlstate`]).
    pub code: &'a str,
    /// Primary human-readable message.
    pub message: &'a str,
    /// Optional detail line.
    pub detail: Option<&'a str>,
    /// Optional hint saying what to do.
    pub hint: Option<&'a str>,
}

/// Appends an ErrorResponse ('E').
pub fn put_error(buf: &mut BytesMut, e: &ErrorMessage<'_>) {
    put_frame(buf, b'E', |b| {
        for field in [b'S', b'V'] {
            b.put_u8(field);
            put_cstr(b, e.severity.as_bytes());
        }
        b.put_u8(b'C');
        put_cstr(b, e.code.as_bytes());
        b.put_u8(b'M');
        put_cstr(b, e.message.as_bytes());
        if let Some(d) = e.detail {
            b.put_u8(b'D');
            put_cstr(b, d.as_bytes());
        }
        if let Some(h) = e.hint {
            b.put_u8(b'H');
            put_cstr(b, h.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Appends an ErrorResponse with just severity, code and message.
pub fn put_simple_error(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    put_error(
        buf,
        &ErrorMessage {
            severity,
            code,
            message,
            detail: None,
            hint: None,
        },
    );
}

/// Appends a ParameterStatus ('S').
pub fn put_parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put_frame(buf, b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// Appends a BackendKeyData ('K').
pub fn put_backend_key_data(buf: &mut BytesMut, pid: i32, key: &[u8]) {
    put_frame(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_slice(key);
    });
}

/// Appends a ReadyForQuery ('Z') with transaction status `I`, `T` or `E`.
pub fn put_ready_for_query(buf: &mut BytesMut, status: u8) {
    put_frame(buf, b'Z', |b| b.put_u8(status));
}

/// Appends a simple Query ('Q').
pub fn put_query(buf: &mut BytesMut, sql: &str) {
    put_frame(buf, b'Q', |b| put_cstr(b, sql.as_bytes()));
}

/// Appends a Terminate ('X').
pub fn put_terminate(buf: &mut BytesMut) {
    put_frame(buf, b'X', |_| {});
}

/// Appends a NegotiateProtocolVersion ('v'): the newest minor version supported and the
/// protocol options (`_pq_.*`) that were not recognized.
pub fn put_negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unsupported: &[&str]) {
    put_frame(buf, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(unsupported.len() as i32);
        for opt in unsupported {
            put_cstr(b, opt.as_bytes());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ErrorFields;
    use crate::frame::split_frame;

    #[test]
    fn decimal_writes_what_display_writes() {
        for n in [0, 7, 10, 99, 4096, 65535, 1_000_000, u32::MAX] {
            assert_eq!(decimal(n, &mut [0; 10]), n.to_string());
        }
    }

    #[test]
    fn error_roundtrips_through_the_parser() {
        let mut buf = BytesMut::new();
        put_error(
            &mut buf,
            &ErrorMessage {
                severity: Severity::Fatal,
                code: "28P01",
                message: "password authentication failed for user \"x\"",
                detail: None,
                hint: Some("check it"),
            },
        );
        let f = split_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.tag(), b'E');
        let e = ErrorFields::parse(f.body());
        assert_eq!(e.code, Some(&b"28P01"[..]));
        assert_eq!(e.severity, Some(&b"FATAL"[..]));
        assert_eq!(
            e.message,
            Some(&b"password authentication failed for user \"x\""[..])
        );
    }

    #[test]
    fn ready_for_query_bytes() {
        let mut buf = BytesMut::new();
        put_ready_for_query(&mut buf, b'I');
        assert_eq!(&buf[..], &[b'Z', 0, 0, 0, 5, b'I']);
    }
}
