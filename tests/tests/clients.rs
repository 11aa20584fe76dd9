//! tokio-postgres through pgweir against real PostgreSQL 15: typed and simple queries,
//! NULLs, 10 MB values, 200 000 rows, pipelining on one connection, errors and recovery,
//! transaction visibility, prepared statements in session mode, 200 clients over a pool
//! of 5, and an md5 upstream user.
//!
//! In transaction mode only unnamed statements are used (`query_typed`, `simple_query`):
//! tokio-postgres's `prepare`/`query` use named statements, which pgweir refuses there.

mod clientkit;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clientkit::{join_all, simple_rows, simple_value, sqlstate, superuser_sql, unique_name};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;
use weir_config::{AuthType, PoolMode};
use weir_tests::{
    app_config, config_for, connect, shared_cluster, start_proxy, TestProxy, APP_DB, MD5_PASSWORD,
    MD5_USER,
};

/// Longest a step may take before the test fails as hung (the proxy lost an answer).
const HANG: Duration = Duration::from_secs(90);

async fn proxy(mode: PoolMode, pool_size: u32) -> TestProxy {
    start_proxy(app_config(mode, pool_size)).await
}

async fn client(proxy: &TestProxy) -> Client {
    connect(&proxy.app_url())
        .await
        .expect("login through pgweir")
}

/// True when the client's current statement runs outside an explicit transaction block.
async fn outside_transaction(c: &Client) -> bool {
    let rows = c
        .simple_query("select now() = statement_timestamp()")
        .await
        .expect("probe query");
    simple_value(&rows).as_deref() == Some("t")
}

/// Parameters and results of many types, NULLs both ways, unnamed statements only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_parameters_nulls_and_simple_queries() {
    let proxy = proxy(PoolMode::Transaction, 2).await;
    let c = client(&proxy).await;

    let text = "héllo, wörld ✓ 'quoted' \"double\" \\ back";
    let bytes: Vec<u8> = (0..=255u8).collect();
    let none: Option<i32> = None;
    let array = vec![1i32, -2, 3];
    let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let params: [(&(dyn ToSql + Sync), Type); 13] = [
        (&i16::MIN, Type::INT2),
        (&i32::MAX, Type::INT4),
        (&i64::MIN, Type::INT8),
        (&1.5f32, Type::FLOAT4),
        (&-2.25e300f64, Type::FLOAT8),
        (&true, Type::BOOL),
        (&text, Type::TEXT),
        (&bytes, Type::BYTEA),
        (&none, Type::INT4),
        (&array, Type::INT4_ARRAY),
        (&when, Type::TIMESTAMPTZ),
        (&ip, Type::INET),
        (&4_000_000_000u32, Type::OID),
    ];
    let row = c
        .query_typed_one(
            "select $1::int2, $2::int4, $3::int8, $4::float4, $5::float8, $6::bool, $7::text, \
             $8::bytea, $9::int4, $10::int4[], $11::timestamptz, $12::inet, $13::oid, \
             $9::int4 is null, length($7::text)",
            &params,
        )
        .await
        .expect("typed query");
    assert_eq!(row.get::<_, i16>(0), i16::MIN);
    assert_eq!(row.get::<_, i32>(1), i32::MAX);
    assert_eq!(row.get::<_, i64>(2), i64::MIN);
    assert_eq!(row.get::<_, f32>(3), 1.5);
    assert_eq!(row.get::<_, f64>(4), -2.25e300);
    assert!(row.get::<_, bool>(5));
    assert_eq!(row.get::<_, String>(6), text);
    assert_eq!(row.get::<_, Vec<u8>>(7), bytes);
    assert_eq!(row.get::<_, Option<i32>>(8), None);
    assert_eq!(row.get::<_, Vec<i32>>(9), array);
    assert_eq!(row.get::<_, SystemTime>(10), when);
    assert_eq!(row.get::<_, IpAddr>(11), ip);
    assert_eq!(row.get::<_, u32>(12), 4_000_000_000);
    assert!(row.get::<_, bool>(13), "NULL parameter arrived as non-NULL");
    assert_eq!(row.get::<_, i32>(14), text.chars().count() as i32);

    // NULL results of several types, and an empty string that is not NULL.
    let row = c
        .query_typed_one("select null::int8, null::text, ''::text, null::bytea", &[])
        .await
        .expect("nulls");
    assert_eq!(row.get::<_, Option<i64>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some(""));
    assert_eq!(row.get::<_, Option<Vec<u8>>>(3), None);

    let rows = c
        .simple_query("select null::int, 'x', '', 1.5::numeric; select 'second'")
        .await
        .expect("simple");
    assert_eq!(
        simple_rows(&rows),
        vec![
            vec![
                None,
                Some("x".into()),
                Some(String::new()),
                Some("1.5".into())
            ],
            vec![Some("second".into())]
        ]
    );
}

