//! The `SHOW` commands: each turns a backend snapshot into a [`Table`] with
//! PgBouncer 1.18's column names, order and types, plus pgweir's own
//! `SHOW LATENCY` and `SHOW QUERIES`.

use crate::backend::{AdminBackend, SocketRow};
use crate::result::{ColType, Table, Val};

use ColType::{Int4, Text};

mod pgweir;
mod stats;
mod time;

use pgweir::{breakers, latency, mode, priorities, queries};
pub use pgweir::{current_mode, summary};
use stats::{stats, stats_split, totals};
pub use time::format_time;

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
