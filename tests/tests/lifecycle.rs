//! Lifecycle: SIGHUP reloads the pool size live, SIGTERM lets running transactions
//! commit while new clients get 57P01, PAUSE/RESUME under load costs no client an error.

mod admin_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use admin_support::{admin_config, ok, start, table};
use tokio::sync::Barrier;
use tokio_postgres::error::SqlState;
use weir_config::{Config, PoolMode};
use weir_tests::{connect, eventually, shared_cluster, APP_DB, SCRAM_PASSWORD, SCRAM_USER};

fn signal_self(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Installs pgweir's signal handlers and gives tokio a moment to register them (an
/// unhandled SIGTERM would end the test process).
async fn install_signals(admin: Arc<pgweir::admin::Admin>) {
    tokio::spawn(pgweir::signals::on_signals(admin));
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn write_config(path: &Path, pool_size: u32) {
    let pg = shared_cluster();
    let body = format!(
        "listen = \"127.0.0.1:0\"\nhttp_listen = \"\"\ndefault_pool_size = {pool_size}\n\
         admin_users = [\"{SCRAM_USER}\"]\n\n[databases.{APP_DB}]\nhost = \"{}\"\nport = {}\n\n\
         [users.{SCRAM_USER}]\npassword = \"{SCRAM_PASSWORD}\"\n",
        pg.host(),
        pg.port()
    );
    std::fs::write(path, body).expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_changes_the_pool_size_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    write_config(&path, 1);
    let loader_path = path.clone();
    let loader: pgweir::admin::Loader =
        Arc::new(move || Config::load(&loader_path).map_err(|e| e.to_string()));
    let config = Config::load(&path).expect("config loads");
    let pgweir = start(config, Some(loader)).await;
    install_signals(pgweir.admin.clone()).await;

    let started = Instant::now();
    let mut sleepers = Vec::new();
    for _ in 0..3 {
        let client = connect(&pgweir.app_url()).await.expect("login");
        sleepers.push(tokio::spawn(async move {
            client.simple_query("SELECT pg_sleep(4)").await.map(|_| ())
        }));
    }
    let shared = pgweir.admin.handle().shared().clone();
    let stats = move || {
        shared
            .pools
            .all()
            .first()
            .map(|e| e.pool.stats())
            .unwrap_or_default()
    };
    let s = stats.clone();
    assert!(
        eventually(Duration::from_secs(5), || s().active == 1
            && s().waiting == 2)
        .await,
        "one server, two clients waiting"
    );
    write_config(&path, 3);
    signal_self("-HUP");
    let s = stats.clone();
    assert!(
        eventually(Duration::from_secs(2), || s().active == 3).await,
        "the waiting clients got servers after the reload: {:?}",
        s()
    );
    assert_eq!(
        table(&pgweir.admin_url(), "SHOW DATABASES")
            .get("name", APP_DB, "pool_size")
            .as_deref(),
        Some("3")
    );
    for s in sleepers {
        s.await
            .expect("task")
            .expect("no client error across the reload");
    }
    // Served one after another they would take 12 s; a loaded box may be slow to
    // reload, so the sleeps are long enough that the first is still running then.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ran in parallel after the reload"
    );
    // RELOAD on the console does the same.
    write_config(&path, 2);
    ok(&pgweir.admin("RELOAD"));
    assert_eq!(stats().max_size, 2);
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_50_running_transactions_commit_and_refuses_new_clients_with_57p01() {
    const N: usize = 50;
    let mut config = admin_config(PoolMode::Transaction, 60);
    config.shutdown_timeout = Duration::from_secs(15);
    let pgweir = start(config, None).await;
    install_signals(pgweir.admin.clone()).await;
    let setup = connect(&pgweir.app_url()).await.expect("login");
    setup
        .batch_execute("DROP TABLE IF EXISTS drain_t; CREATE TABLE drain_t (i int)")
        .await
        .expect("create table");

    let inside = Arc::new(Barrier::new(N + 1));
    let go = Arc::new(Barrier::new(N + 1));
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = pgweir.app_url();
        let (inside, go) = (inside.clone(), go.clone());
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await.expect("login");
            c.batch_execute(&format!("BEGIN; INSERT INTO drain_t VALUES ({i})"))
                .await
                .expect("begin");
            inside.wait().await;
            go.wait().await;
            c.batch_execute("SELECT pg_sleep(1)")
                .await
                .expect("sleep inside the transaction");
            c.batch_execute("COMMIT")
                .await
                .expect("commit during the drain");
            // Between transactions now: told and closed.
            c.simple_query("SELECT 1")
                .await
                .map(|_| ())
                .expect_err("closed after the drain")
        }));
    }
    inside.wait().await;
    signal_self("-TERM");
    let admin = pgweir.admin.clone();
    assert!(eventually(Duration::from_secs(2), || admin.handle().is_draining()).await);
    go.wait().await;

    let refused = connect(&pgweir.app_url())
        .await
        .expect_err("new clients are refused");
    assert_eq!(
        refused.code(),
        Some(&SqlState::ADMIN_SHUTDOWN),
        "{refused:?}"
    );
    for t in tasks {
        let after = t.await.expect("client task");
        assert!(
            after.code() == Some(&SqlState::ADMIN_SHUTDOWN) || after.is_closed(),
            "{after:?}"
        );
    }
    let rows = shared_cluster()
        .psql(APP_DB, "SELECT count(*) FROM drain_t")
        .expect("superuser psql");
    assert_eq!(rows.trim(), N.to_string(), "every transaction committed");
    tokio::time::timeout(Duration::from_secs(10), pgweir.task)
        .await
        .expect("pgweir exits once drained")
        .expect("task");
}

