//! Background upkeep of one pool: reap expired idle connections, probe the rest,
//! keep `min_size` warm.
//!
//! The task holds only a weak reference between runs, so dropping every `Pool`
//! handle ends it too. Probing takes one idle connection out at a time (counted
//! in `held`, so checkouts never overshoot `max_size` meanwhile) and runs
//! `is_alive` outside the lock, so a pool with many idle connections never blocks
//! checkouts for more than one short lock section.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::pool::Inner;
use crate::state::{Grant, Route};
use crate::ManageConnection;

/// Spawn the maintenance loop for `inner`.
pub(crate) fn spawn<M: ManageConnection>(
    inner: &Arc<Inner<M>>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let weak: Weak<Inner<M>> = Arc::downgrade(inner);
    let shutdown = Arc::clone(&inner.shutdown);
    let kick = Arc::clone(&inner.kick);
    // `interval` panics on zero.
    let period = interval.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let notified = shutdown.notified();
            tokio::pin!(notified);
            // Registered before the closed check, so a `close` in between still wakes us.
            notified.as_mut().enable();
            match weak.upgrade() {
                Some(inner) if !inner.is_closed() => {}
                _ => return,
            }
            tokio::select! {
                _ = &mut notified => return,
                _ = tick.tick() => {}
                _ = kick.notified() => {}
            }
            let Some(inner) = weak.upgrade() else {
                return;
            };
            run_once(&inner).await;
        }
    })
}

/// One maintenance pass.
pub(crate) async fn run_once<M: ManageConnection>(inner: &Inner<M>) {
    trim(inner);
    reap(inner);
    probe(inner);
    warm(inner).await;
}

/// Close idle connections past `max_lifetime`, and past `idle_timeout` while the
/// pool stays at or above `min_size`.
fn reap<M: ManageConnection>(inner: &Inner<M>) {
    let now = Instant::now();
    let mut expired = Vec::new();
    {
        let mut st = inner.lock();
        if st.closed {
            return;
        }
        let max_lifetime = st.settings.max_lifetime;
        let idle_timeout = st.settings.idle_timeout;
        if max_lifetime.is_none() && idle_timeout.is_none() {
            return;
        }
        let min_size = st.settings.min_size;
        let mut remaining = st.total();
        // Front to back is least to most recently used, so idle reaping takes the
        // longest-idle connections first.
        let mut i = 0;
        while let Some(conn) = st.idle.get(i) {
            let too_old =
                max_lifetime.is_some_and(|max| now.saturating_duration_since(conn.created) >= max);
            let too_idle = remaining > min_size
                && idle_timeout.is_some_and(|t| now.saturating_duration_since(conn.last_used) >= t);
            if !(too_old || too_idle) {
                i += 1;
                continue;
            }
            if let Some(conn) = st.idle.remove(i) {
                st.held += 1;
                remaining -= 1;
                expired.push(conn);
            }
        }
    }
    if expired.is_empty() {
        return;
    }
    let n = expired.len();
    tracing::debug!(closed = n, "reaped expired idle server connections");
    drop(expired);
    inner.metrics.closed.fetch_add(n as u64, Relaxed);
    release_held(inner, n);
}

/// Fewest idle connections closed per pass when the pool is over its size.
const TRIM_PER_PASS: usize = 4;

/// Close idle connections (least recently used first) while the pool holds more than
/// its size, gradually: half the surplus per pass, at least [`TRIM_PER_PASS`]. Busy
/// surplus closes at checkin, never mid-transaction.
fn trim<M: ManageConnection>(inner: &Inner<M>) {
    let surplus: Vec<_> = {
        let mut st = inner.lock();
        if st.closed {
            return;
        }
        let over = st.total().saturating_sub(st.cap());
        let n = usize::try_from(over)
            .unwrap_or(usize::MAX)
            .min(TRIM_PER_PASS);
        let n = n.min(st.idle.len());
        st.held += u32::try_from(n).unwrap_or(u32::MAX);
        st.idle.drain(..n).collect()
    };
    if surplus.is_empty() {
        return;
    }
    let n = surplus.len();
    tracing::debug!(
        closed = n,
        "closed idle server connections over the pool's size"
    );
    drop(surplus);
    inner.metrics.closed.fetch_add(n as u64, Relaxed);
    release_held(inner, n);
}

/// Probe each idle connection once with `is_alive`, dropping dead ones.
fn probe<M: ManageConnection>(inner: &Inner<M>) {
    let count = inner.lock().idle.len();
    // Connections before `pos` have been probed this pass. Checkouts and checkins
    // work at the back, so they never shift the front part.
    let mut pos = 0;
    for _ in 0..count {
        let mut conn = {
            let mut st = inner.lock();
            if st.closed {
                return;
            }
            let Some(conn) = st.idle.remove(pos) else {
                return;
            };
            st.held += 1;
            conn
        };
        if inner.manager.is_alive(&mut conn.raw) {
            let route = {
                let mut st = inner.lock();
                st.held -= 1;
                // Put it back where it was, unless someone waits or there is no room
                // any more (a shrink happened meanwhile).
                if st.closed || st.paused || !st.waiters.is_empty() || !st.has_room() {
                    st.active += 1;
                    st.route(Grant::Conn(conn))
                } else {
                    let at = pos.min(st.idle.len());
                    st.idle.insert(at, conn);
                    pos = at + 1;
                    Route::Done
                }
            };
            inner.finish(route);
        } else {
            tracing::debug!("closing dead idle server connection");
            drop(conn);
            inner.metrics.closed.fetch_add(1, Relaxed);
            let route = {
                let mut st = inner.lock();
                st.held -= 1;
                st.free_slot()
            };
            inner.finish(route);
        }
    }
}

/// Open connections until the pool holds `min_size` (capped at `max_size`), or the
/// whole size when the scaling engine sets it, unless the last connect failed less
/// than `login_retry` ago.
async fn warm<M: ManageConnection>(inner: &Inner<M>) {
    loop {
        let connect_timeout = {
            let mut st = inner.lock();
            let target = st.warm_size();
            if st.closed || st.paused || st.total() >= target {
                return;
            }
            if let Some(failed) = st.last_connect_failure {
                if Instant::now().saturating_duration_since(failed) < st.settings.login_retry {
                    return;
                }
            }
            st.connecting += 1;
            st.settings.connect_timeout
        };
        // A failure was recorded (for `login_retry`) and its slot freed.
        if !inner.open_warm(connect_timeout).await {
            return;
        }
    }
}

/// Uncount `n` held connections that have been dropped, granting their slots.
fn release_held<M: ManageConnection>(inner: &Inner<M>, n: usize) {
    let mut routes = Vec::new();
    {
        let mut st = inner.lock();
        st.held -= u32::try_from(n).unwrap_or(u32::MAX);
        st.grant_slots(&mut routes);
    }
    for route in routes {
        inner.finish(route);
    }
}
