//! Effective pool settings (size, mode, scaling bounds, pins, queue, critical reserve,
//! dedup) and a client's priority class: the per-user or per-database value, else the
//! global one.

use crate::{Config, Mode, PoolMode, Priority};

impl Config {
    /// Effective pool size for database `db`: its `pool_size`, else `default_pool_size`.
    pub fn pool_size_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.pool_size)
            .unwrap_or(self.default_pool_size)
    }

    /// The class of a client from the rules, else `default_priority`.
    pub fn priority_for(&self, user: &str, database: &str, application_name: &str) -> Priority {
        self.priority_rules
            .iter()
            .find(|r| r.matches(user, database, application_name))
            .map_or(self.default_priority, |r| r.priority)
    }

    /// Whether query dedup is on for database `db`: its own `dedup`, else the global
    /// one, which `high_performance` mode turns on.
    pub fn dedup_for(&self, db: &str) -> bool {
        self.databases
            .get(db)
            .and_then(|d| d.dedup)
            .unwrap_or(self.dedup || self.mode == Mode::HighPerformance)
    }

    /// Effective `reserve_critical` for each pool of database `db`.
    pub fn reserve_critical_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.reserve_critical)
            .unwrap_or(self.reserve_critical)
    }

    /// Effective `max_queue` for each pool of database `db`.
    pub fn max_queue_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.max_queue)
            .unwrap_or(self.max_queue)
    }

    /// Effective pin cap for each pool of database `db`: its `max_pinned`, else the
    /// global one, else its pool size (`max_pool_size` when autoscaled) - 1.
    pub fn max_pinned_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.max_pinned)
            .or(self.max_pinned)
            .unwrap_or_else(|| {
                // An autoscaled pool may grow to max_pool_size: pins leave one of those.
                let size = match self.max_pool_size_for(db) {
                    0 => self.pool_size_for(db),
                    max => max,
                };
                size.saturating_sub(1)
            })
    }

    /// Effective minimum pool size for database `db`: its `min_pool_size`, else the global one.
    pub fn min_pool_size_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.min_pool_size)
            .unwrap_or(self.min_pool_size)
    }

    /// Effective scaling ceiling for database `db` (0: fixed pools).
    pub fn max_pool_size_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.max_pool_size)
            .unwrap_or(self.max_pool_size)
    }

    /// Whether the scaling engine sizes the pools of database `db`.
    pub fn autoscaled(&self, db: &str) -> bool {
        self.autoscale && self.max_pool_size_for(db) > 0
    }

    /// Effective pool mode for `user` on `db`: the user's, else the database's, else the
    /// global one (PgBouncer's precedence).
    pub fn pool_mode_for(&self, db: &str, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or_else(|| self.databases.get(db).and_then(|d| d.pool_mode))
            .unwrap_or(self.pool_mode)
    }
}
