//! Upstream URLs and command-line/environment overrides.

use std::io::Write as _;
use std::net::SocketAddr;

use weir_config::{Config, ConfigError, LogFormat, Overrides, PoolMode, Secret};

fn from_url(url: &str) -> Result<Config, ConfigError> {
    let mut c = Config::default();
    c.apply_upstream_url(url)?;
    Ok(c)
}

fn url_error(url: &str) -> String {
    match from_url(url) {
        Err(e @ ConfigError::Url { .. }) => e.to_string(),
        other => panic!("{url}: expected a URL error, got {other:?}"),
    }
}

#[test]
fn full_url() {
    let c = from_url("postgres://app:secret@db.internal:6543/appdb").expect("valid");
    let db = &c.databases["appdb"];
    assert_eq!((db.host.as_str(), db.port), ("db.internal", 6543));
    assert_eq!(db.server_dbname("appdb"), "appdb");
    assert_eq!(db.user, None);
    assert_eq!(
        c.users["app"].password,
        Some(Secret::Plain("secret".into()))
    );
    c.validate().expect("a URL alone makes a valid config");
}

#[test]
fn percent_encoded_password_and_names() {
    let c = from_url("postgresql://my%20user:p%40ss%3Aw%2Fo%25rd@h/my%2Ddb").expect("valid");
    assert_eq!(
        c.users["my user"].password,
        Some(Secret::Plain("p@ss:w/o%rd".into()))
    );
    assert!(c.databases.contains_key("my-db"));
    // An unencoded '@' in the password: the last '@' ends the user info, as in libpq.
    let c = from_url("postgres://u:a@b@host/db").expect("valid");
    assert_eq!(
        c.users["u"].password.as_ref().map(Secret::as_str),
        Some("a@b")
    );
    assert_eq!(c.databases["db"].host, "host");
}

#[test]
fn defaults_for_port_and_dbname() {
    let c = from_url("postgres://app:pw@localhost").expect("valid");
    assert_eq!(c.databases["app"].port, 5432);
    assert_eq!(c.databases["app"].host, "localhost");
    let c = from_url("postgres://app:pw@localhost:/").expect("valid");
    assert_eq!(c.databases["app"].port, 5432);
    let c = from_url("postgres://app@10.1.2.3:5433/").expect("valid");
    assert_eq!(c.databases["app"].port, 5433);
    assert_eq!(c.users["app"].password, None);
}

#[test]
fn query_parameters() {
    let c = from_url("postgres://app:pw@h/db?sslmode=require&application_name=x").expect("ignored");
    assert!(c.databases.contains_key("db"));
    let c = from_url("postgres://h?user=bob&password=s%26cret&dbname=d&port=7000").expect("valid");
    assert_eq!(c.databases["d"].port, 7000);
    assert_eq!(
        c.users["bob"].password.as_ref().map(Secret::as_str),
        Some("s&cret")
    );
    // A second host beside the URI's is not; a socket directory for an empty one is.
    assert!(url_error("postgres://u@h/db?host=/tmp").contains("`host` query parameter"));
    assert!(url_error("postgres://u@/db?host=h2").contains("`host` query parameter"));
    // Judged after decoding: an encoded name is still a TCP host, not a socket.
    assert!(url_error("postgres://u@/db?host=%41").contains("`host` query parameter"));
    let c = from_url("postgres://u@/db?host=%2Frun%2Fpg").expect("encoded socket dir");
    assert_eq!(c.databases["db"].host, "/run/pg");
    let c = from_url("postgres://u@/db?host=/var/run/postgresql&port=5433").expect("socket dir");
    assert_eq!(c.databases["db"].host, "/var/run/postgresql");
    assert_eq!(c.databases["db"].port, 5433);
    let c = from_url("postgres://u:pw@%2Ftmp:6000/db").expect("encoded socket dir");
    assert_eq!(
        (c.databases["db"].host.as_str(), c.databases["db"].port),
        ("/tmp", 6000)
    );
    assert!(url_error("postgres://u@h/db?port=x").contains("invalid port"));
}

#[test]
fn bad_urls() {
    assert!(url_error("mysql://u:p@h/db").contains("unsupported scheme `mysql`"));
    assert!(url_error("http://u@h/db").contains("unsupported scheme `http`"));
    assert!(url_error("u:p@h/db").contains("expected a URL like postgres://"));
    assert!(url_error("postgres://u@h1,h2/db").contains("host lists"));
    assert!(url_error("postgres://u@h1:5432,h2:5432/db").contains("host lists"));
    assert!(url_error("postgres://u@/db").contains("a host is required"));
    assert!(url_error("postgres://u@%40pg/db").contains("abstract-namespace"));
    assert!(url_error("postgres://u@/db?host=/a,/b").contains("host lists"));
    assert!(url_error("postgres://h/db").contains("user name is required"));
    assert!(url_error("postgres://u@h:99999/db").contains("invalid port"));
    assert!(url_error("postgres://u@h:0/db").contains("invalid port"));
    assert!(url_error("postgres://u@h:abc/db").contains("invalid port"));
    assert!(url_error("postgres://u:p%zz@h/db").contains("percent-encoding in the password"));
}

