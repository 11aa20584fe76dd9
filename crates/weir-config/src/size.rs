//! Human-readable byte sizes: `1073741824`, `"64MiB"`, `"1GB"`.
//!
//! Units are powers of 1024, as in PostgreSQL's own settings (`kB` = 1024 bytes):
//! `B`, `kB`/`KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`. A bare number is bytes.

use std::fmt;

/// Parse a byte size such as `"64MiB"`, `"1GB"`, `"512kB"` or `"4096"`.
///
/// # Errors
/// A message naming the problem (not a whole number, unknown unit, overflow).
pub fn parse(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(digits_end);
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected a whole number of bytes, e.g. \"64MiB\""
        ));
    }
    let num: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "kB" | "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit `{other}` (use B, kB, MB or GB)"
            ))
        }
    };
    num.checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Format a byte count in the largest exact unit (`"1GiB"`, `"64MiB"`, `"1000B"`).
pub fn format(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// Serde `deserialize_with` helper for a `u32` byte count: a TOML integer or a human string.
///
/// # Errors
/// The deserializer's error for a malformed, negative or larger-than-`u32` size.
pub fn deserialize_u32<'de, D>(deserializer: D) -> Result<u32, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserializer.deserialize_any(SizeVisitor)
}

struct SizeVisitor;

impl serde::de::Visitor<'_> for SizeVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size in bytes, e.g. 1048576 or \"1MiB\"")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format!("size {v} is larger than 4GiB")))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
        let v = u64::try_from(v).map_err(|_| E::custom("a size must not be negative"))?;
        self.visit_u64(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u32, E> {
        self.visit_u64(parse(v).map_err(E::custom)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("1kB"), Ok(1024));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("1 GB"), Ok(1 << 30));
        assert!(parse("1.5MB").is_err());
        assert!(parse("MB").is_err());
        assert!(parse("5TB").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99999999999GB").is_err());
        assert_eq!(format(1 << 30), "1GiB");
        assert_eq!(format(3 << 20), "3MiB");
        assert_eq!(format(1000), "1000B");
        assert_eq!(format(0), "0B");
    }
}
