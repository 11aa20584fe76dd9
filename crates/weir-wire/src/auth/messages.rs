//! Codecs of the authentication messages, over frame bodies.
//!
//! Parsers take the body of a frame (after the 1-byte tag and the 4-byte length) and borrow
//! from it; they return [`AuthError::Protocol`] for anything malformed and never panic.
//! Builders append a complete frame (tag, length, body) to a [`BytesMut`]. See PostgreSQL's
//! "Message Formats": `R` (Authentication*) from the backend, `p` (PasswordMessage,
//! SASLInitialResponse, SASLResponse) from the frontend.

use bytes::{BufMut, BytesMut};

use super::{shorten, AuthError};

/// Largest auth message body accepted, as PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`.
pub const MAX_AUTH_MESSAGE_LEN: usize = 65535;
/// Most mechanisms accepted in one AuthenticationSASL list (PostgreSQL sends at most two).
pub const MAX_SASL_MECHANISMS: usize = 16;

const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// A parsed `R` Authentication request body (backend to client), for the client role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// AuthenticationOk: logged in.
    Ok,
    /// AuthenticationCleartextPassword.
    CleartextPassword,
    /// AuthenticationMD5Password with its salt.
    Md5Password {
        /// Salt to hash the stored md5 secret with.
        salt: [u8; 4],
    },
    /// AuthenticationSASL with the offered mechanisms, in server order.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<&'a str>,
    },
    /// AuthenticationSASLContinue: server-first-message.
    SaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal: server-final-message.
    SaslFinal(&'a [u8]),
    /// Any other request code (Kerberos, GSSAPI, SSPI, ...), which the proxy does not speak.
    Other(i32),
}

/// Parses an `R` Authentication body.
///
/// # Errors
/// [`AuthError::Protocol`] for a short, over-long or malformed body (including trailing bytes
/// after fixed-size requests and non-UTF-8 mechanism names).
pub fn parse_auth_request(body: &[u8]) -> Result<AuthRequest<'_>, AuthError> {
    check_len(body, "Authentication request")?;
    let (code, rest) = split_i32(body)
        .ok_or_else(|| AuthError::Protocol("Authentication request shorter than 4 bytes".into()))?;
    // Ok and CleartextPassword carry nothing after the code.
    let bare = |request: AuthRequest<'static>| {
        if rest.is_empty() {
            Ok(request)
        } else {
            Err(AuthError::Protocol(format!(
                "Authentication request {code} has {} unexpected trailing bytes",
                rest.len()
            )))
        }
    };
    match code {
        AUTH_OK => bare(AuthRequest::Ok),
        AUTH_CLEARTEXT => bare(AuthRequest::CleartextPassword),
        AUTH_MD5 => <[u8; 4]>::try_from(rest)
            .map(|salt| AuthRequest::Md5Password { salt })
            .map_err(|_| {
                AuthError::Protocol(format!(
                    "AuthenticationMD5Password has {} bytes of salt, expected 4",
                    rest.len()
                ))
            }),
        AUTH_SASL => parse_mechanisms(rest).map(|mechanisms| AuthRequest::Sasl { mechanisms }),
        AUTH_SASL_CONTINUE => Ok(AuthRequest::SaslContinue(rest)),
        AUTH_SASL_FINAL => Ok(AuthRequest::SaslFinal(rest)),
        other => Ok(AuthRequest::Other(other)),
    }
}

/// The list is a series of C strings closed by an empty one.
fn parse_mechanisms(mut rest: &[u8]) -> Result<Vec<&str>, AuthError> {
    let mut mechanisms = Vec::new();
    loop {
        let (name, after) = split_cstr(rest).ok_or_else(|| {
            AuthError::Protocol("AuthenticationSASL: unterminated mechanism list".into())
        })?;
        rest = after;
        if name.is_empty() {
            break;
        }
        if mechanisms.len() == MAX_SASL_MECHANISMS {
            return Err(AuthError::Protocol(format!(
                "AuthenticationSASL: more than {MAX_SASL_MECHANISMS} mechanisms"
            )));
        }
        let name = std::str::from_utf8(name).map_err(|_| {
            AuthError::Protocol("AuthenticationSASL: mechanism name is not UTF-8".into())
        })?;
        mechanisms.push(name);
    }
    if !rest.is_empty() {
        return Err(AuthError::Protocol(
            "AuthenticationSASL: bytes after the mechanism list".into(),
        ));
    }
    if mechanisms.is_empty() {
        return Err(AuthError::Protocol(
            "AuthenticationSASL: empty mechanism list".into(),
        ));
    }
    Ok(mechanisms)
}

