//! Effective values of the access settings (`auth_hba_file`, `auth_query`) and the
//! limits beyond the pool size (`reserve_pool_*`, `max_user_connections`): the
//! per-database or per-user value, else the global one.

use std::time::Duration;

use crate::{hba, Config, ConfigError};

impl Config {
    /// Reads `auth_hba_file` (as given: resolved by [`Config::load`]) into [`Config::hba`].
    ///
    /// # Errors
    /// The file cannot be read, or a rule is malformed or unsupported (with its line).
    pub fn read_hba_file(&mut self) -> Result<(), ConfigError> {
        self.hba = match &self.auth_hba_file {
            Some(path) => Some(std::sync::Arc::new(hba::HbaRules::read(path)?)),
            None => None,
        };
        Ok(())
    }

    /// The `auth_query` set-up for logins to database `db`: (auth user, query, database
    /// the query runs in); `None` when no `auth_user` applies.
    pub fn auth_query_for<'a>(&'a self, db: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
        let d = self.databases.get(db);
        let user = d
            .and_then(|d| d.auth_user.as_deref())
            .or(self.auth_user.as_deref())?;
        let query = d
            .and_then(|d| d.auth_query.as_deref())
            .unwrap_or(&self.auth_query);
        let dbname = d
            .and_then(|d| d.auth_dbname.as_deref())
            .or(self.auth_dbname.as_deref())
            .unwrap_or(db);
        Some((user, query, dbname))
    }

    /// Effective (`reserve_pool_size`, `reserve_pool_timeout`) for database `db`.
    pub fn reserve_pool_for(&self, db: &str) -> (u32, Duration) {
        let d = self.databases.get(db);
        (
            d.and_then(|d| d.reserve_pool_size)
                .unwrap_or(self.reserve_pool_size),
            d.and_then(|d| d.reserve_pool_timeout)
                .unwrap_or(self.reserve_pool_timeout),
        )
    }

    /// Effective `max_user_connections` for server logins as `user` (0 = unlimited).
    pub fn max_user_connections_for(&self, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(self.max_user_connections)
    }
}
