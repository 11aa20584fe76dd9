//! What a client's SQL does to its session, found with a cheap token check (no parser):
//! features that need the whole session (LISTEN, session advisory locks, `WITH HOLD`
//! cursors, temp tables, `SET SESSION AUTHORIZATION`/`ROLE`, SQL `PREPARE`), their
//! releases, and statements that change settings or drop prepared statements.

use weir_wire::frontend::first_keyword;

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

/// Scans a query text (one or more statements).
pub fn effects(sql: &[u8]) -> Effects {
    let mut e = Effects::default();
    let mut statements = 0;
    for statement in Statements(sql) {
        statements += 1;
        statement_effects(statement, &mut e);
    }
    if statements != 1 {
        e.deallocate = None;
    }
    if sql.contains(&b'(') {
        call_effects(sql, &mut e);
    }
    e
}

fn statement_effects(sql: &[u8], e: &mut Effects) {
    let mut w1 = [0u8; 16];
    let (n1, rest) = first_keyword(sql, &mut w1);
    let mut w2 = [0u8; 16];
    let (n2, rest2) = first_keyword(rest, &mut w2);
    let (first, second) = (&w1[..n1], &w2[..n2]);
    match first {
        b"LISTEN" => e.pins |= pin::LISTEN,
        b"UNLISTEN" if rest.trim_ascii_start().starts_with(b"*") => e.unpins |= pin::LISTEN,
        b"DECLARE" if contains_words(rest, b"WITH", b"HOLD") => e.pins |= pin::HOLD_CURSOR,
        b"CLOSE" if second == b"ALL" => e.unpins |= pin::HOLD_CURSOR,
        b"CREATE" => {
            let temp = match second {
                b"TEMP" | b"TEMPORARY" => true,
                b"GLOBAL" | b"LOCAL" => {
                    let mut w3 = [0u8; 16];
                    let (n3, _) = first_keyword(rest2, &mut w3);
                    matches!(&w3[..n3], b"TEMP" | b"TEMPORARY")
                }
                _ => false,
            };
            if temp {
                e.pins |= pin::TEMP_TABLE;
            }
        }
        b"DISCARD" => match second {
            b"ALL" => {
                e.unpins |= pin::ALL;
                e.settings = true;
                e.deallocate_all = true;
                e.reset_all = true;
            }
            b"TEMP" | b"TEMPORARY" => e.unpins |= pin::TEMP_TABLE,
            _ => {}
        },
        b"SET" => match second {
            b"LOCAL" | b"TRANSACTION" | b"CONSTRAINTS" => {}
            b"ROLE" => e.pins |= pin::AUTHORIZATION,
            b"SESSION" => {
                let mut w3 = [0u8; 16];
                let (n3, _) = first_keyword(rest2, &mut w3);
                if matches!(&w3[..n3], b"AUTHORIZATION" | b"ROLE") {
                    e.pins |= pin::AUTHORIZATION;
                } else {
                    e.settings = true;
                    e.set_names.extend(set_target(rest2));
                }
            }
            _ => {
                e.settings = true;
                e.set_names.extend(set_target(rest));
            }
        },
        b"RESET" => {
            e.settings = true;
            let mut w3 = [0u8; 16];
            let (n3, _) = first_keyword(rest2, &mut w3);
            if second == b"ROLE" || (second == b"SESSION" && &w3[..n3] == b"AUTHORIZATION") {
                e.unpins |= pin::AUTHORIZATION;
            } else if second == b"ALL" {
                e.reset_all = true;
            } else if let Some(name) = statement_name(rest) {
                e.resets.push(name);
            }
        }
        b"PREPARE" if second != b"TRANSACTION" => e.pins |= pin::SQL_PREPARE,
        b"DEALLOCATE" => {
            let (all, name) = match second {
                b"PREPARE" => {
                    let mut w3 = [0u8; 16];
                    let (n3, _) = first_keyword(rest2, &mut w3);
                    (&w3[..n3] == b"ALL", rest2)
                }
                b"ALL" => (true, rest),
                _ => (false, rest),
            };
            if all {
                e.deallocate_all = true;
                e.unpins |= pin::SQL_PREPARE;
            } else {
                e.deallocate = statement_name(name);
            }
        }
        _ => {}
    }
}

/// The name in `DEALLOCATE name`: an identifier, folded to lower case unless quoted.
fn statement_name(rest: &[u8]) -> Option<Vec<u8>> {
    let rest = rest.trim_ascii();
    let rest = rest.strip_suffix(b";").unwrap_or(rest).trim_ascii_end();
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let inner = quoted.strip_suffix(b"\"")?;
        if inner.contains(&b'"') {
            return None;
        }
        return Some(inner.to_vec());
    }
    (!rest.is_empty()
        && rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
    .then(|| rest.to_ascii_lowercase())
}

