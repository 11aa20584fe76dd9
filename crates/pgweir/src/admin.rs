//! The binary's glue between the proxy and the admin surface: [`Admin`] implements
//! `weir_admin::AdminBackend` over a [`ProxyHandle`] (snapshots of pools, servers and
//! clients; admin commands), and `weir_proxy::AdminConsole` by handing console logins
//! to `weir_admin::serve_console`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use weir_admin::backend::{
    BreakerRow, ConfigRow, DatabaseRow, DedupRow, ListsRow, MemRow, PoolCounters, PoolLatency,
    PoolRow, PriorityRow, QueryRow, Readiness, SocketRow, StateRow, StatsTotals, UserRow,
};
use weir_admin::{AdminBackend, AdminCommand, BoxFuture, Role, StatsAverager};
use weir_config::Config;
use weir_pool::ServerState;
use weir_proxy::registry::ClientState;
use weir_proxy::stream::Stream;
use weir_proxy::{AdminConsole, AdminRole, ProxyHandle};

use crate::config_rows::config_rows;

/// Re-reads the configuration for `RELOAD` and SIGHUP; the error says what is wrong.
pub type Loader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// The admin backend of one running proxy.
pub struct Admin {
    handle: ProxyHandle,
    averager: StatsAverager,
    loader: Option<Loader>,
    /// The scaling engine, once started.
    scaler: std::sync::OnceLock<Arc<crate::scaling::Scaler>>,
}

impl Admin {
    /// `ptr` of every server connection by its backend pid (clients' `link`).
    fn server_ptrs_by_pid(&self) -> HashMap<i32, String> {
        let mut map = HashMap::new();
        for e in self.handle.pools() {
            let key = Arc::as_ptr(&e) as usize;
            for s in e.pool.servers() {
                if let Some(pid) = s.label.backend_pid {
                    map.insert(pid, ptr(0x5, key, s.id));
                }
            }
        }
        map
    }
    /// A backend over `handle`; `loader` re-reads the configuration (`None`: nothing to
    /// reload, as in `pgweir demo`).
    pub fn new(handle: ProxyHandle, loader: Option<Loader>) -> Arc<Admin> {
        let period = handle.config().stats_period;
        Arc::new(Admin {
            handle,
            averager: StatsAverager::new(if period.is_zero() {
                Duration::from_secs(60)
            } else {
                period
            }),
            loader,
            scaler: std::sync::OnceLock::new(),
        })
    }

    /// Attach the scaling engine (its admin rows and HTTP API).
    pub fn set_scaler(&self, scaler: Arc<crate::scaling::Scaler>) {
        let _ = self.scaler.set(scaler);
    }

    /// The scaling engine, if attached.
    pub fn scaler(&self) -> Option<&Arc<crate::scaling::Scaler>> {
        self.scaler.get()
    }

    /// The proxy handle.
    pub fn handle(&self) -> &ProxyHandle {
        &self.handle
    }

    /// `RELOAD` / SIGHUP: re-reads the configuration and applies it.
    ///
    /// # Errors
    /// No configuration file, or the new configuration is invalid (nothing changed).
    pub fn reload(&self) -> Result<(), String> {
        let Some(loader) = &self.loader else {
            return Err("no configuration file to reload (pgweir runs from flags only)".into());
        };
        let config = loader()?;
        self.handle.apply_config(config)?;
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

/// Hands console logins to `weir_admin::serve_console`.
pub struct Console(pub Arc<Admin>);

impl AdminConsole for Console {
    fn serve<'a>(
        &'a self,
        stream: &'a mut Stream,
        rbuf: BytesMut,
        user: &'a str,
        role: AdminRole,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let role = match role {
            AdminRole::Admin => Role::Admin,
            AdminRole::Stats => Role::Stats,
        };
        Box::pin(async move {
            let backend: &dyn AdminBackend = &*self.0;
            if let Err(e) =
                weir_admin::console::serve_console(stream, rbuf, user, role, backend).await
            {
                tracing::debug!(error = %e, "admin console session ended");
            }
        })
    }
}

fn ptr(kind: u8, a: usize, b: u64) -> String {
    format!("{kind:x}{a:x}{b:04x}")
}

impl AdminBackend for Admin {
    fn pools(&self) -> Vec<PoolRow> {
        // Clients by (database, user): active (linked or idle) and waiting.
        let mut counts: HashMap<(String, String), (u32, u32)> = HashMap::new();
        for c in self.handle.clients() {
            let Some(login) = c.login() else { continue };
            let slot = counts
                .entry((login.database.to_string(), login.user.to_string()))
                .or_default();
            match c.state() {
                ClientState::Waiting => slot.1 += 1,
                ClientState::Active | ClientState::Idle => slot.0 += 1,
                ClientState::Login => {}
            }
        }
        let mut rows: Vec<PoolRow> = self
            .handle
            .pools()
            .iter()
            .map(|e| {
                let s = e.pool.stats();
                let (cl_active, cl_waiting) = counts
                    .get(&(e.database.clone(), e.user.clone()))
                    .copied()
                    .unwrap_or_default();
                let mut row = PoolRow {
                    database: e.database.clone(),
                    user: e.user.clone(),
                    cl_active,
                    cl_waiting,
                    sv_active: s.active,
                    sv_idle: s.idle,
                    sv_used: s.held,
                    sv_login: s.connecting,
                    pool_mode: e.mode.to_string(),
                    ..PoolRow::default()
                };
                row.set_maxwait(s.max_wait);
                row
            })
            .collect();
        rows.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        rows
    }

