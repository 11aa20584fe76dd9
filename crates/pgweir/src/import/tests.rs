//! The import on the examples of PgBouncer's own documentation (pgbouncer.ini(5),
//! "EXAMPLES" and the `[databases]` section), on units, and on `%include`.

use std::path::{Path, PathBuf};

use weir_config::{AuthType, Config, PoolMode};

use super::{import, Imported, NoteKind};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn run(dir: &Path, ini: &str) -> (Imported, toml::Value) {
    let path = write(dir, "pgbouncer.ini", ini);
    let imported = import(&path, None).expect("imports");
    let value = toml::from_str(&imported.toml)
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{}", imported.toml));
    (imported, value)
}

fn has_note(i: &Imported, kind: NoteKind, text: &str) -> bool {
    i.of_kind(kind).any(|n| n.message.contains(text))
}

/// pgbouncer.ini(5), EXAMPLES: "Small example configuration".
#[test]
fn documented_small_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "users.txt", "\"someuser\" \"pw\"\n");
    let ini = "[databases]\n\
               template1 = host=localhost dbname=template1 auth_user=someuser\n\
               \n\
               [pgbouncer]\n\
               pool_mode = session\n\
               listen_port = 6432\n\
               listen_addr = localhost\n\
               auth_type = md5\n\
               auth_file = users.txt\n\
               logfile = pgbouncer.log\n\
               pidfile = pgbouncer.pid\n\
               admin_users = someuser\n\
               stats_users = stat_collector\n";
    let (imported, v) = run(dir.path(), ini);
    let config = Config::from_toml_str(&imported.toml, "imported").expect("loads");
    assert_eq!(config.pool_mode, PoolMode::Session);
    assert_eq!(config.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(config.auth_type, AuthType::Md5);
    assert_eq!(config.admin_users, ["someuser"]);
    assert_eq!(config.stats_users, ["stat_collector"]);
    assert_eq!(config.max_client_conn, 100, "PgBouncer's default, stated");
    let db = &config.databases["template1"];
    assert_eq!(
        (db.host.as_str(), db.dbname.as_deref()),
        ("localhost", Some("template1"))
    );
    // auth_file is relative to PgBouncer's working directory: written absolute.
    let auth_file = v["auth_file"].as_str().expect("auth_file");
    assert!(Path::new(auth_file).is_absolute(), "{auth_file}");
    assert_eq!(db.auth_user.as_deref(), Some("someuser"));
    assert!(has_note(&imported, NoteKind::Ignored, "logfile"));
    assert!(has_note(&imported, NoteKind::Ignored, "pidfile"));
}

/// pgbouncer.ini(5), EXAMPLES: "Database examples", plus the fallback and host lists
/// from the `host` and `*` descriptions.
#[test]
fn documented_database_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = "[databases]\n\
               ; foodb over Unix socket\n\
               foodb =\n\
               ; redirect bardb to bazdb on localhost\n\
               bardb = host=localhost dbname=bazdb\n\
               ; access to destination database will go with single user\n\
               forcedb = host=localhost port=300 user=baz password=foo client_encoding=UNICODE datestyle=ISO\n\
               nondefaultdb = pool_size=50 reserve_pool=10 host=10.0.0.1 pool_mode=statement\n\
               list = host=192.168.0.1,192.168.0.2\n\
               \"odd name\" = host=h connect_query='SELECT ''x'''\n\
               * = host=testserver\n\
               [users]\n\
               user1 = pool_mode=session max_user_connections=3\n\
               [pgbouncer]\n\
               listen_addr = *\n";
    let (imported, _) = run(dir.path(), ini);
    let config = Config::from_toml_str(&imported.toml, "imported").expect("loads");
    let dbs = &config.databases;
    // No host: PgBouncer's own socket directory (its default, /tmp), kept a socket.
    assert_eq!(dbs["foodb"].host, "/tmp");
    assert!(!has_note(&imported, NoteKind::Changed, "database foodb"));
    assert_eq!(dbs["bardb"].dbname.as_deref(), Some("bazdb"));
    let forced = &dbs["forcedb"];
    assert_eq!(
        (
            forced.port,
            forced.user.as_deref(),
            forced.password.as_deref()
        ),
        (300, Some("baz"), Some("foo"))
    );
    assert!(has_note(
        &imported,
        NoteKind::Unsupported,
        "client_encoding=UNICODE"
    ));
    assert!(has_note(&imported, NoteKind::Unsupported, "datestyle=ISO"));
    let nd = &dbs["nondefaultdb"];
    assert_eq!(
        (nd.pool_size, nd.pool_mode),
        (Some(50), Some(PoolMode::Transaction))
    );
    assert_eq!(nd.reserve_pool_size, Some(10));
    assert!(has_note(
        &imported,
        NoteKind::Unsupported,
        "pool_mode=statement"
    ));
    assert_eq!(dbs["list"].host, "192.168.0.1");
    assert!(dbs.contains_key("odd name"));
    assert!(has_note(
        &imported,
        NoteKind::Unsupported,
        "connect_query=SELECT 'x'"
    ));
    assert!(has_note(
        &imported,
        NoteKind::Unsupported,
        "* = host=testserver"
    ));
    assert!(!dbs.contains_key("*"));
    assert_eq!(config.users["user1"].pool_mode, Some(PoolMode::Session));
    assert_eq!(config.users["user1"].max_user_connections, Some(3));
    assert_eq!(config.listen.to_string(), "0.0.0.0:6432");
}

