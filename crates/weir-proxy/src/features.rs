//! What a client's SQL does to its session, found with a cheap token check (no parser):
//! features that need the whole session (LISTEN, session advisory locks, `WITH HOLD`
//! cursors, temp tables, `SET SESSION AUTHORIZATION`/`ROLE`, SQL `PREPARE`), their
//! releases, and statements that change settings or drop prepared statements.

use weir_wire::frontend::first_keyword;
use weir_wire::sql::{Lexer, Token, TokenKind};

/// Session features, as bits of a pin set.
pub mod pin {
    /// `LISTEN`.
    pub const LISTEN: u8 = 1;
    /// A session-level advisory lock.
    pub const ADVISORY_LOCK: u8 = 2;
    /// A `WITH HOLD` cursor.
    pub const HOLD_CURSOR: u8 = 4;
    /// A temporary table (or view, sequence).
    pub const TEMP_TABLE: u8 = 8;
    /// `SET SESSION AUTHORIZATION` or `SET ROLE`.
    pub const AUTHORIZATION: u8 = 16;
    /// A prepared statement made with SQL `PREPARE`.
    pub const SQL_PREPARE: u8 = 32;
    /// Every feature.
    pub const ALL: u8 = 63;

    /// What the feature is called in messages.
    pub fn describe(bits: u8) -> &'static str {
        match bits.trailing_zeros() {
            0 => "LISTEN",
            1 => "a session-level advisory lock",
            2 => "a WITH HOLD cursor",
            3 => "a temporary table",
            4 => "SET SESSION AUTHORIZATION / SET ROLE",
            _ => "SQL PREPARE",
        }
    }
}

/// What one query text does to the session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Session features it starts (bits of [`pin`]).
    pub pins: u8,
    /// Session features it ends.
    pub unpins: u8,
    /// It may change a setting (`SET`, `RESET`, `set_config`, `DISCARD ALL`).
    pub settings: bool,
    /// `DEALLOCATE ALL` or `DISCARD ALL`: the server drops every prepared statement.
    pub deallocate_all: bool,
    /// A lone `DEALLOCATE name`: the statement name (a driver closing its statement).
    pub deallocate: Option<Vec<u8>>,
    /// Settings named by `RESET name` (lower case).
    pub resets: Vec<Vec<u8>>,
    /// `RESET ALL` or `DISCARD ALL`.
    pub reset_all: bool,
    /// Settings named by `SET name ...` and `set_config('name', ...)` (lower case), so
    /// that even settings nobody configured for tracking never leak to another client.
    pub set_names: Vec<Vec<u8>>,
}

impl Effects {
    /// Nothing the proxy must act on.
    pub fn is_none(&self) -> bool {
        *self == Effects::default()
    }
}

/// Scans a query text (one or more statements) with [`weir_wire::sql`]'s lexer, so
/// nothing inside a string, quoted identifier or comment counts.
pub fn effects(sql: &[u8]) -> Effects {
    let mut e = Effects::default();
    if !worth_lexing(sql) {
        return e;
    }
    let mut statement = Statement::default();
    let mut statements = 0;
    let mut tokens = Lexer::new(sql).peekable();
    while let Some(t) = tokens.next() {
        if is_punct(&t, b';') {
            statements += statement.finish(&mut e);
            continue;
        }
        // A function call: a name followed by `(`.
        if matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent)
            && tokens.peek().is_some_and(|n| is_punct(n, b'('))
        {
            call_effects(unquoted(&t), &mut tokens, &mut e);
        }
        if statement.prev_is(b"WITH") && is_word(&t, b"HOLD") {
            statement.with_hold = true;
        }
        statement.push(t);
    }
    statements += statement.finish(&mut e);
    if statements != 1 {
        e.deallocate = None;
    }
    e
}

/// Statements start with these keywords when they matter to the session.
const KEYWORDS: [&[u8]; 10] = [
    b"LISTEN",
    b"UNLISTEN",
    b"DECLARE",
    b"CLOSE",
    b"CREATE",
    b"DISCARD",
    b"SET",
    b"RESET",
    b"PREPARE",
    b"DEALLOCATE",
];

