//! Expiry of queued checkouts: one task per pool sleeps until the earliest
//! `wait_timeout` deadline among the waiters and fails every waiter past it, instead of
//! a tokio timer armed and disarmed around each wait (that cost ~1 400 instructions
//! per queued transaction). PgBouncer checks its waiting clients from its janitor the
//! same way.
//!
//! A waiter's deadline is the pool's `wait_timeout` as it is now (a RELOAD applies to
//! those already waiting) after the checkout started waiting. Within a class waiters
//! queue in the order they started, so a pass looks at the fronts only (see
//! `WaitQueue::expire`).
//!
//! The task is started by the first checkout that has to wait while a `wait_timeout`
//! is set, on that checkout's runtime; it sleeps without a timer while no deadline is
//! pending, and is woken only by a deadline earlier than the one it sleeps until, a
//! change of `wait_timeout`, `close`, or the pool being dropped. In steady queueing a
//! checkout costs two compares here: waiters join behind the deadline the task already
//! sleeps until. The task holds the pool only weakly, like maintenance, and does not
//! depend on maintenance running.
//!
//! A waiter is taken out of the queue under the same lock that grants go through, so
//! it is either granted or timed out, never both.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::pool::Inner;
use crate::state::Grant;
use crate::ManageConnection;

/// The expiry task's bookkeeping, kept under the pool lock so that starting, waking and
/// ending the task never race with a checkout joining the queue.
#[derive(Debug, Default)]
pub(crate) struct ExpiryState {
    /// A task runs for this pool, or is being spawned.
    running: bool,
    /// The deadline the task sleeps until; `None`: it sleeps without a timer.
    armed: Option<Instant>,
}

/// What to do about the expiry task once the pool lock is released.
#[must_use]
pub(crate) enum Kick {
    /// Nothing: the task already wakes in time.
    Nothing,
    /// Wake it to look at the queue again.
    Wake,
    /// Start it (its bookkeeping already says it runs).
    Spawn,
}

impl ExpiryState {
    /// A checkout that started waiting at `since` joined the queue, `limit` being the
    /// pool's `wait_timeout`.
    pub(crate) fn on_push(&mut self, since: Instant, limit: Option<Duration>) -> Kick {
        let Some(deadline) = limit.and_then(|limit| since.checked_add(limit)) else {
            return Kick::Nothing;
        };
        if !self.running {
            self.running = true;
            self.armed = Some(deadline);
            return Kick::Spawn;
        }
        if self.armed.is_some_and(|armed| armed <= deadline) {
            return Kick::Nothing;
        }
        // Set now so that the rest of a burst of checkouts does not wake it again.
        self.armed = Some(deadline);
        Kick::Wake
    }

    /// `wait_timeout` changed, or the pool closed; `pending`: someone waits with a
    /// deadline.
    pub(crate) fn on_change(&mut self, pending: bool) -> Kick {
        if self.running {
            Kick::Wake
        } else if pending {
            self.running = true;
            Kick::Spawn
        } else {
            Kick::Nothing
        }
    }
}

/// The pool's end of the expiry task: wakes it, and wakes it one last time when the
/// pool is dropped, so it sees the pool gone instead of sleeping forever.
#[derive(Default)]
pub(crate) struct Expiry {
    /// Kept apart from the pool so the task can wait on it without keeping the pool
    /// alive.
    wake: Arc<Notify>,
}

impl Drop for Expiry {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// What the task does after a pass.
enum Pass {
    /// Sleep until this deadline (or a wake).
    Until(Instant),
    /// Nobody waits with a deadline: sleep until woken.
    Idle,
    /// The pool is closed: end.
    Stop,
}

impl<M: ManageConnection> Inner<M> {
    /// Carry out a [`Kick`]. Never under the pool lock: a spawn on a runtime that is
    /// shutting down drops the task at once, and its guard takes the lock.
    pub(crate) fn kick_expiry(self: &Arc<Self>, kick: Kick) {
        match kick {
            Kick::Nothing => {}
            Kick::Wake => self.expiry.wake.notify_one(),
            Kick::Spawn => match Handle::try_current() {
                Ok(runtime) => spawn(self, &runtime),
                // Only a settings change can get here outside a runtime: the next
                // checkout that has to wait starts the task.
                Err(_) => self.lock().expiry = ExpiryState::default(),
            },
        }
    }