/// A 10 MB text parameter and a 10 MB bytea come back byte for byte; a 10 MB row built on
/// the server streams through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_values_round_trip() {
    const SIZE: usize = 10 << 20;
    let proxy = proxy(PoolMode::Transaction, 2).await;
    let c = client(&proxy).await;

    let big: String = (0..SIZE)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let row = c
        .query_typed_one("select $1::text, length($1::text)", &[(&big, Type::TEXT)])
        .await
        .expect("10 MB text");
    assert_eq!(row.get::<_, i32>(1), SIZE as i32);
    assert!(
        row.get::<_, &str>(0) == big,
        "10 MB text changed on the way"
    );

    let blob: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    let row = c
        .query_typed_one("select $1::bytea", &[(&blob, Type::BYTEA)])
        .await
        .expect("10 MB bytea");
    assert!(
        row.get::<_, &[u8]>(0) == blob,
        "10 MB bytea changed on the way"
    );

    let rows = c
        .simple_query("select repeat('xyz', 3500000), 'tail'")
        .await
        .expect("server-built big row");
    let rows = simple_rows(&rows);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0].as_ref().map(String::len), Some(10_500_000));
    assert_eq!(rows[0][1].as_deref(), Some("tail"));
}

/// 200 000 rows arrive complete, through the simple and the extended protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rows_stream_through() {
    const N: i64 = 200_000;
    let proxy = proxy(PoolMode::Transaction, 2).await;
    let c = client(&proxy).await;

    let rows = c
        .simple_query("select generate_series(1, 200000)")
        .await
        .expect("simple");
    let values: Vec<i64> = simple_rows(&rows)
        .iter()
        .map(|r| {
            r[0].as_deref()
                .and_then(|v| v.parse().ok())
                .expect("a number")
        })
        .collect();
    assert_eq!(values.len() as i64, N);
    assert_eq!(values.iter().sum::<i64>(), N * (N + 1) / 2);

    let rows = c
        .query_typed(
            "select i, repeat('x', 20) from generate_series(1, $1) i",
            &[(&(N as i32), Type::INT4)],
        )
        .await
        .expect("extended");
    assert_eq!(rows.len() as i64, N);
    let sum: i64 = rows.iter().map(|r| i64::from(r.get::<_, i32>(0))).sum();
    assert_eq!(sum, N * (N + 1) / 2);
    assert!(outside_transaction(&c).await);
}

/// A query sent while the answer to the one before it is still streaming in (the
/// relay does not watch the client then, and picks its bytes up when the server wakes
/// it): answered, after the first, in transaction mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sent_while_an_answer_streams_is_answered() {
    let proxy = proxy(PoolMode::Transaction, 1).await;
    let c = client(&proxy).await;
    for round in 0..3 {
        // ~400 rows of 200 bytes, produced slowly: the answer leaves PostgreSQL in
        // several writes over a few hundred milliseconds.
        let slow = c.query(
            "select repeat('x', 200), pg_sleep(0.001) from generate_series(1, 400)",
            &[],
        );
        let late = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.query_typed("select $1::int4 * 2", &[(&round, Type::INT4)])
                .await
        };
        let (slow, late) = tokio::time::timeout(HANG, async { tokio::join!(slow, late) })
            .await
            .expect("both answered in time (a query lost in the relay hangs)");
        assert_eq!(slow.expect("slow query").len(), 400);
        let late = late.expect("late query");
        assert_eq!(late[0].get::<_, i32>(0), round * 2);
    }
    assert!(outside_transaction(&c).await);
}

