//! The normalized token stream of a query (literals as placeholders, signs folded,
//! `IN (...)`/`ARRAY[...]` lists collapsed) and its two consumers: [`fingerprint`]
//! and [`normalize`].

use super::fast;
use super::lex::{Lexer, Token, TokenKind};

/// Most input bytes [`fingerprint`] and [`normalize`] look at; longer queries are
/// identified by their first 16 KiB (bulk `INSERT ... VALUES` would otherwise cost
/// time proportional to the data on the hot path).
pub const MAX_SCAN: usize = 16 * 1024;

/// Longest text [`normalize`] returns (bytes, before the trailing `...`).
pub const MAX_NORMALIZED: usize = 2048;

/// A query's fingerprint: the same for queries that differ only in literal values,
/// whitespace, comments, the case of unquoted words and IN-list lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Stable 64-bit hash (FNV-1a) of the normalized token stream.
    pub hash: u64,
    /// Non-empty statements seen (split on `;` outside strings and comments).
    pub statements: u32,
    /// The query was longer than [`MAX_SCAN`] and only its start was hashed.
    pub truncated: bool,
}

/// One normalized token, as the walker hands it to a sink.
#[derive(Debug, Clone, Copy)]
enum Norm<'a> {
    /// An unquoted word (case-folded by the sink).
    Word(&'a [u8]),
    /// Quoted identifier, operator or punctuation, verbatim.
    Text(&'a [u8]),
    /// A literal or parameter.
    Placeholder,
    /// `;` between two non-empty statements.
    Semicolon,
}

/// Keywords after which `-`/`+` starts a value, and before which `(` keeps a space.
/// Sorted, uppercase, for binary search.
const KEYWORDS: &[&str] = &[
    "ALL",
    "AND",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "BEGIN",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "COMMIT",
    "CREATE",
    "CROSS",
    "DEFAULT",
    "DELETE",
    "DESC",
    "DISTINCT",
    "DO",
    "DROP",
    "ELSE",
    "END",
    "EXCEPT",
    "EXISTS",
    "FALSE",
    "FETCH",
    "FOR",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "ILIKE",
    "IN",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTO",
    "IS",
    "JOIN",
    "LEFT",
    "LIKE",
    "LIMIT",
    "NOT",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "RETURNING",
    "RIGHT",
    "ROLLBACK",
    "SELECT",
    "SET",
    "SOME",
    "TABLE",
    "THEN",
    "TRUE",
    "UNION",
    "UPDATE",
    "USING",
    "VALUES",
    "WHEN",
    "WHERE",
    "WITH",
];

/// Is `word` one of [`KEYWORDS`] (case-insensitive)?
fn is_keyword(word: &[u8]) -> bool {
    let mut buf = [0u8; 16];
    let Some(dst) = buf.get_mut(..word.len()) else {
        return false;
    };
    for (d, s) in dst.iter_mut().zip(word) {
        *d = s.to_ascii_uppercase();
    }
    KEYWORDS
        .binary_search_by(|k| k.as_bytes().cmp(&*dst))
        .is_ok()
}

/// Walks the tokens of `sql` (first [`MAX_SCAN`] bytes), replacing literals by
/// placeholders, folding a sign into the number it precedes, collapsing runs of
/// literals in `IN (...)` and `ARRAY[...]` to one placeholder, and dropping empty
/// statements and trailing `;`. Returns (statements, truncated).
fn walk(sql: &[u8], mut emit: impl FnMut(Norm<'_>) -> bool) -> (u32, bool) {
    let truncated = sql.len() > MAX_SCAN;
    let src = sql.get(..MAX_SCAN).unwrap_or(sql);
    let mut lx = Lexer::new(src);
    let mut statements = 0u32;
    let mut in_statement = false;
    let mut prev: Option<Token<'_>> = None;
    let mut depth = 0usize;
    // Bit d set: the bracket level d collapses literal lists.
    let mut collapse = 0u64;
    let mut last_placeholder = false;
    while let Some(t) = lx.next() {
        if t.is_punct(b';') {
            in_statement = false;
            prev = Some(t);
            continue;
        }
        if !in_statement {
            if statements > 0 && !emit(Norm::Semicolon) {
                break;
            }
            statements = statements.saturating_add(1);
            in_statement = true;
            depth = 0;
            collapse = 0;
        }
        let level_collapses = depth < 64 && collapse & (1u64 << depth) != 0;
        let norm = match t.kind {
            _ if t.is_literal() => Norm::Placeholder,
            TokenKind::Operator if (t.text == b"-" || t.text == b"+") && !ends_value(prev) => {
                let mut peek = lx.clone();
                match peek.next() {
                    Some(n) if n.kind == TokenKind::Number => {
                        lx = peek;
                        Norm::Placeholder
                    }
                    _ => Norm::Text(t.text),
                }
            }
            TokenKind::Punct if t.text == b"," && level_collapses && last_placeholder => {
                let mut peek = lx.clone();
                let more = match peek.next() {
                    Some(n) if n.is_literal() => true,
                    Some(n) if n.text == b"-" || n.text == b"+" => {
                        peek.next().is_some_and(|m| m.kind == TokenKind::Number)
                    }
                    _ => false,
                };
                if more {
                    lx = peek;
                    continue;
                }
                Norm::Text(t.text)
            }
            TokenKind::Punct if t.text == b"(" || t.text == b"[" => {
                let opener = if t.text == b"(" {
                    &b"IN"[..]
                } else {
                    &b"ARRAY"[..]
                };
                depth = depth.saturating_add(1);
                if depth < 64 {
                    let on = prev.is_some_and(|p| {
                        p.kind == TokenKind::Word && p.text.eq_ignore_ascii_case(opener)
                    });
                    collapse = (collapse & !(1u64 << depth)) | (u64::from(on) << depth);
                }
                Norm::Text(t.text)
            }
            TokenKind::Punct if t.text == b")" || t.text == b"]" => {
                depth = depth.saturating_sub(1);
                Norm::Text(t.text)
            }
            TokenKind::Word => Norm::Word(t.text),
            _ => Norm::Text(t.text),
        };
        last_placeholder = matches!(norm, Norm::Placeholder);
        prev = Some(if last_placeholder {
            Token {
                kind: TokenKind::Number,
                text: b"0",
            }
        } else {
            t
        });
        if !emit(norm) {
            return (statements, true);
        }
    }
    (statements, truncated)
}

/// Does `prev` end a value, so that a following `-` is binary?
fn ends_value(prev: Option<Token<'_>>) -> bool {
    match prev {
        None => false,
        Some(p) => match p.kind {
            TokenKind::Word => !is_keyword(p.text),
            TokenKind::QuotedIdent | TokenKind::String | TokenKind::Number | TokenKind::Param => {
                true
            }
            TokenKind::Punct => p.text == b")" || p.text == b"]",
            TokenKind::Operator => false,
        },
    }
}

pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub(super) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The fingerprint of a query (see [`Fingerprint`]); no allocation, linear in
/// `min(sql.len(), MAX_SCAN)`.
pub fn fingerprint(sql: &[u8]) -> Fingerprint {
    fast::fingerprint(sql).unwrap_or_else(|| fingerprint_general(sql))
}

/// [`fingerprint`] through the general lexer, for any input.
pub(super) fn fingerprint_general(sql: &[u8]) -> Fingerprint {
    let mut h = FNV_OFFSET;
    let mut feed = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    };
    let (statements, truncated) = walk(sql, |n| {
        match n {
            Norm::Word(w) => {
                w.iter().for_each(|b| feed(b.to_ascii_lowercase()));
                feed(1);
            }
            Norm::Text(t) => {
                t.iter().for_each(|&b| feed(b));
                feed(2);
            }
            Norm::Placeholder => feed(3),
            Norm::Semicolon => feed(4),
        }
        true
    });
    Fingerprint {
        hash: h,
        statements,
        truncated,
    }
}

/// The normalized text of a query, as `SHOW QUERIES` shows it: keywords
/// uppercased, identifiers lowercased, literals replaced by `$1`, `$2`, ...,
/// single spaces, at most [`MAX_NORMALIZED`] bytes (then `...`).
pub fn normalize(sql: &[u8]) -> String {
    use std::io::Write as _;

    /// The last emitted token, for spacing.
    #[derive(PartialEq, Eq)]
    enum Last {
        /// Nothing yet, or `(`, `[`, `.`, `::`: no space after.
        Tight,
        /// A function name or quoted identifier: no space before `(`.
        Callable,
        /// Anything else.
        Other,
    }
    let mut out: Vec<u8> = Vec::with_capacity(sql.len().min(MAX_NORMALIZED) + 8);
    let mut n = 0u32;
    let mut last = Last::Tight;
    let (_, truncated) = walk(sql, |t| {
        let text: &[u8] = match t {
            Norm::Word(w) => w,
            Norm::Text(x) => x,
            Norm::Semicolon => b";",
            Norm::Placeholder => b"$",
        };
        let space = last != Last::Tight
            && !matches!(text, b")" | b"]" | b"," | b"." | b";" | b"::" | b"[")
            && !(text == b"(" && last == Last::Callable);
        if space {
            out.push(b' ');
        }
        last = Last::Other;
        match t {
            Norm::Word(w) => {
                let kw = is_keyword(w);
                if !kw {
                    last = Last::Callable;
                }
                out.extend(w.iter().map(|b| {
                    if kw {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    }
                }));
            }
            Norm::Text(x) => {
                if x.starts_with(b"\"") {
                    last = Last::Callable;
                } else if matches!(x, b"(" | b"[" | b"." | b"::") {
                    last = Last::Tight;
                }
                out.extend_from_slice(x);
            }
            Norm::Semicolon => out.push(b';'),
            Norm::Placeholder => {
                n = n.saturating_add(1);
                // Writing to a Vec cannot fail.
                let _ = write!(out, "${n}");
            }
        }
        out.len() <= MAX_NORMALIZED
    });
    if truncated {
        let mut cut = out.len().min(MAX_NORMALIZED);
        // Cut on a character boundary.
        while cut > 0 && out.get(cut).is_some_and(|&b| b & 0xc0 == 0x80) {
            cut -= 1;
        }
        out.truncate(cut);
        out.extend_from_slice(b" ...");
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}
