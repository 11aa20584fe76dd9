//! PostgreSQL's md5 password scheme, for both sides.
//!
//! PostgreSQL stores `"md5" + hex(md5(password + user))` and, for `AuthenticationMD5Password`,
//! expects `"md5" + hex(md5(hex_part_of_stored + salt))` in the PasswordMessage. Knowing the
//! stored hash is enough to log in (that is how a pooler logs in with only `pg_authid` data),
//! so the hash is as sensitive as the password.

use md5::{Digest, Md5};

use super::{ct_eq, AuthError};

/// Length of `"md5"` followed by 32 hex digits, the only valid shape of a secret or response.
const MD5_LEN: usize = 35;

/// `"md5" + hex(md5(password + user))`: what PostgreSQL stores with `password_encryption=md5`.
pub fn md5_secret(user: &str, password: &str) -> String {
    md5_hex(&[password.as_bytes(), user.as_bytes()])
}

/// The client's PasswordMessage text for md5 auth.
///
/// `password` may be a plaintext password or an already-stored `"md5..."` secret (as in an auth
/// file); like PostgreSQL, anything shaped like a secret is taken as one.
pub fn md5_response_from_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    if is_md5_secret(password) {
        return salted(password, salt);
    }
    salted(&md5_secret(user, password), salt)
}

/// The client's PasswordMessage text for md5 auth, from a stored `"md5..."` secret.
///
/// # Errors
/// [`AuthError::InvalidSecret`] when `secret` is not `"md5"` + 32 lowercase hex digits.
pub fn md5_response_from_secret(secret: &str, salt: [u8; 4]) -> Result<String, AuthError> {
    if !is_md5_secret(secret) {
        return Err(AuthError::InvalidSecret(
            "not an md5 secret (expected \"md5\" and 32 lowercase hex digits)".into(),
        ));
    }
    Ok(salted(secret, salt))
}

/// Checks a client's md5 response (PasswordMessage body without its NUL) in constant time.
///
/// Returns false for a malformed `secret` as well, so a bad auth file fails closed.
pub fn verify_md5_response(secret: &str, salt: [u8; 4], response: &[u8]) -> bool {
    match md5_response_from_secret(secret, salt) {
        Ok(expected) => ct_eq(expected.as_bytes(), response),
        Err(_) => false,
    }
}

/// Whether `s` is a stored md5 secret: `"md5"` followed by 32 lowercase hex digits.
pub fn is_md5_secret(s: &str) -> bool {
    s.len() == MD5_LEN
        && s.starts_with("md5")
        && s.bytes()
            .skip(3)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `"md5" + hex(md5(hex_part + salt))`; `secret` is known to be well-formed.
fn salted(secret: &str, salt: [u8; 4]) -> String {
    let hex_part = secret.get(3..).unwrap_or_default();
    md5_hex(&[hex_part.as_bytes(), &salt])
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(MD5_LEN);
    out.push_str("md5");
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored by PostgreSQL 15.18 for `ALTER ROLE postgres PASSWORD 'postgres'` with
    /// `password_encryption=md5` (read back from `pg_authid.rolpassword`).
    const PG15_POSTGRES_POSTGRES: &str = "md53175bce1d3201d16594cebf9d7eb3f9d";
    /// Same, for role `postgres_md5` with password `pencil`.
    const PG15_MD5_PENCIL: &str = "md5656123809ff4b6f191fa1fb4b1c8150d";
    /// Salt PostgreSQL 15 sent in AuthenticationMD5Password to psql for `postgres_md5`, and the
    /// PasswordMessage psql answered with (captured on the socket).
    const PG15_SALT: [u8; 4] = [0x7d, 0xdb, 0x71, 0x4b];
    const PG15_RESPONSE: &str = "md5f54cadd45eaa45b3a34f46e33fd5f150";

    #[test]
    fn secret_matches_postgresql() {
        assert_eq!(md5_secret("postgres", "postgres"), PG15_POSTGRES_POSTGRES);
        assert_eq!(md5_secret("postgres_md5", "pencil"), PG15_MD5_PENCIL);
        assert!(is_md5_secret(PG15_POSTGRES_POSTGRES));
    }

    #[test]
    fn response_matches_recorded_psql_exchange() {
        assert_eq!(
            md5_response_from_password("postgres_md5", "pencil", PG15_SALT),
            PG15_RESPONSE
        );
        assert_eq!(
            md5_response_from_secret(PG15_MD5_PENCIL, PG15_SALT).as_deref(),
            Ok(PG15_RESPONSE)
        );
        // A stored secret given where a password is expected is used as the secret.
        assert_eq!(
            md5_response_from_password("ignored", PG15_MD5_PENCIL, PG15_SALT),
            PG15_RESPONSE
        );
    }

    #[test]
    fn verify_accepts_only_the_right_response() {
        assert!(verify_md5_response(
            PG15_MD5_PENCIL,
            PG15_SALT,
            PG15_RESPONSE.as_bytes()
        ));
        assert!(!verify_md5_response(
            PG15_MD5_PENCIL,
            [0; 4],
            PG15_RESPONSE.as_bytes()
        ));
        let wrong = md5_response_from_password("postgres_md5", "pencil2", PG15_SALT);
        assert!(!verify_md5_response(
            PG15_MD5_PENCIL,
            PG15_SALT,
            wrong.as_bytes()
        ));
        assert!(!verify_md5_response(PG15_MD5_PENCIL, PG15_SALT, b""));
        assert!(!verify_md5_response(
            "pencil",
            PG15_SALT,
            PG15_RESPONSE.as_bytes()
        ));
        let with_nul = format!("{PG15_RESPONSE}\0");
        assert!(!verify_md5_response(
            PG15_MD5_PENCIL,
            PG15_SALT,
            with_nul.as_bytes()
        ));
    }

    #[test]
    fn secret_shape() {
        assert!(!is_md5_secret("md53175BCE1D3201D16594CEBF9D7EB3F9D"));
        assert!(!is_md5_secret("md53175bce1d3201d16594cebf9d7eb3f9"));
        assert!(!is_md5_secret("md53175bce1d3201d16594cebf9d7eb3f9dd"));
        assert!(!is_md5_secret("sha3175bce1d3201d16594cebf9d7eb3f9d"));
        assert!(!is_md5_secret("md5g175bce1d3201d16594cebf9d7eb3f9d"));
        assert!(!is_md5_secret(""));
        // Multi-byte chars must not be mistaken for hex digits or break slicing.
        assert!(!is_md5_secret("md5é75bce1d3201d16594cebf9d7eb3f9d"));
        assert!(md5_response_from_secret("md5", [0; 4]).is_err());
    }
}
