//! Pins in transaction mode (pitfalls 17 and 18): a client is pinned to its server
//! connection only while a session feature really outlives its transaction, the pool's
//! pins are capped by `max_pinned` so they never take every server, and the statement
//! that would pin past the cap fails with 53300 while the session goes on.

mod clientkit;

use std::time::{Duration, Instant};

use clientkit::{simple_value, sqlstate};
use tokio_postgres::Client;
use weir_config::PoolMode;
use weir_tests::{app_config, connect, start_proxy, TestProxy};

/// A short wait so a starved pool fails the test quickly instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

async fn proxy(pool_size: u32, max_pinned: Option<u32>) -> TestProxy {
    let mut config = app_config(PoolMode::Transaction, pool_size);
    config.query_wait_timeout = WAIT;
    config.max_pinned = max_pinned;
    start_proxy(config).await
}

async fn clients(proxy: &TestProxy, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(connect(&proxy.app_url()).await.expect("connect"));
    }
    out
}

async fn value(c: &Client, sql: &str) -> String {
    simple_value(
        &c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    )
    .unwrap_or_default()
}

/// A new client gets a server and its answer in under a second: nothing starves it.
async fn assert_pool_free(proxy: &TestProxy, why: &str) {
    let c = connect(&proxy.app_url()).await.expect("connect");
    let started = Instant::now();
    let answer = c.simple_query("select 1").await;
    let took = started.elapsed();
    assert!(answer.is_ok(), "{why}: {answer:?}");
    assert!(
        took < Duration::from_secs(1),
        "{why}: answered after {took:?}"
    );
}

/// Ten long-lived pooled connections each create an `ON COMMIT DROP` temp table once
/// (inside a transaction and in autocommit): the pool of ten stays free for an eleventh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_commit_drop_temp_tables_do_not_pin() {
    let proxy = proxy(10, None).await;
    let pooled = clients(&proxy, 10).await;
    for (i, c) in pooled.iter().enumerate() {
        let sql = if i % 2 == 0 {
            "BEGIN; CREATE TEMP TABLE t (a int) ON COMMIT DROP; INSERT INTO t VALUES (1); COMMIT"
        } else {
            "CREATE TEMP TABLE t (a int) ON COMMIT DROP"
        };
        c.batch_execute(sql).await.expect("temp table");
    }
    assert_pool_free(&proxy, "after ten ON COMMIT DROP temp tables").await;
    for c in &pooled {
        assert_eq!(value(c, "select 1").await, "1");
    }
    proxy.stop().await;
}

/// Temp objects created and dropped within one transaction, a LISTEN rolled back, a
/// failed CREATE TEMP TABLE: none outlives its transaction, so none keeps a pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_gone_by_the_transactions_end_does_not_pin() {
    // Two servers, both may be pinned: any pin left behind starves the third client.
    let proxy = proxy(2, Some(2)).await;
    let [a, b]: [Client; 2] = clients(&proxy, 2).await.try_into().ok().unwrap();
    a.batch_execute(
        "BEGIN; CREATE TEMP TABLE x (a int); INSERT INTO x VALUES (1); DROP TABLE x; COMMIT",
    )
    .await
    .expect("create and drop");
    b.batch_execute("BEGIN; LISTEN chan; ROLLBACK")
        .await
        .expect("listen rolled back");
    assert_pool_free(&proxy, "after create-and-drop and a rolled-back LISTEN").await;
    let e = a
        .batch_execute("CREATE TEMP TABLE y (a no_such_type)")
        .await
        .expect_err("bad type");
    assert_eq!(sqlstate(&e), "42704", "{e}");
    b.batch_execute("select pg_advisory_lock(7); select pg_advisory_unlock(7)")
        .await
        .expect("lock and unlock");
    assert_pool_free(&proxy, "after a failed CREATE TEMP and an unlocked lock").await;
    proxy.stop().await;
}

/// A temp table that outlives its transaction pins until it is dropped in a later one;
/// while both servers are pinned a third client waits, then gets through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_temp_table_pins_until_dropped() {
    let proxy = proxy(2, Some(2)).await;
    let [a, b]: [Client; 2] = clients(&proxy, 2).await.try_into().ok().unwrap();
    a.batch_execute("CREATE TEMP TABLE keep (a int)")
        .await
        .expect("temp");
    b.batch_execute("BEGIN; CREATE TEMP TABLE keep (a int); COMMIT")
        .await
        .expect("temp in a transaction");
    let pid = value(&a, "select pg_backend_pid()").await;
    assert_eq!(value(&a, "select count(*) from keep").await, "0");
    assert_eq!(value(&a, "select pg_backend_pid()").await, pid, "pinned");

    let c = connect(&proxy.app_url()).await.expect("connect");
    let e = c
        .simple_query("select 1")
        .await
        .expect_err("no server free");
    assert_eq!(sqlstate(&e), "57014", "{e}");

    a.batch_execute("DROP TABLE keep").await.expect("drop");
    b.batch_execute("BEGIN; DROP TABLE keep; COMMIT")
        .await
        .expect("drop");
    assert_pool_free(&proxy, "after both temp tables were dropped").await;
    proxy.stop().await;
}

