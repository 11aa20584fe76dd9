//! What a client's SQL does to its session, found with a cheap token check (no parser):
//! features that need the whole session (LISTEN, session advisory locks, `WITH HOLD`
//! cursors, temp tables, `SET SESSION AUTHORIZATION`/`ROLE`, SQL `PREPARE`), statements
//! that may end them, and statements that change settings or drop prepared statements.
//!
//! The token check only says when to look: whether a feature really outlives the
//! transaction (a temp table `ON COMMIT DROP`, a `LISTEN` rolled back, one lock of two
//! released) is asked of the server itself at the transaction's end ([`PIN_CHECK_SQL`]).

use weir_wire::frontend::first_keyword;
use weir_wire::sql::{Lexer, TokenKind};

mod function_call;
mod pins;
mod statement;

pub use function_call::function_call_effects;
pub use pins::{pin, pins_from_check, PIN_CHECK_SQL};
use statement::{call_effects, is_punct, is_word, unquoted, Statement};

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
        // Field by field: comparing with a fresh default built and dropped one per query.
        let Effects {
            pins,
            unpins,
            settings,
            deallocate_all,
            deallocate,
            resets,
            reset_all,
            set_names,
        } = self;
        *pins == 0
            && *unpins == 0
            && !settings
            && !deallocate_all
            && deallocate.is_none()
            && resets.is_empty()
            && !reset_all
            && set_names.is_empty()
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
    if weir_wire::sql::contains_either(body, b'(', b';') {
        return true;
    }
    let mut word = [0u8; 16];
    let (n, _) = first_keyword(sql, &mut word);
    KEYWORDS.contains(&&word[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

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
