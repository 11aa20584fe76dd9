//! The console's extended query protocol: tokio-postgres `query()`/`prepare()`
//! with typed (binary) results, transactions, errors that skip to Sync, and the
//! exact message sequences, checked byte by byte.

mod common;

use std::error::Error;

use common::{start, start_raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_postgres::types::{FromSql, Type};
use weir_admin::{AdminCommand, Role};

/// A non-negative integer `numeric`, decoded from PostgreSQL's binary format.
#[derive(Debug, PartialEq)]
struct Num(i64);

impl<'a> FromSql<'a> for Num {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let word = |i: usize| i16::from_be_bytes([raw[2 * i], raw[2 * i + 1]]);
        let (ndigits, weight, sign, dscale) = (word(0), word(1), word(2), word(3));
        assert_eq!((sign, dscale), (0, 0));
        let mut v = 0i64;
        for i in 0..=i64::from(weight) {
            let d = if i < i64::from(ndigits) {
                word(4 + i as usize)
            } else {
                0
            };
            v = v * 10_000 + i64::from(d);
        }
        Ok(Num(v))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[tokio::test]
async fn query_returns_typed_rows() {
    let (client, _b, _s) = start(Role::Stats).await;
    let rows = client.query("SHOW POOLS", &[]).await.expect("show pools");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<_, &str>("database"), "app");
    assert_eq!(row.get::<_, i32>("cl_active"), 3);
    assert_eq!(row.get::<_, i32>("maxwait"), 2);
    assert_eq!(row.get::<_, i32>("maxwait_us"), 500_000);
    assert_eq!(row.get::<_, &str>("pool_mode"), "transaction");

    let rows = client.query("show latency;", &[]).await.expect("latency");
    let max: i64 = rows[0].get("query_max_us");
    assert!((5000..=5005).contains(&max), "{max}");

    let rows = client.query("SHOW CLIENTS", &[]).await.expect("clients");
    assert_eq!(rows[0].get::<_, Option<&str>>("request_time"), None);
    assert_eq!(rows[0].get::<_, i32>("port"), 40000);

    let version: String = client
        .query_one("SHOW VERSION", &[])
        .await
        .expect("version")
        .get(0);
    assert!(
        version.starts_with("PgBouncer 1.18.0 (pgweir "),
        "{version}"
    );
}

#[tokio::test]
async fn prepared_statements_run_again_with_fresh_rows() {
    let (client, backend, _s) = start(Role::Stats).await;
    let stmt = client.prepare("SHOW STATS").await.expect("prepare");
    assert_eq!(stmt.params(), &[]);
    assert_eq!(stmt.columns().len(), 16);
    assert_eq!(stmt.columns()[0].type_(), &Type::TEXT);
    assert_eq!(stmt.columns()[1].name(), "total_xact_count");
    assert_eq!(stmt.columns()[1].type_(), &Type::NUMERIC);

    let rows = client.query(&stmt, &[]).await.expect("first");
    assert_eq!(rows[0].get::<_, Num>("total_xact_count"), Num(7));
    assert_eq!(rows[0].get::<_, Num>("total_requests"), Num(14));
    *backend.xacts.lock().unwrap() = 123_456_789;
    let rows = client.query(&stmt, &[]).await.expect("second");
    assert_eq!(rows[0].get::<_, Num>(1), Num(123_456_789));
    assert_eq!(rows[0].get::<_, Num>(2), Num(246_913_578));
    assert_eq!(rows[0].get::<_, Num>("total_received"), Num(1000));

    // Declared parameter types are accepted (and ignored).
    let typed = client
        .prepare_typed("SHOW USERS", &[Type::TEXT])
        .await
        .expect("typed");
    assert_eq!(typed.params(), &[Type::TEXT]);
    let rows = client.query(&typed, &[&"x"]).await.expect("users");
    assert_eq!(rows[0].get::<_, &str>("name"), "alice");
}

#[tokio::test]
async fn transactions_and_commands() {
    let (mut client, backend, _s) = start(Role::Admin).await;
    let tx = client.transaction().await.expect("begin");
    let rows = tx.query("SHOW STATE", &[]).await.expect("state");
    assert_eq!(rows.len(), 3);
    tx.commit().await.expect("commit");

    assert_eq!(client.execute("PAUSE app", &[]).await.expect("pause"), 0);
    client.execute("RESUME", &[]).await.expect("resume");
    assert!(client
        .query("SHOW HELP", &[])
        .await
        .expect("help")
        .is_empty());
    assert_eq!(
        *backend.commands.lock().unwrap(),
        vec![
            AdminCommand::Pause(Some("app".into())),
            AdminCommand::Resume(None)
        ]
    );
    let err = client.execute("KILL nope", &[]).await.expect_err("refused");
    assert_eq!(
        err.as_db_error().map(|e| e.message()),
        Some("no such database: nope")
    );
}

#[tokio::test]
async fn errors_leave_the_session_usable() {
    let (client, backend, _s) = start(Role::Stats).await;
    for (bad, code) in [
        ("SELECT 1", "42601"),
        ("SHOW NOTHING", "42601"),
        ("SHOW POOLS $1", "42601"),
        ("SHOW POOLS; SHOW USERS", "42601"),
        ("PAUSE", "42501"),
    ] {
        let err = client.query(bad, &[]).await.expect_err(bad);
        let db = err.as_db_error().expect("db error");
        assert_eq!(db.code().code(), code, "{bad}: {}", db.message());
        assert!(client.query("SHOW POOLS", &[]).await.is_ok(), "after {bad}");
    }
    assert!(backend.commands.lock().unwrap().is_empty());
}

// ---- byte-level checks ----

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = format!("{name}\0{sql}\0").into_bytes();
    b.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for t in types {
        b.extend_from_slice(&t.to_be_bytes());
    }
    frame(b'P', &b)
}

