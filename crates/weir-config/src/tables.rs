//! The tables nested in [`Config`](crate::Config): `[databases.NAME]`,
//! `[[priority_rules]]` and `[users.NAME]`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::{duration, PoolMode, Priority, Secret, DEFAULT_SERVER_PORT, REDACTED};

/// Where and how to reach one upstream database (`[databases.NAME]`). `Debug` hides `password`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Server host name or IP address, or a Unix socket directory (starts with `/`: the
    /// socket is `<dir>/.s.PGSQL.<port>`). One, no lists. Required.
    pub host: String,
    /// Server port. Default 5432.
    #[serde(default = "default_server_port")]
    pub port: u16,
    /// Database name on the server; `None` = the name clients use.
    pub dbname: Option<String>,
    /// Log in to the server as this user instead of the client's (one pool for the database).
    pub user: Option<String>,
    /// Password for `user`; `None` = the user's secret from `[users]`/the auth file.
    pub password: Option<String>,
    /// Pool size for this database; `None` = `default_pool_size`.
    pub pool_size: Option<u32>,
    /// Minimum pool size for this database; `None` = the global `min_pool_size`.
    pub min_pool_size: Option<u32>,
    /// The scaling engine's ceiling for this database's pools; `None` = the global
    /// `max_pool_size` (0 there and here: fixed pools).
    pub max_pool_size: Option<u32>,
    /// Most pinned clients per pool of this database; `None` = the global `max_pinned`.
    pub max_pinned: Option<u32>,
    /// Most waiting clients per pool of this database; `None` = the global `max_queue`.
    pub max_queue: Option<u32>,
    /// Servers of each pool of this database only critical clients get; `None` = the
    /// global `reserve_critical`.
    pub reserve_critical: Option<u32>,
    /// Pool mode for this database; `None` = the global `pool_mode`.
    pub pool_mode: Option<PoolMode>,
    /// Query dedup for this database; `None` = the global `dedup`.
    pub dedup: Option<bool>,
    /// `reserve_pool_size` for this database's pools; `None` = the global one.
    pub reserve_pool_size: Option<u32>,
    /// `reserve_pool_timeout` for this database's pools; `None` = the global one.
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub reserve_pool_timeout: Option<Duration>,
    /// `auth_user` for logins to this database; `None` = the global one.
    pub auth_user: Option<String>,
    /// `auth_query` for logins to this database; `None` = the global one.
    pub auth_query: Option<String>,
    /// `auth_dbname` for logins to this database; `None` = the global one.
    pub auth_dbname: Option<String>,
}

impl Default for DatabaseConfig {
    /// A local server on the default port with every option inherited.
    fn default() -> Self {
        DatabaseConfig {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_SERVER_PORT,
            dbname: None,
            user: None,
            password: None,
            pool_size: None,
            min_pool_size: None,
            max_pool_size: None,
            max_pinned: None,
            max_queue: None,
            reserve_critical: None,
            pool_mode: None,
            dedup: None,
            reserve_pool_size: None,
            reserve_pool_timeout: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("pool_size", &self.pool_size)
            .field("min_pool_size", &self.min_pool_size)
            .field("max_pool_size", &self.max_pool_size)
            .field("max_pinned", &self.max_pinned)
            .field("max_queue", &self.max_queue)
            .field("reserve_critical", &self.reserve_critical)
            .field("pool_mode", &self.pool_mode)
            .field("dedup", &self.dedup)
            .field("reserve_pool_size", &self.reserve_pool_size)
            .field("reserve_pool_timeout", &self.reserve_pool_timeout)
            .field("auth_user", &self.auth_user)
            .field("auth_query", &self.auth_query)
            .field("auth_dbname", &self.auth_dbname)
            .finish()
    }
}

impl DatabaseConfig {
    /// The database name to ask the server for: `dbname`, or else `name`, the client-side name.
    pub fn server_dbname<'a>(&'a self, name: &'a str) -> &'a str {
        self.dbname.as_deref().unwrap_or(name)
    }
}

/// One `[[priority_rules]]` entry: clients matching every given field get `priority`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    /// The client's user name, if the rule names one.
    pub user: Option<String>,
    /// The database the client asked for, if the rule names one.
    pub database: Option<String>,
    /// The client's `application_name`, if the rule names one.
    pub application_name: Option<String>,
    /// The class its clients get.
    pub priority: Priority,
}

impl PriorityRule {
    /// Whether a client of `user` on `database` with `application_name` matches.
    pub fn matches(&self, user: &str, database: &str, application_name: &str) -> bool {
        self.user.as_deref().is_none_or(|u| u == user)
            && self.database.as_deref().is_none_or(|d| d == database)
            && self
                .application_name
                .as_deref()
                .is_none_or(|a| a == application_name)
    }
}

/// Per-user settings (`[users.NAME]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's secret: a plain-text password, an md5 hash or a SCRAM secret.
    pub password: Option<Secret>,
    /// Pool mode for this user's pools; wins over the database's and the global one.
    pub pool_mode: Option<PoolMode>,
    /// Most server connections of this user over all databases; `None` = the global
    /// `max_user_connections`.
    pub max_user_connections: Option<u32>,
}

fn default_server_port() -> u16 {
    DEFAULT_SERVER_PORT
}
