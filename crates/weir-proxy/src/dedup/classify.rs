//! Which statements may be shared between clients: one plain read whose result does
//! not depend on when or by whom it runs. Conservative by construction: anything the
//! lexer does not positively recognise as safe makes the statement unshareable.

use weir_wire::sql::{Lexer, Token, TokenKind};

/// Functions whose result depends only on their arguments and the database's contents
/// (immutable or stable in PostgreSQL's catalog, excluding the `now()` family), so two
/// concurrent executions return the same rows. `dedup_functions` adds to it.
pub const DEFAULT_ALLOWED: &[&str] = &[
    // aggregates and window functions
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bool_and",
    "bool_or",
    "every",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "stddev",
    "variance",
    // conditionals and comparisons
    "coalesce",
    "nullif",
    "greatest",
    "least",
    // strings
    "lower",
    "upper",
    "length",
    "char_length",
    "octet_length",
    "substring",
    "substr",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "concat",
    "concat_ws",
    "replace",
    "split_part",
    "left",
    "right",
    "lpad",
    "rpad",
    "position",
    "strpos",
    "reverse",
    "repeat",
    "initcap",
    "md5",
    "encode",
    "decode",
    "format",
    "quote_ident",
    "quote_literal",
    "starts_with",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "to_hex",
    // numbers
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "mod",
    "power",
    "sqrt",
    "trunc",
    "sign",
    "ln",
    "log",
    "exp",
    "div",
    // dates (not now(): its value is the transaction's start)
    "date_trunc",
    "date_part",
    "extract",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_number",
    "make_date",
    "make_interval",
    "age_in_days",
    // arrays, JSON, sets
    "array_length",
    "cardinality",
    "unnest",
    "generate_series",
    "array_position",
    "array_to_string",
    "string_to_array",
    "jsonb_build_object",
    "json_build_object",
    "jsonb_build_array",
    "json_build_array",
    "to_json",
    "to_jsonb",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "json_extract_path",
    "json_extract_path_text",
    "jsonb_array_length",
    "jsonb_typeof",
    // syntax that looks like a call, and type modifiers in casts
    "cast",
    "numeric",
    "decimal",
    "varchar",
    "char",
    "character",
    "bit",
    "float",
    "timestamp",
    "timestamptz",
    "time",
    "interval",
];

/// Keywords that may stand before `(` without calling a function.
const GROUPING_KEYWORDS: &[&[u8]] = &[
    b"SELECT",
    b"WITH",
    b"AS",
    b"FROM",
    b"JOIN",
    b"ON",
    b"USING",
    b"WHERE",
    b"AND",
    b"OR",
    b"NOT",
    b"IN",
    b"EXISTS",
    b"ANY",
    b"ALL",
    b"SOME",
    b"VALUES",
    b"CASE",
    b"WHEN",
    b"THEN",
    b"ELSE",
    b"OVER",
    b"FILTER",
    b"WITHIN",
    b"ARRAY",
    b"ROW",
    b"BY",
    b"HAVING",
    b"LATERAL",
    b"UNION",
    b"INTERSECT",
    b"EXCEPT",
    b"DISTINCT",
    b"IS",
    b"LIKE",
    b"ILIKE",
    b"BETWEEN",
    b"RECURSIVE",
    b"MATERIALIZED",
    b"LIMIT",
    b"OFFSET",
    b"GROUP",
    b"ORDER",
    b"PARTITION",
    b"SIMILAR",
    b"ESCAPE",
    b"RETURNS",
];

/// Words that make a statement unshareable wherever they appear: writes (data-modifying
/// CTEs, `SELECT INTO`), locking clauses (`FOR UPDATE`, `FOR SHARE`; `FOR` is refused
/// outright, which also refuses a few harmless uses), and the SQL value functions whose
/// value is a time.
const REFUSED_WORDS: &[&[u8]] = &[
    b"INSERT",
    b"UPDATE",
    b"DELETE",
    b"MERGE",
    b"INTO",
    b"FOR",
    b"CURRENT_TIMESTAMP",
    b"CURRENT_TIME",
    b"CURRENT_DATE",
    b"LOCALTIME",
    b"LOCALTIMESTAMP",
    b"COPY",
    b"CALL",
    b"DO",
    b"NOTIFY",
    b"LISTEN",
    b"LOCK",
    b"TABLESAMPLE",
];