/// Timeouts are PgBouncer seconds (fractions allowed); booleans are 0/1; `%include`
/// splices a file in; the last value of a setting wins.
#[test]
fn units_booleans_includes_and_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = write(
        dir.path(),
        "extra.ini",
        "query_wait_timeout = 1.5\nserver_lifetime = 7200\n",
    );
    let ini = format!(
        "[databases]\napp = host=db\n[pgbouncer]\nserver_lifetime = 60\n%include {}\n\
         client_idle_timeout = 0\nidle_transaction_timeout = 0.25\nlog_connections = 0\n\
         log_stats = 0\nmax_packet_size = 1000\nserver_reset_query =\nunknown_thing = 1\n",
        extra.display()
    );
    let (imported, v) = run(dir.path(), &ini);
    assert_eq!(v["query_wait_timeout"].as_str(), Some("1500ms"));
    assert_eq!(
        v["server_lifetime"].as_str(),
        Some("2h"),
        "the include's value wins"
    );
    assert_eq!(v["client_idle_timeout"].as_str(), Some("0"));
    assert_eq!(v["idle_transaction_timeout"].as_str(), Some("250ms"));
    assert_eq!(v["log_connections"].as_bool(), Some(false));
    assert_eq!(v["stats_period"].as_str(), Some("0"));
    assert_eq!(v["server_reset_query"].as_str(), Some(""));
    assert_eq!(v["max_message_size"].as_integer(), Some(1 << 20));
    assert!(has_note(
        &imported,
        NoteKind::Changed,
        "max_packet_size = 1000"
    ));
    assert!(has_note(&imported, NoteKind::Unsupported, "unknown_thing"));
    let config = Config::from_toml_str(&imported.toml, "imported").expect("loads");
    assert_eq!(config.server_lifetime.as_secs(), 7200);
}

/// PgBouncer's md5 switches to SCRAM for users with a SCRAM secret; pgweir's md5
/// cannot, so an auth file of SCRAM secrets imports as scram-sha-256.
#[test]
fn auth_type_follows_the_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5c3Q=:c2VydmVya2V5c2VydmVya2V5c2VydmVya2V5c2U=";
    let list = write(
        dir.path(),
        "userlist.txt",
        &format!("\"a\" \"{scram}\"\n\"b\" \"pw\"\n"),
    );
    let ini = write(
        dir.path(),
        "pgbouncer.ini",
        "[databases]\napp = host=db\n[pgbouncer]\nauth_type = md5\n",
    );
    let imported = import(&ini, Some(&list)).expect("imports");
    let config = Config::from_toml_str(&imported.toml, "imported").expect("loads");
    assert_eq!(config.auth_type, AuthType::ScramSha256);
    assert!(has_note(&imported, NoteKind::Changed, "SCRAM secrets"));
    // A userlist given on the command line must parse.
    let bad = write(dir.path(), "bad.txt", "not quoted\n");
    assert!(import(&ini, Some(&bad)).is_err());
}

