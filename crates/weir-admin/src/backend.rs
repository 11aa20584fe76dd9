//! The boundary between the admin surface and the proxy.
//!
//! [`AdminBackend`] is implemented by the binary over the proxy's registries and
//! pools. Every read is a snapshot returned as plain owned rows, so the console and
//! the HTTP server never hold a proxy lock while they format or write. Row fields
//! are named after PgBouncer's columns (1.18, the version Debian ships and the one
//! pgweir is compared against) so the mapping to `SHOW` output is one to one.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::StatsAverager;

pub use weir_pool::query_stats::QueryRow;

/// A boxed, sendable future (what [`AdminBackend::command`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the admin console and the HTTP endpoints need from the proxy.
///
/// Snapshot methods must be cheap enough to call on every `SHOW` and every scrape
/// (milliseconds, no I/O) and must not block on the hot path's locks for long.
pub trait AdminBackend: Send + Sync + 'static {
    /// One row per (database, user) pool, for `SHOW POOLS`.
    fn pools(&self) -> Vec<PoolRow>;
    /// Every client connection, for `SHOW CLIENTS` (`type` = `C`).
    fn clients(&self) -> Vec<SocketRow>;
    /// Every server connection, for `SHOW SERVERS` (`type` = `S`).
    fn servers(&self) -> Vec<SocketRow>;
    /// Every configured database, for `SHOW DATABASES`.
    fn databases(&self) -> Vec<DatabaseRow>;
    /// Every known user, for `SHOW USERS`.
    fn users(&self) -> Vec<UserRow>;
    /// Every setting, for `SHOW CONFIG`.
    fn config(&self) -> Vec<ConfigRow>;
    /// Object counts, for `SHOW LISTS`.
    fn lists(&self) -> ListsRow;
    /// Memory use by object kind, for `SHOW MEM` (estimates are fine).
    fn mem(&self) -> Vec<MemRow>;
    /// Pause/suspend state, for `SHOW STATE`.
    fn state(&self) -> StateRow;
    /// Totals per database since start, for `SHOW STATS*` and `/api/v1/stats`.
    fn stats(&self) -> Vec<StatsTotals>;
    /// The averager that turns [`AdminBackend::stats`] totals into PgBouncer's
    /// per-period averages; the implementor owns one (`StatsAverager::new(stats_period)`).
    fn averager(&self) -> &StatsAverager;
    /// Counters per pool for `/metrics` (transactions, bytes, errors, pins, ...).
    fn pool_counters(&self) -> Vec<PoolCounters>;
    /// Latency histograms per pool, merged over shards, in µs (`SHOW LATENCY`, `/metrics`).
    fn latency(&self) -> Vec<PoolLatency>;
    /// The top `limit` query fingerprints by total time (`SHOW QUERIES`).
    fn queries(&self, limit: usize) -> Vec<QueryRow>;
    /// What `/readyz` reports.
    fn readiness(&self) -> Readiness;
    /// Waiters per class per pool (`SHOW PRIORITIES`).
    fn priorities(&self) -> Vec<PriorityRow> {
        Vec::new()
    }
    /// The bearer token the HTTP API's changing endpoints require (`None`: they are off).
    fn admin_token(&self) -> Option<String> {
        None
    }
    /// The scaling engine's view of each autoscaled pool (`SHOW SCALING`, `/metrics`).
    fn scaling(&self) -> Vec<crate::scaling::ScalingRow> {
        Vec::new()
    }

    /// The scaling engine's recent decisions, oldest first (`SHOW SCALING_HISTORY`).
    fn scaling_history(&self) -> Vec<crate::scaling::ScalingHistoryRow> {
        Vec::new()
    }

    /// Scaling decisions made so far, by reason (`/metrics`).
    fn scaling_decisions(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// The automation JSON API (`/api/v1/database/automation/...`): `path` is what
    /// follows that prefix, `query` the query string; POSTs arrive already
    /// authenticated. `None`: no such endpoint. Returns the status and a JSON body.
    fn automation(
        &self,
        _post: bool,
        _path: &str,
        _query: &str,
        _body: &[u8],
    ) -> Option<(u16, String)> {
        None
    }

    /// Every upstream's circuit breaker (`SHOW BREAKERS`, `/metrics`).
    fn breakers(&self) -> Vec<BreakerRow> {
        Vec::new()
    }
    /// What single-flight query dedup has done since start (`/metrics`).
    fn dedup(&self) -> DedupRow {
        DedupRow::default()
    }
    /// Carries out an admin command. Resolves when the command has taken effect
    /// (`PAUSE` after in-flight transactions finished, `WAIT_CLOSE` after servers closed).
    ///
    /// # Errors
    /// A message for the client (unknown database, bad setting, ...); the console
    /// reports it as an ErrorResponse and the session goes on.
    fn command(&self, cmd: AdminCommand) -> BoxFuture<'_, Result<(), String>>;
}

