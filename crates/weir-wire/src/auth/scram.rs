//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it, for both sides.
//!
//! PostgreSQL's flavour (see the "SASL Authentication" chapter of its protocol docs): the
//! username in client-first is ignored (libpq sends `n=`), the password goes through SASLprep
//! and falls back to the raw bytes when SASLprep rejects it, and there is no authzid. This
//! module owns the shared parts: the stored verifier ([`ScramSecret`]), key derivation,
//! mechanism choice, limits and the attribute parser; [`ScramServer`] and [`ScramClient`] are
//! the two state machines.
//!
//! Channel binding: the server side accepts `SCRAM-SHA-256-PLUS` with `tls-server-end-point`
//! (RFC 5929: a hash of the server's certificate, [`tls_server_end_point`]) when the
//! client is on TLS; the client side (proxy to PostgreSQL) does not bind yet.
//!
//! Every field from a peer is bounded before any work is done on it: see the `MAX_*` constants.

use std::fmt;

use super::base64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::{shorten, AuthError};

mod client;
mod server;

pub use client::ScramClient;
pub use server::ScramServer;

/// The only SASL mechanism implemented.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The channel-binding variant, recognised only to refuse it clearly.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// PostgreSQL's default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Largest client-first-message accepted. libpq sends ~32 bytes; a 63-byte username with
/// every byte escaped (`=2C`, 3 bytes each) plus a 256-char nonce still fits.
pub const MAX_CLIENT_FIRST_LEN: usize = 1024;
/// Largest client-final-message accepted; leaves room for tls-server-end-point channel binding
/// data (a base64 hash) and extensions once `-PLUS` lands.
pub const MAX_CLIENT_FINAL_LEN: usize = 4096;
/// Largest server-first or server-final message accepted (PostgreSQL sends under 150 bytes).
pub const MAX_SERVER_MESSAGE_LEN: usize = 1024;
/// Longest nonce attribute accepted (the client's nonce, or the combined nonce). libpq and
/// PostgreSQL use 24 base64 chars each.
pub const MAX_NONCE_LEN: usize = 256;
/// Longest salt accepted, decoded (PostgreSQL generates 16 bytes).
pub const MAX_SALT_LEN: usize = 256;
/// Highest iteration count a [`ScramClient`] will compute. PBKDF2 runs one HMAC-SHA-256
/// (two SHA-256 block compressions) per iteration, so 10 million costs seconds of one core:
/// generous for a deliberately hardened `scram_iterations` (PostgreSQL's default is 4096,
/// OWASP suggests 600 000), while a hostile or misconfigured server cannot pin a core for
/// many minutes with `i=2147483647`. The caller should run the exchange off the async
/// executor (e.g. `spawn_blocking`) when iteration counts can be high.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest verifier string [`ScramSecret::parse`] accepts.
pub const MAX_VERIFIER_LEN: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// A stored SCRAM-SHA-256 verifier: what PostgreSQL keeps in `pg_authid.rolpassword`.
///
/// `Debug` redacts the keys: with them anyone can impersonate the server, and StoredKey
/// allows an offline dictionary attack.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iteration count (at least 1).
    pub iterations: u32,
    /// The salt, decoded.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &base64::encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>`.
    ///
    /// # Errors
    /// [`AuthError::InvalidSecret`] naming the bad part (never echoing key material).
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let bad = |what: &str| AuthError::InvalidSecret(format!("SCRAM verifier: {what}"));
        if s.len() > MAX_VERIFIER_LEN {
            return Err(bad("too long"));
        }
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or_else(|| bad("does not start with \"SCRAM-SHA-256$\""))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or_else(|| bad("missing '$' before the keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or_else(|| bad("missing ':' between iterations and salt"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or_else(|| bad("missing ':' between StoredKey and ServerKey"))?;
        let iterations = parse_iterations(iterations)
            .filter(|i| i32::try_from(*i).is_ok())
            .ok_or_else(|| bad("iteration count is not a number in 1..=2147483647"))?;
        let salt = decode_salt(salt).ok_or_else(|| bad("salt is not base64 of 1..=256 bytes"))?;
        let stored_key =
            decode_key(stored_key).ok_or_else(|| bad("StoredKey is not base64 of 32 bytes"))?;
        let server_key =
            decode_key(server_key).ok_or_else(|| bad("ServerKey is not base64 of 32 bytes"))?;
        Ok(Self {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derives the verifier from a password, as PostgreSQL does (SASLprep first).
    ///
    /// An `iterations` of 0 is meaningless in PBKDF2 and is treated as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A new verifier with a random 16-byte salt and [`DEFAULT_ITERATIONS`].
    pub fn generate(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Formats the verifier the way PostgreSQL stores it; [`ScramSecret::parse`] reads it back.
    pub fn to_verifier(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            base64::encode(&self.salt),
            base64::encode(&self.stored_key),
            base64::encode(&self.server_key)
        )
    }
}

/// Picks the mechanism to use from an AuthenticationSASL list.
///
/// # Errors
/// [`AuthError::UnsupportedMechanism`] when `SCRAM-SHA-256` is not offered; the message says
/// so plainly when only the channel-binding variant is.
pub fn choose_mechanism<'a>(
    offered: impl IntoIterator<Item = &'a str>,
) -> Result<&'static str, AuthError> {
    let mut plus_offered = false;
    let mut others = Vec::new();
    for mechanism in offered {
        match mechanism {
            SCRAM_SHA_256 => return Ok(SCRAM_SHA_256),
            SCRAM_SHA_256_PLUS => plus_offered = true,
            other if others.len() < 8 => others.push(shorten(other)),
            _ => {}
        }
    }
    if plus_offered {
        return Err(AuthError::UnsupportedMechanism(
            "the server offers only SCRAM-SHA-256-PLUS, and channel binding over TLS is not \
             supported yet"
                .into(),
        ));
    }
    Err(AuthError::UnsupportedMechanism(format!(
        "no supported SASL mechanism offered (got: {})",
        others.join(", ")
    )))
}

/// Applies PostgreSQL's password normalization: SASLprep, or the raw password when SASLprep
/// rejects it or maps it to nothing (pg_saslprep treats an empty result as prohibited).
///
/// Known divergence in exotic cases: pg_saslprep checks prohibited code points before NFKC,
/// the `stringprep` crate after; this only matters for compatibility characters whose
/// normalization changes their class.
fn normalize_password(password: &str) -> std::borrow::Cow<'_, str> {
    match stringprep::saslprep(password) {
        Ok(prepared) if !prepared.is_empty() => prepared,
        _ => std::borrow::Cow::Borrowed(password),
    }
}

