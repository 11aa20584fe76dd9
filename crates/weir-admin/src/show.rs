//! The `SHOW` commands: each turns a backend snapshot into a [`Table`] with
//! PgBouncer 1.18's column names, order and types, plus pgweir's own
//! `SHOW LATENCY` and `SHOW QUERIES`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::backend::{AdminBackend, SocketRow};
use crate::result::{ColType, Table, Val};

use ColType::{Int4, Int8, Numeric, Text};

/// The PgBouncer version whose console pgweir's matches; tools that branch on
/// `SHOW VERSION` or `server_version` take their 1.18 path.
pub const PGBOUNCER_VERSION: &str = "1.18.0";

/// `SHOW VERSION`: PgBouncer-style (`PgBouncer 1.18.0 ...`) so version parsers work.
pub fn version_string() -> String {
    format!(
        "PgBouncer {PGBOUNCER_VERSION} (pgweir {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// Rows `SHOW QUERIES` returns.
pub const QUERIES_LIMIT: usize = 50;

/// The text of `SHOW HELP` (sent as a NOTICE detail, like PgBouncer).
pub const HELP: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
\tSHOW LISTS|MEM|STATE\n\
\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
\tSHOW LATENCY|QUERIES|BREAKERS|MODE|PRIORITIES|SCALING|SCALING_HISTORY\n\
\tSET key = arg\n\
\tRELOAD\n\
\tPAUSE [<db>]\n\
\tRESUME [<db>]\n\
\tDISABLE <db>\n\
\tENABLE <db>\n\
\tRECONNECT [<db>]\n\
\tKILL <db>\n\
\tSUSPEND\n\
\tSHUTDOWN\n\
\tWAIT_CLOSE [<db>]";

/// Settings some clients `SHOW` or `SET` blindly; answered with fixed values
/// (PgBouncer's "fake" parameters).
pub const FAKE_PARAMS: &[(&str, &str)] = &[
    ("client_encoding", "UTF-8"),
    ("default_transaction_isolation", "read committed"),
    ("standard_conforming_strings", "on"),
    ("datestyle", "ISO"),
    ("timezone", "GMT"),
];

/// The result of `SHOW <what>` (case-insensitive), or `None` if there is no such
/// list. `SHOW HELP` is handled by the console (it is a notice).
pub fn show(backend: &dyn AdminBackend, what: &str) -> Option<Table> {
    let what = what.to_ascii_lowercase();
    Some(match what.as_str() {
        "pools" => pools(backend),
        "clients" => sockets(backend.clients()),
        "servers" => sockets(backend.servers()),
        "databases" => databases(backend),
        "users" => users(backend),
        "config" => config(backend),
        "lists" => lists(backend),
        "mem" => mem(backend),
        "state" => state(backend),
        "stats" => stats(backend),
        "stats_totals" => stats_split(backend, false),
        "stats_averages" => stats_split(backend, true),
        "totals" => totals(backend),
        "version" => {
            let mut t = Table::new(&[("version", Text)]);
            t.push(vec![version_string().into()]);
            t
        }
        "latency" => latency(backend),
        "queries" => queries(backend),
        "breakers" => breakers(backend),
        "mode" => mode(backend),
        "priorities" => priorities(backend),
        "scaling" => crate::scaling::show_scaling(backend),
        "scaling_history" => crate::scaling::show_history(backend),
        other => {
            let (name, value) = FAKE_PARAMS.iter().find(|(n, _)| *n == other)?;
            let mut t = Table::new(&[(name, Text)]);
            t.push(vec![(*value).into()]);
            t
        }
    })
}

fn pools(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
    ]);
    for p in backend.pools() {
        t.push(vec![
            p.database.into(),
            p.user.into(),
            p.cl_active.into(),
            p.cl_waiting.into(),
            p.cl_active_cancel_req.into(),
            p.cl_waiting_cancel_req.into(),
            p.sv_active.into(),
            p.sv_active_cancel.into(),
            p.sv_being_canceled.into(),
            p.sv_idle.into(),
            p.sv_used.into(),
            p.sv_tested.into(),
            p.sv_login.into(),
            p.maxwait.into(),
            p.maxwait_us.into(),
            p.pool_mode.into(),
        ]);
    }
    t
}

