//! Named prepared statements in transaction mode, on the wire and with tokio-postgres:
//! a statement prepared once is usable in every later transaction whichever server
//! connection it lands on; Close, DEALLOCATE and errors inside a pipeline behave exactly
//! as on a direct connection; the server parses each statement once per connection.

mod clientkit;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use clientkit::simple_value;
use clientkit::wire::{self, tags, Msg, Wire};
use weir_config::{AuthType, PoolMode};
use weir_tests::{app_config, connect, start_proxy, TestProxy, APP_DB, SCRAM_USER};

async fn trust_proxy(pool_size: u32) -> TestProxy {
    let mut config = app_config(PoolMode::Transaction, pool_size);
    config.auth_type = AuthType::Trust;
    start_proxy(config).await
}

/// [`trust_proxy`] with `cache_unnamed_statements` on, as it is by default: set so a
/// run with `PGWEIR_TEST_CACHE_UNNAMED=0` still tests it here.
async fn caching_proxy(pool_size: u32) -> TestProxy {
    let mut config = app_config(PoolMode::Transaction, pool_size);
    config.auth_type = AuthType::Trust;
    config.cache_unnamed_statements = true;
    start_proxy(config).await
}

async fn login(proxy: &TestProxy) -> Wire {
    Wire::login(proxy.addr, SCRAM_USER, APP_DB).await
}

fn close_statement(buf: &mut BytesMut, name: &str) {
    let body_len = 4 + 1 + name.len() + 1;
    buf.put_u8(b'C');
    buf.put_i32(body_len as i32);
    buf.put_u8(b'S');
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
}

fn values(msgs: &[Msg]) -> Vec<Option<String>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::first_value)
        .collect()
}

/// Runs `name` with one text parameter in its own transaction (Bind/Execute/Sync).
async fn run(w: &mut Wire, name: &str, param: &str) -> Vec<Msg> {
    let mut out = BytesMut::new();
    wire::bind(&mut out, "", name, &[Some(param)]);
    wire::execute(&mut out, "", 0);
    wire::sync(&mut out);
    w.send(&out).await;
    w.recv_ready(1).await
}

/// The backend pid serving a transaction, through a simple query.
async fn backend_pid(w: &mut Wire) -> String {
    w.query_value("select pg_backend_pid()")
        .await
        .expect("a pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_once_runs_on_every_server_connection() {
    let proxy = trust_proxy(3).await;
    let mut a = login(&proxy).await;
    let mut out = BytesMut::new();
    wire::parse(&mut out, "double", "select $1::int4 * 2");
    wire::sync(&mut out);
    a.send(&out).await;
    assert_eq!(tags(&a.recv_ready(1).await), "1Z");

    // Other clients hold server connections so `a` lands on different ones.
    let mut holders = Vec::new();
    let mut pids = std::collections::HashSet::new();
    for i in 0..6 {
        if i % 2 == 1 && holders.len() < 2 {
            let mut h = login(&proxy).await;
            h.query("begin").await;
            holders.push(h);
        }
        pids.insert(backend_pid(&mut a).await);
        let got = run(&mut a, "double", &i.to_string()).await;
        assert_eq!(tags(&got), "2DCZ", "{got:?}");
        assert_eq!(values(&got), vec![Some((i * 2).to_string())]);
        if i == 3 {
            for mut h in holders.drain(..) {
                h.query("commit").await;
            }
        }
    }
    assert!(
        pids.len() >= 2,
        "the client used one server connection only: {pids:?}"
    );

    // Describe of the named statement works anywhere too.
    let mut out = BytesMut::new();
    wire::describe(&mut out, b'S', "double");
    wire::sync(&mut out);
    a.send(&out).await;
    assert_eq!(tags(&a.recv_ready(1).await), "tTZ");

    // Close: CloseComplete in order, then the name is gone, as PostgreSQL reports it.
    let mut out = BytesMut::new();
    close_statement(&mut out, "double");
    wire::sync(&mut out);
    a.send(&out).await;
    assert_eq!(tags(&a.recv_ready(1).await), "3Z");
    let got = run(&mut a, "double", "1").await;
    assert_eq!(tags(&got), "EZ", "{got:?}");
    let (_, code, message) = got[0].error();
    assert_eq!(code, "26000");
    assert_eq!(message, "prepared statement \"double\" does not exist");

    // The server names never leak into what the client sees.
    let mut out = BytesMut::new();
    wire::parse(&mut out, "double", "select $1::int4 * 2");
    wire::parse(&mut out, "double", "select 1");
    wire::sync(&mut out);
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "1EZ", "{got:?}");
    let (_, code, message) = got[1].error();
    assert_eq!(code, "42P05");
    assert_eq!(message, "prepared statement \"double\" already exists");
    proxy.stop().await;
}

