//! The scaling engine at work: a task that, every `scaling.tick`, samples each
//! autoscaled pool (counts, histogram deltas, errors, the breaker), asks each server
//! how many connections it has free ([`cluster`]), hands all of it to
//! [`weir_scale::Engine`] and applies the targets it returns with
//! [`weir_pool::Pool::set_target`].
//!
//! Nothing here is on the per-message path: the pools already count and record
//! histograms; the tick reads and diffs them once per second. The learned weekly
//! profiles are kept in `scaling.state_dir` across restarts.

pub mod alerts;
pub mod api;
pub mod cluster;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;
use weir_config::Config;
use weir_pool::breaker::BreakerState;
use weir_proxy::pools::PoolEntry;
use weir_proxy::ProxyHandle;
use weir_scale::budget::{cluster_cap, ClusterReading};
use weir_scale::{
    Clock, Engine, Millis, PoolInput, Profile, Reason, Sample, ScaleSettings, SystemClock,
};

use self::alerts::Alerts;
use self::cluster::Monitor;

/// Load history points kept per pool (one a minute: two days).
const LOAD_POINTS: usize = 2 * 24 * 60;
/// Failed monitor attempts after which a server that never answered stops holding
/// its pools at their size.
const MONITOR_GIVE_UP: u32 = 3;
/// How often learned profiles are written to `state_dir`.
const SAVE_EVERY: Millis = 5 * 60 * 1000;

/// One minute of one pool's load, for `load/history`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadPoint {
    /// Start of the minute (ms since the epoch).
    pub at: Millis,
    /// Most clients holding or waiting for a server connection in it.
    pub peak_demand: u32,
    /// The pool's target at its end.
    pub size: u32,
    /// Worst p99 wait of its ticks, ms.
    pub wait_p99_ms: f64,
    /// Transactions in it.
    pub transactions: u64,
}

/// What the previous tick saw of a pool, to turn totals into per-tick deltas.
struct Prev {
    wait: Histogram<u64>,
    transactions: u64,
    xact_us: u64,
    timeouts: u64,
    errors: u64,
}

/// A server's last reading and our connections to it then.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ServerBudget {
    /// What the server said.
    pub reading: ClusterReading,
    /// When (ms since the epoch).
    pub at: Millis,
    /// The most connections autoscaled pools may hold to it.
    pub budget: u32,
}

/// Everything the tick and the admin surfaces share, behind one short mutex.
pub(crate) struct State {
    pub(crate) engine: Engine,
    prev: HashMap<String, Prev>,
    pub(crate) servers: BTreeMap<String, ServerBudget>,
    pub(crate) load: HashMap<String, VecDeque<LoadPoint>>,
    /// The last tick's inputs, for `evaluate`.
    pub(crate) inputs: Vec<PoolInput>,
    pub(crate) decisions_by_reason: BTreeMap<Reason, u64>,
    /// Failed monitor attempts per server since its last reading.
    monitor_failures: HashMap<String, u32>,
    last_save: Millis,
}

/// The scaling engine of one running proxy.
pub struct Scaler {
    handle: ProxyHandle,
    state: Mutex<State>,
    enabled: AtomicBool,
    alerts: Alerts,
}