fn sockets(rows: Vec<SocketRow>) -> Table {
    let mut t = Table::new(&[
        ("type", Text),
        ("user", Text),
        ("database", Text),
        ("state", Text),
        ("addr", Text),
        ("port", Int4),
        ("local_addr", Text),
        ("local_port", Int4),
        ("connect_time", Text),
        ("request_time", Text),
        ("wait", Int4),
        ("wait_us", Int4),
        ("close_needed", Int4),
        ("ptr", Text),
        ("link", Text),
        ("remote_pid", Int4),
        ("tls", Text),
        ("application_name", Text),
        ("pinned", Text),
    ]);
    for s in rows {
        t.push(vec![
            s.kind.into(),
            s.user.into(),
            s.database.into(),
            s.state.into(),
            s.addr.into(),
            s.port.into(),
            s.local_addr.into(),
            s.local_port.into(),
            format_time(s.connect_time).into(),
            s.request_time.map(format_time).into(),
            u32::try_from(s.wait.as_secs()).unwrap_or(u32::MAX).into(),
            s.wait.subsec_micros().into(),
            s.close_needed.into(),
            s.ptr.into(),
            s.link.into(),
            s.remote_pid.into(),
            s.tls.into(),
            s.application_name.into(),
            s.pinned.into(),
        ]);
    }
    t
}

fn databases(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool", Int4),
        ("pool_mode", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
    ]);
    for d in backend.databases() {
        t.push(vec![
            d.name.into(),
            d.host.into(),
            d.port.into(),
            d.database.into(),
            d.force_user.into(),
            d.pool_size.into(),
            d.min_pool_size.into(),
            d.reserve_pool.into(),
            d.pool_mode.into(),
            d.max_connections.into(),
            d.current_connections.into(),
            d.paused.into(),
            d.disabled.into(),
        ]);
    }
    t
}

fn users(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[("name", Text), ("pool_mode", Text)]);
    for u in backend.users() {
        t.push(vec![u.name.into(), u.pool_mode.into()]);
    }
    t
}

fn yes_no(v: bool) -> Val {
    if v { "yes" } else { "no" }.into()
}

fn config(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    for c in backend.config() {
        t.push(vec![
            c.key.into(),
            c.value.into(),
            c.default.into(),
            yes_no(c.changeable),
        ]);
    }
    t
}

fn lists(backend: &dyn AdminBackend) -> Table {
    let l = backend.lists();
    let mut t = Table::new(&[("list", Text), ("items", Int4)]);
    for (name, v) in [
        ("databases", l.databases),
        ("users", l.users),
        ("pools", l.pools),
        ("free_clients", l.free_clients),
        ("used_clients", l.used_clients),
        ("login_clients", l.login_clients),
        ("free_servers", l.free_servers),
        ("used_servers", l.used_servers),
        ("dns_names", l.dns_names),
        ("dns_zones", l.dns_zones),
        ("dns_queries", l.dns_queries),
        ("dns_pending", l.dns_pending),
    ] {
        t.push(vec![name.into(), v.into()]);
    }
    t
}

fn mem(backend: &dyn AdminBackend) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("size", Int4),
        ("used", Int4),
        ("free", Int4),
        ("memtotal", Int4),
    ]);
    for m in backend.mem() {
        t.push(vec![
            m.name.into(),
            m.size.into(),
            m.used.into(),
            m.free.into(),
            m.memtotal.into(),
        ]);
    }
    t
}

fn state(backend: &dyn AdminBackend) -> Table {
    let s = backend.state();
    let mut t = Table::new(&[("key", Text), ("value", Text)]);
    t.push(vec!["active".into(), yes_no(s.active)]);
    t.push(vec!["paused".into(), yes_no(s.paused)]);
    t.push(vec!["suspended".into(), yes_no(s.suspended)]);
    t
}

/// `SHOW STATS`: PgBouncer 1.18's fifteen columns, then `total_requests`
/// (= `total_query_count`), the pre-1.8 name that Debian's
/// prometheus-pgbouncer-exporter 1.7 still reads; tools that read by name or by
/// position see PgBouncer's columns unchanged.
fn stats(backend: &dyn AdminBackend) -> Table {
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
fn stats_split(backend: &dyn AdminBackend, averages: bool) -> Table {
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
fn totals(backend: &dyn AdminBackend) -> Table {
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

fn latency(backend: &dyn AdminBackend) -> Table {
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

fn queries(backend: &dyn AdminBackend) -> Table {
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

fn priorities(backend: &dyn AdminBackend) -> Table {
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

fn mode(backend: &dyn AdminBackend) -> Table {
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

fn breakers(backend: &dyn AdminBackend) -> Table {
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

/// `YYYY-MM-DD HH:MM:SS UTC`, as PgBouncer prints connect and request times.
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(i64::MAX as u64) as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_times_like_pgbouncer() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(format_time(t), "2024-02-29 12:34:56 UTC");
    }

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
