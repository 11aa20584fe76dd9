//! How a checkout gets its connection: an idle one, else a new one opened in a reserved
//! slot, else a wait for a grant; and the guards that give back what a checkout held
//! when its future is dropped.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{Inner, Result};
use crate::expiry::Kick;
use crate::queue::WaiterId;
use crate::request::Checkout;
use crate::servers::ServerState;
use crate::state::{Conn, Grant, Route};
use crate::{ManageConnection, PoolError};

/// What a checkout does once it has left the lock.
enum Step<C> {
    /// Probe and use this idle connection (already counted as active).
    Idle(Conn<C>),
    /// Open a new connection in the slot reserved for us.
    Connect(Duration),
    /// The pool is paused: wait for `resume` (or `close`), then try again.
    Paused(watch::Receiver<bool>, Option<Duration>, WaiterId),
    /// Wait for a grant (the expiry task grants a timeout).
    Wait {
        id: WaiterId,
        rx: oneshot::Receiver<Grant<C>>,
        /// When the reserve pool may open for us, if the pool has one.
        reserve_after: Option<Duration>,
        connect_timeout: Duration,
        expiry: Kick,
    },
}

impl<M: ManageConnection> Inner<M> {
    /// A connection for `req`, and whether it was an idle one taken at once (no wait,
    /// no connect).
    pub(super) async fn acquire(
        self: &Arc<Self>,
        start: Instant,
        req: &Checkout,
    ) -> Result<(Conn<M::Connection>, bool), M> {
        // Set after dropping a dead idle connection whose slot we still hold.
        let mut dropped_dead = false;
        // No pause waited out, no dead connection dropped.
        let mut at_once = true;
        loop {
            let step = {
                let mut st = self.lock();
                if dropped_dead {
                    // Every path below returns or sets it again.
                    st.active -= 1;
                }
                if st.closed {
                    return Err(PoolError::Closed);
                }
                if st.paused {
                    let id = st.paused_waiters.push(req.class, start, ());
                    Step::Paused(self.gate.subscribe(), st.settings.wait_timeout, id)
                } else if let Some(conn) = st
                    .may_take(req.class, st.active + st.connecting)
                    .then(|| st.idle.pop_back())
                    .flatten()
                {
                    st.add_active();
                    Step::Idle(conn)
                } else {
                    let room = st.has_room() && st.may_take(req.class, st.active + st.connecting);
                    let backoff = if room {
                        st.login_backoff(Instant::now())
                    } else {
                        None
                    };
                    match backoff {
                        None if room => {
                            st.connecting += 1;
                            Step::Connect(st.settings.connect_timeout)
                        }
                        // The last login failed and nothing open could come back: fail fast.
                        Some(backoff) if st.total() == 0 => {
                            return Err(PoolError::LoginRetry(backoff));
                        }
                        // Full, or backing off a failed login with connections open: wait,
                        // unless the wait is known to be hopeless.
                        _ => {
                            let shed = match st.admit_waiter(req) {
                                Ok(shed) => shed,
                                Err(reason) => {
                                    drop(st);
                                    self.metrics.shed.fetch_add(1, Relaxed);
                                    return Err(PoolError::Shed { reason });
                                }
                            };
                            if let Some((tx, reason)) = shed {
                                // A less important waiter makes room: it gives up now.
                                self.metrics.shed.fetch_add(1, Relaxed);
                                let _ = tx.send(Grant::Shed(reason));
                            }
                            let (tx, rx) = oneshot::channel();
                            let id = st.waiters.push(req.class, start, tx);
                            let wait_timeout = st.settings.wait_timeout;
                            // PgBouncer's reserve pool: after reserve_timeout in the
                            // queue, the pool may open up to reserve_size connections
                            // beyond its size (see sizing.rs); pointless if the wait
                            // times out first.
                            let reserve_after = (st.settings.reserve_size > 0)
                                .then_some(st.settings.reserve_timeout)
                                .filter(|after| wait_timeout.is_none_or(|limit| *after < limit));
                            Step::Wait {
                                id,
                                rx,
                                reserve_after,
                                connect_timeout: st.settings.connect_timeout,
                                expiry: st.expiry.on_push(start, wait_timeout),
                            }
                        }
                    }
                }
            };
            match step {
                Step::Idle(mut conn) => {
                    if self.manager.is_alive(&mut conn.raw) {
                        return Ok((conn, at_once));
                    }
                    tracing::debug!("closing dead idle server connection found at checkout");
                    drop(conn);
                    self.metrics.closed.fetch_add(1, Relaxed);
                    dropped_dead = true;
                    at_once = false;
                }
                Step::Connect(connect_timeout) => {
                    return Ok((self.open(connect_timeout).await?, false))
                }
                Step::Paused(mut gate, wait_timeout, id) => {
                    at_once = false;
                    let _leave = PausedGuard { inner: self, id };
                    // PgBouncer keeps applying query_wait_timeout to clients held by PAUSE.
                    let resumed = gate.wait_for(|paused| !*paused);
                    match wait_timeout {
                        Some(limit) => {
                            let left = limit.saturating_sub(start.elapsed());
                            if tokio::time::timeout(left, resumed).await.is_err() {
                                self.metrics.wait_timeouts.fetch_add(1, Relaxed);
                                return Err(PoolError::Timeout(limit));
                            }
                        }
                        None => {
                            let _ = resumed.await;
                        }
                    }
                }
                Step::Wait {
                    id,
                    rx,
                    reserve_after,
                    connect_timeout,
                    expiry,
                } => {
                    self.kick_expiry(expiry);
                    return match self.wait(id, rx, reserve_after).await? {
                        Grant::Conn(conn) => Ok((conn, false)),
                        Grant::Slot => Ok((self.open(connect_timeout).await?, false)),
                        Grant::Shed(reason) => Err(PoolError::Shed { reason }),
                        Grant::TimedOut(limit) => {
                            self.metrics.wait_timeouts.fetch_add(1, Relaxed);
                            Err(PoolError::Timeout(limit))
                        }
                    };
                }
            }
        }
    }

