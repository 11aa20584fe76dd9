//! The pool handle and its shared state, and checkin; a checkout (idle connection, else
//! a new one, else wait) is in `acquire`.
//!
//! Every path that gives something back (checkin, a failed connect, a waiter that
//! gave up holding a grant) goes through [`State::route`] under the lock and
//! [`Inner::finish`] outside it, so a connection or slot handed to a waiter that
//! is already gone is passed on to the next waiter or returned, never lost.

use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::expiry::{Expiry, Kick};
use crate::guard::PooledConnection;
use crate::metrics::PoolMetrics;
use crate::request::Checkout;
use crate::servers::{ServerRegistry, ServerState};
use crate::state::{Conn, Grant, Route, State};
use crate::{ManageConnection, PoolError, PoolSettings, PoolStats};

mod acquire;

type Result<T, M> = std::result::Result<T, PoolError<<M as ManageConnection>::Error>>;

/// A pool of connections made by `M`. Cloning is cheap and shares the pool.
pub struct Pool<M: ManageConnection> {
    pub(crate) inner: Arc<Inner<M>>,
}

/// The shared part of a pool.
pub(crate) struct Inner<M: ManageConnection> {
    pub(crate) manager: M,
    state: Mutex<State<M::Connection>>,
    pub(crate) metrics: PoolMetrics,
    /// Wakes the maintenance task on `close`; kept apart from `Inner` so that task
    /// can wait on it without keeping the pool alive.
    pub(crate) shutdown: Arc<Notify>,
    /// Wakes the maintenance task for an extra pass (a new target to warm up to).
    pub(crate) kick: Arc<Notify>,
    /// Every open connection, for `SHOW SERVERS` and `WAIT_CLOSE`.
    pub(crate) servers: Arc<ServerRegistry>,
    /// `true` while paused; checkouts that find the pool paused wait for `false`.
    pub(crate) gate: watch::Sender<bool>,
    /// Wakes the task that times out queued checkouts (see `expiry`).
    pub(crate) expiry: Expiry,
}

