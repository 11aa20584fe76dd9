//! Standard base64 (RFC 4648, `+/`, padded), as SCRAM writes salts, nonces, proofs and
//! signatures. Decoding is strict, as the `base64` crate's standard engine is: padding
//! required and canonical, unused trailing bits zero. Its own, because a login spends a
//! few dozen bytes here and the general engine's code was a visible part of what a
//! SCRAM login touches.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `data` in base64, appended to `out`.
pub fn encode_to(data: &[u8], out: &mut String) {
    out.reserve(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        let char_at = |shift: u32| char::from(ALPHABET[(n >> shift & 63) as usize]);
        out.push(char_at(18));
        out.push(char_at(12));
        out.push(if chunk.len() > 1 { char_at(6) } else { '=' });
        out.push(if chunk.len() > 2 { char_at(0) } else { '=' });
    }
}

/// `data` in base64.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::new();
    encode_to(data, &mut out);
    out
}

/// The 6-bit value of a base64 character.
fn value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// How many bytes `s` decodes to, if its length and padding are well-formed.
fn decoded_len(s: &[u8]) -> Option<usize> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let pad = s.iter().rev().take_while(|&&c| c == b'=').count();
    (pad <= 2).then(|| s.len() / 4 * 3 - pad)
}

/// Decodes `s` into the start of `out`; returns the length. `None` when `s` is not
/// canonical base64 or `out` is too short.
pub fn decode_into(s: &str, out: &mut [u8]) -> Option<usize> {
    let s = s.as_bytes();
    let len = decoded_len(s)?;
    if out.len() < len {
        return None;
    }
    let mut at: usize = 0;
    for quad in s.chunks_exact(4) {
        // Only the last quad may be padded (a '=' elsewhere is no base64 character).
        let pad = (at + 3).saturating_sub(len);
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        // Canonical: the bits the padding leaves unused are zero.
        if n & ((1u32 << (8 * pad)) - 1) != 0 {
            return None;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out[at..at + 3 - pad].copy_from_slice(&bytes[..3 - pad]);
        at += 3 - pad;
    }
    Some(at)
}

/// Decodes `s`; `None` when it is not canonical base64.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![0; decoded_len(s.as_bytes())?];
    decode_into(s, &mut out)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use proptest::prelude::*;

    #[test]
    fn rfc_4648_vectors() {
        for (raw, text) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::encode(raw.as_bytes()), text);
            assert_eq!(super::decode(text).as_deref(), Some(raw.as_bytes()));
        }
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in [
            "Zg", "Zg=", "Zh==", "Zm9=", "Z===", "====", "Zg==Zg==", "Zm9v!A==", "Zm 9",
        ] {
            assert_eq!(super::decode(text), None, "{text}");
        }
        let mut short = [0u8; 2];
        assert_eq!(super::decode_into("Zm9v", &mut short), None);
    }

    proptest! {
        /// The same text as the `base64` crate's standard engine writes.
        #[test]
        fn encodes_as_the_base64_crate(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(super::encode(&data), STANDARD.encode(&data));
        }

        /// The same answer as the `base64` crate's standard engine, for text near and
        /// far from valid.
        #[test]
        fn decodes_as_the_base64_crate(text in "[A-Za-z0-9+/=]{0,24}|[A-Za-z0-9+/]{0,20}={0,3}") {
            prop_assert_eq!(super::decode(&text), STANDARD.decode(&text).ok());
        }

        #[test]
        fn round_trips(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(super::decode(&super::encode(&data)), Some(data));
        }
    }
}