    fn clients(&self) -> Vec<SocketRow> {
        let listen = self.handle.listen_addr();
        let now_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut clients = self.handle.clients();
        clients.sort_by_key(|c| c.id);
        let server_ptrs = self.server_ptrs_by_pid();
        clients
            .iter()
            .map(|c| {
                let login = c.login();
                let state = c.state();
                let changed = c.changed_at_us();
                SocketRow {
                    kind: "C",
                    user: login
                        .as_ref()
                        .map_or("(nouser)".into(), |l| l.user.to_string()),
                    database: login
                        .as_ref()
                        .map_or("(nodb)".into(), |l| l.database.to_string()),
                    state: match state {
                        ClientState::Login => "login",
                        ClientState::Idle => "idle",
                        ClientState::Waiting => "waiting",
                        ClientState::Active => "active",
                    }
                    .into(),
                    addr: if c.unix {
                        "unix".to_owned()
                    } else {
                        c.peer.ip().to_string()
                    },
                    port: c.peer.port(),
                    local_addr: listen.ip().to_string(),
                    local_port: listen.port(),
                    connect_time: c.connected_at,
                    request_time: Some(SystemTime::UNIX_EPOCH + Duration::from_micros(changed)),
                    wait: if state == ClientState::Waiting {
                        Duration::from_micros(now_us.saturating_sub(changed))
                    } else {
                        Duration::ZERO
                    },
                    close_needed: c.stop.is_killed(),
                    ptr: ptr(0xc, 0, c.id),
                    link: c
                        .server_pid()
                        .and_then(|pid| server_ptrs.get(&pid).cloned())
                        .unwrap_or_default(),
                    remote_pid: 0,
                    tls: String::new(),
                    application_name: login
                        .map(|l| l.application_name.to_string())
                        .unwrap_or_default(),
                    pinned: weir_proxy::features::pin::describe_all(c.pins()),
                }
            })
            .collect()
    }

    fn servers(&self) -> Vec<SocketRow> {
        let client_ptrs: HashMap<i32, String> = self
            .handle
            .clients()
            .iter()
            .filter_map(|c| Some((c.server_pid()?, ptr(0xc, 0, c.id))))
            .collect();
        let mut rows = Vec::new();
        for e in self.handle.pools() {
            let key = Arc::as_ptr(&e) as usize;
            for s in e.pool.servers() {
                // PgBouncer shows a Unix-socket server as addr `unix` and its port.
                let (addr, port) = match (s.label.remote, s.label.unix_port) {
                    (Some(a), _) => (a.ip().to_string(), a.port()),
                    (None, Some(port)) => ("unix".to_owned(), port),
                    (None, None) => (String::new(), 0),
                };
                let (local_addr, local_port) = s
                    .label
                    .local
                    .map_or((String::new(), 0), |a| (a.ip().to_string(), a.port()));
                rows.push(SocketRow {
                    kind: "S",
                    user: e.user.clone(),
                    database: e.database.clone(),
                    state: match s.state {
                        ServerState::Idle => "idle",
                        ServerState::Active => "active",
                        ServerState::Used => "used",
                    }
                    .into(),
                    addr,
                    port,
                    local_addr,
                    local_port,
                    connect_time: s.connected_at,
                    request_time: Some(s.last_used),
                    wait: Duration::ZERO,
                    close_needed: s.close_needed,
                    ptr: ptr(0x5, key, s.id),
                    link: s
                        .label
                        .backend_pid
                        .and_then(|pid| client_ptrs.get(&pid).cloned())
                        .unwrap_or_default(),
                    remote_pid: s.label.backend_pid.unwrap_or(0),
                    tls: String::new(),
                    application_name: String::new(),
                    pinned: String::new(),
                });
            }
        }
        rows
    }

