//! The admin console through the real psql: every SHOW with PgBouncer's columns,
//! values that move with load, the admin commands, and who may run what.

mod admin_support;

use std::time::Duration;

use admin_support::{admin_config, console, err, ok, start, table, Table};
use weir_config::PoolMode;
use weir_tests::{connect, eventually, shared_cluster, MD5_PASSWORD, MD5_USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_command_answers_with_pgbouncer_columns() {
    let pgweir = start(admin_config(PoolMode::Transaction, 4), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    client.simple_query("SELECT 1").await.expect("query");

    let pools = table(&pgweir.admin_url(), "SHOW POOLS");
    assert_eq!(
        pools.columns,
        [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode"
        ]
    );
    assert_eq!(
        pools.get("database", "app", "sv_idle").as_deref(),
        Some("1")
    );
    assert_eq!(
        pools.get("database", "app", "pool_mode").as_deref(),
        Some("transaction")
    );

    let stats = table(&pgweir.admin_url(), "SHOW STATS");
    assert_eq!(stats.columns.first().map(String::as_str), Some("database"));
    let queries: u64 = stats
        .get("database", "app", "total_query_count")
        .and_then(|v| v.parse().ok())
        .expect("app stats row");
    assert!(queries >= 1, "total_query_count = {queries}");

    let servers = table(&pgweir.admin_url(), "SHOW SERVERS");
    assert_eq!(servers.rows.len(), 1);
    let pid: i32 = servers
        .get("type", "S", "remote_pid")
        .and_then(|v| v.parse().ok())
        .expect("remote_pid");
    let backends = shared_cluster()
        .psql(
            "app",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        )
        .expect("superuser psql");
    assert_eq!(
        backends.trim(),
        "1",
        "SHOW SERVERS names a real backend pid"
    );

    let clients = table(&pgweir.admin_url(), "SHOW CLIENTS");
    assert!(
        clients.rows.len() >= 2,
        "the app client and the console itself"
    );
    let databases = table(&pgweir.admin_url(), "SHOW DATABASES");
    assert_eq!(
        databases.get("name", "app", "pool_size").as_deref(),
        Some("4")
    );
    assert_eq!(
        databases
            .get("name", "app", "current_connections")
            .as_deref(),
        Some("1")
    );
    let config = table(&pgweir.admin_url(), "SHOW CONFIG");
    assert_eq!(
        config.get("key", "default_pool_size", "value").as_deref(),
        Some("4")
    );
    let lists = table(&pgweir.admin_url(), "SHOW LISTS");
    assert_eq!(lists.rows.len(), 12, "every PgBouncer list");
    for cmd in [
        "SHOW STATS_TOTALS",
        "SHOW STATS_AVERAGES",
        "SHOW USERS",
        "SHOW MEM",
        "SHOW STATE",
        "SHOW VERSION",
        "SHOW HELP",
        "SHOW LATENCY",
        "SHOW QUERIES",
    ] {
        ok(&pgweir.admin(cmd));
    }
    let unknown = err(&pgweir.admin("SHOW NOTHING"));
    assert!(unknown.contains("SHOW HELP"), "{unknown}");
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_active_and_sv_active_move_while_pg_sleep_runs() {
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    let sleeper = tokio::spawn(async move {
        client
            .simple_query("SELECT pg_sleep(1.5)")
            .await
            .map(|_| ())
    });
    let url = pgweir.admin_url();
    let active = |t: &Table, col: &str| t.get("database", "app", col).unwrap_or_default();
    let mut seen = false;
    for _ in 0..100 {
        let t = table(&url, "SHOW POOLS");
        if active(&t, "sv_active") == "1" {
            assert_eq!(active(&t, "cl_active"), "1");
            // The active client and its server point at each other (`link`).
            let clients = table(&url, "SHOW CLIENTS");
            let servers = table(&url, "SHOW SERVERS");
            let client_link = clients.get("state", "active", "link").unwrap_or_default();
            let server_ptr = servers.get("state", "active", "ptr").unwrap_or_default();
            let server_link = servers.get("state", "active", "link").unwrap_or_default();
            let client_ptr = clients.get("state", "active", "ptr").unwrap_or_default();
            assert!(
                !client_link.is_empty(),
                "SHOW CLIENTS link of the active client"
            );
            assert_eq!(client_link, server_ptr);
            assert_eq!(server_link, client_ptr);
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "sv_active never reached 1 while pg_sleep ran");
    sleeper.await.expect("task").expect("pg_sleep");
    let t = table(&url, "SHOW POOLS");
    assert_eq!(active(&t, "sv_active"), "0");
    assert_eq!(active(&t, "sv_idle"), "1");
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_user_can_show_but_not_pause_and_others_are_refused() {
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    ok(&console(&pgweir.stats_url(), "SHOW POOLS"));
    let refused = err(&console(&pgweir.stats_url(), "PAUSE"));
    assert!(refused.contains("admin access needed"), "{refused}");
    assert!(!pgweir.admin.handle().shared().pools.all_paused());

    let mut config = admin_config(PoolMode::Transaction, 2);
    config.stats_users.clear();
    let other = start(config, None).await;
    let denied = err(&console(
        &other.url(MD5_USER, MD5_PASSWORD, "pgweir"),
        "SHOW POOLS",
    ));
    assert!(denied.contains("not allowed"), "{denied}");
    // Wrong password for an admin user: authentication is the same as any client's.
    let wrong = err(&console(
        &other.url("app_scram", "nope", "pgweir"),
        "SHOW POOLS",
    ));
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    other.stop().await;
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_and_resume_releases_with_no_client_error() {
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    client
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("begin");
    // PAUSE waits for the open transaction.
    let url = pgweir.admin_url();
    let pause = tokio::task::spawn_blocking(move || console(&url, "PAUSE app"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was open"
    );
    client.batch_execute("COMMIT").await.expect("commit");
    ok(&pause.await.expect("pause task"));
    let state = table(&pgweir.admin_url(), "SHOW DATABASES");
    assert_eq!(state.get("name", "app", "paused").as_deref(), Some("1"));

    // A new transaction waits (cl_waiting) instead of failing.
    let held = tokio::spawn(async move {
        let r = client.simple_query("SELECT 42").await.map(|_| ());
        (client, r)
    });
    let shared = pgweir.admin.handle().shared().clone();
    assert!(
        eventually(Duration::from_secs(5), || shared
            .pools
            .all()
            .iter()
            .any(|e| e.pool.stats().waiting == 1))
        .await,
        "the query is held by the pause"
    );
    assert_eq!(
        table(&pgweir.admin_url(), "SHOW POOLS")
            .get("database", "app", "cl_waiting")
            .as_deref(),
        Some("1")
    );
    ok(&pgweir.admin("RESUME app"));
    let (_client, r) = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("released")
        .expect("task");
    r.expect("no error after RESUME");
    let again = err(&pgweir.admin("RESUME"));
    assert!(again.contains("not paused"), "{again}");
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_reconnect_wait_close_kill_suspend_and_set() {
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    client.simple_query("SELECT 1").await.expect("query");

    ok(&pgweir.admin("DISABLE app"));
    let refused = connect(&pgweir.app_url()).await.expect_err("disabled");
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("not currently accepting connections"),
        "{refused:?}"
    );
    client
        .simple_query("SELECT 1")
        .await
        .expect("connected clients stay");
    ok(&pgweir.admin("ENABLE app"));
    connect(&pgweir.app_url()).await.expect("enabled again");

    let old_pid = table(&pgweir.admin_url(), "SHOW SERVERS").get("type", "S", "remote_pid");
    ok(&pgweir.admin("RECONNECT app"));
    ok(&pgweir.admin("WAIT_CLOSE app"));
    client
        .simple_query("SELECT 1")
        .await
        .expect("fresh server, no error");
    let new_pid = table(&pgweir.admin_url(), "SHOW SERVERS").get("type", "S", "remote_pid");
    assert_ne!(old_pid, new_pid, "RECONNECT replaced the server connection");

    ok(&pgweir.admin("SET default_pool_size = 7"));
    assert_eq!(
        table(&pgweir.admin_url(), "SHOW DATABASES")
            .get("name", "app", "pool_size")
            .as_deref(),
        Some("7")
    );
    let bad = err(&pgweir.admin("SET listen = '0.0.0.0:1'"));
    assert!(bad.contains("cannot be changed at runtime"), "{bad}");
    let bad = err(&pgweir.admin("SET default_pool_size = 'lots'"));
    assert!(bad.contains("invalid value"), "{bad}");
    let none = err(&pgweir.admin("RELOAD"));
    assert!(none.contains("no configuration file"), "{none}");

    ok(&pgweir.admin("SUSPEND"));
    assert_eq!(table(&pgweir.admin_url(), "SHOW STATE").rows.len(), 3);
    ok(&pgweir.admin("RESUME"));

    ok(&pgweir.admin("KILL app"));
    let gone = client.simple_query("SELECT 1").await.expect_err("killed");
    assert!(
        gone.code() == Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN) || gone.is_closed(),
        "{gone:?}"
    );
    ok(&pgweir.admin("RESUME app"));
    let c2 = connect(&pgweir.app_url())
        .await
        .expect("login after KILL and RESUME");
    c2.simple_query("SELECT 1")
        .await
        .expect("query after RESUME");

    let unknown = err(&pgweir.admin("PAUSE nosuchdb"));
    assert!(unknown.contains("no such database"), "{unknown}");
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_command_drains_and_stops() {
    let pgweir = start(admin_config(PoolMode::Transaction, 2), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    let _ = console(&pgweir.admin_url(), "SHUTDOWN");
    let task = pgweir.task;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops after SHUTDOWN")
        .expect("task");
    assert!(client.simple_query("SELECT 1").await.is_err());
}

/// Pitfall 20: a transaction is counted at each ReadyForQuery 'I', in both modes, so a
/// session-mode client's 40 autocommit statements are 40 transactions (PgBouncer counts
/// 40), not one per session; an explicit BEGIN..COMMIT block is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_counted_at_each_idle_ready_for_query_in_both_modes() {
    for mode in [PoolMode::Session, PoolMode::Transaction] {
        let pgweir = start(admin_config(mode, 2), None).await;
        let xacts = |pgweir: &admin_support::Running| -> u64 {
            table(&pgweir.admin_url(), "SHOW STATS")
                .get("database", "app", "total_xact_count")
                .and_then(|v| v.parse().ok())
                .expect("app stats row")
        };
        let client = connect(&pgweir.app_url()).await.expect("app login");
        client.simple_query("SELECT 1").await.expect("warm-up");
        let before = xacts(&pgweir);
        for i in 0..40 {
            client
                .simple_query(&format!("SELECT {i}"))
                .await
                .expect("autocommit statement");
        }
        client
            .batch_execute("BEGIN; SELECT 1; SELECT 2; COMMIT")
            .await
            .expect("one explicit transaction");
        let counted = xacts(&pgweir) - before;
        assert_eq!(
            counted, 41,
            "{mode:?}: 40 autocommit statements and one block"
        );
        drop(client);
        pgweir.stop().await;
    }
}

/// A pin is visible: `SHOW CLIENTS` says which client is pinned and by what, and the
/// column empties when the feature ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_names_what_pins_a_client() {
    let pgweir = start(admin_config(PoolMode::Transaction, 3), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    client
        .batch_execute("LISTEN chan; CREATE TEMP TABLE keep (a int)")
        .await
        .expect("pin");
    let pinned = || {
        table(&pgweir.admin_url(), "SHOW CLIENTS")
            .rows
            .iter()
            .filter_map(|r| r.last().cloned())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || pinned()
            == ["LISTEN, a temporary table"])
        .await,
        "{:?}",
        pinned()
    );
    client
        .batch_execute("UNLISTEN *; DISCARD TEMP")
        .await
        .expect("unpin");
    assert!(
        eventually(Duration::from_secs(5), || pinned().is_empty()).await,
        "{:?}",
        pinned()
    );
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_queries_counts_every_execution_once_the_client_idles() {
    let pgweir = start(admin_config(PoolMode::Transaction, 4), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    for i in 0..40 {
        client
            .simple_query(&format!("SELECT {i} AS batch_probe"))
            .await
            .expect("query");
    }
    // A session adds its executions in batches (no shared lock per query) and flushes
    // them when it parks, within a sweep or two of going idle.
    let url = pgweir.admin_url();
    let calls = || {
        let t = table(&url, "SHOW QUERIES");
        let q = t.columns.iter().position(|c| c == "query")?;
        let c = t.columns.iter().position(|c| c == "calls")?;
        t.rows
            .iter()
            .find(|r| r.get(q).is_some_and(|v| v.contains("batch_probe")))
            .and_then(|r| r.get(c).cloned())
    };
    let counted = eventually(Duration::from_secs(10), || calls().as_deref() == Some("40")).await;
    assert!(counted, "calls for the probe: {:?}", calls());
    drop(client);
}
