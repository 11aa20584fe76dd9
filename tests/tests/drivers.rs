//! Real drivers through pgweir in transaction mode: psycopg 3, asyncpg, node-postgres,
//! JDBC and sqlx, each running its own short suite (tests/drivers/) in its normal idioms
//! (pools, transactions, prepared/cached statements, errors, COPY, session SETs).
//!
//! Each test installs what its driver needs with `tests/drivers/setup.sh <part>`
//! (a no-op once done; `.ci/run` runs it up front), starts pgweir with a pool of
//! [`POOL_SIZE`] so clients share server connections, and runs the suite with
//! `DATABASE_URL` (and the `PG*` variables) pointing at the proxy.
//!
//! `PGWEIR_DRIVERS_MODE=session` or `=direct` runs the same suites through pgweir in
//! session mode or straight against PostgreSQL: a check of the suites themselves.
//! `PGWEIR_DRIVERS_TLS=1` runs them over TLS (`client_tls_sslmode = require`, the
//! drivers with `sslmode=verify-full`; sqlx's build has no TLS, so not sqlx); the
//! node-postgres, JDBC and psycopg suites also run over TLS in every run.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use weir_config::PoolMode;
use weir_tests::pg::run_psql;
use weir_tests::{
    app_config, shared_cluster, start_proxy, stored_secret, APP_DB, MD5_PASSWORD, MD5_USER,
    SCRAM_PASSWORD, SCRAM_USER,
};

/// Server connections for all the suite's clients: fewer than the clients they open.
const POOL_SIZE: u32 = 3;
/// In session mode each client holds a server connection: room for all of a suite's.
const SESSION_POOL_SIZE: u32 = 12;
/// How long a setup step may take (a cold sqlx build on 2 cores is the slowest).
const SETUP_TIMEOUT: Duration = Duration::from_secs(200);
/// How long one suite may take (each takes a few seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Where setup.sh puts the venv, node_modules and the sqlx build.
fn drivers_out() -> PathBuf {
    repo().join("target/drivers")
}

/// Runs `cmd` to completion (killed after `timeout`), its stdout and stderr in one file.
fn run_logged(mut cmd: Command, timeout: Duration) -> (ExitStatus, String) {
    let mut log = tempfile::tempfile().expect("temp file for output");
    let out: File = log.try_clone().expect("clone temp file");
    let err: File = log.try_clone().expect("clone temp file");
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let until = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let status = child.wait().expect("wait for killed child");
            eprintln!("killed after {timeout:?}: {cmd:?}");
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = String::new();
    log.rewind().expect("rewind output");
    log.read_to_string(&mut text).expect("read output");
    (status, text)
}

/// The pool mode under test: transaction unless `PGWEIR_DRIVERS_MODE` says otherwise
/// (`None` = straight to PostgreSQL).
fn mode() -> Option<PoolMode> {
    match std::env::var("PGWEIR_DRIVERS_MODE").as_deref() {
        Ok("session") => Some(PoolMode::Session),
        Ok("direct") => None,
        Ok("transaction") | Err(_) => Some(PoolMode::Transaction),
        Ok(other) => panic!("PGWEIR_DRIVERS_MODE={other}: expected transaction, session or direct"),
    }
}

/// Installs `part` with setup.sh, starts pgweir in front of the shared cluster, runs
/// `program args` with the connection in its environment, and asserts it exits 0; over
/// TLS when `PGWEIR_DRIVERS_TLS=1`.
async fn run_suite(suite: &str, part: &str, program: &Path, args: &[&str], env: &[(&str, String)]) {
    let tls = std::env::var("PGWEIR_DRIVERS_TLS").is_ok_and(|v| v == "1");
    run_suite_with(tls, suite, part, program, args, env).await;
}

