//! The `[databases]` and `[users]` sections: one `[databases.NAME]` table per
//! connection string (host, port, dbname, user, password, pool_size, min_pool_size,
//! pool_mode) and one `[users.NAME]` per user line (pool_mode); every other key is
//! named with the reason.

use super::connstr;
use super::ini::Entry;
use super::toml_out::{string, Out};
use super::{NoteKind, Notes};

/// Maps `[databases]`, `[users]`, and notes every other section.
/// `socket_dir` is where PgBouncer reaches a database without `host` (its
/// `unix_socket_dir`).
pub(super) fn map(entries: &[Entry], socket_dir: &str, out: &mut Out, notes: &mut Notes) {
    for e in entries {
        match e.section.as_str() {
            "pgbouncer" => {}
            "databases" => database(e, socket_dir, out, notes),
            "users" => user(e, out, notes),
            "" => notes.push(
                &e.at,
                NoteKind::Unsupported,
                format!("{} = {}: outside any [section]; skipped", e.key, e.value),
            ),
            other => notes.push(
                &e.at,
                NoteKind::Unsupported,
                format!(
                    "[{other}] {}: pgweir has no such section (peers are not supported)",
                    e.key
                ),
            ),
        }
    }
    if !out.has_databases() {
        out.remarks.push(
            "No database was imported: add a [databases.NAME] table, or start pgweir with \
             --upstream postgres://USER:PASSWORD@HOST:PORT/DB (the container's default)."
                .to_owned(),
        );
    }
}

/// `file:line` without the directory.
fn short(at: &str) -> &str {
    at.rsplit('/').next().unwrap_or(at)
}

fn pool_mode(value: &str, at: &str, notes: &mut Notes) -> Option<&'static str> {
    match value.to_ascii_lowercase().as_str() {
        "session" => Some("session"),
        "transaction" => Some("transaction"),
        "statement" => {
            notes.push(
                at,
                NoteKind::Unsupported,
                "pool_mode=statement: pgweir's closest mode is transaction",
            );
            Some("transaction")
        }
        other => {
            notes.push(
                at,
                NoteKind::Unsupported,
                format!("pool_mode={other}: not a pool mode; skipped"),
            );
            None
        }
    }
}

