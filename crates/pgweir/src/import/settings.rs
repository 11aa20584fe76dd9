//! The `[pgbouncer]` section: each setting mapped to its `proxy.toml` key in
//! PgBouncer's units (timeouts in seconds, fractions allowed; sizes in bytes), or
//! named with the reason it is not needed ([`NoteKind::Ignored`]) or not supported
//! ([`NoteKind::Unsupported`]).
//!
//! Where PgBouncer's default differs from pgweir's, PgBouncer's is written out even
//! when the file does not set it: `pool_mode` (session), `max_client_conn` (100),
//! `auth_type` (md5 in 1.18) and the listen address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use weir_config::auth_file::AuthFileEntry;
use weir_config::{duration, Secret};

use super::ini::Entry;
use super::toml_out::{string, strings, Out};
use super::{read_userlist, ImportError, NoteKind, Notes};

/// The `[pgbouncer]` settings, last one of each name winning, with what was used.
struct Settings<'a> {
    by_key: BTreeMap<String, &'a Entry>,
}

impl<'a> Settings<'a> {
    fn take(&mut self, key: &str) -> Option<&'a Entry> {
        self.by_key.remove(key)
    }
}

/// `from pgbouncer.ini:12 (key = value)`.
fn from(e: &Entry) -> String {
    format!("{} = {} ({})", e.key, e.value, short(&e.at))
}

/// `file:line` with the directory dropped, for comments.
fn short(at: &str) -> &str {
    at.rsplit('/').next().unwrap_or(at)
}

/// PgBouncer's seconds (fractions allowed; pgweir's units accepted too) as a duration.
fn seconds(e: &Entry, notes: &mut Notes) -> Option<std::time::Duration> {
    match duration::parse(&e.value) {
        Ok(d) => Some(d),
        Err(m) => {
            notes.push(&e.at, NoteKind::Unsupported, format!("{}: {m}", e.key));
            None
        }
    }
}

fn number(e: &Entry, notes: &mut Notes) -> Option<u64> {
    match e.value.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            notes.push(
                &e.at,
                NoteKind::Unsupported,
                format!("{} = {}: not a whole number, skipped", e.key, e.value),
            );
            None
        }
    }
}