/// How many derived passwords [`salted_password`] remembers: one per (server user,
/// salt) a proxy logs in with is the common case, so this covers many pools.
const SALTED_MEMO: usize = 64;

/// `Hi(Normalize(password), salt, i)`: PBKDF2-HMAC-SHA-256 with one 32-byte block,
/// remembered by a digest of its inputs. A pool logs in to its server with the same
/// password and gets the same salt at every connect, and 4096 rounds cost the proxy
/// ~0.45 ms of CPU each time (744 vs 288 µs per server connection measured here, with
/// SHA extensions; ~29 million instructions without): a pool that grows under load paid
/// that per connection. PgBouncer keeps the derived keys likewise. The memo holds
/// digests, never a password.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    type Memo = std::sync::Mutex<std::collections::VecDeque<([u8; 32], [u8; 32])>>;
    static MEMO: Memo = std::sync::Mutex::new(std::collections::VecDeque::new());
    let key: [u8; 32] = Sha256::new()
        .chain_update(iterations.to_be_bytes())
        .chain_update((salt.len() as u64).to_be_bytes())
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize()
        .into();
    let memo = || {
        MEMO.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some((_, salted)) = memo().iter().find(|(k, _)| *k == key) {
        return *salted;
    }
    let salted = derive_salted_password(password, salt, iterations);
    let mut memo = memo();
    if memo.len() == SALTED_MEMO {
        memo.pop_front();
    }
    memo.push_back((key, salted));
    salted
}

/// [`salted_password`] without the memo.
fn derive_salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let password = normalize_password(password);
    let prf = keyed(password.as_bytes());
    // The keyed state is cloned per round, so the key pads are hashed once, not i times.
    let mut u: [u8; 32] = prf
        .clone()
        .chain_update(salt)
        .chain_update(1u32.to_be_bytes())
        .finalize()
        .into_bytes()
        .into();
    let mut out = u;
    for _ in 1..iterations {
        u = prf.clone().chain_update(u).finalize().into_bytes().into();
        xor_in_place(&mut out, &u);
    }
    out
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC hashes over-long keys and pads short ones, so every key length is valid.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    keyed(key).chain_update(data).finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn xor_in_place(acc: &mut [u8; 32], other: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

pub(crate) fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = *a;
    xor_in_place(&mut out, b);
    out
}

