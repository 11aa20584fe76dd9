//! The pools: one per (database, user), created on the first login, each with a manager
//! that knows how to open and log in a server connection for it. `RELOAD` applies a
//! new configuration to the pools in place ([`Pools::apply_config`]); the per-database
//! admin commands (`PAUSE`, `DISABLE`, ...) live in `crate::control`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use std::time::Duration;

use weir_config::{Config, Mode, PoolMode};
use weir_pool::{ConnLabel, ManageConnection, Pool, PoolSettings};
use weir_wire::auth::scram::ScramSecret;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use weir_pool::breaker::{Admit, Breaker, BreakerSettings};

use crate::client_auth::Credentials;
use crate::db_budget::DbGroup;
use crate::server::{Fault, ServerConn, ServerCredential, ServerError, ServerParams, ServerTarget};
use crate::upstream::{log_transition, Upstream, Upstreams};

/// How often each pool's maintenance runs (warm-up, reaping, liveness).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// `resource_saver`: idle server connections are closed after at most this long.
const RESOURCE_SAVER_IDLE: Duration = Duration::from_secs(30);

/// Opens server connections for one pool.
pub struct ServerManager {
    /// Replaced by `RELOAD` when the database's upstream changes (with a reconnect).
    target: RwLock<ServerTarget>,
    /// `max_db_connections`: shared by every pool of the database.
    db_group: Arc<DbGroup>,
    /// `max_user_connections`: the same kind of budget, shared by every pool that logs
    /// in as the same server user (across databases).
    user_group: Arc<DbGroup>,
    credential: RwLock<ServerCredential>,
    /// ParameterStatus set of the first successful login, sent to clients at their login.
    params: RwLock<Option<ServerParams>>,
    /// The last few greetings built from `params` for this pool's clients.
    greetings: crate::greeting::Greetings,
    /// The upstream `target` points at, with its breaker (replaced with the target).
    upstream: RwLock<Arc<Upstream>>,
    /// `server_connect_timeout` in ms: a connect dropped this late timed out (the pool
    /// applies the timeout by dropping the connect), which the breaker must hear.
    connect_timeout_ms: AtomicU64,
    /// The TLS settings in force (`server_tls_*`), read at each connect.
    tls: Arc<crate::tls::Tls>,
}

