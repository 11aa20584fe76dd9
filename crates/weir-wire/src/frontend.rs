//! Readers for the frontend (client → server) message bodies the proxy must look at:
//! statement and portal names, and the leading keyword of a query.

use crate::frame::read_cstr;
use crate::sql::{is_newline, is_space};

/// Reads a Query ('Q') body: the SQL text without its NUL. A body that ends in a NUL
/// is taken whole, without a scan for an earlier one: PostgreSQL refuses a Query with
/// anything after its text's NUL ("invalid message format"), so wherever the text runs
/// the two readings agree, and the relay does not search every query for a NUL
/// (~110 instructions per query).
pub fn query_text(body: &[u8]) -> Option<&[u8]> {
    match body.split_last() {
        Some((0, text)) => Some(text),
        _ => read_cstr(body).map(|(q, _)| q),
    }
}

/// Reads a Parse ('P') body's statement name and query text.
pub fn parse_name_and_query(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = read_cstr(body)?;
    let (query, _) = read_cstr(rest)?;
    Some((name, query))
}

/// Reads a Bind ('B') body's portal and statement names.
pub fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (portal, rest) = read_cstr(body)?;
    let (statement, _) = read_cstr(rest)?;
    Some((portal, statement))
}

/// Reads a Describe ('D') or Close ('C') body: kind (`S` statement / `P` portal) and name.
pub fn target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = read_cstr(rest)?;
    matches!(kind, b'S' | b'P').then_some((kind, name))
}

/// The first SQL keyword of `sql`, skipping whitespace and comments, uppercased into `out`
/// (at most `out.len()` bytes; longer keywords are truncated). Returns the keyword and the rest.
pub fn first_keyword<'a>(sql: &'a [u8], out: &mut [u8; 16]) -> (usize, &'a [u8]) {
    let rest = skip_space_and_comments(sql);
    let word_len = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic() && *b != b'_')
        .unwrap_or(rest.len());
    let n = word_len.min(out.len());
    for (dst, src) in out.iter_mut().zip(&rest[..n]) {
        *dst = src.to_ascii_uppercase();
    }
    (n, &rest[word_len..])
}

/// Skips leading whitespace, `-- line` and `/* block */` comments (nesting as PostgreSQL does).
///
/// Whitespace and comment ends are those of [`crate::sql`]'s lexer: the two must agree,
/// or a statement the lexer would classify hides behind a prefix only one of them skips.
pub fn skip_space_and_comments(mut sql: &[u8]) -> &[u8] {
    loop {
        let start = sql.iter().position(|&b| !is_space(b)).unwrap_or(sql.len());
        let trimmed = &sql[start..];
        if let Some(rest) = trimmed.strip_prefix(b"--") {
            sql = match rest.iter().position(|&b| is_newline(b)) {
                Some(i) => &rest[i + 1..],
                None => &[],
            };
        } else if trimmed.starts_with(b"/*") {
            let mut depth = 0usize;
            let mut i = 0;
            while i + 1 < trimmed.len() {
                match &trimmed[i..i + 2] {
                    b"/*" => {
                        depth += 1;
                        i += 2;
                    }
                    b"*/" => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
            if depth > 0 {
                return &[];
            }
            sql = &trimmed[i..];
        } else {
            return trimmed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(sql: &str) -> String {
        let mut out = [0u8; 16];
        let (n, _) = first_keyword(sql.as_bytes(), &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn keywords() {
        assert_eq!(kw("  set x = 1"), "SET");
        assert_eq!(kw("-- c\n /* a /* b */ */ Select 1"), "SELECT");
        assert_eq!(kw("/* unterminated"), "");
        assert_eq!(kw(""), "");
        assert_eq!(kw("verylongkeywordthatgoeson"), "VERYLONGKEYWORDT");
    }

    #[test]
    fn keywords_after_what_postgresql_skips() {
        // PostgreSQL ends a `--` comment at a carriage return too: this runs the SET.
        assert_eq!(kw("-- comment\rSET search_path = evil"), "SET");
        assert_eq!(kw("-- a\r\n-- b\rLISTEN jobs"), "LISTEN");
        // Vertical tab is whitespace to PostgreSQL 17+ (and to the SQL lexer).
        assert_eq!(kw("\x0bLISTEN jobs"), "LISTEN");
        assert_eq!(kw("\x0c\x0b /* c */\x0bset x = 1"), "SET");
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_name_and_query(b"s1\0select 1\0\0\0"),
            Some((&b"s1"[..], &b"select 1"[..]))
        );
        assert_eq!(bind_names(b"\0s1\0rest"), Some((&b""[..], &b"s1"[..])));
        assert_eq!(target(b"Sname\0"), Some((b'S', &b"name"[..])));
        assert_eq!(target(b"Xname\0"), None);
        assert_eq!(target(b""), None);
        assert_eq!(query_text(b"select\0"), Some(&b"select"[..]));
        assert_eq!(query_text(b"select\0junk"), Some(&b"select"[..]));
        // PostgreSQL refuses this message whole, so either reading is safe; the
        // relay's (the longer text) costs no scan.
        assert_eq!(query_text(b"select\0set x\0"), Some(&b"select\0set x"[..]));
    }
}
