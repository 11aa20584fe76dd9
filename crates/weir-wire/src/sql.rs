//! A small SQL lexer for the proxy's cheap looks at query text: fingerprints for
//! `SHOW QUERIES`, the first keyword of each statement and function-call detection
//! for session-feature pinning. It never allocates on the common path and never
//! panics on any input.
//!
//! The lexer follows PostgreSQL's lexical rules closely enough for these uses
//! (<https://www.postgresql.org/docs/current/sql-syntax-lexical.html>): whitespace,
//! `--` and nested `/* */` comments, `'...'` strings with `''`, `E'...'` strings
//! with backslash escapes, `$tag$...$tag$` dollar quoting, `"quoted"` identifiers,
//! numbers, `$1` parameters, operators and punctuation. Unterminated strings and
//! comments run to the end of the input; bytes it does not know are punctuation.

mod fast;

/// What kind of token the [`Lexer`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or an unquoted identifier (case-insensitive).
    Word,
    /// A `"quoted"` identifier (case-sensitive).
    QuotedIdent,
    /// A string constant: `'...'`, `E'...'`, `B'...'`, `X'...'`, `N'...'`, `U&'...'`, `$$...$$`.
    String,
    /// A numeric constant.
    Number,
    /// A positional parameter, `$1`.
    Param,
    /// An operator, including `::`.
    Operator,
    /// One byte of punctuation: `( ) , ; [ ] . :` or any byte not otherwise known.
    Punct,
}

/// One token: its kind and its bytes in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// The kind of token.
    pub kind: TokenKind,
    /// The token's bytes, quotes included.
    pub text: &'a [u8],
}

impl Token<'_> {
    /// True for string and numeric constants and parameters.
    pub fn is_literal(&self) -> bool {
        matches!(
            self.kind,
            TokenKind::String | TokenKind::Number | TokenKind::Param
        )
    }

    fn is_punct(&self, b: u8) -> bool {
        self.kind == TokenKind::Punct && self.text == [b]
    }
}

/// Longest dollar-quote tag (with its two `$`) whose closing tag is found by checking
/// each `$`; longer tags are searched with [`find_tag`], linear in the body whatever
/// the tag. PostgreSQL accepts tags of any length, so no tag may be ignored: text
/// after a tag the lexer skipped would be lexed as code the server sees as a string
/// (and the other way round).
const MAX_TAG: usize = 64;

/// An iterator over the tokens of a SQL text; comments and whitespace are skipped.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// `'...'` strings take backslash escapes (`standard_conforming_strings = off`).
    backslash_quotes: bool,
}

