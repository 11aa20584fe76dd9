//! One SQL statement's effects on the session, told from its first tokens, and the
//! function calls (`pg_advisory_lock(`, `set_config(`) found inside it.

use weir_wire::sql::{Lexer, Token, TokenKind};

use super::{pin, Effects};

/// The first tokens of the statement being scanned: enough to tell what it does.
#[derive(Default)]
pub(super) struct Statement<'a> {
    head: [Option<Token<'a>>; 6],
    len: usize,
    /// The last two tokens, newest first (anywhere in the statement).
    last: [Option<Token<'a>>; 2],
    pub(super) with_hold: bool,
    pub(super) on_commit_drop: bool,
}

impl<'a> Statement<'a> {
    pub(super) fn push(&mut self, t: Token<'a>) {
        if let Some(slot) = self.head.get_mut(self.len) {
            *slot = Some(t);
        }
        self.len += 1;
        self.last = [Some(t), self.last[0].take()];
    }

    /// Whether the token `back` places before the current one (0: the previous) is `word`.
    pub(super) fn last_is(&self, back: usize, word: &[u8]) -> bool {
        self.last
            .get(back)
            .and_then(|t| t.as_ref())
            .is_some_and(|t| is_word(t, word))
    }

    /// Token `i` of the statement, if it is among the first few.
    fn at(&self, i: usize) -> Option<&Token<'a>> {
        self.head.get(i).and_then(|t| t.as_ref())
    }

    fn word_at(&self, i: usize, word: &[u8]) -> bool {
        self.at(i).is_some_and(|t| is_word(t, word))
    }

    /// Adds this statement's effects and starts the next; returns 1 if it was not empty.
    pub(super) fn finish(&mut self, e: &mut Effects) -> usize {
        let done = std::mem::take(self);
        if done.len == 0 {
            return 0;
        }
        done.effects(e);
        1
    }

    fn effects(&self, e: &mut Effects) {
        let Some(first) = self.at(0).filter(|t| t.kind == TokenKind::Word) else {
            return;
        };
        let is = |w: &[u8]| first.text.eq_ignore_ascii_case(w);
        if is(b"LISTEN") {
            e.pins |= pin::LISTEN;
        } else if is(b"UNLISTEN") {
            e.unpins |= pin::LISTEN;
        } else if is(b"DECLARE") {
            if self.with_hold {
                e.pins |= pin::HOLD_CURSOR;
            }
        } else if is(b"CLOSE") {
            e.unpins |= pin::HOLD_CURSOR;
        } else if is(b"CREATE") {
            let temp = |i| self.word_at(i, b"TEMP") || self.word_at(i, b"TEMPORARY");
            let temporary =
                temp(1) || ((self.word_at(1, b"GLOBAL") || self.word_at(1, b"LOCAL")) && temp(2));
            // ON COMMIT DROP: gone at the end of its transaction (at once in autocommit).
            if temporary && !self.on_commit_drop {
                e.pins |= pin::TEMP_TABLE;
            }
        } else if is(b"DROP") {
            // Maybe a temp table; the check at the transaction's end tells.
            e.unpins |= pin::TEMP_TABLE;
        } else if is(b"DISCARD") {
            if self.word_at(1, b"ALL") {
                e.unpins |= pin::ALL;
                e.settings = true;
                e.deallocate_all = true;
                e.reset_all = true;
            } else if self.word_at(1, b"TEMP") || self.word_at(1, b"TEMPORARY") {
                e.unpins |= pin::TEMP_TABLE;
            }
        } else if is(b"SET") {
            self.set_effects(e);
        } else if is(b"RESET") {
            e.settings = true;
            if self.word_at(1, b"ROLE")
                || (self.word_at(1, b"SESSION") && self.word_at(2, b"AUTHORIZATION"))
            {
                e.unpins |= pin::AUTHORIZATION;
            } else if self.word_at(1, b"ALL") {
                e.reset_all = true;
                e.unpins |= pin::AUTHORIZATION;
            } else if let Some(name) = self.setting_name(1) {
                e.resets.push(name);
            }
        } else if is(b"PREPARE") {
            if !self.word_at(1, b"TRANSACTION") {
                e.pins |= pin::SQL_PREPARE;
            }
        } else if is(b"DEALLOCATE") {
            let at = if self.word_at(1, b"PREPARE") { 2 } else { 1 };
            e.unpins |= pin::SQL_PREPARE;
            if self.word_at(at, b"ALL") {
                e.deallocate_all = true;
            } else if self.len == at + 1 {
                e.deallocate = self.at(at).and_then(identifier);
            }
        }
    }

    fn set_effects(&self, e: &mut Effects) {
        if ["LOCAL", "TRANSACTION", "CONSTRAINTS"]
            .iter()
            .any(|w| self.word_at(1, w.as_bytes()))
        {
            return;
        }
        let session = self.word_at(1, b"SESSION");
        let at = if session { 2 } else { 1 };
        if self.word_at(at, b"ROLE") || (session && self.word_at(at, b"AUTHORIZATION")) {
            // SET ROLE NONE / SET SESSION AUTHORIZATION DEFAULT go back to the login role.
            if self.word_at(at + 1, b"NONE") || self.word_at(at + 1, b"DEFAULT") {
                e.unpins |= pin::AUTHORIZATION;
            } else {
                e.pins |= pin::AUTHORIZATION;
            }
            return;
        }
        e.settings = true;
        e.set_names.extend(self.setting_name(at));
    }

    /// The setting named from token `i`: an identifier, possibly dotted (`app.tenant`),
    /// lower case unless quoted; `TIME ZONE`, `NAMES` and `SCHEMA` name `timezone`,
    /// `client_encoding` and `search_path`.
    fn setting_name(&self, i: usize) -> Option<Vec<u8>> {
        let mut name = identifier(self.at(i)?)?;
        let mut next = i + 1;
        while self.at(next).is_some_and(|t| is_punct(t, b'.')) {
            name.push(b'.');
            name.extend(identifier(self.at(next + 1)?)?);
            next += 2;
        }
        Some(match name.as_slice() {
            b"time" => b"timezone".to_vec(),
            b"names" => b"client_encoding".to_vec(),
            b"schema" => b"search_path".to_vec(),
            _ => name,
        })
    }
}

