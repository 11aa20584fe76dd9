//! Tests of the temporary cluster: they start real PostgreSQL servers (15+ must be installed).

use super::os::{major_version, passwd_ids, process_alive};
use super::setup::{literal, pct, validate};
use super::*;

/// Logs in over TCP with psql as `user`, returning `SELECT current_user` or psql's stderr.
fn tcp_login(
    c: &TempCluster,
    user: &str,
    password: Option<&str>,
    db: &str,
) -> Result<String, String> {
    let mut cmd = c.psql_command();
    cmd.args([
        "-X",
        "-w",
        "-At",
        "-c",
        "SELECT current_user",
        "-h",
        c.host(),
        "-p",
    ]);
    cmd.arg(c.port().to_string()).args(["-U", user, "-d", db]);
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let out = run_bounded(&mut cmd, None, Duration::from_secs(30)).map_err(|e| e.to_string())?;
    if out.output.status.success() {
        Ok(String::from_utf8_lossy(&out.output.stdout)
            .trim()
            .to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.output.stderr).into_owned())
    }
}

fn options() -> ClusterOptions {
    ClusterOptions {
        max_connections: 50,
        users: vec![
            ClusterUser::new("app_scram", "pw scram'\"", AuthMethod::Scram),
            ClusterUser::new("app_md5", "pw_md5", AuthMethod::Md5),
            ClusterUser::new("app_trust", "unused", AuthMethod::Trust),
        ],
        databases: vec![("app".into(), "app_scram".into())],
        port: None,
    }
}

#[test]
fn cluster_logins_and_drop_cleans_up() {
    let c = TempCluster::start(options()).expect("start cluster");
    assert_eq!(c.psql("app", "SELECT 1; SELECT 2").expect("psql"), "1\n2");
    let owner = c.psql(
        "postgres",
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'",
    );
    assert_eq!(owner.expect("owner"), "app_scram");
    let secret = |u: &str| {
        c.psql(
            "postgres",
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{u}'"),
        )
    };
    assert!(secret("app_scram")
        .expect("scram secret")
        .starts_with("SCRAM-SHA-256$"));
    assert!(secret("app_md5").expect("md5 secret").starts_with("md5"));
    assert_eq!(
        c.psql("postgres", "SHOW max_connections").expect("show"),
        "50"
    );

    assert_eq!(
        tcp_login(&c, "app_scram", Some("pw scram'\""), "app"),
        Ok("app_scram".into())
    );
    assert_eq!(
        tcp_login(&c, "app_md5", Some("pw_md5"), "app"),
        Ok("app_md5".into())
    );
    assert_eq!(
        tcp_login(&c, "app_trust", None, "app"),
        Ok("app_trust".into())
    );
    assert_eq!(tcp_login(&c, SUPERUSER, None, "app"), Ok(SUPERUSER.into()));
    let wrong =
        tcp_login(&c, "app_scram", Some("nope"), "app").expect_err("wrong password accepted");
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    let wrong =
        tcp_login(&c, "app_md5", Some("nope"), "app").expect_err("wrong md5 password accepted");
    assert!(wrong.contains("password authentication failed"), "{wrong}");

    let err = c
        .psql("app", "SELECT * FROM no_such_table")
        .expect_err("bad SQL succeeded");
    assert!(err.to_string().contains("no_such_table"), "{err}");

    let dir = c.socket_dir().to_path_buf();
    let pid = c.postmaster_pid().expect("postmaster pid");
    assert!(process_alive(pid));
    drop(c);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!process_alive(pid), "postmaster {pid} still running");
}

#[test]
fn cluster_stop_and_restart() {
    let opts = ClusterOptions {
        max_connections: 20,
        ..ClusterOptions::default()
    };
    let mut c = TempCluster::start(opts).expect("start cluster");
    c.psql(
        "postgres",
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)",
    )
    .expect("create");
    let port = c.port();
    let first = c.postmaster_pid().expect("pid");
    // restart stops with -m fast (a checkpoint), so committed rows survive.
    c.restart().expect("restart while running");
    assert_eq!(c.port(), port);
    assert!(!process_alive(first));
    assert_eq!(
        c.psql("postgres", "SELECT x FROM kept").expect("select"),
        "7"
    );

    let second = c.postmaster_pid().expect("pid");
    c.stop().expect("stop");
    assert_eq!(c.postmaster_pid(), None);
    assert!(!process_alive(second));
    assert!(c.psql("postgres", "SELECT 1").is_err());
    c.stop().expect("second stop is a no-op");
    // After the crash-like stop the server recovers and serves again.
    c.restart().expect("start again");
    assert_eq!(c.port(), port);
    assert_eq!(c.psql("postgres", "SELECT 1").expect("select"), "1");
}

#[test]
fn cluster_watchdog_cleans_up_after_the_watched_process() {
    let c = TempCluster::start(ClusterOptions {
        max_connections: 20,
        ..Default::default()
    })
    .expect("start cluster");
    let pid = c.postmaster_pid().expect("pid");
    let dir = c.socket_dir().to_path_buf();
    // Stand-in for "this process": a child that exits at once and is reaped.
    let mut stand_in = Command::new("true").spawn().expect("spawn true");
    c.spawn_watchdog(stand_in.id()).expect("watchdog");
    stand_in.wait().expect("reap");
    let deadline = Instant::now() + Duration::from_secs(20);
    while (dir.exists() || process_alive(pid)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(!process_alive(pid), "postmaster {pid} still running");
    assert!(!dir.exists(), "{} still exists", dir.display());
    drop(c); // nothing left to stop or remove; must not panic
}

#[test]
fn cluster_options_are_validated() {
    let quote = ClusterOptions {
        users: vec![ClusterUser::new("a\"b", "x", AuthMethod::Scram)],
        ..Default::default()
    };
    assert!(matches!(
        validate(&quote),
        Err(ClusterError::InvalidOptions(_))
    ));
    let orphan = ClusterOptions {
        databases: vec![("d".into(), "nobody".into())],
        ..Default::default()
    };
    assert!(matches!(
        validate(&orphan),
        Err(ClusterError::InvalidOptions(_))
    ));
    assert!(validate(&options()).is_ok());
}

#[test]
fn cluster_helpers_parse() {
    assert_eq!(
        major_version("pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
        Some(15)
    );
    assert_eq!(major_version("pg_ctl (PostgreSQL) 18beta1\n"), Some(18));
    assert_eq!(major_version("garbage"), None);
    let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL,,,:/var/lib/postgresql:/bin/bash\n";
    assert_eq!(passwd_ids(passwd, "postgres"), Some((101, 104)));
    assert_eq!(passwd_ids(passwd, "nobody"), None);
    assert_eq!(pct("a b@c/d"), "a%20b%40c%2Fd");
    assert_eq!(literal("it's"), "'it''s'");
    assert!(is_port_clash(
        "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
    ));
}

#[test]
fn cluster_run_bounded_kills_on_timeout() {
    let out = run_bounded(
        Command::new("sleep").arg("30"),
        None,
        Duration::from_millis(200),
    )
    .expect("spawn");
    assert!(out.timed_out);
    assert!(!out.output.status.success());
    let out = run_bounded(
        &mut Command::new("cat"),
        Some(b"echo"),
        Duration::from_secs(10),
    )
    .expect("spawn");
    assert_eq!(out.output.stdout, b"echo");
}
