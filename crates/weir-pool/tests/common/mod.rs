//! A fake connection manager for the pool tests: in-memory connections with
//! reusable/alive flags, counters of connect attempts and live connections (with
//! a high-water mark), and an injectable connect delay and failures.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use weir_pool::{ManageConnection, Pool, PoolSettings};

/// Shared, inspectable state of the fake server.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Calls to `connect`.
    pub attempts: AtomicU64,
    /// Connections that exist right now.
    pub live: AtomicU32,
    /// Most connections that ever existed at once.
    pub high_water: AtomicU32,
    /// The next this many connects fail (after the delay).
    pub fail_next: AtomicU32,
    delay: Mutex<Duration>,
    next_id: AtomicU64,
}

impl FakeState {
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner) = d;
    }

    pub fn attempts(&self) -> u64 {
        self.attempts.load(SeqCst)
    }

    pub fn live(&self) -> u32 {
        self.live.load(SeqCst)
    }

    pub fn high_water(&self) -> u32 {
        self.high_water.load(SeqCst)
    }
}

/// A fake server connection.
#[derive(Debug)]
pub struct FakeConn {
    /// Unique per connect, counting from 1.
    pub id: u64,
    /// Reported by `is_reusable`.
    pub reusable: bool,
    /// Reported by `is_alive`.
    pub alive: bool,
    state: Arc<FakeState>,
}

impl Drop for FakeConn {
    fn drop(&mut self) {
        self.state.live.fetch_sub(1, SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fake connect failure")]
pub struct FakeError;

/// The manager; `state` is shared with the test.
pub struct Fake {
    pub state: Arc<FakeState>,
}

impl ManageConnection for Fake {
    type Connection = FakeConn;
    type Error = FakeError;

    fn connect(&self) -> impl Future<Output = Result<FakeConn, FakeError>> + Send {
        let state = Arc::clone(&self.state);
        async move {
            state.attempts.fetch_add(1, SeqCst);
            let delay = *state.delay.lock().unwrap_or_else(PoisonError::into_inner);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let fail = state
                .fail_next
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(FakeError);
            }
            let live = state.live.fetch_add(1, SeqCst) + 1;
            state.high_water.fetch_max(live, SeqCst);
            let id = state.next_id.fetch_add(1, SeqCst) + 1;
            Ok(FakeConn {
                id,
                reusable: true,
                alive: true,
                state,
            })
        }
    }

    fn is_reusable(&self, conn: &FakeConn) -> bool {
        conn.reusable
    }

    fn is_alive(&self, conn: &mut FakeConn) -> bool {
        conn.alive
    }
}

/// Settings with `max_size` and generous timeouts, no reaping.
pub fn settings(max_size: u32) -> PoolSettings {
    PoolSettings {
        max_size,
        min_size: 0,
        wait_timeout: None,
        connect_timeout: Duration::from_secs(5),
        idle_timeout: None,
        max_lifetime: None,
        login_retry: Duration::from_secs(1),
        max_queue: 0,
        priority_aging: Duration::from_secs(1),
        reserve_size: 0,
        reserve_timeout: Duration::from_secs(5),
        reserve_critical: 0,
    }
}

/// A pool over a fresh fake server.
pub fn pool(settings: PoolSettings) -> (Pool<Fake>, Arc<FakeState>) {
    let state = Arc::new(FakeState::default());
    let pool = Pool::new(
        Fake {
            state: Arc::clone(&state),
        },
        settings,
    );
    (pool, state)
}

/// Poll `cond` until it holds, failing the test after `limit` (tokio time, so
/// paused-clock tests advance instead of sleeping).
pub async fn until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