/// PostgreSQL's whitespace (`\v` since PostgreSQL 17; counting it on older servers,
/// where it is a syntax error, costs nothing).
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The bytes that end a `--` comment.
pub(crate) fn is_newline(b: u8) -> bool {
    matches!(b, b'\n' | b'\r')
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

/// Where `tag` first occurs in `body`, in time linear in both (Knuth-Morris-Pratt):
/// checking every `$` against a long tag would take `body × tag` steps.
fn find_tag(body: &[u8], tag: &[u8]) -> Option<usize> {
    // fail[i]: length of the longest proper prefix of tag[..=i] that is also its suffix.
    let mut fail = vec![0usize; tag.len()];
    let mut k = 0;
    for i in 1..tag.len() {
        while k > 0 && tag[i] != tag[k] {
            k = fail[k - 1];
        }
        if tag[i] == tag[k] {
            k += 1;
        }
        fail[i] = k;
    }
    let mut matched = 0;
    for (i, &b) in body.iter().enumerate() {
        while matched > 0 && b != tag[matched] {
            matched = fail[matched - 1];
        }
        if b == tag[matched] {
            matched += 1;
            if matched == tag.len() {
                return Some(i + 1 - tag.len());
            }
        }
    }
    None
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `src`.
    pub fn new(src: &'a [u8]) -> Self {
        Self {
            src,
            pos: 0,
            backslash_quotes: false,
        }
    }

    /// A lexer for a session with `standard_conforming_strings = off`, where a
    /// backslash escapes the next byte in plain `'...'` strings too, as in `E'...'`.
    pub fn with_backslash_quotes(src: &'a [u8]) -> Self {
        Self {
            backslash_quotes: true,
            ..Self::new(src)
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    fn skip_trivia(&mut self) {
        while let Some(b) = self.at(self.pos) {
            if is_space(b) {
                self.pos += 1;
            } else if b == b'-' && self.at(self.pos + 1) == Some(b'-') {
                // PostgreSQL ends a `--` comment at either newline byte (scan.l's
                // `non_newline` is `[^\n\r]`): `-- x\rSET ...` runs the SET.
                self.pos = match self
                    .src
                    .get(self.pos..)
                    .and_then(|r| r.iter().position(|&c| is_newline(c)))
                {
                    Some(nl) => self.pos + nl + 1,
                    None => self.src.len(),
                };
            } else if b == b'/' && self.at(self.pos + 1) == Some(b'*') {
                self.skip_block_comment();
            } else {
                return;
            }
        }
    }

    /// Skips a (nested) block comment starting at `pos`.
    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(b) = self.at(self.pos) {
            let next = self.at(self.pos + 1);
            if b == b'/' && next == Some(b'*') {
                depth += 1;
                self.pos += 2;
            } else if b == b'*' && next == Some(b'/') {
                depth = depth.saturating_sub(1);
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    /// Skips a quoted run whose opening `quote` is at `pos`; a doubled quote is an
    /// escaped one; with `backslash`, `\x` escapes any byte.
    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        self.pos += 1;
        while let Some(b) = self.at(self.pos) {
            if backslash && b == b'\\' {
                self.pos += 2;
            } else if b == quote {
                if self.at(self.pos + 1) == Some(quote) {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        self.pos = self.src.len();
    }

    /// At a `$`: a parameter, a dollar-quoted string, or (otherwise) an operator byte.
    fn dollar(&mut self) -> TokenKind {
        let start = self.pos;
        if self.at(start + 1).is_some_and(|b| b.is_ascii_digit()) {
            self.pos = start + 1;
            while self.at(self.pos).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            return TokenKind::Param;
        }
        let mut end = start + 1;
        if self.at(end).is_some_and(is_ident_start) {
            while self
                .at(end)
                .is_some_and(|b| is_ident_start(b) || b.is_ascii_digit())
            {
                end += 1;
            }
        }
        if self.at(end) != Some(b'$') {
            self.pos = start + 1;
            return TokenKind::Operator;
        }
        let (Some(tag), Some(body)) = (self.src.get(start..=end), self.src.get(end + 1..)) else {
            self.pos = self.src.len();
            return TokenKind::String;
        };
        self.pos = self.src.len();
        if tag.len() > MAX_TAG {
            if let Some(at) = find_tag(body, tag) {
                self.pos = end + 1 + at + tag.len();
            }
            return TokenKind::String;
        }
        let mut from = 0;
        while let Some(i) = body
            .get(from..)
            .and_then(|r| r.iter().position(|&c| c == b'$'))
        {
            let at = from + i;
            if body.get(at..).is_some_and(|r| r.starts_with(tag)) {
                self.pos = end + 1 + at + tag.len();
                break;
            }
            from = at + 1;
        }
        TokenKind::String
    }

    fn number(&mut self) {
        while let Some(b) = self.at(self.pos) {
            if (b == b'e' || b == b'E') && matches!(self.at(self.pos + 1), Some(b'+' | b'-')) {
                self.pos += 2;
            } else if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
                self.pos += 1;
            } else {
                return;
            }
        }
    }

    fn word_or_prefixed_string(&mut self, start: usize) -> TokenKind {
        while self.at(self.pos).is_some_and(is_ident_cont) {
            self.pos += 1;
        }
        let word = self.src.get(start..self.pos).unwrap_or_default();
        let next = self.at(self.pos);
        match (word, next) {
            ([b'e' | b'E'], Some(b'\'')) => {
                self.skip_quoted(b'\'', true);
                TokenKind::String
            }
            ([b'b' | b'B' | b'x' | b'X' | b'n' | b'N'], Some(b'\'')) => {
                self.skip_quoted(b'\'', false);
                TokenKind::String
            }
            ([b'u' | b'U'], Some(b'&')) => match self.at(self.pos + 1) {
                Some(q @ (b'\'' | b'"')) => {
                    self.pos += 1;
                    self.skip_quoted(q, false);
                    if q == b'\'' {
                        TokenKind::String
                    } else {
                        TokenKind::QuotedIdent
                    }
                }
                _ => TokenKind::Word,
            },
            _ => TokenKind::Word,
        }
    }

    fn operator(&mut self) {
        while let Some(b) = self.at(self.pos) {
            let next = self.at(self.pos + 1);
            let comment = (b == b'-' && next == Some(b'-')) || (b == b'/' && next == Some(b'*'));
            if !is_op_char(b) || comment {
                return;
            }
            self.pos += 1;
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_trivia();
        let start = self.pos;
        let b = self.at(start)?;
        let kind = match b {
            b'\'' => {
                self.skip_quoted(b'\'', self.backslash_quotes);
                TokenKind::String
            }
            b'"' => {
                self.skip_quoted(b'"', false);
                TokenKind::QuotedIdent
            }
            b'$' => self.dollar(),
            b'0'..=b'9' => {
                self.number();
                TokenKind::Number
            }
            b'.' if self.at(start + 1).is_some_and(|c| c.is_ascii_digit()) => {
                self.number();
                TokenKind::Number
            }
            b':' if self.at(start + 1) == Some(b':') => {
                self.pos += 2;
                TokenKind::Operator
            }
            _ if is_ident_start(b) => {
                self.pos += 1;
                self.word_or_prefixed_string(start)
            }
            _ if is_op_char(b) => {
                self.operator();
                TokenKind::Operator
            }
            _ => {
                self.pos += 1;
                TokenKind::Punct
            }
        };
        // Every arm advanced `pos` by at least one byte and at most to the end.
        let end = self.pos.clamp(start + 1, self.src.len());
        self.pos = end;
        let text = self.src.get(start..end).unwrap_or_default();
        Some(Token { kind, text })
    }
}

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

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The fingerprint of a query (see [`Fingerprint`]); no allocation, linear in
/// `min(sql.len(), MAX_SCAN)`.
pub fn fingerprint(sql: &[u8]) -> Fingerprint {
    fast::fingerprint(sql).unwrap_or_else(|| fingerprint_general(sql))
}

/// [`fingerprint`] through the general lexer, for any input.
fn fingerprint_general(sql: &[u8]) -> Fingerprint {
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
