//! The protocol pitfalls of `/work/shared/pitfalls.md`, driven by hand on the wire
//! against real PostgreSQL 15 through pgweir in transaction mode: pipelines of several
//! Syncs, Flush instead of Sync, errors mid-pipeline, suspended portals, CopyData split
//! at odd byte boundaries, Terminate while idle and mid-transaction.
//!
//! Most tests use a pool of ONE server connection and a second client: whether that
//! client gets the server (and gets the right answer) shows when the proxy released it.

mod clientkit;

use std::time::Duration;

use bytes::BytesMut;
use clientkit::superuser_sql;
use clientkit::unique_name;
use clientkit::wire::{self, tags, Msg, Wire};
use weir_config::{AuthType, PoolMode};
use weir_tests::{app_config, start_proxy, TestProxy, APP_DB, SCRAM_USER};

/// How long a blocked client is watched to show it really waits.
const STILL_WAITING: Duration = Duration::from_millis(500);

/// A transaction-mode proxy with trust auth (raw clients log in without a password).
async fn trust_proxy(pool_size: u32) -> TestProxy {
    let mut config = app_config(PoolMode::Transaction, pool_size);
    config.auth_type = AuthType::Trust;
    start_proxy(config).await
}

async fn login(proxy: &TestProxy) -> Wire {
    Wire::login(proxy.addr, SCRAM_USER, APP_DB).await
}

fn values(msgs: &[Msg]) -> Vec<Option<String>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::first_value)
        .collect()
}

fn text(v: &[&str]) -> Vec<Option<String>> {
    v.iter().map(|s| Some((*s).to_owned())).collect()
}

/// Sends a simple query on `w` without reading the answer.
async fn send_query(w: &mut Wire, sql: &str) {
    let mut out = BytesMut::new();
    wire::query(&mut out, sql);
    w.send(&out).await;
}

/// Pitfall 1: three Parse/Bind/Execute/Sync groups in one write get exactly three
/// ReadyForQuery, and the server stays with the client until the last one: a second
/// client that queries meanwhile (pool size 1) must get its own answer, not group 2's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_of_syncs_releases_after_the_last() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let mut b = login(&proxy).await;

    let mut out = BytesMut::new();
    wire::unnamed_group(&mut out, "select $1::text", &[Some("one")]);
    let slow = "select $1::text from pg_sleep(0.3)";
    wire::unnamed_group(&mut out, slow, &[Some("two")]);
    wire::unnamed_group(&mut out, slow, &[Some("three")]);
    a.send(&out).await;
    // Group 1 is answered by now, groups 2 and 3 are still running on the server.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_query(&mut b, "select 'B'").await;

    let got = a.recv_ready(3).await;
    assert_eq!(tags(&got), "12DCZ12DCZ12DCZ", "{got:?}");
    assert_eq!(values(&got), text(&["one", "two", "three"]));
    assert!(got
        .iter()
        .filter(|m| m.tag == b'Z')
        .all(|m| m.ready_status() == b'I'));

    let other = b.recv_ready(1).await;
    assert_eq!(tags(&other), "TDCZ", "{other:?}");
    assert_eq!(
        values(&other),
        text(&["B"]),
        "the second client got someone else's rows"
    );
    a.assert_silent(Duration::from_millis(200), "after the third ReadyForQuery")
        .await;
    assert_eq!(
        a.query_value("select 'again'").await.as_deref(),
        Some("again")
    );
}