impl Scaler {
    /// An engine for the pools of `handle` (started by [`Scaler::run`]).
    pub fn new(handle: ProxyHandle) -> Arc<Scaler> {
        Arc::new(Scaler {
            handle,
            state: Mutex::new(State {
                engine: Engine::new(),
                prev: HashMap::new(),
                servers: BTreeMap::new(),
                load: HashMap::new(),
                inputs: Vec::new(),
                decisions_by_reason: BTreeMap::new(),
                monitor_failures: HashMap::new(),
                last_save: SystemClock.now_ms(),
            }),
            enabled: AtomicBool::new(true),
            alerts: Alerts::default(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the engine decides (`automation/stop` turns it off: every pool keeps the
    /// size it has).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Turn the engine on or off.
    pub fn set_enabled(&self, on: bool) {
        if self.enabled.swap(on, Relaxed) != on {
            tracing::warn!(enabled = on, "scaling engine switched");
        }
    }

    /// The proxy handle.
    pub fn handle(&self) -> &ProxyHandle {
        &self.handle
    }

    /// Ticks until `stop` is cancelled, then saves the learned profiles.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut monitors: HashMap<String, Monitor> = HashMap::new();
        loop {
            let period = self.handle.config().scaling.tick;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
            self.tick(&mut monitors).await;
        }
        self.save_profiles();
    }

    /// One tick: read the servers that are due, sample, decide, apply.
    pub async fn tick(&self, monitors: &mut HashMap<String, Monitor>) {
        let config = self.handle.config();
        let now = SystemClock.now_ms();
        let all = self.handle.pools();
        let scaled: Vec<Arc<PoolEntry>> = all
            .iter()
            .filter(|e| config.autoscaled(&e.database) && !e.pool.is_paused())
            .cloned()
            .collect();
        if scaled.is_empty() {
            return;
        }
        self.read_servers(&config, &all, &scaled, monitors, now)
            .await;
        let inputs = self.sample(&config, &all, &scaled, now);
        let mut st = self.lock();
        for input in &inputs {
            if st.engine.target(&input.id).is_none() {
                if let Some(p) = load_profile(&config, &input.id) {
                    st.engine
                        .restore_profile(&input.id, p, input.settings.clone());
                }
            }
        }
        st.inputs = inputs.clone();
        if !self.enabled() {
            return;
        }
        let decisions = st.engine.tick(now, &inputs);
        for e in &scaled {
            let id = pool_id(e);
            if let Some(t) = st.engine.target(&id) {
                e.pool.set_target(Some(t));
            }
        }
        for d in &decisions {
            *st.decisions_by_reason.entry(d.reason).or_default() += 1;
            if d.from != d.to {
                tracing::info!(pool = %d.pool, from = d.from, to = d.to, reason = %d.reason,
                    utilization = d.inputs.utilization, waiting = d.inputs.waiting,
                    "pool resized by the scaling engine");
            } else {
                tracing::info!(pool = %d.pool, size = d.from, reason = %d.reason,
                    "scaling engine holds a pool instead of growing it");
            }
        }
        self.record_load(&mut st, &inputs, now);
        let views = st.engine.views(now);
        let save = now.saturating_sub(st.last_save) >= SAVE_EVERY;
        drop(st);
        self.alerts
            .check(&config.scaling, now, &decisions, &views, &inputs);
        if save {
            self.save_profiles();
        }
    }

    /// Ask every server of an autoscaled pool that is due for its free connections, and
    /// set the server budgets.
    async fn read_servers(
        &self,
        config: &Config,
        all: &[Arc<PoolEntry>],
        scaled: &[Arc<PoolEntry>],
        monitors: &mut HashMap<String, Monitor>,
        now: Millis,
    ) {
        let interval = millis(config.scaling.cluster_check_interval);
        let reserve = config.scaling.reserve_connections;
        let mut seen: Vec<String> = Vec::new();
        for e in scaled {
            let addr = e.pool.manager().upstream().addr.clone();
            if seen.contains(&addr) {
                continue;
            }
            seen.push(addr.clone());
            let due = self
                .lock()
                .servers
                .get(&addr)
                .is_none_or(|s| now.saturating_sub(s.at) >= interval);
            if !due {
                continue;
            }
            if !monitors.contains_key(&addr) {
                match Monitor::open(e.pool.manager()).await {
                    Ok(m) => {
                        monitors.insert(addr.clone(), m);
                    }
                    Err(err) => {
                        self.monitor_failed(&addr, &err);
                        continue;
                    }
                }
            }
            let Some(monitor) = monitors.get_mut(&addr) else {
                continue;
            };
            let reading = match monitor.read().await {
                Ok(r) => r,
                Err(err) => {
                    self.monitor_failed(&addr, &err);
                    monitors.remove(&addr);
                    continue;
                }
            };
            // Ours, counted right after the reading: every pool to this server plus the
            // monitor; fixed pools' connections are not the engine's to give.
            let (mut ours, mut fixed) = (1u32, 1u32);
            for p in all {
                if p.pool.manager().upstream().addr != addr {
                    continue;
                }
                let s = p.pool.stats();
                let open = s.idle + s.active + s.connecting + s.held;
                ours += open;
                if !config.autoscaled(&p.database) {
                    fixed += open;
                }
            }
            let budget = cluster_cap(&reading, ours, reserve).saturating_sub(fixed);
            self.lock().monitor_failures.remove(&addr);
            self.lock().servers.insert(
                addr,
                ServerBudget {
                    reading,
                    at: now,
                    budget,
                },
            );
        }
        let mut st = self.lock();
        let servers: Vec<(String, u32)> = st
            .servers
            .iter()
            .map(|(a, s)| (format!("server:{a}"), s.budget))
            .collect();
        for (group, budget) in servers {
            st.engine.set_budget(&group, Some(budget));
        }
        for addr in seen {
            let group = format!("server:{addr}");
            let failures = st.monitor_failures.get(&addr).copied().unwrap_or(0);
            if !st.servers.contains_key(&addr) && failures >= MONITOR_GIVE_UP {
                // The server cannot be asked: only max_db_connections and the bounds hold.
                st.engine.set_budget(&group, None);
            } else if st.engine.budget(&group).is_none() && !st.servers.contains_key(&addr) {
                // No reading yet: hold what is there rather than grow blind.
                let held: u32 = scaled
                    .iter()
                    .filter(|e| e.pool.manager().upstream().addr == addr)
                    .map(|e| e.pool.stats().size)
                    .sum();
                st.engine.set_budget(&group, Some(held));
            }
        }
    }

    fn monitor_failed(&self, addr: &str, err: &cluster::MonitorError) {
        let mut st = self.lock();
        let n = st.monitor_failures.entry(addr.to_owned()).or_default();
        *n += 1;
        if *n == MONITOR_GIVE_UP && !st.servers.contains_key(addr) {
            tracing::warn!(upstream = %addr, error = %err,
                "cluster budget: the server cannot be asked for its free connections; pools grow within max_pool_size and max_db_connections only");
        } else {
            tracing::debug!(upstream = %addr, error = %err, "cluster budget: no reading");
        }
    }

    /// One sample per autoscaled pool, from the difference since the last tick.
    fn sample(
        &self,
        config: &Config,
        all: &[Arc<PoolEntry>],
        scaled: &[Arc<PoolEntry>],
        now: Millis,
    ) -> Vec<PoolInput> {
        let _ = now;
        let mut st = self.lock();
        let mut db_budgets: BTreeMap<String, Option<u32>> = BTreeMap::new();
        for e in scaled {
            db_budgets.entry(e.database.clone()).or_insert_with(|| {
                (config.max_db_connections > 0).then(|| {
                    let fixed: u32 = all
                        .iter()
                        .filter(|p| p.database == e.database && !config.autoscaled(&p.database))
                        .map(|p| {
                            let s = p.pool.stats();
                            s.idle + s.active + s.connecting + s.held
                        })
                        .sum();
                    config.max_db_connections.saturating_sub(fixed)
                })
            });
        }
        for (db, budget) in &db_budgets {
            st.engine.set_budget(&format!("db:{db}"), *budget);
        }
        let mut inputs = Vec::with_capacity(scaled.len());
        for e in scaled {
            let id = pool_id(e);
            let stats = e.pool.stats();
            let peak = e.pool.take_peak_active();
            let m = e.pool.metrics();
            let wait = m.wait_histogram();
            let transactions = m.transactions.load(Relaxed);
            let xact_us = m.xact_us.load(Relaxed);
            let timeouts = m.wait_timeouts.load(Relaxed) + m.shed.load(Relaxed);
            let errors = m.connect_errors.load(Relaxed);
            let prev = st.prev.get(&id);
            let wait_p99 = match prev {
                Some(p) => {
                    let mut delta = wait.clone();
                    if delta.subtract(&p.wait).is_ok() && !delta.is_empty() {
                        Duration::from_micros(delta.value_at_quantile(0.99))
                    } else {
                        Duration::ZERO
                    }
                }
                None => Duration::ZERO,
            };
            let d = |now: u64, f: fn(&Prev) -> u64| prev.map_or(0, |p| now.saturating_sub(f(p)));
            let txns = d(transactions, |p| p.transactions);
            let txn_us = d(xact_us, |p| p.xact_us);
            let sample = Sample {
                active: stats.active,
                idle: stats.idle,
                waiting: stats.waiting,
                peak_active: peak,
                wait_p99,
                transactions: txns,
                transaction_mean: Duration::from_micros(txn_us.checked_div(txns).unwrap_or(0)),
                server_errors: d(errors, |p| p.errors),
                timeouts: d(timeouts, |p| p.timeouts),
                breaker_open: e.pool.manager().upstream().breaker.state() != BreakerState::Closed,
            };
            st.prev.insert(
                id.clone(),
                Prev {
                    wait,
                    transactions,
                    xact_us,
                    timeouts,
                    errors,
                },
            );
            inputs.push(PoolInput {
                id,
                settings: scale_settings(config, stats.min_size, stats.max_size),
                groups: vec![
                    format!("db:{}", e.database),
                    format!("server:{}", e.pool.manager().upstream().addr),
                ],
                sample,
            });
        }
        inputs
    }

    fn record_load(&self, st: &mut State, inputs: &[PoolInput], now: Millis) {
        let minute = now - now % 60_000;
        for input in inputs {
            let size = st.engine.target(&input.id).unwrap_or(0);
            let points = st.load.entry(input.id.clone()).or_default();
            let s = &input.sample;
            let wait_ms = s.wait_p99.as_secs_f64() * 1000.0;
            match points.back_mut() {
                Some(p) if p.at == minute => {
                    p.peak_demand = p.peak_demand.max(s.demand());
                    p.size = size;
                    p.wait_p99_ms = p.wait_p99_ms.max(wait_ms);
                    p.transactions += s.transactions;
                }
                _ => {
                    if points.len() == LOAD_POINTS {
                        points.pop_front();
                    }
                    points.push_back(LoadPoint {
                        at: minute,
                        peak_demand: s.demand(),
                        size,
                        wait_p99_ms: wait_ms,
                        transactions: s.transactions,
                    });
                }
            }
        }
    }

    /// Writes every pool's learned profile to `state_dir` (if set).
    pub fn save_profiles(&self) {
        let config = self.handle.config();
        let Some(dir) = config.scaling.state_dir.clone() else {
            return;
        };
        let mut st = self.lock();
        st.last_save = SystemClock.now_ms();
        let profiles: Vec<(String, String)> = st
            .inputs
            .iter()
            .filter_map(|i| {
                st.engine
                    .profile(&i.id)
                    .map(|p| (i.id.clone(), p.to_json()))
            })
            .collect();
        drop(st);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create scaling.state_dir");
            return;
        }
        for (id, json) in profiles {
            let path = dir.join(profile_file(&id));
            let tmp = path.with_extension("tmp");
            let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot save the scaling profile");
            }
        }
    }
}

/// `database/user`, the engine's name for a pool.
pub fn pool_id(e: &PoolEntry) -> String {
    format!("{}/{}", e.database, e.user)
}

/// The engine's settings for a pool with these bounds.
pub fn scale_settings(c: &Config, min: u32, max: u32) -> ScaleSettings {
    let s = &c.scaling;
    ScaleSettings {
        min: min.max(1).min(max.max(1)),
        max: max.max(1),
        scale_step: s.scale_step,
        scale_up_threshold: s.scale_up_threshold,
        critical_threshold: s.critical_threshold,
        scale_down_threshold: s.scale_down_threshold,
        scale_down_after: s.scale_down_after,
        target_wait: s.target_wait,
        scale_up_cooldown: s.scale_up_cooldown,
        prescale_lead: s.prescale_lead,
    }
}

/// The file a pool's profile is kept in: its id with anything odd replaced.
fn profile_file(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("profile-{safe}.json")
}

fn load_profile(config: &Config, id: &str) -> Option<Profile> {
    let dir = config.scaling.state_dir.as_ref()?;
    let path = dir.join(profile_file(id));
    let text = std::fs::read_to_string(&path).ok()?;
    match Profile::from_json(&text) {
        Ok(p) => {
            tracing::info!(pool = %id, path = %path.display(), "scaling profile restored");
            Some(p)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the saved scaling profile");
            None
        }
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_profile_is_read_back_from_state_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.scaling.state_dir = Some(dir.path().to_owned());
        let mut p = Profile::default();
        p.observe(1_704_067_200_000, 30);
        p.observe(1_704_067_200_000 + 3_600_000, 3);
        let id = "app/some user";
        std::fs::write(dir.path().join(profile_file(id)), p.to_json()).expect("write");
        assert_eq!(profile_file(id), "profile-app_some_user.json");
        assert_eq!(load_profile(&config, id), Some(p));
        std::fs::write(dir.path().join(profile_file(id)), "{").expect("write");
        assert_eq!(load_profile(&config, id), None, "a broken file is ignored");
    }
}