/// A command that changes the proxy's state, as typed on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// `PAUSE [db]`: wait for in-flight transactions, then hold new ones.
    Pause(Option<String>),
    /// `RESUME [db]`: release what `PAUSE`/`SUSPEND` held.
    Resume(Option<String>),
    /// `DISABLE db`: refuse new client connections to `db`.
    Disable(String),
    /// `ENABLE db`: accept them again.
    Enable(String),
    /// `RECONNECT [db]`: close server connections as soon as they are released.
    Reconnect(Option<String>),
    /// `KILL db`: disconnect every client and server of `db` at once.
    Kill(String),
    /// `SUSPEND`: flush and stop reading from all sockets.
    Suspend,
    /// `RELOAD`: re-read the config file and apply it.
    Reload,
    /// `SHUTDOWN`: stop the process (graceful drain).
    Shutdown,
    /// `WAIT_CLOSE [db]`: wait until servers marked by `RECONNECT`/`RELOAD` closed.
    WaitClose(Option<String>),
    /// `SET key = value`: change one setting at runtime.
    Set {
        /// Setting name, lowercased.
        key: String,
        /// New value, unquoted.
        value: String,
    },
}

/// One `SHOW POOLS` row (PgBouncer 1.18 columns, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolRow {
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Clients linked to a server connection or idle with nothing to do.
    pub cl_active: u32,
    /// Clients that sent a query and wait for a server connection.
    pub cl_waiting: u32,
    /// Cancel requests being forwarded to a server.
    pub cl_active_cancel_req: u32,
    /// Cancel requests not yet forwarded.
    pub cl_waiting_cancel_req: u32,
    /// Server connections linked to a client.
    pub sv_active: u32,
    /// Server connections carrying a forwarded cancel request.
    pub sv_active_cancel: u32,
    /// Server connections whose query is being cancelled.
    pub sv_being_canceled: u32,
    /// Idle server connections ready for a client.
    pub sv_idle: u32,
    /// Server connections idle long enough to need a check before reuse.
    pub sv_used: u32,
    /// Server connections running the reset or check query.
    pub sv_tested: u32,
    /// Server connections logging in.
    pub sv_login: u32,
    /// Whole seconds the oldest waiting client has waited.
    pub maxwait: u32,
    /// Microsecond part of that wait.
    pub maxwait_us: u32,
    /// `session`, `transaction` or `statement`.
    pub pool_mode: String,
}

impl PoolRow {
    /// Sets `maxwait`/`maxwait_us` from a duration, as PgBouncer splits it.
    pub fn set_maxwait(&mut self, wait: Duration) {
        self.maxwait = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX);
        self.maxwait_us = wait.subsec_micros();
    }
}

/// One `SHOW PRIORITIES` row: how many clients of one class wait in one pool, and how
/// long that class has waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriorityRow {
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// `critical`, `high`, `normal`, `low` or `background`.
    pub class: &'static str,
    /// Clients of that class waiting for a server connection now.
    pub waiting: u32,
    /// Checkouts of that class so far.
    pub checkouts: u64,
    /// 99th percentile of that class's waits for a server connection so far, µs.
    pub p99_wait_us: u64,
}

/// Query dedup's counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DedupRow {
    /// Requests answered from another client's execution.
    pub shared: u64,
    /// Bytes of answers those requests got without a server.
    pub bytes_saved: u64,
    /// Requests that led a flight (ran on a server for possible followers).
    pub flights: u64,
    /// Flights that ended without an answer to share (too big, failed, refused).
    pub unshared: u64,
}

/// One `SHOW BREAKERS` row: an upstream (host:port) and its circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerRow {
    /// `host:port`.
    pub upstream: String,
    /// `closed`, `open` or `half-open`.
    pub state: &'static str,
    /// When it entered that state.
    pub since: SystemTime,
    /// Consecutive connect failures counted now.
    pub failures: u32,
    /// Times it opened.
    pub trips: u64,
    /// The last failure seen (empty: none).
    pub last_error: String,
    /// Milliseconds until the next probe (open only).
    pub next_probe_ms: Option<u64>,
}

