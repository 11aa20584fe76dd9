//! Helpers shared by the real-client end-to-end tests (`clients.rs`, `cli_tools.rs`,
//! `protocol.rs`): unique names, superuser SQL off the runtime, a dependency-free
//! `join_all`, and (in [`wire`]) a hand-driven protocol client.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::SimpleQueryMessage;
use weir_tests::{shared_cluster, APP_DB};

/// A name no other test (or earlier run against the same cluster) uses: `prefix_<pid>_<n>_<nanos>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}_{nanos}", std::process::id())
}

/// Runs `sql` as the superuser directly on the test database (not through the proxy),
/// on a blocking thread so the in-process proxy keeps running; returns psql's `-At` output.
pub async fn superuser_sql(sql: &str) -> String {
    let sql = sql.to_owned();
    tokio::task::spawn_blocking(move || {
        shared_cluster()
            .psql(APP_DB, &sql)
            .unwrap_or_else(|e| panic!("superuser SQL failed: {e}"))
    })
    .await
    .expect("superuser psql thread")
}

/// Polls every future in `futures` from one task until all are done, like
/// `futures::future::join_all`: every future is polled once before any waits, so
/// requests that a client pipelines are all queued at once.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("join_all: every future completed"))
        .collect()
}

/// The data rows of a simple-query answer, as optional texts.
pub fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The single value of a one-row, one-column simple-query answer.
pub fn simple_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    let rows = simple_rows(messages);
    assert_eq!(rows.len(), 1, "one row expected: {rows:?}");
    assert_eq!(rows[0].len(), 1, "one column expected: {rows:?}");
    rows[0][0].clone()
}

/// A process's exit status, stdout and stderr, for assertion messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "status {}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The SQLSTATE of a tokio-postgres error, as text (`"<none>"` when it has none).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| "<none>".to_owned())
}
