//! PgBouncer's connection strings: the values in `[databases]` (`host=db port=5432
//! dbname=app`) and `[users]` (`pool_mode=session`).
//!
//! `key=value` pairs separated by whitespace; a value may be single-quoted, with `''`
//! standing for one quote inside (PgBouncer's `cstr_unquote_value`), so
//! `connect_query='SELECT ''x'''` is `SELECT 'x'`. Keys are lowercased.

/// Parses a connection string into `(key, value)` pairs in order.
///
/// # Errors
/// A message for a pair without `=`, an empty key, or an unterminated quote.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_ascii_lowercase();
        // PgBouncer allows blanks around `=`.
        let after_key = rest[key_end..].trim_start();
        let Some(value_start) = after_key.strip_prefix('=') else {
            return Err(format!("expected key=value at `{}`", head(rest)));
        };
        if key.is_empty() {
            return Err(format!("empty key at `{}`", head(rest)));
        }
        rest = value_start.trim_start();
        let (value, after) = if let Some(quoted) = rest.strip_prefix('\'') {
            unquote(quoted).ok_or_else(|| format!("unterminated quote in the value of {key}"))?
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (rest[..end].to_owned(), &rest[end..])
        };
        pairs.push((key, value));
        rest = after.trim_start();
    }
    Ok(pairs)
}

/// Reads a quoted value up to its closing quote; returns it and the text after it.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                chars.next();
                value.push('\'');
                continue;
            }
            return Some((value, s.get(i + 1..)?));
        }
        value.push(c);
    }
    None
}

/// The first few characters of `s`, for error messages.
fn head(s: &str) -> String {
    s.chars().take(24).collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn plain_and_quoted_values() {
        assert_eq!(
            pairs("host=localhost  Port=300 user=baz password=foo connect_query='SELECT 1'"),
            [
                ("host", "localhost"),
                ("port", "300"),
                ("user", "baz"),
                ("password", "foo"),
                ("connect_query", "SELECT 1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(
            pairs("password='it''s  a secret' dbname=x"),
            [("password", "it's  a secret"), ("dbname", "x")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(pairs("   "), []);
        assert_eq!(
            pairs("host = h pool_size =5")[1],
            ("pool_size".to_owned(), "5".to_owned())
        );
        assert_eq!(pairs("dbname=")[0], ("dbname".to_owned(), String::new()));
    }

    #[test]
    fn malformed_strings_say_where() {
        assert!(parse("host").is_err());
        assert!(parse("host localhost").is_err());
        assert!(parse("=x").is_err());
        assert!(parse("password='open").is_err());
    }
}