/// PgBouncer's client_tls_*/server_tls_* keys carry over word for word.
#[test]
fn tls_settings_map_to_the_same_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = "[databases]\napp = host=db\n[pgbouncer]\nclient_tls_sslmode = require\n\
               client_tls_cert_file = /etc/pgbouncer/server.crt\n\
               client_tls_key_file = /etc/pgbouncer/server.key\nclient_tls_protocols = secure\n\
               client_tls_ciphers = default\nclient_tls_ecdhcurve = auto\n\
               server_tls_sslmode = verify-full\nserver_tls_ca_file = /etc/pgbouncer/ca.crt\n";
    let (imported, v) = run(dir.path(), ini);
    assert_eq!(v["client_tls_sslmode"].as_str(), Some("require"));
    assert_eq!(
        v["client_tls_cert_file"].as_str(),
        Some("/etc/pgbouncer/server.crt")
    );
    assert_eq!(v["server_tls_sslmode"].as_str(), Some("verify-full"));
    assert_eq!(
        v["server_tls_ca_file"].as_str(),
        Some("/etc/pgbouncer/ca.crt")
    );
    assert!(has_note(
        &imported,
        NoteKind::Ignored,
        "client_tls_ecdhcurve"
    ));
    let config = Config::from_toml_str(&imported.toml, "imported").expect("loads");
    assert_eq!(config.client_tls_sslmode, weir_config::SslMode::Require);
}

/// auth_type = hba with its file, auth_query's keys, the reserve pool and per-user limits.
#[test]
fn hba_auth_query_and_limits_carry_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "hba.conf", "host all all 0.0.0.0/0 md5\n");
    let ini = format!(
        "[databases]\napp = host=db reserve_pool=3 auth_user=lookup\n\
         [users]\nalice = max_user_connections=4\n\
         [pgbouncer]\nauth_type = hba\nauth_hba_file = {}\n\
         auth_user = pgbouncer\nauth_query = SELECT usename, passwd FROM f($1)\n\
         auth_dbname = app\nreserve_pool_size = 2\nreserve_pool_timeout = 1.5\n\
         max_user_connections = 9\n",
        dir.path().join("hba.conf").display()
    );
    let (imported, _) = run(dir.path(), &ini);
    let config = Config::from_toml_str(&imported.toml, "imported").expect("loads");
    assert_eq!(config.auth_type, AuthType::Hba);
    assert!(config
        .auth_hba_file
        .as_ref()
        .is_some_and(|p| p.is_absolute()));
    assert_eq!(
        config.auth_query_for("app"),
        Some(("lookup", "SELECT usename, passwd FROM f($1)", "app"))
    );
    assert_eq!(
        config.reserve_pool_for("app"),
        (3, std::time::Duration::from_millis(1500))
    );
    assert_eq!(config.max_user_connections_for("alice"), 4);
    assert_eq!(config.max_user_connections, 9);
    // A query without $1 cannot look anyone up: noted, not carried over.
    let (imported, _) = run(
        dir.path(),
        "[databases]\napp = host=db\n[pgbouncer]\nauth_user = x\nauth_query = SELECT 1\n",
    );
    assert!(has_note(&imported, NoteKind::Unsupported, "takes no $1"));
    Config::from_toml_str(&imported.toml, "imported").expect("still a valid config");
}

#[test]
fn unix_socket_hosts_stay_unix_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = "[databases]\n\
               local = dbname=app\n\
               explicit = host=/var/run/postgresql port=5433\n\
               abstract = host=@pg\n\
               [pgbouncer]\n\
               unix_socket_dir = /run/pgb\n";
    let (imported, _) = run(dir.path(), ini);
    let config = Config::from_toml_str(&imported.toml, "imported").expect("loads");
    let dbs = &config.databases;
    assert_eq!(dbs["local"].host, "/run/pgb");
    assert_eq!(
        (dbs["explicit"].host.as_str(), dbs["explicit"].port),
        ("/var/run/postgresql", 5433)
    );
    assert_eq!(dbs["abstract"].host, "127.0.0.1");
    assert!(has_note(
        &imported,
        NoteKind::Changed,
        "host=@pg is an abstract-namespace socket"
    ));
}
