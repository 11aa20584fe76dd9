//! The proxy's own session settings, `pgweir.priority` and `pgweir.dedup`: a lone
//! `SET [SESSION] pgweir.x = value` is answered by the proxy (idle, inside a
//! transaction or in session mode alike) and never reaches PostgreSQL, so a pooled
//! server never carries one client's setting to the next.

use weir_wire::sql::{Lexer, Token, TokenKind};

use crate::error::ClientError;
use crate::session_state::ClientSession;

/// One of the proxy's own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySetting {
    /// `pgweir.priority`: the client's class in the wait queue.
    Priority,
    /// `pgweir.dedup`: query dedup for the client.
    Dedup,
}

/// Longest Query body worth lexing: a lone `SET pgweir.priority = 'background'` with
/// room for comments and spaces.
const MAX_LEN: usize = 128;

/// Cheap test run before every transaction's first Query: a short text that starts
/// with `SET` and mentions `pgweir.`; only then is it lexed ([`parse`]).
pub fn looks_like(text: &[u8]) -> bool {
    let t = text.trim_ascii_start();
    t.len() > 3
        && text.len() <= MAX_LEN
        && t[..3].eq_ignore_ascii_case(b"SET")
        && t[3].is_ascii_whitespace()
        && t.windows(7).any(|w| w.eq_ignore_ascii_case(b"pgweir."))
}

/// The setting and value (quotes removed) of a lone `SET [SESSION] pgweir.priority` or
/// `pgweir.dedup` `= value` (or `TO value`). `None` for anything else, including
/// `SET LOCAL` (which would end with the transaction) and several statements.
pub fn parse(sql: &[u8]) -> Option<(ProxySetting, String)> {
    let tokens: Vec<Token<'_>> = Lexer::new(sql).collect();
    let mut t = tokens.as_slice();
    if let [rest @ .., last] = t {
        if is_punct(last, b';') {
            t = rest;
        }
    }
    let t = match t {
        [set, session, rest @ ..] if is_word(set, b"SET") && is_word(session, b"SESSION") => rest,
        [set, rest @ ..] if is_word(set, b"SET") => rest,
        _ => return None,
    };
    let [scope, dot, name, eq, value] = t else {
        return None;
    };
    if !(is_word(scope, b"pgweir") && is_punct(dot, b'.')) {
        return None;
    }
    let setting = if is_word(name, b"priority") {
        ProxySetting::Priority
    } else if is_word(name, b"dedup") {
        ProxySetting::Dedup
    } else {
        return None;
    };
    let assigns = (eq.kind == TokenKind::Operator && eq.text == b"=") || is_word(eq, b"TO");
    if !assigns {
        return None;
    }
    let raw = match value.kind {
        TokenKind::String => value.text.strip_prefix(b"'")?.strip_suffix(b"'")?,
        TokenKind::Word => value.text,
        _ => return None,
    };
    String::from_utf8(raw.to_vec()).ok().map(|v| (setting, v))
}

/// Applies a proxy setting to the client's session: the class from its next checkout
/// on, dedup from its next request on.
///
/// # Errors
/// The value names no class, or is not a boolean (22023); the session is unchanged.
pub fn apply(
    session: &mut ClientSession,
    setting: ProxySetting,
    value: &str,
) -> Result<(), ClientError> {
    match setting {
        ProxySetting::Priority => session.class = crate::session::parse_priority(value)?,
        ProxySetting::Dedup => session.dedup = Some(crate::session::parse_dedup(value)?),
    }
    Ok(())
}

fn is_punct(t: &Token<'_>, b: u8) -> bool {
    t.kind == TokenKind::Punct && t.text == [b]
}

fn is_word(t: &Token<'_>, word: &[u8]) -> bool {
    t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_own_settings_are_recognised() {
        let p = |sql: &str| parse(sql.as_bytes());
        assert_eq!(
            p("SET pgweir.priority = 'high'"),
            Some((ProxySetting::Priority, "high".into()))
        );
        assert_eq!(
            p("set session pgweir.priority to low;"),
            Some((ProxySetting::Priority, "low".into()))
        );
        assert_eq!(
            p("SET pgweir.dedup = off"),
            Some((ProxySetting::Dedup, "off".into()))
        );
        assert_eq!(p("SET LOCAL pgweir.priority = 'high'"), None);
        assert_eq!(p("SET pgweir.priority = 'high'; SELECT 1"), None);
        assert_eq!(p("SET search_path = 'high'"), None);
        assert_eq!(p("SET pgweir.other = 'x'"), None);
    }

    #[test]
    fn the_cheap_test_lets_through_only_short_sets_of_pgweir_settings() {
        assert!(looks_like(b"  SET pgweir.dedup = on"));
        assert!(looks_like(b"set\tPGWEIR.priority to low"));
        assert!(!looks_like(b"SELECT 'pgweir.priority'"));
        assert!(!looks_like(b"SETX pgweir.priority"));
        assert!(!looks_like(b"SET"));
        let long = format!("SET pgweir.priority = '{}'", "x".repeat(200));
        assert!(!looks_like(long.as_bytes()));
    }
}
