//! Server connection pools for pgweir, generic over the connection type.
//!
//! The pool knows nothing about PostgreSQL: the proxy implements
//! [`ManageConnection`] for its server connections (connect and log in, "is this
//! connection clean enough to reuse", "is this idle socket still alive"), and the
//! pool does the rest:
//!
//! - [`Pool::get`] checks out a connection: the most recently used idle one
//!   (probed with [`ManageConnection::is_alive`]), else a new one if the pool is
//!   under `max_size` (connects in flight count against it), else it waits in a
//!   FIFO wait queue for up to `wait_timeout` (one expiry task per pool times waiters
//!   out, not a timer per wait).
//! - [`PooledConnection`] is the RAII checkout; dropping it checks the connection
//!   in (straight to the first waiter if there is one) or closes it.
//! - [`Pool::spawn_maintenance`] keeps `min_size` warm and reaps idle, old and
//!   dead connections.
//! - [`PoolMetrics`] holds counters and sharded HDR histograms that the proxy,
//!   the admin console and the scaling engine share.
//!
//! Hot path: one checkout and one checkin per transaction, each a single short
//! mutex section with no allocation unless the caller has to wait.

#![warn(missing_docs)]

pub mod breaker;
pub mod clock;
mod control;
mod expiry;
mod guard;
mod maintenance;
mod metrics;
mod pool;
pub mod query_stats;
mod queue;
mod request;
mod servers;
mod sizing;
mod state;
#[cfg(test)]
mod test_support;

use std::future::Future;
use std::time::Duration;

pub use guard::PooledConnection;
pub use metrics::PoolMetrics;
pub use pool::Pool;
pub use request::{Checkout, Class};
pub use servers::{ConnLabel, ServerInfo, ServerState};

/// What the pool needs to know about a connection type: how to open one and
/// whether an existing one may be reused.
///
/// Implementations must not panic: the checks run inside the checkin path
/// (a `Drop`).
pub trait ManageConnection: Send + Sync + 'static {
    /// The pooled connection (for the proxy: a logged-in server connection).
    type Connection: Send + 'static;
    /// The error `connect` fails with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Open and log in a new connection (the pool applies `connect_timeout` around it).
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// May this connection serve another client (idle, no transaction, nothing
    /// pending)? Checked at every checkin.
    fn is_reusable(&self, conn: &Self::Connection) -> bool;

    /// Whether a failed connect (`None`: it timed out) should make the pool fail fast
    /// for `login_retry` (default: every failure). A manager whose failures something
    /// else already guards against (an upstream's circuit breaker) says no for those.
    fn backs_off(&self, _error: Option<&Self::Error>) -> bool {
        true
    }

    /// Cheap non-blocking liveness probe of an IDLE connection: false if the peer
    /// closed it or it has unexpected bytes to read (an idle pooled connection
    /// that becomes readable is dead or desynced: close it). Called at checkout
    /// and by maintenance.
    fn is_alive(&self, conn: &mut Self::Connection) -> bool;

    /// What to show about a connection in `SHOW SERVERS` (backend pid, addresses);
    /// asked once, right after `connect`.
    fn describe(&self, _conn: &Self::Connection) -> ConnLabel {
        ConnLabel::default()
    }
}