/// [`run_suite`], over TLS (verify-full against the proxy's certificate) when `tls`.
async fn run_suite_with(
    tls: bool,
    suite: &str,
    part: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, String)],
) {
    let mut setup = Command::new(repo().join("tests/drivers/setup.sh"));
    setup.arg(part);
    let (status, text) = tokio::task::spawn_blocking(move || run_logged(setup, SETUP_TIMEOUT))
        .await
        .expect("setup task");
    assert!(
        status.success(),
        "tests/drivers/setup.sh {part}: {status}\n{text}"
    );

    let pg = shared_cluster();
    let mode = mode();
    // Over TLS the proxy requires it and the drivers verify its certificate (verify-full).
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let certs = tls.then(|| weir_tests::certs::make_certs(tls_dir.path(), "pgweir drivers CA"));
    let with_tls = |mut config: weir_config::Config| {
        if let Some(certs) = &certs {
            config.client_tls_sslmode = weir_config::SslMode::Require;
            config.client_tls_cert_file = Some(certs.server_cert());
            config.client_tls_key_file = Some(certs.server_key());
        }
        config
    };
    let proxy = match mode {
        Some(PoolMode::Session) => {
            Some(start_proxy(with_tls(app_config(PoolMode::Session, SESSION_POOL_SIZE))).await)
        }
        Some(mode) => {
            let mut config = app_config(mode, POOL_SIZE);
            // PGWEIR_DRIVERS_CACHE_UNNAMED=0 (or 1) runs the suites with
            // cache_unnamed_statements off (or on); unset, the default (on).
            if let Ok(v) = std::env::var("PGWEIR_DRIVERS_CACHE_UNNAMED") {
                config.cache_unnamed_statements = v == "1";
            }
            Some(start_proxy(with_tls(config)).await)
        }
        None => None,
    };
    let (host, port) = match &proxy {
        Some(p) => (p.addr.ip().to_string(), p.addr.port()),
        None => (pg.host().to_owned(), pg.port()),
    };
    let mut url = format!("postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@{host}:{port}/{APP_DB}");
    if let (Some(certs), Some(_)) = (&certs, &proxy) {
        url.push_str(&format!(
            "?sslmode=verify-full&sslrootcert={}",
            certs.ca().display()
        ));
    }
    let mode_name = match mode {
        Some(PoolMode::Transaction) => "transaction",
        Some(PoolMode::Session) => "session",
        None => "direct",
    };

    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo().join("tests/drivers"))
        .env("DATABASE_URL", &url)
        .env("PGHOST", &host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", SCRAM_USER)
        .env("PGPASSWORD", SCRAM_PASSWORD)
        .env("PGDATABASE", APP_DB)
        .env("PGWEIR_POOL_MODE", mode_name);
    if let (Some(certs), Some(_)) = (&certs, &proxy) {
        let ca = certs.ca().display().to_string();
        cmd.env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &ca)
            .env(
                "PGWEIR_JDBC_PARAMS",
                format!("?sslmode=verify-full&sslrootcert={ca}"),
            );
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let (status, text) = tokio::task::spawn_blocking(move || run_logged(cmd, SUITE_TIMEOUT))
        .await
        .expect("suite task");
    let took = started.elapsed();
    assert!(
        status.success(),
        "{suite} suite failed ({status}, {took:.2?}) through pgweir in {mode_name} mode: {shown}\n{text}"
    );
    eprintln!("--- {suite} suite passed ({mode_name} mode, {took:.2?}) ---\n{text}");
    if let Some(proxy) = proxy {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3() {
    let python = drivers_out().join("venv/bin/python");
    run_suite(
        "psycopg",
        "python",
        &python,
        &["python/psycopg_suite.py"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    let python = drivers_out().join("venv/bin/python");
    run_suite(
        "asyncpg",
        "python",
        &python,
        &["python/asyncpg_suite.py"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let modules = drivers_out().join("node/node_modules");
    let env = [("NODE_PATH", modules.display().to_string())];
    run_suite(
        "node-postgres",
        "node",
        Path::new("node"),
        &["node/suite.js"],
        &env,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc() {
    let args = ["-cp", "/usr/share/java/postgresql.jar", "java/Suite.java"];
    run_suite("JDBC", "java", Path::new("java"), &args, &[]).await;
}

/// Issue 13: node-postgres, JDBC and psycopg run their whole suites over TLS too
/// (`sslmode=verify-full`), in every CI run, not only with `PGWEIR_DRIVERS_TLS=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_over_tls() {
    let modules = drivers_out().join("node/node_modules");
    let env = [("NODE_PATH", modules.display().to_string())];
    let args = ["node/suite.js"];
    run_suite_with(
        true,
        "node-postgres over TLS",
        "node",
        Path::new("node"),
        &args,
        &env,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_over_tls() {
    let args = ["-cp", "/usr/share/java/postgresql.jar", "java/Suite.java"];
    run_suite_with(true, "JDBC over TLS", "java", Path::new("java"), &args, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_over_tls() {
    let python = drivers_out().join("venv/bin/python");
    let args = ["python/psycopg_suite.py"];
    run_suite_with(true, "psycopg over TLS", "python", &python, &args, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx() {
    let bin = drivers_out().join("sqlx-target/debug/pgweir-driver-sqlx");
    run_suite("sqlx", "sqlx", &bin, &[], &[]).await;
}

/// One PgBouncer `userlist.txt` copied from `pg_authid` mixes md5 hashes and SCRAM
/// verifiers. Under `auth_type = "md5"` both users log in, with psql and psycopg: the md5
/// user with md5, the SCRAM user with SCRAM (as PgBouncer and PostgreSQL's md5 method do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_auth_serves_a_userlist_mixing_md5_and_scram_secrets() {
    let setup = {
        let mut c = Command::new(repo().join("tests/drivers/setup.sh"));
        c.arg("python");
        c
    };
    let (status, text) = tokio::task::spawn_blocking(move || run_logged(setup, SETUP_TIMEOUT))
        .await
        .expect("setup task");
    assert!(
        status.success(),
        "tests/drivers/setup.sh python: {status}\n{text}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let (md5, scram) = (stored_secret(MD5_USER), stored_secret(SCRAM_USER));
    assert!(md5.starts_with("md5") && scram.starts_with("SCRAM-SHA-256$"));
    std::fs::write(
        dir.path().join("userlist.txt"),
        format!("\"{MD5_USER}\" \"{md5}\"\n\"{SCRAM_USER}\" \"{scram}\"\n"),
    )
    .expect("write userlist");
    let toml = dir.path().join("proxy.toml");
    std::fs::write(
        &toml,
        format!(
            "listen = \"127.0.0.1:0\"\nhttp_listen = \"\"\nauth_type = \"md5\"\n\
             auth_file = \"userlist.txt\"\n[databases.{APP_DB}]\nhost = \"127.0.0.1\"\nport = {}\n",
            shared_cluster().port()
        ),
    )
    .expect("write config");
    let config = weir_config::Config::load(&toml).expect("md5 auth loads md5 and SCRAM secrets");
    let proxy = start_proxy(config).await;

    let python = drivers_out().join("venv/bin/python");
    for (user, password) in [(MD5_USER, MD5_PASSWORD), (SCRAM_USER, SCRAM_PASSWORD)] {
        let url = proxy.url(user, password, APP_DB);
        let psql_url = url.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_psql(&psql_url, &["-At", "-c", "select current_user"])
        })
        .await
        .expect("psql task");
        assert!(
            out.status.success(),
            "psql as {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);

        let mut cmd = Command::new(&python);
        cmd.args([
            "-c",
            "import sys, psycopg\n\
             with psycopg.connect(sys.argv[1]) as c:\n\
             \x20   print(c.execute('select current_user').fetchone()[0])",
            &url,
        ]);
        let (status, text) = tokio::task::spawn_blocking(move || run_logged(cmd, SUITE_TIMEOUT))
            .await
            .expect("psycopg task");
        assert!(status.success(), "psycopg as {user}: {text}");
        assert_eq!(text.trim(), user);

        let wrong = proxy.url(user, "wrong", APP_DB);
        let out = tokio::task::spawn_blocking(move || run_psql(&wrong, &["-At", "-c", "select 1"]))
            .await
            .expect("psql task");
        assert!(
            !out.status.success(),
            "a wrong password is refused for {user}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    proxy.stop().await;
}
