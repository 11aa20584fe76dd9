//! `pgweir import` against real PgBouncer configurations:
//!
//! - Debian's shipped `/etc/pgbouncer/pgbouncer.ini` imports, every setting in it is
//!   mapped or named, and the result loads;
//! - every setting PgBouncer 1.18's own manual (pgbouncer.ini(5), as installed)
//!   documents is mapped or named with a reason, none as unknown;
//! - end to end: a real PgBouncer (`/usr/sbin/pgbouncer`, as `postgres` when root)
//!   serves a throwaway PostgreSQL from an ini with `%include`, a userlist with plain
//!   and md5 secrets, a forced-user database, per-user pool mode and admin/stats
//!   users; pgweir runs on the import of that same ini and userlist, and the same
//!   clients (users, passwords, databases) get the same answers from both.
//!
//! PgBouncer is installed with apt-get on first use when the tests run as root.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgweir::cluster::run_bounded;
use pgweir::import::{import, NoteKind};
use tokio_postgres::SimpleQueryMessage;
use weir_config::{Config, Overrides};
use weir_tests::{shared_cluster, APP_DB, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
const DEBIAN_INI: &str = "/etc/pgbouncer/pgbouncer.ini";
const MANUAL: &str = "/usr/share/man/man5/pgbouncer.5.gz";

/// Whether this process runs as root (from /proc, no libc needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// (uid, gid) of `user` from /etc/passwd.
fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// Installs Debian's pgbouncer package once if it is missing (root only).
fn ensure_pgbouncer() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if Path::new(PGBOUNCER).exists() && Path::new(DEBIAN_INI).exists() {
            return;
        }
        assert!(
            is_root(),
            "PgBouncer is not installed: run `apt-get install pgbouncer` (or .ci/run) first"
        );
        for args in [
            &["update"][..],
            &["install", "-y", "--no-install-recommends", "pgbouncer"][..],
        ] {
            let out = run_bounded(
                Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                None,
                Duration::from_secs(600),
            )
            .expect("apt-get runs");
            assert!(
                out.output.status.success(),
                "apt-get {args:?} failed: {}",
                String::from_utf8_lossy(&out.output.stderr)
            );
        }
    });
}

#[test]
fn debians_shipped_ini_imports_and_every_setting_in_it_is_accounted_for() {
    ensure_pgbouncer();
    let imported = import(Path::new(DEBIAN_INI), None).expect("imports");
    let text = std::fs::read_to_string(DEBIAN_INI).expect("read the ini");
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        if line.starts_with(';') || line.starts_with('#') || section != "[pgbouncer]" {
            continue;
        }
        let at = format!("{DEBIAN_INI}:{}", i + 1);
        let mapped = imported
            .toml
            .contains(&format!("(pgbouncer.ini:{})", i + 1));
        let noted = imported.notes.iter().any(|n| n.at == at);
        assert!(
            mapped || noted,
            "{} ({at}) neither mapped nor noted:\n{}",
            key.trim(),
            imported.toml
        );
    }
    // No databases in Debian's file: it loads once an upstream is given.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, &imported.toml).expect("write");
    let overrides = Overrides {
        upstream: Some("postgres://app:pw@db.internal:5432/app".to_owned()),
        ..Overrides::default()
    };
    let config = Config::load_with_overrides(&path, &overrides)
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    assert_eq!(config.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(config.pool_mode.as_str(), "session");
}