/// PostgreSQL skips every message after an error up to Sync: a statement parsed after
/// the error does not exist, one closed after it still does, and the answers the proxy
/// gives itself are skipped the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_a_pipeline_skip_to_sync_like_postgres() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let mut out = BytesMut::new();
    wire::parse(&mut out, "keep", "select $1::text || '!'");
    wire::sync(&mut out);
    a.send(&out).await;
    assert_eq!(tags(&a.recv_ready(1).await), "1Z");

    // A second client parses the same text: the server already has it (answered by
    // the proxy, in order), under the client's own name.
    let mut b = login(&proxy).await;
    let mut out = BytesMut::new();
    wire::parse(&mut out, "mine", "select $1::text || '!'");
    wire::flush(&mut out);
    b.send(&out).await;
    assert_eq!(tags(&b.recv_n(1).await), "1");
    let mut out = BytesMut::new();
    wire::sync(&mut out);
    b.send(&out).await;
    assert_eq!(tags(&b.recv_ready(1).await), "Z");

    let mut out = BytesMut::new();
    wire::parse(&mut out, "bad", "selec oops");
    wire::parse(&mut out, "after", "select 2");
    close_statement(&mut out, "keep");
    wire::bind(&mut out, "", "keep", &[Some("x")]);
    wire::execute(&mut out, "", 0);
    wire::sync(&mut out);
    wire::bind(&mut out, "", "keep", &[Some("y")]);
    wire::execute(&mut out, "", 0);
    wire::sync(&mut out);
    a.send(&out).await;
    let got = a.recv_ready(2).await;
    assert_eq!(tags(&got), "EZ2DCZ", "{got:?}");
    assert_eq!(got[0].error().1, "42601");
    assert_eq!(
        values(&got),
        vec![Some("y!".into())],
        "`keep` survived the skipped Close"
    );
    let got = run(&mut a, "after", "1").await;
    assert_eq!(got[0].error().1, "26000", "`after` was skipped: {got:?}");

    let got = run(&mut b, "mine", "z").await;
    assert_eq!(values(&got), vec![Some("z!".into())]);
    proxy.stop().await;
}

/// The unnamed statement lives until the next Parse or simple query, across Syncs: a
/// Bind in a later transaction (asyncpg and pgx do Parse+Describe, then Bind) finds it
/// even on another server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_survives_into_the_next_transaction() {
    let proxy = trust_proxy(2).await;
    let mut a = login(&proxy).await;
    let mut out = BytesMut::new();
    wire::parse(&mut out, "", "select $1::int4 + 40");
    wire::describe(&mut out, b'S', "");
    wire::sync(&mut out);
    a.send(&out).await;
    assert_eq!(tags(&a.recv_ready(1).await), "1tTZ");
    // Another client takes the connection `a` used.
    let mut holder = login(&proxy).await;
    holder.query("begin").await;
    let got = run(&mut a, "", "2").await;
    assert_eq!(tags(&got), "2DCZ", "{got:?}");
    assert_eq!(values(&got), vec![Some("42".into())]);
    holder.query("commit").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepare_and_query_in_transaction_mode() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    let url = proxy.app_url();
    let mut tasks = Vec::new();
    for c in 0..8i32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect(&url).await.expect("connect");
            let stmt = client
                .prepare("select $1::int4 * 10 + $2::int4")
                .await
                .expect("prepare");
            for i in 0..50i32 {
                // query() prepares an unnamed-cached statement of its own each time.
                let row = client.query_one(&stmt, &[&i, &c]).await.expect("execute");
                assert_eq!(row.get::<_, i32>(0), i * 10 + c);
                let rows = client
                    .query("select $1::text as t", &[&format!("c{c}-{i}")])
                    .await
                    .expect("query");
                assert_eq!(rows[0].get::<_, String>(0), format!("c{c}-{i}"));
            }
            let mut tx_client = client;
            let tx = tx_client.transaction().await.expect("begin");
            let s = tx.prepare("select $1::int4").await.expect("prepare in tx");
            let row = tx.query_one(&s, &[&c]).await.expect("in tx");
            assert_eq!(row.get::<_, i32>(0), c);
            tx.commit().await.expect("commit");
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // Each server connection parsed each distinct statement once, not once per client.
    let client = connect(&url).await.expect("connect");
    let n = simple_value(
        &client
            .simple_query("select count(*) from pg_prepared_statements")
            .await
            .expect("count"),
    )
    .expect("a count");
    let n: i64 = n.parse().expect("number");
    assert!(
        (1..=20).contains(&n),
        "a server connection holds {n} statements for 8 clients"
    );
    proxy.stop().await;
}

