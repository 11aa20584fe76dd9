//! Cheap questions about a query's text: the first keyword of each statement, and
//! whether it calls a given function.

use super::lex::{Lexer, Token, TokenKind};

/// The first keyword of a statement: uppercased ASCII, at most 16 bytes (longer
/// words are cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyword {
    buf: [u8; 16],
    len: u8,
}

impl Keyword {
    fn new(word: &[u8]) -> Self {
        let mut buf = [0u8; 16];
        let len = word.len().min(buf.len());
        for (d, s) in buf.iter_mut().zip(word) {
            *d = s.to_ascii_uppercase();
        }
        Self {
            buf,
            len: len as u8,
        }
    }

    /// The uppercased bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The keyword as text (empty if it is not UTF-8, e.g. a cut multibyte identifier).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl PartialEq<&str> for Keyword {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes().eq_ignore_ascii_case(other.as_bytes())
    }
}

/// Iterator over the first keyword of each statement; see [`statement_keywords`].
#[derive(Debug, Clone)]
pub struct StatementKeywords<'a> {
    lx: Lexer<'a>,
    at_start: bool,
}

impl Iterator for StatementKeywords<'_> {
    type Item = Keyword;

    fn next(&mut self) -> Option<Keyword> {
        for t in self.lx.by_ref() {
            if t.is_punct(b';') {
                self.at_start = true;
            } else if self.at_start {
                // `(SELECT ...)`: the keyword is inside the parentheses.
                self.at_start = t.is_punct(b'(');
                if t.kind == TokenKind::Word {
                    return Some(Keyword::new(t.text));
                }
            }
        }
        None
    }
}

/// The first keyword of each statement of a (multi-statement) query, in order:
/// `SET x = 1; LISTEN ch` gives `SET`, `LISTEN`. Statements that start with
/// something other than a word (empty ones, a stray literal) give nothing.
pub fn statement_keywords(sql: &[u8]) -> StatementKeywords<'_> {
    StatementKeywords {
        lx: Lexer::new(sql),
        at_start: true,
    }
}

/// Does `sql` call the function `name` (case-insensitive, schema qualification
/// allowed) outside strings and comments? `name` is matched as a whole word
/// followed by `(`: `pg_advisory_lock` does not match `pg_advisory_lock_shared(`.
pub fn contains_call(sql: &[u8], name: &str) -> bool {
    contains_any_call(sql, &[name]).is_some()
}

/// Like [`contains_call`] for several names in one pass: the index in `names` of
/// the first function call found.
pub fn contains_any_call(sql: &[u8], names: &[&str]) -> Option<usize> {
    let mut lx = Lexer::new(sql);
    let mut prev: Option<Token<'_>> = None;
    for t in lx.by_ref() {
        if t.is_punct(b'(') {
            if let Some(p) = prev {
                let word: &[u8] = match p.kind {
                    TokenKind::Word => p.text,
                    TokenKind::QuotedIdent => p
                        .text
                        .get(1..p.text.len().saturating_sub(1))
                        .unwrap_or_default(),
                    _ => b"",
                };
                if !word.is_empty() {
                    if let Some(i) = names
                        .iter()
                        .position(|n| n.as_bytes().eq_ignore_ascii_case(word))
                    {
                        return Some(i);
                    }
                }
            }
        }
        prev = Some(t);
    }
    None
}
