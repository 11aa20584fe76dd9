//! `SHOW CONFIG` rows: every scalar setting with its value, its default and whether
//! `SET`/`RELOAD` can change it at runtime. Durations are shown in seconds, as
//! PgBouncer shows its own (so scripts comparing numbers keep working).

use std::time::Duration;

use weir_admin::backend::ConfigRow;
use weir_config::{Config, ScalingConfig};
use weir_proxy::SETTABLE;

/// The rows for `config`, sorted by key.
pub fn config_rows(c: &Config) -> Vec<ConfigRow> {
    let d = Config::default();
    let secs = |v: Duration| {
        if v.subsec_nanos() == 0 {
            v.as_secs().to_string()
        } else {
            format!("{}", v.as_secs_f64())
        }
    };
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let list = |v: &[String]| v.join(",");
    let rows: Vec<(&str, String, String)> = vec![
        ("listen", c.listen.to_string(), d.listen.to_string()),
        (
            "pool_mode",
            c.pool_mode.to_string(),
            d.pool_mode.to_string(),
        ),
        (
            "default_pool_size",
            c.default_pool_size.to_string(),
            d.default_pool_size.to_string(),
        ),
        (
            "min_pool_size",
            c.min_pool_size.to_string(),
            d.min_pool_size.to_string(),
        ),
        (
            "max_pinned",
            c.max_pinned.map(|n| n.to_string()).unwrap_or_default(),
            String::new(),
        ),
        (
            "max_pool_size",
            c.max_pool_size.to_string(),
            d.max_pool_size.to_string(),
        ),
        ("autoscale", flag(c.autoscale), flag(d.autoscale)),
        ("mode", c.mode.to_string(), d.mode.to_string()),
        (
            "default_priority",
            c.default_priority.to_string(),
            d.default_priority.to_string(),
        ),
        (
            "priority_aging",
            secs(c.priority_aging),
            secs(d.priority_aging),
        ),
        (
            "max_queue",
            c.max_queue.to_string(),
            d.max_queue.to_string(),
        ),
        (
            "reserve_critical",
            c.reserve_critical.to_string(),
            d.reserve_critical.to_string(),
        ),
        ("dedup", flag(c.dedup), flag(d.dedup)),
        (
            "dedup_max_bytes",
            c.dedup_max_bytes.to_string(),
            d.dedup_max_bytes.to_string(),
        ),
        (
            "dedup_functions",
            c.dedup_functions.join(","),
            d.dedup_functions.join(","),
        ),
        (
            "max_client_conn",
            c.max_client_conn.to_string(),
            d.max_client_conn.to_string(),
        ),
        (
            "max_db_connections",
            c.max_db_connections.to_string(),
            d.max_db_connections.to_string(),
        ),
        (
            "auth_type",
            c.auth_type.to_string(),
            d.auth_type.to_string(),
        ),
        ("auth_file", path(&c.auth_file), String::new()),
        ("auth_hba_file", path(&c.auth_hba_file), String::new()),
        (
            "auth_user",
            c.auth_user.clone().unwrap_or_default(),
            String::new(),
        ),
        ("auth_query", c.auth_query.clone(), d.auth_query.clone()),
        (
            "auth_dbname",
            c.auth_dbname.clone().unwrap_or_default(),
            String::new(),
        ),
        (
            "auth_query_cache_ttl",
            secs(c.auth_query_cache_ttl),
            secs(d.auth_query_cache_ttl),
        ),
        (
            "max_user_connections",
            c.max_user_connections.to_string(),
            d.max_user_connections.to_string(),
        ),
        (
            "reserve_pool_size",
            c.reserve_pool_size.to_string(),
            d.reserve_pool_size.to_string(),
        ),
        (
            "reserve_pool_timeout",
            secs(c.reserve_pool_timeout),
            secs(d.reserve_pool_timeout),
        ),
        (
            "max_connection_rate",
            c.max_connection_rate.to_string(),
            d.max_connection_rate.to_string(),
        ),
        (
            "server_reset_query",
            c.server_reset_query.clone(),
            d.server_reset_query.clone(),
        ),
        (
            "max_message_size",
            c.max_message_size.to_string(),
            d.max_message_size.to_string(),
        ),
        (
            "server_connect_timeout",
            secs(c.server_connect_timeout),
            secs(d.server_connect_timeout),
        ),
        (
            "breaker_failures",
            c.breaker_failures.to_string(),
            d.breaker_failures.to_string(),
        ),
        (
            "breaker_error_ratio",
            c.breaker_error_ratio.to_string(),
            d.breaker_error_ratio.to_string(),
        ),
        (
            "breaker_probe_max",
            secs(c.breaker_probe_max),
            secs(d.breaker_probe_max),
        ),
        (
            "server_login_retry",
            secs(c.server_login_retry),
            secs(d.server_login_retry),
        ),
        (
            "query_wait_timeout",
            secs(c.query_wait_timeout),
            secs(d.query_wait_timeout),
        ),
        (
            "client_login_timeout",
            secs(c.client_login_timeout),
            secs(d.client_login_timeout),
        ),
        (
            "client_idle_timeout",
            secs(c.client_idle_timeout),
            secs(d.client_idle_timeout),
        ),
        (
            "idle_transaction_timeout",
            secs(c.idle_transaction_timeout),
            secs(d.idle_transaction_timeout),
        ),
        (
            "server_idle_timeout",
            secs(c.server_idle_timeout),
            secs(d.server_idle_timeout),
        ),
        (
            "server_lifetime",
            secs(c.server_lifetime),
            secs(d.server_lifetime),
        ),
        (
            "query_timeout",
            secs(c.query_timeout),
            secs(d.query_timeout),
        ),
        (
            "shutdown_timeout",
            secs(c.shutdown_timeout),
            secs(d.shutdown_timeout),
        ),
        (
            "max_prepared_statements",
            c.max_prepared_statements.to_string(),
            d.max_prepared_statements.to_string(),
        ),
        (
            "cache_unnamed_statements",
            flag(c.cache_unnamed_statements),
            flag(d.cache_unnamed_statements),
        ),
        (
            "track_extra_parameters",
            list(&c.track_extra_parameters),
            list(&d.track_extra_parameters),
        ),
        (
            "session_features",
            c.session_features.to_string(),
            d.session_features.to_string(),
        ),
        ("admin_users", list(&c.admin_users), list(&d.admin_users)),
        ("stats_users", list(&c.stats_users), list(&d.stats_users)),
        ("http_listen", addr(c.http_listen), addr(d.http_listen)),
        (
            "unix_socket_dir",
            path(&c.unix_socket_dir),
            path(&d.unix_socket_dir),
        ),
        (
            "unix_socket_mode",
            format!("{:04o}", c.unix_socket_mode),
            format!("{:04o}", d.unix_socket_mode),
        ),
        ("stats_period", secs(c.stats_period), secs(d.stats_period)),
        (
            "log_connections",
            flag(c.log_connections),
            flag(d.log_connections),
        ),
        (
            "log_disconnections",
            flag(c.log_disconnections),
            flag(d.log_disconnections),
        ),
        (
            "log_pooler_errors",
            flag(c.log_pooler_errors),
            flag(d.log_pooler_errors),
        ),
        (
            "log_format",
            c.log_format.to_string(),
            d.log_format.to_string(),
        ),
        (
            "client_tls_sslmode",
            c.client_tls_sslmode.to_string(),
            d.client_tls_sslmode.to_string(),
        ),
        (
            "client_tls_cert_file",
            path(&c.client_tls_cert_file),
            path(&d.client_tls_cert_file),
        ),
        (
            "client_tls_key_file",
            path(&c.client_tls_key_file),
            path(&d.client_tls_key_file),
        ),
        (
            "client_tls_ca_file",
            path(&c.client_tls_ca_file),
            path(&d.client_tls_ca_file),
        ),
        (
            "client_tls_protocols",
            c.client_tls_protocols.clone(),
            d.client_tls_protocols.clone(),
        ),
        (
            "client_tls_ciphers",
            c.client_tls_ciphers.clone(),
            d.client_tls_ciphers.clone(),
        ),
        (
            "server_tls_sslmode",
            c.server_tls_sslmode.to_string(),
            d.server_tls_sslmode.to_string(),
        ),
        (
            "server_tls_ca_file",
            path(&c.server_tls_ca_file),
            path(&d.server_tls_ca_file),
        ),
        (
            "server_tls_cert_file",
            path(&c.server_tls_cert_file),
            path(&d.server_tls_cert_file),
        ),
        (
            "server_tls_key_file",
            path(&c.server_tls_key_file),
            path(&d.server_tls_key_file),
        ),
        (
            "server_tls_protocols",
            c.server_tls_protocols.clone(),
            d.server_tls_protocols.clone(),
        ),
        (
            "server_tls_ciphers",
            c.server_tls_ciphers.clone(),
            d.server_tls_ciphers.clone(),
        ),
    ];
    let scaling = scaling_rows(&c.scaling, &d.scaling);
    let mut rows: Vec<ConfigRow> = rows
        .into_iter()
        .chain(
            scaling
                .iter()
                .map(|(k, v, d)| (k.as_str(), v.clone(), d.clone())),
        )
        .map(|(key, value, default)| ConfigRow {
            changeable: SETTABLE.contains(&key),
            key: key.to_owned(),
            value,
            default,
        })
        .collect();
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// A file setting as shown: empty when unset.
fn path(p: &Option<std::path::PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The `[scaling]` table's rows, named `scaling.KEY` (RELOAD changes them).
fn scaling_rows(c: &ScalingConfig, d: &ScalingConfig) -> Vec<(String, String, String)> {
    let secs = |v: Duration| format!("{}", v.as_secs_f64());
    let text = |t: &Option<String>| t.clone().unwrap_or_default();
    [
        ("tick", secs(c.tick), secs(d.tick)),
        (
            "scale_step",
            c.scale_step.to_string(),
            d.scale_step.to_string(),
        ),
        (
            "scale_up_threshold",
            c.scale_up_threshold.to_string(),
            d.scale_up_threshold.to_string(),
        ),
        (
            "critical_threshold",
            c.critical_threshold.to_string(),
            d.critical_threshold.to_string(),
        ),
        (
            "scale_down_threshold",
            c.scale_down_threshold.to_string(),
            d.scale_down_threshold.to_string(),
        ),
        (
            "scale_down_after",
            secs(c.scale_down_after),
            secs(d.scale_down_after),
        ),
        ("target_wait", secs(c.target_wait), secs(d.target_wait)),
        (
            "scale_up_cooldown",
            secs(c.scale_up_cooldown),
            secs(d.scale_up_cooldown),
        ),
        (
            "prescale_lead",
            secs(c.prescale_lead),
            secs(d.prescale_lead),
        ),
        (
            "reserve_connections",
            c.reserve_connections.to_string(),
            d.reserve_connections.to_string(),
        ),
        (
            "cluster_check_interval",
            secs(c.cluster_check_interval),
            secs(d.cluster_check_interval),
        ),
        ("state_dir", path(&c.state_dir), path(&d.state_dir)),
        (
            "alert_webhook",
            text(&c.alert_webhook),
            text(&d.alert_webhook),
        ),
        (
            "alert_interval",
            secs(c.alert_interval),
            secs(d.alert_interval),
        ),
    ]
    .into_iter()
    .map(|(k, v, d)| (format!("scaling.{k}"), v, d))
    .collect()
}

/// PgBouncer prints booleans as 0/1.
fn flag(b: bool) -> String {
    u8::from(b).to_string()
}
