//! The scaling engine's admin surfaces: `SHOW SCALING` (per autoscaled pool: size,
//! bounds, target, utilization, p99 wait, the demand predicted for the next hour, the
//! last decision and its reason) and `SHOW SCALING_HISTORY` (recent decisions with
//! their inputs). The rows come from the backend; the engine lives in the binary.

use std::time::SystemTime;

use serde::Serialize;

use crate::backend::AdminBackend;
use crate::result::{ColType, Table, Val};
use crate::show::format_time;

/// One `SHOW SCALING` row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingRow {
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Server connections open now (idle, active, connecting).
    pub size: u32,
    /// The floor (`min_pool_size`, at least 1).
    pub min: u32,
    /// The ceiling (`max_pool_size`).
    pub max: u32,
    /// The engine's target.
    pub target: u32,
    /// Checked out / target at the last tick.
    pub utilization: f64,
    /// p99 wait for a server connection over the last tick, ms.
    pub wait_p99_ms: f64,
    /// Learned peak demand for the coming hour (0: nothing learned yet).
    pub predicted_next_hour: f64,
    /// The last decision, `from -> to`, and when.
    pub last_decision: String,
    /// Its reason.
    pub reason: String,
}

/// One `SHOW SCALING_HISTORY` row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingHistoryRow {
    /// When.
    pub at: SystemTime,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
    /// Target before.
    pub from: u32,
    /// Target after (equal to `from` for a refused grow).
    pub to: u32,
    /// Why.
    pub reason: String,
    /// Utilization it saw.
    pub utilization: f64,
    /// Clients waiting it saw.
    pub waiting: u32,
    /// p99 wait it saw, ms.
    pub wait_p99_ms: f64,
    /// Predicted demand it saw.
    pub predicted: f64,
    /// The budget it was held to, if any.
    pub budget: Option<u32>,
}

/// A fraction as text: the console's binary numeric format carries integers only, so
/// these columns are typed text (drivers asking for binary still get the digits).
fn num(v: f64, places: usize) -> Val {
    Val::Text(format!("{v:.places$}"))
}

/// `SHOW SCALING`.
pub fn show_scaling(backend: &dyn AdminBackend) -> Table {
    use ColType::{Int4, Text};
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("size", Int4),
        ("min", Int4),
        ("max", Int4),
        ("target", Int4),
        ("utilization", Text),
        ("p99_wait_ms", Text),
        ("predicted_next_hour", Text),
        ("last_decision", Text),
        ("reason", Text),
    ]);
    for r in backend.scaling() {
        t.push(vec![
            r.database.into(),
            r.user.into(),
            r.size.into(),
            r.min.into(),
            r.max.into(),
            r.target.into(),
            num(r.utilization, 2),
            num(r.wait_p99_ms, 3),
            num(r.predicted_next_hour, 1),
            r.last_decision.into(),
            r.reason.into(),
        ]);
    }
    t
}

/// `SHOW SCALING_HISTORY`.
pub fn show_history(backend: &dyn AdminBackend) -> Table {
    use ColType::{Int4, Text};
    let mut t = Table::new(&[
        ("time", Text),
        ("database", Text),
        ("user", Text),
        ("from", Int4),
        ("to", Int4),
        ("reason", Text),
        ("utilization", Text),
        ("waiting", Int4),
        ("p99_wait_ms", Text),
        ("predicted", Text),
        ("budget", Int4),
    ]);
    for r in backend.scaling_history() {
        t.push(vec![
            format_time(r.at).into(),
            r.database.into(),
            r.user.into(),
            r.from.into(),
            r.to.into(),
            r.reason.into(),
            num(r.utilization, 2),
            r.waiting.into(),
            num(r.wait_p99_ms, 3),
            num(r.predicted, 1),
            r.budget.map_or(Val::Null, Val::from),
        ]);
    }
    t
}