/// Pitfall 2: Parse/Describe/Flush and Parse/Bind/Execute/Flush (no Sync) get their
/// answers, but the server stays with the client until its Sync: with pool size 1 a
/// second client waits, and runs right after the Sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_without_sync_keeps_the_server() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let mut b = login(&proxy).await;

    // asyncpg's shape: Parse + Describe statement + Flush.
    let mut out = BytesMut::new();
    wire::parse(&mut out, "", "select $1::int + 1");
    wire::describe(&mut out, b'S', "");
    wire::flush(&mut out);
    a.send(&out).await;
    let got = a.recv_n(3).await;
    assert_eq!(tags(&got), "1tT", "{got:?}");

    send_query(&mut b, "select 'B'").await;
    b.assert_silent(STILL_WAITING, "server released after Parse/Describe/Flush")
        .await;

    let mut out = BytesMut::new();
    wire::bind(&mut out, "", "", &[Some("41")]);
    wire::execute(&mut out, "", 0);
    wire::flush(&mut out);
    a.send(&out).await;
    let got = a.recv_n(3).await;
    assert_eq!(tags(&got), "2DC", "{got:?}");
    assert_eq!(values(&got), text(&["42"]));
    b.assert_silent(STILL_WAITING, "server released after Bind/Execute/Flush")
        .await;
    a.assert_silent(Duration::from_millis(100), "no ReadyForQuery without Sync")
        .await;

    let mut out = BytesMut::new();
    wire::sync(&mut out);
    a.send(&out).await;
    let got = a.recv_n(1).await;
    assert_eq!(got[0].ready_status(), b'I');
    let other = b.recv_ready(1).await;
    assert_eq!(values(&other), text(&["B"]), "{other:?}");
}

/// Pitfall 3: the proxy never injects a Sync. An INSERT sent with Flush, then a failing
/// statement and the client's only Sync: the implicit transaction rolls both back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sync_is_injected_between_flushes() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let table = unique_name("no_sync");
    a.query(&format!("create table {table} (i int)")).await;

    let mut out = BytesMut::new();
    wire::parse(&mut out, "", &format!("insert into {table} values (1)"));
    wire::bind(&mut out, "", "", &[]);
    wire::execute(&mut out, "", 0);
    wire::flush(&mut out);
    a.send(&out).await;
    let got = a.recv_n(3).await;
    assert_eq!(tags(&got), "12C", "{got:?}");

    let mut out = BytesMut::new();
    wire::unnamed_group(&mut out, "select 1/0", &[]);
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "1EZ", "{got:?}");
    assert_eq!(got[1].error().1, "22012");

    let count = a
        .query_value(&format!("select count(*) from {table}"))
        .await;
    assert_eq!(
        count.as_deref(),
        Some("0"),
        "the INSERT was committed on its own"
    );
}

/// Pitfall 7: after an error mid-pipeline, the server skips the group's remaining
/// messages up to its Sync; exactly one ReadyForQuery per Sync reaches the client, the
/// next group succeeds, and the server is released clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_pipeline_skips_to_its_sync() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;

    let mut out = BytesMut::new();
    wire::unnamed_group(&mut out, "select $1::text", &[Some("one")]);
    // Division by zero at Execute (not foldable at Bind): the Describe before it is
    // answered, the second Execute after it is skipped.
    wire::parse(
        &mut out,
        "",
        "select 10 / x from generate_series($1::int, 0) x",
    );
    wire::bind(&mut out, "", "", &[Some("0")]);
    wire::describe(&mut out, b'P', "");
    wire::execute(&mut out, "", 0);
    wire::execute(&mut out, "", 0);
    wire::sync(&mut out);
    wire::unnamed_group(&mut out, "select $1::text", &[Some("three")]);
    a.send(&out).await;
    let got = a.recv_ready(3).await;
    assert_eq!(tags(&got), "12DCZ12TEZ12DCZ", "{got:?}");
    let (severity, code, _) = got[8].error();
    assert_eq!((severity.as_str(), code.as_str()), ("ERROR", "22012"));
    assert_eq!(values(&got), text(&["one", "three"]));
    a.assert_silent(Duration::from_millis(300), "after the third ReadyForQuery")
        .await;

    // An error at Parse: Bind and Execute of that group are skipped too.
    let mut out = BytesMut::new();
    wire::unnamed_group(&mut out, "selec oops", &[]);
    wire::unnamed_group(&mut out, "select $1::text", &[Some("after")]);
    a.send(&out).await;
    let got = a.recv_ready(2).await;
    assert_eq!(tags(&got), "EZ12DCZ", "{got:?}");
    assert_eq!(got[0].error().1, "42601");
    assert_eq!(values(&got), text(&["after"]));

    // Released clean: another client gets the only server, outside any transaction.
    let mut b = login(&proxy).await;
    let got = b.query("select 'B'").await;
    assert_eq!(values(&got), text(&["B"]));
    assert_eq!(got.last().map(Msg::ready_status), Some(b'I'));
}

