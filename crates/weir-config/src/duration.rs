//! Human-readable durations: `"30s"`, `"5m"`, `"1h"`, `"250ms"`, `"1h30m"`, `"0"`.
//!
//! A bare number (TOML integer or float, or a string of digits) means seconds, as in
//! PgBouncer's `pgbouncer.ini`, so `server_lifetime = 3600` and `server_lifetime = "1h"`
//! are the same. Units: `ns`, `us`, `ms`, `s`, `m` (or `min`), `h`, `d`. Several
//! number-unit pairs add up (`"1m30s"`). Values above [`MAX`] are rejected because a
//! timer of centuries overflows `Instant` arithmetic; write `0` to disable a timeout.

use std::fmt;
use std::time::Duration;

/// The longest duration accepted anywhere in the config: 365 days.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parse a human duration such as `"30s"`, `"5m"`, `"250ms"`, `"1h30m"`, `"0"` or `"15"` (seconds).
///
/// # Errors
/// A message naming the problem (empty text, unknown unit, missing unit in a compound
/// value, a number that is not a non-negative decimal, or a value above [`MAX`]).
pub fn parse(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. \"30s\", \"5m\", \"250ms\" or \"0\"".to_owned());
    }
    if text.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    // A lone number is seconds, like PgBouncer's `[seconds]` settings.
    if text.chars().all(is_number) {
        let nanos =
            scale(text, NANOS_PER_SEC).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
        return from_nanos(nanos).map_err(|e| format!("invalid duration {s:?}: {e}"));
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !is_number(c)).unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number at {rest:?}"
            ));
        }
        let (num, after) = rest.split_at(num_end);
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_end);
        let per_unit = unit_nanos(unit).ok_or_else(|| {
            if unit.is_empty() {
                format!("invalid duration {s:?}: missing unit after {num} (use ms, s, m, h or d)")
            } else {
                format!("invalid duration {s:?}: unknown unit `{unit}` (use ms, s, m, h or d)")
            }
        })?;
        let part = scale(num, per_unit).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
        total = total.saturating_add(part);
        rest = tail.trim_start();
    }
    from_nanos(total).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Format a duration the way [`parse`] reads it, in the largest exact unit (`"1h"`, `"90s"`, `"0"`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0".to_owned();
    }
    let nanos = d.as_nanos();
    let units: [(u128, &str); 7] = [
        (86_400 * NANOS_PER_SEC, "d"),
        (3_600 * NANOS_PER_SEC, "h"),
        (60 * NANOS_PER_SEC, "m"),
        (NANOS_PER_SEC, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    for (size, name) in units {
        if nanos.is_multiple_of(size) {
            return format!("{}{name}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// Serde `deserialize_with` helper: a TOML integer or float (seconds) or a human string.
///
/// # Errors
/// The deserializer's error, carrying [`parse`]'s message.
pub fn deserialize<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserializer.deserialize_any(DurationVisitor)
}

/// [`deserialize`] for an optional key (use with `#[serde(default)]`: absent = `None`).
///
/// # Errors
/// As [`deserialize`].
pub fn deserialize_option<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserialize(deserializer).map(Some)
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\", \"5m\", \"250ms\" or a number of seconds")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        from_nanos(u128::from(v) * NANOS_PER_SEC).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        let secs = u64::try_from(v).map_err(|_| E::custom("a duration must not be negative"))?;
        self.visit_u64(secs)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        if !v.is_finite() || v < 0.0 {
            return Err(E::custom(
                "a duration must be a finite, non-negative number",
            ));
        }
        match Duration::try_from_secs_f64(v) {
            Ok(d) if d <= MAX => Ok(d),
            _ => Err(E::custom(too_long())),
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" | "min" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// `num` (a decimal like `"1.5"`) times `per_unit` nanoseconds, truncated to whole nanoseconds.
fn scale(num: &str, per_unit: u128) -> Result<u128, String> {
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err("expected a number".to_owned());
    }
    if frac.contains('.') || frac.len() > 18 || whole.len() > 20 {
        return Err(format!("`{num}` is not a valid number"));
    }
    let parse_digits = |d: &str| -> Result<u128, String> {
        if d.is_empty() {
            Ok(0)
        } else {
            d.parse::<u128>()
                .map_err(|_| format!("`{num}` is not a valid number"))
        }
    };
    let whole = parse_digits(whole)?;
    let frac_value = parse_digits(frac)?;
    // frac.len() <= 18 keeps 10^len and the product inside u128.
    let frac_scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(18));
    Ok(whole
        .saturating_mul(per_unit)
        .saturating_add(frac_value.saturating_mul(per_unit) / frac_scale))
}

fn from_nanos(nanos: u128) -> Result<Duration, String> {
    if nanos > MAX.as_nanos() {
        return Err(too_long());
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_long())?;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).map_err(|_| too_long())?;
    Ok(Duration::new(secs, sub))
}

fn too_long() -> String {
    format!(
        "a duration must be at most {} (use 0 to disable a timeout)",
        format(MAX)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30", Duration::from_secs(30)),
            ("30s", Duration::from_secs(30)),
            ("30 s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("5min", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(2 * 86_400)),
            ("250ms", Duration::from_millis(250)),
            ("15us", Duration::from_micros(15)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5s", Duration::from_millis(1500)),
            ("15.0", Duration::from_secs(15)),
            (".5s", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m 30s", Duration::from_secs(90)),
            ("  45s ", Duration::from_secs(45)),
            ("365d", MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_forms() {
        for text in [
            "", "  ", "s", "5x", "5 sec", "-5s", "1m30", "1..5s", "5S", "ms5", "1.2.3", "366d",
        ] {
            assert!(parse(text).is_err(), "{text:?} should fail");
        }
        assert!(parse("5x").unwrap_err().contains("unknown unit `x`"));
        assert!(parse("1m30").unwrap_err().contains("missing unit"));
        assert!(parse("99999999999999999999999h").is_err());
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(3600),
            Duration::from_secs(90),
            Duration::from_millis(250),
            Duration::from_nanos(1_000_001),
            Duration::from_secs(86_400),
        ] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
        assert_eq!(format(Duration::from_secs(120)), "2m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }
}
