//! [`ProxyHandle`]: what the binary's admin glue, the HTTP endpoints and the signal
//! handlers may see and do of a running proxy: snapshots of pools and clients, the
//! configuration in force, `RELOAD`/`SET`, and shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use weir_config::{duration, Config, Overrides, PoolMode};

use crate::client_auth::Credentials;
use crate::pools::PoolEntry;
use crate::registry::ClientInfo;
use crate::session::Shared;

/// A cheap, cloneable handle on a proxy's shared state.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    listen: SocketAddr,
}

/// Settings `SET` may change at runtime: they are read per login, per checkout or by
/// the pools, so a new value takes effect without dropping anything.
pub const SETTABLE: &[&str] = &[
    "admin_users",
    "auth_query_cache_ttl",
    "autoscale",
    "client_idle_timeout",
    "client_login_timeout",
    "default_pool_size",
    "idle_transaction_timeout",
    "log_connections",
    "log_disconnections",
    "log_pooler_errors",
    "max_client_conn",
    "max_connection_rate",
    "max_db_connections",
    "max_pool_size",
    "max_user_connections",
    "min_pool_size",
    "mode",
    "pool_mode",
    "query_timeout",
    "query_wait_timeout",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "server_connect_timeout",
    "server_idle_timeout",
    "server_lifetime",
    "server_login_retry",
    "server_reset_query",
    "shutdown_timeout",
    "stats_period",
    "stats_users",
];

impl ProxyHandle {
    pub(crate) fn new(shared: Arc<Shared>, listen: SocketAddr) -> Self {
        ProxyHandle { shared, listen }
    }

    /// How many idle clients are parked without a task now ([`crate::park`]).
    pub fn parked_clients(&self) -> usize {
        self.shared.parking.len()
    }

    /// The proxy's shared state (pools, clients, registries).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    /// Every upstream (host:port) with its circuit breaker.
    pub fn upstreams(&self) -> Vec<Arc<crate::upstream::Upstream>> {
        self.shared.pools.upstreams().all()
    }

    /// Every pool, one per (database, user).
    pub fn pools(&self) -> Vec<Arc<PoolEntry>> {
        self.shared.pools.all()
    }

