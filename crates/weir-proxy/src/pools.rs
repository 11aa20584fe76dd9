//! The pools: one per (database, user), created on the first login, each with a manager
//! that knows how to open and log in a server connection for it. `RELOAD` applies a
//! new configuration to the pools in place ([`Pools::apply_config`]); the per-database
//! admin commands (`PAUSE`, `DISABLE`, ...) live in `crate::control`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use weir_config::{Config, PoolMode};
use weir_pool::Pool;

use crate::client_auth::Credentials;
use crate::db_budget::DbGroup;
use crate::server::{ServerCredential, ServerTarget};
use crate::upstream::Upstreams;

mod server_manager;
mod settings;

pub use server_manager::{spawn_probe, ServerManager};
pub use settings::{breaker_settings, scaled_floor, settings_for};

/// How often each pool's maintenance runs (warm-up, reaping, liveness).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// One (database, user) pool and what sessions need to know about it.
pub struct PoolEntry {
    /// Client-facing database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Session or transaction pooling.
    pub mode: PoolMode,
    /// The server connections.
    pub pool: Pool<ServerManager>,
}

/// Every pool of the proxy.
pub struct Pools {
    config: RwLock<Arc<Config>>,
    /// By database, then user: a login looks its pool up by `&str`, allocating nothing.
    map: RwLock<HashMap<String, HashMap<String, Arc<PoolEntry>>>>,
    db_groups: Mutex<HashMap<String, Arc<DbGroup>>>,
    /// `max_user_connections` budgets by server login user.
    user_groups: Mutex<HashMap<String, Arc<DbGroup>>>,
    /// `PAUSE`/`DISABLE` state per database, and for all (`PAUSE` without a name).
    pub(crate) flags: Mutex<crate::control::Flags>,
    /// Every upstream (host:port) and its circuit breaker.
    upstreams: Upstreams,
    /// TLS for both legs; `RELOAD` rebuilds it.
    pub(crate) tls: Arc<crate::tls::Tls>,
}

impl Pools {
    /// An empty set of pools for `config`.
    pub fn new(config: Arc<Config>, tls: Arc<crate::tls::Tls>) -> Self {
        Pools {
            tls,
            map: RwLock::new(HashMap::new()),
            db_groups: Mutex::new(HashMap::new()),
            user_groups: Mutex::new(HashMap::new()),
            flags: Mutex::new(crate::control::Flags::default()),
            upstreams: Upstreams::new(breaker_settings(&config)),
            config: RwLock::new(config),
        }
    }