    /// Fail every waiter past its deadline; say when to look again.
    fn expire(&self) -> Pass {
        let now = Instant::now();
        let mut expired = Vec::new();
        let (limit, next) = {
            let mut st = self.lock();
            if st.closed {
                return Pass::Stop;
            }
            let Some(limit) = st.settings.wait_timeout else {
                st.expiry.armed = None;
                return Pass::Idle;
            };
            let next = st.waiters.expire(now, limit, &mut expired);
            st.expiry.armed = next;
            (limit, next)
        };
        if !expired.is_empty() {
            tracing::debug!(
                expired = expired.len(),
                ?limit,
                "checkouts waited out wait_timeout"
            );
        }
        for tx in expired {
            // A waiter dropped meanwhile has nothing to give back: it was granted nothing.
            let _ = tx.send(Grant::TimedOut(limit));
        }
        match next {
            Some(deadline) => Pass::Until(deadline),
            None => Pass::Idle,
        }
    }
}

/// Start the expiry task of `inner` on `runtime`.
fn spawn<M: ManageConnection>(inner: &Arc<Inner<M>>, runtime: &Handle) {
    let weak = Arc::downgrade(inner);
    let wake = Arc::clone(&inner.expiry.wake);
    // Made here, not in the task, so that it also marks a task never polled as ended.
    let running = Running(weak.clone());
    runtime.spawn(async move {
        let _running = running;
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            // Registered before the pass, so a wake during it is not lost.
            notified.as_mut().enable();
            let pass = match weak.upgrade() {
                Some(inner) => inner.expire(),
                None => return,
            };
            match pass {
                Pass::Until(deadline) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
                Pass::Idle => notified.await,
                Pass::Stop => return,
            }
        }
    });
}

/// Marks the task ended however it ends (its runtime may shut down while the pool
/// lives on), so the next checkout that has to wait starts another.
struct Running<M: ManageConnection>(Weak<Inner<M>>);

impl<M: ManageConnection> Drop for Running<M> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.lock().expiry = ExpiryState::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::runtime::Handle;
    use tokio::time::{sleep, Instant};

    use super::{ExpiryState, Kick};
    use crate::test_support::Dummy;
    use crate::{Pool, PoolError, PoolSettings};

    fn settings(wait_timeout: Option<Duration>) -> PoolSettings {
        crate::test_support::settings(0, 1, wait_timeout)
    }

    fn tasks() -> usize {
        Handle::current().metrics().num_alive_tasks()
    }

    async fn until_tasks(n: usize) {
        for _ in 0..1_000 {
            if tasks() == n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} tasks alive, expected {n}", tasks());
    }

    /// One checkout that waits out `limit` on a full pool of one.
    async fn time_out_once(pool: &Pool<Dummy>) {
        let held = pool.get().await.expect("the only connection");
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get().await.map(drop) })
        };
        let got = tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("expired")
            .expect("task");
        assert!(matches!(got, Err(PoolError::Timeout(_))), "{got:?}");
        drop(held);
    }

    #[test]
    fn only_an_earlier_deadline_wakes_the_running_task() {
        let t0 = Instant::now();
        let limit = Some(Duration::from_secs(1));
        let mut st = ExpiryState::default();
        assert!(matches!(st.on_push(t0, None), Kick::Nothing));
        assert!(matches!(st.on_push(t0, limit), Kick::Spawn));
        // Queued behind the deadline it sleeps until: nothing to do (the hot path).
        assert!(matches!(st.on_push(t0, limit), Kick::Nothing));
        let later = t0 + Duration::from_millis(5);
        assert!(matches!(st.on_push(later, limit), Kick::Nothing));
        // An earlier one (a shorter wait_timeout) wakes it, once.
        let shorter = Some(Duration::from_millis(500));
        assert!(matches!(st.on_push(later, shorter), Kick::Wake));
        assert!(matches!(st.on_push(later, shorter), Kick::Nothing));
        // Sleeping without a timer: any deadline wakes it.
        st.armed = None;
        assert!(matches!(st.on_push(later, limit), Kick::Wake));
        assert!(matches!(st.on_change(false), Kick::Wake));
        let mut idle = ExpiryState::default();
        assert!(matches!(idle.on_change(false), Kick::Nothing));
        assert!(matches!(idle.on_change(true), Kick::Spawn));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_pool_ends_the_task_which_never_kept_it_alive() {
        let before = tasks();
        let pool = Pool::new(Dummy, settings(Some(Duration::from_secs(2))));
        time_out_once(&pool).await;
        until_tasks(before + 1).await;
        // Nobody waits: the task sleeps without a timer.
        assert_eq!(pool.inner.lock().expiry.armed, None);
        sleep(Duration::from_secs(3600)).await;
        assert_eq!(tasks(), before + 1);
        let weak = Arc::downgrade(&pool.inner);
        drop(pool);
        assert!(weak.upgrade().is_none(), "the task keeps the pool alive");
        until_tasks(before).await;
    }

    #[tokio::test(start_paused = true)]
    async fn close_ends_the_task() {
        let before = tasks();
        let pool = Pool::new(Dummy, settings(Some(Duration::from_secs(2))));
        time_out_once(&pool).await;
        until_tasks(before + 1).await;
        pool.close();
        until_tasks(before).await;
        assert!(!pool.inner.lock().expiry.running);
    }

    #[tokio::test(start_paused = true)]
    async fn no_task_without_a_wait_timeout() {
        let before = tasks();
        let pool = Pool::new(Dummy, settings(None));
        let held = pool.get().await.expect("the only connection");
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get().await.map(drop) })
        };
        while pool.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        sleep(Duration::from_secs(3600)).await;
        assert_eq!(tasks(), before + 1, "only the waiter");
        drop(held);
        waiter.await.expect("task").expect("served");
    }
}
