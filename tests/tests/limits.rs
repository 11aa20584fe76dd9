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
    assert_eq!(backends, 1, "the reserve connection closes once the queue is empty");
    let databases = table(&pgweir.admin_url(), "SHOW DATABASES");
    assert_eq!(
        databases.get("name", APP_DB, "reserve_pool").as_deref(),
        Some("1")
    );
    sleeper.await.unwrap();
    pgweir.stop().await;
}