impl ServerManager {
    /// Where and as whom this pool's connections log in.
    pub fn target(&self) -> ServerTarget {
        self.target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The upstream this pool's connections go to.
    pub fn upstream(&self) -> Arc<Upstream> {
        self.upstream
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

    /// The greeting for a client of this pool with these startup settings.
    pub fn greeting(
        &self,
        server: &ServerParams,
        settings: &[(String, String)],
        track_extra: &[String],
    ) -> crate::greeting::Greeting {
        self.greetings.get(server, settings, track_extra)
    }

    /// Learns a SCRAM ClientKey from a client's login (checked against the user's
    /// verifier), when no better credential is known; a newer key replaces an older one
    /// (the verifier may have changed: `auth_query` fetched a new one).
    pub fn learn_client_key(&self, key: [u8; 32], secret: &ScramSecret) {
        let mut cred = self.credential.write().unwrap_or_else(|e| e.into_inner());
        let stale = match &*cred {
            ServerCredential::None => true,
            ServerCredential::ScramClientKey { key: old, .. } => *old != key,
            _ => false,
        };
        if stale {
            *cred = ServerCredential::ScramClientKey {
                key,
                secret: Box::new(secret.clone()),
            };
        }
    }

    /// Learns the clear-text password `user` proved (`password` method) when nothing
    /// better than a learned ClientKey is known (and the pool logs in as `user`).
    pub fn learn_password(&self, user: &str, password: String) {
        if self.target().user != user {
            return;
        }
        let mut cred = self.credential.write().unwrap_or_else(|e| e.into_inner());
        if matches!(
            *cred,
            ServerCredential::None | ServerCredential::ScramClientKey { .. }
        ) {
            *cred = ServerCredential::Password(password);
        }
    }

    /// Takes `credential` (fetched with `auth_query` for `user`) as this pool's server
    /// login, unless the pool logs in as a database's fixed user or the credential is no
    /// better than a ClientKey already learned.
    pub fn refresh_credential(&self, user: &str, credential: &ServerCredential) {
        if matches!(credential, ServerCredential::None) || self.target().user != user {
            return;
        }
        *self.credential.write().unwrap_or_else(|e| e.into_inner()) = credential.clone();
    }
}

impl ManageConnection for ServerManager {
    // Boxed: a connection moves through the pool's lists, its guard and the relay's
    // checkout several times per transaction; as a pointer it costs 8 bytes per move,
    // not the ~370 that were ~2 000 instructions of memcpy per transaction.
    type Connection = Box<ServerConn>;
    type Error = ServerError;

    async fn connect(&self) -> Result<Box<ServerConn>, ServerError> {
        let credential = self
            .credential
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let upstream = self.upstream();
        let started = tokio::time::Instant::now();
        let probe = match upstream.breaker.admit(started) {
            Admit::Go => false,
            Admit::Probe => true,
            Admit::Refuse(retry_in) => {
                return Err(ServerError::BreakerOpen {
                    upstream: upstream.addr.clone(),
                    retry_in,
                    last_error: upstream.breaker.snapshot(started).last_error,
                })
            }
        };
        let mut outcome = ConnectOutcome {
            upstream: &upstream,
            started,
            timeout: Duration::from_millis(self.connect_timeout_ms.load(Relaxed)),
            probe,
            resolved: false,
        };
        // Waiting here counts against server_connect_timeout, like any slow connect.
        // The user's budget first: a connect holding a database permit while it waits
        // for its user's would keep that permit from other users.
        let user_permit = Some(self.user_group.acquire(self).await);
        let db_permit = Some(self.db_group.acquire(self).await);
        let target = self.target();
        let tls = self.tls.server();
        let result = ServerConn::connect(&target, &credential, tls.as_ref()).await;
        outcome.resolve(result.as_ref().err());
        let mut conn = Box::new(result?);
        conn.db_permit = db_permit;
        conn.user_permit = user_permit;
        let mut params = self.params.write().unwrap_or_else(|e| e.into_inner());
        if params.is_none() {
            *params = Some(conn.params.clone());
        }
        Ok(conn)
    }

    fn backs_off(&self, e: Option<&ServerError>) -> bool {
        // Unreachable upstreams (and timeouts) are the breaker's; a refused login is
        // this pool's.
        e.is_some_and(|e| e.fault() == Fault::ServerSaid)
    }

    fn is_reusable(&self, conn: &Box<ServerConn>) -> bool {
        self.db_group.note_checkin();
        self.user_group.note_checkin();
        conn.clean
    }

    fn is_alive(&self, conn: &mut Box<ServerConn>) -> bool {
        conn.is_idle_and_alive()
    }

    fn describe(&self, conn: &Box<ServerConn>) -> ConnLabel {
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
    /// `max_user_connections` budgets by server login user.
    user_groups: Mutex<HashMap<String, Arc<DbGroup>>>,
    /// `PAUSE`/`DISABLE` state per database, and for all (`PAUSE` without a name).
    pub(crate) flags: Mutex<crate::control::Flags>,
    /// Every upstream (host:port) and its circuit breaker.
    upstreams: Upstreams,
    /// TLS for both legs; `RELOAD` rebuilds it.
    pub(crate) tls: Arc<crate::tls::Tls>,
}

/// Tells an upstream's breaker how one connect went, also when the pool drops the
/// connect at `server_connect_timeout` (a silent upstream) or its caller leaves.
struct ConnectOutcome<'a> {
    upstream: &'a Upstream,
    started: tokio::time::Instant,
    timeout: Duration,
    probe: bool,
    resolved: bool,
}

impl ConnectOutcome<'_> {
    fn resolve(&mut self, error: Option<&ServerError>) {
        self.resolved = true;
        let breaker: &Breaker = &self.upstream.breaker;
        let before = breaker.state();
        let why = match error {
            // A refused login still proves the upstream up.
            None => None,
            Some(e) if e.fault() != Fault::Unreachable => None,
            Some(e) => Some(e.to_string()),
        };
        match &why {
            None => breaker.on_success(),
            Some(why) => breaker.on_failure(tokio::time::Instant::now(), why),
        }
        log_transition(self.upstream, before, why.as_deref().unwrap_or(""));
    }
}

impl Drop for ConnectOutcome<'_> {
    fn drop(&mut self) {
        if self.resolved {
            return;
        }
        let now = tokio::time::Instant::now();
        let breaker = &self.upstream.breaker;
        let before = breaker.state();
        // The pool drops a connect at its timeout: a silent upstream.
        let why = "timed out connecting (server_connect_timeout)";
        if now.saturating_duration_since(self.started) + Duration::from_millis(20) >= self.timeout {
            breaker.on_failure(now, why);
        } else if self.probe {
            breaker.probe_abandoned(now);
        }
        log_transition(self.upstream, before, why);
    }
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

/// Probes an open breaker's upstream in the background with one real connect and login
/// of `pool` (bounded by `server_connect_timeout`); its outcome opens or closes the
/// breaker, and the connection is closed. Only one probe runs at a time per upstream
/// (the breaker admits one); extra calls return at once.
pub fn spawn_probe(pool: Pool<ServerManager>) {
    tokio::spawn(async move {
        let manager = pool.manager();
        let limit = Duration::from_millis(manager.connect_timeout_ms.load(Relaxed));
        match tokio::time::timeout(limit, manager.connect()).await {
            Ok(Ok(conn)) => drop(conn),
            Ok(Err(e)) => tracing::debug!(error = %e, "breaker probe failed"),
            Err(_) => tracing::debug!("breaker probe timed out"),
        }
    });
}

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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