fn bind(portal: &str, stmt: &str, params: &[&[u8]], formats: &[i16]) -> Vec<u8> {
    let mut b = format!("{portal}\0{stmt}\0").into_bytes();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
    for f in formats {
        b.extend_from_slice(&f.to_be_bytes());
    }
    frame(b'B', &b)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(format!("{name}\0").as_bytes());
    frame(b'D', &b)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = format!("{portal}\0").into_bytes();
    b.extend_from_slice(&max_rows.to_be_bytes());
    frame(b'E', &b)
}

fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

fn query(sql: &str) -> Vec<u8> {
    frame(b'Q', format!("{sql}\0").as_bytes())
}

/// Sends `msgs` and reads messages up to and including `rfqs` ReadyForQuerys;
/// returns (tag, body) pairs.
async fn exchange(io: &mut DuplexStream, msgs: &[Vec<u8>], rfqs: usize) -> Vec<(u8, Vec<u8>)> {
    io.write_all(&msgs.concat()).await.expect("write");
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < rfqs {
        let tag = io.read_u8().await.expect("tag");
        let len = io.read_i32().await.expect("len");
        let mut body = vec![0; len as usize - 4];
        io.read_exact(&mut body).await.expect("body");
        if tag == b'Z' {
            seen += 1;
        }
        out.push((tag, body));
    }
    out
}

fn tags(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| char::from(*t)).collect()
}

/// Past the welcome: ParameterStatus x7, BackendKeyData, ReadyForQuery.
async fn raw(role: Role) -> DuplexStream {
    let (mut io, _b, _s) = start_raw(role);
    let welcome = exchange(&mut io, &[], 1).await;
    assert_eq!(tags(&welcome), "SSSSSSSKZ");
    io
}

#[tokio::test]
async fn describe_formats_and_row_limits() {
    let mut io = raw(Role::Stats).await;
    // Statement Describe: ParameterDescription, RowDescription with format 0.
    let msgs = exchange(
        &mut io,
        &[parse("s", "SHOW LISTS", &[]), describe(b'S', "s"), sync()],
        1,
    )
    .await;
    assert_eq!(tags(&msgs), "1tTZ");
    let row_desc = &msgs[2].1;
    assert_eq!(&row_desc[..2], &2i16.to_be_bytes());
    assert_eq!(&row_desc[row_desc.len() - 2..], &[0, 0]); // text format

    // Portal Describe carries the bound formats; 12 rows, 5 at a time.
    let msgs = exchange(
        &mut io,
        &[
            bind("p", "s", &[], &[1]),
            describe(b'P', "p"),
            execute("p", 5),
            execute("p", 5),
            execute("p", 5),
            execute("p", 5),
            sync(),
        ],
        1,
    )
    .await;
    assert_eq!(tags(&msgs), "2TDDDDDsDDDDDsDDCCZ");
    assert_eq!(&msgs[1].1[msgs[1].1.len() - 2..], &[0, 1]); // binary format
    let items = &msgs[2].1; // "databases", int4 1 in binary
    assert_eq!(&items[items.len() - 8..], &[0, 0, 0, 4, 0, 0, 0, 1]);
    assert_eq!(msgs[17].1, b"SHOW\0");
    assert_eq!(msgs.last().map(|m| m.1.clone()), Some(b"I".to_vec()));

    // The portal died with the implicit transaction at Sync.
    let msgs = exchange(&mut io, &[execute("p", 0), sync()], 1).await;
    assert_eq!(tags(&msgs), "EZ");
}