/// A drain waits for a transaction whose client is silent (idle in transaction, no query
/// running, no Sync owed) and lets its COMMIT through seconds later, in both pool modes,
/// while an idle client is closed at once; then the proxy exits without waiting for
/// `shutdown_timeout`. Guards the relay's rule that shutdown ends a session only between
/// transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_a_silent_open_transaction_commit_late_and_closes_idle_clients_at_once() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let table = format!("drain_silent_{mode:?}").to_lowercase();
        let mut config = admin_config(mode, 2);
        config.shutdown_timeout = Duration::from_secs(20);
        let pgweir = start(config, None).await;
        let tx = connect(&pgweir.app_url()).await.expect("login");
        let idle = connect(&pgweir.app_url()).await.expect("login");
        // In session mode this client now holds a server between transactions.
        idle.simple_query("SELECT 1").await.expect("traffic");
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (i int); \
             BEGIN; INSERT INTO {table} VALUES (1)"
        ))
        .await
        .expect("open a transaction");

        let started = Instant::now();
        pgweir.admin.handle().shutdown();
        assert!(
            eventually(Duration::from_secs(5), || idle.is_closed()).await,
            "{mode:?}: the idle client is closed as soon as the drain begins"
        );
        // Longer than any scheduling hiccup: a relay that let shutdown end a session
        // inside a transaction block would have closed this one by now.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !tx.is_closed(),
            "{mode:?}: the open transaction was cut off"
        );
        tx.batch_execute("COMMIT")
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: COMMIT during the drain: {e:?}"));
        let rows = shared_cluster()
            .psql(APP_DB, &format!("SELECT count(*) FROM {table}"))
            .expect("superuser psql");
        assert_eq!(rows.trim(), "1", "{mode:?}: the transaction committed");
        // Between transactions now: the last session ends and the drain is over.
        tokio::time::timeout(Duration::from_secs(5), pgweir.task)
            .await
            .unwrap_or_else(|_| panic!("{mode:?}: pgweir exits once drained"))
            .expect("task");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?}: the drain ended with the transaction, not at shutdown_timeout"
        );
        assert!(tx.is_closed(), "{mode:?}: closed after its transaction");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_under_load_cost_no_client_an_error() {
    let pgweir = start(admin_config(PoolMode::Transaction, 4), None).await;
    let until = Instant::now() + Duration::from_secs(3);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let client = connect(&pgweir.app_url()).await.expect("login");
        workers.push(tokio::spawn(async move {
            let mut done = 0u32;
            while Instant::now() < until {
                client
                    .batch_execute("BEGIN; SELECT pg_sleep(0.01); COMMIT")
                    .await
                    .expect("no client error");
                done += 1;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        ok(&pgweir.admin("PAUSE"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        ok(&pgweir.admin("RESUME"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut total = 0;
    for w in workers {
        total += w.await.expect("worker: no client error");
    }
    assert!(total > 8, "transactions ran around the pauses: {total}");
    pgweir.stop().await;
}
