//! Faults against the real proxy and PostgreSQL 15: a server that is down or mute, a
//! backend killed mid-query, a client vanishing mid-transaction, session reset, pool
//! wait and idle timeouts, and cancel requests (including a late one that must not hit
//! the next client's query on the same server connection).

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, RawClient};
use common::{
    code, connect_with_task, connection_result, describe, eventually_async, must_connect, simple,
    superuser, value, wait_until_running,
};
use weir_config::PoolMode;
use weir_tests::{app_config, config_for, start_proxy, APP_DB, SCRAM_PASSWORD, SCRAM_USER};

const CONNECTION_FAILURE: &str = "08006";
const QUERY_CANCELED: &str = "57014";

/// Backends of the test user that sit idle inside a transaction.
async fn idle_in_transaction_backends() -> String {
    superuser(&format!(
        "select count(*) from pg_stat_activity where usename = '{SCRAM_USER}' and state like 'idle in transaction%'"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_checkout_gets_08006_quickly_and_the_proxy_survives() {
    let port = common::closed_port();
    let upstream = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{port}/app");
    let mut config = config_for(&upstream, PoolMode::Transaction, 2);
    config.server_connect_timeout = Duration::from_secs(2);
    let proxy = start_proxy(config).await;

    for attempt in 1..=3 {
        let started = Instant::now();
        let Err(e) = connect_with_task(&proxy.app_url()).await else {
            panic!("attempt {attempt}: logged in with the server down");
        };
        let took = started.elapsed();
        assert_eq!(
            code(&e),
            CONNECTION_FAILURE,
            "attempt {attempt}: {}",
            describe(&e)
        );
        let db_error = e.as_db_error().expect("a database error");
        assert_eq!(db_error.severity(), "FATAL");
        assert!(
            db_error
                .message()
                .starts_with("server connection unavailable"),
            "{}",
            describe(&e)
        );
        assert!(
            took < Duration::from_secs(4),
            "attempt {attempt}: took {took:?}, more than server_connect_timeout (2 s) allows"
        );
    }
    // Still accepting and answering at the protocol level.
    let mut c = RawClient::connect(proxy.addr).await;
    c.send(&raw::ssl_request()).await;
    assert_eq!(c.read_byte().await, b'N');
    drop(c);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_server_fails_with_08006_after_server_connect_timeout() {
    // Accepts TCP connections and never says a word: login must time out.
    let (port, held) = common::mute_listener().await;
    let upstream = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{port}/app");
    let mut config = config_for(&upstream, PoolMode::Transaction, 2);
    config.server_connect_timeout = Duration::from_secs(2);
    let proxy = start_proxy(config).await;

    let started = Instant::now();
    let Err(e) = connect_with_task(&proxy.app_url()).await else {
        panic!("logged in through a server that never answers");
    };
    let took = started.elapsed();
    assert_eq!(code(&e), CONNECTION_FAILURE, "{}", describe(&e));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "failed after {took:?}, wanted about server_connect_timeout (2 s)"
    );
    proxy.stop().await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_query_fails_only_that_client_and_the_pool_recovers() {
    // One server connection: the others can only be served if the dead one is replaced.
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let (b, _b_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&b, "select 1").await, "1");

    let (a, _a_task) = must_connect(&proxy.app_url()).await;
    let sleeper = tokio::spawn(async move {
        let r = a.simple_query("select pg_sleep(30)").await;
        (r, a)
    });
    let victim = wait_until_running("select pg_sleep(30)").await;
    let killed = superuser(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where query like 'select pg_sleep(30)%' and pid <> pg_backend_pid()",
    )
    .await;
    assert_eq!(killed, "t");
    let killed_at = Instant::now();

    let (r, a) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the killed query returned quickly")
        .expect("query task");
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    let e = r.expect_err("the query's backend was terminated");
    // PostgreSQL's own FATAL, relayed.
    assert_eq!(code(&e), "57P01", "{}", describe(&e));
    assert!(
        eventually_async(Duration::from_secs(5), || async { a.is_closed() }).await,
        "the client whose server died is closed"
    );

    // B, connected all along, is served by a new server connection.
    assert_eq!(value(&b, "select 2").await, "2");
    let b_pid = value(&b, "select pg_backend_pid()").await;
    assert_ne!(b_pid, victim, "served by the terminated backend");
    // And so are new clients.
    let (c, _c_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&c, "select 3").await, "3");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_leaves_no_locks_rows_or_idle_transaction() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let (setup, _setup_task) = must_connect(&proxy.app_url()).await;
    simple(&setup, "create table t_dirty (i int)")
        .await
        .expect("create table");
    drop(setup);

    let (a, a_task) = must_connect(&proxy.app_url()).await;
    simple(&a, "begin").await.expect("begin");
    simple(&a, "insert into t_dirty values (1), (2)")
        .await
        .expect("insert");
    simple(&a, "select pg_advisory_xact_lock(42)")
        .await
        .expect("lock");
    let a_pid = value(&a, "select pg_backend_pid()").await;
    assert_eq!(
        superuser(
            "select count(*) from pg_locks where locktype = 'advisory' and objid = 42 and granted"
        )
        .await,
        "1",
        "A holds the advisory lock"
    );

    // Gone without Terminate: the socket just closes.
    a_task.abort();
    drop(a);

    let (b, _b_task) = must_connect(&proxy.app_url()).await;
    simple(&b, "begin").await.expect("begin");
    simple(&b, "set local lock_timeout = '10s'")
        .await
        .expect("set local");
    let status = value(&b, "select pg_advisory_xact_lock(42)::text").await;
    assert_eq!(status, "", "B takes the advisory lock A held");
    assert_eq!(
        value(&b, "select count(*) from t_dirty").await,
        "0",
        "B sees A's uncommitted rows: A's server connection was reused dirty"
    );
    assert_ne!(value(&b, "select pg_backend_pid()").await, a_pid);
    simple(&b, "commit").await.expect("commit");

    let clean = eventually_async(Duration::from_secs(5), || async {
        idle_in_transaction_backends().await == "0"
            && superuser(&format!(
                "select count(*) from pg_stat_activity where pid = {a_pid}"
            ))
            .await
                == "0"
    })
    .await;
    assert!(clean, "A's backend lingers (idle in transaction or alive)");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_the_server_connection_between_clients() {
    let proxy = start_proxy(app_config(PoolMode::Session, 1)).await;
    let (a, a_task) = must_connect(&proxy.app_url()).await;
    simple(
        &a,
        "create temp table t_tmp (i int); insert into t_tmp values (1)",
    )
    .await
    .expect("temp table");
    simple(&a, "set application_name = 'dirty_a'")
        .await
        .expect("set");
    simple(&a, "set search_path = pg_temp, public")
        .await
        .expect("set");
    simple(&a, "prepare p as select 1").await.expect("prepare");
    let a_pid = value(&a, "select pg_backend_pid()").await;
    drop(a);
    connection_result(a_task, Duration::from_secs(5))
        .await
        .expect("clean close");

    let (b, _b_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(
        value(&b, "select pg_backend_pid()").await,
        a_pid,
        "pool size 1: B must get A's server connection back"
    );
    assert_eq!(
        value(
            &b,
            "select count(*) from pg_class where relname = 't_tmp' and relpersistence = 't'"
        )
        .await,
        "0",
        "A's temp table survived into B's session"
    );
    let e = simple(&b, "select * from t_tmp")
        .await
        .expect_err("t_tmp must not exist");
    assert_eq!(code(&e), "42P01", "{}", describe(&e));
    assert_ne!(value(&b, "show application_name").await, "dirty_a");
    assert_ne!(value(&b, "show search_path").await, "pg_temp, public");
    assert_eq!(
        value(&b, "select count(*) from pg_prepared_statements").await,
        "0"
    );
    // B holds the server connection (session mode): close it rather than make stop() wait.
    drop(b);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_gets_57014_while_the_only_server_is_held() {
    let mut config = app_config(PoolMode::Transaction, 1);
    config.query_wait_timeout = Duration::from_secs(1);
    let proxy = start_proxy(config).await;
    let (a, _a_task) = must_connect(&proxy.app_url()).await;
    let (b, _b_task) = must_connect(&proxy.app_url()).await;

    // A holds the only server: transaction mode releases it only at ReadyForQuery 'I'.
    simple(&a, "begin").await.expect("begin");
    assert_eq!(value(&a, "select 1").await, "1");

    let started = Instant::now();
    let e = simple(&b, "select 1")
        .await
        .expect_err("no server can be free for B");
    let waited = started.elapsed();
    assert_eq!(code(&e), QUERY_CANCELED, "{}", describe(&e));
    let db_error = e.as_db_error().expect("a database error");
    assert!(
        db_error.message().starts_with("query_wait_timeout"),
        "{}",
        describe(&e)
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "B waited {waited:?}, wanted about query_wait_timeout (1 s)"
    );

    // A is unaffected; once it commits, a new client gets the server.
    assert_eq!(value(&a, "select 2").await, "2");
    simple(&a, "commit").await.expect("commit");
    let (c, _c_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&c, "select 3").await, "3");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_closes_with_25p03_and_frees_the_server() {
    let mut config = app_config(PoolMode::Transaction, 1);
    config.idle_transaction_timeout = Duration::from_secs(1);
    // A pool of one allows no pin by default; the temp table below may pin its client.
    config.max_pinned = Some(1);
    let proxy = start_proxy(config).await;

    // Busy inside a transaction (never idle 1 s at a time) is fine.
    let (busy, _busy_task) = must_connect(&proxy.app_url()).await;
    simple(&busy, "begin").await.expect("begin");
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(value(&busy, &format!("select {i}")).await, i.to_string());
    }
    simple(&busy, "commit").await.expect("commit");

    let (idle, idle_task) = must_connect(&proxy.app_url()).await;
    simple(&idle, "begin").await.expect("begin");
    simple(&idle, "create temp table t_idle (i int)")
        .await
        .expect("create");
    let started = Instant::now();
    let e = connection_result(idle_task, Duration::from_secs(5))
        .await
        .expect_err("closed with an error");
    let took = started.elapsed();
    assert_eq!(code(&e), "25P03", "{}", describe(&e));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}, wanted about 1 s"
    );
    assert!(simple(&idle, "select 1").await.is_err());

    // Its server connection was closed (never reused mid-transaction); the pool goes on.
    let (next, _next_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(
        value(
            &next,
            "select count(*) from pg_class where relname = 't_idle'"
        )
        .await,
        "0"
    );
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            idle_in_transaction_backends().await == "0"
        })
        .await,
        "an idle-in-transaction backend lingers"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_idle_clients_with_57p05() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.client_idle_timeout = Duration::from_secs(1);
    let proxy = start_proxy(config).await;

    let (idle, idle_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&idle, "select 1").await, "1");
    let started = Instant::now();

    // A client that is never idle for 1 s at a stretch stays.
    let (busy, _busy_task) = must_connect(&proxy.app_url()).await;
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(value(&busy, &format!("select {i}")).await, i.to_string());
    }

    let e = connection_result(idle_task, Duration::from_secs(5))
        .await
        .expect_err("closed with an error");
    assert_eq!(code(&e), "57P05", "{}", describe(&e));
    assert!(
        e.as_db_error().is_some_and(|d| d.severity() == "FATAL"),
        "{}",
        describe(&e)
    );
    // Closed long before the busy loop ended (2.4 s), not at the end of it.
    assert!(idle.is_closed());
    assert!(started.elapsed() >= Duration::from_millis(900));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_the_proxy_stops_a_running_query_in_both_modes() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = start_proxy(app_config(mode, 2)).await;
        let (client, _task) = must_connect(&proxy.app_url()).await;
        let token = client.cancel_token();
        let sleeper = tokio::spawn(async move {
            let r = client.simple_query("select pg_sleep(20)").await;
            (r, client)
        });
        wait_until_running("select pg_sleep(20)").await;
        let cancelled_at = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            token.cancel_query(tokio_postgres::NoTls),
        )
        .await
        .expect("cancel sent in time")
        .expect("cancel sent");
        let (r, client) = tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("the query ended soon after the cancel")
            .expect("query task");
        let e = r.expect_err("the query was cancelled");
        assert_eq!(code(&e), QUERY_CANCELED, "{mode}: {}", describe(&e));
        assert!(cancelled_at.elapsed() < Duration::from_secs(5), "{mode}");
        // The session goes on.
        assert_eq!(value(&client, "select 1").await, "1", "{mode}");
        // A session-mode client holds its server: close it rather than make stop() wait.
        drop(client);
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_cancel_does_not_hit_the_next_clients_query_on_the_same_server() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let (a, _a_task) = must_connect(&proxy.app_url()).await;
    let a_pid = value(&a, "select pg_backend_pid()").await;
    let late = a.cancel_token();

    let (b, _b_task) = must_connect(&proxy.app_url()).await;
    let sleeper = tokio::spawn(async move {
        let r = b.simple_query("select pg_sleep(3)").await;
        (r, b)
    });
    let b_pid = wait_until_running("select pg_sleep(3)").await;
    assert_eq!(
        b_pid, a_pid,
        "pool size 1: B runs on A's former server connection"
    );

    // A's query finished long ago; its cancel must not reach B's query.
    tokio::time::timeout(
        Duration::from_secs(10),
        late.cancel_query(tokio_postgres::NoTls),
    )
    .await
    .expect("cancel sent in time")
    .expect("cancel sent");
    let (r, b) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("B's query finished")
        .expect("query task");
    if let Err(e) = r {
        panic!("A's late cancel hit B's query: {}", describe(&e));
    }
    assert_eq!(value(&b, "select 1").await, "1");
    assert_eq!(value(&a, "select 2").await, "2");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_client_idle_timeout_closes_idle_clients_with_57p05() {
    let mut config = app_config(PoolMode::Session, 2);
    config.client_idle_timeout = Duration::from_secs(1);
    let proxy = start_proxy(config).await;
    // In session mode the client holds its server connection from its first query on.
    let (idle, idle_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&idle, "select 1").await, "1");
    let e = connection_result(idle_task, Duration::from_secs(5))
        .await
        .expect_err("closed with an error");
    assert_eq!(code(&e), "57P05", "{}", describe(&e));
    // Its server connection was reset and returned: another client gets it.
    let (next, _next_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&next, "select 2").await, "2");
    drop(next);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pooled_server_killed_is_replaced_at_checkout() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let (client, _task) = must_connect(&proxy.app_url()).await;
    let first = value(&client, "select pg_backend_pid()").await;
    // The pooled, idle server connection dies (PostgreSQL sends FATAL 57P01 and closes).
    assert_eq!(
        superuser(&format!("select pg_terminate_backend({first})")).await,
        "t"
    );
    let gone = eventually_async(Duration::from_secs(5), || async {
        superuser(&format!(
            "select count(*) from pg_stat_activity where pid = {first}"
        ))
        .await
            == "0"
    })
    .await;
    assert!(gone, "backend {first} did not exit");
    // The next transaction must not see it: the dead connection is found at checkout.
    let second = simple(&client, "select pg_backend_pid()")
        .await
        .unwrap_or_else(|e| panic!("query after an idle server died: {}", describe(&e)));
    let second = second
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row");
    assert_ne!(second, first);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_gets_through_while_the_pool_is_saturated() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let (a, _a_task) = must_connect(&proxy.app_url()).await;
    let (b, _b_task) = must_connect(&proxy.app_url()).await;
    let token = a.cancel_token();
    let sleeper = tokio::spawn(async move { a.simple_query("select pg_sleep(20)").await });
    wait_until_running("select pg_sleep(20)").await;
    // B queues for the only server connection.
    let waiter = tokio::spawn(async move {
        let r = b.simple_query("select 'b'").await;
        (r, b)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "B must be waiting for the busy server"
    );

    tokio::time::timeout(
        Duration::from_secs(10),
        token.cancel_query(tokio_postgres::NoTls),
    )
    .await
    .expect("cancel sent in time")
    .expect("cancel sent");
    let r = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("A's query cancelled promptly")
        .expect("task");
    let e = r.expect_err("A's query was cancelled");
    assert_eq!(code(&e), QUERY_CANCELED, "{}", describe(&e));
    let (r, _b) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("B served once A's server was free")
        .expect("task");
    r.unwrap_or_else(|e| panic!("B: {}", describe(&e)));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_fails_clients_with_08006_then_the_pool_recovers() {
    // A private cluster: this test stops and restarts it.
    let mut pg = common::private_cluster();
    let mut config = config_for(
        &pg.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB),
        PoolMode::Transaction,
        2,
    );
    config.server_connect_timeout = Duration::from_secs(2);
    config.server_login_retry = Duration::from_millis(500);
    let proxy = start_proxy(config).await;
    let (a, _a_task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&a, "select 1").await, "1");

    tokio::task::block_in_place(|| pg.stop()).unwrap_or_else(|e| panic!("stop: {e}"));
    // A's pooled server connection is dead and no new one can be made.
    let started = Instant::now();
    let e = simple(&a, "select 2")
        .await
        .expect_err("no server to run it on");
    assert_eq!(code(&e), CONNECTION_FAILURE, "{}", describe(&e));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // A new client may log in (the server's parameters are known) but cannot query.
    match connect_with_task(&proxy.app_url()).await {
        Err(e) => assert_eq!(code(&e), CONNECTION_FAILURE, "{}", describe(&e)),
        Ok((c, _task)) => {
            let e = simple(&c, "select 3")
                .await
                .expect_err("no server to run it on");
            assert_eq!(code(&e), CONNECTION_FAILURE, "{}", describe(&e));
        }
    }

    tokio::task::block_in_place(|| pg.restart()).unwrap_or_else(|e| panic!("restart: {e}"));
    let url = proxy.app_url();
    let recovered = eventually_async(Duration::from_secs(10), || async {
        match connect_with_task(&url).await {
            Ok((c, _task)) => simple(&c, "select 4").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        recovered,
        "no client served within 10 s of the server's restart"
    );
    proxy.stop().await;
}