    /// Every upstream and its breaker (`SHOW BREAKERS`, `/metrics`).
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The configuration the pools follow now.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The pool for (database, user), created on first use; `None` if the database is not configured.
    /// Must be called inside the runtime (a new pool starts its maintenance task).
    pub fn get_or_create(
        &self,
        database: &str,
        user: &str,
        credential: &ServerCredential,
    ) -> Option<Arc<PoolEntry>> {
        let found = |map: &HashMap<String, HashMap<String, Arc<PoolEntry>>>| {
            map.get(database).and_then(|users| users.get(user)).cloned()
        };
        if let Some(entry) = found(&self.map.read().unwrap_or_else(|e| e.into_inner())) {
            return Some(entry);
        }
        let config = self.config();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = found(&map) {
            return Some(entry);
        }
        let (target, credential) = server_login(&config, database, user, credential)?;
        let db_group = self
            .db_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(database.to_owned())
            .or_insert_with(|| DbGroup::new(config.max_db_connections))
            .clone();
        let user_group = self
            .user_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(target.user.clone())
            .or_insert_with(|| DbGroup::new(config.max_user_connections_for(&target.user)))
            .clone();
        let manager = ServerManager {
            tls: self.tls.clone(),
            db_group: db_group.clone(),
            user_group: user_group.clone(),
            upstream: RwLock::new(self.upstreams.get(&target.host, target.port)),
            target: RwLock::new(target),
            credential: RwLock::new(credential),
            params: RwLock::new(None),
            greetings: Default::default(),
            connect_timeout_ms: AtomicU64::new(millis(config.server_connect_timeout)),
        };
        let pool = Pool::new(manager, settings_for(&config, database));
        if self.is_paused(database) {
            // Created during a PAUSE: held like the others; nothing to wait for.
            drop(pool.pause());
        }
        pool.spawn_maintenance(MAINTENANCE_INTERVAL);
        if config.autoscaled(database) {
            // The engine starts a pool at its floor and grows it from there.
            pool.set_target(Some(scaled_floor(&config, database)));
        }
        for group in [&db_group, &user_group] {
            group
                .pools
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pool.clone());
        }
        let entry = Arc::new(PoolEntry {
            database: database.to_owned(),
            user: user.to_owned(),
            mode: config.pool_mode_for(database, user),
            pool,
        });
        map.entry(database.to_owned())
            .or_default()
            .insert(user.to_owned(), entry.clone());
        Some(entry)
    }

    /// `RELOAD`: follow `config` from now on. Existing pools get the new sizes and
    /// timeouts in place; a pool whose upstream (host, port, dbname, login user)
    /// changed logs in to the new one and closes its old connections as they are
    /// released (no client sees an error); a changed pool mode applies to new
    /// logins; pools of removed databases are closed (their clients get 57P01 at
    /// their next transaction). Nothing is dropped mid-transaction.
    pub fn apply_config(&self, config: Arc<Config>, credentials: &Credentials) {
        let before = std::mem::replace(
            &mut *self.config.write().unwrap_or_else(PoisonError::into_inner),
            config.clone(),
        );
        if before.mode != config.mode {
            tracing::warn!(from = %before.mode, to = %config.mode, "operation mode changed");
        }
        self.upstreams.update_settings(breaker_settings(&config));
        let mut removed = Vec::new();
        {
            let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            map.retain(|db, users| {
                let keep = config.databases.contains_key(db);
                if !keep {
                    removed.extend(users.values().cloned());
                }
                keep
            });
            let entries = map
                .iter_mut()
                .flat_map(|(db, users)| users.iter_mut().map(move |(user, e)| (db, user, e)));
            for (db, user, entry) in entries {
                let client_cred = credentials
                    .get(user)
                    .map_or(ServerCredential::None, |s| s.server.clone());
                let manager = entry.pool.manager();
                if let Some((target, cred)) = server_login(&config, db, user, &client_cred) {
                    if !matches!(cred, ServerCredential::None) {
                        *manager
                            .credential
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) = cred;
                    }
                    let changed = {
                        let mut current = manager
                            .target
                            .write()
                            .unwrap_or_else(PoisonError::into_inner);
                        let changed = !same_target(&current, &target);
                        *current = target;
                        changed
                    };
                    manager
                        .connect_timeout_ms
                        .store(millis(config.server_connect_timeout), Relaxed);
                    if changed {
                        let target = manager.target();
                        *manager
                            .upstream
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) =
                            self.upstreams.get(&target.host, target.port);
                        tracing::info!(db = %db, user = %user, "upstream changed: reconnecting the pool");
                        *manager
                            .params
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) = None;
                        entry.pool.reconnect();
                    }
                }
                entry.pool.update_settings(settings_for(&config, db));
                match (config.autoscaled(db), entry.pool.target()) {
                    (true, None) => entry.pool.set_target(Some(scaled_floor(&config, db))),
                    (false, Some(_)) => entry.pool.set_target(None),
                    _ => {}
                }
                let mode = config.pool_mode_for(db, user);
                if mode != entry.mode {
                    *entry = Arc::new(PoolEntry {
                        database: entry.database.clone(),
                        user: entry.user.clone(),
                        mode,
                        pool: entry.pool.clone(),
                    });
                }
            }
        }
        for entry in removed {
            tracing::info!(db = %entry.database, user = %entry.user, "database removed: closing its pool");
            entry.pool.close();
        }
        let groups = self
            .db_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for group in groups.values() {
            if group.limit() != config.max_db_connections {
                group.resize(config.max_db_connections);
            }
        }
        drop(groups);
        let users = self
            .user_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (user, group) in users.iter() {
            let limit = config.max_user_connections_for(user);
            if group.limit() != limit {
                group.resize(limit);
            }
        }
    }

    /// The `max_db_connections` group of a database, once one of its pools exists.
    pub fn db_group(&self, database: &str) -> Option<Arc<DbGroup>> {
        self.db_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(database)
            .cloned()
    }

    /// A snapshot of all pools.
    pub fn all(&self) -> Vec<Arc<PoolEntry>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flat_map(|users| users.values().cloned())
            .collect()
    }

    /// Closes every pool (shutdown).
    pub fn close_all(&self) {
        for entry in self.all() {
            entry.pool.close();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn same_target(a: &ServerTarget, b: &ServerTarget) -> bool {
    a.host == b.host && a.port == b.port && a.dbname == b.dbname && a.user == b.user
}

/// Where and with what a (database, user) pool logs in; `None` if the database is not
/// configured. A database entry may force the server login user and password
/// (PgBouncer's `user=`/`password=`).
fn server_login(
    config: &Config,
    database: &str,
    user: &str,
    credential: &ServerCredential,
) -> Option<(ServerTarget, ServerCredential)> {
    let db = config.databases.get(database)?;
    let (server_user, credential) = match (&db.user, &db.password) {
        (Some(u), Some(p)) => (u.clone(), ServerCredential::Password(p.clone())),
        (Some(u), None) => (u.clone(), credential.clone()),
        (None, _) => (user.to_owned(), credential.clone()),
    };
    let target = ServerTarget {
        host: db.host.clone(),
        port: db.port,
        dbname: db.server_dbname(database).to_owned(),
        user: server_user,
    };
    Some((target, credential))
}