/// Pitfall 2: Execute with a row limit + Flush suspends the portal; the server stays
/// with the client until the portal is run to the end and Synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_portal_keeps_the_server() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let mut b = login(&proxy).await;

    let mut out = BytesMut::new();
    wire::parse(&mut out, "", "select generate_series(1, 3)");
    wire::bind(&mut out, "", "", &[]);
    wire::execute(&mut out, "", 1);
    wire::flush(&mut out);
    a.send(&out).await;
    let got = a.recv_n(4).await;
    assert_eq!(tags(&got), "12Ds", "{got:?}");
    assert_eq!(values(&got), text(&["1"]));

    send_query(&mut b, "select 'B'").await;
    b.assert_silent(STILL_WAITING, "server released with a suspended portal")
        .await;

    let mut out = BytesMut::new();
    wire::execute(&mut out, "", 0);
    wire::sync(&mut out);
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "DDCZ", "{got:?}");
    assert_eq!(values(&got), text(&["2", "3"]));
    assert!(got[2].command_tag().starts_with("SELECT"), "{got:?}");
    let other = b.recv_ready(1).await;
    assert_eq!(values(&other), text(&["B"]), "{other:?}");
}

/// Pitfall 15: COPY FROM STDIN outside BEGIN in transaction mode, the CopyData stream
/// written in pieces cut anywhere (inside headers, between frames, mid-row); then COPY
/// TO STDOUT delivers every row; the server is free for another client afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_split_at_odd_boundaries_and_copy_out() {
    const ROWS: usize = 5000;
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let table = unique_name("copy_raw");
    a.query(&format!("create table {table} (i int, label text)"))
        .await;

    let mut payload = Vec::new();
    for i in 1..=ROWS {
        payload.extend_from_slice(format!("{i}\tlabel-{i}\n").as_bytes());
    }
    // CopyData messages of varied sizes, not aligned with rows (the protocol allows it).
    let mut stream = BytesMut::new();
    let mut starts = Vec::new();
    let mut rest = &payload[..];
    for size in [1usize, 9, 300, 7, 4096, 2, 65_536].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        starts.push(stream.len());
        wire::copy_data(&mut stream, piece);
        rest = tail;
    }
    starts.push(stream.len());
    wire::copy_done(&mut stream);

    send_query(&mut a, &format!("copy {table} from stdin")).await;
    let got = a.recv().await;
    assert_eq!(got.tag, b'G', "CopyInResponse expected: {got:?}");

    // Write in pieces whose cuts fall everywhere, one write at a time.
    let mut cuts = 0usize;
    let mut cut_in_header = false;
    let mut pos = 0;
    for size in [2usize, 3, 1, 7, 4, 13, 5000, 11, 3, 8191, 2, 6]
        .iter()
        .cycle()
    {
        if pos >= stream.len() {
            break;
        }
        let end = (pos + size).min(stream.len());
        a.send(&stream[pos..end]).await;
        cut_in_header |= starts.iter().any(|s| end > *s && end < s + 5);
        cuts += 1;
        pos = end;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        cut_in_header && cuts > 20,
        "the test must split a CopyData header"
    );
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "CZ", "{got:?}");
    assert_eq!(got[0].command_tag(), format!("COPY {ROWS}"));
    assert_eq!(got[1].ready_status(), b'I');

    let check = a
        .query(&format!(
            "select count(*), sum(i), sum(length(label)) from {table}"
        ))
        .await;
    let row = check
        .iter()
        .find(|m| m.tag == b'D')
        .expect("a row")
        .data_row();
    let label_len: usize = (1..=ROWS).map(|i| format!("label-{i}").len()).sum();
    assert_eq!(
        row,
        vec![
            Some(ROWS.to_string()),
            Some((ROWS * (ROWS + 1) / 2).to_string()),
            Some(label_len.to_string())
        ]
    );

    send_query(
        &mut a,
        &format!("copy (select i, label from {table} order by i) to stdout"),
    )
    .await;
    let got = a.recv_ready(1).await;
    let t = tags(&got);
    assert_eq!(
        t.len(),
        ROWS + 4,
        "H, {ROWS} CopyData, c, C, Z: {}",
        &t[..t.len().min(20)]
    );
    assert!(
        t.starts_with('H') && t.ends_with("cCZ"),
        "{}",
        &t[t.len() - 3..]
    );
    for (i, m) in got[1..=ROWS].iter().enumerate() {
        assert_eq!(m.tag, b'd');
        assert_eq!(
            &m.body[..],
            format!("{}\tlabel-{}\n", i + 1, i + 1).as_bytes()
        );
    }

    let mut b = login(&proxy).await;
    assert_eq!(b.query_value("select 'B'").await.as_deref(), Some("B"));
}