    /// Every connected client.
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        self.shared.clients.snapshot()
    }

    /// How many users have credentials.
    pub fn user_count(&self) -> usize {
        self.shared.credentials.len()
    }

    /// Shutdown has begun (`/readyz` must fail).
    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Asks for a graceful shutdown (SIGTERM, `SHUTDOWN`): see [`crate::Proxy::run`].
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    /// Fast shutdown (SIGINT): every client is disconnected now, then the proxy stops.
    pub fn shutdown_fast(&self) {
        self.shared.draining.store(true, Relaxed);
        self.shared.stop.cancel();
        self.shared.clients.stop_all(crate::stop::Stop::Kill);
    }

    /// `RELOAD`/SIGHUP: applies `config` (already loaded and validated) without
    /// dropping a connection. Returns notes about settings that need a restart.
    ///
    /// # Errors
    /// A secret in `config` is unusable; nothing was changed.
    pub fn apply_config(&self, config: Config) -> Result<Vec<String>, String> {
        let credentials = Credentials::from_config(&config).map_err(|e| e.to_string())?;
        // New certificates and keys are read here: new connections use them, open ones
        // keep theirs. A file that does not load leaves everything as it was.
        self.shared
            .tls()
            .reload(&config)
            .map_err(|e| format!("TLS: {e}"))?;
        let old = self.shared.config();
        let mut notes = Vec::new();
        let mut restart = |name: &str, changed: bool| {
            if changed {
                notes.push(format!("{name} changed: takes effect after a restart"));
            }
        };
        restart("listen", old.listen != config.listen);
        restart("http_listen", old.http_listen != config.http_listen);
        restart(
            "unix_socket_dir",
            old.unix_socket_dir != config.unix_socket_dir
                || old.unix_socket_mode != config.unix_socket_mode,
        );
        restart("log_format", old.log_format != config.log_format);
        self.resize_client_limit(config.max_client_conn);
        self.shared.credentials.replace(credentials);
        // auth_user, auth_query or the databases may have changed: look users up again.
        self.shared.auth_query.clear();
        self.shared
            .pools
            .apply_config(Arc::new(config), &self.shared.credentials);
        for note in &notes {
            tracing::warn!("{note}");
        }
        Ok(notes)
    }

    /// `SET key = value`: changes one runtime setting (see [`SETTABLE`]).
    ///
    /// # Errors
    /// Unknown or not runtime-changeable setting, or a value that does not parse or validate.
    pub fn set(&self, key: &str, value: &str) -> Result<(), String> {
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let mut c = (*self.shared.config()).clone();
        let bad = |e: String| format!("invalid value for {key}: {e}");
        let dur = |v: &str| duration::parse(v).map_err(bad);
        let num = |v: &str| v.parse::<u32>().map_err(|e| bad(e.to_string()));
        let flag = |v: &str| {
            weir_config::parse_flag(v).ok_or_else(|| bad(format!("`{v}` is not a boolean")))
        };
        let list = |v: &str| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        match key.as_str() {
            "admin_users" => c.admin_users = list(value),
            "stats_users" => c.stats_users = list(value),
            "client_idle_timeout" => c.client_idle_timeout = dur(value)?,
            "client_login_timeout" => c.client_login_timeout = dur(value)?,
            "idle_transaction_timeout" => c.idle_transaction_timeout = dur(value)?,
            "query_timeout" => c.query_timeout = dur(value)?,
            "query_wait_timeout" => c.query_wait_timeout = dur(value)?,
            "server_connect_timeout" => c.server_connect_timeout = dur(value)?,
            "server_idle_timeout" => c.server_idle_timeout = dur(value)?,
            "server_lifetime" => c.server_lifetime = dur(value)?,
            "server_login_retry" => c.server_login_retry = dur(value)?,
            "shutdown_timeout" => c.shutdown_timeout = dur(value)?,
            "stats_period" => c.stats_period = dur(value)?,
            "default_pool_size" => c.default_pool_size = num(value)?,
            "min_pool_size" => c.min_pool_size = num(value)?,
            "max_pool_size" => c.max_pool_size = num(value)?,
            "max_db_connections" => c.max_db_connections = num(value)?,
            "max_user_connections" => c.max_user_connections = num(value)?,
            "max_connection_rate" => c.max_connection_rate = num(value)?,
            "reserve_pool_size" => c.reserve_pool_size = num(value)?,
            "reserve_pool_timeout" => c.reserve_pool_timeout = dur(value)?,
            "auth_query_cache_ttl" => c.auth_query_cache_ttl = dur(value)?,
            "autoscale" => c.autoscale = flag(value)?,
            "max_client_conn" => c.max_client_conn = num(value)?,
            "log_connections" => c.log_connections = flag(value)?,
            "log_disconnections" => c.log_disconnections = flag(value)?,
            "log_pooler_errors" => c.log_pooler_errors = flag(value)?,
            "pool_mode" => c.pool_mode = value.parse::<PoolMode>().map_err(|e| e.to_string())?,
            "mode" => {
                c.mode = value
                    .parse::<weir_config::Mode>()
                    .map_err(|e| e.to_string())?
            }
            "server_reset_query" => c.server_reset_query = value.to_owned(),
            other if config_keys().contains(&other) => {
                return Err(format!(
                "{other} cannot be changed at runtime; edit the configuration and restart pgweir"
            ))
            }
            other => return Err(format!("unknown setting: {other}")),
        }
        // Validation runs with every override empty: the value alone is checked.
        c.apply_overrides(&Overrides::default())
            .map_err(|e| bad(e.to_string()))?;
        self.resize_client_limit(c.max_client_conn);
        self.shared
            .pools
            .apply_config(Arc::new(c), &self.shared.credentials);
        tracing::info!("SET {key} = {value}");
        Ok(())
    }

    /// Brings the `max_client_conn` semaphore to `target` slots: grows at once, shrinks
    /// as clients leave.
    fn resize_client_limit(&self, target: u32) {
        let old = self.shared.max_client_conn.swap(target, Relaxed);
        if target > old {
            self.shared.limit.add_permits((target - old) as usize);
        } else if target < old {
            let limit = self.shared.limit.clone();
            let n = old - target;
            tokio::spawn(async move {
                if let Ok(permits) = limit.acquire_many_owned(n).await {
                    permits.forget();
                }
            });
        }
    }

    /// How long the proxy has run.
    pub fn uptime(&self) -> Duration {
        self.shared.started_at.elapsed().unwrap_or_default()
    }
}

/// Every top-level configuration key (for telling "read-only" from "unknown" in `SET`).
fn config_keys() -> &'static [&'static str] {
    &[
        "listen",
        "auth_type",
        "auth_file",
        "auth_hba_file",
        "auth_user",
        "auth_query",
        "auth_dbname",
        "max_message_size",
        "max_prepared_statements",
        "track_extra_parameters",
        "session_features",
        "http_listen",
        "unix_socket_dir",
        "unix_socket_mode",
        "log_format",
        "databases",
        "users",
    ]
}
