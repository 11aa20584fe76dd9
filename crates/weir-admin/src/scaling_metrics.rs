//! The scaling engine's `/metrics` families: target and actual size, the bounds,
//! utilization, predicted demand per autoscaled pool, and decisions by reason.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use crate::backend::AdminBackend;
use crate::metrics::{counter_family, gauge_family, Series};
use crate::scaling::ScalingRow;

/// A gauge family over the scaling rows: name, help, the value of a row.
type Family<V> = (&'static str, &'static str, fn(&ScalingRow) -> V);

fn pool(r: &ScalingRow) -> Vec<(&'static str, &str)> {
    vec![("database", r.database.as_str()), ("user", r.user.as_str())]
}

/// Encodes the scaling families from the backend's rows.
pub(crate) fn encode(encoder: &mut DescriptorEncoder<'_>, b: &dyn AdminBackend) -> fmt::Result {
    let rows = b.scaling();
    let ints: [Family<i64>; 4] = [
        (
            "pool_target_size",
            "Server connections the scaling engine wants for the pool",
            |r| i64::from(r.target),
        ),
        (
            "pool_size",
            "Server connections the pool holds now (idle, active, connecting)",
            |r| i64::from(r.size),
        ),
        (
            "pool_min_size",
            "The scaling engine's floor for the pool (min_pool_size)",
            |r| i64::from(r.min),
        ),
        (
            "pool_max_size",
            "The scaling engine's ceiling for the pool (max_pool_size)",
            |r| i64::from(r.max),
        ),
    ];
    for (name, help, pick) in ints {
        let series: Series<'_, i64> = rows.iter().map(|r| (pool(r), pick(r))).collect();
        gauge_family(encoder, name, help, None, &series)?;
    }
    let floats: [Family<f64>; 2] = [
        (
            "pool_utilization",
            "Checked-out share of the pool's target at the last scaling tick",
            |r| r.utilization,
        ),
        (
            "pool_predicted_demand",
            "Learned peak demand (clients wanting a server) for the coming hour",
            |r| r.predicted_next_hour,
        ),
    ];
    for (name, help, pick) in floats {
        let series: Series<'_, f64> = rows.iter().map(|r| (pool(r), pick(r))).collect();
        gauge_family(encoder, name, help, None, &series)?;
    }
    let decisions = b.scaling_decisions();
    let series: Series<'_, u64> = decisions
        .iter()
        .map(|(reason, n)| (vec![("reason", reason.as_str())], *n))
        .collect();
    counter_family(
        encoder,
        "scaling_decisions",
        "Scaling engine decisions (resizes and refused grows) by reason",
        None,
        &series,
    )
}
