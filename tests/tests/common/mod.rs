//! Helpers shared by the bad-input and fault tests (`bad_input.rs`, `faults.rs`): a raw
//! protocol client ([`raw`]), tokio-postgres connections whose connection-task result
//! the test can inspect (a FATAL sent to an idle client ends up there), superuser SQL
//! off the async workers, and async polling.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

pub mod raw;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};
use weir_config::{AuthType, Config, PoolMode};
use weir_tests::{app_config, shared_cluster, APP_DB};

/// The background task driving a tokio-postgres connection, with the connection's result.
pub type ConnTask = JoinHandle<Result<(), tokio_postgres::Error>>;

/// Bound on any single client call in these tests, so a hang fails instead of stalling.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects tokio-postgres to `url`; unlike `weir_tests::connect`, keeps the connection
/// task so the test can read its result or abort it (an abrupt client disconnect).
///
/// # Errors
/// Whatever the login returned.
pub async fn connect_with_task(url: &str) -> Result<(Client, ConnTask), tokio_postgres::Error> {
    let (client, connection) = tokio::time::timeout(
        CALL_TIMEOUT,
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .expect("login finished in time")?;
    Ok((client, tokio::spawn(connection)))
}

/// Connects and panics on failure.
pub async fn must_connect(url: &str) -> (Client, ConnTask) {
    connect_with_task(url)
        .await
        .unwrap_or_else(|e| panic!("login through pgweir failed: {}", describe(&e)))
}

/// [`app_config`] with `auth_type = trust`, so a raw client logs in without a password
/// (the proxy still logs in to PostgreSQL with the upstream URL's password).
pub fn trust_config(mode: PoolMode, pool_size: u32) -> Config {
    let mut config = app_config(mode, pool_size);
    config.auth_type = AuthType::Trust;
    config
}

/// Runs `sql` as the superuser on the test database, directly (not through the proxy),
/// on a blocking thread; returns psql's `-At` output.
pub async fn superuser(sql: &str) -> String {
    let sql = sql.to_owned();
    tokio::task::spawn_blocking(move || {
        shared_cluster()
            .psql(APP_DB, &sql)
            .unwrap_or_else(|e| panic!("superuser psql failed: {e}"))
    })
    .await
    .expect("psql task")
}

/// Polls the async `check` every 50 ms until it is true or `deadline` passes; returns the last answer.
pub async fn eventually_async<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until exactly one backend is running `sql` (state active); returns its pid.
pub async fn wait_until_running(sql: &str) -> String {
    let probe =
        format!("select pid from pg_stat_activity where query = '{sql}' and state = 'active'");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = superuser(&probe).await;
        if !pid.is_empty() && !pid.contains('\n') {
            return pid;
        }
        assert!(
            Instant::now() < until,
            "{sql:?} never showed up as active in pg_stat_activity (got {pid:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a simple query (bounded by [`CALL_TIMEOUT`]).
///
/// # Errors
/// The query's error.
pub async fn simple(
    client: &Client,
    sql: &str,
) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
    tokio::time::timeout(CALL_TIMEOUT, client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql:?} did not finish within {CALL_TIMEOUT:?}"))
}

/// The first column of the first row of a simple query; panics on error or no row.
pub async fn value(client: &Client, sql: &str) -> String {
    let rows = simple(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql:?} failed: {}", describe(&e)));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql:?} returned no row"))
}

/// The SQLSTATE of a tokio-postgres error, or `""` when it carries none (I/O, closed).
pub fn code(e: &tokio_postgres::Error) -> &str {
    e.code().map_or("", |c| c.code())
}

/// An error with its SQLSTATE, severity and message, for assertion messages.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {} {:?} (hint: {:?})",
            db.severity(),
            db.code().code(),
            db.message(),
            db.hint()
        ),
        None => format!("non-database error: {e}"),
    }
}

/// Waits for a connection task to end and returns its result.
pub async fn connection_result(
    task: ConnTask,
    within: Duration,
) -> Result<(), tokio_postgres::Error> {
    tokio::time::timeout(within, task)
        .await
        .unwrap_or_else(|_| panic!("the connection was not closed within {within:?}"))
        .expect("connection task did not panic")
}

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A throwaway cluster of the test's own (for tests that stop and start it) with the
/// SCRAM user and the test database.
pub fn private_cluster() -> pgweir::cluster::TempCluster {
    use pgweir::cluster::{AuthMethod, ClusterOptions, ClusterUser, TempCluster};
    tokio::task::block_in_place(|| {
        TempCluster::start(ClusterOptions {
            users: vec![ClusterUser::new(
                weir_tests::SCRAM_USER,
                weir_tests::SCRAM_PASSWORD,
                AuthMethod::Scram,
            )],
            databases: vec![(APP_DB.to_owned(), weir_tests::SCRAM_USER.to_owned())],
            ..ClusterOptions::default()
        })
    })
    .unwrap_or_else(|e| panic!("private cluster: {e}"))
}

/// A listener on a free port that accepts TCP connections and never says a word (a
/// black-holed upstream); abort the task to close it.
pub async fn mute_listener() -> (u16, JoinHandle<()>) {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = hole.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            sockets.push(s);
        }
    });
    (port, held)
}