    fn databases(&self) -> Vec<DatabaseRow> {
        let config = self.handle.config();
        let pools = self.handle.pools();
        let shared = self.handle.shared();
        config
            .databases
            .iter()
            .map(|(name, db)| {
                let current: u32 = pools
                    .iter()
                    .filter(|e| &e.database == name)
                    .map(|e| {
                        let s = e.pool.stats();
                        s.idle + s.active + s.connecting + s.held
                    })
                    .sum();
                DatabaseRow {
                    name: name.clone(),
                    host: Some(db.host.clone()),
                    port: db.port,
                    database: db.server_dbname(name).to_owned(),
                    force_user: db.user.clone(),
                    pool_size: config.pool_size_for(name),
                    min_pool_size: config.min_pool_size_for(name),
                    reserve_pool: config.reserve_pool_for(name).0,
                    pool_mode: db.pool_mode.map(|m| m.to_string()),
                    max_connections: config.max_db_connections,
                    current_connections: current,
                    paused: shared.pools.is_paused(name),
                    disabled: shared.pools.is_disabled(name),
                }
            })
            .collect()
    }

    fn users(&self) -> Vec<UserRow> {
        self.handle
            .config()
            .users
            .iter()
            .map(|(name, u)| UserRow {
                name: name.clone(),
                pool_mode: u.pool_mode.map(|m| m.to_string()),
            })
            .collect()
    }

    fn config(&self) -> Vec<ConfigRow> {
        config_rows(&self.handle.config())
    }

    fn lists(&self) -> ListsRow {
        let config = self.handle.config();
        let clients = self.handle.clients();
        let login = clients
            .iter()
            .filter(|c| c.state() == ClientState::Login)
            .count();
        let used_servers: u32 = self
            .handle
            .pools()
            .iter()
            .map(|e| {
                let s = e.pool.stats();
                s.idle + s.active + s.held
            })
            .sum();
        ListsRow {
            databases: u32::try_from(config.databases.len()).unwrap_or(u32::MAX),
            users: u32::try_from(self.handle.user_count()).unwrap_or(u32::MAX),
            pools: u32::try_from(self.handle.pools().len()).unwrap_or(u32::MAX),
            used_clients: u32::try_from(clients.len()).unwrap_or(u32::MAX),
            login_clients: u32::try_from(login).unwrap_or(u32::MAX),
            parked_clients: u32::try_from(self.handle.parked_clients()).unwrap_or(u32::MAX),
            used_servers,
            ..ListsRow::default()
        }
    }

    fn mem(&self) -> Vec<MemRow> {
        // Estimates: a registered client with its buffers released while idle, a pooled
        // server connection with its read buffer.
        let clients = u32::try_from(self.handle.clients().len()).unwrap_or(u32::MAX);
        let servers = self.lists().used_servers;
        let pools = u32::try_from(self.handle.pools().len()).unwrap_or(u32::MAX);
        [
            ("client", 1024u32, clients),
            ("server", 34 * 1024, servers),
            ("pool", 4096, pools),
        ]
        .into_iter()
        .map(|(name, size, used)| MemRow {
            name: name.into(),
            size,
            used,
            free: 0,
            memtotal: size.saturating_mul(used),
        })
        .collect()
    }

    fn state(&self) -> StateRow {
        let shared = self.handle.shared();
        let paused = shared.pools.all_paused();
        let suspended = shared.is_suspended();
        StateRow {
            active: !paused && !suspended,
            paused: paused && !suspended,
            suspended,
        }
    }

    fn stats(&self) -> Vec<StatsTotals> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut by_db: std::collections::BTreeMap<String, StatsTotals> = self
            .handle
            .config()
            .databases
            .keys()
            .map(|db| {
                (
                    db.clone(),
                    StatsTotals {
                        database: db.clone(),
                        ..StatsTotals::default()
                    },
                )
            })
            .collect();
        for e in self.handle.pools() {
            let m = e.pool.metrics();
            let t = by_db
                .entry(e.database.clone())
                .or_insert_with(|| StatsTotals {
                    database: e.database.clone(),
                    ..StatsTotals::default()
                });
            t.total_xact_count += m.transactions.load(Relaxed);
            t.total_query_count += m.queries.load(Relaxed);
            t.total_received += m.bytes_from_client.load(Relaxed);
            t.total_sent += m.bytes_from_server.load(Relaxed);
            t.total_xact_time += m.xact_us.load(Relaxed);
            t.total_query_time += m.query_us.load(Relaxed);
            t.total_wait_time += m.wait_us.load(Relaxed);
        }
        by_db.into_values().collect()
    }

    fn averager(&self) -> &StatsAverager {
        &self.averager
    }