/// Effects of calling `name(`; `tokens` is at the `(`.
pub(super) fn call_effects<'a>(
    name: &[u8],
    tokens: &mut std::iter::Peekable<Lexer<'a>>,
    e: &mut Effects,
) {
    const PINS: [&[u8]; 4] = [
        b"pg_advisory_lock",
        b"pg_advisory_lock_shared",
        b"pg_try_advisory_lock",
        b"pg_try_advisory_lock_shared",
    ];
    if PINS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        e.pins |= pin::ADVISORY_LOCK;
    } else if name.len() >= 18 && name[..18].eq_ignore_ascii_case(b"pg_advisory_unlock") {
        // _all, or one lock (of maybe several): the check at the transaction's end tells.
        e.unpins |= pin::ADVISORY_LOCK;
    } else if name.eq_ignore_ascii_case(b"set_config") {
        e.settings = true;
        let _paren = tokens.next();
        // The setting's name, when it is a plain string literal.
        if let Some(t) = tokens.peek().filter(|t| t.kind == TokenKind::String) {
            if let Some(inner) = t.text.strip_prefix(b"'").and_then(|r| r.strip_suffix(b"'")) {
                if !inner.contains(&b'\'') {
                    e.set_names.push(inner.to_ascii_lowercase());
                }
            }
        }
    }
}

pub(super) fn is_punct(t: &Token<'_>, b: u8) -> bool {
    t.kind == TokenKind::Punct && t.text == [b]
}

pub(super) fn is_word(t: &Token<'_>, word: &[u8]) -> bool {
    t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(word)
}

/// A name as PostgreSQL folds it: lower case, or exactly as written when quoted.
fn identifier(t: &Token<'_>) -> Option<Vec<u8>> {
    match t.kind {
        TokenKind::Word => Some(t.text.to_ascii_lowercase()),
        TokenKind::QuotedIdent => {
            let inner = unquoted(t);
            (!inner.contains(&b'"')).then(|| inner.to_vec())
        }
        _ => None,
    }
}

/// A quoted identifier without its quotes; any other token as it is.
pub(super) fn unquoted<'a>(t: &Token<'a>) -> &'a [u8] {
    match t.kind {
        TokenKind::QuotedIdent => t
            .text
            .get(1..t.text.len().saturating_sub(1))
            .unwrap_or_default(),
        _ => t.text,
    }
}
