//! Session state in transaction mode: settings a client makes (startup packet, `SET`,
//! `RESET`) follow it onto every server connection and never reach another client;
//! features that need a session (LISTEN, advisory locks, temp tables, ...) pin the client
//! to its server connection, or are refused with `session_features = "error"`.

mod clientkit;

use std::time::Duration;

use std::task::Poll;

use clientkit::{simple_value, sqlstate};
use tokio_postgres::AsyncMessage;
use weir_config::{PoolMode, SessionFeatures};
use weir_tests::{app_config, connect, start_proxy, TestProxy};

async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    simple_value(
        &c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    )
    .unwrap_or_default()
}

async fn tx_proxy(pool_size: u32) -> TestProxy {
    start_proxy(app_config(PoolMode::Transaction, pool_size)).await
}

async fn client(proxy: &TestProxy, options: &str) -> tokio_postgres::Client {
    let mut url = proxy.app_url();
    if !options.is_empty() {
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str(options);
    }
    connect(&url).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_each_client_through_extended_queries() {
    let proxy = tx_proxy(2).await;
    let a = client(&proxy, "application_name=alpha").await;
    let b = client(&proxy, "").await;
    let default_zone = value(&b, "show timezone").await;
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'; SET statement_timeout = '7s'")
        .await
        .expect("set");
    a.simple_query("SET search_path = nowhere, public")
        .await
        .expect("set");
    let sql = "select current_setting('TimeZone'), current_setting('statement_timeout'), \
               current_setting('search_path'), current_setting('application_name')";
    for _ in 0..6 {
        a.batch_execute("BEGIN").await.expect("begin");
        b.batch_execute("BEGIN").await.expect("begin");
        let ra = a.query_typed(sql, &[]).await.expect("a");
        let rb = b.query_typed(sql, &[]).await.expect("b");
        a.batch_execute("COMMIT").await.expect("commit");
        b.batch_execute("COMMIT").await.expect("commit");
        let got: Vec<String> = (0..4).map(|i| ra[0].get(i)).collect();
        assert_eq!(got, ["Asia/Tokyo", "7s", "nowhere, public", "alpha"]);
        let got: Vec<String> = (0..4).map(|i| rb[0].get(i)).collect();
        assert_eq!(got[0], default_zone);
        assert_eq!(got[1], "0");
        assert_ne!(got[2], "nowhere, public");
        assert_eq!(got[3], "");
    }
    proxy.stop().await;
}

/// `options=-c ...` and other startup parameters are applied on every server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_apply_on_every_server_connection() {
    let proxy = tx_proxy(2).await;
    let a = client(
        &proxy,
        "options=-c%20statement_timeout%3D4321%20-c%20DateStyle%3DSQL",
    )
    .await;
    let b = client(&proxy, "").await;
    for _ in 0..4 {
        assert_eq!(value(&a, "show statement_timeout").await, "4321ms");
        assert_eq!(value(&a, "show datestyle").await, "SQL, MDY");
        assert_eq!(value(&b, "show statement_timeout").await, "0");
        assert_eq!(value(&b, "show datestyle").await, "ISO, MDY");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_the_client_until_unlisten_and_notifications_arrive() {
    let proxy = tx_proxy(2).await;
    let url = proxy.app_url();
    let (listener, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        std::future::poll_fn(|cx| loop {
            match connection.poll_message(cx) {
                Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                    let _ = tx.send(n.payload().to_owned());
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
    });
    listener
        .batch_execute("LISTEN pgweir_chan")
        .await
        .expect("listen");
    let pid = value(&listener, "select pg_backend_pid()").await;
    let other = client(&proxy, "").await;
    for i in 0..3 {
        other
            .batch_execute(&format!("NOTIFY pgweir_chan, 'm{i}'"))
            .await
            .expect("notify");
        assert_eq!(
            value(&listener, "select pg_backend_pid()").await,
            pid,
            "pinned"
        );
    }
    for i in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("notification in time")
            .expect("channel open");
        assert_eq!(got, format!("m{i}"));
    }
    listener
        .batch_execute("UNLISTEN *")
        .await
        .expect("unlisten");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_and_temp_tables_pin_and_error_mode_refuses() {
    let proxy = tx_proxy(2).await;
    let a = client(&proxy, "").await;
    let b = client(&proxy, "").await;
    a.batch_execute("select pg_advisory_lock(4242)")
        .await
        .expect("lock");
    let pid = value(&a, "select pg_backend_pid()").await;
    // b keeps working on the other connection while a holds its lock and server.
    for _ in 0..3 {
        assert_ne!(value(&b, "select pg_backend_pid()").await, pid);
        assert_eq!(value(&a, "select pg_backend_pid()").await, pid);
    }
    a.batch_execute("select pg_advisory_unlock_all()")
        .await
        .expect("unlock");
    a.batch_execute("create temp table scratch (i int); insert into scratch values (1)")
        .await
        .expect("temp table");
    assert_eq!(value(&a, "select count(*) from scratch").await, "1");
    a.batch_execute("discard all").await.expect("discard");
    drop(a);

    let mut config = app_config(PoolMode::Transaction, 2);
    config.session_features = SessionFeatures::Error;
    let strict = start_proxy(config).await;
    let c = client(&strict, "").await;
    let e = c.batch_execute("LISTEN nope").await.expect_err("refused");
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    let db = e.as_db_error().expect("server-style error");
    assert!(db.message().contains("LISTEN"), "{}", db.message());
    assert!(db.hint().is_some_and(|h| h.contains("session")));
    let e = c
        .query_typed("select pg_advisory_lock(1)", &[])
        .await
        .expect_err("refused in the extended protocol too");
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert_eq!(value(&c, "select 1").await, "1", "the session goes on");
    strict.stop().await;
    proxy.stop().await;
}

/// Pitfall 9: a setting nobody configured for tracking (`work_mem`, a custom
/// `app.tenant`, `default_transaction_read_only`) follows its client and never reaches
/// another client on the same server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untracked_settings_never_leak_to_another_client() {
    let mut config = app_config(PoolMode::Transaction, 1);
    config.query_wait_timeout = Duration::from_secs(5);
    let proxy = start_proxy(config).await;
    let a = client(&proxy, "").await;
    let b = client(&proxy, "").await;
    let default_work_mem = value(&b, "show work_mem").await;
    a.batch_execute("SET work_mem = '7MB'; SET default_transaction_read_only = on")
        .await
        .expect("set");
    a.batch_execute("select set_config('app.tenant', 'a-tenant', false)")
        .await
        .expect("set_config");
    for _ in 0..3 {
        // One server connection, used by both in turn.
        assert_eq!(value(&a, "show work_mem").await, "7MB");
        assert_eq!(value(&a, "show default_transaction_read_only").await, "on");
        assert_eq!(
            value(&a, "select current_setting('app.tenant', true)").await,
            "a-tenant"
        );
        assert_eq!(value(&b, "show work_mem").await, default_work_mem);
        assert_eq!(value(&b, "show default_transaction_read_only").await, "off");
        assert_eq!(
            value(
                &b,
                "select coalesce(current_setting('app.tenant', true), '')"
            )
            .await,
            ""
        );
    }
    proxy.stop().await;
}

/// On a direct connection RESET goes back to what the startup packet asked for, not to
/// the server's default; pgweir sets startup settings with SET, so it puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_to_the_startup_value_in_both_modes() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = start_proxy(app_config(mode, 2)).await;
        let a = client(
            &proxy,
            "options=-c%20DateStyle%3DSQL%20-c%20lock_timeout%3D1234",
        )
        .await;
        a.batch_execute("SET DateStyle = 'German'; SET lock_timeout = 99")
            .await
            .expect("set");
        assert_eq!(value(&a, "show datestyle").await, "German, DMY");
        a.batch_execute("RESET DateStyle").await.expect("reset");
        assert_eq!(value(&a, "show datestyle").await, "SQL, MDY", "{mode:?}");
        assert_eq!(value(&a, "show lock_timeout").await, "99ms", "{mode:?}");
        a.batch_execute("RESET ALL").await.expect("reset all");
        assert_eq!(value(&a, "show lock_timeout").await, "1234ms", "{mode:?}");
        proxy.stop().await;
    }
}