    /// Wait in the queue for a grant. No timer: the expiry task takes a waiter out of
    /// the queue at its deadline and grants it [`Grant::TimedOut`].
    async fn wait(
        &self,
        id: WaiterId,
        rx: oneshot::Receiver<Grant<M::Connection>>,
        reserve_after: Option<Duration>,
    ) -> Result<Grant<M::Connection>, M> {
        let mut guard = WaitGuard {
            inner: self,
            id,
            rx,
            armed: true,
        };
        if let Some(after) = reserve_after {
            if let Ok(received) = tokio::time::timeout(after, &mut guard.rx).await {
                guard.armed = false;
                return received.map_err(|_| PoolError::Closed);
            }
            self.open_reserve();
        }
        let received = (&mut guard.rx).await;
        guard.armed = false;
        // The sender is only dropped unsent by `close`.
        received.map_err(|_| PoolError::Closed)
    }

    /// Open a connection for a checkout, in a slot already counted in `connecting`. On
    /// success the connection is counted as active; on failure the slot is freed.
    pub(crate) async fn open(&self, connect_timeout: Duration) -> Result<Conn<M::Connection>, M> {
        let conn = self.connect_in_slot(connect_timeout).await?;
        let closed = {
            let mut st = self.lock();
            st.last_connect_failure = None;
            st.connecting -= 1;
            st.add_active();
            st.closed
        };
        if closed {
            self.finish(Route::Close(conn));
            return Err(PoolError::Closed);
        }
        Ok(conn)
    }

