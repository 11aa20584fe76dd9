//! The pools: one per (database, user), created on the first login, each with a manager
//! that knows how to open and log in a server connection for it. `RELOAD` applies a
//! new configuration to the pools in place ([`Pools::apply_config`]); the per-database
//! admin commands (`PAUSE`, `DISABLE`, ...) live in [`crate::control`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use weir_config::{Config, PoolMode};
use weir_pool::{ConnLabel, ManageConnection, Pool, PoolSettings};
use weir_wire::auth::scram::ScramSecret;

use crate::client_auth::Credentials;
use crate::server::{ServerConn, ServerCredential, ServerError, ServerParams, ServerTarget};

/// How often each pool's maintenance runs (warm-up, reaping, liveness).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a connect blocked by `max_db_connections` looks for an idle connection to evict.
const EVICT_RETRY: Duration = Duration::from_millis(50);

/// Opens server connections for one pool.
pub struct ServerManager {
    /// Replaced by `RELOAD` when the database's upstream changes (with a reconnect).
    target: RwLock<ServerTarget>,
    /// `max_db_connections`: shared by every pool of the database.
    db_group: Option<Arc<DbGroup>>,
    credential: RwLock<ServerCredential>,
    /// ParameterStatus set of the first successful login, sent to clients at their login.
    params: RwLock<Option<ServerParams>>,
}

impl ServerManager {
    /// Where and as whom this pool's connections log in.
    pub fn target(&self) -> ServerTarget {
        self.target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The parameters the server reported at login, once a connection has been made.
    pub fn server_params(&self) -> Option<ServerParams> {
        self.params
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Learns a SCRAM ClientKey from a client's login (checked against the user's
    /// verifier), when no better credential is known.
    pub fn learn_client_key(&self, key: [u8; 32], secret: &ScramSecret) {
        let mut cred = self.credential.write().unwrap_or_else(|e| e.into_inner());
        if matches!(*cred, ServerCredential::None) {
            *cred = ServerCredential::ScramClientKey {
                key,
                secret: Box::new(secret.clone()),
            };
        }
    }
}

impl ManageConnection for ServerManager {
    type Connection = ServerConn;
    type Error = ServerError;

    async fn connect(&self) -> Result<ServerConn, ServerError> {
        let credential = self
            .credential
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Waiting here counts against server_connect_timeout, like any slow connect.
        let db_permit = match &self.db_group {
            Some(group) => Some(group.acquire().await),
            None => None,
        };
        let target = self.target();
        let mut conn = ServerConn::connect(&target, &credential).await?;
        conn.db_permit = db_permit;
        let mut params = self.params.write().unwrap_or_else(|e| e.into_inner());
        if params.is_none() {
            *params = Some(conn.params.clone());
        }
        Ok(conn)
    }

    fn is_reusable(&self, conn: &ServerConn) -> bool {
        conn.clean
    }

    fn is_alive(&self, conn: &mut ServerConn) -> bool {
        conn.is_idle_and_alive()
    }

    fn describe(&self, conn: &ServerConn) -> ConnLabel {
        ConnLabel {
            backend_pid: Some(conn.cancel.pid),
            remote: Some(conn.cancel.addr),
            local: conn.stream.local_addr().ok(),
        }
    }
}

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
    map: RwLock<HashMap<(String, String), Arc<PoolEntry>>>,
    db_groups: Mutex<HashMap<String, Arc<DbGroup>>>,
    /// `PAUSE`/`DISABLE` state per database, and for all (`PAUSE` without a name).
    pub(crate) flags: Mutex<crate::control::Flags>,
}

/// The pools of one database under `max_db_connections`.
pub struct DbGroup {
    limit: Arc<Semaphore>,
    pools: Mutex<Vec<Pool<ServerManager>>>,
}

impl DbGroup {
    /// A permit for one more server connection to this database. When none is free,
    /// closes an idle connection of another pool of the database (as PgBouncer does),
    /// retrying while the caller's connect timeout runs.
    async fn acquire(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.limit.clone().try_acquire_owned() {
                return permit;
            }
            let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for pool in pools {
                if pool.close_idle_lru() {
                    break;
                }
            }
            tokio::select! {
                permit = self.limit.clone().acquire_owned() => {
                    if let Ok(permit) = permit {
                        return permit;
                    }
                }
                _ = tokio::time::sleep(EVICT_RETRY) => {}
            }
        }
    }
}

