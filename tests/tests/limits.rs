//! Limits beyond the pool size: the reserve pool (extra connections once a client has
//! waited `reserve_pool_timeout`) and `max_connection_rate` (new connections per
//! second per source address, refused before authentication).

mod admin_support;

use std::time::{Duration, Instant};

use admin_support::{admin_config, start, table};
use weir_config::PoolMode;
use weir_tests::{connect, shared_cluster, APP_DB};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_waited_reserve_pool_timeout_gets_a_reserve_connection() {
    let mut config = admin_config(PoolMode::Transaction, 1);
    config.reserve_pool_size = 1;
    config.reserve_pool_timeout = Duration::from_millis(300);
    let pgweir = start(config, None).await;
    let busy = connect(&pgweir.app_url()).await.expect("login");
    let waiting = connect(&pgweir.app_url()).await.expect("login");
    // The only pooled connection is busy for 3 s.
    let sleeper = tokio::spawn(async move {
        busy.simple_query("select pg_sleep(3)")
            .await
            .expect("sleep");
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    waiting
        .simple_query("select 1")
        .await
        .expect("runs on the reserve");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(2500),
        "waited {waited:?}: the reserve opens after reserve_pool_timeout, not when the busy server frees"
    );
    let backends: u32 = shared_cluster()
        .psql(
            "postgres",
            &format!("select count(*) from pg_stat_activity where datname = '{APP_DB}' and backend_type = 'client backend' and usename <> 'postgres'"),
        )
        .unwrap()
        .parse()
        .unwrap();
    // Nobody waits any more: the reserve connection was closed when it came back.
    assert_eq!(
        backends, 1,
        "the reserve connection closes once the queue is empty"
    );
    let databases = table(&pgweir.admin_url(), "SHOW DATABASES");
    assert_eq!(
        databases.get("name", APP_DB, "reserve_pool").as_deref(),
        Some("1")
    );
    sleeper.await.unwrap();
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_rate_refuses_a_burst_from_one_address_before_login() {
    let mut config = admin_config(PoolMode::Transaction, 2);
    config.max_connection_rate = 3;
    let pgweir = start(config, None).await;
    let mut accepted = 0;
    let mut refused = Vec::new();
    for _ in 0..8 {
        match connect(&pgweir.app_url()).await {
            Ok(_) => accepted += 1,
            Err(e) => refused.push(e),
        }
    }
    // A burst of one second's worth (3), plus what refilled while the logins ran.
    assert!((3..=5).contains(&accepted), "{accepted} accepted");
    let first = refused.first().expect("some were refused");
    let db = first.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS
    );
    assert!(
        db.message().contains(
            "too many connection attempts from 127.0.0.1 (max_connection_rate = 3 per second)"
        ),
        "{}",
        db.message()
    );
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    connect(&pgweir.app_url())
        .await
        .expect("accepted again a second later");
    // SET changes it at runtime (the console login is a connection too: wait for tokens).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    admin_support::ok(&pgweir.admin("SET max_connection_rate = 0"));
    for _ in 0..8 {
        connect(&pgweir.app_url()).await.expect("no limit any more");
    }
    pgweir.stop().await;
}

/// This process's resident memory in KiB (the proxy runs in-process).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_pipeline_to_a_busy_server_is_not_buffered_by_the_proxy() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = admin_config(PoolMode::Transaction, 1);
    config.auth_type = weir_config::AuthType::Trust;
    let pgweir = start(config, None).await;
    let mut stream = tokio::net::TcpStream::connect(pgweir.addr).await.unwrap();
    let mut out = bytes::BytesMut::new();
    weir_wire::startup::put_startup_message(
        &mut out,
        [("user", weir_tests::SCRAM_USER), ("database", APP_DB)],
    );
    stream.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        match weir_wire::frame::split_frame(&mut buf, 1 << 20).unwrap() {
            Some(f) if f.tag() == b'Z' => break,
            Some(f) => assert_ne!(f.tag(), b'E', "login refused"),
            None => assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "closed"),
        }
    }
    let before = rss_kib();
    // The server is busy for 4 s with the first query; the client pipelines 512 MiB of
    // queries behind it without reading (one 64 KiB chunk written again and again).
    let mut first = bytes::BytesMut::new();
    weir_wire::build::put_query(&mut first, "select pg_sleep(4)");
    let mut chunk = bytes::BytesMut::new();
    let padding = "x".repeat(8000);
    while chunk.len() < 64 * 1024 {
        weir_wire::build::put_query(&mut chunk, &format!("select 1 /* {padding} */"));
    }
    let written = Arc::new(AtomicU64::new(0));
    let (_rd, mut wr) = stream.into_split();
    let writer = {
        let written = written.clone();
        tokio::spawn(async move {
            wr.write_all(&first).await.unwrap();
            for _ in 0..(512 * 16) {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
                written.fetch_add(chunk.len() as u64, Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let accepted = written.load(Relaxed);
    let grown = rss_kib().saturating_sub(before);
    writer.abort();
    eprintln!(
        "accepted {} KiB from the client, RSS grew {grown} KiB",
        accepted >> 10
    );
    // Loopback socket buffers hold a few MiB each way; an unbounded proxy would have
    // taken all 512 MiB in this time.
    assert!(
        accepted < 64 << 20,
        "the proxy accepted {} MiB from the client while the server was busy",
        accepted >> 20
    );
    assert!(grown < 64 * 1024, "RSS grew by {} MiB", grown / 1024);
    pgweir.stop().await;
}