impl<M: ManageConnection> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<M: ManageConnection> std::fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<M: ManageConnection> Pool<M> {
    /// A new, empty pool; nothing is opened until the first checkout or
    /// [`Pool::spawn_maintenance`].
    pub fn new(manager: M, settings: PoolSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                manager,
                state: Mutex::new(State::new(settings)),
                metrics: PoolMetrics::new(),
                shutdown: Arc::new(Notify::new()),
                kick: Arc::new(Notify::new()),
                servers: Arc::new(ServerRegistry::default()),
                gate: watch::Sender::new(false),
                expiry: Expiry::default(),
            }),
        }
    }

    /// The connection manager.
    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// Check out a connection: an idle one (LIFO, probed with `is_alive`), else a
    /// new one if under `max_size`, else wait in the queue up to `wait_timeout`.
    /// Records the time taken in [`PoolMetrics::record_wait`].
    ///
    /// Cancel-safe: dropping the future while it waits or connects returns
    /// whatever it held to the pool.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] if nothing became free in time,
    /// [`PoolError::Connect`] / [`PoolError::ConnectTimeout`] if this caller's
    /// connect failed, [`PoolError::Closed`] once the pool is closed.
    pub async fn get(&self) -> Result<PooledConnection<M>, M> {
        self.checkout(&Checkout::default()).await
    }

    /// [`Pool::get`] for a request: its class orders the wait queue (and who is shed
    /// first), its budget bounds the expected wait.
    ///
    /// # Errors
    /// As [`Pool::get`], and [`PoolError::Shed`] under overload.
    pub async fn checkout(&self, req: &Checkout) -> Result<PooledConnection<M>, M> {
        let start = Instant::now();
        let (conn, at_once) = self.inner.acquire(start, req).await?;
        conn.ticket.meta.set_state(ServerState::Active);
        let metrics = &self.inner.metrics;
        metrics.checkouts.fetch_add(1, Relaxed);
        // An idle connection taken at once waited no whole microsecond: no second clock
        // read (two a transaction are the relay's own).
        let waited = if at_once {
            Duration::ZERO
        } else {
            start.elapsed()
        };
        metrics.record_wait_of(req.class, waited);
        Ok(PooledConnection::new(Arc::clone(&self.inner), conn))
    }

    /// Change settings at runtime (the bounds: RELOAD, `SET`, a mode change; the
    /// scaling engine's target is kept, moved inside the new bounds). Shrinking the
    /// size closes surplus idle connections now and busy ones at checkin; growing it
    /// lets waiters connect. A new `wait_timeout` applies to checkouts already waiting.
    pub fn update_settings(&self, settings: PoolSettings) {
        let mut surplus = Vec::new();
        let kick = {
            let mut st = self.inner.lock();
            st.waiters.aging = settings.priority_aging;
            let new_limit = settings.wait_timeout != st.settings.wait_timeout;
            st.settings = settings;
            // Held connections still count in `total`, so count down separately.
            let mut remaining = st.total();
            let cap = st.cap();
            while remaining > cap {
                let Some(conn) = st.idle.pop_front() else {
                    break;
                };
                st.held += 1;
                remaining -= 1;
                surplus.push(conn);
            }
            if new_limit {
                let pending = st.settings.wait_timeout.is_some() && !st.waiters.is_empty();
                st.expiry.on_change(pending)
            } else {
                Kick::Nothing
            }
        };
        self.inner.kick_expiry(kick);
        let closed = surplus.len();
        drop(surplus);
        self.inner.metrics.closed.fetch_add(closed as u64, Relaxed);
        let mut routes = Vec::new();
        {
            let mut st = self.inner.lock();
            st.held -= u32::try_from(closed).unwrap_or(u32::MAX);
            st.grant_slots(&mut routes);
        }
        for route in routes {
            self.inner.finish(route);
        }
    }

    /// Closes the least recently used idle connection, if there is one; true if it did.
    /// Lets a caller that shares a server-side limit across pools (PgBouncer's
    /// `max_db_connections`) free a connection for another pool.
    pub fn close_idle_lru(&self) -> bool {
        let victim = {
            let mut st = self.inner.lock();
            let victim = st.idle.pop_front();
            if victim.is_some() {
                st.held += 1;
            }
            victim
        };
        let Some(victim) = victim else {
            return false;
        };
        drop(victim);
        self.inner.metrics.closed.fetch_add(1, Relaxed);
        let mut routes = Vec::new();
        {
            let mut st = self.inner.lock();
            st.held -= 1;
            st.grant_slots(&mut routes);
        }
        for route in routes {
            self.inner.finish(route);
        }
        true
    }

    /// The current `wait_timeout`.
    pub fn wait_timeout(&self) -> Option<Duration> {
        self.inner.lock().settings.wait_timeout
    }

    /// A cheap snapshot of the pool's counts.
    pub fn stats(&self) -> PoolStats {
        let (mut stats, oldest) = {
            let st = self.inner.lock();
            let stats = PoolStats {
                idle: u32::try_from(st.idle.len()).unwrap_or(u32::MAX),
                active: st.active,
                connecting: st.connecting,
                waiting: u32::try_from(st.waiters.len() + st.paused_waiters.len())
                    .unwrap_or(u32::MAX),
                max_size: st.settings.max_size,
                min_size: st.settings.min_size,
                size: st.cap(),
                target: st.target,
                max_wait: Duration::ZERO,
                held: st.held,
                paused: st.paused,
                login_failing: st.last_connect_failure.is_some(),
                waiting_by_class: st
                    .waiters
                    .per_class()
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                reserve_in_use: st.reserve_in_use(),
            };
            let oldest = match (st.waiters.oldest(), st.paused_waiters.oldest()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (stats, oldest)
        };
        if let Some(since) = oldest {
            stats.max_wait = Instant::now().saturating_duration_since(since);
        }
        stats
    }

    /// The pool's counters and histograms (shared with the proxy, which records
    /// transactions, queries and bytes into them).
    pub fn metrics(&self) -> &PoolMetrics {
        &self.inner.metrics
    }

    /// Stop the pool: current and future checkouts fail with
    /// [`PoolError::Closed`], idle connections are closed now and busy ones at
    /// checkin, and the maintenance task ends.
    pub fn close(&self) {
        let (idle, waiters, kick) = {
            let mut st = self.inner.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            // Paused checkouts wake up and find the pool closed.
            self.inner.gate.send_replace(false);
            let idle = mem::take(&mut st.idle);
            st.held += u32::try_from(idle.len()).unwrap_or(u32::MAX);
            let waiters: Vec<_> = std::iter::from_fn(|| st.waiters.pop()).collect();
            (idle, waiters, st.expiry.on_change(false))
        };
        // The expiry task, if any, ends.
        self.inner.kick_expiry(kick);
        // Dropping a waiter's sender wakes it with `Closed`.
        drop(waiters);
        let closed = idle.len();
        drop(idle);
        self.inner.metrics.closed.fetch_add(closed as u64, Relaxed);
        self.inner.lock().held -= u32::try_from(closed).unwrap_or(u32::MAX);
        self.inner.shutdown.notify_waiters();
        tracing::debug!(closed, "pool closed");
    }

    /// Spawn the maintenance task (on the current tokio runtime), running every
    /// `interval` until the pool is closed or dropped: keep `min_size` warm
    /// (waiting `login_retry` after a failed connect), close idle connections past
    /// `idle_timeout` (never below `min_size`) or `max_lifetime`, and drop idle
    /// connections that fail `is_alive`. It never exceeds `max_size`.
    pub fn spawn_maintenance(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        crate::maintenance::spawn(&self.inner, interval)
    }
}

impl<M: ManageConnection> Inner<M> {
    /// The state lock. Nothing panics while holding it, but if something did the
    /// counts are still consistent at every unlock, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<M::Connection>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Carry out a routing decision, re-routing grants whose waiter is gone.
    pub(crate) fn finish(&self, mut route: Route<M::Connection>) {
        loop {
            route = match route {
                Route::Done => return,
                Route::Send(tx, grant) => match tx.send(grant) {
                    Ok(()) => return,
                    Err(grant) => self.lock().route(grant),
                },
                Route::Close(conn) => {
                    drop(conn);
                    self.metrics.closed.fetch_add(1, Relaxed);
                    let mut st = self.lock();
                    st.active -= 1;
                    st.free_slot()
                }
            };
        }
    }

    /// Check a connection (counted as active) back in at `at` (else now), or close it.
    pub(crate) fn checkin(
        &self,
        mut conn: Conn<M::Connection>,
        discard: bool,
        at: Option<Instant>,
    ) {
        if discard || !self.manager.is_reusable(&conn.raw) {
            return self.finish(Route::Close(conn));
        }
        let now = at.unwrap_or_else(Instant::now);
        conn.last_used = now;
        conn.ticket.meta.set_state(ServerState::Idle);
        let route = {
            let mut st = self.lock();
            st.note_release(now);
            let expired = st
                .settings
                .max_lifetime
                .is_some_and(|max| now.saturating_duration_since(conn.created) >= max);
            if expired {
                Route::Close(conn)
            } else {
                st.route(Grant::Conn(conn))
            }
        };
        self.finish(route);
    }
}
