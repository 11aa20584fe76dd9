//! Single-flight query dedup through the real proxy and PostgreSQL: clients sending
//! the identical read at the same moment share one execution; a volatile statement,
//! one inside a transaction, and statements that differ only in a value never share.
//!
//! Executions are counted exactly by the probe function itself: it logs each call in
//! a table (the allow-list is the operator's promise that sharing it is fine).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{code, describe, must_connect, simple, superuser, value};
use tokio::sync::Barrier;
use weir_config::PoolMode;
use weir_tests::{app_config, start_proxy};

/// Creates `NAME(int)`: sleeps 200 ms, logs the call in `NAME_log`, returns its argument.
async fn probe(name: &str) {
    superuser(&format!(
        "create table {name}_log (arg int); \
         create function {name}(a int) returns int language plpgsql security definer as $$ \
         begin perform pg_sleep(0.2); insert into {name}_log values (a); return a; end $$;"
    ))
    .await;
}

async fn executions(name: &str) -> u32 {
    superuser(&format!("select count(*) from {name}_log"))
        .await
        .trim()
        .parse()
        .expect("a count")
}

/// `n` clients connected first, then all send their query (`sql(i)`) at the same
/// moment with the simple protocol; returns each client's answer.
async fn at_once(url: &str, n: usize, sql: impl Fn(usize) -> String) -> Vec<String> {
    at_once_after(url, n, &[], sql).await
}

