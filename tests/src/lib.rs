//! End-to-end test harness: a real PostgreSQL ([`pg`]) and pgweir running in-process on
//! `127.0.0.1:0`, driven by real clients (tokio-postgres, psql, pgbench).

pub mod certs;
pub mod pg;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir_config::{Config, Overrides, PoolMode};
use weir_proxy::Proxy;

pub use pg::{shared_cluster, APP_DB, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};

/// A proxy under test ([`start_proxy`]); stopped when dropped.
pub struct TestProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The running proxy's state, for assertions on it.
    pub state: weir_proxy::ProxyHandle,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// A libpq URL for `user`/`password` on `db` through this proxy.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{db}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// The URL of the standard SCRAM test user on the test database.
    pub fn app_url(&self) -> String {
        self.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB)
    }

    /// Stops accepting and waits for the proxy task to end.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A config for pgweir in front of `upstream` (a libpq URL), listening on 127.0.0.1:0.
pub fn config_for(upstream: &str, mode: PoolMode, pool_size: u32) -> Config {
    let mut config = Config::default();
    config
        .apply_overrides(&Overrides {
            listen: Some(([127, 0, 0, 1], 0).into()),
            upstream: Some(upstream.to_owned()),
            pool_mode: Some(mode),
            pool_size: Some(pool_size),
            // Tests run side by side: no fixed HTTP port unless a test asks for one.
            http_listen: Some(None),
            ..Overrides::default()
        })
        .expect("test config is valid");
    // PGWEIR_TEST_CACHE_UNNAMED=0 (or 1) runs every test with cache_unnamed_statements
    // off (or on); unset, the default (on).
    if let Ok(v) = std::env::var("PGWEIR_TEST_CACHE_UNNAMED") {
        config.cache_unnamed_statements = v == "1";
    }
    config
}

/// A config in front of the shared cluster's test database as the SCRAM user.
pub fn app_config(mode: PoolMode, pool_size: u32) -> Config {
    let pg = shared_cluster();
    config_for(&pg.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB), mode, pool_size)
}

/// Binds and starts the proxy. By default it runs as pgweir's binary runs it: on a
/// runtime of its own (one thread, writes batched through io_uring, see
/// [`weir_proxy::uring`]). `PGWEIR_TEST_SHARED_RUNTIME=1` spawns it on the test's own
/// runtime instead, where writes go straight to the sockets.
pub async fn start_proxy(config: Config) -> TestProxy {
    if std::env::var("PGWEIR_TEST_SHARED_RUNTIME").is_ok_and(|v| v == "1") {
        start_proxy_shared(config).await
    } else {
        start_proxy_own_runtime(config).await
    }
}

/// Spawns the proxy on the current runtime.
pub async fn start_proxy_shared(config: Config) -> TestProxy {
    let proxy = Proxy::bind(config).await.expect("proxy binds");
    let addr = proxy.local_addr();
    let state = proxy.handle();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move {
        proxy.run(token).await.expect("proxy runs");
    });
    TestProxy {
        addr,
        state,
        shutdown,
        handle: Some(handle),
    }
}

/// Runs the proxy on a thread and runtime of its own, set up as pgweir's binary sets
/// up one worker: a current-thread runtime whose turns end in
/// [`weir_proxy::uring::before_park`].
pub async fn start_proxy_own_runtime(config: Config) -> TestProxy {
    start_proxy_with_workers(config, 1).await
}

/// Like [`start_proxy_own_runtime`], with `workers` runtime threads as
/// `pgweir --workers N` runs them (more than one: a multi-thread runtime, each
/// worker batching its own writes, tasks moving between workers).
pub async fn start_proxy_with_workers(config: Config, workers: usize) -> TestProxy {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("pgweir-under-test".into())
        .spawn(move || {
            let runtime = weir_proxy::uring::runtime_builder(workers)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let proxy = Proxy::bind(config).await.expect("proxy binds");
                let _ = started_tx.send((proxy.local_addr(), proxy.handle()));
                proxy.run(token).await.expect("proxy runs");
            });
            weir_proxy::uring::drain(weir_proxy::uring::DRAIN_LIMIT);
        })
        .expect("proxy thread");
    let Ok((addr, state)) = started_rx.await else {
        // The thread ended before it bound: show its panic.
        match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the proxy thread ended before binding"),
        }
    };
    let handle = tokio::task::spawn_blocking(move || {
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    });
    TestProxy {
        addr,
        state,
        shutdown,
        handle: Some(handle),
    }
}

/// Connects tokio-postgres to `url` and drives its connection in the background.
///
/// # Errors
/// Whatever the login returned (the test asserts on it).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The secret PostgreSQL stores for `user` (`pg_authid.rolpassword`): an md5 hash or a
/// SCRAM verifier, as a PgBouncer `userlist.txt` copied from `pg_authid` holds it.
pub fn stored_secret(user: &str) -> String {
    shared_cluster()
        .psql(
            "postgres",
            &format!("select rolpassword from pg_authid where rolname = '{user}'"),
        )
        .expect("read pg_authid")
        .trim()
        .to_owned()
}

/// Polls `check` every 50 ms until it is true or `deadline` passes; returns the last answer.
pub async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
