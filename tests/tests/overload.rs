//! Load shedding through the real proxy: with `max_queue`, clients beyond the queue are
//! turned away at once with 53300 (and a message saying to retry later) while the
//! admitted ones are served; nobody waits out `query_wait_timeout`.

mod common;

use std::time::{Duration, Instant};

use common::{code, describe, eventually_async, must_connect, simple, superuser};
use weir_config::PoolMode;
use weir_tests::{app_config, start_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_max_queue_are_shed_at_once_and_the_rest_are_served() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.max_queue = 4;
    config.query_wait_timeout = Duration::from_secs(10);
    let proxy = start_proxy(config).await;
    let url = proxy.app_url();

    // Logged in first: on a loaded box ten logins can outlast the holders' sleep.
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(must_connect(&url).await);
    }
    // Both servers busy for a second.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let (c, task) = must_connect(&url).await;
        holders.push((
            tokio::spawn(async move { simple(&c, "select pg_sleep(1.5), 42").await }),
            task,
        ));
    }
    let both_running = eventually_async(Duration::from_secs(10), || async {
        superuser(
            "select count(*) from pg_stat_activity \
             where query = 'select pg_sleep(1.5), 42' and state = 'active'",
        )
        .await
            == "2"
    })
    .await;
    assert!(both_running, "both servers are held");
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(c, task)| {
            tokio::spawn(async move {
                let result = simple(&c, "select 1").await;
                drop(task);
                (
                    result
                        .map(|_| ())
                        .map_err(|e| (code(&e).to_owned(), describe(&e))),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let (mut served, mut shed) = (0, 0);
    for t in tasks {
        match t.await.expect("client task") {
            (Ok(()), took) => {
                served += 1;
                assert!(took < Duration::from_secs(5), "served after {took:?}");
            }
            (Err((c, m)), took) => {
                assert_eq!(c, "53300", "{m}");
                assert!(
                    m.contains("max_queue = 4") && m.contains("retry later"),
                    "{m}"
                );
                assert!(took < Duration::from_millis(800), "shed after {took:?}");
                shed += 1;
            }
        }
    }
    assert_eq!((served, shed), (4, 6), "four queue, six are shed");
    for (h, _task) in holders {
        h.await.expect("holder").expect("held query finishes");
    }
    proxy.stop().await;
}
