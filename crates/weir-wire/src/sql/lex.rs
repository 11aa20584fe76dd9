//! The SQL lexer: [`Lexer`] turns query text into [`Token`]s, skipping whitespace
//! and comments.
//!
//! The lexer follows PostgreSQL's lexical rules closely enough for the proxy's uses
//! (<https://www.postgresql.org/docs/current/sql-syntax-lexical.html>): whitespace,
//! `--` and nested `/* */` comments, `'...'` strings with `''`, `E'...'` strings
//! with backslash escapes, `$tag$...$tag$` dollar quoting, `"quoted"` identifiers,
//! numbers, `$1` parameters, operators and punctuation. Unterminated strings and
//! comments run to the end of the input; bytes it does not know are punctuation.

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

    pub(super) fn is_punct(&self, b: u8) -> bool {
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

pub(super) fn is_op_char(b: u8) -> bool {
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