#[test]
fn url_errors_never_show_the_password() {
    for url in [
        "postgres://u:hunter2@h1,h2/db",
        "postgres://u:hunter2@h:99999/db",
        "postgres://u:hunter2@/db",
        "mysql://u:hunter2@h/db",
        "postgres://u:hunter2@h/db?host=x",
    ] {
        let msg = url_error(url);
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}

#[test]
fn url_replaces_database_of_same_name_and_keeps_user_settings() {
    let mut c = Config::from_toml_str(
        "[databases.app]\nhost = \"old\"\npool_size = 3\n[users.app]\npool_mode = \"session\"\n",
        "t",
    )
    .expect("valid");
    c.apply_upstream_url("postgres://app:pw@new/app")
        .expect("valid");
    assert_eq!(c.databases["app"].host, "new");
    assert_eq!(c.databases["app"].pool_size, None);
    assert_eq!(c.users["app"].pool_mode, Some(PoolMode::Session));
    assert_eq!(c.users["app"].password, Some(Secret::Plain("pw".into())));
}

#[test]
fn overrides_win_over_the_file() {
    let text = "listen = \"127.0.0.1:1111\"\npool_mode = \"session\"\ndefault_pool_size = 5\n\
                max_client_conn = 10\nlog_format = \"text\"\n\
                [databases.app]\nhost = \"h\"\npool_size = 4\npool_mode = \"session\"\n\
                [users.u]\npool_mode = \"session\"\n";
    let mut c = Config::from_toml_str(text, "proxy.toml").expect("valid");
    // No override: nothing changes.
    let before = c.clone();
    c.apply_overrides(&Overrides::default()).expect("valid");
    assert_eq!(c, before);

    let listen: SocketAddr = "0.0.0.0:7777".parse().unwrap();
    c.apply_overrides(&Overrides {
        listen: Some(listen),
        upstream: Some("postgres://svc:pw@up:5433/main".into()),
        pool_mode: Some(PoolMode::Transaction),
        pool_size: Some(9),
        max_client_conn: Some(500),
        log_format: Some(LogFormat::Json),
        ..Overrides::default()
    })
    .expect("valid");
    assert_eq!(c.listen, listen);
    assert_eq!(c.default_pool_size, 9);
    assert_eq!(
        c.pool_size_for("app"),
        9,
        "the command line beats per-database sizes too"
    );
    assert_eq!(c.pool_mode_for("app", "u"), PoolMode::Transaction);
    assert_eq!(c.max_client_conn, 500);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.databases["main"].port, 5433);
    assert!(c.databases.contains_key("app"), "file databases stay");
}

#[test]
fn bad_override_is_reported_as_such() {
    let mut c =
        Config::from_toml_str("[databases.app]\nhost = \"h\"\n", "proxy.toml").expect("valid");
    let err = c
        .apply_overrides(&Overrides {
            pool_size: Some(0),
            ..Overrides::default()
        })
        .expect_err("zero pool size");
    assert!(
        matches!(&err, ConfigError::Invalid { key, line: None, .. } if key == "default_pool_size"),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("command line/environment: key `default_pool_size`"),
        "{err}"
    );
    let err = Config::default()
        .apply_overrides(&Overrides {
            upstream: Some("postgres://u@a,b/db".into()),
            ..Overrides::default()
        })
        .expect_err("host list");
    assert!(matches!(err, ConfigError::Url { .. }));
}

#[test]
fn no_file_just_a_url() {
    let mut c = Config::default();
    c.apply_overrides(&Overrides {
        upstream: Some("postgres://app:secret@127.0.0.1/app".into()),
        ..Overrides::default()
    })
    .expect("a URL is a complete config");
    assert_eq!(c.pool_size_for("app"), 20);
}

#[test]
fn file_without_databases_plus_url_loads() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "default_pool_size = 4\nmin_pool_size = 2").unwrap();
    assert!(Config::load(file.path()).is_err(), "no database on its own");
    let overrides = Overrides {
        upstream: Some("postgres://app:pw@db/app".into()),
        ..Overrides::default()
    };
    let c = Config::load_with_overrides(file.path(), &overrides).expect("valid with the URL");
    assert_eq!(c.pool_size_for("app"), 4);
    assert_eq!(c.min_pool_size_for("app"), 2);
    // A file error still names the file's line even with overrides.
    let mut bad = tempfile::NamedTempFile::new().unwrap();
    writeln!(bad, "\nmin_pool_size = 30").unwrap();
    let err = Config::load_with_overrides(bad.path(), &overrides).expect_err("min > size");
    assert!(
        matches!(err, ConfigError::Invalid { line: Some(2), .. }),
        "{err}"
    );
}

#[test]
fn debug_output_hides_passwords() {
    let mut c = Config::from_toml_str(
        "[databases.app]\nhost = \"h\"\nuser = \"svc\"\npassword = \"db-hunter2\"\n",
        "t",
    )
    .expect("valid");
    c.apply_upstream_url("postgres://u:url-hunter2@h/other")
        .expect("valid");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("svc"), "{shown}");
    let o = Overrides {
        upstream: Some("postgres://u:url-hunter2@h/db".into()),
        ..Overrides::default()
    };
    let shown = format!("{o:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("<redacted>"),
        "{shown}"
    );
}
