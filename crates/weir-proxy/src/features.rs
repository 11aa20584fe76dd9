//! What a client's SQL does to its session, found with a cheap token check (no parser):
//! features that need the whole session (LISTEN, session advisory locks, `WITH HOLD`
//! cursors, temp tables, `SET SESSION AUTHORIZATION`/`ROLE`, SQL `PREPARE`), statements
//! that may end them, and statements that change settings or drop prepared statements.
//!
//! The token check only says when to look: whether a feature really outlives the
//! transaction (a temp table `ON COMMIT DROP`, a `LISTEN` rolled back, one lock of two
//! released) is asked of the server itself at the transaction's end ([`PIN_CHECK_SQL`]).

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

    /// Every feature in `bits`, named and comma-separated (`""` for none).
    pub fn describe_all(bits: u8) -> String {
        let mut out = String::new();
        for bit in (0..6).map(|i| 1u8 << i).filter(|b| bits & b != 0) {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(describe(bit));
        }
        out
    }
}

/// Asks the server which session features are in use, one boolean column per bit of
/// [`pin`] in bit order. Run outside any transaction, so what it finds outlives one:
/// only holdable cursors survive a transaction, only session-level advisory locks, and
/// the session's temp schema holds only what was not dropped at commit. The login role
/// comes from `pg_stat_activity`, which `SET SESSION AUTHORIZATION` does not change.
/// Schema-qualified so a client's `search_path` cannot redirect it (pitfall 10).
pub const PIN_CHECK_SQL: &str = "SELECT \
    EXISTS (SELECT FROM pg_catalog.pg_listening_channels()), \
    EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()), \
    EXISTS (SELECT FROM pg_catalog.pg_cursors), \
    EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()), \
    pg_catalog.current_setting('role') <> 'none' OR SESSION_USER <> \
        (SELECT usename FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()), \
    EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql)";

/// The pin bits a [`PIN_CHECK_SQL`] answer's column values (`t`/`f`) stand for.
pub fn pins_from_check<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> u8 {
    values
        .take(6)
        .enumerate()
        .filter(|(_, v)| *v == Some(b"t".as_slice()))
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// What one query text does to the session.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Session features it starts (bits of [`pin`]).
    pub pins: u8,
    /// Session features it may end (`UNLISTEN`, `CLOSE`, `DROP`, an unlock, ...): the
    /// server is asked at the transaction's end whether they did.
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
    effects_with(sql, false)
}