/// 50 queries pipelined on ONE connection (all sent before the first answer is read),
/// one of them failing: each gets its own answer, in transaction mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_pipelined_queries_on_one_client() {
    let proxy = proxy(PoolMode::Transaction, 2).await;
    let c = client(&proxy).await;
    for round in 0..3 {
        let inputs: Vec<i32> = (0..50).map(|i| round * 1000 + i).collect();
        let futures = inputs
            .iter()
            .map(|v| {
                let c = &c;
                async move {
                    if *v % 50 == 25 {
                        // The failing one: 1/0 at execution, isolated by its own Sync.
                        c.query_typed("select 1 / ($1::int4 - $1::int4)", &[(v, Type::INT4)])
                            .await
                    } else {
                        c.query_typed("select $1::int4, $1::int4 * 2", &[(v, Type::INT4)])
                            .await
                    }
                }
            })
            .collect();
        let results = tokio::time::timeout(HANG, join_all(futures))
            .await
            .expect("pipelined answers in time (a lost ReadyForQuery hangs the client)");
        for (v, result) in inputs.iter().zip(results) {
            if *v % 50 == 25 {
                let e = result.expect_err("division by zero");
                assert_eq!(sqlstate(&e), "22012", "{e}");
                continue;
            }
            let rows = result.unwrap_or_else(|e| panic!("query {v}: {e}"));
            assert_eq!(rows.len(), 1);
            assert_eq!(
                (rows[0].get::<_, i32>(0), rows[0].get::<_, i32>(1)),
                (*v, v * 2),
                "pipelined answer went to the wrong query"
            );
        }
    }
    assert!(outside_transaction(&c).await);
}

/// An error leaves the client usable; inside BEGIN the next statement gets 25P02 until
/// ROLLBACK. Pool size 1: the server must come back clean each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_then_recovery() {
    let proxy = proxy(PoolMode::Transaction, 1).await;
    let c = client(&proxy).await;

    let e = c
        .simple_query("select 1/0")
        .await
        .expect_err("simple error");
    assert_eq!(sqlstate(&e), "22012", "{e}");
    assert_eq!(
        simple_value(&c.simple_query("select 1").await.unwrap()).as_deref(),
        Some("1")
    );

    let e = c
        .query_typed("select 10 / $1::int4", &[(&0i32, Type::INT4)])
        .await
        .expect_err("extended error");
    assert_eq!(sqlstate(&e), "22012", "{e}");
    let row = c
        .query_typed_one("select 10 / $1::int4", &[(&5i32, Type::INT4)])
        .await
        .expect("works after the error");
    assert_eq!(row.get::<_, i32>(0), 2);

    // The failing statement in the middle of a multi-statement simple query.
    let e = c
        .simple_query("select 1; select 1/0; select 2")
        .await
        .expect_err("mid-batch error");
    assert_eq!(sqlstate(&e), "22012");
    assert!(outside_transaction(&c).await);

    c.simple_query("begin").await.expect("begin");
    let e = c
        .simple_query("select 1/0")
        .await
        .expect_err("error in transaction");
    assert_eq!(sqlstate(&e), "22012");
    let e = c
        .simple_query("select 1")
        .await
        .expect_err("aborted transaction");
    assert_eq!(sqlstate(&e), "25P02", "{e}");
    let e = c
        .query_typed("select $1::int4", &[(&1i32, Type::INT4)])
        .await
        .expect_err("aborted transaction, extended");
    assert_eq!(sqlstate(&e), "25P02", "{e}");
    c.simple_query("rollback").await.expect("rollback");
    assert!(outside_transaction(&c).await);

    // The only server connection is clean for another client.
    let other = client(&proxy).await;
    assert!(outside_transaction(&other).await);
    let row = other
        .query_typed_one("select $1::text", &[(&"fine", Type::TEXT)])
        .await
        .expect("other client");
    assert_eq!(row.get::<_, &str>(0), "fine");
}