/// Every setting in PgBouncer's installed manual, set in one ini: each is mapped or
/// named with a reason, and none is "unknown".
#[test]
fn every_setting_in_pgbouncers_manual_is_mapped_or_explained() {
    ensure_pgbouncer();
    let out = run_bounded(
        Command::new("zcat").arg(MANUAL),
        None,
        Duration::from_secs(30),
    )
    .expect("zcat runs");
    let manual = String::from_utf8_lossy(&out.output.stdout).into_owned();
    let (mut general, mut databases, mut users) = (Vec::new(), Vec::new(), Vec::new());
    let mut section = "";
    for line in manual.lines() {
        if let Some(title) = line.strip_prefix(".SH ") {
            section = if title.contains("[DATABASES]") {
                "databases"
            } else if title.contains("[USERS]") {
                "users"
            } else if title.contains("FORMAT")
                || title.contains("EXAMPLES")
                || section == "databases"
                || section == "users"
            {
                // Past the settings: formats, examples, and sections after [users].
                ""
            } else {
                "general"
            };
        } else if let Some(name) = line.strip_prefix(".SS ") {
            let name = name.trim().to_owned();
            match section {
                "general" => general.push(name),
                "databases" => databases.push(name),
                "users" => users.push(name),
                _ => {}
            }
        }
    }
    assert!(
        general.len() > 80 && databases.len() > 10,
        "manual parsed: {general:?} {databases:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let value = |k: &str| match k {
        "listen_addr" => "127.0.0.1",
        "auth_type" => "md5",
        "pool_mode" => "transaction",
        "auth_file" | "auth_hba_file" => "/dev/null",
        "server_reset_query" | "server_check_query" => "SELECT 1",
        "auth_query" => "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
        // The one database below.
        "auth_dbname" => "all",
        k if k.ends_with("_users") || k == "user" || k == "auth_user" => "someone",
        _ => "1",
    };
    let mut ini = String::from("[pgbouncer]\n");
    for k in &general {
        ini.push_str(&format!("{k} = {}\n", value(k)));
    }
    let db: Vec<String> = databases
        .iter()
        .map(|k| match k.as_str() {
            "host" => "host=db.internal".to_owned(),
            "pool_mode" => "pool_mode=session".to_owned(),
            "password" | "user" | "dbname" | "auth_user" => format!("{k}=x"),
            "connect_query" => "connect_query='SELECT 1'".to_owned(),
            "auth_query" => {
                "auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename=$1'".to_owned()
            }
            "auth_dbname" => "auth_dbname=all".to_owned(),
            k => format!("{k}=1"),
        })
        .collect();
    ini.push_str(&format!("[databases]\nall = {}\n", db.join(" ")));
    let u: Vec<String> = users
        .iter()
        .map(|k| {
            if k == "pool_mode" {
                "pool_mode=session".to_owned()
            } else {
                format!("{k}=1")
            }
        })
        .collect();
    ini.push_str(&format!("[users]\nsomeone = {}\n", u.join(" ")));
    let path = dir.path().join("all.ini");
    std::fs::write(&path, &ini).expect("write");
    let imported = import(&path, None).expect("imports");
    let unknown: Vec<String> = imported
        .notes
        .iter()
        .filter(|n| n.message.contains("knows"))
        .map(ToString::to_string)
        .collect();
    assert!(
        unknown.is_empty(),
        "settings the import does not know: {unknown:#?}"
    );
    for (i, k) in general.iter().enumerate() {
        let line = i + 2;
        let mapped = imported.toml.contains(&format!("(all.ini:{line})"));
        let noted = imported
            .notes
            .iter()
            .any(|n| n.at.ends_with(&format!("all.ini:{line}")));
        assert!(
            mapped || noted,
            "{k} neither mapped nor noted:\n{}",
            imported.toml
        );
    }
    for k in databases.iter().chain(&users) {
        let mapped = imported.toml.contains(&format!("{k} = "));
        let noted = imported
            .notes
            .iter()
            .any(|n| n.message.contains(&format!("{k}=")));
        assert!(
            mapped || noted,
            "[databases]/[users] key {k} neither mapped nor noted"
        );
    }
    assert!(
        Config::from_toml_str(&imported.toml, "imported").is_ok(),
        "{}",
        imported.toml
    );
    eprintln!(
        "{} settings: {} unsupported, {} ignored, {} changed",
        general.len() + databases.len() + users.len(),
        imported.of_kind(NoteKind::Unsupported).count(),
        imported.of_kind(NoteKind::Ignored).count(),
        imported.of_kind(NoteKind::Changed).count()
    );
}