/// [`effects`] for a session whose `standard_conforming_strings` is off
/// (`backslash_quotes`): there `'x\''` is one string, and a statement after it must not
/// hide inside what would otherwise look like a string.
pub fn effects_with(sql: &[u8], backslash_quotes: bool) -> Effects {
    let mut e = Effects::default();
    if !worth_lexing(sql) {
        return e;
    }
    let mut statement = Statement::default();
    let mut statements = 0;
    let lexer = if backslash_quotes {
        Lexer::with_backslash_quotes(sql)
    } else {
        Lexer::new(sql)
    };
    let mut tokens = lexer.peekable();
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
        if statement.last_is(0, b"WITH") && is_word(&t, b"HOLD") {
            statement.with_hold = true;
        }
        if statement.last_is(1, b"ON") && statement.last_is(0, b"COMMIT") && is_word(&t, b"DROP") {
            statement.on_commit_drop = true;
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
const KEYWORDS: [&[u8]; 11] = [
    b"LISTEN",
    b"UNLISTEN",
    b"DECLARE",
    b"CLOSE",
    b"CREATE",
    b"DROP",
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
    /// The last two tokens, newest first (anywhere in the statement).
    last: [Option<Token<'a>>; 2],
    with_hold: bool,
    on_commit_drop: bool,
}

impl<'a> Statement<'a> {
    fn push(&mut self, t: Token<'a>) {
        if let Some(slot) = self.head.get_mut(self.len) {
            *slot = Some(t);
        }
        self.len += 1;
        self.last = [Some(t), self.last[0].take()];
    }

    /// Whether the token `back` places before the current one (0: the previous) is `word`.
    fn last_is(&self, back: usize, word: &[u8]) -> bool {
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
fn call_effects<'a>(name: &[u8], tokens: &mut std::iter::Peekable<Lexer<'a>>, e: &mut Effects) {
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

/// OIDs (pg_proc.dat, fixed since PostgreSQL 8.2) of the functions a FunctionCall
/// message may name that matter to the session.
mod fn_oid {
    /// `set_config(text, text, boolean)`.
    pub const SET_CONFIG: u32 = 2078;
    /// `pg_advisory_lock`, `pg_advisory_lock_shared`, `pg_try_advisory_lock` and
    /// `pg_try_advisory_lock_shared`, `(bigint)` and `(integer, integer)`.
    pub const ADVISORY_LOCKS: [u32; 8] = [2880, 2881, 2882, 2883, 2886, 2887, 2888, 2889];
    /// `pg_advisory_unlock*`, including `pg_advisory_unlock_all()`.
    pub const ADVISORY_UNLOCKS: [u32; 5] = [2884, 2885, 2890, 2891, 2892];
}

/// What a FunctionCall (`F`, the fast-path interface: `PQfn`, large objects) does to
/// the session. It names its function by OID, so the query classification never sees
/// it: `set_config` through it changed a setting the proxy did not track, which leaked
/// to the next client of the server connection. Advisory locks pin as in SQL; the
/// name `set_config` sets is read from its first argument; any other function may
/// still change a setting, so tracked settings are read back after the transaction.
pub fn function_call_effects(body: &[u8]) -> Effects {
    let mut e = Effects {
        settings: true,
        ..Effects::default()
    };
    let Some(oid) = body
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return e;
    };
    if fn_oid::ADVISORY_LOCKS.contains(&oid) {
        e.pins |= pin::ADVISORY_LOCK;
    } else if fn_oid::ADVISORY_UNLOCKS.contains(&oid) {
        e.unpins |= pin::ADVISORY_LOCK;
    } else if oid == fn_oid::SET_CONFIG {
        if let Some(name) = first_function_argument(&body[4..]) {
            e.set_names.push(name.to_ascii_lowercase());
        }
    }
    e
}

/// The first argument of a FunctionCall body after the OID: format codes, then the
/// arguments, each a length (-1: NULL) and its bytes. Text and binary `text` agree.
fn first_function_argument(body: &[u8]) -> Option<&[u8]> {
    let formats = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let rest = body.get(2 + 2 * formats..)?;
    let nargs = i16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    if nargs < 1 {
        return None;
    }
    let len = i32::from_be_bytes(rest.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    rest.get(6..6 + len)
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

    #[test]
    fn pin_check_answers_map_to_bits_in_order() {
        let row = [
            Some(&b"t"[..]),
            Some(b"f"),
            None,
            Some(b"t"),
            Some(b"f"),
            Some(b"t"),
        ];
        assert_eq!(
            pins_from_check(row.into_iter()),
            pin::LISTEN | pin::TEMP_TABLE | pin::SQL_PREPARE
        );
        assert_eq!(
            pin::describe_all(pin::LISTEN | pin::TEMP_TABLE),
            "LISTEN, a temporary table"
        );
        assert_eq!(pin::describe_all(0), "");
    }

    fn fx(sql: &str) -> Effects {
        effects(sql.as_bytes())
    }

    #[test]
    fn statements_behind_what_postgresql_skips_are_classified() {
        // PostgreSQL ends a `--` comment at \r: these ran on the server untracked, so
        // the SET leaked to the next client of the server connection and LISTEN never
        // pinned. Vertical tab is whitespace to PostgreSQL 17+.
        assert_eq!(
            fx("-- x\rSET search_path = evil").set_names,
            vec![b"search_path".to_vec()]
        );
        assert_eq!(fx("-- x\rLISTEN jobs").pins, pin::LISTEN);
        assert_eq!(fx("\x0bLISTEN jobs").pins, pin::LISTEN);
        assert_eq!(fx("\x0b\x0bset search_path = x").set_names.len(), 1);
        // A dollar-quote tag longer than 64 bytes is still a string to PostgreSQL.
        let tag = format!("${}$", "t".repeat(70));
        let hidden = format!("SELECT {tag} ' {tag}; SET search_path = evil; --'");
        assert_eq!(fx(&hidden).set_names, vec![b"search_path".to_vec()]);
    }

    /// A FunctionCall body: OID, one text format code, the arguments, text result.
    fn function_call(oid: u32, args: &[&[u8]]) -> Vec<u8> {
        let mut b = oid.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 1, 0, 0]);
        b.extend_from_slice(&(args.len() as i16).to_be_bytes());
        for a in args {
            b.extend_from_slice(&(a.len() as i32).to_be_bytes());
            b.extend_from_slice(a);
        }
        b.extend_from_slice(&[0, 0]);
        b
    }

    #[test]
    fn function_calls_are_classified_by_oid() {
        // set_config through the fast path changed search_path untracked; it leaked to
        // the next client of the server connection (reproduced with libpq's PQfn).
        let e = function_call_effects(&function_call(2078, &[b"Search_Path", b"evil", b"f"]));
        assert!(e.settings);
        assert_eq!(e.set_names, vec![b"search_path".to_vec()]);
        let lock = function_call_effects(&function_call(2880, &[&7i64.to_be_bytes()]));
        assert_eq!(lock.pins, pin::ADVISORY_LOCK);
        assert_eq!(
            function_call_effects(&function_call(2892, &[])).unpins,
            pin::ADVISORY_LOCK
        );
        // lo_open: nothing known, but settings are read back all the same.
        let other = function_call_effects(&function_call(952, &[b"x"]));
        assert!(other.settings && other.pins == 0 && other.set_names.is_empty());
        // Malformed bodies are the server's to reject; never a panic here.
        for body in [
            &b""[..],
            b"\0\0\x08\x1e",
            b"\0\0\x08\x1e\xff\xff",
            b"\0\0\x08\x1e\0\0\0\x01\x7f\xff\xff\xff",
        ] {
            let _ = function_call_effects(body);
        }
    }

    #[test]
    fn session_features_pin_and_unpin() {
        assert_eq!(fx("LISTEN chan").pins, pin::LISTEN);
        assert_eq!(fx("unlisten *").unpins, pin::LISTEN);
        // One channel of maybe several: the check at the transaction's end tells.
        assert_eq!(fx("unlisten chan").unpins, pin::LISTEN);
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
        assert_eq!(
            fx("create temp table t (a int, b text) on commit drop").pins,
            0,
            "dropped at the end of its transaction: never outlives it"
        );
        assert_eq!(
            fx("CREATE TEMPORARY TABLE t ON COMMIT DROP AS SELECT 1").pins,
            0
        );
        assert_eq!(
            fx("create temp table t (a int) on commit delete rows").pins,
            pin::TEMP_TABLE
        );
        assert_eq!(fx("drop table t").unpins, pin::TEMP_TABLE);
        assert_eq!(fx("close c").unpins, pin::HOLD_CURSOR);
        assert_eq!(
            fx("select pg_advisory_unlock(1)").unpins,
            pin::ADVISORY_LOCK
        );
        assert_eq!(fx("set role none").pins, 0);
        assert_eq!(fx("set role none").unpins, pin::AUTHORIZATION);
        assert_eq!(
            fx("set session authorization default").unpins,
            pin::AUTHORIZATION
        );
        assert_eq!(fx("deallocate q").unpins, pin::SQL_PREPARE);
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