/// Parses a decimal iteration count (digits only: no sign, no spaces) that is at least 1.
fn parse_iterations(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|i| *i >= 1)
}

/// Decodes a base64 salt of 1..=[`MAX_SALT_LEN`] bytes, checking the length before decoding.
fn decode_salt(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() > MAX_SALT_LEN.div_ceil(3) * 4 {
        return None;
    }
    base64::decode(s).filter(|salt| !salt.is_empty() && salt.len() <= MAX_SALT_LEN)
}

/// Decodes base64 of exactly 32 bytes (a key, proof or signature: always 44 chars).
pub(crate) fn decode_key(s: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    (s.len() == 44 && base64::decode_into(s, &mut key)? == 32).then_some(key)
}

pub(crate) fn b64(data: &[u8]) -> String {
    base64::encode(data)
}

/// Whether `s` is a valid nonce: 1..=[`MAX_NONCE_LEN`] chars, all printable ASCII except ','
/// (RFC 5802 `printable = %x21-2B / %x2D-7E`).
pub(crate) fn valid_nonce(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NONCE_LEN
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A fresh nonce: 18 random bytes in base64 (24 chars), as libpq and PostgreSQL make them.
pub(crate) fn new_nonce() -> String {
    let raw: [u8; 18] = rand::random();
    base64::encode(&raw)
}

/// Takes the next `x=value` attribute off a comma-separated SCRAM message.
///
/// # Errors
/// [`AuthError::Protocol`] when the attribute is missing or has another name.
pub(crate) fn expect_attr<'a>(
    parts: &mut std::str::Split<'a, char>,
    name: char,
    message: &str,
) -> Result<&'a str, AuthError> {
    let part = parts
        .next()
        .ok_or_else(|| AuthError::Protocol(format!("{message}: missing attribute '{name}'")))?;
    let mut chars = part.chars();
    match (chars.next(), chars.next()) {
        (Some(c), Some('=')) if c == name => Ok(chars.as_str()),
        _ => Err(AuthError::Protocol(format!(
            "{message}: expected attribute '{name}', got \"{}\"",
            shorten(part)
        ))),
    }
}

/// Checks that every remaining part is a well-formed extension (`letter=value`), which
/// PostgreSQL, like RFC 5802, ignores.
pub(crate) fn skip_extensions(
    parts: std::str::Split<'_, char>,
    message: &str,
) -> Result<(), AuthError> {
    for part in parts {
        if !matches!(part.as_bytes(), [name, b'=', ..] if name.is_ascii_alphabetic()) {
            return Err(AuthError::Protocol(format!(
                "{message}: malformed attribute \"{}\"",
                shorten(part)
            )));
        }
    }
    Ok(())
}

/// Decodes a SCRAM message as UTF-8 after checking its length.
pub(crate) fn message_str<'a>(
    data: &'a [u8],
    max: usize,
    message: &str,
) -> Result<&'a str, AuthError> {
    if data.len() > max {
        return Err(AuthError::Protocol(format!(
            "{message} too long ({} bytes, limit {max})",
            data.len()
        )));
    }
    if data.is_empty() {
        return Err(AuthError::Protocol(format!("{message} is empty")));
    }
    std::str::from_utf8(data)
        .map_err(|_| AuthError::Protocol(format!("{message} is not valid UTF-8")))
}

#[cfg(test)]
mod tests;

/// RFC 5929's `tls-server-end-point` channel-binding data for a certificate (DER): its
/// hash with the hash function of its signature algorithm, SHA-256 if that is MD5 or
/// SHA-1 or not recognised (as PostgreSQL computes it).
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    // ecdsa-with-SHA384/512 (1.2.840.10045.4.3.3/4), sha384/512WithRSAEncryption (1.2.840.113549.1.1.12/13).
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    match signature_algorithm(cert_der) {
        Some(ECDSA_SHA384 | RSA_SHA384) => Sha384::digest(cert_der).to_vec(),
        Some(ECDSA_SHA512 | RSA_SHA512) => Sha512::digest(cert_der).to_vec(),
        _ => Sha256::digest(cert_der).to_vec(),
    }
}

/// The OID (content bytes) of a certificate's outer signatureAlgorithm:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = crate::der::tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = crate::der::tlv(cert)?; // tbsCertificate
    let (tag, alg, _) = crate::der::tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = crate::der::tlv(alg)?;
    (tag == 0x06).then_some(oid)
}
