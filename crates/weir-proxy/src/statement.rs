//! Errors the proxy raises about a client's statements: a query that makes the server
//! raise a given error (so the transaction fails exactly as PostgreSQL's own error would
//! fail it), and the refusal of named statements when mapping is turned off.

use std::fmt::Write as _;

use crate::error::ClientError;

pub(crate) const PREPARED_HINT: &str = "Set max_prepared_statements above 0, use pool_mode = \"session\" for this database, or unnamed statements.";

/// A `DO` block that raises an ERROR with `code`, `message` and `hint`. The texts travel
/// hex-encoded, so no quoting of theirs can break out of the block.
pub fn raise_query(code: &str, message: &str, hint: Option<&str>) -> String {
    let mut sql = String::from("DO $pgweir$ BEGIN RAISE EXCEPTION USING ERRCODE = '");
    sql.extend(code.chars().filter(char::is_ascii_alphanumeric));
    sql.push_str("', MESSAGE = ");
    push_hex_text(&mut sql, message);
    if let Some(hint) = hint {
        sql.push_str(", HINT = ");
        push_hex_text(&mut sql, hint);
    }
    sql.push_str("; END $pgweir$");
    sql
}

fn push_hex_text(sql: &mut String, text: &str) {
    sql.push_str("pg_catalog.convert_from('\\x");
    for b in text.bytes() {
        let _ = write!(sql, "{b:02x}");
    }
    sql.push_str("'::bytea, 'UTF8')");
}

/// Named statements with `max_prepared_statements = 0` in transaction mode.
pub fn refuse_named_statements(name: &[u8]) -> ClientError {
    crate::error::Unsupported::NamedStatement(String::from_utf8_lossy(name).into_owned()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_query_cannot_be_broken_out_of() {
        let sql = raise_query("42P05", "it's $pgweir$ evil", Some("h"));
        assert!(sql.starts_with("DO $pgweir$ BEGIN RAISE EXCEPTION USING ERRCODE = '42P05'"));
        assert_eq!(sql.matches("$pgweir$").count(), 2);
        assert!(!sql.contains("evil"));
        assert!(sql.contains(&format!("{:02x}", b'\'')));
    }
}
