//! The auth file: PgBouncer's `userlist.txt` format, one user per line.
//!
//! ```text
//! ; comment
//! "alice" "plain password"
//! "bob"   "md545f2603610af569b6155c45067268c6b"
//! "carol" "SCRAM-SHA-256$4096:<salt>$<storedkey>:<serverkey>"
//! "say ""hi""" "pw"        <- "" inside quotes is one "
//! ```
//!
//! Both fields are double-quoted; the rest of a line is ignored (as PgBouncer does, so a
//! `pg_shadow` dump with extra columns works). Blank lines and lines starting with `;` or
//! `#` are comments. An empty secret (`"user" ""`) lists the user without a password: only
//! `auth_type = "trust"` lets such a user in.

use std::path::Path;

use crate::{ConfigError, Secret};

/// One user from the auth file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFileEntry {
    /// The user name.
    pub user: String,
    /// The stored secret; `None` for an empty one.
    pub secret: Option<Secret>,
    /// 1-based line where the user is listed.
    pub line: usize,
}

/// Read and parse an auth file.
///
/// # Errors
/// [`ConfigError::Io`] if it cannot be read (or is not UTF-8), [`ConfigError::AuthFile`]
/// for a malformed line.
pub fn read(path: &Path) -> Result<Vec<AuthFileEntry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parse the text of an auth file; `path` is only used in errors.
///
/// # Errors
/// [`ConfigError::AuthFile`] naming the line: a line that does not start with a quoted
/// user name, an unterminated quote, a missing quoted secret, an empty user name, or a
/// user listed twice.
pub fn parse(text: &str, path: &Path) -> Result<Vec<AuthFileEntry>, ConfigError> {
    let mut entries: Vec<AuthFileEntry> = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let err = |message: String| ConfigError::AuthFile {
            path: path.to_owned(),
            line,
            message,
        };
        let rest = raw.trim_start();
        if rest.trim_end().is_empty() || rest.starts_with(';') || rest.starts_with('#') {
            continue;
        }
        let (user, rest) = quoted(rest).map_err(|m| err(format!("user name: {m}")))?;
        let rest = rest.trim_start();
        if !rest.starts_with('"') {
            return Err(err(
                "expected the password or secret in double quotes after the user name".to_owned(),
            ));
        }
        let (secret, _ignored) = quoted(rest).map_err(|m| err(format!("password: {m}")))?;
        if user.is_empty() {
            return Err(err("empty user name".to_owned()));
        }
        if let Some(first) = entries.iter().find(|e| e.user == user) {
            return Err(err(format!(
                "user `{user}` is listed twice (first on line {})",
                first.line
            )));
        }
        let secret = (!secret.is_empty()).then(|| Secret::classify(secret));
        entries.push(AuthFileEntry { user, secret, line });
    }
    Ok(entries)
}

/// Read one `"..."` field with `""` as an escaped quote; return it and the text after it.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let Some(body) = s.strip_prefix('"') else {
        return Err("expected a value in double quotes, e.g. \"alice\" \"secret\"".to_owned());
    };
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
            continue;
        }
        if body.get(i + 1..).is_some_and(|r| r.starts_with('"')) {
            value.push('"');
            chars.next();
            continue;
        }
        return Ok((value, body.get(i + 1..).unwrap_or("")));
    }
    Err("missing closing double quote".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields() {
        assert_eq!(quoted("\"a\" rest"), Ok(("a".to_owned(), " rest")));
        assert_eq!(
            quoted("\"say \"\"hi\"\"\"x"),
            Ok(("say \"hi\"".to_owned(), "x"))
        );
        assert_eq!(quoted("\"\"\"\"\"\""), Ok(("\"\"".to_owned(), "")));
        assert_eq!(quoted("\"\""), Ok((String::new(), "")));
        assert!(quoted("\"open").is_err());
        assert!(quoted("bare").is_err());
        assert_eq!(quoted("\"é\"").map(|(v, _)| v), Ok("é".to_owned()));
    }

    #[test]
    fn crlf_lines() {
        let entries = parse("\"a\" \"b\"\r\n\"c\" \"d\"\r\n", Path::new("u.txt")).expect("parses");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].secret.as_ref().map(Secret::as_str), Some("d"));
    }
}
