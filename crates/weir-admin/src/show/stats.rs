//! PgBouncer's statistics lists: `SHOW STATS`, `STATS_TOTALS`, `STATS_AVERAGES` and
//! `TOTALS`, from the stats averager's rows.

use std::time::Instant;

use crate::backend::AdminBackend;
use crate::result::{ColType, Table, Val};

use ColType::{Numeric, Text};

/// `SHOW STATS`: PgBouncer 1.18's fifteen columns, then `total_requests`
/// (= `total_query_count`), the pre-1.8 name that Debian's
/// prometheus-pgbouncer-exporter 1.7 still reads; tools that read by name or by
/// position see PgBouncer's columns unchanged.
pub(super) fn stats(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("total_xact_count", Numeric),
        ("total_query_count", Numeric),
        ("total_received", Numeric),
        ("total_sent", Numeric),
        ("total_xact_time", Numeric),
        ("total_query_time", Numeric),
        ("total_wait_time", Numeric),
        ("avg_xact_count", Numeric),
        ("avg_query_count", Numeric),
        ("avg_recv", Numeric),
        ("avg_sent", Numeric),
        ("avg_xact_time", Numeric),
        ("avg_query_time", Numeric),
        ("avg_wait_time", Numeric),
        ("total_requests", Numeric),
    ]);
    for r in backend.averager().rows(backend.stats(), Instant::now()) {
        let (s, a) = (r.totals, r.averages);
        t.push(vec![
            s.database.into(),
            s.total_xact_count.into(),
            s.total_query_count.into(),
            s.total_received.into(),
            s.total_sent.into(),
            s.total_xact_time.into(),
            s.total_query_time.into(),
            s.total_wait_time.into(),
            a.avg_xact_count.into(),
            a.avg_query_count.into(),
            a.avg_recv.into(),
            a.avg_sent.into(),
            a.avg_xact_time.into(),
            a.avg_query_time.into(),
            a.avg_wait_time.into(),
            s.total_query_count.into(),
        ]);
    }
    t
}

/// `SHOW STATS_TOTALS` / `SHOW STATS_AVERAGES`: same columns, totals or averages.
pub(super) fn stats_split(backend: &dyn AdminBackend, averages: bool) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("xact_count", Numeric),
        ("query_count", Numeric),
        ("bytes_received", Numeric),
        ("bytes_sent", Numeric),
        ("xact_time", Numeric),
        ("query_time", Numeric),
        ("wait_time", Numeric),
    ]);
    for r in backend.averager().rows(backend.stats(), Instant::now()) {
        let (s, a) = (r.totals, r.averages);
        let v: [u64; 7] = if averages {
            [
                a.avg_xact_count,
                a.avg_query_count,
                a.avg_recv,
                a.avg_sent,
                a.avg_xact_time,
                a.avg_query_time,
                a.avg_wait_time,
            ]
        } else {
            [
                s.total_xact_count,
                s.total_query_count,
                s.total_received,
                s.total_sent,
                s.total_xact_time,
                s.total_query_time,
                s.total_wait_time,
            ]
        };
        let mut row = vec![s.database.into()];
        row.extend(v.into_iter().map(Val::from));
        t.push(row);
    }
    t
}

/// `SHOW TOTALS`: the sums over all databases as name/value rows.
pub(super) fn totals(backend: &dyn AdminBackend) -> Table {
    let rows = backend.averager().rows(backend.stats(), Instant::now());
    let mut sum = [0u64; 14];
    for r in &rows {
        let (s, a) = (&r.totals, &r.averages);
        let v = [
            s.total_xact_count,
            s.total_query_count,
            s.total_received,
            s.total_sent,
            s.total_xact_time,
            s.total_query_time,
            s.total_wait_time,
            a.avg_xact_count,
            a.avg_query_count,
            a.avg_recv,
            a.avg_sent,
            a.avg_xact_time,
            a.avg_query_time,
            a.avg_wait_time,
        ];
        for (acc, x) in sum.iter_mut().zip(v) {
            *acc = acc.saturating_add(x);
        }
    }
    let mut t = Table::new(&[("name", Text), ("value", Numeric)]);
    let names = [
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
    ];
    for (name, v) in names.into_iter().zip(sum) {
        t.push(vec![name.into(), v.into()]);
    }
    t
}
