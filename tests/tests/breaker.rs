//! The circuit breaker per upstream and the server's own login errors, against real
//! PostgreSQL: a stopped server opens the breaker after a few failures, clients then
//! fail at once with 57P03 naming the upstream, and a probe notices the restart; a mute
//! server trips it within `server_connect_timeout`; a server's refusal of the login
//! reaches the client as the server said it and never trips the breaker; nor does a
//! flood of the client's own errors.

mod admin_support;
mod common;

use std::time::{Duration, Instant};

use admin_support::{admin_config, start, table};
use common::{closed_port, code, connect_with_task, describe, simple, superuser};
use weir_config::{DatabaseConfig, PoolMode};
use weir_tests::{
    app_config, config_for, connect, shared_cluster, start_proxy, APP_DB, SCRAM_PASSWORD,
    SCRAM_USER,
};

const CANNOT_CONNECT_NOW: &str = "57P03";
const CONNECTION_FAILURE: &str = "08006";

/// One query through a fresh client: `Ok` or the SQLSTATE and message, and how long.
async fn attempt(url: &str) -> (Result<(), (String, String)>, Duration) {
    let started = Instant::now();
    let result = match connect_with_task(url).await {
        Ok((c, _task)) => simple(&c, "select 1")
            .await
            .map(|_| ())
            .map_err(|e| (code(&e).to_owned(), describe(&e))),
        Err(e) => Err((code(&e).to_owned(), describe(&e))),
    };
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_fails_fast_with_57p03_and_a_restart_is_noticed_at_once() {
    // A private cluster: this test stops and starts it.
    let mut pg = common::private_cluster();
    let mut config = config_for(
        &pg.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB),
        PoolMode::Transaction,
        4,
    );
    config.server_connect_timeout = Duration::from_secs(2);
    let proxy = start_proxy(config).await;
    let url = proxy.app_url();
    assert!(attempt(&url).await.0.is_ok(), "served before the outage");
    // A client connected before the outage keeps its connection through it.
    let (kept, kept_task) = connect_with_task(&url).await.expect("login");

    tokio::task::block_in_place(|| pg.stop()).unwrap_or_else(|e| panic!("stop: {e}"));
    // The first failures are the connects' own (08006); then the breaker is open.
    let mut opened = false;
    for _ in 0..10 {
        match attempt(&url).await.0 {
            Err((c, _)) if c == CANNOT_CONNECT_NOW => {
                opened = true;
                break;
            }
            Err((c, m)) => assert_eq!(c, CONNECTION_FAILURE, "{m}"),
            Ok(()) => panic!("served with the server stopped"),
        }
    }
    assert!(opened, "the breaker opened within 10 failed attempts");
    let upstream = format!("127.0.0.1:{}", pg.port());
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let (result, took) = attempt(&url).await;
        let (c, m) = result.expect_err("still down");
        assert_eq!(c, CANNOT_CONNECT_NOW, "{m}");
        assert!(
            m.contains(&upstream) && m.contains("circuit breaker"),
            "{m}"
        );
        slowest = slowest.max(took);
    }
    // Generous for a loaded 2-core box (each attempt includes a client login); without
    // a breaker each waits for a connect attempt to fail.
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest refusal {slowest:?}"
    );
    // The kept client's requests fail as plain ERRORs (simple and extended protocol),
    // and its session goes on.
    for _ in 0..3 {
        let e = simple(&kept, "select 1").await.expect_err("down");
        assert_eq!(code(&e), CANNOT_CONNECT_NOW, "{}", describe(&e));
        assert_eq!(e.as_db_error().map(|d| d.severity()), Some("ERROR"));
        let e = kept
            .query_typed(
                "select $1::int",
                &[(&7i32, tokio_postgres::types::Type::INT4)],
            )
            .await
            .expect_err("down");
        assert_eq!(code(&e), CANNOT_CONNECT_NOW, "{}", describe(&e));
    }
    assert!(
        !kept_task.is_finished(),
        "the kept connection is still open"
    );

    tokio::task::block_in_place(|| pg.restart()).unwrap_or_else(|e| panic!("restart: {e}"));
    let back = Instant::now();
    let mut served = false;
    while back.elapsed() < Duration::from_secs(5) {
        if attempt(&url).await.0.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = back.elapsed();
    assert!(served, "nothing served within 5 s of the restart");
    // Probes run at most 400 ms (+20% jitter) apart.
    assert!(
        took < Duration::from_secs(2),
        "served {took:?} after the restart"
    );
    assert!(
        simple(&kept, "select 1").await.is_ok(),
        "the kept client is served"
    );
    let rows = kept
        .query_typed(
            "select $1::int",
            &[(&7i32, tokio_postgres::types::Type::INT4)],
        )
        .await
        .expect("extended protocol on the kept client");
    assert_eq!(rows[0].get::<_, i32>(0), 7);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_server_trips_the_breaker_within_the_connect_timeout_then_clients_fail_fast() {
    let (port, held) = common::mute_listener().await;
    let upstream = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{port}/app");
    let mut config = config_for(&upstream, PoolMode::Transaction, 4);
    config.server_connect_timeout = Duration::from_secs(1);
    let proxy = start_proxy(config).await;
    let url = proxy.app_url();

    // Three clients at once: each connect hangs until server_connect_timeout.
    let started = Instant::now();
    let first: Vec<_> = futures_join(&url, 3).await;
    for (result, _) in &first {
        let (c, m) = result.as_ref().expect_err("mute server");
        assert_eq!(c, CONNECTION_FAILURE, "{m}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    for _ in 0..5 {
        let (result, took) = attempt(&url).await;
        let (c, m) = result.expect_err("still mute");
        assert_eq!(c, CANNOT_CONNECT_NOW, "{m}");
        assert!(took < Duration::from_millis(500), "refused after {took:?}");
    }
    proxy.stop().await;
    held.abort();
}

/// `n` attempts at once.
async fn futures_join(url: &str, n: usize) -> Vec<(Result<(), (String, String)>, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { attempt(&url).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("attempt task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_errors_reach_the_client_as_the_server_said_them() {
    let pg = shared_cluster();
    // Wrong password in the config (a database logging in as a fixed user): PostgreSQL's
    // 28P01, again and again (never 57P03: a server that answers is up).
    let mut config = app_config(PoolMode::Transaction, 2);
    config.server_login_retry = Duration::ZERO;
    config.databases.insert(
        "badpw".to_owned(),
        DatabaseConfig {
            host: "127.0.0.1".to_owned(),
            port: pg.port(),
            dbname: Some(APP_DB.to_owned()),
            user: Some(SCRAM_USER.to_owned()),
            password: Some("not-the-password".to_owned()),
            ..DatabaseConfig::default()
        },
    );
    let proxy = start_proxy(config).await;
    let url = proxy.url(SCRAM_USER, SCRAM_PASSWORD, "badpw");
    for _ in 0..5 {
        let (c, m) = attempt(&url).await.0.expect_err("server refuses the login");
        assert_eq!(c, "28P01", "{m}");
        assert!(m.contains("password authentication failed for user"), "{m}");
    }
    proxy.stop().await;

    // A database missing on the server: 3D000 with the server's words.
    let mut config = app_config(PoolMode::Transaction, 2);
    config.databases.insert(
        "gone".to_owned(),
        DatabaseConfig {
            host: "127.0.0.1".to_owned(),
            port: pg.port(),
            dbname: Some("no_such_db".to_owned()),
            ..DatabaseConfig::default()
        },
    );
    let proxy = start_proxy(config).await;
    let (c, m) = attempt(&proxy.url(SCRAM_USER, SCRAM_PASSWORD, "gone"))
        .await
        .0
        .expect_err("no such database");
    assert_eq!(c, "3D000", "{m}");
    assert!(
        m.contains("no_such_db") && m.contains("does not exist"),
        "{m}"
    );

    // A role at its CONNECTION LIMIT: the server's 53300, which is the role's limit,
    // not the upstream's health.
    superuser(&format!("ALTER ROLE {SCRAM_USER} CONNECTION LIMIT 0")).await;
    let mut config = app_config(PoolMode::Transaction, 2);
    config.server_login_retry = Duration::ZERO;
    let limited = start_proxy(config).await;
    let result = attempt(&limited.app_url()).await.0;
    superuser(&format!("ALTER ROLE {SCRAM_USER} CONNECTION LIMIT -1")).await;
    let (c, m) = result.expect_err("role at its limit");
    assert_eq!(c, "53300", "{m}");
    assert!(m.contains("too many connections for role"), "{m}");
    limited.stop().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_client_errors_never_trips_the_breaker_and_show_breakers_tells() {
    let mut config = admin_config(PoolMode::Transaction, 2);
    let down = closed_port();
    config.databases.insert(
        "down".to_owned(),
        DatabaseConfig {
            host: "127.0.0.1".to_owned(),
            port: down,
            dbname: Some(APP_DB.to_owned()),
            ..DatabaseConfig::default()
        },
    );
    let pgweir = start(config, None).await;
    let client = connect(&pgweir.app_url()).await.expect("login");
    client
        .batch_execute("DROP TABLE IF EXISTS flood; CREATE TABLE flood (id int PRIMARY KEY); INSERT INTO flood VALUES (1)")
        .await
        .expect("table");
    for _ in 0..60 {
        let e = client
            .simple_query("INSERT INTO flood VALUES (1)")
            .await
            .expect_err("duplicate");
        assert_eq!(code(&e), "23505");
    }
    assert!(
        client.simple_query("select 1").await.is_ok(),
        "still served"
    );

    // The dead upstream opens its own breaker; the live one stays closed.
    let url = pgweir.url(SCRAM_USER, SCRAM_PASSWORD, "down");
    for _ in 0..4 {
        let _ = attempt(&url).await;
    }
    let breakers = table(&pgweir.admin_url(), "SHOW BREAKERS");
    assert_eq!(
        breakers.columns,
        [
            "upstream",
            "state",
            "since",
            "failures",
            "trips",
            "last_error",
            "next_probe_ms"
        ]
    );
    let live = format!("127.0.0.1:{}", shared_cluster().port());
    let dead = format!("127.0.0.1:{down}");
    assert_eq!(
        breakers.get("upstream", &live, "state").as_deref(),
        Some("closed")
    );
    assert_eq!(
        breakers.get("upstream", &live, "trips").as_deref(),
        Some("0")
    );
    assert_eq!(
        breakers.get("upstream", &dead, "state").as_deref(),
        Some("open")
    );
    assert_eq!(
        breakers.get("upstream", &dead, "trips").as_deref(),
        Some("1")
    );
    assert!(
        breakers
            .get("upstream", &dead, "last_error")
            .is_some_and(|e| e.contains("could not connect")),
        "{:?}",
        breakers.get("upstream", &dead, "last_error")
    );
    client
        .batch_execute("DROP TABLE flood")
        .await
        .expect("drop");
    pgweir.stop().await;
}