/// Committed rows are visible to another client, uncommitted and rolled-back rows are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_is_visible_rollback_is_not() {
    let proxy = proxy(PoolMode::Transaction, 2).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    let table = unique_name("visibility");
    a.simple_query(&format!("create table {table} (v text)"))
        .await
        .expect("create table");
    let count = |c: &'static str| format!("select count(*) from {table} where v = '{c}'");

    a.simple_query("begin").await.unwrap();
    a.query_typed(
        &format!("insert into {table} values ($1)"),
        &[(&"committed", Type::TEXT)],
    )
    .await
    .expect("insert");
    let seen = simple_value(&b.simple_query(&count("committed")).await.unwrap());
    assert_eq!(
        seen.as_deref(),
        Some("0"),
        "uncommitted row visible to another client"
    );
    a.simple_query("commit").await.unwrap();
    let seen = simple_value(&b.simple_query(&count("committed")).await.unwrap());
    assert_eq!(seen.as_deref(), Some("1"), "committed row not visible");

    a.simple_query("begin").await.unwrap();
    a.simple_query(&format!("insert into {table} values ('rolled back')"))
        .await
        .unwrap();
    let mine = simple_value(&a.simple_query(&count("rolled back")).await.unwrap());
    assert_eq!(
        mine.as_deref(),
        Some("1"),
        "own insert visible inside the transaction"
    );
    a.simple_query("rollback").await.unwrap();
    for c in [&a, &b] {
        let seen = simple_value(&c.simple_query(&count("rolled back")).await.unwrap());
        assert_eq!(seen.as_deref(), Some("0"), "rolled-back row visible");
    }
    let direct = superuser_sql(&format!("select string_agg(v, ',') from {table}")).await;
    assert_eq!(direct, "committed");
}

/// Session mode: named prepared statements executed many times; at disconnect the
/// server is reset (DISCARD ALL) before the next client gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_prepared_statements_and_reset() {
    let proxy = proxy(PoolMode::Session, 1).await;
    let c = client(&proxy).await;
    let mul = c
        .prepare("select $1::int4 * $2::int4")
        .await
        .expect("prepare");
    let bang = c.prepare("select $1::text || '!'").await.expect("prepare");
    for i in 0..200i32 {
        let row = c.query_one(&mul, &[&i, &3i32]).await.expect("execute");
        assert_eq!(row.get::<_, i32>(0), i * 3);
        let row = c
            .query_one(&bang, &[&i.to_string()])
            .await
            .expect("execute");
        assert_eq!(row.get::<_, String>(0), format!("{i}!"));
    }
    let prepared = simple_value(
        &c.simple_query("select count(*) from pg_prepared_statements")
            .await
            .unwrap(),
    );
    assert_eq!(prepared.as_deref(), Some("2"));
    c.batch_execute("create temp table leak_check (i int); set statement_timeout = '123s'")
        .await
        .expect("session state");
    let pid1 = simple_value(&c.simple_query("select pg_backend_pid()").await.unwrap());
    drop((mul, bang, c));

    let next = client(&proxy).await;
    let probe = next
        .simple_query(
            "select pg_backend_pid(), (select count(*) from pg_prepared_statements), \
             to_regclass('pg_temp.leak_check') is null, current_setting('statement_timeout')",
        )
        .await
        .expect("probe");
    let row = &simple_rows(&probe)[0];
    assert_eq!(row[0], pid1, "pool size 1: the same backend, reset");
    assert_eq!(row[1].as_deref(), Some("0"), "prepared statements leaked");
    assert_eq!(row[2].as_deref(), Some("t"), "temp table leaked");
    assert_eq!(row[3].as_deref(), Some("0"), "SET leaked");
}

