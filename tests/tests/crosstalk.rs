//! Cross-talk at scale: 500 clients share 10 server connections in transaction mode,
//! each with its own prepared statements, settings and pipelined queries whose answers
//! depend on its own inputs. Every client must see only its own data and settings.

use std::time::{Duration, Instant};

use weir_config::{AuthType, PoolMode};
use weir_tests::{app_config, start_proxy, start_proxy_with_workers};

const CLIENTS: usize = 500;
const ROUNDS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_over_ten_connections_see_only_their_own_state() {
    five_hundred_clients(1).await;
}

/// The same on two workers: a client's task moves between threads, each with its own
/// batch of writes, so a write queued on one worker may be waited for on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_on_two_workers_see_only_their_own_state() {
    five_hundred_clients(2).await;
}

async fn five_hundred_clients(workers: usize) {
    let mut config = app_config(PoolMode::Transaction, 10);
    // Trust keeps 500 debug-build SCRAM logins out of the test's time.
    config.auth_type = AuthType::Trust;
    config.query_wait_timeout = Duration::from_secs(60);
    let proxy = if workers == 1 {
        start_proxy(config).await
    } else {
        start_proxy_with_workers(config, workers).await
    };
    let url = proxy.app_url();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for id in 0..CLIENTS as i32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { one_client(&url, id).await }));
    }
    let mut failures = Vec::new();
    for (id, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("client {id}: {e}")),
            Err(e) => failures.push(format!("client {id} panicked: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients saw wrong answers, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("{CLIENTS} clients done in {:?}", started.elapsed());
    proxy.stop().await;
}

async fn one_client(url: &str, id: i32) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: tokio_postgres::Error| format!("{what}: {err}")
    };
    client
        .batch_execute(&format!(
            "SET application_name = 'client-{id}'; SET statement_timeout = '{}ms'",
            20_001 + id
        ))
        .await
        .map_err(e("set"))?;
    let mine = client
        .prepare("select $1::int4 * 1000 + $2::int4, current_setting('application_name'), current_setting('statement_timeout')")
        .await
        .map_err(e("prepare"))?;
    let want_name = format!("client-{id}");
    let want_timeout = format!("{}ms", 20_001 + id);
    for round in 0..ROUNDS {
        // Three queries in flight at once on one connection: tokio-postgres pipelines them.
        let second = round + 100;
        let tag = format!("{id}/{round}");
        let pa: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &round];
        let pb: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &second];
        let pc: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tag];
        let (a, b, c) = tokio::join!(
            client.query_one(&mine, &pa),
            client.query_one(&mine, &pb),
            client.query_one("select $1::text", &pc),
        );
        let (a, b, c) = (a.map_err(e("a"))?, b.map_err(e("b"))?, c.map_err(e("c"))?);
        for (row, add) in [(&a, round), (&b, round + 100)] {
            let v: i32 = row.get(0);
            let name: String = row.get(1);
            let timeout: String = row.get(2);
            if v != id * 1000 + add || name != want_name || timeout != want_timeout {
                return Err(format!(
                    "round {round}: got ({v}, {name}, {timeout}), want ({}, {want_name}, {want_timeout})",
                    id * 1000 + add
                ));
            }
        }
        let text: String = c.get(0);
        if text != format!("{id}/{round}") {
            return Err(format!("round {round}: got {text}"));
        }
    }
    Ok(())
}
