//! [`Shared`], the state every session of one proxy shares, and [`Ticket`], a session's
//! place under `max_client_conn` and in the drain count.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use weir_config::Config;

use crate::admin_hook::AdminConsole;
use crate::cancel::CancelRegistry;
use crate::client_auth::Credentials;
use crate::park::ParkingLot;
use crate::pools::Pools;
use crate::prepared::StatementRegistry;
use crate::registry::ClientRegistry;

/// State shared by every session of one proxy.
pub struct Shared {
    /// The configuration the proxy started with. Read [`Shared::config`] instead: it
    /// follows `RELOAD` and `SET`. (Kept while the relay moves over.)
    pub config: Arc<Config>,
    /// Users' secrets, derived once per (re)load.
    pub credentials: Credentials,
    /// Secrets fetched with `auth_query`, cached for `auth_query_cache_ttl`.
    pub auth_query: crate::auth_query::AuthQueryCache,
    /// `max_connection_rate`'s buckets by source address.
    pub(crate) connection_rate: crate::rate::ConnectionRate,
    /// The server connection pools (they hold the configuration in force).
    pub pools: Pools,
    /// Live clients' cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Live clients, for the admin console and `KILL`.
    pub clients: Arc<ClientRegistry>,
    /// Proxy-wide names of prepared statements (transaction mode).
    pub statements: Arc<StatementRegistry>,
    /// Per-fingerprint query timings for `SHOW QUERIES`.
    pub queries: Arc<weir_pool::query_stats::QueryStats>,
    /// Single-flight query dedup: the flights in progress and what they saved.
    pub dedup: Arc<crate::dedup::Dedup>,
    /// Idle clients parked without a task ([`crate::park`]).
    pub parking: ParkingLot,
    /// Cancelled when the proxy shuts down: idle clients are told and closed, running
    /// transactions finish first.
    pub shutdown: CancellationToken,
    /// Cancelled to ask the accept loop to begin a graceful shutdown (`SHUTDOWN`).
    pub(crate) stop: CancellationToken,
    /// Shutdown has begun: new connections are refused, `/readyz` fails.
    pub(crate) draining: AtomicBool,
    /// `SUSPEND` is in force (reported by `SHOW STATE`).
    pub(crate) suspended: AtomicBool,
    /// The client slots (`max_client_conn`), resized by `SET`/`RELOAD`.
    pub(crate) limit: Arc<Semaphore>,
    /// The size `limit` is being brought to.
    pub(crate) max_client_conn: AtomicU32,
    /// The admin console, installed by the binary.
    pub(crate) admin: OnceLock<Arc<dyn AdminConsole>>,
    /// When the proxy started.
    pub started_at: SystemTime,
}

impl Shared {
    /// Everything a proxy needs for `config`, with no admin console yet.
    ///
    /// # Errors
    /// A configured secret is unusable.
    pub(crate) fn new(mut config: Config) -> Result<Shared, crate::ProxyError> {
        if config.auth_hba_file.is_some() && config.hba.is_none() {
            config
                .read_hba_file()
                .map_err(|e| crate::ProxyError::Config(e.to_string()))?;
        }
        let credentials = Credentials::from_config(&config)?;
        let tls = Arc::new(crate::tls::Tls::from_config(&config)?);
        let config = Arc::new(config);
        Ok(Shared {
            pools: Pools::new(config.clone(), tls),
            limit: Arc::new(Semaphore::new(config.max_client_conn as usize)),
            max_client_conn: AtomicU32::new(config.max_client_conn),
            config,
            credentials,
            auth_query: Default::default(),
            connection_rate: Default::default(),
            cancels: Arc::new(CancelRegistry::default()),
            clients: Arc::new(ClientRegistry::default()),
            statements: Arc::default(),
            queries: Arc::new(weir_pool::query_stats::QueryStats::new(
                weir_pool::query_stats::DEFAULT_CAPACITY,
            )),
            dedup: Arc::default(),
            parking: ParkingLot::default(),
            shutdown: CancellationToken::new(),
            stop: CancellationToken::new(),
            draining: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            admin: OnceLock::new(),
            started_at: SystemTime::now(),
        })
    }

    /// The configuration in force (follows `RELOAD` and `SET`). One read lock and an
    /// `Arc` clone: read it once per session or checkout, not per message.
    pub fn config(&self) -> Arc<Config> {
        self.pools.config()
    }

    /// The admin console, if the binary installed one.
    pub fn admin_console(&self) -> Option<&Arc<dyn AdminConsole>> {
        self.admin.get()
    }

    /// The TLS configurations in force (both legs).
    pub fn tls(&self) -> &crate::tls::Tls {
        &self.pools.tls
    }

    /// Shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }
}

/// What a session holds for the proxy as a whole: its place under `max_client_conn`,
/// and in the count a drain waits for. A parked session keeps it.
#[derive(Default)]
pub struct Ticket {
    // Held for what dropping them does: a free `max_client_conn` place, a drain that
    // stops waiting for this session.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _token: Option<tokio_util::task::task_tracker::TaskTrackerToken>,
}

impl Ticket {
    /// A session's ticket: its `max_client_conn` permit and its drain-tracker token.
    pub fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        token: tokio_util::task::task_tracker::TaskTrackerToken,
    ) -> Self {
        Ticket {
            _permit: Some(permit),
            _token: Some(token),
        }
    }
}
