//! The scaling engine of pgweir, as pure logic: no I/O, no tokio, no clock of its own.
//!
//! Each tick the binary hands the [`Engine`] one [`Sample`] per pool (active, idle and
//! waiting counts, p99 wait and mean transaction time over the tick, timeouts, breaker
//! state) with the pool's [`ScaleSettings`] (its bounds and thresholds) and the budget
//! groups it belongs to; the engine answers with a target size per pool and a
//! [`Reason`]. Time is passed in as milliseconds since the Unix epoch ([`Clock`]), so
//! every rule is tested in simulated time.
//!
//! - [`reactive`]: grow on utilization or wait time, an emergency step when critical,
//!   shrink after a long quiet spell; cooldowns and hysteresis; hold while the breaker
//!   is open or when more connections stopped buying throughput (a saturated database).
//! - [`predict`]: peak demand learned per hour-of-week slot (168, EWMA with a confidence
//!   growing with the weeks seen), so the pool grows `prescale_lead` before a known peak.
//! - [`budget`]: pools sharing a database stay within `max_db_connections`, and several
//!   pgweir instances in front of one server share its free connections.
//! - [`history`]: a bounded ring of decisions.

#![warn(missing_docs)]

pub mod budget;
mod engine;
pub mod history;
pub mod predict;
pub mod reactive;

use std::time::Duration;

pub use engine::{Engine, PoolInput, PoolView};
pub use history::{Decision, History};
pub use predict::Profile;

/// Milliseconds since the Unix epoch: the engine's only notion of time.
pub type Millis = u64;

/// Where the engine's time comes from; injected, so tests run in simulated time.
pub trait Clock {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told (tests, simulations).
#[derive(Debug, Default)]
pub struct SimClock(std::sync::atomic::AtomicU64);

impl SimClock {
    /// A clock reading `start`.
    pub fn new(start: Millis) -> Self {
        SimClock(std::sync::atomic::AtomicU64::new(start))
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> Millis {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What one pool looked like over the last tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Server connections checked out now.
    pub active: u32,
    /// Server connections idle now.
    pub idle: u32,
    /// Clients waiting for a server connection now.
    pub waiting: u32,
    /// Most connections checked out at once during the tick (at least `active`); 0 if unknown.
    pub peak_active: u32,
    /// p99 of the checkout waits that ended during the tick.
    pub wait_p99: Duration,
    /// Transactions finished during the tick.
    pub transactions: u64,
    /// Mean server time per transaction during the tick (zero when none finished).
    pub transaction_mean: Duration,
    /// Server-side errors (connect failures, unwell SQLSTATEs) during the tick.
    pub server_errors: u64,
    /// Clients that gave up waiting (wait timeouts, sheds) during the tick.
    pub timeouts: u64,
    /// The upstream's circuit breaker is open (or half-open).
    pub breaker_open: bool,
}

impl Sample {
    /// Clients that want a server connection now: those that have one and those waiting.
    pub fn demand(&self) -> u32 {
        self.active
            .max(self.peak_active)
            .saturating_add(self.waiting)
    }
}

/// Bounds and thresholds for one pool (from the configuration; per database).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScaleSettings {
    /// The floor.
    pub min: u32,
    /// The ceiling.
    pub max: u32,
    /// Connections added (or removed) per ordinary step.
    pub scale_step: u32,
    /// Utilization (active / size) at which the pool grows.
    pub scale_up_threshold: f64,
    /// Utilization at which it grows by an emergency step, without cooldown.
    pub critical_threshold: f64,
    /// Utilization at or below which, for `scale_down_after`, it shrinks.
    pub scale_down_threshold: f64,
    /// How long utilization must stay low before a shrink.
    pub scale_down_after: Duration,
    /// p99 checkout wait above which the pool grows.
    pub target_wait: Duration,
    /// Least time between two ordinary grows.
    pub scale_up_cooldown: Duration,
    /// How far ahead of a learned peak the pool grows to meet it.
    pub prescale_lead: Duration,
}

impl Default for ScaleSettings {
    fn default() -> Self {
        ScaleSettings {
            min: 2,
            max: 40,
            scale_step: 2,
            scale_up_threshold: 0.8,
            critical_threshold: 0.95,
            scale_down_threshold: 0.3,
            scale_down_after: Duration::from_secs(60),
            target_wait: Duration::from_millis(10),
            scale_up_cooldown: Duration::from_secs(3),
            prescale_lead: Duration::from_secs(300),
        }
    }
}

impl ScaleSettings {
    /// The utilization a grow aims for: between the grow and shrink thresholds, so a
    /// grow never lands where the next tick would grow or shrink again (hysteresis).
    pub fn aim(&self) -> f64 {
        ((self.scale_up_threshold + self.scale_down_threshold) / 2.0).clamp(0.05, 1.0)
    }

    /// The size that serves `demand` at the aimed-for utilization.
    pub fn size_for(&self, demand: f64) -> u32 {
        if demand <= 0.0 {
            return 0;
        }
        let n = (demand / self.aim()).ceil();
        if n >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            n as u32
        }
    }

    /// `n` within the bounds (the floor wins when they cross).
    pub fn clamp(&self, n: u32) -> u32 {
        n.min(self.max).max(self.min)
    }
}

/// Why a target was chosen (or a grow refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// First sight of the pool: its floor.
    Initial,
    /// Nothing to change.
    Steady,
    /// Utilization reached `scale_up_threshold`.
    Utilization,
    /// p99 wait exceeded `target_wait`.
    WaitTime,
    /// Utilization reached `critical_threshold`, or clients timed out: emergency step.
    Critical,
    /// Ahead of a learned peak.
    Predicted,
    /// Utilization stayed at or below `scale_down_threshold` for `scale_down_after`.
    Idle,
    /// A grow was wanted but the upstream's breaker is open: hold.
    BreakerOpen,
    /// A grow was wanted but the last one bought no throughput (server time per
    /// transaction rose instead): the database is saturated; hold.
    Saturated,
    /// Cut to fit a connection budget (`max_db_connections` or the server's free slots).
    Budget,
    /// The bounds changed (RELOAD or `SET`) and the target moved inside them.
    Bounds,
    /// Emergency scale-up asked by an operator.
    Manual,
}

impl Reason {
    /// The reason as shown in the console, JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Steady => "steady",
            Reason::Utilization => "utilization",
            Reason::WaitTime => "wait_time",
            Reason::Critical => "critical",
            Reason::Predicted => "predicted",
            Reason::Idle => "idle",
            Reason::BreakerOpen => "breaker_open",
            Reason::Saturated => "saturated",
            Reason::Budget => "budget",
            Reason::Bounds => "bounds",
            Reason::Manual => "manual",
        }
    }

    /// Every reason, for metric label sets.
    pub const ALL: [Reason; 12] = [
        Reason::Initial,
        Reason::Steady,
        Reason::Utilization,
        Reason::WaitTime,
        Reason::Critical,
        Reason::Predicted,
        Reason::Idle,
        Reason::BreakerOpen,
        Reason::Saturated,
        Reason::Budget,
        Reason::Bounds,
        Reason::Manual,
    ];

    /// Whether this reason refuses a grow that was wanted (an alert-worthy hold).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Reason::BreakerOpen | Reason::Saturated | Reason::Budget
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stored profile could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not the JSON [`Profile::to_json`] writes.
    #[error("malformed scaling profile: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The JSON did not hold 168 slots.
    #[error("scaling profile has {0} slots, expected 168")]
    Slots(usize),
}