    fn pool_counters(&self) -> Vec<PoolCounters> {
        self.handle
            .pools()
            .iter()
            .map(|e| {
                let metrics = e.pool.metrics();
                let mut counters = PoolCounters::from_metrics(&e.database, &e.user, metrics);
                counters.errors_by_class = metrics.errors_by_class();
                counters
            })
            .collect()
    }

    fn latency(&self) -> Vec<PoolLatency> {
        self.handle
            .pools()
            .iter()
            .map(|e| PoolLatency::from_metrics(&e.database, &e.user, e.pool.metrics()))
            .collect()
    }

    fn queries(&self, limit: usize) -> Vec<QueryRow> {
        self.handle.shared().queries.top(limit)
    }

    fn priorities(&self) -> Vec<PriorityRow> {
        let mut rows = Vec::new();
        for e in self.handle.pools() {
            let waiting = e.pool.stats().waiting_by_class;
            for (&class, n) in weir_pool::Class::ALL.iter().zip(waiting) {
                let waits = e.pool.metrics().wait_histogram_of(class);
                rows.push(PriorityRow {
                    database: e.database.clone(),
                    user: e.user.clone(),
                    class: class.as_str(),
                    waiting: n,
                    checkouts: waits.len(),
                    p99_wait_us: if waits.is_empty() {
                        0
                    } else {
                        waits.value_at_quantile(0.99)
                    },
                });
            }
        }
        rows.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        rows
    }

    fn admin_token(&self) -> Option<String> {
        self.handle
            .config()
            .admin_token
            .as_ref()
            .map(|t| t.as_str().to_owned())
    }

    fn dedup(&self) -> DedupRow {
        use std::sync::atomic::Ordering::Relaxed;
        let d = &self.handle.shared().dedup;
        DedupRow {
            shared: d.shared.load(Relaxed),
            bytes_saved: d.bytes_saved.load(Relaxed),
            flights: d.led.load(Relaxed),
            unshared: d.unshared.load(Relaxed),
        }
    }

    fn scaling(&self) -> Vec<weir_admin::scaling::ScalingRow> {
        self.scaler().map(|s| s.rows()).unwrap_or_default()
    }

    fn scaling_history(&self) -> Vec<weir_admin::scaling::ScalingHistoryRow> {
        self.scaler().map(|s| s.history_rows()).unwrap_or_default()
    }

    fn scaling_decisions(&self) -> Vec<(String, u64)> {
        self.scaler()
            .map(|s| s.decision_counts())
            .unwrap_or_default()
    }

    fn automation(
        &self,
        post: bool,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Option<(u16, String)> {
        self.scaler()?.automation(post, path, query, body)
    }

    fn breakers(&self) -> Vec<BreakerRow> {
        let now = tokio::time::Instant::now();
        self.handle
            .upstreams()
            .iter()
            .map(|u| {
                let b = u.breaker.snapshot(now);
                BreakerRow {
                    upstream: u.addr.clone(),
                    state: b.state.as_str(),
                    since: b.since,
                    failures: b.failures,
                    trips: b.trips,
                    last_error: b.last_error,
                    next_probe_ms: b
                        .next_probe_in
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                }
            })
            .collect()
    }

    fn readiness(&self) -> Readiness {
        let pools = self.handle.pools();
        // No pool yet: nothing known to be down. Otherwise some pool must have a
        // connection or a last connect that succeeded.
        let upstream_reachable = pools.is_empty()
            || pools.iter().any(|e| {
                let s = e.pool.stats();
                s.idle + s.active > 0 || !s.login_failing
            });
        Readiness {
            listening: !self.handle.is_draining(),
            draining: self.handle.is_draining(),
            upstream_reachable,
        }
    }

    fn command(&self, cmd: AdminCommand) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let shared = self.handle.shared();
            match cmd {
                AdminCommand::Pause(db) => shared.pools.pause(db.as_deref())?.await,
                AdminCommand::Resume(db) => shared.resume(db.as_deref())?,
                AdminCommand::Disable(db) => shared.pools.disable(&db)?,
                AdminCommand::Enable(db) => shared.pools.enable(&db)?,
                AdminCommand::Reconnect(db) => shared.pools.reconnect(db.as_deref())?,
                AdminCommand::Kill(db) => {
                    let n = shared.kill_database(&db)?;
                    tracing::info!(db = %db, clients = n, "KILL");
                }
                AdminCommand::Suspend => shared.suspend()?.await,
                AdminCommand::Reload => self.reload()?,
                AdminCommand::Shutdown => {
                    tracing::info!("SHUTDOWN from the admin console");
                    self.handle.shutdown();
                }
                AdminCommand::WaitClose(db) => shared.pools.wait_close(db.as_deref())?.await,
                AdminCommand::Set { key, value } => self.handle.set(&key, &value)?,
            }
            Ok(())
        })
    }
}
