//! PgBouncer's `avg_*` statistics, computed from totals.
//!
//! PgBouncer reports averages over the last completed `stats_period`. pgweir does
//! the same without a timer: every read of the averages checks whether a period
//! has passed since the last sample and, if so, recomputes the averages from the
//! delta between that sample and now. Until the first period has passed the
//! averages cover the time since the averager was created. If nobody reads for
//! several periods, the next period simply covers that longer window (the rates
//! are still per second over a real interval).
//!
//! Like PgBouncer: `avg_xact_count`, `avg_query_count`, `avg_recv`, `avg_sent` and
//! `avg_wait_time` are per second; `avg_xact_time` and `avg_query_time` are µs per
//! transaction or query.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::StatsTotals;

/// Averages of one database over the last completed period (PgBouncer's `avg_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsAverages {
    /// Transactions per second.
    pub avg_xact_count: u64,
    /// Queries per second.
    pub avg_query_count: u64,
    /// Bytes received from clients per second.
    pub avg_recv: u64,
    /// Bytes sent to clients per second.
    pub avg_sent: u64,
    /// Mean transaction time, µs.
    pub avg_xact_time: u64,
    /// Mean query time, µs.
    pub avg_query_time: u64,
    /// Client wait time per second, µs.
    pub avg_wait_time: u64,
}

/// Totals and averages of one database: a full `SHOW STATS` row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsRow {
    /// The `total_*` columns.
    #[serde(flatten)]
    pub totals: StatsTotals,
    /// The `avg_*` columns.
    #[serde(flatten)]
    pub averages: StatsAverages,
}

struct Sample {
    at: Instant,
    totals: HashMap<String, StatsTotals>,
    averages: HashMap<String, StatsAverages>,
}

/// Turns totals into per-period averages; shared by the console and HTTP.
pub struct StatsAverager {
    period: Duration,
    inner: Mutex<Sample>,
}

impl std::fmt::Debug for StatsAverager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsAverager")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl StatsAverager {
    /// An averager whose periods last `period` (the `stats_period` setting), starting now.
    pub fn new(period: Duration) -> Self {
        Self::starting_at(period, Instant::now())
    }

    /// As [`StatsAverager::new`], with an explicit start (for tests).
    pub fn starting_at(period: Duration, at: Instant) -> Self {
        Self {
            period: period.max(Duration::from_millis(1)),
            inner: Mutex::new(Sample {
                at,
                totals: HashMap::new(),
                averages: HashMap::new(),
            }),
        }
    }

    /// Full `SHOW STATS` rows for `totals` read at `now`.
    pub fn rows(&self, totals: Vec<StatsTotals>, now: Instant) -> Vec<StatsRow> {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(s.at);
        let first = s.averages.is_empty() && s.totals.is_empty();
        if elapsed >= self.period || first {
            let averages = totals
                .iter()
                .map(|t| {
                    let zero = StatsTotals::default();
                    let old = s.totals.get(&t.database).unwrap_or(&zero);
                    (t.database.clone(), average(t, old, elapsed))
                })
                .collect();
            if elapsed >= self.period {
                s.at = now;
                s.totals = totals
                    .iter()
                    .map(|t| (t.database.clone(), t.clone()))
                    .collect();
            }
            s.averages = averages;
        }
        totals
            .into_iter()
            .map(|t| {
                let averages = s.averages.get(&t.database).copied().unwrap_or_default();
                StatsRow {
                    totals: t,
                    averages,
                }
            })
            .collect()
    }
}

/// PgBouncer's `calc_average`: rates per second over `dur`, times per event.
fn average(cur: &StatsTotals, old: &StatsTotals, dur: Duration) -> StatsAverages {
    let us = u64::try_from(dur.as_micros()).unwrap_or(u64::MAX);
    if us == 0 {
        return StatsAverages::default();
    }
    let per_sec = |c: u64, o: u64| -> u64 {
        let d = u128::from(c.saturating_sub(o));
        u64::try_from(d * 1_000_000 / u128::from(us)).unwrap_or(u64::MAX)
    };
    let per_event =
        |c: u64, o: u64, n: u64| -> u64 { c.saturating_sub(o).checked_div(n).unwrap_or(0) };
    let queries = cur.total_query_count.saturating_sub(old.total_query_count);
    let xacts = cur.total_xact_count.saturating_sub(old.total_xact_count);
    StatsAverages {
        avg_xact_count: per_sec(cur.total_xact_count, old.total_xact_count),
        avg_query_count: per_sec(cur.total_query_count, old.total_query_count),
        avg_recv: per_sec(cur.total_received, old.total_received),
        avg_sent: per_sec(cur.total_sent, old.total_sent),
        avg_xact_time: per_event(cur.total_xact_time, old.total_xact_time, xacts),
        avg_query_time: per_event(cur.total_query_time, old.total_query_time, queries),
        avg_wait_time: per_sec(cur.total_wait_time, old.total_wait_time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(x: u64, t: u64) -> StatsTotals {
        StatsTotals {
            database: "app".into(),
            total_xact_count: x,
            total_query_count: 2 * x,
            total_received: 100 * x,
            total_sent: 1000 * x,
            total_xact_time: t,
            total_query_time: t,
            total_wait_time: x,
        }
    }

    #[test]
    fn averages_over_the_last_completed_period() {
        let t0 = Instant::now();
        let a = StatsAverager::starting_at(Duration::from_secs(60), t0);
        // Within the first period: since start.
        let r = a.rows(vec![totals(300, 30_000)], t0 + Duration::from_secs(30));
        assert_eq!(r[0].averages.avg_xact_count, 10);
        assert_eq!(r[0].averages.avg_xact_time, 100);
        // First period ends at 60 s: 600 xacts over 60 s.
        let r = a.rows(vec![totals(600, 60_000)], t0 + Duration::from_secs(60));
        assert_eq!(r[0].averages.avg_xact_count, 10);
        assert_eq!(r[0].averages.avg_query_count, 20);
        assert_eq!(r[0].averages.avg_recv, 1000);
        // Mid second period: still the first period's averages.
        let r = a.rows(vec![totals(5000, 60_000)], t0 + Duration::from_secs(90));
        assert_eq!(r[0].averages.avg_xact_count, 10);
        // Second period: 1200 more xacts over 60 s, no extra time.
        let r = a.rows(vec![totals(1800, 60_000)], t0 + Duration::from_secs(120));
        assert_eq!(r[0].averages.avg_xact_count, 20);
        assert_eq!(r[0].averages.avg_xact_time, 0);
        assert_eq!(r[0].totals.total_xact_count, 1800);
    }

    #[test]
    fn zero_elapsed_and_counter_resets_do_not_panic() {
        let t0 = Instant::now();
        let a = StatsAverager::starting_at(Duration::from_secs(1), t0);
        let r = a.rows(vec![totals(5, 5)], t0);
        assert_eq!(r[0].averages, StatsAverages::default());
        a.rows(vec![totals(50, 50)], t0 + Duration::from_secs(2));
        let r = a.rows(vec![totals(1, 1)], t0 + Duration::from_secs(4));
        assert_eq!(r[0].averages.avg_xact_count, 0);
    }
}
