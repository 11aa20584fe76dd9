//! PostgreSQL for the end-to-end tests: one throwaway cluster shared by the tests of
//! a process, and runners for the real `psql` and `pgbench`.
//!
//! # One cluster per process, and who stops it
//! [`shared_cluster`] starts the cluster on first use and keeps it in a `static`.
//! Rust never drops statics, so [`TempCluster`]'s `Drop` would not run at exit and
//! the postmaster and its temp dir would outlive the tests. Starting it therefore
//! also calls [`TempCluster::stop_on_exit`], which spawns a watchdog: a small `sh`
//! loop that checks this process with `kill -0` once a second and, when it is gone
//! (normal exit, panic, or a timeout kill by the test runner), sends the postmaster
//! SIGQUIT (what `pg_ctl stop -m immediate` sends), SIGKILL if it is still there
//! 10 s later, and removes the temp dir. The watchdog's stdio is /dev/null so it
//! does not hold the test's output pipes open.
//!
//! `cargo nextest` runs every test in its own process, so there each test that calls
//! [`shared_cluster`] gets its own cluster (about 1.5 s to start); under `cargo test`
//! all tests of a binary share one. Tests that stop or restart the server must start
//! their own [`TempCluster`] (it is dropped, and cleaned up, normally).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use pgweir::cluster::{
    find_bin_dir, run_bounded, AuthMethod, ClusterOptions, ClusterUser, TempCluster,
};

/// A role whose password is stored as SCRAM and checked with `scram-sha-256`.
pub const SCRAM_USER: &str = "app_scram";
/// Password of [`SCRAM_USER`].
pub const SCRAM_PASSWORD: &str = "pw_scram";
/// A role whose password is stored as md5 and checked with `md5`.
pub const MD5_USER: &str = "app_md5";
/// Password of [`MD5_USER`].
pub const MD5_PASSWORD: &str = "pw_md5";
/// The test database, owned by [`SCRAM_USER`] (every role may connect).
pub const APP_DB: &str = "app";

/// How long one psql run may take before it is killed.
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one pgbench run may take before it is killed (keep `-T` well below).
const PGBENCH_TIMEOUT: Duration = Duration::from_secs(300);

/// The cluster shared by this test process, started on first call with
/// [`SCRAM_USER`], [`MD5_USER`] and [`APP_DB`]; stopped by a watchdog at exit
/// (see the module docs).
///
/// # Panics
/// If PostgreSQL 15+ is missing or does not start (the message says why).
pub fn shared_cluster() -> &'static TempCluster {
    static CLUSTER: OnceLock<TempCluster> = OnceLock::new();
    CLUSTER.get_or_init(start_shared)
}

fn start_shared() -> TempCluster {
    let opts = ClusterOptions {
        max_connections: 300,
        users: vec![
            ClusterUser::new(SCRAM_USER, SCRAM_PASSWORD, AuthMethod::Scram),
            ClusterUser::new(MD5_USER, MD5_PASSWORD, AuthMethod::Md5),
        ],
        databases: vec![(APP_DB.to_owned(), SCRAM_USER.to_owned())],
        port: None,
    };
    let cluster = TempCluster::start(opts)
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL cluster: {e}"));
    if let Err(e) = cluster.stop_on_exit() {
        // The tests can still run; only the cleanup at exit is lost.
        eprintln!(
            "warning: no watchdog for the test cluster ({e}); stop it by hand: pg_ctl stop -D {}",
            cluster.data_dir().display()
        );
    }
    cluster
}

/// The PostgreSQL bin directory (`psql`, `pgbench`): `$PGWEIR_PG_BIN`, PATH's
/// pg_ctl 15+, or the newest `/usr/lib/postgresql/*/bin`.
///
/// # Panics
/// If no PostgreSQL 15+ is installed.
pub fn pg_bin_dir() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| find_bin_dir().unwrap_or_else(|e| panic!("{e}")))
}

/// Runs `psql -X -w -v ON_ERROR_STOP=1 <args> -d <url>` (no psqlrc, never prompts for
/// a password, stops at the first error) and returns its output; add `-At -c SQL`
/// or similar. Killed after 60 s, with a note on stderr.
pub fn run_psql(url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(pg_bin_dir().join("psql"));
    without_pg_env(&mut cmd);
    cmd.env("PGCONNECT_TIMEOUT", "10");
    cmd.args(["-X", "-w", "-v", "ON_ERROR_STOP=1"]).args(args);
    cmd.arg("-d").arg(url);
    run(&mut cmd, "psql", PSQL_TIMEOUT)
}

/// [`run_psql`] on a blocking thread, for async tests: whether psql succeeded, and its
/// stdout followed by its stderr.
pub async fn psql_output(url: String, args: &'static [&'static str]) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = run_psql(&url, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .expect("psql task")
}

/// Runs `pgbench <args>` with `env` added (e.g. `PGPASSWORD`) and returns its output.
/// Killed after 300 s, with a note on stderr.
pub fn run_pgbench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(pg_bin_dir().join("pgbench"));
    without_pg_env(&mut cmd);
    cmd.env("PGCONNECT_TIMEOUT", "10");
    cmd.args(args).envs(env.iter().copied());
    run(&mut cmd, "pgbench", PGBENCH_TIMEOUT)
}

/// Drops inherited `PG*` variables (PGHOST, PGPASSWORD, ...) so only the arguments
/// decide where a client connects.
fn without_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
}

fn run(cmd: &mut Command, what: &str, timeout: Duration) -> Output {
    let out = run_bounded(cmd, None, timeout)
        .unwrap_or_else(|e| panic!("cannot run {what} from {}: {e}", pg_bin_dir().display()));
    let mut output = out.output;
    if out.timed_out {
        let note = format!(
            "\n[weir-tests] {what} killed after {} s\n",
            timeout.as_secs()
        );
        output.stderr.extend_from_slice(note.as_bytes());
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &Output) -> String {
        format!(
            "status {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    #[test]
    fn shared_cluster_serves_psql_and_pgbench() {
        let c = shared_cluster();
        assert!(std::ptr::eq(c, shared_cluster()), "one cluster per process");
        for (user, password) in [(SCRAM_USER, SCRAM_PASSWORD), (MD5_USER, MD5_PASSWORD)] {
            let out = run_psql(
                &c.url(user, password, APP_DB),
                &["-At", "-c", "SELECT current_user"],
            );
            assert!(out.status.success(), "{}", text(&out));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user);
        }
        let bad = run_psql(&c.url(MD5_USER, "wrong", APP_DB), &["-c", "SELECT 1"]);
        assert!(!bad.status.success(), "{}", text(&bad));

        let port = c.port().to_string();
        let conn = ["-h", c.host(), "-p", &port, "-U", SCRAM_USER];
        let env = [("PGPASSWORD", SCRAM_PASSWORD)];
        let init = run_pgbench(
            &[&["-i", "-q", "-s", "1"][..], &conn, &[APP_DB]].concat(),
            &env,
        );
        assert!(init.status.success(), "{}", text(&init));
        let args = [&["-n", "-S", "-c", "2", "-t", "20"][..], &conn, &[APP_DB]].concat();
        let bench = run_pgbench(&args, &env);
        assert!(bench.status.success(), "{}", text(&bench));
        assert!(String::from_utf8_lossy(&bench.stdout).contains("tps = "));
    }
}
