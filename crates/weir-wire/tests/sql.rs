//! The SQL lexer, fingerprints, normalization, statement keywords and call
//! detection: known answers plus property tests (never panics, bounded work,
//! fingerprints stable under whitespace, comments, case and literal changes).

use proptest::prelude::*;
use weir_wire::sql::{
    contains_any_call, contains_call, fingerprint, normalize, statement_keywords, Lexer, TokenKind,
    MAX_NORMALIZED, MAX_SCAN,
};

fn kinds(sql: &str) -> Vec<(TokenKind, String)> {
    Lexer::new(sql.as_bytes())
        .map(|t| (t.kind, String::from_utf8_lossy(t.text).into_owned()))
        .collect()
}

fn fp(sql: &str) -> u64 {
    fingerprint(sql.as_bytes()).hash
}

fn keywords(sql: &str) -> Vec<String> {
    statement_keywords(sql.as_bytes())
        .map(|k| k.as_str().to_owned())
        .collect()
}

#[test]
fn lexes_every_token_kind() {
    use TokenKind::*;
    let got = kinds(
        "SELECT \"Ab\"\"c\", 'it''s', E'a\\'b', $x$ ; ' $x$, $1, 1.5e-3, .5 -- c\n a::int /* x /* y */ z */ >= b;",
    );
    let want: Vec<(TokenKind, &str)> = vec![
        (Word, "SELECT"),
        (QuotedIdent, "\"Ab\"\"c\""),
        (Punct, ","),
        (String, "'it''s'"),
        (Punct, ","),
        (String, "E'a\\'b'"),
        (Punct, ","),
        (String, "$x$ ; ' $x$"),
        (Punct, ","),
        (Param, "$1"),
        (Punct, ","),
        (Number, "1.5e-3"),
        (Punct, ","),
        (Number, ".5"),
        (Word, "a"),
        (Operator, "::"),
        (Word, "int"),
        (Operator, ">="),
        (Word, "b"),
        (Punct, ";"),
    ];
    let want: Vec<(TokenKind, std::string::String)> =
        want.into_iter().map(|(k, s)| (k, s.to_owned())).collect();
    assert_eq!(got, want);
}

#[test]
fn unterminated_constructs_run_to_the_end() {
    for sql in [
        "'abc",
        "E'abc\\",
        "\"abc",
        "$tag$ abc $ta",
        "/* /* */",
        "-- x",
        "U&'x",
    ] {
        let toks: Vec<_> = Lexer::new(sql.as_bytes()).collect();
        assert!(toks.len() <= 2, "{sql}: {toks:?}");
        let total: usize = toks.iter().map(|t| t.text.len()).sum();
        assert!(total <= sql.len());
    }
    assert_eq!(
        kinds("$ 1"),
        vec![
            (TokenKind::Operator, "$".into()),
            (TokenKind::Number, "1".into())
        ]
    );
}

#[test]
fn normalizes_like_pg_stat_statements() {
    assert_eq!(
        normalize(b"select abalance from pgbench_accounts where aid = 42;"),
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
    );
    assert_eq!(
        normalize(b"UPDATE pgbench_accounts SET abalance = abalance + -17 WHERE aid = $1"),
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"
    );
    assert_eq!(
        normalize(b"SELECT count(*) FROM t WHERE id IN (1, 2, -3,4) AND x = ANY(ARRAY[1,2]) AND s.name = 'x'"),
        "SELECT count(*) FROM t WHERE id IN ($1) AND x = ANY (ARRAY[$2]) AND s.name = $3"
    );
    assert_eq!(
        normalize(b"SELECT a - 1, b-2, f(\"Q\"(3))"),
        "SELECT a - $1, b - $2, f(\"Q\"($3))"
    );
    assert_eq!(
        normalize(b"  BEGIN ;; select 1 ; COMMIT;  "),
        "BEGIN; SELECT $1; COMMIT"
    );
    assert_eq!(
        normalize(b"INSERT INTO t VALUES (1, 'a'), (2, 'b')"),
        "INSERT INTO t VALUES ($1, $2), ($3, $4)"
    );
    assert_eq!(
        normalize(b"select x::text from t where y in (select 1)"),
        "SELECT x::text FROM t WHERE y IN (SELECT $1)"
    );
    assert_eq!(normalize(b""), "");
}

