//! Command line: flags (each also settable as `PGWEIR_<NAME>`, overriding the config
//! file) and the `check`, `demo`, `import`, `metrics-doc` and `healthcheck` subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use weir_config::{Config, ConfigError, LogFormat, Overrides, PoolMode};

/// pgweir: a PostgreSQL connection pooler that stays up when the database is under load.
#[derive(Debug, Clone, Parser)]
#[command(name = "pgweir", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand, run the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file (proxy.toml).
    #[arg(long, short = 'c', env = "PGWEIR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to accept clients on, e.g. 0.0.0.0:6432.
    #[arg(long, env = "PGWEIR_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// The database as a libpq URL, postgres://user:password@host:port/dbname; clients log in
    /// with that same user and password.
    #[arg(long, env = "PGWEIR_UPSTREAM", global = true)]
    pub upstream: Option<String>,
    /// session: a server connection per client; transaction: shared between transactions.
    #[arg(long, env = "PGWEIR_POOL_MODE", global = true)]
    pub pool_mode: Option<PoolMode>,
    /// Server connections per (database, user) pool [default: 20].
    #[arg(long, env = "PGWEIR_POOL_SIZE", global = true)]
    pub pool_size: Option<u32>,
    /// Most client connections accepted at once [default: 10000].
    #[arg(long, env = "PGWEIR_MAX_CLIENT_CONN", global = true)]
    pub max_client_conn: Option<u32>,
    /// Runtime worker threads [default: 1 on machines with up to 2 CPUs, else one per CPU].
    #[arg(long, env = "PGWEIR_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// Write to sockets one send at a time instead of batching each runtime turn's
    /// writes into one io_uring submission (batching falls back by itself where
    /// io_uring is unavailable).
    #[arg(long, env = "PGWEIR_NO_IO_URING", global = true)]
    pub no_io_uring: bool,
    /// Log lines as text or json.
    #[arg(long, env = "PGWEIR_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
    /// Users who may run every admin console command (database `pgweir`), comma-separated.
    #[arg(long, env = "PGWEIR_ADMIN_USERS", global = true, value_delimiter = ',')]
    pub admin_users: Option<Vec<String>>,
    /// Users who may run the admin console's SHOW commands, comma-separated.
    #[arg(long, env = "PGWEIR_STATS_USERS", global = true, value_delimiter = ',')]
    pub stats_users: Option<Vec<String>>,
    /// Address of /metrics, /healthz, /readyz and /api/v1 [default: 127.0.0.1:9930];
    /// an empty value turns the endpoint off.
    #[arg(long, env = "PGWEIR_HTTP_LISTEN", global = true, value_parser = parse_http_listen)]
    pub http_listen: Option<HttpListen>,
}

/// `--http-listen`: an address, or off (an empty value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

fn parse_http_listen(s: &str) -> Result<HttpListen, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(HttpListen(None));
    }
    s.parse()
        .map(|a| HttpListen(Some(a)))
        .map_err(|e| format!("`{s}` is not an address like 127.0.0.1:9930 (or empty for off): {e}"))
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validate the configuration, print what is wrong, exit 1 on error.
    Check,
    /// Start a throwaway PostgreSQL and pgweir in front of it, and print a DATABASE_URL
    /// and the HTTP URLs (on free ports when the default ones are in use).
    Demo,
    /// Translate a PgBouncer configuration into proxy.toml (on stdout); what does not
    /// carry over is listed on stderr with the reason.
    Import {
        /// The pgbouncer.ini to read (its %include files are read too).
        ini: PathBuf,
        /// A userlist.txt to use instead of the ini's auth_file.
        userlist: Option<PathBuf>,
    },
    /// Print the metric families of /metrics (name, type, help) as a Markdown table.
    MetricsDoc,
    /// GET /healthz on --http-listen (PGWEIR_HTTP_LISTEN, default 127.0.0.1:9930; an
    /// unspecified address is probed on loopback); exit 0 on 200 (container HEALTHCHECK).
    Healthcheck,
}

impl Cli {
    /// The command-line and environment values that override the file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            upstream: self.upstream.clone(),
            pool_mode: self.pool_mode,
            pool_size: self.pool_size,
            max_client_conn: self.max_client_conn,
            log_format: self.log_format,
            admin_users: self.admin_users.clone().map(clean_list),
            stats_users: self.stats_users.clone().map(clean_list),
            http_listen: self.http_listen.map(|h| h.0),
        }
    }

    /// Whether a configuration file is used (`RELOAD` and SIGHUP re-read it).
    pub fn has_config_file(&self) -> bool {
        self.config.is_some()
    }

    /// The configuration: the file (if any) with flags and environment applied, validated.
    ///
    /// # Errors
    /// Whatever is wrong with the file or the flags, naming file, line and key.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        match &self.config {
            Some(path) => Config::load_with_overrides(path, &self.overrides()),
            None => {
                let mut config = Config::default();
                config.apply_overrides(&self.overrides())?;
                Ok(config)
            }
        }
    }
}

/// Trims names and drops empty ones (`--admin-users "a, b,"`).
fn clean_list(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}
