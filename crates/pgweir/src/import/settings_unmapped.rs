//! Why each `[pgbouncer]` setting without a `proxy.toml` key is not needed or not
//! supported. Covers PgBouncer 1.18 (Debian 12's) and the settings added up to 1.23;
//! anything else is reported as unknown.

use super::NoteKind::{self, Ignored, Unsupported};

/// The verdict on a setting pgweir has no key for.
pub(super) fn classify(key: &str, value: &str) -> (NoteKind, String) {
    let (kind, why): (NoteKind, &str) = match key {
        "logfile" | "syslog" | "syslog_ident" | "syslog_facility" => (
            Ignored,
            "pgweir logs to stderr (text or JSON, log_format); the container runtime or \
             systemd collects it",
        ),
        "pidfile" => (
            Ignored,
            "pgweir does not daemonize; run it under a supervisor",
        ),
        "user" => (
            Ignored,
            "pgweir does not switch users; run it as the user it should be (the container \
             image runs as a non-root user)",
        ),
        "verbose" => (
            Ignored,
            "log levels come from RUST_LOG (e.g. RUST_LOG=debug)",
        ),
        "conffile" | "service_name" | "job_name" => (Ignored, "Windows service settings"),
        "unix_socket_group" if value.is_empty() => (Ignored, "no group was set"),
        "unix_socket_group" => (
            Unsupported,
            "pgweir does not change the socket's group; run it with the group clients share, \
             or widen unix_socket_mode",
        ),
        "pkt_buf" | "sbuf_loopcnt" | "listen_backlog" | "tcp_defer_accept"
        | "tcp_socket_buffer" | "so_reuseport" => (
            Ignored,
            "pgweir sizes its buffers and socket options itself (one read per wakeup, \
             buffers shrink when idle)",
        ),
        "tcp_keepalive" | "tcp_keepcnt" | "tcp_keepidle" | "tcp_keepintvl" | "tcp_user_timeout" => {
            (
                Unsupported,
                "pgweir does not set TCP keepalive options; the kernel's defaults apply",
            )
        }
        "dns_max_ttl" | "dns_nxdomain_ttl" | "dns_zone_check_period" | "resolv_conf" => (
            Ignored,
            "pgweir resolves host names with the system resolver at each server connect",
        ),
        "ignore_startup_parameters" => (
            Ignored,
            "pgweir accepts every startup parameter (extra_float_digits, options, ...) and \
             replays the client's settings on each server connection",
        ),
        "server_check_delay" | "server_check_query" => (
            Ignored,
            "pgweir checks an idle server connection without a query: one that turns \
             readable while idle is dead or out of sync and is closed",
        ),
        "log_stats" => (Ignored, "the stats line is on; its period is stats_period"),
        "autodb_idle_timeout" => (Ignored, "pgweir creates no databases on the fly (no `*`)"),
        "suspend_timeout" => (
            Ignored,
            "pgweir has no online restart (-R/SUSPEND); SIGTERM drains instead",
        ),
        "disable_pqexec" => (
            Unsupported,
            "pgweir always accepts several statements in one simple query",
        ),
        "application_name_add_host" => (
            Unsupported,
            "pgweir does not rewrite application_name; SHOW CLIENTS shows the address",
        ),
        "server_round_robin" => (
            Unsupported,
            "pgweir reuses idle server connections in its own order",
        ),
        "server_fast_close" => (
            Unsupported,
            "RECONNECT closes a server connection when its transaction (or session) ends",
        ),
        "server_reset_query_always" => (
            Unsupported,
            "pgweir resets in session mode only; in transaction mode it replays each \
             client's settings instead",
        ),
        "max_db_client_connections" | "max_user_client_connections" => (
            Unsupported,
            "pgweir limits client connections in total only (max_client_conn); server \
             connections per database and per user (max_db_connections, max_user_connections)",
        ),
        "auth_hba_file" => (
            Ignored,
            "PgBouncer reads it only with auth_type = hba, which this file does not set",
        ),
        "auth_ident_file" => (
            Unsupported,
            "pgweir has no ident maps (no peer authentication: it listens on TCP only)",
        ),
        "client_tls_ecdhcurve" | "client_tls_dheparams" => (
            Ignored,
            "rustls chooses the key exchange itself (X25519, P-256, P-384; no finite-field DH)",
        ),
        k if k.starts_with("client_tls") || k.starts_with("server_tls") => (
            Unsupported,
            "no such TLS setting in pgweir (it has PgBouncer's sslmode, cert, key, ca, protocols and ciphers)",
        ),
        "peer_id" => (Unsupported, "pgweir has no peering for cancel requests"),
        "cancel_wait_timeout" | "query_wait_notify" => (
            Unsupported,
            "no such timer in pgweir; cancel requests are forwarded at once",
        ),
        _ => (
            Unsupported,
            "not a PgBouncer setting pgweir knows (1.18 to 1.23); check the spelling",
        ),
    };
    (kind, why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_tls_and_socket_settings() {
        assert_eq!(classify("client_tls_ecdhcurve", "auto").0, Ignored);
        assert_eq!(classify("server_tls_no_such", "1").0, Unsupported);
        assert_eq!(classify("unix_socket_group", "").0, Ignored);
        assert_eq!(classify("unix_socket_group", "postgres").0, Unsupported);
        assert!(classify("no_such_thing", "1").1.contains("spelling"));
    }
}
