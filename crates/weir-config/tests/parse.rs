//! Parsing `proxy.toml`: defaults, durations, and errors that name the line and key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use weir_config::{AuthType, Config, ConfigError, LogFormat, PoolMode, Secret};

const MINIMAL: &str = "[databases.app]\nhost = \"127.0.0.1\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "proxy.toml")
}

/// The error's line and its full message, for asserting both.
fn err_line(text: &str) -> (usize, String) {
    let err = parse(text).expect_err("should be rejected");
    let line = match &err {
        ConfigError::Parse { line, .. } => *line,
        ConfigError::Invalid { line, .. } => line.expect("a line"),
        other => panic!("unexpected error {other:?}"),
    };
    (line, err.to_string())
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.listen, "127.0.0.1:6432".parse::<SocketAddr>().unwrap());
    assert_eq!(c.pool_mode, PoolMode::Transaction);
    assert_eq!(c.default_pool_size, 20);
    assert_eq!(c.min_pool_size, 0);
    assert_eq!(c.max_client_conn, 10_000);
    assert_eq!(c.max_db_connections, 0);
    assert_eq!(c.auth_type, AuthType::ScramSha256);
    assert_eq!(c.auth_file, None);
    assert_eq!(c.server_reset_query, "DISCARD ALL");
    assert_eq!(c.max_message_size, 1 << 30);
    assert_eq!(c.server_connect_timeout, Duration::from_secs(15));
    assert_eq!(c.server_login_retry, Duration::from_secs(15));
    assert_eq!(c.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(c.client_login_timeout, Duration::from_secs(60));
    assert_eq!(c.client_idle_timeout, Duration::ZERO);
    assert_eq!(c.idle_transaction_timeout, Duration::ZERO);
    assert_eq!(c.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(c.server_lifetime, Duration::from_secs(3600));
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(c.databases.is_empty() && c.users.is_empty());
    // No database: the default alone is not a runnable config.
    assert!(c.validate().is_err());
}

#[test]
fn minimal_file_takes_defaults() {
    let c = parse(MINIMAL).expect("valid");
    let db = &c.databases["app"];
    assert_eq!((db.host.as_str(), db.port), ("127.0.0.1", 5432));
    assert_eq!(db.server_dbname("app"), "app");
    let expected = Config {
        databases: c.databases.clone(),
        ..Config::default()
    };
    assert_eq!(c, expected);
}

#[test]
fn example_proxy_toml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml");
    let c = Config::load(&path).expect("example loads");
    let db = &c.databases["app"];
    assert_eq!((db.host.as_str(), db.port), ("127.0.0.1", 5432));
    assert_eq!(db.server_dbname("app"), "app");
    assert_eq!(
        c.users["app"].password,
        Some(Secret::Plain("secret".into()))
    );
    // Every value in the example is the default.
    let expected = Config {
        databases: c.databases.clone(),
        users: c.users.clone(),
        ..Config::default()
    };
    assert_eq!(c, expected);
}

#[test]
fn full_database_and_user_entries() {
    let text = r#"
        pool_mode = "session"
        [databases.app]
        host = "db.internal"
        port = 6543
        dbname = "app_prod"
        user = "svc"
        password = "pw"
        pool_size = 7
        min_pool_size = 2
        pool_mode = "transaction"
        [databases.other]
        host = "10.0.0.1"
        [users.alice]
        password = "md545f2603610af569b6155c45067268c6b"
        pool_mode = "session"
        [users.bob]
    "#;
    let c = Config::from_toml_str(&text.replace("scram", "md5"), "t").map(|_| ());
    assert!(
        c.is_err(),
        "md5 secret with the default scram auth_type is rejected"
    );
    let c = parse(&format!("auth_type = \"md5\"\n{text}")).expect("valid");
    let app = &c.databases["app"];
    assert_eq!(app.server_dbname("app"), "app_prod");
    assert_eq!(app.user.as_deref(), Some("svc"));
    assert_eq!(c.pool_size_for("app"), 7);
    assert_eq!(c.pool_size_for("other"), 20);
    assert_eq!(c.min_pool_size_for("app"), 2);
    assert_eq!(c.min_pool_size_for("other"), 0);
    // user > database > global
    assert_eq!(c.pool_mode_for("app", "alice"), PoolMode::Session);
    assert_eq!(c.pool_mode_for("app", "bob"), PoolMode::Transaction);
    assert_eq!(c.pool_mode_for("other", "bob"), PoolMode::Session);
    assert!(matches!(c.users["alice"].password, Some(Secret::Md5(_))));
    assert_eq!(c.users["bob"].password, None);
}