#[test]
fn fingerprints_ignore_literals_layout_and_case() {
    let base = fp("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
    for same in [
        "select  abalance\n from pgbench_accounts where aid=777;",
        "SELECT abalance /* hi */ FROM PGBENCH_ACCOUNTS WHERE aid = $1 -- x",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 'text'",
        "SELECT abalance FROM pgbench_accounts WHERE aid = -5",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $q$x$q$;;",
    ] {
        assert_eq!(fp(same), base, "{same}");
    }
    for different in [
        "SELECT abalance FROM pgbench_accounts WHERE bid = 1",
        "SELECT abalance FROM \"PGBENCH_ACCOUNTS\" WHERE aid = 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1; SELECT 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid > 1",
    ] {
        assert_ne!(fp(different), base, "{different}");
    }
    assert_eq!(
        fp("SELECT * FROM t WHERE id IN (1,2,3)"),
        fp("select * from t where id in (9)")
    );
    assert_ne!(
        fp("SELECT * FROM t WHERE id IN (1,2,3)"),
        fp("select * from t where id in (a, 2)")
    );
    let f = fingerprint(b"BEGIN; SELECT 1; ; COMMIT;");
    assert_eq!(f.statements, 3);
    assert!(!f.truncated);
}

#[test]
fn long_queries_are_bounded() {
    let mut sql = String::from("INSERT INTO t VALUES ");
    while sql.len() < 4 * MAX_SCAN {
        sql.push_str("(1, 'abc'), ");
    }
    sql.push_str("(1, 'x')");
    let f = fingerprint(sql.as_bytes());
    assert!(f.truncated);
    let n = normalize(sql.as_bytes());
    assert!(n.len() <= MAX_NORMALIZED + 8, "{}", n.len());
    assert!(n.ends_with(" ..."));
}

#[test]
fn dollar_quotes_with_long_tags_are_strings() {
    // PostgreSQL takes a tag of any length. Lexing a 70-byte tag as an operator made
    // `' $tag$; SET ...; --'` look like a string to the proxy while the server ran the SET.
    let tag = format!("${}$", "t".repeat(70));
    let sql = format!("SELECT {tag} ' {tag}; SET search_path = evil; --'");
    assert_eq!(keywords(&sql), vec!["SELECT", "SET"]);
    let toks = kinds(&format!("{tag}a{tag}b"));
    assert_eq!(toks[0], (TokenKind::String, format!("{tag}a{tag}")));
    assert_eq!(toks[1], (TokenKind::Word, "b".into()));
    // Unterminated: to the end, like any string.
    assert_eq!(kinds(&format!("{tag} x")).len(), 1);
}

#[test]
fn long_dollar_tags_are_found_in_linear_time() {
    // A body of near-matches: checking each `$` against the tag would take
    // body × tag = 2 MB × 20 KB steps here.
    let long = "a".repeat(20_000);
    let tag = format!("${long}$");
    let near = format!("${}b", &long[1..]);
    let mut sql = tag.clone();
    while sql.len() < 2_000_000 {
        sql.push_str(&near);
    }
    sql.push_str(&tag);
    sql.push_str(" x");
    let started = std::time::Instant::now();
    let toks: Vec<_> = Lexer::new(sql.as_bytes()).collect();
    assert_eq!(toks.len(), 2);
    assert_eq!(toks[1].text, b"x");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn line_comments_end_at_either_newline_byte() {
    // PostgreSQL's scan.l ends `--` comments at \n or \r: `-- x\rSET ...` runs the SET,
    // so the lexer must see it (it hid a SET and a LISTEN from the proxy's tracking).
    assert_eq!(keywords("-- comment\rSET search_path = evil"), vec!["SET"]);
    assert_eq!(
        keywords("select 1 -- c\r; listen ch"),
        vec!["SELECT", "LISTEN"]
    );
    assert_eq!(kinds("-- a\rb"), vec![(TokenKind::Word, "b".into())]);
}

#[test]
fn first_keyword_of_each_statement() {
    assert_eq!(keywords("set x = 1; listen ch"), vec!["SET", "LISTEN"]);
    assert_eq!(
        keywords("/* c */ SELECT ';'; -- ;\n ;(select 1); $$;$$; Declare c cursor with hold for select 1"),
        vec!["SELECT", "SELECT", "DECLARE"]
    );
    assert_eq!(keywords(""), Vec::<String>::new());
    let long = keywords("averyveryverylongidentifiername");
    assert_eq!(long, vec!["AVERYVERYVERYLON"]);
    assert!(statement_keywords(b"PREPARE p AS SELECT 1")
        .next()
        .is_some_and(|k| k == "prepare"));
}

#[test]
fn finds_function_calls_outside_strings_and_comments() {
    assert!(contains_call(
        b"SELECT pg_advisory_lock(1)",
        "pg_advisory_lock"
    ));
    assert!(contains_call(
        b"select PG_CATALOG.PG_ADVISORY_LOCK (1)",
        "pg_advisory_lock"
    ));
    assert!(contains_call(
        b"select \"pg_advisory_lock\"(1)",
        "pg_advisory_lock"
    ));
    assert!(!contains_call(
        b"SELECT 'pg_advisory_lock(1)'",
        "pg_advisory_lock"
    ));
    assert!(!contains_call(
        b"SELECT 1 -- pg_advisory_lock(1)",
        "pg_advisory_lock"
    ));
    assert!(!contains_call(
        b"SELECT $$pg_advisory_lock(1)$$",
        "pg_advisory_lock"
    ));
    assert!(!contains_call(
        b"SELECT pg_advisory_lock_shared(1)",
        "pg_advisory_lock"
    ));
    assert!(!contains_call(
        b"SELECT pg_advisory_lock",
        "pg_advisory_lock"
    ));
    assert_eq!(
        contains_any_call(
            b"select set_config('a','b',false)",
            &["pg_advisory_lock", "set_config"]
        ),
        Some(1)
    );
}

fn sql_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("SELECT".to_owned()),
        Just("select".to_owned()),
        Just("FROM t".to_owned()),
        Just("WHERE".to_owned()),
        Just("IN (".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just("=".to_owned()),
        Just(";".to_owned()),
        Just("-".to_owned()),
        Just("'".to_owned()),
        Just("$$".to_owned()),
        Just("$a$".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("--".to_owned()),
        Just("\n".to_owned()),
        Just("\"".to_owned()),
        Just("E'\\".to_owned()),
        "[a-z_]{1,8}",
        "[0-9]{1,6}",
        any::<u8>().prop_map(|b| (b as char).to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_tokens_tile_the_input(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut covered = 0usize;
        let mut count = 0usize;
        for t in Lexer::new(&bytes) {
            prop_assert!(!t.text.is_empty());
            covered += t.text.len();
            count += 1;
        }
        prop_assert!(covered <= bytes.len());
        prop_assert!(count <= bytes.len());
        let _ = fingerprint(&bytes);
        let n = normalize(&bytes);
        prop_assert!(n.len() <= MAX_NORMALIZED + 16 + bytes.len().min(MAX_NORMALIZED));
        prop_assert!(statement_keywords(&bytes).count() <= bytes.len());
        let _ = contains_call(&bytes, "pg_advisory_lock");
    }

    #[test]
    fn never_panics_on_sql_like_input(parts in proptest::collection::vec(sql_fragment(), 0..40)) {
        let sql = parts.join(" ");
        let _ = fingerprint(sql.as_bytes());
        let _ = normalize(sql.as_bytes());
        let _ = statement_keywords(sql.as_bytes()).count();
    }

    #[test]
    fn stable_under_literal_whitespace_and_case_changes(
        a in 0i64..1_000_000, b in 0i64..1_000_000, s1 in "[a-z ]{0,12}", s2 in "[a-z ]{0,12}",
        ws in "[ \t\n]{1,4}", n in 1usize..8, m in 1usize..8,
    ) {
        let list = |k: usize| (0..k).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        let q1 = format!("SELECT x FROM t WHERE a = {a} AND s = '{s1}' AND id IN ({})", list(n));
        let q2 = format!("select{ws}x{ws}from T where A={b} and S = E'{s2}' and id in ({}) ;", list(m));
        prop_assert_eq!(fp(&q1), fp(&q2));
        prop_assert_eq!(normalize(q1.as_bytes()), normalize(q2.as_bytes()));
    }
}