fn database(e: &Entry, socket_dir: &str, out: &mut Out, notes: &mut Notes) {
    let name = e.key.as_str();
    let at = e.at.as_str();
    let comment = short(at);
    if name == "*" {
        notes.push(
            at,
            NoteKind::Unsupported,
            format!(
                "* = {}: pgweir has no fallback database; add a [databases.NAME] for each \
                 name clients use",
                e.value
            ),
        );
        return;
    }
    if name.eq_ignore_ascii_case("pgbouncer") || name.eq_ignore_ascii_case("pgweir") {
        notes.push(
            at,
            NoteKind::Unsupported,
            format!("database {name}: reserved for pgweir's admin console; skipped"),
        );
        return;
    }
    let pairs = match connstr::parse(&e.value) {
        Ok(p) => p,
        Err(m) => {
            notes.push(
                at,
                NoteKind::Unsupported,
                format!("database {name}: {m}; skipped"),
            );
            return;
        }
    };
    let mut host: Option<String> = None;
    let mut lines: Vec<(&str, String)> = Vec::new();
    let mut user_set = false;
    let mut password: Option<String> = None;
    for (k, v) in pairs {
        let unsupported = |notes: &mut Notes, why: &str| {
            notes.push(
                at,
                NoteKind::Unsupported,
                format!("database {name}: {k}={v}: {why}"),
            );
        };
        match k.as_str() {
            "host" => host = Some(v),
            "port" => match v.parse::<u16>() {
                Ok(p) if p > 0 => lines.push(("port", p.to_string())),
                _ => unsupported(notes, "not a port number; 5432 is used"),
            },
            "dbname" if !v.is_empty() => lines.push(("dbname", string(&v))),
            "user" if !v.is_empty() => {
                user_set = true;
                lines.push(("user", string(&v)));
            }
            "password" => password = Some(v),
            "pool_size" | "min_pool_size" => match v.parse::<u32>() {
                Ok(n) => lines.push((
                    if k == "pool_size" {
                        "pool_size"
                    } else {
                        "min_pool_size"
                    },
                    n.to_string(),
                )),
                Err(_) => unsupported(notes, "not a whole number; skipped"),
            },
            "pool_mode" => {
                if let Some(m) = pool_mode(&v, at, notes) {
                    lines.push(("pool_mode", string(m)));
                }
            }
            "reserve_pool" | "reserve_pool_size" => match v.parse::<u32>() {
                Ok(n) => {
                    if k == "reserve_pool" {
                        notes.push(
                            at,
                            NoteKind::Changed,
                            format!("database {name}: {k}={v}: written as reserve_pool_size"),
                        );
                    }
                    lines.push(("reserve_pool_size", n.to_string()));
                }
                Err(_) => unsupported(notes, "not a whole number; skipped"),
            },
            "connect_query" => unsupported(
                notes,
                "pgweir runs no query on new server connections; put session defaults on \
                 the server (ALTER ROLE/DATABASE ... SET)",
            ),
            "client_encoding" | "datestyle" | "timezone" | "application_name" => unsupported(
                notes,
                "pgweir does not force startup settings per database; set it on the server \
                 (ALTER DATABASE ... SET) or in the client",
            ),
            "max_db_connections" | "server_lifetime" => unsupported(
                notes,
                "pgweir has this as a global setting only, not per database",
            ),
            "auth_query" if !v.contains("$1") => {
                unsupported(notes, "takes no $1 (the user name); skipped")
            }
            "auth_user" | "auth_dbname" | "auth_query" if !v.is_empty() => {
                lines.push((
                    match k.as_str() {
                        "auth_user" => "auth_user",
                        "auth_dbname" => "auth_dbname",
                        _ => "auth_query",
                    },
                    string(&v),
                ));
            }
            "dbname" | "user" => {}
            _ => unsupported(notes, "not a [databases] key pgweir knows; skipped"),
        }
    }
    let host = match host.as_deref().map(str::trim) {
        None | Some("") if socket_dir.starts_with('/') => socket_dir.to_owned(),
        None | Some("") => {
            notes.push(
                at,
                NoteKind::Changed,
                format!(
                    "database {name}: no host and no unix_socket_dir (PgBouncer skips such a \
                     database); pgweir connects over TCP to 127.0.0.1"
                ),
            );
            "127.0.0.1".to_owned()
        }
        Some(h) if h.starts_with('@') => {
            notes.push(
                at,
                NoteKind::Changed,
                format!(
                    "database {name}: host={h} is an abstract-namespace socket, which pgweir \
                     does not reach; it connects over TCP to 127.0.0.1 (pg_hba.conf needs a \
                     `host` line for it)"
                ),
            );
            "127.0.0.1".to_owned()
        }
        Some(h) if h.contains(',') => {
            let first = h.split(',').next().unwrap_or(h).trim().to_owned();
            notes.push(
                at,
                NoteKind::Unsupported,
                format!("database {name}: host={h}: pgweir connects to one host; using {first}"),
            );
            first
        }
        Some(h) => h.to_owned(),
    };
    out.new_database(name);
    out.database(name, "host", string(&host), comment);
    for (k, v) in lines {
        out.database(name, k, v, comment);
    }
    if let Some(p) = password {
        if user_set {
            out.database(name, "password", string(&p), comment);
        } else {
            notes.push(
                at,
                NoteKind::Unsupported,
                format!(
                    "database {name}: password without user: pgweir logs in with the client's \
                     own secret from auth_file; skipped"
                ),
            );
        }
    }
}

fn user(e: &Entry, out: &mut Out, notes: &mut Notes) {
    let name = e.key.as_str();
    let at = e.at.as_str();
    let pairs = match connstr::parse(&e.value) {
        Ok(p) => p,
        Err(m) => {
            notes.push(
                at,
                NoteKind::Unsupported,
                format!("user {name}: {m}; skipped"),
            );
            return;
        }
    };
    for (k, v) in pairs {
        match k.as_str() {
            "pool_mode" => {
                if let Some(m) = pool_mode(&v, at, notes) {
                    out.user(name, "pool_mode", string(m), short(at));
                }
            }
            "max_user_connections" => match v.parse::<u32>() {
                Ok(n) => out.user(name, "max_user_connections", n.to_string(), short(at)),
                Err(_) => notes.push(
                    at,
                    NoteKind::Unsupported,
                    format!("user {name}: {k}={v}: not a whole number; skipped"),
                ),
            },
            _ => notes.push(
                at,
                NoteKind::Unsupported,
                format!(
                    "user {name}: {k}={v}: pgweir has only pool_mode and \
                     max_user_connections per user"
                ),
            ),
        }
    }
}
