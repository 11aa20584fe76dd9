//! `max_db_connections`: one budget of server connections per database, shared by all
//! its pools, that RELOAD can change without a restart. `max_user_connections` uses the
//! same kind of group, one per server login user over the pools of every database.
//!
//! A semaphore holds the budget (a very large one when unlimited, so connections
//! opened while unlimited are counted too and a later limit is exact). Growing adds
//! permits at once; shrinking takes permits away as connections close (one task
//! waits for them; no polling). A connect that finds the budget spent closes an idle
//! connection of another pool of the database, as PgBouncer does (or, when no other
//! pool has one, of its own pool: its connecting checkouts cannot use it), then waits to be
//! woken by a closing connection or by a connection returning idle somewhere (and
//! looks again every 100 ms while it waits, since a checkin may ring just before its
//! connection is idle).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use weir_pool::Pool;

use crate::pools::ServerManager;

/// How often a connect waiting for the budget looks again for an idle connection of
/// another pool to close, besides being woken by checkins.
const BUDGET_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Permits standing for "no limit" (tokio's maximum is `usize::MAX >> 3`).
const UNLIMITED: u32 = 1 << 24;

/// The pools of one database and their shared budget.
pub struct DbGroup {
    sem: Arc<Semaphore>,
    state: Mutex<BudgetState>,
    pub(crate) pools: Mutex<Vec<Pool<ServerManager>>>,
    /// Connects waiting for a permit.
    waiting: AtomicU32,
    /// Rung when a connection of the database returns to a pool while connects wait.
    returned: Notify,
}

struct BudgetState {
    /// The limit the semaphore's permits (free and held) add up to.
    applied: u32,
    /// Bumped by every resize, so an outdated shrink gives its permits back.
    generation: u64,
    /// The task taking permits away after a shrink.
    shrinking: Option<tokio::task::JoinHandle<()>>,
}

impl DbGroup {
    /// A group with `limit` connections (0 = unlimited).
    pub fn new(limit: u32) -> Arc<Self> {
        let applied = effective(limit);
        Arc::new(DbGroup {
            sem: Arc::new(Semaphore::new(applied as usize)),
            state: Mutex::new(BudgetState {
                applied,
                generation: 0,
                shrinking: None,
            }),
            pools: Mutex::new(Vec::new()),
            waiting: AtomicU32::new(0),
            returned: Notify::new(),
        })
    }

    /// The limit in force (0 = unlimited).
    pub fn limit(&self) -> u32 {
        let applied = self.lock().applied;
        if applied >= UNLIMITED {
            0
        } else {
            applied
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// RELOAD: a new limit (0 = unlimited). Growing takes effect at once; shrinking
    /// as soon as enough connections have closed (none is closed for it).
    pub fn resize(self: &Arc<Self>, limit: u32) {
        let target = effective(limit);
        let mut st = self.lock();
        st.generation += 1;
        if let Some(task) = st.shrinking.take() {
            task.abort();
        }
        if target >= st.applied {
            self.sem.add_permits((target - st.applied) as usize);
            st.applied = target;
            return;
        }
        let n = st.applied - target;
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (group, generation) = (Arc::clone(self), st.generation);
        st.shrinking = Some(rt.spawn(async move {
            let Ok(permits) = Arc::clone(&group.sem).acquire_many_owned(n).await else {
                return;
            };
            let mut st = group.lock();
            // A later resize already accounted for everything: give these back.
            if st.generation == generation {
                permits.forget();
                st.applied -= n;
                st.shrinking = None;
            }
        }));
    }

    /// [`DbGroup::acquire`] on behalf of no pool (tests).
    #[cfg(test)]
    async fn acquire_any(&self) -> OwnedSemaphorePermit {
        self.acquire_addr(0).await
    }

    /// A permit for one more server connection to this database, for a connect of the
    /// pool whose manager is `me` (its own idle connections are never evicted: it
    /// would use them instead of connecting).
    pub(crate) async fn acquire(&self, me: &ServerManager) -> OwnedSemaphorePermit {
        // An address, not a reference, across the awaits below.
        self.acquire_addr(std::ptr::from_ref(me) as usize).await
    }

    async fn acquire_addr(&self, me: usize) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = Arc::clone(&self.sem).try_acquire_owned() {
                return permit;
            }
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            self.waiting.fetch_add(1, Relaxed);
            let _waiting = Waiting(&self.waiting);
            let pools = self
                .pools
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let is_me =
                |pool: &Pool<ServerManager>| std::ptr::from_ref(pool.manager()) as usize == me;
            let closed = pools.iter().any(|p| !is_me(p) && p.close_idle_lru());
            if !closed {
                // Nothing idle elsewhere, but this pool's own idle connections may hold the
                // budget: its checkouts that are already connecting (this one) cannot take
                // them any more, so without this they would wait out their connect
                // timeout. Close one: a reconnect instead of a reuse, only when spent.
                if let Some(own) = pools.iter().find(|p| is_me(p)) {
                    own.close_idle_lru();
                }
            }
            tokio::select! {
                permit = Arc::clone(&self.sem).acquire_owned() => {
                    if let Ok(permit) = permit {
                        return permit;
                    }
                }
                () = &mut returned => {}
                // The checkin rings before the connection is back in its pool's idle
                // list: a waiter woken then finds nothing to close, and if that was the
                // last checkin it would sleep until its connect timeout. Look again
                // now and then while (only while) a connect waits for the budget.
                () = tokio::time::sleep(BUDGET_RECHECK) => {}
            }
        }
    }

    /// A connection of this database is being checked in: if connects wait for the
    /// budget, wake them to look for an idle connection to close. One relaxed load
    /// when nobody waits.
    pub(crate) fn note_checkin(&self) {
        if self.waiting.load(Relaxed) > 0 {
            self.returned.notify_waiters();
        }
    }
}

fn effective(limit: u32) -> u32 {
    if limit == 0 {
        UNLIMITED
    } else {
        limit.min(UNLIMITED - 1)
    }
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_budget_follows_reload_both_ways() {
        let g = DbGroup::new(2);
        let a = g.acquire_any().await;
        let b = g.acquire_any().await;
        let blocked = tokio::time::timeout(Duration::from_millis(20), g.acquire_any()).await;
        assert!(blocked.is_err(), "budget of 2 spent");
        g.resize(3);
        let c = g.acquire_any().await;
        assert_eq!(g.limit(), 3);
        // Shrink to 1 with 3 held: effective once two have closed.
        g.resize(1);
        drop((a, b));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(g.limit(), 1);
        let blocked = tokio::time::timeout(Duration::from_millis(20), g.acquire_any()).await;
        assert!(blocked.is_err(), "1 held of 1");
        drop(c);
        let _d = g.acquire_any().await;
        g.resize(0);
        assert_eq!(g.limit(), 0);
        let _e = g.acquire_any().await;
    }
}