/// Whether the text can matter at all: a function call, a second statement, or a
/// first keyword from [`KEYWORDS`]. Most queries (`SELECT ... WHERE id = $1`) are
/// settled by two byte searches and one keyword, without lexing.
fn worth_lexing(sql: &[u8]) -> bool {
    let body = sql.trim_ascii_end();
    let body = body.strip_suffix(b";").unwrap_or(body);
    if body.contains(&b'(') || body.contains(&b';') {
        return true;
    }
    let mut word = [0u8; 16];
    let (n, _) = first_keyword(sql, &mut word);
    KEYWORDS.contains(&&word[..n])
}

/// The first tokens of the statement being scanned: enough to tell what it does.
#[derive(Default)]
struct Statement<'a> {
    head: [Option<Token<'a>>; 6],
    len: usize,
    with_hold: bool,
}

impl<'a> Statement<'a> {
    fn push(&mut self, t: Token<'a>) {
        if let Some(slot) = self.head.get_mut(self.len) {
            *slot = Some(t);
        }
        self.len += 1;
    }

    fn prev_is(&self, word: &[u8]) -> bool {
        self.len > 0
            && self
                .head
                .get(self.len - 1)
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
    fn finish(&mut self, e: &mut Effects) -> usize {
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
            if self.at(1).is_some_and(|t| t.text == b"*") {
                e.unpins |= pin::LISTEN;
            }
        } else if is(b"DECLARE") {
            if self.with_hold {
                e.pins |= pin::HOLD_CURSOR;
            }
        } else if is(b"CLOSE") {
            if self.word_at(1, b"ALL") {
                e.unpins |= pin::HOLD_CURSOR;
            }
        } else if is(b"CREATE") {
            let temp = |i| self.word_at(i, b"TEMP") || self.word_at(i, b"TEMPORARY");
            if temp(1) || ((self.word_at(1, b"GLOBAL") || self.word_at(1, b"LOCAL")) && temp(2)) {
                e.pins |= pin::TEMP_TABLE;
            }
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
            } else if let Some(name) = self.setting_name(1) {
                e.resets.push(name);
            }
        } else if is(b"PREPARE") {
            if !self.word_at(1, b"TRANSACTION") {
                e.pins |= pin::SQL_PREPARE;
            }
        } else if is(b"DEALLOCATE") {
            let at = if self.word_at(1, b"PREPARE") { 2 } else { 1 };
            if self.word_at(at, b"ALL") {
                e.deallocate_all = true;
                e.unpins |= pin::SQL_PREPARE;
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
            e.pins |= pin::AUTHORIZATION;
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
fn call_effects<'a>(name: &[u8], tokens: &mut std::iter::Peekable<Lexer<'a>>, e: &mut Effects) {
    const PINS: [&[u8]; 4] = [
        b"pg_advisory_lock",
        b"pg_advisory_lock_shared",
        b"pg_try_advisory_lock",
        b"pg_try_advisory_lock_shared",
    ];
    if PINS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        e.pins |= pin::ADVISORY_LOCK;
    } else if name.eq_ignore_ascii_case(b"pg_advisory_unlock_all") {
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

fn is_punct(t: &Token<'_>, b: u8) -> bool {
    t.kind == TokenKind::Punct && t.text == [b]
}

fn is_word(t: &Token<'_>, word: &[u8]) -> bool {
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
fn unquoted<'a>(t: &Token<'a>) -> &'a [u8] {
    match t.kind {
        TokenKind::QuotedIdent => t
            .text
            .get(1..t.text.len().saturating_sub(1))
            .unwrap_or_default(),
        _ => t.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(sql: &str) -> Effects {
        effects(sql.as_bytes())
    }

    #[test]
    fn session_features_pin_and_unpin() {
        assert_eq!(fx("LISTEN chan").pins, pin::LISTEN);
        assert_eq!(fx("unlisten *").unpins, pin::LISTEN);
        assert_eq!(fx("unlisten chan").unpins, 0);
        assert_eq!(fx("select pg_advisory_lock(1)").pins, pin::ADVISORY_LOCK);
        assert_eq!(
            fx("SELECT PG_TRY_ADVISORY_LOCK_SHARED (1, 2)").pins,
            pin::ADVISORY_LOCK
        );
        assert_eq!(fx("select pg_advisory_xact_lock(1)").pins, 0);
        assert_eq!(
            fx("select pg_advisory_unlock_all()").unpins,
            pin::ADVISORY_LOCK
        );
        assert_eq!(
            fx("declare c cursor with hold for select 1").pins,
            pin::HOLD_CURSOR
        );
        assert_eq!(fx("declare c cursor for select 1").pins, 0);
        assert_eq!(fx("create temp table t(a int)").pins, pin::TEMP_TABLE);
        assert_eq!(
            fx("CREATE GLOBAL TEMPORARY TABLE t(a int)").pins,
            pin::TEMP_TABLE
        );
        assert_eq!(fx("create table t(a int)").pins, 0);
        assert_eq!(fx("set session authorization bob").pins, pin::AUTHORIZATION);
        assert_eq!(fx("set role bob").pins, pin::AUTHORIZATION);
        assert_eq!(fx("set local role bob").pins, 0);
        assert_eq!(fx("reset role").unpins, pin::AUTHORIZATION);
        assert_eq!(fx("prepare q as select 1").pins, pin::SQL_PREPARE);
        assert_eq!(fx("prepare transaction 'x'").pins, 0);
        let all = fx("DISCARD ALL");
        assert_eq!(all.unpins, pin::ALL);
        assert!(all.settings && all.deallocate_all);
    }

    #[test]
    fn settings_and_deallocate() {
        assert!(fx("SET search_path = a").settings);
        assert!(fx("select 1; set statement_timeout = 0").settings);
        assert!(!fx("set local statement_timeout = 0").settings);
        assert!(!fx("update t set a = 1").settings);
        assert!(fx("select set_config('a.b', 'c', false)").settings);
        assert!(!fx("select 'set_config(' from t").pins != 0);
        assert_eq!(fx("DEALLOCATE _pg3_0").deallocate, Some(b"_pg3_0".to_vec()));
        assert_eq!(
            fx("deallocate prepare \"Q1\";").deallocate,
            Some(b"Q1".to_vec())
        );
        assert_eq!(fx("DEALLOCATE Abc").deallocate, Some(b"abc".to_vec()));
        assert!(fx("deallocate all").deallocate_all);
        assert_eq!(fx("deallocate a; select 1").deallocate, None);
        assert!(fx("select 1").is_none());
    }

    #[test]
    fn set_targets_are_named() {
        assert_eq!(
            fx("SET work_mem = '8MB'").set_names,
            vec![b"work_mem".to_vec()]
        );
        assert_eq!(
            fx("set session My.Tenant to 7").set_names,
            vec![b"my.tenant".to_vec()]
        );
        assert_eq!(
            fx("SET TIME ZONE 'UTC'").set_names,
            vec![b"timezone".to_vec()]
        );
        assert_eq!(
            fx("set names 'LATIN1'").set_names,
            vec![b"client_encoding".to_vec()]
        );
        assert_eq!(
            fx("select set_config('app.user', '42', false)").set_names,
            vec![b"app.user".to_vec()]
        );
        assert!(fx("set local work_mem = 1").set_names.is_empty());
    }

    #[test]
    fn statements_split_outside_quotes() {
        let e = fx("select ';'; select $$;$$; -- ;\nlisten x; /* ; */ select $1;");
        assert_eq!(e.pins, pin::LISTEN, "the third statement is found");
        assert_eq!(
            fx("select 1; deallocate s1").deallocate,
            None,
            "two statements"
        );
        assert_eq!(fx("select ';listen x'").pins, 0);
        assert_eq!(fx("select 1; listen x").pins, pin::LISTEN);
        assert_eq!(fx("select $q$ ; listen x $q$").pins, 0);
        // A call spelled out inside a string or comment is not a call.
        assert_eq!(fx("insert into log values ('pg_advisory_lock(1)')").pins, 0);
        assert_eq!(fx("select 1 /* pg_advisory_lock(1) */").pins, 0);
        assert_eq!(
            fx("select \"pg_advisory_lock\"(1)").pins,
            pin::ADVISORY_LOCK
        );
    }
}
