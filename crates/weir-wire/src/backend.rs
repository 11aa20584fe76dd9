//! Readers for the backend (server → client) message bodies the proxy must look at.
//!
//! Every reader is total: malformed input yields `None` or empty fields, never a panic
//! (an ErrorResponse without SQLSTATE crashed another pooler, CVE-2026-6666).

use crate::frame::read_cstr;

/// Fields of an ErrorResponse or NoticeResponse body; any may be missing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// `V` (non-localized) severity, else `S`.
    pub severity: Option<&'a [u8]>,
    /// `C`: SQLSTATE.
    pub code: Option<&'a [u8]>,
    /// `M`: primary message.
    pub message: Option<&'a [u8]>,
    /// `D`: detail.
    pub detail: Option<&'a [u8]>,
    /// `H`: hint.
    pub hint: Option<&'a [u8]>,
}

impl<'a> ErrorFields<'a> {
    /// Reads the fields it knows from an 'E'/'N' body, ignoring the rest.
    pub fn parse(mut body: &'a [u8]) -> Self {
        let mut out = ErrorFields::default();
        while let Some((&field, rest)) = body.split_first() {
            if field == 0 {
                break;
            }
            let Some((value, rest)) = read_cstr(rest) else {
                break;
            };
            match field {
                b'V' => out.severity = Some(value),
                b'S' if out.severity.is_none() => out.severity = Some(value),
                b'C' => out.code = Some(value),
                b'M' => out.message = Some(value),
                b'D' => out.detail = Some(value),
                b'H' => out.hint = Some(value),
                _ => {}
            }
            body = rest;
        }
        out
    }

    /// True when the severity is FATAL or PANIC: the server will close the connection.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity, Some(b"FATAL") | Some(b"PANIC"))
    }

    /// The message as text, lossily.
    pub fn message_lossy(&self) -> String {
        String::from_utf8_lossy(self.message.unwrap_or(b"")).into_owned()
    }
}

/// Reads a ParameterStatus body: `(name, value)`.
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = read_cstr(body)?;
    let (value, _) = read_cstr(rest)?;
    Some((
        std::str::from_utf8(name).ok()?,
        std::str::from_utf8(value).ok()?,
    ))
}

/// Reads a BackendKeyData body: `(process id, secret key)`; the key is 4 to 256 bytes.
pub fn parse_backend_key_data(body: &[u8]) -> Option<(i32, &[u8])> {
    let pid = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    let key = body.get(4..)?;
    (4..=256).contains(&key.len()).then_some((pid, key))
}

/// Reads a ReadyForQuery body: the transaction status byte (`I`, `T` or `E`).
#[inline]
pub fn parse_ready_for_query(body: &[u8]) -> Option<u8> {
    match body {
        [s @ (b'I' | b'T' | b'E')] => Some(*s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_without_sqlstate_is_fine() {
        let e = ErrorFields::parse(b"SERROR\0Mboom\0\0");
        assert_eq!(e.code, None);
        assert_eq!(e.message_lossy(), "boom");
        let e = ErrorFields::parse(b"SERR");
        assert_eq!(e, ErrorFields::default());
        assert!(!ErrorFields::parse(b"").is_fatal());
        assert!(ErrorFields::parse(b"SFATAL\0VFATAL\0\0").is_fatal());
    }

    #[test]
    fn small_readers() {
        assert_eq!(
            parse_parameter_status(b"TimeZone\0UTC\0"),
            Some(("TimeZone", "UTC"))
        );
        assert_eq!(parse_parameter_status(b"TimeZone\0UTC"), None);
        assert_eq!(
            parse_backend_key_data(&[0, 0, 0, 7, 1, 2, 3, 4]),
            Some((7, &[1u8, 2, 3, 4][..]))
        );
        assert_eq!(parse_backend_key_data(&[0, 0, 0, 7, 1]), None);
        assert_eq!(parse_ready_for_query(b"T"), Some(b'T'));
        assert_eq!(parse_ready_for_query(b"X"), None);
        assert_eq!(parse_ready_for_query(b""), None);
    }
}