/// [`at_once`], each client running `setup` first (before the barrier).
async fn at_once_after(
    url: &str,
    n: usize,
    setup: &[&str],
    sql: impl Fn(usize) -> String,
) -> Vec<String> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let (c, task) = must_connect(url).await;
        for statement in setup {
            simple(&c, statement).await.expect("setup statement");
        }
        clients.push((c, task));
    }
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (c, task))| {
            let barrier = barrier.clone();
            let sql = sql(i);
            tokio::spawn(async move {
                barrier.wait().await;
                let v = value(&c, &sql).await;
                drop(task);
                v
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("client task"));
    }
    answers
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_reads_run_a_handful_of_times_and_all_get_the_answer() {
    let name = unique("dedup_probe");
    probe(&name).await;
    let mut config = app_config(PoolMode::Transaction, 4);
    config.dedup = true;
    config.dedup_functions = vec![name.clone()];
    config.query_wait_timeout = Duration::from_secs(30);
    let proxy = start_proxy(config).await;

    let answers = at_once(&proxy.app_url(), 100, |_| {
        format!("select {name}(7), 'x' || 1")
    })
    .await;
    assert_eq!(answers.len(), 100);
    assert!(
        answers.iter().all(|a| a == "7"),
        "every client gets the answer: {answers:?}"
    );
    let runs = executions(&name).await;
    assert!(
        (1..=5).contains(&runs),
        "100 identical reads ran {runs} times"
    );

    // Not shared: a volatile call beside it, a transaction block, a different value.
    let before = executions(&name).await;
    at_once(&proxy.app_url(), 10, |_| {
        format!("select {name}(1) + (random() * 0)::int")
    })
    .await;
    assert_eq!(
        executions(&name).await - before,
        10,
        "random() is never shared"
    );

    let before = executions(&name).await;
    let answers = at_once(&proxy.app_url(), 10, |i| format!("select {name}({i})")).await;
    assert_eq!(
        executions(&name).await - before,
        10,
        "different values never share"
    );
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &i.to_string(), "each client gets its own value");
    }

    let before = executions(&name).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, task) = must_connect(&proxy.app_url()).await;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            simple(&c, "begin").await.expect("begin");
            let v = value(&c, &format!("select {name}(3)")).await;
            simple(&c, "commit").await.expect("commit");
            drop(task);
            v
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("client task"), "3");
    }
    assert_eq!(
        executions(&name).await - before,
        10,
        "statements inside a transaction are never shared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_is_off_unless_asked_for_and_errors_are_shared_only_within_their_flight() {
    let name = unique("dedup_off");
    probe(&name).await;
    let mut config = app_config(PoolMode::Transaction, 4);
    config.dedup_functions = vec![name.clone()];
    let proxy = start_proxy(config).await;
    at_once(&proxy.app_url(), 8, |_| format!("select {name}(5)")).await;
    assert_eq!(executions(&name).await, 8, "off by default");

    // A client turns it on for itself; its flight's error reaches all its followers.
    let url = format!("{}?options=-c%20pgweir.dedup%3Don", proxy.app_url());
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(must_connect(&url).await);
    }
    let barrier = Arc::new(Barrier::new(6));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(c, task)| {
            let barrier = barrier.clone();
            let sql = format!("select {name}(1) / 0");
            tokio::spawn(async move {
                barrier.wait().await;
                let r = simple(&c, &sql).await.map_err(|e| describe(&e));
                // The session goes on after the shared error.
                let after = value(&c, "select 2").await;
                drop(task);
                (r.err(), after)
            })
        })
        .collect();
    for t in tasks {
        let (err, after) = t.await.expect("client task");
        let err = err.expect("division by zero is an error");
        assert!(
            err.contains("22012") || err.contains("division by zero"),
            "{err}"
        );
        assert_eq!(after, "2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_pgweir_dedup_inside_a_transaction_is_answered_by_pgweir_and_takes_effect() {
    let name = unique("dedup_set");
    probe(&name).await;
    let mut config = app_config(PoolMode::Transaction, 4);
    config.dedup_functions = vec![name.clone()];
    config.query_wait_timeout = Duration::from_secs(30);
    let proxy = start_proxy(config).await;

    // While a server is held: answered by pgweir, never seen by PostgreSQL.
    let (c, _task) = must_connect(&proxy.app_url()).await;
    simple(&c, "BEGIN").await.expect("begin");
    simple(&c, "SET pgweir.dedup = on")
        .await
        .expect("answered by pgweir");
    assert_eq!(
        value(
            &c,
            "select coalesce(current_setting('pgweir.dedup', true), 'unset')"
        )
        .await,
        "unset",
        "the server never sees pgweir.dedup"
    );
    let e = simple(&c, "SET pgweir.dedup = 'maybe'")
        .await
        .expect_err("not a boolean");
    assert_eq!(code(&e), "22023", "{}", describe(&e));
    simple(&c, "COMMIT").await.expect("the transaction goes on");
    drop(c);

    // Dedup is off for this database; clients that turned it on inside a transaction
    // share executions from their next request on.
    let answers = at_once_after(
        &proxy.app_url(),
        100,
        &["BEGIN", "SET pgweir.dedup TO on", "COMMIT"],
        |_| format!("select {name}(3)"),
    )
    .await;
    assert!(answers.iter().all(|a| a == "3"), "{answers:?}");
    let runs = executions(&name).await;
    assert!(
        (1..=5).contains(&runs),
        "100 identical reads ran {runs} times"
    );
    proxy.stop().await;
}

/// `n` tokio-postgres clients, connected first, run `sql` with their value from
/// `value(i)` (extended protocol: Parse/Describe/Sync, then Bind/Execute/Sync) at the
/// same moment; returns each client's answer.
async fn extended_at_once(
    url: &str,
    n: usize,
    sql: &str,
    value: impl Fn(usize) -> i32,
) -> Vec<i32> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(must_connect(url).await);
    }
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, (c, task))| {
            let barrier = barrier.clone();
            let (sql, v) = (sql.to_owned(), value(i));
            tokio::spawn(async move {
                // Prepared before the barrier: the shared part is the execution. A failed
                // prepare still passes the barrier, so the test fails with its error
                // instead of leaving the others waiting.
                let statement = c.prepare(&sql).await;
                barrier.wait().await;
                let statement =
                    statement.unwrap_or_else(|e| panic!("prepare failed: {}", describe(&e)));
                let row = c
                    .query_one(&statement, &[&v])
                    .await
                    .unwrap_or_else(|e| panic!("query failed: {}", describe(&e)));
                drop(task);
                row.get::<_, i32>(0)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("client task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_reads_with_the_same_values_share_one_execution() {
    let name = unique("dedup_ext");
    probe(&name).await;
    let mut config = app_config(PoolMode::Transaction, 4);
    config.dedup = true;
    config.dedup_functions = vec![name.clone()];
    config.query_wait_timeout = Duration::from_secs(30);
    let proxy = start_proxy(config).await;
    let sql = format!("select {name}($1::int)");

    let answers = extended_at_once(&proxy.app_url(), 100, &sql, |_| 7).await;
    assert!(answers.iter().all(|&a| a == 7), "{answers:?}");
    let runs = executions(&name).await;
    assert!(
        (1..=5).contains(&runs),
        "100 identical parameterized reads ran {runs} times"
    );

    // Different values: never shared, each its own answer.
    let before = executions(&name).await;
    let answers = extended_at_once(&proxy.app_url(), 10, &sql, |i| i as i32).await;
    assert_eq!(
        executions(&name).await - before,
        10,
        "different values never share"
    );
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(*a, i as i32);
    }

    // The unnamed statement (Parse "" in the batch, as PQexecParams sends it): shared
    // too, and a follower's session goes on as if its own Parse had run.
    let before = executions(&name).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(must_connect(&proxy.app_url()).await);
    }
    let barrier = Arc::new(Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(c, task)| {
            let (barrier, sql) = (barrier.clone(), sql.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                // query_typed: an unnamed Parse, Bind, Describe, Execute, Sync.
                let rows = c
                    .query_typed(&sql, &[(&5i32, tokio_postgres::types::Type::INT4)])
                    .await
                    .unwrap_or_else(|e| panic!("query_typed failed: {}", describe(&e)));
                let first = rows[0].get::<_, i32>(0);
                let again = c
                    .query_typed(
                        "select $1::int + 1",
                        &[(&first, tokio_postgres::types::Type::INT4)],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("the next query failed: {}", describe(&e)));
                assert_eq!(again[0].get::<_, i32>(0), first + 1);
                drop(task);
                first
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("client task"), 5);
    }
    let runs = executions(&name).await - before;
    assert!(
        (1..=5).contains(&runs),
        "20 identical unnamed-statement reads ran {runs} times"
    );
    proxy.stop().await;
}