#[tokio::test]
async fn an_error_skips_to_sync_with_one_ready_for_query() {
    let mut io = raw(Role::Admin).await;
    let msgs = exchange(
        &mut io,
        &[
            parse("", "SHOW POOLS", &[]),
            bind("", "", &[b"1"], &[]), // one value for a statement with none
            describe(b'P', ""),
            execute("", 0),
            parse("x", "PAUSE", &[]),
            sync(),
            frame(b'H', &[]),
            query("SHOW STATE"),
        ],
        2,
    )
    .await;
    assert_eq!(tags(&msgs), "1EZTDDDCZ");
    let err = String::from_utf8_lossy(&msgs[1].1).into_owned();
    assert!(err.contains("C08P01"), "{err}");
    assert!(err.contains("bind message supplies 1 parameters"), "{err}");

    // Unknown result format, unknown statement, bad Describe kind.
    for bad in [
        bind("", "", &[], &[2]),
        bind("", "nope", &[], &[]),
        describe(b'X', ""),
    ] {
        let msgs = exchange(&mut io, &[parse("", "SHOW USERS", &[]), bad, sync()], 1).await;
        assert_eq!(tags(&msgs), "1EZ");
    }
    // A truncated message is an error, not a crash.
    let msgs = exchange(&mut io, &[frame(b'B', b"\0\0\0"), sync()], 1).await;
    assert_eq!(tags(&msgs), "EZ");
    // Empty queries, NoData for commands, Close.
    let msgs = exchange(
        &mut io,
        &[
            parse("e", "", &[]),
            describe(b'S', "e"),
            bind("", "e", &[], &[]),
            execute("", 0),
            parse("r", "RELOAD", &[]),
            describe(b'S', "r"),
            frame(b'C', b"Se\0"),
            frame(b'C', b"Sgone\0"),
            sync(),
        ],
        1,
    )
    .await;
    assert_eq!(tags(&msgs), "1tn2I1tn33Z");
}

#[tokio::test]
async fn transaction_status_follows_begin_commit_rollback() {
    let mut io = raw(Role::Admin).await;
    let status = |msgs: &[(u8, Vec<u8>)]| msgs.last().map(|m| m.1.clone()).unwrap_or_default();
    let run = |sql: &'static str| {
        [
            parse("", sql, &[]),
            bind("", "", &[], &[]),
            execute("", 0),
            sync(),
        ]
    };

    let msgs = exchange(&mut io, &run("BEGIN"), 1).await;
    assert_eq!(
        (tags(&msgs).as_str(), status(&msgs)),
        ("12CZ", b"T".to_vec())
    );
    let msgs = exchange(&mut io, &run("SHOW VERSION"), 1).await;
    assert_eq!(
        (tags(&msgs).as_str(), status(&msgs)),
        ("12DCZ", b"T".to_vec())
    );
    let msgs = exchange(&mut io, &run("SHOW NOTHING"), 1).await;
    assert_eq!((tags(&msgs).as_str(), status(&msgs)), ("EZ", b"E".to_vec()));
    // In a failed block only COMMIT/ROLLBACK run; COMMIT reports ROLLBACK.
    let msgs = exchange(&mut io, &run("SHOW USERS"), 1).await;
    assert!(String::from_utf8_lossy(&msgs[2].1).contains("C25P02"));
    assert_eq!(status(&msgs), b"E");
    let msgs = exchange(&mut io, &run("COMMIT"), 1).await;
    assert_eq!(msgs[2].1, b"ROLLBACK\0");
    assert_eq!(status(&msgs), b"I");

    // The simple protocol shares the status.
    let msgs = exchange(&mut io, &[query("begin; show state")], 1).await;
    assert_eq!(status(&msgs), b"T");
    let msgs = exchange(&mut io, &[query("rollback")], 1).await;
    assert_eq!((tags(&msgs).as_str(), status(&msgs)), ("CZ", b"I".to_vec()));
}