/// Pool of 3, default `max_pinned` (pool size - 1 = 2): a third pin fails with 53300
/// naming the cap and the remedy, fails its transaction as PostgreSQL would, and the
/// session goes on; a fourth, unpinned client still gets a server at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_are_capped_so_they_never_take_every_server() {
    let proxy = proxy(3, None).await;
    let [a, b, c]: [Client; 3] = clients(&proxy, 3).await.try_into().ok().unwrap();
    a.batch_execute("LISTEN one").await.expect("first pin");
    b.batch_execute("select pg_advisory_lock(11)")
        .await
        .expect("second pin");

    let e = c
        .batch_execute("LISTEN three")
        .await
        .expect_err("over the cap");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    let db = e.as_db_error().expect("a server-style error");
    assert!(db.message().contains("max_pinned = 2"), "{}", db.message());
    assert!(
        db.hint()
            .is_some_and(|h| h.contains("pool_mode = \"session\"")),
        "{:?}",
        db.hint()
    );
    // Inside a transaction block the error fails the transaction, as PostgreSQL would.
    c.batch_execute("BEGIN").await.expect("begin");
    let e = c
        .query_typed("select pg_advisory_lock(12)", &[])
        .await
        .expect_err("over the cap, extended protocol");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    let e = c.simple_query("select 1").await.expect_err("aborted block");
    assert_eq!(sqlstate(&e), "25P02", "{e}");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(value(&c, "select 1").await, "1", "the session goes on");
    assert_pool_free(&proxy, "two pinned of three").await;

    // Released pins free their slots: the server is asked right after the UNLISTEN is
    // answered, so the slot frees within a round trip of it.
    a.batch_execute("UNLISTEN *").await.expect("unlisten");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match c.batch_execute("LISTEN three").await {
            Ok(()) => break,
            Err(e) if sqlstate(&e) == "53300" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("a slot is free again after UNLISTEN *: {e}"),
        }
    }
    b.batch_execute("select pg_advisory_unlock_all()")
        .await
        .expect("unlock");
    proxy.stop().await;
}

/// One server and no pins allowed, so a session feature hidden from the proxy would be
/// refused if seen and slip by if not; client `a` has `standard_conforming_strings`
/// off, `b` looks at the shared server.
async fn strings_off_on_one_unpinnable_server() -> (TestProxy, Client, Client) {
    let proxy = proxy(1, None).await;
    let [a, b]: [Client; 2] = clients(&proxy, 2).await.try_into().ok().unwrap();
    a.batch_execute("SET standard_conforming_strings = off")
        .await
        .expect("set");
    (proxy, a, b)
}

/// With `standard_conforming_strings = off` a backslash escapes a quote inside `'...'`:
/// `'x\''` is one string, so the LISTEN after it is a statement of its own and must pin
/// (found by fuzzing: the proxy lexed standard strings and saw the LISTEN as part of a
/// string, so the listening server went back to the pool for other clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_after_a_backslash_escaped_quote_still_pins() {
    let (_proxy, a, b) = strings_off_on_one_unpinnable_server().await;
    let e = a
        .batch_execute(r"SELECT 'x\''; LISTEN jobs; SELECT 'y' --'")
        .await
        .expect_err("the LISTEN would pin the only server");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    assert_eq!(
        value(&b, "select count(*) from pg_listening_channels()").await,
        "0",
        "no LISTEN reached the shared server"
    );
    // With standard strings the same bytes are one string after the SELECT, as before.
    a.batch_execute("SET standard_conforming_strings = on")
        .await
        .expect("set");
    a.batch_execute(r"SELECT 'x\'' --'")
        .await
        .expect("one statement, one string");
    assert_eq!(value(&b, "select 1").await, "1");
}

/// The extended protocol's Parse reads its text as the simple protocol does: with
/// `standard_conforming_strings = off`, `'x\''` is one string, so the advisory lock
/// after it is a real call and must pin (Parse was scanned with standard strings, which
/// saw the call inside a string and let the locked server go back to the pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parsed_call_after_a_backslash_escaped_quote_still_pins() {
    let (_proxy, a, b) = strings_off_on_one_unpinnable_server().await;
    let e = a
        .query(r"SELECT 'x\'', pg_advisory_lock(7) --'", &[])
        .await
        .expect_err("the advisory lock would pin the only server");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    assert_eq!(
        value(
            &b,
            "select count(*) from pg_locks where locktype = 'advisory'"
        )
        .await,
        "0",
        "no advisory lock was taken on the shared server"
    );
}
