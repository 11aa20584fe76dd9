//! Authentication crypto and message codecs for both sides of the proxy.
//!
//! The proxy authenticates clients itself ([`scram::ScramServer`], [`md5::verify_md5_response`])
//! and logs in to PostgreSQL as a client ([`scram::ScramClient`], [`md5`] responses). Everything
//! here is pure computation over byte slices: the caller moves the bytes. Every message from a
//! peer is untrusted: lengths are capped, malformed input is an [`AuthError`], never a panic.

pub(crate) mod base64;
pub mod md5;
pub mod messages;
pub mod scram;

/// Errors of an authentication exchange, split by whose fault and what to tell the peer.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The peer sent a malformed or unexpected message (a protocol violation).
    #[error("authentication protocol violation: {0}")]
    Protocol(String),
    /// The client's proof or response does not match the stored secret.
    #[error("password authentication failed")]
    InvalidPassword,
    /// The peer asked for (or only offers) a mechanism this crate does not implement.
    #[error("unsupported authentication mechanism: {0}")]
    UnsupportedMechanism(String),
    /// We are the client and the server's SCRAM signature is wrong: it does not know the secret.
    #[error("SCRAM server signature mismatch: the server could not prove it knows the password")]
    ServerSignatureMismatch,
    /// A stored secret (verifier, md5 hash, key) is malformed or does not fit the exchange.
    /// The message never contains the secret itself.
    #[error("invalid stored secret: {0}")]
    InvalidSecret(String),
}

/// Compares two byte strings in time that depends only on their lengths.
///
/// Lengths are public in every use here (fixed-size keys, fixed-size md5 responses).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// Renders untrusted peer text for an error message: at most 64 chars, control chars escaped.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = s
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn shorten_bounds_and_escapes() {
        assert_eq!(shorten("a\nb"), "a\\nb");
        let long = "x".repeat(100);
        assert_eq!(shorten(&long).chars().count(), 65);
    }
}
