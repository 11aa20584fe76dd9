//! Shared by the admin, lifecycle and exporter tests: pgweir in-process with its admin
//! console (as the binary runs it), console queries through the real psql, and a
//! second login user on the shared cluster.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use pgweir::admin::{Admin, Loader};
use tokio::task::JoinHandle;
use weir_config::{Config, PoolMode, Secret, UserConfig};
use weir_tests::pg::run_psql;
use weir_tests::{app_config, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};

/// pgweir with its admin console, in-process.
pub struct Running {
    pub addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub admin: Arc<Admin>,
    pub task: JoinHandle<()>,
}

impl Running {
    /// A libpq URL for `user` on `db` through the proxy.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{db}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// The app database as the SCRAM user.
    pub fn app_url(&self) -> String {
        self.url(SCRAM_USER, SCRAM_PASSWORD, "app")
    }

    /// The admin console as the admin user (`app_scram`).
    pub fn admin_url(&self) -> String {
        self.url(SCRAM_USER, SCRAM_PASSWORD, "pgweir")
    }

    /// The console as the stats user (`app_md5`).
    pub fn stats_url(&self) -> String {
        self.url(MD5_USER, MD5_PASSWORD, "pgbouncer")
    }

    /// Runs `sql` on the console as the admin, unaligned with `|` separators.
    pub fn admin(&self, sql: &str) -> Output {
        console(&self.admin_url(), sql)
    }

    /// Stops the proxy (graceful) and waits for it.
    pub async fn stop(self) {
        self.admin.handle().shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// Runs `sql` through psql on `url`: unaligned, `|`-separated, with a header line.
pub fn console(url: &str, sql: &str) -> Output {
    run_psql(url, &["-X", "-A", "-F", "|", "-c", sql])
}

/// psql's stdout as text; panics with stderr if psql failed.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "psql failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// psql's stderr as text, asserting that it failed.
pub fn err(out: &Output) -> String {
    assert!(
        !out.status.success() || !out.stderr.is_empty(),
        "psql unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A parsed table: header names and rows.
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Parses psql `-A -F |` output (the header, rows, then the `(n rows)` footer).
    pub fn parse(text: &str) -> Table {
        let mut lines = text.lines().filter(|l| !l.is_empty());
        let columns = lines
            .next()
            .unwrap_or_default()
            .split('|')
            .map(str::to_owned)
            .collect();
        let rows = lines
            .filter(|l| !(l.starts_with('(') && l.ends_with(')')))
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect();
        Table { columns, rows }
    }

    /// The value in `column` of the row whose `key_column` is `key`.
    pub fn get(&self, key_column: &str, key: &str, column: &str) -> Option<String> {
        let k = self.columns.iter().position(|c| c == key_column)?;
        let c = self.columns.iter().position(|c| c == column)?;
        self.rows
            .iter()
            .find(|r| r.get(k).is_some_and(|v| v == key))
            .and_then(|r| r.get(c).cloned())
    }
}

/// A console query parsed as a table (panics if psql fails).
pub fn table(url: &str, sql: &str) -> Table {
    Table::parse(&ok(&console(url, sql)))
}

/// The shared cluster's app database in `mode` with `pool_size`, `app_scram` as admin
/// and `app_md5` as stats user.
pub fn admin_config(mode: PoolMode, pool_size: u32) -> Config {
    let mut config = app_config(mode, pool_size);
    config.admin_users = vec![SCRAM_USER.to_owned()];
    config.stats_users = vec![MD5_USER.to_owned()];
    config.users.insert(
        MD5_USER.to_owned(),
        UserConfig {
            password: Some(Secret::Plain(MD5_PASSWORD.to_owned())),
            pool_mode: None,
            max_user_connections: None,
        },
    );
    config
}

/// Starts pgweir as the binary does (admin console, stats line, HTTP when configured).
pub async fn start(config: Config, loader: Option<Loader>) -> Running {
    let started = pgweir::serve::start(config, loader)
        .await
        .expect("pgweir starts");
    let (addr, http_addr, admin) = (started.addr, started.http_addr, started.admin.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = started.run().await {
            panic!("pgweir failed: {e:#}");
        }
    });
    Running {
        addr,
        http_addr,
        admin,
        task,
    }
}