/// DEALLOCATE by SQL (psycopg 3 does this when its cache evicts) and DEALLOCATE ALL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_by_sql_forgets_the_clients_name() {
    let proxy = trust_proxy(1).await;
    let mut a = login(&proxy).await;
    let mut out = BytesMut::new();
    wire::parse(&mut out, "s1", "select 1");
    wire::parse(&mut out, "s2", "select 2");
    wire::sync(&mut out);
    a.send(&out).await;
    assert_eq!(tags(&a.recv_ready(1).await), "11Z");
    let got = a.query("DEALLOCATE s1").await;
    assert_eq!(tags(&got), "CZ", "{got:?}");
    assert_eq!(got[0].command_tag(), "DEALLOCATE");
    assert_eq!(run(&mut a, "s1", "x").await[0].error().1, "26000");
    let mut out = BytesMut::new();
    wire::query(&mut out, "DEALLOCATE s1");
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(got[0].error().1, "26000", "{got:?}");
    let got = a.query("deallocate all").await;
    assert_eq!(tags(&got), "CZ", "{got:?}");
    assert_eq!(run(&mut a, "s2", "x").await[0].error().1, "26000");
    // The server's own statements are gone too; preparing again works.
    let mut out = BytesMut::new();
    wire::parse(&mut out, "s2", "select 2");
    wire::bind(&mut out, "", "s2", &[]);
    wire::execute(&mut out, "", 0);
    wire::sync(&mut out);
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "12DCZ", "{got:?}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    proxy.stop().await;
}

/// Pitfall 5: DDL changes a shared statement's result type. Each client gets
/// PostgreSQL's own error once, as on a direct connection, and preparing the text again
/// (as drivers do after that error) works: the server's stale copy is dropped, not kept
/// failing for every client of that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_shared_plan_is_replaced_not_kept_failing() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let a = connect(&proxy.app_url()).await.expect("connect");
    let table = clientkit::unique_name("ddl");
    a.batch_execute(&format!(
        "create table {table} (i int); insert into {table} values (1)"
    ))
    .await
    .expect("table");
    let sql = format!("select * from {table}");
    let s1 = a.prepare(&sql).await.expect("prepare");
    assert_eq!(a.query(&s1, &[]).await.expect("run").len(), 1);
    a.batch_execute(&format!("alter table {table} add column j int default 2"))
        .await
        .expect("alter");
    let e = a.query(&s1, &[]).await.expect_err("result type changed");
    assert_eq!(clientkit::sqlstate(&e), "0A000", "{e}");
    // A new preparation of the same text (another name) sees the new shape.
    let s2 = a.prepare(&sql).await.expect("prepare again");
    let rows = a.query(&s2, &[]).await.expect("fresh plan");
    assert_eq!(rows[0].len(), 2);
    let b = connect(&proxy.app_url()).await.expect("connect");
    let rows = b.query(&sql, &[]).await.expect("another client");
    assert_eq!(rows[0].get::<_, i32>(1), 2);
    proxy.stop().await;
}

/// The plan counters PostgreSQL keeps for the statements of `sql` on the server
/// connection `w` is using: one `(generic_plans, custom_plans)` per server copy.
async fn plan_counts(w: &mut Wire, sql: &str) -> Vec<(i64, i64)> {
    let msgs = w
        .query(&format!(
            "select generic_plans, custom_plans from pg_prepared_statements \
             where statement = '{sql}' order by prepare_time"
        ))
        .await;
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let row = m.data_row();
            let n = |i: usize| -> i64 {
                row[i]
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .expect("a count")
            };
            (n(0), n(1))
        })
        .collect()
}

