//! Scaffolding shared by the crate's unit tests: a manager whose connections are `()`
//! and pool settings to start from.

use std::convert::Infallible;
use std::time::Duration;

use crate::{ManageConnection, PoolSettings};

/// Connects at once, always; every connection is alive and reusable.
pub(crate) struct Dummy;

impl ManageConnection for Dummy {
    type Connection = ();
    type Error = Infallible;
    async fn connect(&self) -> Result<(), Infallible> {
        Ok(())
    }
    fn is_reusable(&self, _: &()) -> bool {
        true
    }
    fn is_alive(&self, _: &mut ()) -> bool {
        true
    }
}

/// Settings for a pool of `min..=max` connections waiting at most `wait_timeout`; no
/// queue cap, no reserve.
pub(crate) fn settings(min: u32, max: u32, wait_timeout: Option<Duration>) -> PoolSettings {
    PoolSettings {
        max_size: max,
        min_size: min,
        wait_timeout,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: None,
        max_lifetime: None,
        login_retry: Duration::from_millis(10),
        max_queue: 0,
        priority_aging: Duration::from_secs(1),
        reserve_size: 0,
        reserve_timeout: Duration::from_secs(5),
        reserve_critical: 0,
    }
}