fn boolean(e: &Entry, notes: &mut Notes) -> Option<bool> {
    match weir_config::parse_flag(&e.value) {
        Some(b) => Some(b),
        None => {
            notes.push(
                &e.at,
                NoteKind::Unsupported,
                format!("{} = {}: not 0 or 1, skipped", e.key, e.value),
            );
            None
        }
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Maps the `[pgbouncer]` section into `out`. Returns the directory through which
/// PgBouncer reaches a database without `host`: its `unix_socket_dir` (`/tmp` when
/// unset, empty when set empty).
///
/// # Errors
/// The userlist given on the command line cannot be read or parsed.
pub(super) fn map(
    entries: &[Entry],
    userlist: Option<&Path>,
    out: &mut Out,
    notes: &mut Notes,
) -> Result<String, ImportError> {
    let mut s = Settings {
        by_key: entries
            .iter()
            .filter(|e| e.section == "pgbouncer")
            .map(|e| (e.key.to_ascii_lowercase(), e))
            .collect(),
    };
    listen(&mut s, out, notes);
    let socket_dir = unix_socket(&mut s, out);
    let users = auth_file(&mut s, userlist, out, notes)?;
    auth_type(&mut s, users.as_deref(), out, notes);

    let mode = s.take("pool_mode");
    let (word, comment) = match mode {
        Some(e) if e.value.eq_ignore_ascii_case("statement") => {
            notes.push(
                &e.at,
                NoteKind::Unsupported,
                "pool_mode = statement: pgweir has session and transaction pooling; \
                 transaction mode is the closest (multi-statement transactions are allowed)",
            );
            ("transaction".to_owned(), from(e))
        }
        Some(e) => (e.value.to_ascii_lowercase(), from(e)),
        None => (
            "session".to_owned(),
            "PgBouncer's default (pgweir's is transaction)".to_owned(),
        ),
    };
    out.global("pool_mode", string(&word), comment);
    match s.take("max_client_conn") {
        Some(e) => {
            if let Some(n) = number(e, notes) {
                out.global("max_client_conn", n.to_string(), from(e));
            }
        }
        None => out.global(
            "max_client_conn",
            "100".to_owned(),
            "PgBouncer's default (pgweir's is 10000)",
        ),
    }
    for key in [
        "default_pool_size",
        "min_pool_size",
        "max_db_connections",
        "max_user_connections",
        "reserve_pool_size",
    ] {
        if let Some(e) = s.take(key) {
            if let Some(n) = number(e, notes) {
                out.global(key, n.to_string(), from(e));
            }
        }
    }
    for key in ["admin_users", "stats_users", "track_extra_parameters"] {
        if let Some(e) = s.take(key) {
            out.global(key, strings(&list(&e.value)), from(e));
        }
    }
    for key in [
        "client_tls_sslmode",
        "client_tls_cert_file",
        "client_tls_key_file",
        "client_tls_ca_file",
        "client_tls_protocols",
        "client_tls_ciphers",
        "server_tls_sslmode",
        "server_tls_ca_file",
        "server_tls_cert_file",
        "server_tls_key_file",
        "server_tls_protocols",
        "server_tls_ciphers",
    ] {
        if let Some(e) = s.take(key) {
            // Same words as PgBouncer; an empty value means the default there and here.
            let value = e.value.trim();
            let bad = if key.ends_with("_sslmode") {
                value
                    .parse::<weir_config::SslMode>()
                    .err()
                    .map(|err| err.to_string())
            } else if key.ends_with("_protocols") {
                weir_config::tls_protocols(value).err()
            } else {
                None
            };
            match bad {
                Some(why) => notes.push(
                    &e.at,
                    NoteKind::Unsupported,
                    format!("{key} = {value}: {why}; not carried over"),
                ),
                None if !value.is_empty() => out.global(key, string(value), from(e)),
                None => {}
            }
        }
    }
    if let Some(e) = s.take("server_reset_query") {
        out.global("server_reset_query", string(&e.value), from(e));
    }
    for key in ["auth_user", "auth_query", "auth_dbname"] {
        if let Some(e) = s.take(key) {
            let value = e.value.trim();
            if key == "auth_query" && !value.contains("$1") {
                notes.push(
                    &e.at,
                    NoteKind::Unsupported,
                    format!("auth_query = {value}: takes no $1 (the user name); not carried over"),
                );
            } else if !value.is_empty() {
                out.global(key, string(value), from(e));
            }
        }
    }
    durations(&mut s, out, notes);
    for key in ["log_connections", "log_disconnections", "log_pooler_errors"] {
        if let Some(e) = s.take(key) {
            if let Some(b) = boolean(e, notes) {
                out.global(key, b.to_string(), from(e));
            }
        }
    }
    if let Some(e) = s.take("log_stats") {
        match boolean(e, notes) {
            Some(false) => out.global("stats_period", string("0"), from(e)),
            Some(true) => notes.push(
                &e.at,
                NoteKind::Ignored,
                "log_stats = 1: pgweir logs its stats line every stats_period too",
            ),
            None => {}
        }
    }
    if let Some(e) = s.take("max_packet_size") {
        if let Some(n) = number(e, notes) {
            let clamped = n.clamp(
                u64::from(weir_config::MIN_MESSAGE_SIZE),
                u64::from(weir_config::MAX_MESSAGE_SIZE),
            );
            if clamped != n {
                notes.push(
                    &e.at,
                    NoteKind::Changed,
                    format!(
                        "max_packet_size = {n}: pgweir accepts 1 MiB to 2 GiB; using {clamped}"
                    ),
                );
            }
            out.global("max_message_size", clamped.to_string(), from(e));
        }
    }
    if let Some(e) = s.take("max_prepared_statements") {
        if let Some(n) = number(e, notes) {
            out.global("max_prepared_statements", n.to_string(), from(e));
        }
    }
    // Everything left is not mapped: say why, in file order.
    let mut rest: Vec<&Entry> = s.by_key.into_values().collect();
    rest.sort_by_key(|e| entries.iter().position(|x| std::ptr::eq(x, *e)));
    for e in rest {
        let (kind, why) = super::settings_unmapped::classify(&e.key.to_ascii_lowercase(), &e.value);
        notes.push(&e.at, kind, format!("{} = {}: {why}", e.key, e.value));
    }
    Ok(socket_dir)
}

/// Timeouts, all in PgBouncer's seconds.
fn durations(s: &mut Settings<'_>, out: &mut Out, notes: &mut Notes) {
    for key in [
        "server_lifetime",
        "server_idle_timeout",
        "server_connect_timeout",
        "server_login_retry",
        "client_login_timeout",
        "query_timeout",
        "query_wait_timeout",
        "client_idle_timeout",
        "idle_transaction_timeout",
        "stats_period",
        "reserve_pool_timeout",
    ] {
        let Some(e) = s.take(key) else { continue };
        let Some(d) = seconds(e, notes) else { continue };
        if d.is_zero() && key == "server_connect_timeout" {
            notes.push(
                &e.at,
                NoteKind::Changed,
                "server_connect_timeout = 0: pgweir always bounds a server login; kept its 15s",
            );
            continue;
        }
        if d > duration::MAX {
            notes.push(
                &e.at,
                NoteKind::Changed,
                format!(
                    "{key} = {}: above pgweir's limit of 365 days; using 0 (never)",
                    e.value
                ),
            );
            out.global(key, string("0"), from(e));
            continue;
        }
        out.global(key, string(&duration::format(d)), from(e));
    }
}

/// `listen_addr` + `listen_port` → `listen`.
fn listen(s: &mut Settings<'_>, out: &mut Out, notes: &mut Notes) {
    let port_entry = s.take("listen_port");
    let port = match port_entry.map(|e| (e, e.value.trim().parse::<u16>())) {
        None => 6432,
        Some((_, Ok(p))) if p > 0 => p,
        Some((e, _)) => {
            notes.push(
                &e.at,
                NoteKind::Unsupported,
                format!("listen_port = {}: not a port number; using 6432", e.value),
            );
            6432
        }
    };
    let mut comment = port_entry.map(from).unwrap_or_default();
    let addr = s.take("listen_addr");
    let ip: IpAddr = match addr.map(|e| (e, e.value.trim())) {
        None | Some((_, "")) => {
            let at = addr.map_or_else(String::new, |e| e.at.clone());
            notes.push(
                &at,
                NoteKind::Changed,
                format!(
                    "listen_addr not set: PgBouncer accepted Unix-socket clients only; \
                     pgweir listens on TCP, 127.0.0.1:{port}"
                ),
            );
            Ipv4Addr::LOCALHOST.into()
        }
        Some((e, value)) => {
            comment = format!("{} {comment}", from(e)).trim().to_owned();
            let first = value.split(',').next().unwrap_or("").trim();
            if value.contains(',') {
                notes.push(
                    &e.at,
                    NoteKind::Unsupported,
                    format!("listen_addr = {value}: pgweir listens on one address; using {first}"),
                );
            }
            match first {
                "*" => {
                    notes.push(
                        &e.at,
                        NoteKind::Changed,
                        "listen_addr = *: all IPv4 addresses (0.0.0.0); write \"[::]:PORT\" for IPv6",
                    );
                    Ipv4Addr::UNSPECIFIED.into()
                }
                "localhost" => Ipv4Addr::LOCALHOST.into(),
                other => other.parse().unwrap_or_else(|_| {
                    notes.push(
                        &e.at,
                        NoteKind::Unsupported,
                        format!(
                            "listen_addr = {other}: pgweir listens on an IP address, not a \
                             host name; using 127.0.0.1"
                        ),
                    );
                    Ipv4Addr::LOCALHOST.into()
                }),
            }
        }
    };
    out.global(
        "listen",
        string(&SocketAddr::new(ip, port).to_string()),
        comment,
    );
}

/// `unix_socket_dir` and `unix_socket_mode`, when set (empty: no socket, pgweir's
/// default). Returns PgBouncer's socket directory: the one set, else its `/tmp`.
fn unix_socket(s: &mut Settings<'_>, out: &mut Out) -> String {
    let mut dir = "/tmp".to_owned();
    for key in ["unix_socket_dir", "unix_socket_mode"] {
        if let Some(e) = s.take(key) {
            if key == "unix_socket_dir" {
                e.value.trim().clone_into(&mut dir);
            }
            if !e.value.trim().is_empty() {
                out.global(key, string(e.value.trim()), from(e));
            }
        }
    }
    dir
}

/// `auth_file` (or the userlist argument), written as an absolute path; returns its users
/// when it can be read.
fn auth_file(
    s: &mut Settings<'_>,
    userlist: Option<&Path>,
    out: &mut Out,
    notes: &mut Notes,
) -> Result<Option<Vec<AuthFileEntry>>, ImportError> {
    let entry = s.take("auth_file");
    let (path, comment, strict) = match (userlist, entry) {
        (Some(p), _) => (
            p.to_owned(),
            "the userlist given to pgweir import".to_owned(),
            true,
        ),
        (None, Some(e)) if !e.value.is_empty() => (e.value.clone().into(), from(e), false),
        _ => return Ok(None),
    };
    // PgBouncer reads a relative auth_file from its working directory; pgweir from the
    // config file's directory: an absolute path means the same file to both.
    let path = std::path::absolute(&path).unwrap_or(path);
    out.global("auth_file", string(&path.display().to_string()), comment);
    if strict {
        return read_userlist(&path).map(Some);
    }
    match read_userlist(&path) {
        Ok(users) => Ok(Some(users)),
        Err(e) => {
            let at = entry.map_or_else(String::new, |e| e.at.clone());
            notes.push(
                &at,
                NoteKind::Changed,
                format!("auth_file: {e}; written as is, pgweir needs it readable at start"),
            );
            Ok(None)
        }
    }
}

/// `auth_type`, chosen so the auth file's secrets still verify: PgBouncer's `md5`
/// quietly uses SCRAM for users with a SCRAM secret, pgweir's does not.
fn auth_type(
    s: &mut Settings<'_>,
    users: Option<&[AuthFileEntry]>,
    out: &mut Out,
    notes: &mut Notes,
) {
    let names = |pick: fn(&Secret) -> bool| -> Vec<&str> {
        users
            .unwrap_or_default()
            .iter()
            .filter(|u| u.secret.as_ref().is_some_and(pick))
            .map(|u| u.user.as_str())
            .collect()
    };
    let scram = names(|s| matches!(s, Secret::Scram(_)));
    let md5 = names(|s| matches!(s, Secret::Md5(_)));
    let entry = s.take("auth_type");
    let at = entry.map_or_else(String::new, |e| e.at.clone());
    let given = entry.map_or("md5".to_owned(), |e| e.value.to_ascii_lowercase());
    let comment = entry.map_or_else(
        || "PgBouncer's default (pgweir's is scram-sha-256)".to_owned(),
        from,
    );
    // What PgBouncer's md5 amounts to for these secrets.
    let md5_like = |notes: &mut Notes| -> &'static str {
        if !scram.is_empty() && md5.is_empty() {
            notes.push(
                &at,
                NoteKind::Changed,
                "auth_type = md5 with SCRAM secrets in the auth file: PgBouncer used SCRAM \
                 for those users; pgweir uses scram-sha-256 for everyone (plain-text \
                 passwords work with both)",
            );
            "scram-sha-256"
        } else {
            if !scram.is_empty() {
                notes.push(
                    &at,
                    NoteKind::Unsupported,
                    format!(
                        "auth_type = md5 with both md5 hashes and SCRAM secrets: pgweir uses one \
                         method; SCRAM users {} need a plain-text password or md5 hash",
                        scram.join(", ")
                    ),
                );
            }
            "md5"
        }
    };
    let word = match given.as_str() {
        "md5" => md5_like(notes),
        "scram-sha-256" => "scram-sha-256",
        "trust" => "trust",
        "hba" => match s
            .take("auth_hba_file")
            .filter(|e| !e.value.trim().is_empty())
        {
            Some(e) => {
                // PgBouncer reads it from its working directory: make it absolute.
                let path = std::path::PathBuf::from(e.value.trim());
                let path = std::path::absolute(&path).unwrap_or(path);
                out.global(
                    "auth_hba_file",
                    string(&path.display().to_string()),
                    from(e),
                );
                "hba"
            }
            None => {
                notes.push(
                    &at,
                    NoteKind::Unsupported,
                    "auth_type = hba without auth_hba_file: using password authentication",
                );
                md5_like(notes)
            }
        },
        "any" => {
            notes.push(
                &at,
                NoteKind::Changed,
                "auth_type = any: pgweir's trust also accepts any password, but keeps the \
                 user name the client gives",
            );
            "trust"
        }
        "plain" => {
            notes.push(
                &at,
                NoteKind::Changed,
                "auth_type = plain: pgweir never asks for a clear-text password; clients \
                 send the same password hashed instead",
            );
            if md5.is_empty() {
                "scram-sha-256"
            } else {
                "md5"
            }
        }
        other => {
            notes.push(
                &at,
                NoteKind::Unsupported,
                format!(
                    "auth_type = {other}: pgweir supports scram-sha-256, md5, trust and hba; \
                     using password authentication instead"
                ),
            );
            md5_like(notes)
        }
    };
    out.global("auth_type", string(word), comment);
}
