//! The auth_query, reserve pool and per-user limit keys: parsed globally and per
//! database or user, effective values, and clear errors.

use std::time::Duration;

use weir_config::{Config, DEFAULT_AUTH_QUERY};

fn parse(text: &str) -> Result<Config, String> {
    Config::from_toml_str(text, "t.toml").map_err(|e| e.to_string())
}

#[test]
fn per_database_values_win_over_global_ones() {
    let c = parse(
        "auth_user = \"pgbouncer\"\nreserve_pool_size = 2\nreserve_pool_timeout = \"3s\"\n\
         max_user_connections = 10\nmax_connection_rate = 50\nauth_query_cache_ttl = \"0\"\n\
         [databases.app]\nhost = \"db\"\n\
         [databases.other]\nhost = \"db\"\nauth_user = \"lookup\"\nauth_dbname = \"app\"\n\
         auth_query = \"SELECT u, p FROM f($1)\"\nreserve_pool_size = 5\nreserve_pool_timeout = 1\n\
         [users.alice]\nmax_user_connections = 3\n",
    )
    .expect("valid");
    assert_eq!(
        c.auth_query_for("app"),
        Some(("pgbouncer", DEFAULT_AUTH_QUERY, "app"))
    );
    assert_eq!(
        c.auth_query_for("other"),
        Some(("lookup", "SELECT u, p FROM f($1)", "app"))
    );
    assert_eq!(c.reserve_pool_for("app"), (2, Duration::from_secs(3)));
    assert_eq!(c.reserve_pool_for("other"), (5, Duration::from_secs(1)));
    assert_eq!(c.max_user_connections_for("alice"), 3);
    assert_eq!(c.max_user_connections_for("bob"), 10);
    assert_eq!(c.max_connection_rate, 50);
    assert!(c.auth_query_cache_ttl.is_zero());
    let none = parse("[databases.app]\nhost = \"db\"\n").unwrap();
    assert_eq!(none.auth_query_for("app"), None);
}

#[test]
fn bad_auth_query_settings_name_key_and_line() {
    let e = parse("auth_query = \"SELECT 1\"\n[databases.app]\nhost = \"db\"\n").unwrap_err();
    assert!(
        e.starts_with("t.toml:1: key `auth_query`: must take the user name as the parameter $1"),
        "{e}"
    );
    let e = parse("[databases.app]\nhost = \"db\"\nauth_dbname = \"nope\"\n").unwrap_err();
    assert!(
        e.contains("key `databases.app.auth_dbname`: names no database"),
        "{e}"
    );
    let e = parse("auth_user = \"\"\n[databases.app]\nhost = \"db\"\n").unwrap_err();
    assert!(e.contains("key `auth_user`: must not be empty"), "{e}");
    let e = parse("reserve_pool_timeout = \"400d\"\n[databases.app]\nhost = \"db\"\n").unwrap_err();
    assert!(e.contains("key `reserve_pool_timeout`"), "{e}");
}