#[test]
fn every_duration_form() {
    let cases: [(&str, Duration); 9] = [
        ("30", Duration::from_secs(30)),
        ("1.5", Duration::from_millis(1500)),
        ("\"30s\"", Duration::from_secs(30)),
        ("\"5m\"", Duration::from_secs(300)),
        ("\"1h\"", Duration::from_secs(3600)),
        ("\"250ms\"", Duration::from_millis(250)),
        ("\"0\"", Duration::ZERO),
        ("0", Duration::ZERO),
        ("\"1h30m\"", Duration::from_secs(5400)),
    ];
    for (value, want) in cases {
        let c = parse(&format!("query_wait_timeout = {value}\n{MINIMAL}")).expect(value);
        assert_eq!(c.query_wait_timeout, want, "{value}");
    }
}

#[test]
fn bad_durations_name_key_and_line() {
    for value in [
        "\"5x\"",
        "-1",
        "\"\"",
        "\"1m30\"",
        "true",
        "\"400d\"",
        "-0.5",
        "\"5 sec\"",
    ] {
        let (line, msg) = err_line(&format!("{MINIMAL}\n[users.u]\n").replace(
            "[databases.app]",
            &format!("\nserver_lifetime = {value}\n[databases.app]"),
        ));
        assert_eq!(line, 2, "{value}: {msg}");
        assert!(
            msg.starts_with("proxy.toml:2: key `server_lifetime`: "),
            "{msg}"
        );
    }
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = "listen = \"127.0.0.1:6432\"\npool_sise = 5\n[databases.app]\nhost = \"h\"\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 2);
    assert!(
        msg.starts_with("proxy.toml:2: unknown field `pool_sise`"),
        "{msg}"
    );

    let text = "[databases.app]\nhost = \"h\"\n\nhots = \"x\"\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 4);
    assert!(msg.contains("unknown field `hots`"), "{msg}");

    let text = "[databases.app]\nhost = \"h\"\n[users.app]\npasword = \"x\"\n";
    assert_eq!(err_line(text).0, 4);

    let text = "[databases.app]\nhost = \"h\"\n[sever]\nx = 1\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 3);
    assert!(msg.contains("unknown field `sever`"), "{msg}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let text = "[databases.app]\nhost = \"h\"\nport = \"x\"\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 3);
    assert!(
        msg.starts_with("proxy.toml:3: key `databases.app.port`: "),
        "{msg}"
    );

    let text = "\n\ndefault_pool_size = \"many\"\n[databases.app]\nhost = \"h\"\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 3);
    assert!(msg.contains("key `default_pool_size`"), "{msg}");

    let text = "pool_mode = \"statement\"\n[databases.app]\nhost = \"h\"\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 1);
    assert!(
        msg.contains("unknown pool_mode `statement`; expected one of: session, transaction"),
        "{msg}"
    );

    let text = "listen = \"localhost:6432\"\n[databases.app]\nhost = \"h\"\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 1);
    assert!(
        msg.contains("expected \\\"IP:PORT\\\"") || msg.contains("IP:PORT"),
        "{msg}"
    );

    let text = "default_pool_size = -3\n[databases.app]\nhost = \"h\"\n";
    assert_eq!(err_line(text).0, 1);

    let text = "[databases]\napp = { host = \"h\", pool_size = \"big\" }\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 2);
    assert!(msg.contains("key `databases.app.pool_size`"), "{msg}");
}

#[test]
fn missing_host_names_database() {
    let text = "max_client_conn = 5\n\n[databases.app]\nport = 5432\n";
    let (line, msg) = err_line(text);
    assert_eq!(line, 3, "{msg}");
    assert!(
        msg.starts_with("proxy.toml:3: key `databases.app`: missing field `host`"),
        "{msg}"
    );
}

#[test]
fn syntax_error_has_line() {
    let (line, msg) = err_line("listen = \"127.0.0.1:6432\"\npool_mode = \n");
    assert_eq!(line, 2, "{msg}");
    assert!(msg.starts_with("proxy.toml:2: "), "{msg}");
}

#[test]
fn validation_errors_name_key_and_line() {
    let cases: [(&str, usize, &str); 12] = [
        ("\nauth_file = \"\"\n[databases.app]\nhost = \"h\"\n", 2, "auth_file"),
        ("default_pool_size = 0\n[databases.app]\nhost = \"h\"\n", 1, "default_pool_size"),
        ("max_client_conn = 0\n[databases.app]\nhost = \"h\"\n", 1, "max_client_conn"),
        ("min_pool_size = 30\n[databases.app]\nhost = \"h\"\n", 1, "min_pool_size"),
        ("max_message_size = 1000\n[databases.app]\nhost = \"h\"\n", 1, "max_message_size"),
        ("server_connect_timeout = 0\n[databases.app]\nhost = \"h\"\n", 1, "server_connect_timeout"),
        ("[databases.app]\nhost = \"h\"\npool_size = 0\n", 3, "databases.app.pool_size"),
        ("[databases.app]\nhost = \"h\"\npool_size = 2\nmin_pool_size = 3\n", 4, "databases.app.min_pool_size"),
        ("[databases.app]\nhost = \"a,b\"\n", 2, "databases.app.host"),
        ("[databases.app]\nhost = \"h\"\nport = 0\n", 3, "databases.app.port"),
        ("[databases.app]\nhost = \"h\"\npassword = \"p\"\n", 3, "databases.app.password"),
        (
            "[databases.app]\nhost = \"h\"\n[users.u]\npassword = \"md545f2603610af569b6155c45067268c6b\"\n",
            4,
            "users.u.password",
        ),
    ];
    for (text, want_line, key) in cases {
        let err = parse(text).expect_err(text);
        match &err {
            ConfigError::Invalid {
                origin,
                line,
                key: k,
                ..
            } => {
                assert_eq!(origin, "proxy.toml");
                assert_eq!(*line, Some(want_line), "{err}");
                assert_eq!(k, key, "{err}");
            }
            other => panic!("{text}: expected Invalid, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("proxy.toml:{want_line}: key `{key}`: ")),
            "{err}"
        );
    }
}

#[test]
fn no_database_is_an_error() {
    let err = parse("listen = \"127.0.0.1:1\"\n").expect_err("no databases");
    assert!(
        matches!(&err, ConfigError::Invalid { key, line: None, .. } if key == "databases"),
        "{err}"
    );
    assert!(err.to_string().contains("at least one database"), "{err}");
}

#[test]
fn pool_size_inherited_min_too_big_points_at_pool_size() {
    let text = "min_pool_size = 5\n[databases.app]\nhost = \"h\"\npool_size = 3\n";
    let err = parse(text).expect_err("min > size");
    assert!(
        err.to_string()
            .starts_with("proxy.toml:4: key `databases.app.pool_size`"),
        "{err}"
    );
}

#[test]
fn sizes_and_addresses() {
    let c = parse(&format!(
        "max_message_size = \"64MiB\"\nlisten = \"[::1]:7000\"\n{MINIMAL}"
    ))
    .expect("valid");
    assert_eq!(c.max_message_size, 64 << 20);
    assert_eq!(c.listen, "[::1]:7000".parse::<SocketAddr>().unwrap());
    let c = parse(&format!("max_message_size = 2097152\n{MINIMAL}")).expect("valid");
    assert_eq!(c.max_message_size, 2 << 20);
}

#[test]
fn odd_database_names_are_quoted_in_errors() {
    let err = parse("[databases.\"my.db\"]\nhost = \"h\"\nport = 0\n").expect_err("port 0");
    assert!(
        err.to_string()
            .starts_with("proxy.toml:3: key `databases.\"my.db\".port`"),
        "{err}"
    );
}