/// Terminate while idle closes that client cleanly and keeps the (clean) server in the
/// pool; Terminate inside an open transaction gets the server connection closed, so the
/// next client (pool size 1) gets a fresh backend outside any transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_idle_and_mid_transaction() {
    let proxy = trust_proxy(1).await;
    let mut bye = BytesMut::new();
    wire::terminate(&mut bye);

    let mut a = login(&proxy).await;
    let pid1 = a.query_value("select pg_backend_pid()").await;
    a.send(&bye).await;
    a.expect_eof().await;

    let mut b = login(&proxy).await;
    let pid = b.query_value("select pg_backend_pid()").await;
    assert_eq!(
        pid, pid1,
        "an idle Terminate must not cost the server connection"
    );
    let begun = b.query("begin").await;
    assert_eq!(begun.last().map(Msg::ready_status), Some(b'T'));
    b.query("select txid_current()").await;
    b.send(&bye).await;
    b.expect_eof().await;

    let mut c = login(&proxy).await;
    let got = c.query("select pg_backend_pid()").await;
    assert_eq!(
        got.last().map(Msg::ready_status),
        Some(b'I'),
        "inherited a transaction"
    );
    let pid2 = got
        .iter()
        .find(|m| m.tag == b'D')
        .and_then(Msg::first_value);
    assert_ne!(pid2, pid1, "the server left mid-transaction was reused");
    let pid1 = pid1.expect("a pid");
    let mut gone = false;
    for _ in 0..50 {
        let n = superuser_sql(&format!(
            "select count(*) from pg_stat_activity where pid = {pid1}"
        ))
        .await;
        if n == "0" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "backend {pid1} still alive after its client left mid-transaction"
    );
}

/// Pitfall 15: a COPY FROM STDIN that fails mid-stream ends with ErrorResponse and
/// ReadyForQuery while the client may still be sending; its late CopyData/CopyDone
/// (which PostgreSQL drops) must not take a server connection again: with pool size 1 a
/// second client must still get the server while the first one idles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_copy_data_after_a_failed_copy_does_not_hold_the_server() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let table = unique_name("late_copy");
    a.query(&format!("create table {table} (i int)")).await;

    send_query(&mut a, &format!("copy {table} from stdin")).await;
    assert_eq!(a.recv().await.tag, b'G');
    let mut out = BytesMut::new();
    wire::copy_data(&mut out, b"1\n");
    wire::copy_data(&mut out, b"oops\n");
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "EZ", "{got:?}");
    assert_eq!(got[0].error().1, "22P02");
    assert_eq!(got[1].ready_status(), b'I');

    // The client had more in flight: it arrives after the server's ReadyForQuery.
    let mut late = BytesMut::new();
    wire::copy_data(&mut late, b"2\n3\n");
    wire::copy_done(&mut late);
    a.send(&late).await;
    a.assert_silent(
        Duration::from_millis(200),
        "PostgreSQL drops late copy messages",
    )
    .await;

    let mut b = login(&proxy).await;
    send_query(&mut b, "select 'B'").await;
    let other = b.try_recv(Duration::from_secs(3)).await;
    assert!(
        other.is_some(),
        "the idle client's late CopyData/CopyDone took the only server connection and kept it"
    );
    let mut rest = vec![other.expect("checked")];
    rest.extend(b.recv_ready(1).await);
    assert_eq!(values(&rest), text(&["B"]), "{rest:?}");
    let count = a
        .query_value(&format!("select count(*) from {table}"))
        .await;
    assert_eq!(count.as_deref(), Some("0"));
}
