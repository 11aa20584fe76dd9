//! Pool and breaker settings derived from the configuration and the proxy's mode.

use std::time::Duration;

use weir_config::{Config, Mode};
use weir_pool::breaker::BreakerSettings;
use weir_pool::PoolSettings;

/// `resource_saver`: idle server connections are closed after at most this long.
const RESOURCE_SAVER_IDLE: Duration = Duration::from_secs(30);

/// Breaker settings from the configuration; `emergency` makes them most sensitive.
pub fn breaker_settings(c: &Config) -> BreakerSettings {
    let normal = BreakerSettings {
        failures: c.breaker_failures,
        error_ratio: c.breaker_error_ratio,
        probe_max: c.breaker_probe_max,
        ..BreakerSettings::default()
    };
    match c.mode {
        Mode::Emergency => BreakerSettings {
            failures: normal.failures.min(1),
            error_ratio: if normal.error_ratio > 0.0 {
                normal.error_ratio.min(0.2)
            } else {
                0.0
            },
            min_errors: 5,
            ..normal
        },
        _ => normal,
    }
}

/// The floor of an autoscaled pool: `min_pool_size`, at least 1 (a pool of 0 serves nobody).
pub fn scaled_floor(c: &Config, database: &str) -> u32 {
    c.min_pool_size_for(database).max(1)
}

/// Pool settings for a database from the configuration: for an autoscaled pool the
/// bounds (`min_pool_size`..=`max_pool_size`) inside which the engine sets the target.
pub fn settings_for(c: &Config, database: &str) -> PoolSettings {
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    let (mut max_size, mut min_size) = if c.autoscaled(database) {
        (c.max_pool_size_for(database), scaled_floor(c, database))
    } else {
        (c.pool_size_for(database), c.min_pool_size_for(database))
    };
    let mut idle_timeout = nonzero(c.server_idle_timeout);
    match c.mode {
        // The pool at its upper bound, kept warm.
        Mode::HighPerformance => min_size = max_size,
        // Small pools, idle servers closed soon.
        Mode::ResourceSaver => {
            max_size = max_size.div_ceil(2).max(1);
            min_size = 0;
            idle_timeout =
                Some(idle_timeout.map_or(RESOURCE_SAVER_IDLE, |d| d.min(RESOURCE_SAVER_IDLE)));
        }
        Mode::Normal | Mode::Emergency => {}
    }
    PoolSettings {
        max_size,
        min_size,
        wait_timeout: nonzero(c.query_wait_timeout),
        connect_timeout: c.server_connect_timeout,
        idle_timeout,
        // PgBouncer: server_lifetime = 0 means each connection is used only once.
        max_lifetime: Some(c.server_lifetime),
        login_retry: c.server_login_retry,
        max_queue: c.max_queue_for(database) as usize,
        reserve_size: c.reserve_pool_for(database).0,
        reserve_timeout: c.reserve_pool_for(database).1,
        priority_aging: c.priority_aging,
        reserve_critical: c.reserve_critical_for(database),
    }
}