/// Whether `sql` (a Query message's text) is one plain read that may be shared:
/// `SELECT` or `WITH ... SELECT`, one statement, no locking clause, no writes, and
/// every function it calls on `allowed` (lower-case names, optionally
/// schema-qualified: `pg_catalog.count` or `app.price_of`).
pub fn shareable(sql: &[u8], allowed: &dyn Fn(&str) -> bool) -> bool {
    let mut tokens = Lexer::new(sql).peekable();
    let Some(first) = tokens.next() else {
        return false;
    };
    if !(is_word(&first, b"SELECT") || is_word(&first, b"WITH")) {
        return false;
    }
    // The last three tokens: a call is `name (` or `schema . name (`.
    let mut last: [Option<Token<'_>>; 3] = [None, None, Some(first)];
    while let Some(t) = tokens.next() {
        if is_punct(&t, b';') {
            // One statement only: a trailing `;` is fine.
            return tokens.next().is_none();
        }
        if t.kind == TokenKind::Word && REFUSED_WORDS.iter().any(|w| t.text.eq_ignore_ascii_case(w))
        {
            return false;
        }
        if is_punct(&t, b'(') {
            if let Some(name) = last[2].as_ref().and_then(callee) {
                let schema = match (&last[0], &last[1]) {
                    (Some(s), Some(dot)) if is_punct(dot, b'.') => Some(callee(s).unwrap_or(b"?")),
                    _ => None,
                };
                let grouping = schema.is_none()
                    && last[2].is_some_and(|p| p.kind == TokenKind::Word)
                    && GROUPING_KEYWORDS
                        .iter()
                        .any(|k| name.eq_ignore_ascii_case(k));
                if !grouping && !call_allowed(schema, name, allowed) {
                    return false;
                }
            }
        }
        last = [last[1], last[2], Some(t)];
    }
    true
}

/// Whether a call of `schema.name` (or bare `name`) is on the allow-list: a bare or
/// `pg_catalog.` call by its bare name, any other schema only by `schema.name`.
fn call_allowed(schema: Option<&[u8]>, name: &[u8], allowed: &dyn Fn(&str) -> bool) -> bool {
    let Ok(name) = std::str::from_utf8(name) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    match schema {
        None => allowed(&name),
        Some(s) if s.eq_ignore_ascii_case(b"pg_catalog") => allowed(&name),
        Some(s) => match std::str::from_utf8(s) {
            Ok(s) => allowed(&format!("{}.{name}", s.to_ascii_lowercase())),
            Err(_) => false,
        },
    }
}

/// The name a token before `(` would call, if it is a name.
fn callee<'t>(t: &Token<'t>) -> Option<&'t [u8]> {
    match t.kind {
        TokenKind::Word => Some(t.text),
        TokenKind::QuotedIdent => t.text.get(1..t.text.len().saturating_sub(1)),
        _ => None,
    }
}

fn is_word(t: &Token<'_>, w: &[u8]) -> bool {
    t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(w)
}

fn is_punct(t: &Token<'_>, b: u8) -> bool {
    t.kind == TokenKind::Punct && t.text == [b]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_allowed(name: &str) -> bool {
        DEFAULT_ALLOWED.contains(&name)
    }

    fn ok(sql: &str) -> bool {
        shareable(sql.as_bytes(), &default_allowed)
    }

    #[test]
    fn plain_reads_are_shareable() {
        assert!(ok("select 1"));
        assert!(ok("SELECT id, name FROM users WHERE id IN (1, 2, 3);"));
        assert!(ok(
            "select count(*), max(price) from items where kind = 'a' group by kind"
        ));
        assert!(ok(
            "WITH t AS (SELECT * FROM items) SELECT * FROM t JOIN u ON (t.id = u.id)"
        ));
        assert!(ok(
            "select coalesce(sum(x), 0)::numeric(10,2) from t where exists (select 1 from u)"
        ));
        assert!(ok("select pg_catalog.count(*) from t"));
        assert!(ok("select 'nextval(1)' as s -- random()\n from t"));
    }

    #[test]
    fn writes_locks_and_volatile_calls_are_not() {
        assert!(!ok("insert into t values (1)"));
        assert!(!ok("select nextval('s')"));
        assert!(!ok("select random()"));
        assert!(!ok("select now()"));
        assert!(!ok("select current_timestamp"));
        assert!(!ok("select pg_sleep(0.1)"));
        assert!(!ok("select set_config('a.b', '1', false)"));
        assert!(!ok("select * from t for update"));
        assert!(!ok("select * from t for share"));
        assert!(!ok("select * into t2 from t"));
        assert!(!ok("with d as (delete from t returning *) select * from d"));
        assert!(!ok("select 1; select 2"));
        assert!(!ok("select my_func(1)"));
        assert!(!ok("select app.count(1)"));
        assert!(!ok("select \"random\"()"));
        assert!(!ok("update t set a = 1"));
        assert!(!ok(""));
        assert!(!ok("begin"));
    }

    #[test]
    fn the_allow_list_extends_it() {
        let allowed = |n: &str| n == "price_of" || n == "app.cost_of" || default_allowed(n);
        assert!(shareable(b"select price_of(3)", &allowed));
        assert!(shareable(b"select App.cost_of(3)", &allowed));
        assert!(!shareable(b"select cost_of(3)", &allowed));
        assert!(!shareable(b"select other.price_of(3)", &allowed));
    }
}
