//! The console over an in-memory stream, driven by tokio-postgres' simple query
//! protocol: PgBouncer's column names and order, command dispatch, roles, errors.
//! The extended protocol is in `extended.rs`.

mod common;

use common::start;
use tokio_postgres::{Client, SimpleQueryMessage};
use weir_admin::{AdminCommand, Role};

/// Column names and rows of the single result of `sql`.
async fn table(client: &Client, sql: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    for m in client.simple_query(sql).await.expect(sql) {
        match m {
            SimpleQueryMessage::RowDescription(d) => {
                cols = d.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
            }
            _ => {}
        }
    }
    (cols, rows)
}

#[tokio::test]
async fn show_commands_have_pgbouncer_columns() {
    let (client, _b, _s) = start(Role::Stats).await;
    let (cols, rows) = table(&client, "show pools;").await;
    assert_eq!(
        cols.join(","),
        "database,user,cl_active,cl_waiting,cl_active_cancel_req,cl_waiting_cancel_req,sv_active,\
         sv_active_cancel,sv_being_canceled,sv_idle,sv_used,sv_tested,sv_login,maxwait,maxwait_us,pool_mode"
    );
    let row = &rows[0];
    assert_eq!(row[0].as_deref(), Some("app"));
    assert_eq!(row[2].as_deref(), Some("3"));
    assert_eq!(row[13].as_deref(), Some("2"));
    assert_eq!(row[14].as_deref(), Some("500000"));

    let (cols, rows) = table(&client, "SHOW STATS").await;
    assert_eq!(cols.len(), 16);
    assert_eq!(
        &cols[..3],
        ["database", "total_xact_count", "total_query_count"]
    );
    assert_eq!(cols[14], "avg_wait_time");
    assert_eq!(cols[15], "total_requests");
    assert_eq!(rows[0][1].as_deref(), Some("7"));
    assert_eq!(rows[0][15].as_deref(), Some("14"));

    let (cols, _) = table(&client, "SHOW STATS_TOTALS").await;
    assert_eq!(
        cols.join(","),
        "database,xact_count,query_count,bytes_received,bytes_sent,xact_time,query_time,wait_time"
    );
    let (cols, _) = table(&client, "SHOW STATS_AVERAGES").await;
    assert_eq!(cols.len(), 8);

    let (cols, rows) = table(&client, "SHOW CLIENTS").await;
    // PgBouncer 1.18's 18 columns, then pgweir's `pinned`.
    assert_eq!(cols.len(), 19);
    assert_eq!(cols[17], "application_name");
    assert_eq!(cols[18], "pinned");
    assert_eq!(rows[0][8].as_deref(), Some("2023-11-14 22:13:20 UTC"));
    assert_eq!(rows[0][9], None);

    let (cols, rows) = table(&client, "SHOW DATABASES").await;
    assert_eq!(
        cols.join(","),
        "name,host,port,database,force_user,pool_size,min_pool_size,reserve_pool,pool_mode,max_connections,current_connections,paused,disabled"
    );
    assert_eq!(rows[0][4], None);

    let (_, rows) = table(&client, "SHOW LISTS").await;
    let names: Vec<_> = rows
        .iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    assert_eq!(names.len(), 12);
    assert_eq!(names[0], "databases");
    assert_eq!(names[11], "dns_pending");

    let (cols, rows) = table(&client, "SHOW STATE").await;
    assert_eq!(cols, ["key", "value"]);
    assert_eq!(rows[0], [Some("active".into()), Some("yes".into())]);

    let (_, rows) = table(&client, "SHOW VERSION").await;
    assert!(rows[0][0]
        .as_deref()
        .is_some_and(|v| v.starts_with("PgBouncer 1.18.0 (pgweir ")));

    let (cols, rows) = table(&client, "SHOW CONFIG").await;
    assert_eq!(cols, ["key", "value", "default", "changeable"]);
    assert_eq!(rows[0][3].as_deref(), Some("yes"));

    let (cols, rows) = table(&client, "SHOW LATENCY").await;
    assert_eq!(cols.len(), 17);
    assert_eq!(cols[2], "query_p50_us");
    let max: u64 = rows[0][6]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("max");
    assert!((5000..=5005).contains(&max), "{max}");
    assert_eq!(rows[0][16].as_deref(), Some("0"));

    let (cols, rows) = table(&client, "SHOW QUERIES").await;
    assert_eq!(
        cols,
        [
            "fingerprint",
            "query",
            "calls",
            "total_time_us",
            "mean_us",
            "p99_us"
        ]
    );
    assert_eq!(
        rows[0][1].as_deref(),
        Some("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
    );
    assert_eq!(rows[0][2].as_deref(), Some("2"));

    for list in ["USERS", "MEM", "SERVERS", "TOTALS", "client_encoding"] {
        let (cols, _) = table(&client, &format!("SHOW {list}")).await;
        assert!(!cols.is_empty(), "{list}");
    }
}

#[tokio::test]
async fn several_statements_help_and_empty_queries() {
    let (client, _b, _s) = start(Role::Admin).await;
    let msgs = client
        .simple_query("SHOW USERS; show version;")
        .await
        .expect("two");
    let completes = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 2);
    assert!(client.simple_query("SHOW HELP").await.is_ok());
    assert!(client.simple_query(";").await.is_ok());
    assert!(client
        .simple_query("SET client_encoding = 'UTF8'")
        .await
        .is_ok());
}

#[tokio::test]
async fn admin_commands_reach_the_backend() {
    let (client, backend, _s) = start(Role::Admin).await;
    client
        .simple_query("PAUSE app; RESUME; reconnect; SET default_pool_size = 30; RELOAD")
        .await
        .expect("commands");
    assert_eq!(
        *backend.commands.lock().unwrap(),
        vec![
            AdminCommand::Pause(Some("app".into())),
            AdminCommand::Resume(None),
            AdminCommand::Reconnect(None),
            AdminCommand::Set {
                key: "default_pool_size".into(),
                value: "30".into()
            },
            AdminCommand::Reload,
        ]
    );
    let err = client.simple_query("KILL nope").await.expect_err("refused");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message() == "no such database: nope"),
        "{err}"
    );
    // The session goes on after an error.
    assert!(client.simple_query("SHOW STATE").await.is_ok());
}

#[tokio::test]
async fn stats_users_may_only_show() {
    let (client, backend, _s) = start(Role::Stats).await;
    let err = client.simple_query("PAUSE").await.expect_err("refused");
    let db = err.as_db_error().expect("db error");
    assert_eq!(db.code().code(), "42501");
    assert_eq!(db.message(), "admin access needed");
    assert!(backend.commands.lock().unwrap().is_empty());
    assert!(client.simple_query("SHOW POOLS").await.is_ok());
}

#[tokio::test]
async fn unknown_commands_point_to_show_help() {
    let (client, _b, _s) = start(Role::Admin).await;
    for bad in ["SELECT 1", "SHOW NOTHING", "FROB"] {
        let err = client.simple_query(bad).await.expect_err(bad);
        let db = err.as_db_error().expect("db error");
        assert_eq!(db.code().code(), "42601");
        assert!(db.message().contains("SHOW HELP"), "{}", db.message());
    }
}

#[tokio::test]
async fn terminate_ends_the_session_cleanly() {
    let (client, _b, server) = start(Role::Admin).await;
    drop(client);
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("session ended")
        .expect("no panic");
}