/// 200 clients, each on its own connection, over 5 server connections: 20 transactions
/// each, every answer exactly the client's own running sum, and PostgreSQL never sees
/// more than 5 backends of the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_over_five_servers() {
    const CLIENTS: i32 = 200;
    const ROUNDS: i32 = 20;
    // md5 towards the clients: SCRAM's 4096 PBKDF2 rounds cost the (unoptimized) test
    // client ~180 ms per login, 200 logins would eat the time budget. The proxy still
    // logs in to PostgreSQL with SCRAM.
    let mut config = app_config(PoolMode::Transaction, 5);
    config.auth_type = AuthType::Md5;
    let proxy = start_proxy(config).await;
    let table = unique_name("crosstalk");
    client(&proxy)
        .await
        .simple_query(&format!("create table {table} (client int, n int)"))
        .await
        .expect("create table");

    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut max = 0;
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                let n: u32 = superuser_sql(
                    "select count(*) from pg_stat_activity where usename = 'app_scram'",
                )
                .await
                .parse()
                .expect("a count");
                max = max.max(n);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (max, samples)
        })
    };

    let url = proxy.app_url();
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let (url, table) = (url.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await.expect("login");
            let insert = format!("insert into {table} (client, n) values ($1, $2)");
            let select = format!(
                "select $1::int4, sum(n)::int8, pg_backend_pid() from {table} where client = $1"
            );
            let mut pids = Vec::new();
            for n in 1..=ROUNDS {
                c.simple_query("BEGIN").await.expect("begin");
                c.query_typed(&insert, &[(&id, Type::INT4), (&n, Type::INT4)])
                    .await
                    .expect("insert");
                let row = c
                    .query_typed_one(&select, &[(&id, Type::INT4)])
                    .await
                    .expect("select");
                c.simple_query("COMMIT").await.expect("commit");
                let want = i64::from(n * (n + 1) / 2);
                assert_eq!(
                    (row.get::<_, i32>(0), row.get::<_, i64>(1)),
                    (id, want),
                    "client {id} round {n}: someone else's answer"
                );
                pids.push(row.get::<_, i32>(2));
            }
            pids
        }));
    }
    let mut backends = std::collections::BTreeSet::new();
    for t in tasks {
        let pids = tokio::time::timeout(HANG, t)
            .await
            .expect("clients finish in time")
            .expect("client task");
        backends.extend(pids);
    }
    done.store(true, Ordering::Relaxed);
    let (max, samples) = watcher.await.expect("watcher");
    assert!(samples > 3, "too few pg_stat_activity samples ({samples})");
    assert!(
        max <= 5,
        "PostgreSQL saw {max} backends of app_scram with pool size 5"
    );
    assert!(
        backends.len() <= 5,
        "clients ran on {} backends",
        backends.len()
    );
    let total = superuser_sql(&format!("select count(*), sum(n) from {table}")).await;
    let per_client = ROUNDS * (ROUNDS + 1) / 2;
    assert_eq!(
        total,
        format!("{}|{}", CLIENTS * ROUNDS, CLIENTS * per_client)
    );
}

/// An upstream user whose server password is md5: clients log in with SCRAM to the
/// proxy, the proxy with md5 to PostgreSQL, in both modes; a wrong password is 28P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_upstream_user() {
    let pg = shared_cluster();
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let config = config_for(&pg.url(MD5_USER, MD5_PASSWORD, APP_DB), mode, 2);
        let proxy = start_proxy(config).await;
        let c = connect(&proxy.url(MD5_USER, MD5_PASSWORD, APP_DB))
            .await
            .expect("md5 user logs in through pgweir");
        let who = simple_value(&c.simple_query("select current_user").await.unwrap());
        assert_eq!(who.as_deref(), Some(MD5_USER));
        let row = c
            .query_typed_one("select $1::int8 + 1", &[(&41i64, Type::INT8)])
            .await
            .expect("typed query");
        assert_eq!(row.get::<_, i64>(0), 42);
        let e = connect(&proxy.url(MD5_USER, "wrong", APP_DB))
            .await
            .expect_err("wrong password refused");
        assert_eq!(sqlstate(&e), "28P01", "{e}");
    }
}