fn call_effects(sql: &[u8], e: &mut Effects) {
    const PINS: [&[u8]; 4] = [
        b"pg_advisory_lock",
        b"pg_advisory_lock_shared",
        b"pg_try_advisory_lock",
        b"pg_try_advisory_lock_shared",
    ];
    if PINS.iter().any(|f| calls(sql, f)) {
        e.pins |= pin::ADVISORY_LOCK;
    }
    if calls(sql, b"pg_advisory_unlock_all") {
        e.unpins |= pin::ADVISORY_LOCK;
    }
    if calls(sql, b"set_config") {
        e.settings = true;
        e.set_names.extend(set_config_target(sql));
    }
}

/// The setting a `SET` changes: `rest` starts after `SET` (and `SESSION`). The special
/// forms `TIME ZONE`, `NAMES` and `SCHEMA` name `timezone`, `client_encoding` and
/// `search_path`.
fn set_target(rest: &[u8]) -> Option<Vec<u8>> {
    let rest = rest.trim_ascii_start();
    let name: Vec<u8> = if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = quoted.iter().position(|&b| b == b'"')?;
        quoted[..end].to_vec()
    } else {
        let end = rest
            .iter()
            .position(|b| !(is_ident(*b) || *b == b'.'))
            .unwrap_or(rest.len());
        rest[..end].to_ascii_lowercase()
    };
    let special: &[u8] = match name.as_slice() {
        b"time" => b"timezone",
        b"names" => b"client_encoding",
        b"schema" => b"search_path",
        _ => &name,
    };
    (!special.is_empty()).then(|| special.to_vec())
}

/// The first argument of `set_config('name', ...)`, when it is a plain string literal.
fn set_config_target(sql: &[u8]) -> Option<Vec<u8>> {
    let at = find_ci(sql, b"set_config")?;
    let args = sql[at + b"set_config".len()..].trim_ascii_start();
    let args = args.strip_prefix(b"(")?.trim_ascii_start();
    let literal = args.strip_prefix(b"'")?;
    let end = literal.iter().position(|&b| b == b'\'')?;
    Some(literal[..end].to_ascii_lowercase())
}

/// `sql` has `name` as a whole word followed by `(` (case-insensitive).
fn calls(sql: &[u8], name: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = find_ci(&sql[from..], name) {
        let at = from + i;
        let end = at + name.len();
        let before_ok = at == 0 || !is_ident(sql[at - 1]);
        let after = sql[end..].trim_ascii_start();
        if before_ok && after.first() == Some(&b'(') {
            return true;
        }
        from = end;
    }
    false
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// `first` then `second` as consecutive words somewhere in `sql` (case-insensitive).
fn contains_words(sql: &[u8], first: &[u8], second: &[u8]) -> bool {
    let mut words = sql
        .split(|b| !is_ident(*b))
        .filter(|w| !w.is_empty())
        .peekable();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case(first)
            && words.peek().is_some_and(|n| n.eq_ignore_ascii_case(second))
        {
            return true;
        }
    }
    false
}

/// The statements of a query text, split at semicolons outside quotes, dollar quotes and
/// comments. Empty statements are skipped.
struct Statements<'a>(&'a [u8]);

impl<'a> Iterator for Statements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let sql = self.0;
            if sql.trim_ascii().is_empty() {
                return None;
            }
            let end = statement_end(sql);
            let statement = &sql[..end];
            self.0 = sql.get(end + 1..).unwrap_or(&[]);
            if !statement.trim_ascii().is_empty() {
                return Some(statement);
            }
        }
    }
}

/// Index of the first `;` that ends a statement, or `sql.len()`.
fn statement_end(sql: &[u8]) -> usize {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b';' => return i,
            b'\'' | b'"' => {
                let q = sql[i];
                i += 1;
                while i < sql.len() {
                    if sql[i] == q {
                        if sql.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                i = sql[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(sql.len(), |p| i + p + 1);
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < sql.len() {
                    if sql[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if sql[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'$' if i == 0 || !is_ident(sql[i - 1]) => {
                // $tag$ ... $tag$ (a bare $1 parameter is not a dollar quote).
                let tag_end = sql[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(t)
                        if sql[t] == b'$'
                            && !sql[i + 1..t].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[i..=t];
                        i = t + 1;
                        match sql[i..].windows(tag.len()).position(|w| w == tag) {
                            Some(p) => i += p + tag.len(),
                            None => return sql.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    sql.len()
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
        let parts: Vec<_> =
            Statements(b"select ';'; select $$;$$; -- ;\nlisten x; /* ; */ select $1;").collect();
        assert_eq!(parts.len(), 4, "{parts:?}");
        assert_eq!(fx("select ';listen x'").pins, 0);
        assert_eq!(fx("select 1; listen x").pins, pin::LISTEN);
        assert_eq!(fx("select $q$ ; listen x $q$").pins, 0);
    }
}
