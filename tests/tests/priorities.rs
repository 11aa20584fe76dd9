//! Priority classes: a client gets its class from `pgweir.priority` in its startup
//! packet (never forwarded to PostgreSQL) or from `priority_rules`; the wait queue
//! serves more important classes first, with aging so the others still progress.

mod admin_support;
mod common;

use std::time::{Duration, Instant};

use admin_support::{admin_config, start, table};
use common::{code, connect_with_task, describe, must_connect, simple, value};
use weir_config::{PoolMode, Priority, PriorityRule};

/// Runs `first` (if any), then `select pg_sleep(0.02)` in a loop until `until`;
/// returns each query's latency.
async fn loop_sleeps(url: String, first: Option<&'static str>, until: Instant) -> Vec<Duration> {
    let (c, _task) = must_connect(&url).await;
    if let Some(sql) = first {
        simple(&c, sql).await.expect("first statement");
    }
    let mut out = Vec::new();
    while Instant::now() < until {
        let t = Instant::now();
        simple(&c, "select pg_sleep(0.02)").await.expect("query");
        out.push(t.elapsed());
    }
    out
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_work_is_served_first_and_low_work_still_progresses() {
    let mut config = admin_config(PoolMode::Transaction, 2);
    config.priority_rules = vec![PriorityRule {
        user: None,
        database: None,
        application_name: Some("batch".to_owned()),
        priority: Priority::Low,
    }];
    config.query_wait_timeout = Duration::from_secs(30);
    let pgweir = start(config, None).await;
    let low_url = format!("{}?application_name=batch", pgweir.app_url());
    let critical_url = format!(
        "{}?options=-c%20pgweir.priority%3Dcritical",
        pgweir.app_url()
    );

    // Not forwarded: PostgreSQL never hears of pgweir.priority.
    let (c, _task) = must_connect(&critical_url).await;
    assert_eq!(
        value(
            &c,
            "select coalesce(current_setting('pgweir.priority', true), 'unset')"
        )
        .await,
        "unset"
    );
    drop(c);

    let until = Instant::now() + Duration::from_secs(8);
    let lows: Vec<_> = (0..24)
        .map(|_| tokio::spawn(loop_sleeps(low_url.clone(), None, until)))
        .collect();
    // Let the low clients fill the queue first (their logins take a while on a
    // loaded box, so look until they do rather than after a fixed time).
    let low_waiting = || {
        let waiting = table(&pgweir.admin_url(), "SHOW PRIORITIES");
        assert_eq!(
            waiting.columns,
            [
                "database",
                "user",
                "class",
                "waiting",
                "checkouts",
                "p99_wait_us"
            ]
        );
        waiting
            .rows
            .iter()
            .filter(|r| r.get(2).map(String::as_str) == Some("low"))
            .filter_map(|r| r.get(3)?.parse::<u32>().ok())
            .sum::<u32>()
    };
    let queued_by = Instant::now() + Duration::from_secs(5);
    while low_waiting() == 0 && Instant::now() < queued_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        low_waiting() > 0,
        "low clients queue behind the two servers"
    );
    // Two ask at startup, one (a low client by its rule) with SET in its session.
    let criticals: Vec<_> = (0..3)
        .map(|i| {
            let (url, first) = if i < 2 {
                (critical_url.clone(), None)
            } else {
                (low_url.clone(), Some("SET pgweir.priority = 'critical'"))
            };
            tokio::spawn(loop_sleeps(url, first, until))
        })
        .collect();
    let mut low = Vec::new();
    let mut every_low_progressed = true;
    for t in lows {
        let l = t.await.expect("low task");
        every_low_progressed &= !l.is_empty();
        low.extend(l);
    }
    let mut critical = Vec::new();
    for t in criticals {
        critical.extend(t.await.expect("critical task"));
    }
    let (low_p99, critical_p99) = (p99(low.clone()), p99(critical.clone()));
    eprintln!(
        "low: {} queries, p99 {low_p99:?}; critical: {} queries, p99 {critical_p99:?}",
        low.len(),
        critical.len()
    );
    assert!(every_low_progressed, "every low client got work done");
    // The bench's bar is 10 %; a loaded 2-core test box gets some slack.
    assert!(
        critical_p99 * 4 <= low_p99,
        "critical p99 {critical_p99:?} vs low p99 {low_p99:?}"
    );
    // Waits per class: SHOW PRIORITIES' p99 and /metrics' class label.
    let rows = table(&pgweir.admin_url(), "SHOW PRIORITIES").rows;
    let p99_of = |class: &str| {
        rows.iter()
            .filter(|r| r.get(2).map(String::as_str) == Some(class))
            .filter_map(|r| r.get(5)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    assert!(
        p99_of("critical") < p99_of("low"),
        "p99 wait: critical {} µs, low {} µs",
        p99_of("critical"),
        p99_of("low")
    );
    pgweir.stop().await;
}

/// Runs `sql` on a client already logged in and returns how long it took.
async fn timed(url: String, sql: &'static str) -> Duration {
    let (c, _task) = must_connect(&url).await;
    let t = Instant::now();
    simple(&c, sql).await.expect("query");
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_servers_serve_a_critical_client_at_once() {
    let mut config = admin_config(PoolMode::Transaction, 4);
    config.reserve_critical = 2;
    config.query_wait_timeout = Duration::from_secs(60);
    let pgweir = start(config, None).await;
    let low_url = format!("{}?options=-c%20pgweir.priority%3Dlow", pgweir.app_url());
    let critical_url = format!(
        "{}?options=-c%20pgweir.priority%3Dcritical",
        pgweir.app_url()
    );
    // Four low clients want a server for 4 s each; only two may hold one.
    let lows: Vec<_> = (0..4)
        .map(|_| tokio::spawn(timed(low_url.clone(), "select pg_sleep(4)")))
        .collect();
    let low_waiting = || {
        table(&pgweir.admin_url(), "SHOW PRIORITIES")
            .rows
            .iter()
            .filter(|r| r.get(2).map(String::as_str) == Some("low"))
            .filter_map(|r| r.get(3)?.parse::<u32>().ok())
            .sum::<u32>()
    };
    let by = Instant::now() + Duration::from_secs(20);
    while low_waiting() < 2 && Instant::now() < by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        low_waiting(),
        2,
        "two low clients wait beside two free servers"
    );
    // The critical one (logged in first, then timed) is served from the reserve.
    let critical = timed(critical_url, "select 1").await;
    assert!(
        critical < Duration::from_secs(2),
        "critical waited {critical:?} behind low work"
    );
    assert_eq!(low_waiting(), 2, "the low clients still wait");
    let mut low = Vec::new();
    for t in lows {
        low.push(t.await.expect("low task"));
    }
    low.sort();
    // Two ran at once, the other two after them.
    assert!(low[3] >= Duration::from_secs(7), "low latencies {low:?}");
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_priority_is_refused_at_login_and_by_set() {
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let (c, _task) = must_connect(&pgweir.app_url()).await;
    let e = simple(&c, "SET pgweir.priority = 'urgent'")
        .await
        .expect_err("no such class");
    assert_eq!(code(&e), "22023", "{}", describe(&e));
    simple(&c, "SET pgweir.priority TO background")
        .await
        .expect("a class");
    assert_eq!(
        value(
            &c,
            "select coalesce(current_setting('pgweir.priority', true), 'unset')"
        )
        .await,
        "unset",
        "answered by pgweir, never sent to PostgreSQL"
    );
    let url = format!("{}?options=-c%20pgweir.priority%3Durgent", pgweir.app_url());
    let Err(e) = connect_with_task(&url).await else {
        panic!("logged in with an unknown priority");
    };
    assert_eq!(code(&e), "22023", "{}", describe(&e));
    assert!(describe(&e).contains("pgweir.priority"), "{}", describe(&e));
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_pgweir_priority_while_a_server_is_held_is_answered_by_pgweir() {
    let unset = "select coalesce(current_setting('pgweir.priority', true), 'unset')";
    // Transaction mode, inside a transaction block.
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let (c, _task) = must_connect(&pgweir.app_url()).await;
    simple(&c, "BEGIN").await.expect("begin");
    simple(&c, "SET pgweir.priority = 'critical'")
        .await
        .expect("answered by pgweir");
    assert_eq!(value(&c, unset).await, "unset", "never sent to PostgreSQL");
    let e = simple(&c, "SET pgweir.priority = 'urgent'")
        .await
        .expect_err("no such class");
    assert_eq!(code(&e), "22023", "{}", describe(&e));
    simple(&c, "COMMIT").await.expect("the transaction goes on");
    // The next checkout is a critical one.
    let critical_checkouts = || {
        table(&pgweir.admin_url(), "SHOW PRIORITIES")
            .rows
            .iter()
            .filter(|r| r.get(2).map(String::as_str) == Some("critical"))
            .filter_map(|r| r.get(4)?.parse::<u64>().ok())
            .sum::<u64>()
    };
    // (Logins may check out a server too: count from here.)
    let before = critical_checkouts();
    simple(&c, "select 1").await.expect("query");
    assert_eq!(
        critical_checkouts(),
        before + 1,
        "the class changed with SET"
    );
    drop(c);
    pgweir.stop().await;

    // Session mode: the server is held all along.
    let pgweir = start(admin_config(PoolMode::Session, 2), None).await;
    let (c, _task) = must_connect(&pgweir.app_url()).await;
    simple(&c, "select 1").await.expect("query");
    simple(&c, "SET pgweir.priority TO low")
        .await
        .expect("answered by pgweir");
    simple(&c, "SET pgweir.dedup = off")
        .await
        .expect("answered by pgweir");
    assert_eq!(value(&c, unset).await, "unset", "never sent to PostgreSQL");
    assert_eq!(
        value(
            &c,
            "select coalesce(current_setting('pgweir.dedup', true), 'unset')"
        )
        .await,
        "unset"
    );
    drop(c);
    pgweir.stop().await;
}