/// `cache_unnamed_statements` (the default): a repeated unnamed statement with a
/// parameter runs from a server-side copy, but PostgreSQL plans every execution for its
/// value, as on a direct connection: the copy is prepared again before PostgreSQL would
/// consider a generic plan (after five custom ones), so `generic_plans` stays 0 while
/// each parse serves five executions. A client's named statement of the same text keeps
/// PostgreSQL's own choice (generic plans after five), untouched by that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_unnamed_statements_are_planned_for_their_values_every_time() {
    assert!(weir_config::Config::default().cache_unnamed_statements);
    // One server connection: every query below sees the same backend.
    let proxy = caching_proxy(1).await;
    let mut a = login(&proxy).await;
    let sql = format!(
        "select $1::int4 + 1 as {}",
        clientkit::unique_name("custom")
    );
    let mut seen = Vec::new();
    for i in 0..22 {
        let mut out = BytesMut::new();
        wire::unnamed_group(&mut out, &sql, &[Some(&i.to_string())]);
        a.send(&out).await;
        let got = a.recv_ready(1).await;
        assert_eq!(tags(&got), "12DCZ", "{got:?}");
        assert_eq!(values(&got), vec![Some((i + 1).to_string())]);
        let counts = plan_counts(&mut a, &sql).await;
        assert!(
            counts.iter().all(|&(generic, _)| generic == 0),
            "execution {}: a generic plan was used: {counts:?}",
            i + 1
        );
        assert!(counts.len() <= 1, "an old copy was left behind: {counts:?}");
        seen.push(counts.first().map_or(0, |&(_, custom)| custom));
    }
    // First sighting: an ordinary unnamed statement (no server copy). Then each copy
    // serves five executions, each with a custom plan: 5 parses for 22 executions.
    let expect: Vec<i64> = (0..22)
        .map(|i| if i == 0 { 0 } else { (i - 1) % 5 + 1 })
        .collect();
    assert_eq!(
        seen, expect,
        "custom plans per server copy after each execution"
    );

    // A named statement of the same text is PostgreSQL's to plan, as on a direct connection.
    let mut out = BytesMut::new();
    wire::parse(&mut out, "mine", &sql);
    wire::sync(&mut out);
    a.send(&out).await;
    assert_eq!(tags(&a.recv_ready(1).await), "1Z");
    for i in 0..8 {
        let got = run(&mut a, "mine", &i.to_string()).await;
        assert_eq!(values(&got), vec![Some((i + 1).to_string())]);
    }
    let counts = plan_counts(&mut a, &sql).await;
    assert_eq!(
        counts.len(),
        2,
        "the named statement has a copy of its own: {counts:?}"
    );
    assert!(
        counts
            .iter()
            .any(|&(generic, custom)| generic == 3 && custom == 5),
        "the named statement went generic after five, as PostgreSQL chooses: {counts:?}"
    );
    proxy.stop().await;
}

/// Re-preparing a cached unnamed statement mid-transaction leaves a portal made from the
/// old copy working: PostgreSQL portals keep their own plan and query text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_outlives_the_renewal_of_its_statement() {
    let proxy = caching_proxy(1).await;
    let mut a = login(&proxy).await;
    let sql = format!(
        "select g as {} from generate_series(1, $1::int4) g",
        clientkit::unique_name("portal")
    );
    a.query("begin").await;
    // Served from a server copy from the second Parse on.
    for _ in 0..2 {
        let mut out = BytesMut::new();
        wire::unnamed_group(&mut out, &sql, &[Some("3")]);
        a.send(&out).await;
        assert_eq!(tags(&a.recv_ready(1).await), "12DDDCZ");
    }
    let mut out = BytesMut::new();
    wire::parse(&mut out, "", &sql);
    wire::bind(&mut out, "cur", "", &[Some("3")]);
    wire::execute(&mut out, "cur", 1);
    wire::sync(&mut out);
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "12DsZ", "{got:?}");
    assert_eq!(values(&got), vec![Some("1".into())]);
    // Enough executions that the copy is closed and parsed again meanwhile.
    for _ in 0..6 {
        let mut out = BytesMut::new();
        wire::unnamed_group(&mut out, &sql, &[Some("2")]);
        a.send(&out).await;
        assert_eq!(tags(&a.recv_ready(1).await), "12DDCZ");
    }
    let mut out = BytesMut::new();
    wire::execute(&mut out, "cur", 0);
    wire::sync(&mut out);
    a.send(&out).await;
    let got = a.recv_ready(1).await;
    assert_eq!(tags(&got), "DDCZ", "{got:?}");
    assert_eq!(values(&got), vec![Some("2".into()), Some("3".into())]);
    a.query("commit").await;
    proxy.stop().await;
}
