//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/`, built with
//! pgweir's own message builders (`cargo run -p weir-fuzz --example seeds`). Seeds are
//! small, real protocol exchanges: what psql, pgbench and the drivers send and what
//! PostgreSQL answers. Existing files are overwritten; found reproducers are kept
//! (they are named `crash-*`, which this never writes).

use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use weir_fuzz::put_prefixed;
use weir_proxy::fuzzing::put_record;
use weir_wire::auth::messages::{
    put_authentication_md5, put_authentication_ok, put_authentication_sasl,
    put_authentication_sasl_continue, put_authentication_sasl_final, put_password_message,
    put_sasl_initial_response,
};
use weir_wire::build::{
    put_backend_key_data, put_cstr, put_frame, put_parameter_status, put_query,
    put_ready_for_query, put_simple_error, put_terminate, Severity,
};
use weir_wire::startup::{
    put_cancel_request, put_startup_message, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut w = Writer { root, count: 0 };
    frame_seeds(&mut w)?;
    startup_seeds(&mut w)?;
    scram_seeds(&mut w)?;
    sql_seeds(&mut w)?;
    conversation_seeds(&mut w)?;
    admin_seeds(&mut w)?;
    config_seeds(&mut w)?;
    println!("wrote {} seeds under {}", w.count, w.root.display());
    Ok(())
}

/// A scram_client seed: name, Authentication request body, server-first, server-final.
type ClientExchange = (&'static str, Vec<u8>, Vec<u8>, Vec<u8>);
/// A scan_server seed: name, flags, then (direction, bytes) records.
type Exchange = (&'static str, u8, Vec<(u8, BytesMut)>);

struct Writer {
    root: PathBuf,
    count: usize,
}

impl Writer {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        self.count += 1;
        Ok(())
    }
}

// ---- frontend messages, as libpq and the drivers send them ----

fn parse(b: &mut BytesMut, name: &str, sql: &str, types: &[u32]) {
    put_frame(b, b'P', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, sql.as_bytes());
        b.put_i16(types.len() as i16);
        for t in types {
            b.put_u32(*t);
        }
    });
}

fn bind(b: &mut BytesMut, portal: &str, stmt: &str, params: &[Option<&[u8]>], binary: bool) {
    put_frame(b, b'B', |b| {
        put_cstr(b, portal.as_bytes());
        put_cstr(b, stmt.as_bytes());
        if binary {
            b.put_i16(1);
            b.put_i16(1);
        } else {
            b.put_i16(0);
        }
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0);
    });
}

fn describe(b: &mut BytesMut, kind: u8, name: &str) {
    put_frame(b, b'D', |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    });
}

fn execute(b: &mut BytesMut, portal: &str, max_rows: i32) {
    put_frame(b, b'E', |b| {
        put_cstr(b, portal.as_bytes());
        b.put_i32(max_rows);
    });
}

fn close(b: &mut BytesMut, kind: u8, name: &str) {
    put_frame(b, b'C', |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_bytes());
    });
}

fn sync(b: &mut BytesMut) {
    put_frame(b, b'S', |_| {});
}

fn flush(b: &mut BytesMut) {
    put_frame(b, b'H', |_| {});
}

fn query(sql: &str) -> BytesMut {
    let mut b = BytesMut::new();
    put_query(&mut b, sql);
    b
}

/// pgbench -M prepared: one named statement, parsed once, bound per transaction.
fn pgbench_prepared() -> BytesMut {
    let mut b = BytesMut::new();
    parse(
        &mut b,
        "P0_1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        &[],
    );
    bind(&mut b, "", "P0_1", &[Some(b"42")], false);
    describe(&mut b, b'P', "");
    execute(&mut b, "", 0);
    sync(&mut b);
    b
}

/// pgbench -M extended / asyncpg: the unnamed statement each time.
fn unnamed_extended() -> BytesMut {
    let mut b = BytesMut::new();
    parse(
        &mut b,
        "",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        &[23, 23],
    );
    bind(
        &mut b,
        "",
        "",
        &[Some(&7i32.to_be_bytes()), Some(&42i32.to_be_bytes())],
        true,
    );
    describe(&mut b, b'P', "");
    execute(&mut b, "", 0);
    sync(&mut b);
    b
}

