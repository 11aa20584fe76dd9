//! One owner of a pool's size: the configuration sets the bounds (`min_size`,
//! `max_size`, through [`Pool::update_settings`]), the scaling engine sets the target
//! inside them ([`Pool::set_target`]). Neither overwrites the other: a RELOAD moves the
//! bounds and the target stays (clamped), a new target never touches the bounds.
//!
//! The reserve (PgBouncer's `reserve_pool_size`/`reserve_pool_timeout`) is part of the
//! size too: a checkout that has waited `reserve_timeout` opens it, adding
//! `reserve_size` to the size until no checkout waits; its connections then close as
//! they come back, like any surplus.
//!
//! A grow lets waiters connect at once and wakes maintenance to open the rest ahead of
//! need; a shrink closes idle surplus a few at a time per maintenance pass and busy
//! surplus at checkin, so no running transaction is disturbed.

use crate::{ManageConnection, Pool};

impl<M: ManageConnection> Pool<M> {
    /// Set the size the scaling engine chose (`None`: back to a fixed `max_size`).
    /// Kept within `min_size..=max_size` whatever the bounds become.
    pub fn set_target(&self, target: Option<u32>) {
        let mut routes = Vec::new();
        {
            let mut st = self.inner.lock();
            if st.target == target {
                return;
            }
            st.target = target;
            st.grant_slots(&mut routes);
        }
        for route in routes {
            self.inner.finish(route);
        }
        // Warm up to the new size, or start trimming, now rather than at the next pass.
        self.inner.kick.notify_one();
    }

    /// The scaling engine's target, if it sizes this pool.
    pub fn target(&self) -> Option<u32> {
        self.inner.lock().target
    }

    /// Most connections checked out at once since the last call (at least the number
    /// checked out now); for the scaling engine's tick.
    pub fn take_peak_active(&self) -> u32 {
        let mut st = self.inner.lock();
        let peak = st.peak_active.max(st.active);
        st.peak_active = st.active;
        peak
    }
}

impl<M: ManageConnection> crate::pool::Inner<M> {
    /// A checkout waited `reserve_timeout`: open the reserve and let waiters connect.
    pub(crate) fn open_reserve(&self) {
        let mut routes = Vec::new();
        {
            let mut st = self.lock();
            if st.reserve_on || st.closed || st.waiters.is_empty() {
                return;
            }
            st.reserve_on = true;
            tracing::debug!(
                reserve = st.settings.reserve_size,
                "a client waited reserve_pool_timeout: using the reserve pool"
            );
            st.grant_slots(&mut routes);
        }
        for route in routes {
            self.finish(route);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::test_support::Dummy;
    use crate::{Pool, PoolSettings};

    fn settings(min: u32, max: u32) -> PoolSettings {
        crate::test_support::settings(min, max, Some(Duration::from_secs(5)))
    }

    async fn until(pool: &Pool<Dummy>, what: impl Fn(crate::PoolStats) -> bool) {
        for _ in 0..200 {
            if what(pool.stats()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("never: {:?}", pool.stats());
    }

    #[tokio::test]
    async fn the_target_sizes_the_pool_within_bounds_that_reload_changes() {
        let pool = Pool::new(Dummy, settings(2, 40));
        pool.spawn_maintenance(Duration::from_secs(1));
        pool.set_target(Some(10));
        until(&pool, |s| s.idle == 10 && s.size == 10).await;
        // RELOAD lowers the ceiling: the target is kept, the size follows the bounds.
        pool.update_settings(settings(2, 6));
        assert_eq!(pool.target(), Some(10));
        assert_eq!(pool.stats().size, 6);
        until(&pool, |s| s.idle == 6).await;
        pool.update_settings(settings(2, 40));
        until(&pool, |s| s.idle == 10).await;
        // A shrink closes idle surplus gradually, never below the floor.
        pool.set_target(Some(0));
        assert_eq!(pool.stats().size, 2);
        until(&pool, |s| s.idle == 2).await;
    }

    #[tokio::test]
    async fn warming_is_not_demand() {
        let pool = Pool::new(Dummy, settings(0, 40));
        pool.spawn_maintenance(Duration::from_secs(1));
        pool.set_target(Some(8));
        until(&pool, |s| s.idle == 8).await;
        assert_eq!(
            pool.take_peak_active(),
            0,
            "opened ahead of need, never busy"
        );
        let one = pool.get().await.expect("idle");
        assert_eq!(pool.take_peak_active(), 1);
        drop(one);
    }

    #[tokio::test]
    async fn a_busy_connection_over_the_size_closes_at_checkin_not_before() {
        let pool = Pool::new(Dummy, settings(0, 10));
        pool.set_target(Some(4));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(pool.get().await.expect("room"));
        }
        assert_eq!(pool.take_peak_active(), 4);
        pool.set_target(Some(1));
        assert_eq!(pool.stats().active, 4, "running work is not disturbed");
        held.clear();
        let s = pool.stats();
        assert_eq!(s.active + s.idle, 1, "{s:?}");
        assert_eq!(
            pool.take_peak_active(),
            4,
            "they were busy since the last look"
        );
        assert_eq!(pool.take_peak_active(), 0);
    }

    #[tokio::test]
    async fn the_reserve_opens_after_a_long_wait_and_closes_when_nobody_waits() {
        let pool = Pool::new(
            Dummy,
            PoolSettings {
                reserve_size: 1,
                reserve_timeout: Duration::from_millis(100),
                ..settings(0, 1)
            },
        );
        let held = pool.get().await.expect("room");
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let conn = pool.get().await.expect("a reserve connection");
                (started.elapsed(), pool.stats(), conn)
            })
        };
        let (waited, stats, second) = waiter.await.unwrap();
        assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
        assert_eq!((stats.size, stats.active, stats.reserve_in_use), (2, 2, 1));
        // Nobody waits: the reserve closes, its connection with it at checkin.
        drop(second);
        drop(held);
        let s = pool.stats();
        assert_eq!(
            (s.size, s.idle + s.active, s.reserve_in_use),
            (1, 1, 0),
            "{s:?}"
        );
        // A short wait does not open it.
        let a = pool.get().await.unwrap();
        let short = tokio::time::timeout(Duration::from_millis(30), pool.get()).await;
        assert!(short.is_err(), "no reserve before reserve_timeout");
        drop(a);
    }
}
