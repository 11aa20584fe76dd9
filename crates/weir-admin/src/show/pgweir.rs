//! pgweir's own `SHOW` lists, beyond PgBouncer's: `LATENCY`, `QUERIES`, `PRIORITIES`,
//! `MODE` and `BREAKERS`.

use hdrhistogram::Histogram;

use super::{format_time, QUERIES_LIMIT};
use crate::backend::AdminBackend;
use crate::result::{ColType, Table, Val};

use ColType::{Int4, Int8, Text};

/// Quantiles `SHOW LATENCY` reports for each histogram, with column suffixes.
const QUANTILES: [(f64, &str); 4] = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")];

/// The p50, p90, p99, p999 and max of a histogram, µs (zeros when empty).
pub fn summary(h: &Histogram<u64>) -> [u64; 5] {
    if h.is_empty() {
        return [0; 5];
    }
    let mut out = [0u64; 5];
    for (slot, (q, _)) in out.iter_mut().zip(QUANTILES) {
        *slot = h.value_at_quantile(q);
    }
    out[4] = h.max();
    out
}

pub(super) fn latency(backend: &dyn AdminBackend) -> Table {
    const COLS: [(&str, ColType); 17] = [
        ("database", Text),
        ("user", Text),
        ("query_p50_us", Int8),
        ("query_p90_us", Int8),
        ("query_p99_us", Int8),
        ("query_p999_us", Int8),
        ("query_max_us", Int8),
        ("xact_p50_us", Int8),
        ("xact_p90_us", Int8),
        ("xact_p99_us", Int8),
        ("xact_p999_us", Int8),
        ("xact_max_us", Int8),
        ("wait_p50_us", Int8),
        ("wait_p90_us", Int8),
        ("wait_p99_us", Int8),
        ("wait_p999_us", Int8),
        ("wait_max_us", Int8),
    ];
    let mut t = Table::new(&COLS);
    for p in backend.latency() {
        let mut row: Vec<Val> = vec![p.database.into(), p.user.into()];
        for h in [&p.query, &p.transaction, &p.wait] {
            row.extend(summary(h).into_iter().map(Val::from));
        }
        t.push(row);
    }
    t
}

pub(super) fn queries(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("fingerprint", Text),
        ("query", Text),
        ("calls", Int8),
        ("total_time_us", Int8),
        ("mean_us", Int8),
        ("p99_us", Int8),
    ]);
    let mut rows = backend.queries(QUERIES_LIMIT);
    rows.truncate(QUERIES_LIMIT);
    for q in rows {
        t.push(vec![
            format!("{:016x}", q.fingerprint).into(),
            q.query.into(),
            q.calls.into(),
            q.total_time_us.into(),
            q.mean_us.into(),
            q.p99_us.into(),
        ]);
    }
    t
}

pub(super) fn priorities(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("class", Text),
        ("waiting", Int4),
        ("checkouts", Int8),
        ("p99_wait_us", Int8),
    ]);
    for p in backend.priorities() {
        t.push(vec![
            p.database.into(),
            p.user.into(),
            p.class.into(),
            p.waiting.into(),
            p.checkouts.into(),
            p.p99_wait_us.into(),
        ]);
    }
    t
}

pub(super) fn mode(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[("mode", Text)]);
    t.push(vec![current_mode(backend).into()]);
    t
}

/// The operation mode in force, from the configuration rows.
pub fn current_mode(backend: &dyn AdminBackend) -> String {
    backend
        .config()
        .into_iter()
        .find(|r| r.key == "mode")
        .map_or_else(|| "normal".to_owned(), |r| r.value)
}

pub(super) fn breakers(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("upstream", Text),
        ("state", Text),
        ("since", Text),
        ("failures", Int4),
        ("trips", Int8),
        ("last_error", Text),
        ("next_probe_ms", Int8),
    ]);
    for b in backend.breakers() {
        t.push(vec![
            b.upstream.into(),
            b.state.into(),
            format_time(b.since).into(),
            b.failures.into(),
            b.trips.into(),
            b.last_error.into(),
            b.next_probe_ms.map_or(Val::Null, Val::from),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_histograms() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        for v in 1..=1000u64 {
            h.record(v).expect("in range");
        }
        let s = summary(&h);
        assert!((499..=501).contains(&s[0]), "{s:?}");
        assert!((989..=991).contains(&s[2]), "{s:?}");
        assert_eq!(s[4], 1000);
        assert_eq!(summary(&Histogram::new(3).expect("sigfig")), [0; 5]);
    }
}
