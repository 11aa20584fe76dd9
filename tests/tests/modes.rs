//! Operation modes: set in proxy.toml, by the admin console (`SET mode = '...'`) and over
//! HTTP with the admin token; `SHOW MODE` and `/metrics` tell which is in force.
//! `emergency` sheds new work that cannot be served at once; `high_performance` keeps
//! the pool warm at its upper bound; `resource_saver` halves it.

mod admin_support;
mod common;

use std::time::{Duration, Instant};

use admin_support::{admin_config, ok, start, table};
use common::{code, describe, must_connect, simple};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_config::{Mode, PoolMode, Secret};
use weir_tests::eventually;

/// One HTTP/1.1 request; returns the status code and body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("http connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("http answer in time")
        .expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_sheds_new_work_that_would_wait_and_the_mode_changes_at_runtime() {
    let mut config = admin_config(PoolMode::Transaction, 1);
    config.mode = Mode::Emergency;
    config.http_listen = Some(([127, 0, 0, 1], 0).into());
    config.admin_token = Some(Secret::Plain("s3cret-token".to_owned()));
    let pgweir = start(config, None).await;
    let http_addr = pgweir.http_addr.expect("http on");
    let mode = || {
        table(&pgweir.admin_url(), "SHOW MODE")
            .rows
            .first()
            .and_then(|r| r.first().cloned())
    };
    assert_eq!(mode().as_deref(), Some("emergency"));

    // The only server is held by A's transaction: B may not wait in emergency mode.
    let (a, _a_task) = must_connect(&pgweir.app_url()).await;
    simple(&a, "BEGIN").await.expect("begin");
    simple(&a, "SELECT 1").await.expect("holds the server");
    let (b, b_task) = must_connect(&pgweir.app_url()).await;
    let started = Instant::now();
    let e = simple(&b, "SELECT 2").await.expect_err("shed");
    assert_eq!(code(&e), "53300", "{}", describe(&e));
    assert!(
        describe(&e).contains("mode = emergency"),
        "{}",
        describe(&e)
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(!b_task.is_finished(), "B's session goes on");
    let (_, metrics) = http(http_addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("pgweir_mode{mode=\"emergency\"} 1"),
        "{metrics}"
    );

    // Over HTTP: refused without the token, taken with it.
    let path = "/api/v1/database/advanced/mode/normal";
    assert_eq!(http(http_addr, "POST", path, None).await.0, 401);
    assert_eq!(http(http_addr, "POST", path, Some("wrong")).await.0, 401);
    let (status, body) = http(
        http_addr,
        "POST",
        "/api/v1/database/advanced/mode/bogus",
        Some("s3cret-token"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(http_addr, "POST", path, Some("s3cret-token")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mode().as_deref(), Some("normal"));

    // In normal mode B waits for A's commit and is served.
    let waiter = tokio::spawn(async move { simple(&b, "SELECT 3").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    simple(&a, "COMMIT").await.expect("commit");
    waiter
        .await
        .expect("task")
        .expect("served once the server is free");

    // And by the console.
    ok(&pgweir.admin("SET mode = 'emergency'"));
    assert_eq!(mode().as_deref(), Some("emergency"));
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_performance_keeps_the_pool_warm_and_resource_saver_halves_it() {
    let mut config = admin_config(PoolMode::Transaction, 4);
    config.mode = Mode::HighPerformance;
    let pgweir = start(config, None).await;
    let (c, _task) = must_connect(&pgweir.app_url()).await;
    simple(&c, "SELECT 1").await.expect("query");
    let servers = || table(&pgweir.admin_url(), "SHOW SERVERS").rows.len();
    assert!(
        eventually(Duration::from_secs(10), || servers() == 4).await,
        "warmed to the pool size: {}",
        servers()
    );

    ok(&pgweir.admin("SET mode = 'resource_saver'"));
    // Four clients in transactions at once get at most two servers.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(must_connect(&pgweir.app_url()).await);
    }
    let mut held = Vec::new();
    for (c, _) in &clients[..2] {
        simple(c, "BEGIN").await.expect("begin");
        simple(c, "SELECT 1").await.expect("holds a server");
        held.push(c);
    }
    let pool_size = table(&pgweir.admin_url(), "SHOW POOLS");
    let active = pool_size.get("database", "app", "sv_active");
    assert_eq!(active.as_deref(), Some("2"));
    let (third, _) = &clients[2];
    let waiting = tokio::time::timeout(Duration::from_millis(500), simple(third, "SELECT 1")).await;
    assert!(
        waiting.is_err(),
        "a third transaction waits: the pool is 2 in resource_saver"
    );
    for c in held {
        simple(c, "COMMIT").await.expect("commit");
    }
    pgweir.stop().await;
}