/// Sizing and timing of one pool; may be replaced at runtime with
/// [`Pool::update_settings`].
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Most connections open at once, counting idle, checked out and connecting.
    pub max_size: u32,
    /// Connections maintenance keeps open (capped at `max_size`).
    pub min_size: u32,
    /// How long a checkout may wait in the queue, counted from when it started; `None`
    /// waits forever. A change applies to checkouts already waiting.
    pub wait_timeout: Option<Duration>,
    /// Time limit for [`ManageConnection::connect`].
    pub connect_timeout: Duration,
    /// Idle connections unused this long are closed (never below `min_size`).
    pub idle_timeout: Option<Duration>,
    /// Connections older than this are closed when idle or at checkin.
    pub max_lifetime: Option<Duration>,
    /// After a failed connect, maintenance waits this long before trying again.
    pub login_retry: Duration,
    /// Most checkouts waiting at once; one more is shed (or sheds a less important
    /// waiter). 0 = unlimited.
    pub max_queue: usize,
    /// Waiting this long lifts a waiter one class, so no class starves.
    pub priority_aging: Duration,
    /// PgBouncer's `reserve_pool_size`: extra connections the pool may open beyond its
    /// size once a checkout has waited `reserve_timeout`. 0 = none.
    pub reserve_size: u32,
    /// PgBouncer's `reserve_pool_timeout`: how long a checkout waits before the reserve
    /// opens.
    pub reserve_timeout: Duration,
    /// The last this many connections of the size go only to [`Class::Critical`]
    /// checkouts (at most the size - 1 takes effect). 0 = none.
    pub reserve_critical: u32,
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// No connection became free within `wait_timeout`.
    #[error("timed out waiting for a server connection after {0:?}")]
    Timeout(Duration),
    /// Opening a new connection failed.
    #[error("could not connect to the server: {0}")]
    Connect(E),
    /// Opening a new connection took longer than `connect_timeout`.
    #[error("timed out connecting to the server after {0:?}")]
    ConnectTimeout(Duration),
    /// The last connect failed less than `login_retry` ago and the pool has no
    /// connection to wait for: fail fast instead of piling up connect attempts on a
    /// server that is down (PgBouncer's `server_login_retry`).
    #[error("server login has been failing, next attempt in {0:?} (server_login_retry)")]
    LoginRetry(Duration),
    /// The pool was closed with [`Pool::close`].
    #[error("pool is closed")]
    Closed,
    /// Shed under overload: the queue was full (`max_queue`), or the expected wait was
    /// longer than the checkout's budget.
    #[error("{reason}")]
    Shed {
        /// Why.
        reason: ShedReason,
    },
}

/// Why a checkout was shed under overload; its text is the client's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShedReason {
    /// No connection is free and the checkout may not wait at all.
    #[error("pgweir: shed under overload: no server connection is free and this request may not wait for one; retry later")]
    MayNotWait,
    /// The expected wait (from the wait histogram and the release rate) is longer than
    /// the checkout may wait.
    #[error("pgweir: shed under overload: the expected wait for a server connection ({} ms) is longer than this client may wait ({} ms); retry later", expected.as_millis(), budget.as_millis())]
    Hopeless {
        /// The expected wait.
        expected: Duration,
        /// What the checkout may wait.
        budget: Duration,
    },
    /// `max_queue` clients already wait.
    #[error("pgweir: shed under overload: {waiting} clients already wait for a server connection (max_queue = {max_queue}); retry later")]
    QueueFull {
        /// Clients waiting.
        waiting: usize,
        /// `max_queue`.
        max_queue: usize,
    },
}

/// A point-in-time view of a pool, for `SHOW POOLS`, metrics and the scaling engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolStats {
    /// Connections ready in the idle list.
    pub idle: u32,
    /// Connections checked out.
    pub active: u32,
    /// Connections being opened.
    pub connecting: u32,
    /// Checkouts waiting in the queue.
    pub waiting: u32,
    /// The current `max_size` (the ceiling).
    pub max_size: u32,
    /// The current `min_size` (the floor).
    pub min_size: u32,
    /// The size in force: the scaling engine's target within the bounds, else `max_size`.
    pub size: u32,
    /// The scaling engine's target, when it sizes this pool.
    pub target: Option<u32>,
    /// How long the longest current waiter has waited (zero when none waits).
    pub max_wait: Duration,
    /// Taken by the pool itself: being probed or closed (`sv_used`).
    pub held: u32,
    /// `PAUSE` is in force.
    pub paused: bool,
    /// The latest connect attempt failed (cleared by the next success).
    pub login_failing: bool,
    /// Checkouts waiting per class, most important first ([`Class::ALL`]'s order).
    pub waiting_by_class: [u32; 5],
    /// Connections open beyond the size because the reserve is in use (`size`
    /// includes the reserve while it is).
    pub reserve_in_use: u32,
}