    /// Open a connection ahead of need (maintenance), in a slot already counted in
    /// `connecting`, and hand it to a waiter or put it idle under the same lock that
    /// uncounts the slot: in between, the scaling engine would read it as checked out
    /// (a pool of 2 with one client would look full). False if the connect failed.
    pub(crate) async fn open_warm(&self, connect_timeout: Duration) -> bool {
        let Ok(conn) = self.connect_in_slot(connect_timeout).await else {
            return false;
        };
        let route = {
            let mut st = self.lock();
            st.last_connect_failure = None;
            st.connecting -= 1;
            // Counted as active only for `route`, which hands it on or uncounts it.
            st.active += 1;
            st.route(Grant::Conn(conn))
        };
        self.finish(route);
        true
    }

    /// Connects in a slot counted in `connecting`. On success the slot is still
    /// counted and the caller moves it (and clears `last_connect_failure`); on failure
    /// it is freed and the failure noted.
    async fn connect_in_slot(&self, connect_timeout: Duration) -> Result<Conn<M::Connection>, M> {
        let mut slot = SlotGuard {
            inner: self,
            armed: true,
        };
        // A reconnect while this connect runs makes it stale at once.
        let generation = self.lock().generation;
        // Boxed: a connect (TCP, TLS, authentication) is a big future, and inline it would
        // size every checkout's future, which each idle client session keeps.
        let result = tokio::time::timeout(connect_timeout, Box::pin(self.manager.connect())).await;
        slot.armed = false;
        let now = Instant::now();
        let backs_off;
        let err = match result {
            Ok(Ok(raw)) => {
                self.metrics.connects.fetch_add(1, Relaxed);
                let label = self.manager.describe(&raw);
                let conn = Conn {
                    raw,
                    created: now,
                    last_used: now,
                    ticket: self
                        .servers
                        .register(generation, label, ServerState::Active),
                };
                return Ok(conn);
            }
            Ok(Err(e)) => {
                backs_off = self.manager.backs_off(Some(&e));
                PoolError::Connect(e)
            }
            Err(_elapsed) => {
                backs_off = self.manager.backs_off(None);
                PoolError::ConnectTimeout(connect_timeout)
            }
        };
        self.metrics.connect_errors.fetch_add(1, Relaxed);
        tracing::debug!(error = %err, "server connect failed");
        let route = {
            let mut st = self.lock();
            if backs_off {
                st.last_connect_failure = Some(now);
            }
            st.route(Grant::Slot)
        };
        self.finish(route);
        Err(err)
    }
}

/// Leaves the queue, or returns a grant that arrived, if a waiting checkout is
/// dropped.
struct WaitGuard<'a, M: ManageConnection> {
    inner: &'a Inner<M>,
    id: WaiterId,
    rx: oneshot::Receiver<Grant<M::Connection>>,
    armed: bool,
}

impl<M: ManageConnection> Drop for WaitGuard<'_, M> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // After `close`, a send either already happened (and `try_recv` gets it)
        // or will fail and the sender re-routes the grant.
        self.rx.close();
        match self.rx.try_recv() {
            Ok(grant) => {
                let route = self.inner.lock().route(grant);
                self.inner.finish(route);
            }
            Err(_) => {
                self.inner.lock().waiters.remove(self.id);
            }
        }
    }
}

/// Takes a checkout held by `PAUSE` off the books however its wait ends.
struct PausedGuard<'a, M: ManageConnection> {
    inner: &'a Inner<M>,
    id: WaiterId,
}

impl<M: ManageConnection> Drop for PausedGuard<'_, M> {
    fn drop(&mut self) {
        self.inner.lock().paused_waiters.remove(self.id);
    }
}

/// Frees a reserved connect slot if the connecting future is dropped.
struct SlotGuard<'a, M: ManageConnection> {
    inner: &'a Inner<M>,
    armed: bool,
}

impl<M: ManageConnection> Drop for SlotGuard<'_, M> {
    fn drop(&mut self) {
        if self.armed {
            let route = self.inner.lock().route(Grant::Slot);
            self.inner.finish(route);
        }
    }
}