/// asyncpg's prepare: Parse/Describe/Flush, no Sync; then a Close.
fn asyncpg_prepare() -> BytesMut {
    let mut b = BytesMut::new();
    parse(&mut b, "__asyncpg_stmt_1__", "select $1::int + 1", &[0]);
    describe(&mut b, b'S', "__asyncpg_stmt_1__");
    flush(&mut b);
    bind(&mut b, "", "__asyncpg_stmt_1__", &[None], false);
    execute(&mut b, "", 10);
    sync(&mut b);
    close(&mut b, b'S', "__asyncpg_stmt_1__");
    sync(&mut b);
    b
}

fn copy_in() -> BytesMut {
    let mut b = query("COPY t (a, b) FROM STDIN");
    put_frame(&mut b, b'd', |b| b.put_slice(b"1\tone\n2\ttwo\n"));
    put_frame(&mut b, b'd', |b| b.put_slice(&[b'x'; 300]));
    put_frame(&mut b, b'c', |_| {});
    b
}

fn function_call() -> BytesMut {
    let mut b = BytesMut::new();
    put_frame(&mut b, b'F', |b| {
        b.put_u32(1598); // lo_open
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
    b
}

// ---- backend messages, as PostgreSQL 15 answers ----

fn row_description(b: &mut BytesMut, cols: &[&str]) {
    put_frame(b, b'T', |b| {
        b.put_i16(cols.len() as i16);
        for c in cols {
            put_cstr(b, c.as_bytes());
            b.put_u32(0);
            b.put_i16(0);
            b.put_u32(25);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    });
}

fn data_row(b: &mut BytesMut, values: &[Option<&[u8]>]) {
    put_frame(b, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

fn command_complete(b: &mut BytesMut, tag: &str) {
    put_frame(b, b'C', |b| put_cstr(b, tag.as_bytes()));
}

fn simple(tag: u8) -> impl Fn(&mut BytesMut) {
    move |b: &mut BytesMut| put_frame(b, tag, |_| {})
}

fn select_answer(status: u8) -> BytesMut {
    let mut b = BytesMut::new();
    row_description(&mut b, &["abalance"]);
    data_row(&mut b, &[Some(b"0")]);
    data_row(&mut b, &[None]);
    command_complete(&mut b, "SELECT 2");
    put_ready_for_query(&mut b, status);
    b
}

fn extended_answer() -> BytesMut {
    let mut b = BytesMut::new();
    simple(b'1')(&mut b);
    simple(b'2')(&mut b);
    row_description(&mut b, &["abalance"]);
    data_row(&mut b, &[Some(b"-4711")]);
    command_complete(&mut b, "SELECT 1");
    put_ready_for_query(&mut b, b'I');
    b
}

fn login_answer() -> BytesMut {
    let mut b = BytesMut::new();
    put_authentication_ok(&mut b);
    for (k, v) in [
        ("server_version", "15.10"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "Etc/UTC"),
        ("standard_conforming_strings", "on"),
    ] {
        put_parameter_status(&mut b, k, v);
    }
    put_backend_key_data(&mut b, 4242, &[1, 2, 3, 4]);
    put_ready_for_query(&mut b, b'I');
    b
}

fn error_mid_pipeline() -> BytesMut {
    let mut b = BytesMut::new();
    simple(b'1')(&mut b);
    let mut e = BytesMut::new();
    put_simple_error(
        &mut e,
        Severity::Error,
        "42P01",
        "relation \"nope\" does not exist",
    );
    b.extend_from_slice(&e);
    put_ready_for_query(&mut b, b'I');
    b
}

fn frame_seeds(w: &mut Writer) -> std::io::Result<()> {
    let streams: Vec<(&str, BytesMut)> = vec![
        ("query", query("select 1")),
        ("pgbench-prepared", pgbench_prepared()),
        ("unnamed-extended", unnamed_extended()),
        ("asyncpg-prepare", asyncpg_prepare()),
        ("copy-in", copy_in()),
        ("select-answer", select_answer(b'I')),
        ("extended-answer", extended_answer()),
        ("login-answer", login_answer()),
        ("error-mid-pipeline", error_mid_pipeline()),
        ("error-without-sqlstate", {
            let mut b = BytesMut::new();
            put_frame(&mut b, b'E', |b| b.put_slice(b"SERROR\0Mboom\0\0"));
            b
        }),
        ("auth-sasl", {
            let mut b = BytesMut::new();
            put_authentication_sasl(&mut b, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
            b
        }),
        ("length-too-small", BytesMut::from(&b"Q\0\0\0\x03"[..])),
        ("length-huge", BytesMut::from(&b"D\x7f\xff\xff\xffrow"[..])),
    ];
    for (name, stream) in &streams {
        let mut whole = vec![0u8];
        whole.extend_from_slice(stream);
        w.put("frame", name, &whole)?;
        let mut bytewise = vec![1u8];
        bytewise.extend_from_slice(stream);
        w.put("frame", &format!("{name}-bytewise"), &bytewise)?;
    }
    Ok(())
}

fn startup_seeds(w: &mut Writer) -> std::io::Result<()> {
    let mut psql = BytesMut::new();
    put_startup_message(
        &mut psql,
        [
            ("user", "app"),
            ("database", "app"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
        ],
    );
    let mut ssl_then_startup = BytesMut::new();
    ssl_then_startup.put_i32(8);
    ssl_then_startup.put_i32(SSL_REQUEST_CODE);
    ssl_then_startup.extend_from_slice(&psql);
    let mut gss = BytesMut::new();
    gss.put_i32(8);
    gss.put_i32(GSSENC_REQUEST_CODE);
    let mut options = BytesMut::new();
    put_startup_message(
        &mut options,
        [
            ("user", "app"),
            (
                "options",
                "-c search_path=app,public --statement_timeout=5s -c pgweir.priority=high",
            ),
            ("replication", "false"),
        ],
    );
    let mut v32 = BytesMut::new();
    put_startup_message(&mut v32, [("user", "app"), ("_pq_.command_trace", "on")]);
    v32[4..8].copy_from_slice(&0x0003_0002i32.to_be_bytes());
    let mut cancel = BytesMut::new();
    put_cancel_request(&mut cancel, 4242, &[1, 2, 3, 4]);
    let mut cancel_long = BytesMut::new();
    put_cancel_request(&mut cancel_long, 4242, &[7; 32]);
    let seeds: Vec<(&str, &[u8])> = vec![
        ("psql", &psql),
        ("ssl-then-startup", &ssl_then_startup),
        ("gssenc", &gss),
        ("options", &options),
        ("protocol-3.2", &v32),
        ("cancel", &cancel),
        ("cancel-3.2-key", &cancel_long),
        ("too-long", &[0, 0, 0x27, 0x11, 0, 3, 0, 0]),
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ];
    for (name, stream) in seeds {
        for chunk in [0u8, 3] {
            let mut s = vec![chunk];
            s.extend_from_slice(stream);
            w.put("startup", &format!("{name}-{chunk}"), &s)?;
        }
    }
    Ok(())
}

fn sasl_initial_body(mechanism: &str, data: &[u8]) -> Vec<u8> {
    // The SASLInitialResponse frame's body, as the proxy reads it.
    let mut b = BytesMut::new();
    put_sasl_initial_response(&mut b, mechanism, data);
    b[5..].to_vec()
}

fn body_of(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut b = BytesMut::new();
    f(&mut b);
    b[5..].to_vec()
}

fn scram_seeds(w: &mut Writer) -> std::io::Result<()> {
    let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let server: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "psql",
            sasl_initial_body("SCRAM-SHA-256", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"),
            format!("c=biws,r=%N,{proof}"),
        ),
        (
            "channel-binding-y",
            sasl_initial_body("SCRAM-SHA-256", b"y,,n=app,r=fyko+d2lbbFgONRv9qkxdawL"),
            format!("c=eSws,r=%N,{proof}"),
        ),
        (
            "plus",
            sasl_initial_body("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc"),
            String::new(),
        ),
        (
            "extension",
            sasl_initial_body("SCRAM-SHA-256", b"n,,n=,r=abc,x=ext"),
            format!("c=biws,r=%N,x=1,{proof}"),
        ),
        (
            "wrong-nonce",
            sasl_initial_body("SCRAM-SHA-256", b"n,,n=,r=abc"),
            format!("c=biws,r=abcdef,{proof}"),
        ),
    ];
    for (name, initial, client_final) in server {
        let mut s = Vec::new();
        put_prefixed(&mut s, &initial);
        s.extend_from_slice(client_final.as_bytes());
        w.put("scram_server", name, &s)?;
    }
    let md5 = body_of(|b| {
        put_password_message(
            b,
            weir_wire::auth::md5::md5_response_from_password("app", "pencil", [1, 2, 3, 4])
                .as_bytes(),
        )
    });
    w.put("scram_server", "md5-password-message", &md5)?;
    let verifier = weir_fuzz::secret().to_verifier();
    w.put("scram_server", "verifier", verifier.as_bytes())?;

    let sasl = body_of(|b| put_authentication_sasl(b, &["SCRAM-SHA-256"]));
    let client: Vec<ClientExchange> = vec![
        (
            "pg15",
            sasl.clone(),
            b"r=%N3VxwDnFSMw2JoO9EUhX3Ug7d,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".to_vec(),
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
        ),
        (
            "harness-secret",
            body_of(|b| put_authentication_sasl_continue(b, b"")),
            format!("r=%Nserverpart,s={},i=4096", weir_fuzz::secret_salt_b64()).into_bytes(),
            body_of(|b| put_authentication_sasl_final(b, b"v=AAAA")),
        ),
        (
            "server-error",
            sasl.clone(),
            b"r=%Nx,s=QSXCR+Q6sek8bf92,i=4096".to_vec(),
            b"e=invalid-proof".to_vec(),
        ),
        (
            "too-many-iterations",
            sasl,
            b"r=%Nx,s=QSXCR+Q6sek8bf92,i=2147483647".to_vec(),
            Vec::new(),
        ),
        (
            "md5",
            body_of(|b| put_authentication_md5(b, [9, 8, 7, 6])),
            Vec::new(),
            Vec::new(),
        ),
    ];
    for (name, request, first, last) in client {
        let mut s = Vec::new();
        put_prefixed(&mut s, &request);
        put_prefixed(&mut s, &first);
        s.extend_from_slice(&last);
        w.put("scram_client", name, &s)?;
    }
    Ok(())
}

const SQL: &[(&str, &str)] = &[
    (
        "select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    ),
    (
        "set",
        "SET search_path TO app, public; SET LOCAL statement_timeout = '5s'",
    ),
    (
        "set-config",
        "select pg_catalog.set_config('search_path', 'x', false)",
    ),
    ("reset", "RESET ALL; RESET TimeZone"),
    ("listen", "LISTEN jobs; UNLISTEN *"),
    (
        "prepare",
        "PREPARE q(int) AS SELECT $1; EXECUTE q(1); DEALLOCATE q; DEALLOCATE ALL",
    ),
    (
        "temp",
        "CREATE TEMP TABLE t (a int) ON COMMIT DROP; DISCARD TEMP",
    ),
    (
        "advisory",
        "SELECT pg_advisory_lock(1), pg_advisory_unlock_all()",
    ),
    (
        "cursor",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1; CLOSE ALL",
    ),
    ("priority", "SET pgweir.priority = 'high'"),
    (
        "role",
        "SET ROLE admin; RESET ROLE; SET SESSION AUTHORIZATION bob",
    ),
    (
        "dollar",
        "DO $fn$ BEGIN RAISE NOTICE '$$'; END $fn$; SELECT $$a$$",
    ),
    (
        "strings",
        "SELECT E'a\\'b', U&'d\\0061t', B'101', X'ff', 'it''s', \"Quoted \"\"id\"\"\"",
    ),
    (
        "comments",
        "/* a /* nested */ comment */ -- line\nBEGIN ISOLATION LEVEL SERIALIZABLE",
    ),
    ("unterminated", "SELECT 'never ends"),
    ("numbers", "SELECT 1.5e-3, .5, 0x1F, 1_000, $12, ::int, -1"),
];

fn sql_seeds(w: &mut Writer) -> std::io::Result<()> {
    for (name, sql) in SQL {
        w.put("sql", name, sql.as_bytes())?;
    }
    Ok(())
}

fn conversation_seeds(w: &mut Writer) -> std::io::Result<()> {
    let clients: Vec<(&str, BytesMut)> = vec![
        ("query", query("select 1")),
        ("set", query("SET search_path = app")),
        ("pgbench-prepared", pgbench_prepared()),
        ("unnamed-extended", unnamed_extended()),
        ("asyncpg-prepare", asyncpg_prepare()),
        ("copy-in", copy_in()),
        ("function-call", function_call()),
        ("deallocate", {
            let mut b = pgbench_prepared();
            b.extend_from_slice(&query("DEALLOCATE P0_1"));
            b
        }),
        ("listen-pins", query("LISTEN jobs")),
        ("terminate", {
            let mut b = query("select 1");
            put_terminate(&mut b);
            b
        }),
    ];
    for (name, stream) in &clients {
        for flags in [0u8, 1, 0x1e] {
            let mut s = vec![flags, 0];
            s.extend_from_slice(stream);
            w.put("scan_client", &format!("{name}-{flags:02x}"), &s)?;
        }
    }
    let exchanges: Vec<Exchange> = vec![
        (
            "select",
            0,
            vec![(0, query("select 1")), (1, select_answer(b'I'))],
        ),
        (
            "prepared-twice",
            0,
            vec![
                (0, pgbench_prepared()),
                (1, extended_answer()),
                (0, pgbench_prepared()),
                (1, extended_answer()),
            ],
        ),
        (
            "error-mid-pipeline",
            0,
            vec![(0, unnamed_extended()), (1, error_mid_pipeline())],
        ),
        (
            "transaction",
            1,
            vec![
                (0, query("BEGIN")),
                (1, {
                    let mut b = BytesMut::new();
                    command_complete(&mut b, "BEGIN");
                    put_ready_for_query(&mut b, b'T');
                    b
                }),
                (0, query("select 1")),
                (1, select_answer(b'T')),
            ],
        ),
        (
            "replay",
            0x50,
            vec![
                (1, {
                    let mut b = BytesMut::new();
                    command_complete(&mut b, "SET");
                    put_ready_for_query(&mut b, b'I');
                    b
                }),
                (0, query("select 1")),
                (1, select_answer(b'I')),
            ],
        ),
        (
            "parameter-status",
            0,
            vec![
                (0, query("SET TimeZone = 'UTC'")),
                (1, {
                    let mut b = BytesMut::new();
                    put_parameter_status(&mut b, "TimeZone", "UTC");
                    command_complete(&mut b, "SET");
                    put_ready_for_query(&mut b, b'I');
                    b
                }),
            ],
        ),
        ("login", 0, vec![(1, login_answer())]),
    ];
    for (name, flags, records) in exchanges {
        let mut s = vec![flags];
        for (direction, bytes) in records {
            put_record(&mut s, direction, &bytes);
        }
        w.put("scan_server", name, &s)?;
    }
    Ok(())
}

fn admin_seeds(w: &mut Writer) -> std::io::Result<()> {
    let mut ext = BytesMut::new();
    parse(&mut ext, "", "SHOW POOLS", &[]);
    bind(&mut ext, "", "", &[], true);
    describe(&mut ext, b'P', "");
    execute(&mut ext, "", 1);
    execute(&mut ext, "", 0);
    sync(&mut ext);
    parse(&mut ext, "s1", "PAUSE app", &[25]);
    bind(&mut ext, "p1", "s1", &[Some(b"x")], false);
    execute(&mut ext, "p1", 0);
    close(&mut ext, b'P', "p1");
    close(&mut ext, b'S', "s1");
    sync(&mut ext);
    put_terminate(&mut ext);
    let seeds: Vec<(&str, BytesMut)> = vec![
        (
            "show",
            query("SHOW POOLS; SHOW STATS; show clients;SHOW HELP"),
        ),
        (
            "commands",
            query("PAUSE app; RESUME; RECONNECT app; KILL app; WAIT_CLOSE; RELOAD"),
        ),
        (
            "set",
            query("SET default_pool_size = 10; SET client_encoding = 'UTF8'"),
        ),
        (
            "transaction",
            query("BEGIN; SHOW VERSION; COMMIT; ROLLBACK"),
        ),
        ("invalid", query("SELECT 1")),
        ("extended", ext),
    ];
    for (name, stream) in seeds {
        for (flags, chunk) in [(0u8, 0u8), (1, 7)] {
            let mut s = vec![flags, chunk];
            s.extend_from_slice(&stream);
            w.put("admin_console", &format!("{name}-{flags}"), &s)?;
        }
    }
    Ok(())
}

fn config_seeds(w: &mut Writer) -> std::io::Result<()> {
    let example = include_str!("../../../proxy.toml");
    let seeds: Vec<(&str, u8, &str)> = vec![
        ("proxy-toml", 0, example),
        (
            "small-toml",
            0,
            "listen = \"127.0.0.1:6432\"\npool_mode = \"transaction\"\n[databases.app]\nhost = \"db\"\nport = 5432\npool_size = 20\nquery_wait_timeout = \"30s\"\n[users.app]\npassword = \"secret\"\n",
        ),
        (
            "userlist",
            1,
            "; comment\n\"alice\" \"plain password\"\n\"bob\" \"md545f2603610af569b6155c45067268c6b\"\n\"say \"\"hi\"\"\" \"pw\" extra\n\"nobody\" \"\"\n",
        ),
        ("duration", 2, "1h 30m"),
        ("size", 2, "16MB"),
        ("url", 3, "postgres://app:s%40cret@db.internal:5432/app?sslmode=disable"),
        ("connstr", 4, "host=db port=5432 dbname=app connect_query='SELECT ''x'''"),
    ];
    for (name, selector, text) in seeds {
        let mut s = vec![selector];
        s.extend_from_slice(text.as_bytes());
        w.put("config", name, &s)?;
    }
    Ok(())
}