impl Pools {
    /// An empty set of pools for `config`.
    pub fn new(config: Arc<Config>) -> Self {
        Pools {
            config: RwLock::new(config),
            map: RwLock::new(HashMap::new()),
            db_groups: Mutex::new(HashMap::new()),
            flags: Mutex::new(crate::control::Flags::default()),
        }
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
        let key = (database.to_owned(), user.to_owned());
        if let Some(entry) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Some(entry.clone());
        }
        let config = self.config();
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get(&key) {
            return Some(entry.clone());
        }
        let (target, credential) = server_login(&config, database, user, credential)?;
        let db_group = (config.max_db_connections > 0).then(|| {
            self.db_groups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(database.to_owned())
                .or_insert_with(|| {
                    Arc::new(DbGroup {
                        limit: Arc::new(Semaphore::new(config.max_db_connections as usize)),
                        pools: Mutex::new(Vec::new()),
                    })
                })
                .clone()
        });
        let manager = ServerManager {
            db_group: db_group.clone(),
            target: RwLock::new(target),
            credential: RwLock::new(credential),
            params: RwLock::new(None),
        };
        let pool = Pool::new(manager, settings_for(&config, database));
        if self.is_paused(database) {
            // Created during a PAUSE: held like the others; nothing to wait for.
            drop(pool.pause());
        }
        pool.spawn_maintenance(MAINTENANCE_INTERVAL);
        if let Some(group) = db_group {
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
        map.insert(key, entry.clone());
        Some(entry)
    }

    /// `RELOAD`: follow `config` from now on. Existing pools get the new sizes and
    /// timeouts in place; a pool whose upstream (host, port, dbname, login user)
    /// changed logs in to the new one and closes its old connections as they are
    /// released (no client sees an error); a changed pool mode applies to new
    /// logins; pools of removed databases are closed (their clients get 57P01 at
    /// their next transaction). Nothing is dropped mid-transaction.
    pub fn apply_config(&self, config: Arc<Config>, credentials: &Credentials) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config.clone();
        let mut removed = Vec::new();
        {
            let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            map.retain(|(db, _), entry| {
                let keep = config.databases.contains_key(db);
                if !keep {
                    removed.push(entry.clone());
                }
                keep
            });
            for ((db, user), entry) in map.iter_mut() {
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
                    if changed {
                        tracing::info!(db = %db, user = %user, "upstream changed: reconnecting the pool");
                        *manager
                            .params
                            .write()
                            .unwrap_or_else(PoisonError::into_inner) = None;
                        entry.pool.reconnect();
                    }
                }
                entry.pool.update_settings(settings_for(&config, db));
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
    }

    /// A snapshot of all pools.
    pub fn all(&self) -> Vec<Arc<PoolEntry>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Closes every pool (shutdown).
    pub fn close_all(&self) {
        for entry in self.all() {
            entry.pool.close();
        }
    }
}

/// Pool settings for a database from the configuration.
fn settings_for(c: &Config, database: &str) -> PoolSettings {
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    PoolSettings {
        max_size: c.pool_size_for(database),
        min_size: c.min_pool_size_for(database),
        wait_timeout: nonzero(c.query_wait_timeout),
        connect_timeout: c.server_connect_timeout,
        idle_timeout: nonzero(c.server_idle_timeout),
        // PgBouncer: server_lifetime = 0 means each connection is used only once.
        max_lifetime: Some(c.server_lifetime),
        login_retry: c.server_login_retry,
    }
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
