//! Administrative control of a pool, with PgBouncer's semantics: `PAUSE` / `RESUME`
//! (a gate in front of checkout), `RECONNECT` / `WAIT_CLOSE` (generations: released
//! connections of an older generation are closed), and the per-connection snapshot
//! behind `SHOW SERVERS`.
//!
//! None of this is on the hot path except one `paused` test under the lock that
//! checkout takes anyway.

use std::future::Future;
use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::pool::Inner;
use crate::servers::ServerInfo;
use crate::{ManageConnection, Pool};

/// How often `pause` and `wait_close` look again; admin commands, not the hot path.
const POLL: Duration = Duration::from_millis(10);

impl<M: ManageConnection> Pool<M> {
    /// `PAUSE`: from now on nothing is handed out (checkouts wait, still bounded by
    /// `wait_timeout`, as PgBouncer applies `query_wait_timeout`), idle connections are
    /// closed now and checked-out ones when released. The returned future resolves
    /// once no connection is checked out or being opened (in transaction pooling: when
    /// the transactions in flight have finished).
    pub fn pause(&self) -> impl Future<Output = ()> + Send + 'static {
        let idle = {
            let mut st = self.inner.lock();
            st.paused = true;
            self.inner.gate.send_replace(true);
            let idle = mem::take(&mut st.idle);
            st.held += u32::try_from(idle.len()).unwrap_or(u32::MAX);
            idle
        };
        self.close_held(idle.len(), idle);
        let pool = self.clone();
        async move {
            while !pool.is_drained() {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// `RESUME`: lift a pause; held checkouts proceed, with no error to their clients.
    pub fn resume(&self) {
        let mut routes = Vec::new();
        {
            let mut st = self.inner.lock();
            if !st.paused {
                return;
            }
            st.paused = false;
            self.inner.gate.send_replace(false);
            // Waiters queued before the pause got nothing while it lasted.
            st.grant_slots(&mut routes);
        }
        for route in routes {
            self.inner.finish(route);
        }
    }

    /// Whether `PAUSE` is in force.
    pub fn is_paused(&self) -> bool {
        self.inner.lock().paused
    }

    /// Nothing checked out and nothing being opened.
    pub fn is_drained(&self) -> bool {
        let st = self.inner.lock();
        st.active == 0 && st.connecting == 0
    }

    /// `RECONNECT`: start a new generation. Idle connections are closed now, checked-out
    /// ones when released (and connects in flight when they finish), so clients move to
    /// fresh connections (for instance to a changed upstream) without an error.
    pub fn reconnect(&self) {
        let idle = {
            let mut st = self.inner.lock();
            st.generation += 1;
            let idle = mem::take(&mut st.idle);
            st.held += u32::try_from(idle.len()).unwrap_or(u32::MAX);
            idle
        };
        self.close_held(idle.len(), idle);
    }

    /// The current generation (bumped by [`Pool::reconnect`]).
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Open connections of a generation older than the current one.
    pub fn stale_connections(&self) -> usize {
        let generation = self.generation();
        self.inner.servers.older_than(generation)
    }

    /// `WAIT_CLOSE`: resolves once every connection older than the current generation
    /// (as of this call) is closed.
    pub fn wait_close(&self) -> impl Future<Output = ()> + Send + 'static {
        let generation = self.generation();
        let servers = self.inner.servers.clone();
        async move {
            while servers.older_than(generation) > 0 {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// A snapshot of every open connection, oldest first (connects in flight are
    /// counted in [`crate::PoolStats::connecting`], not listed).
    pub fn servers(&self) -> Vec<ServerInfo> {
        let generation = self.generation();
        self.inner.servers.snapshot(generation)
    }

    /// Drops connections already moved from `idle` to `held`, then uncounts them and
    /// grants the freed slots.
    fn close_held<C>(&self, n: usize, conns: C) {
        drop(conns);
        if n == 0 {
            return;
        }
        self.inner.metrics.closed.fetch_add(n as u64, Relaxed);
        release_held(&self.inner, n);
    }
}

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