/// One `SHOW CLIENTS` or `SHOW SERVERS` row (PgBouncer 1.18 columns, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketRow {
    /// `C` for a client, `S` for a server.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// User name (`(nouser)` before login).
    pub user: String,
    /// Database name (`(nodb)` before login).
    pub database: String,
    /// Clients: `active`, `waiting`, `idle`, `login`; servers: `active`, `idle`, `used`, `tested`, `new`.
    pub state: String,
    /// Peer address (the client's, or the server's host).
    pub addr: String,
    /// Peer port.
    pub port: u16,
    /// Local address of the socket.
    pub local_addr: String,
    /// Local port of the socket.
    pub local_port: u16,
    /// When the connection was made.
    pub connect_time: SystemTime,
    /// When the last request started (None: never).
    pub request_time: Option<SystemTime>,
    /// How long the current wait has lasted (clients in `waiting`).
    pub wait: Duration,
    /// 1 if the connection will be closed at the next opportunity.
    pub close_needed: bool,
    /// Unique id of this connection (PgBouncer shows the object address).
    pub ptr: String,
    /// `ptr` of the linked peer (the server a client holds, or vice versa), empty if none.
    pub link: String,
    /// Servers: the backend PID; clients: 0.
    pub remote_pid: i32,
    /// TLS protocol and cipher, empty for plain TCP.
    pub tls: String,
    /// `application_name` of the client.
    pub application_name: String,
    /// Clients: the session features pinning it to its server connection in transaction
    /// mode (e.g. `LISTEN, a temporary table`), empty if none; servers: empty. A
    /// pgweir column after PgBouncer's.
    pub pinned: String,
}

/// One `SHOW DATABASES` row (PgBouncer 1.18 columns, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatabaseRow {
    /// Name clients connect to.
    pub name: String,
    /// Upstream host (None: Unix socket default).
    pub host: Option<String>,
    /// Upstream port.
    pub port: u16,
    /// Upstream database name.
    pub database: String,
    /// User every connection logs in as, if forced.
    pub force_user: Option<String>,
    /// Pool size (current, for a self-sizing pool).
    pub pool_size: u32,
    /// Connections kept open at least.
    pub min_pool_size: u32,
    /// Extra connections allowed under pressure.
    pub reserve_pool: u32,
    /// Pool mode override (None: the global default).
    pub pool_mode: Option<String>,
    /// Most server connections to this database (0: unlimited).
    pub max_connections: u32,
    /// Server connections open to it now.
    pub current_connections: u32,
    /// Paused by `PAUSE db`.
    pub paused: bool,
    /// Disabled by `DISABLE db`.
    pub disabled: bool,
}

/// One `SHOW USERS` row (PgBouncer 1.18 columns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserRow {
    /// User name.
    pub name: String,
    /// Pool mode override (None: the database's or the global one).
    pub pool_mode: Option<String>,
}

/// One `SHOW CONFIG` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigRow {
    /// Setting name.
    pub key: String,
    /// Current value, as text.
    pub value: String,
    /// Default value, as text.
    pub default: String,
    /// Whether `SET`/`RELOAD` can change it at runtime.
    pub changeable: bool,
}

/// `SHOW LISTS`: one field per PgBouncer list (all are read by exporters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ListsRow {
    /// Databases configured.
    pub databases: u32,
    /// Users known.
    pub users: u32,
    /// Pools open.
    pub pools: u32,
    /// Client slots allocated but unused (0 for pgweir: nothing is preallocated).
    pub free_clients: u32,
    /// Clients connected.
    pub used_clients: u32,
    /// Clients still logging in.
    pub login_clients: u32,
    /// Idle clients parked without a task (pgweir only; not a `SHOW LISTS` row, which
    /// exporters read as PgBouncer's list).
    pub parked_clients: u32,
    /// Server slots allocated but unused (0 for pgweir).
    pub free_servers: u32,
    /// Server connections open.
    pub used_servers: u32,
    /// DNS names cached.
    pub dns_names: u32,
    /// DNS zones cached.
    pub dns_zones: u32,
    /// DNS queries in flight.
    pub dns_queries: u32,
    /// DNS lookups pending.
    pub dns_pending: u32,
}

/// One `SHOW MEM` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemRow {
    /// Object kind (`client`, `server`, `pool`, ...).
    pub name: String,
    /// Bytes per object.
    pub size: u32,
    /// Objects in use.
    pub used: u32,
    /// Objects allocated and free.
    pub free: u32,
    /// Total bytes.
    pub memtotal: u32,
}

/// `SHOW STATE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateRow {
    /// Neither paused nor suspended.
    pub active: bool,
    /// `PAUSE` in effect.
    pub paused: bool,
    /// `SUSPEND` in effect.
    pub suspended: bool,
}

/// Totals for one database since start (the `total_*` columns of `SHOW STATS`).
/// Times are in microseconds, bytes as forwarded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsTotals {
    /// Database name.
    pub database: String,
    /// Transactions pooled.
    pub total_xact_count: u64,
    /// Queries pooled.
    pub total_query_count: u64,
    /// Bytes received from clients.
    pub total_received: u64,
    /// Bytes sent to clients.
    pub total_sent: u64,
    /// Time in transactions, µs.
    pub total_xact_time: u64,
    /// Time in queries, µs.
    pub total_query_time: u64,
    /// Time clients waited for a server, µs.
    pub total_wait_time: u64,
}

