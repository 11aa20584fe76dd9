//! Parked idle clients (`crates/weir-proxy/src/park.rs`): a client idle after login, or
//! idle for a whole sweep later, gives up its task and waits as a small record; what it
//! sends, a shutdown and its idle timeout all still reach it, and its session (settings,
//! prepared statements) is as it left it.

mod common;

use std::time::{Duration, Instant};

use common::{code, connection_result, describe, must_connect, value};
use weir_config::PoolMode;
use weir_tests::{app_config, start_proxy, TestProxy};

/// Long enough for a sweep or two (one per second) on a loaded machine.
const PARK_WITHIN: Duration = Duration::from_secs(10);

async fn parked_reaches(proxy: &TestProxy, n: usize) -> bool {
    weir_tests::eventually(PARK_WITHIN, || proxy.state.parked_clients() == n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_park_and_resume_with_their_session_intact() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(must_connect(&proxy.app_url()).await);
    }
    assert!(
        parked_reaches(&proxy, 20).await,
        "20 idle clients park after login: {} parked",
        proxy.state.parked_clients()
    );

    // Each speaks: it runs, with a setting and a prepared statement of its own.
    let mut statements = Vec::new();
    for (i, (client, _)) in clients.iter().enumerate() {
        assert_eq!(value(client, &format!("select {i}")).await, i.to_string());
        client
            .batch_execute(&format!("set application_name = 'parked-{i}'"))
            .await
            .expect("set");
        statements.push(client.prepare("select $1::int + 1").await.expect("prepare"));
    }
    // Busy clients are not parked; idle again for a sweep, they park again.
    assert!(
        parked_reaches(&proxy, 20).await,
        "clients idle again park again: {} parked",
        proxy.state.parked_clients()
    );

    for (i, ((client, _), statement)) in clients.iter().zip(&statements).enumerate() {
        let n = i32::try_from(i).expect("small");
        let row = client.query_one(statement, &[&n]).await.expect("execute");
        assert_eq!(
            row.get::<_, i32>(0),
            n + 1,
            "its prepared statement survived"
        );
        assert_eq!(
            value(client, "show application_name").await,
            format!("parked-{i}"),
            "its setting survived"
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_is_told_of_the_shutdown() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    let (client, task) = must_connect(&proxy.app_url()).await;
    assert!(parked_reaches(&proxy, 1).await, "the idle client parks");
    proxy.stop().await;
    let e = connection_result(task, Duration::from_secs(10))
        .await
        .expect_err("closed with an error");
    assert_eq!(code(&e), "57P01", "{}", describe(&e));
    assert!(client.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_still_times_out() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.client_idle_timeout = Duration::from_secs(2);
    let proxy = start_proxy(config).await;
    let started = Instant::now();
    let (client, task) = must_connect(&proxy.app_url()).await;
    assert!(parked_reaches(&proxy, 1).await, "the idle client parks");
    let e = connection_result(task, Duration::from_secs(15))
        .await
        .expect_err("closed with an error");
    assert_eq!(code(&e), "57P05", "{}", describe(&e));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "not before its timeout: {after:?}"
    );
    assert!(client.is_closed());
    assert_eq!(proxy.state.parked_clients(), 0, "the record is gone");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_clients_park_before_their_first_query() {
    let proxy = start_proxy(app_config(PoolMode::Session, 2)).await;
    let (client, _task) = must_connect(&proxy.app_url()).await;
    assert!(parked_reaches(&proxy, 1).await, "the idle client parks");
    assert_eq!(value(&client, "select 41 + 1").await, "42");
    assert_eq!(proxy.state.parked_clients(), 0, "it holds its server now");
    proxy.stop().await;
}