/// A PgBouncer process in the foreground; killed (by its own pid) when dropped.
struct Bouncer {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts PgBouncer on `ini` in `dir` (as `postgres` when root) and waits until it listens.
fn start_bouncer(dir: &Path, ini: &Path, port: u16) -> Bouncer {
    let mut cmd = Command::new(PGBOUNCER);
    cmd.arg(ini).current_dir(dir);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root() {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = passwd_ids("postgres").expect("a postgres user (PgBouncer refuses root)");
        cmd.uid(uid).gid(gid);
    }
    let child = cmd.spawn().expect("pgbouncer starts");
    let mut bouncer = Bouncer {
        child,
        log: dir.join("pgbouncer.log"),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&bouncer.addr, Duration::from_millis(200)).is_ok() {
            return bouncer;
        }
        let exited = bouncer.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > until {
            panic!(
                "pgbouncer did not start listening ({exited:?}): {}",
                std::fs::read_to_string(&bouncer.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one client sees: each statement's first value, or "error" (SQLSTATEs differ
/// between poolers: PgBouncer reports most login failures as 08P01).
async fn session(addr: SocketAddr, user: &str, password: &str, db: &str, sqls: &[&str]) -> String {
    let url = format!(
        "postgres://{user}:{password}@{}:{}/{db}",
        addr.ip(),
        addr.port()
    );
    let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    let (client, connection) = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => return "login error".to_owned(),
        Err(_) => panic!("login to {addr} as {user} on {db} hung"),
    };
    tokio::spawn(connection);
    let mut seen = Vec::new();
    for sql in sqls {
        let rows = tokio::time::timeout(Duration::from_secs(15), client.simple_query(sql))
            .await
            .unwrap_or_else(|_| panic!("{sql} hung on {addr}"));
        seen.push(match rows {
            Ok(msgs) => msgs
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
                    _ => None,
                })
                .unwrap_or_else(|| "(no rows)".to_owned()),
            Err(_) => "error".to_owned(),
        });
    }
    seen.join(" | ")
}

/// The column names of a console `SHOW` (what the exporter and dashboards key on).
async fn show_columns(addr: SocketAddr, user: &str, password: &str, what: &str) -> Vec<String> {
    let url = format!(
        "postgres://{user}:{password}@{}:{}/pgbouncer",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("console login on {addr}: {e}"));
    tokio::spawn(connection);
    let msgs = client.simple_query(what).await.expect("SHOW runs");
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::RowDescription(cols) => {
                Some(cols.iter().map(|c| c.name().to_owned()).collect())
            }
            SimpleQueryMessage::Row(r) => {
                Some(r.columns().iter().map(|c| c.name().to_owned()).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_config_serves_the_clients_pgbouncer_served() {
    ensure_pgbouncer();
    let pg = shared_cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    if is_root() {
        let (uid, gid) = passwd_ids("postgres").expect("postgres user");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
    }
    let d = dir.path();
    let md5 = weir_wire::auth::md5::md5_secret(MD5_USER, MD5_PASSWORD);
    std::fs::write(
        d.join("userlist.txt"),
        format!("\"{SCRAM_USER}\" \"{SCRAM_PASSWORD}\"\n\"{MD5_USER}\" \"{md5}\"\n"),
    )
    .expect("userlist");
    std::fs::write(
        d.join("more.ini"),
        format!(
            "[databases]\nincluded = host=127.0.0.1 port={} dbname={APP_DB}\n",
            pg.port()
        ),
    )
    .expect("include");
    let port = free_port();
    let ini = format!(
        "[databases]\n\
         {APP_DB} = host=127.0.0.1 port={pg_port} dbname={APP_DB}\n\
         forced = host=127.0.0.1 port={pg_port} dbname={APP_DB} user={SCRAM_USER} password={SCRAM_PASSWORD} pool_size=2\n\
         [users]\n\
         {MD5_USER} = pool_mode=session\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = md5\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\n\
         default_pool_size = 4\n\
         max_client_conn = 50\n\
         admin_users = {SCRAM_USER}\n\
         stats_users = {MD5_USER}\n\
         server_idle_timeout = 30.5\n\
         query_wait_timeout = 10\n\
         ignore_startup_parameters = extra_float_digits\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n\
         %include {dir}/more.ini\n",
        pg_port = pg.port(),
        dir = d.display(),
    );
    let ini_path = d.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).expect("ini");
    let bouncer = start_bouncer(d, &ini_path, port);

    let imported = import(&ini_path, Some(&d.join("userlist.txt"))).expect("imports");
    for note in &imported.notes {
        eprintln!("{note}");
    }
    let toml_path = d.join("proxy.toml");
    std::fs::write(&toml_path, &imported.toml).expect("write proxy.toml");
    let overrides = Overrides {
        // The only change: pgweir listens on its own free port, next to PgBouncer.
        listen: Some(([127, 0, 0, 1], 0).into()),
        http_listen: Some(None),
        ..Overrides::default()
    };
    let config = Config::load_with_overrides(&toml_path, &overrides)
        .unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    let started = pgweir::serve::start(config, None)
        .await
        .expect("pgweir starts");
    let pgweir_addr = started.addr;
    let admin = started.admin.clone();
    let task = tokio::spawn(async move { started.run().await });

    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            SCRAM_USER,
            SCRAM_PASSWORD,
            APP_DB,
            vec![
                "select current_user",
                "select current_database()",
                "select 6 * 7",
            ],
        ),
        (
            MD5_USER,
            MD5_PASSWORD,
            APP_DB,
            vec![
                "select current_user",
                "set search_path = pg_catalog",
                "show search_path",
            ],
        ),
        (
            MD5_USER,
            MD5_PASSWORD,
            "forced",
            vec!["select current_user", "select current_database()"],
        ),
        (
            SCRAM_USER,
            SCRAM_PASSWORD,
            "included",
            vec!["select current_database()"],
        ),
        (SCRAM_USER, "wrong", APP_DB, vec!["select 1"]),
        (MD5_USER, "wrong", APP_DB, vec!["select 1"]),
        ("nobody", "x", APP_DB, vec!["select 1"]),
        (SCRAM_USER, SCRAM_PASSWORD, "no_such_db", vec!["select 1"]),
        (SCRAM_USER, SCRAM_PASSWORD, "pgbouncer", vec!["show pools"]),
        (
            MD5_USER,
            MD5_PASSWORD,
            "pgbouncer",
            vec!["show stats", "resume"],
        ),
    ];
    let mut table = Vec::new();
    for (user, password, db, sqls) in &cases {
        let via_bouncer = session(bouncer.addr, user, password, db, sqls).await;
        let via_pgweir = session(pgweir_addr, user, password, db, sqls).await;
        table.push(format!(
            "{user}@{db}: pgbouncer [{via_bouncer}] pgweir [{via_pgweir}]"
        ));
        if *db == "pgbouncer" {
            // Console rows differ (addresses, counters); whether each command is
            // allowed must not.
            let shape = |s: &str| s.split(" | ").map(|v| v == "error").collect::<Vec<_>>();
            assert_eq!(
                shape(&via_bouncer),
                shape(&via_pgweir),
                "{}",
                table.join("\n")
            );
            assert!(
                !via_pgweir.starts_with("login error"),
                "{}",
                table.join("\n")
            );
        } else {
            assert_eq!(via_bouncer, via_pgweir, "{}", table.join("\n"));
        }
    }
    eprintln!("{}", table.join("\n"));
    // The answers are the expected ones, not just equal.
    assert!(
        table[0].contains(&format!("[{SCRAM_USER} | {APP_DB} | 42]")),
        "{}",
        table[0]
    );
    assert!(table[1].contains("pg_catalog]"), "{}", table[1]);
    assert!(
        table[2].contains(&format!("[{SCRAM_USER} | {APP_DB}]")),
        "forced user: {}",
        table[2]
    );
    for failed in &table[4..8] {
        assert!(failed.matches("login error").count() == 2, "{failed}");
    }
    assert_eq!(
        show_columns(bouncer.addr, SCRAM_USER, SCRAM_PASSWORD, "SHOW POOLS").await,
        show_columns(pgweir_addr, SCRAM_USER, SCRAM_PASSWORD, "SHOW POOLS").await,
        "SHOW POOLS columns"
    );
    admin.handle().shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    drop(bouncer);
}