/// Parses a SASLInitialResponse body: mechanism C string, i32 data length (-1: none), data.
///
/// A length of -1 (no initial response) yields empty data, which
/// [`super::scram::ScramServer`] rejects: SCRAM clients always send client-first here.
///
/// # Errors
/// [`AuthError::Protocol`] for a missing terminator, a non-UTF-8 mechanism, a length that is
/// below -1 or does not match the remaining bytes exactly, or an over-long body.
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), AuthError> {
    check_len(body, "SASLInitialResponse")?;
    let (mechanism, rest) = split_cstr(body).ok_or_else(|| {
        AuthError::Protocol("SASLInitialResponse: unterminated mechanism name".into())
    })?;
    let mechanism = std::str::from_utf8(mechanism).map_err(|_| {
        AuthError::Protocol("SASLInitialResponse: mechanism name is not UTF-8".into())
    })?;
    let (len, data) = split_i32(rest)
        .ok_or_else(|| AuthError::Protocol("SASLInitialResponse: missing data length".into()))?;
    let expected = match len {
        -1 => 0,
        len => usize::try_from(len).map_err(|_| {
            AuthError::Protocol(format!("SASLInitialResponse: invalid data length {len}"))
        })?,
    };
    if data.len() != expected {
        return Err(AuthError::Protocol(format!(
            "SASLInitialResponse for {}: data length {len} but {} bytes follow",
            shorten(mechanism),
            data.len()
        )));
    }
    Ok((mechanism, data))
}

/// Parses a PasswordMessage body: the password (or md5 response) without its trailing NUL.
///
/// # Errors
/// [`AuthError::Protocol`] when the body is not exactly one C string or is over-long.
pub fn parse_password_message(body: &[u8]) -> Result<&[u8], AuthError> {
    check_len(body, "PasswordMessage")?;
    match split_cstr(body) {
        Some((password, [])) => Ok(password),
        _ => Err(AuthError::Protocol(
            "PasswordMessage is not a single NUL-terminated string".into(),
        )),
    }
}

/// Appends AuthenticationOk.
pub fn put_authentication_ok(buf: &mut BytesMut) {
    put_auth(buf, AUTH_OK, &[]);
}

/// Appends AuthenticationCleartextPassword.
pub fn put_authentication_cleartext(buf: &mut BytesMut) {
    put_auth(buf, AUTH_CLEARTEXT, &[]);
}

/// Appends AuthenticationMD5Password with `salt`.
pub fn put_authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    put_auth(buf, AUTH_MD5, &salt);
}

/// Appends AuthenticationSASL offering `mechanisms` (names must not contain NUL).
pub fn put_authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let mut data = Vec::new();
    for mechanism in mechanisms {
        debug_assert!(!mechanism.contains('\0'), "mechanism names are C strings");
        data.extend_from_slice(mechanism.as_bytes());
        data.push(0);
    }
    data.push(0);
    put_auth(buf, AUTH_SASL, &data);
}

/// Appends AuthenticationSASLContinue carrying `data` (server-first-message).
pub fn put_authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    put_auth(buf, AUTH_SASL_CONTINUE, data);
}

/// Appends AuthenticationSASLFinal carrying `data` (server-final-message).
pub fn put_authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    put_auth(buf, AUTH_SASL_FINAL, data);
}

/// Appends a PasswordMessage: `password` (must not contain NUL) as a C string.
pub fn put_password_message(buf: &mut BytesMut, password: &[u8]) {
    debug_assert!(!password.contains(&0), "a password is a C string");
    put_frame(buf, b'p', &[password, &[0]]);
}

/// Appends a SASLInitialResponse choosing `mechanism` with initial `data`.
pub fn put_sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    debug_assert!(!mechanism.contains('\0'), "a mechanism name is a C string");
    let len = body_len(data.len()).to_be_bytes();
    put_frame(buf, b'p', &[mechanism.as_bytes(), &[0], &len, data]);
}

/// Appends a SASLResponse carrying `data` (client-final-message).
pub fn put_sasl_response(buf: &mut BytesMut, data: &[u8]) {
    put_frame(buf, b'p', &[data]);
}

fn put_auth(buf: &mut BytesMut, code: i32, data: &[u8]) {
    put_frame(buf, b'R', &[&code.to_be_bytes(), data]);
}

/// Appends tag, length (which counts itself) and the concatenated body parts.
fn put_frame(buf: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let body: usize = parts.iter().map(|p| p.len()).sum();
    buf.reserve(1 + 4 + body);
    buf.put_u8(tag);
    buf.put_i32(body_len(body.saturating_add(4)));
    for part in parts {
        buf.put_slice(part);
    }
}

/// Converts a length we produced to the protocol's i32.
///
/// # Panics
/// When it exceeds `i32::MAX`: the proxy never builds auth messages near 2 GiB, so this is a
/// bug in the caller, and a truncated length would desynchronize the stream.
fn body_len(len: usize) -> i32 {
    match i32::try_from(len) {
        Ok(len) => len,
        Err(_) => panic!("auth message of {len} bytes exceeds the protocol limit"),
    }
}

fn check_len(body: &[u8], what: &str) -> Result<(), AuthError> {
    if body.len() > MAX_AUTH_MESSAGE_LEN {
        return Err(AuthError::Protocol(format!(
            "{what} too long ({} bytes, limit {MAX_AUTH_MESSAGE_LEN})",
            body.len()
        )));
    }
    Ok(())
}

fn split_i32(bytes: &[u8]) -> Option<(i32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*head), rest))
}

/// Splits at the first NUL: (string without NUL, rest after NUL).
fn split_cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = bytes.iter().position(|b| *b == 0)?;
    let (s, rest) = bytes.split_at(nul);
    Some((s, rest.get(1..).unwrap_or_default()))
}

#[cfg(test)]
mod tests;