/// Counters of one pool for `/metrics` (all monotonic except `pinned_clients`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolCounters {
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Transactions finished.
    pub transactions: u64,
    /// Queries finished.
    pub queries: u64,
    /// Bytes from clients to servers.
    pub bytes_received: u64,
    /// Bytes from servers to clients.
    pub bytes_sent: u64,
    /// Successful checkouts.
    pub checkouts: u64,
    /// Checkouts that gave up after `wait_timeout`.
    pub wait_timeouts: u64,
    /// Checkouts shed under overload.
    pub shed: u64,
    /// Server connections opened.
    pub connects: u64,
    /// Server connect attempts that failed.
    pub connect_errors: u64,
    /// Server connections closed.
    pub closed: u64,
    /// Clients pinned to a server connection now (a gauge).
    pub pinned_clients: u64,
    /// Times a client was pinned.
    pub pins: u64,
    /// Prepared statements parsed on a server because it lacked them (or, for a cached
    /// unnamed statement with parameters, again after five executions).
    pub prepares: u64,
    /// Prepared statement uses served by a statement the server had.
    pub prepare_hits: u64,
    /// Errors sent to clients by SQLSTATE class (first two characters), if tracked.
    pub errors_by_class: Vec<(String, u64)>,
}

impl PoolCounters {
    /// The counters of one pool read from its [`weir_pool::PoolMetrics`]
    /// (`errors_by_class` is left empty for the caller to fill).
    pub fn from_metrics(database: &str, user: &str, m: &weir_pool::PoolMetrics) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Self {
            database: database.to_owned(),
            user: user.to_owned(),
            transactions: m.transactions.load(Relaxed),
            queries: m.queries.load(Relaxed),
            bytes_received: m.bytes_from_client.load(Relaxed),
            bytes_sent: m.bytes_from_server.load(Relaxed),
            checkouts: m.checkouts.load(Relaxed),
            wait_timeouts: m.wait_timeouts.load(Relaxed),
            shed: m.shed.load(Relaxed),
            connects: m.connects.load(Relaxed),
            connect_errors: m.connect_errors.load(Relaxed),
            closed: m.closed.load(Relaxed),
            pinned_clients: m.pinned_clients.load(Relaxed),
            pins: m.pins.load(Relaxed),
            prepares: m.prepares.load(Relaxed),
            prepare_hits: m.prepare_hits.load(Relaxed),
            errors_by_class: Vec::new(),
        }
    }
}

/// Latency histograms of one pool, in microseconds, merged over shards.
#[derive(Debug, Clone)]
pub struct PoolLatency {
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Query durations.
    pub query: Histogram<u64>,
    /// Transaction durations.
    pub transaction: Histogram<u64>,
    /// Checkout waits, every class.
    pub wait: Histogram<u64>,
    /// Checkout waits per class (`critical`, ...), classes without any left out.
    pub wait_by_class: Vec<(&'static str, Histogram<u64>)>,
}

impl PoolLatency {
    /// Snapshots the histograms of one pool's [`weir_pool::PoolMetrics`].
    pub fn from_metrics(database: &str, user: &str, m: &weir_pool::PoolMetrics) -> Self {
        Self {
            database: database.to_owned(),
            user: user.to_owned(),
            query: m.query_histogram(),
            transaction: m.transaction_histogram(),
            wait: m.wait_histogram(),
            wait_by_class: weir_pool::Class::ALL
                .iter()
                .map(|&c| (c.as_str(), m.wait_histogram_of(c)))
                .filter(|(_, h)| !h.is_empty())
                .collect(),
        }
    }
}

/// Whether the proxy should receive traffic (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// The client listener is bound and accepting.
    pub listening: bool,
    /// Shutdown has begun (SIGTERM or `SHUTDOWN`).
    pub draining: bool,
    /// At least one upstream answered recently (breaker not open everywhere).
    pub upstream_reachable: bool,
}

impl Readiness {
    /// Ready: listening, not draining, and some upstream reachable.
    pub fn is_ready(&self) -> bool {
        self.listening && !self.draining && self.upstream_reachable
    }

    /// Why not ready, or `None` when ready.
    pub fn reason(&self) -> Option<&'static str> {
        if self.draining {
            Some("draining: shutdown in progress")
        } else if !self.listening {
            Some("not listening")
        } else if !self.upstream_reachable {
            Some("no upstream reachable")
        } else {
            None
        }
    }
}

/// Which commands a console user may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// In `admin_users`: every command.
    Admin,
    /// In `stats_users`: `SHOW` commands only.
    Stats,
}
