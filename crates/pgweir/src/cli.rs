//! Command line: flags (each also settable as `PGWEIR_<NAME>`, overriding the config
//! file) and the `check` and `demo` subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use weir_config::{Config, ConfigError, LogFormat, Overrides, PoolMode};

/// pgweir: a PostgreSQL connection pooler that stays up when the database is under load.
#[derive(Debug, Parser)]
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
    /// Log lines as text or json.
    #[arg(long, env = "PGWEIR_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, print what is wrong, exit 1 on error.
    Check,
    /// Start a throwaway PostgreSQL and pgweir in front of it, and print a DATABASE_URL.
    Demo,
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
            ..Overrides::default()
        }
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
