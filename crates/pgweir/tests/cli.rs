//! The pgweir binary as a user runs it: `check` with good and bad configurations, flags
//! and environment; serving psql in front of a real PostgreSQL and stopping on SIGTERM;
//! and `pgweir demo` from banner to Ctrl-C, after which its PostgreSQL must be gone.
//!
//! Every child runs under a [`Proc`] guard that stops it when a test fails, and every
//! wait has a deadline. Every child that listens is given ports picked free at run
//! time, for clients and for HTTP: the defaults (6432, 9930) may be taken by a pgweir
//! the user runs, or by another test.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use pgweir::cluster::{run_bounded, AuthMethod, ClusterOptions, ClusterUser, TempCluster};

const BIN: &str = env!("CARGO_BIN_EXE_pgweir");

/// Deadline for a `check` run or a psql command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The example configuration at the repository root.
fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml")
}

/// A `pgweir` command with no `PGWEIR_*` or `RUST_LOG` inherited from the caller, so
/// only what a test sets reaches the binary.
fn pgweir_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|k| k.starts_with("PGWEIR_") || k == "RUST_LOG")
        {
            cmd.env_remove(&key);
        }
    }
    cmd.args(args);
    cmd
}

/// Runs `pgweir args` with extra environment to completion (bounded).
fn run_pgweir(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = pgweir_command(args);
    cmd.envs(env.iter().copied());
    let out = run_bounded(&mut cmd, None, COMMAND_TIMEOUT).expect("run pgweir");
    assert!(!out.timed_out, "pgweir {args:?} did not finish in time");
    out.output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Two distinct 127.0.0.1 addresses whose ports were free a moment ago (both held
/// while picking, so the kernel cannot hand out one port twice).
fn two_free_addrs() -> (SocketAddr, SocketAddr) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let addr = |l: &TcpListener| l.local_addr().expect("local addr");
    (addr(&a), addr(&b))
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The status of an HTTP/1.0 `GET path` on `addr`, or `None` if there is no answer
/// within a few seconds.
/// [`http_status`] once the HTTP listener is up: it binds after the client listener, and
/// on a loaded box the first request can come before it.
fn http_status_when_up(addr: SocketAddr, path: &str) -> Option<u16> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = http_status(addr, path);
        if status.is_some() || std::time::Instant::now() >= until {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = String::new();
    BufReader::new(s.take(4096)).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Runs psql from `bin_dir` against `url` with `-c sql`, bounded; PG* variables of the
/// caller are dropped so they cannot redirect it.
fn psql(bin_dir: &Path, url: &str, sql: &str, password: Option<&str>) -> Output {
    let mut cmd = Command::new(bin_dir.join("psql"));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PGCONNECT_TIMEOUT", "10");
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, url]);
    let out = run_bounded(&mut cmd, None, COMMAND_TIMEOUT).expect("run psql");
    assert!(
        !out.timed_out,
        "psql {url} -c {sql:?} did not finish in time"
    );
    out.output
}

/// A spawned pgweir whose stderr goes to a temp file; dropping it stops the process
/// (SIGTERM, then SIGKILL after 10 s) so a failing test leaves nothing running.
struct Proc {
    child: Child,
    stderr: tempfile::NamedTempFile,
}

impl Proc {
    fn spawn(mut cmd: Command, stdout: Stdio) -> Proc {
        let stderr = tempfile::NamedTempFile::new().expect("temp file for stderr");
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr.reopen().expect("reopen stderr file"));
        let child = cmd.spawn().expect("spawn pgweir");
        Proc { child, stderr }
    }

    /// What the process logged so far.
    fn log(&self) -> String {
        fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Sends `signal` unless the process has already been reaped (its PID could be
    /// reused); false if it was not sent.
    fn signal(&mut self, signal: libc::c_int) -> bool {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return false;
        };
        // SAFETY: kill(2) takes plain integers; the PID is our own child, not yet reaped.
        unsafe { libc::kill(pid, signal) == 0 }
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `addr` accepts connections; panics with the log if the process exits
    /// or `timeout` passes first.
    fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !accepts(addr) {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "pgweir exited ({status}) before listening on {addr}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "pgweir not listening on {addr} after {timeout:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // Gently first, so `demo` stops its PostgreSQL at once (its watchdog is slower).
        if !self.signal(libc::SIGTERM) || self.wait_for_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes a config file with `body` into a fresh temp dir.
fn config_file(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("proxy.toml");
    fs::write(&path, body).expect("write config");
    (dir, path)
}

#[test]
fn check_accepts_the_example_config() {
    let config = example_config();
    let out = run_pgweir(
        &["check", "--config", config.to_str().expect("UTF-8 path")],
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("configuration OK"), "{}", describe(&out));
    assert!(stdout.contains("transaction mode"), "{}", describe(&out));
}

#[test]
fn check_names_file_line_and_key_of_an_unknown_key() {
    let (_dir, path) = config_file(
        "listen = \"127.0.0.1:6432\"\n\n# a typo:\npool_mod = \"session\"\n\n[databases.app]\nhost = \"127.0.0.1\"\n",
    );
    let path_str = path.to_str().expect("UTF-8 path");
    let out = run_pgweir(&["check", "--config", path_str], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{path_str}:4")),
        "{}",
        describe(&out)
    );
    assert!(stderr.contains("pool_mod"), "{}", describe(&out));
    assert!(!text(&out.stdout).contains("configuration OK"));
}

#[test]
fn check_names_file_line_and_key_of_a_bad_value() {
    for (line, key, value) in [
        ("pool_mode = \"sometimes\"", "pool_mode", "sometimes"),
        ("default_pool_size = \"lots\"", "default_pool_size", "lots"),
        (
            "query_wait_timeout = \"soon\"",
            "query_wait_timeout",
            "soon",
        ),
    ] {
        let (_dir, path) = config_file(&format!(
            "listen = \"127.0.0.1:6432\"\n{line}\n\n[databases.app]\nhost = \"127.0.0.1\"\n"
        ));
        let path_str = path.to_str().expect("UTF-8 path");
        let out = run_pgweir(&["check", "--config", path_str], &[]);
        assert_eq!(out.status.code(), Some(1), "{line}: {}", describe(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("{path_str}:2")) && stderr.contains(key),
            "{line}: {}",
            describe(&out)
        );
        assert!(stderr.contains(value), "{line}: {}", describe(&out));
    }
}

#[test]
fn check_of_a_missing_file_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nowhere.toml");
    let path_str = path.to_str().expect("UTF-8 path");
    let out = run_pgweir(&["check", "--config", path_str], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(text(&out.stderr).contains(path_str), "{}", describe(&out));
}

#[test]
fn check_refuses_a_pool_size_of_zero_from_flag_or_env() {
    let config = example_config();
    let config = config.to_str().expect("UTF-8 path");
    let by_flag = run_pgweir(&["check", "--config", config, "--pool-size", "0"], &[]);
    let by_env = run_pgweir(&["check", "--config", config], &[("PGWEIR_POOL_SIZE", "0")]);
    for (how, out) in [("--pool-size 0", by_flag), ("PGWEIR_POOL_SIZE=0", by_env)] {
        assert_eq!(out.status.code(), Some(1), "{how}: {}", describe(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("pool_size") && stderr.contains("at least 1"),
            "{how}: {}",
            describe(&out)
        );
        assert!(!text(&out.stdout).contains("configuration OK"));
    }
}

#[test]
fn check_shows_the_pool_mode_from_env() {
    let config = example_config();
    let config = config.to_str().expect("UTF-8 path");
    let out = run_pgweir(
        &["check", "--config", config],
        &[("PGWEIR_POOL_MODE", "session")],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains("session mode"),
        "{}",
        describe(&out)
    );
    // A flag beats the environment.
    let out = run_pgweir(
        &["check", "--config", config, "--pool-mode", "transaction"],
        &[("PGWEIR_POOL_MODE", "session")],
    );
    assert!(
        text(&out.stdout).contains("transaction mode"),
        "{}",
        describe(&out)
    );
}

/// `--no-io-uring` reaches the proxy: without it the first worker's ring is set up at
/// its first park, with it writes stay unbatched (no PostgreSQL needed: the proxy
/// connects upstream only for clients).
#[test]
fn no_io_uring_turns_write_batching_off() {
    const ON: &str = "socket writes are batched through io_uring";
    const OFF: &str = "batching is turned off";
    for (flag, expected, unexpected) in [(None, ON, OFF), (Some("--no-io-uring"), OFF, ON)] {
        let (listen, _) = two_free_addrs();
        let listen_arg = listen.to_string();
        let mut args = vec![
            "--listen",
            listen_arg.as_str(),
            "--http-listen",
            "",
            "--upstream",
            "postgres://app:secret@127.0.0.1:9/app",
        ];
        args.extend(flag);
        let mut cmd = pgweir_command(&args);
        cmd.env("RUST_LOG", "weir_proxy::uring=debug");
        let mut proxy = Proc::spawn(cmd, Stdio::null());
        proxy.wait_listening(listen, Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proxy.log().contains(expected) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let log = proxy.log();
        assert!(
            log.contains(expected),
            "{flag:?}: no {expected:?} in:\n{log}"
        );
        assert!(
            !log.contains(unexpected),
            "{flag:?}: {unexpected:?} in:\n{log}"
        );
    }
}

/// Tests that start PostgreSQL. The module name puts them in nextest's `postgres` test
/// group (`.config/nextest.toml` matches `package(pgweir) & test(/^cluster::/)`), which
/// limits how many servers run at once.
mod cluster {
    use super::*;

    #[test]
    fn serves_psql_and_exits_on_sigterm() {
        let cluster = TempCluster::start(ClusterOptions {
            max_connections: 20,
            users: vec![ClusterUser::new("app", "secret", AuthMethod::Scram)],
            databases: vec![("app".into(), "app".into())],
            port: None,
        })
        .expect("start PostgreSQL");
        let (listen, http) = two_free_addrs();
        let upstream = cluster.url("app", "secret", "app");
        let mut proxy = Proc::spawn(
            pgweir_command(&[
                "--listen",
                &listen.to_string(),
                "--http-listen",
                &http.to_string(),
                "--upstream",
                &upstream,
            ]),
            Stdio::null(),
        );
        proxy.wait_listening(listen, Duration::from_secs(30));
        assert_eq!(
            http_status_when_up(http, "/healthz"),
            Some(200),
            "no /healthz on {http}:\n{}",
            proxy.log()
        );

        let url = format!("postgres://app@{listen}/app");
        let out = psql(cluster.bin_dir(), &url, "select 1", Some("secret"));
        assert!(
            out.status.success(),
            "psql: {}\n--- pgweir log ---\n{}",
            describe(&out),
            proxy.log()
        );
        assert_eq!(text(&out.stdout).trim(), "1");

        assert!(proxy.signal(libc::SIGTERM), "pgweir exited before SIGTERM");
        let status = proxy.wait_for_exit(Duration::from_secs(15));
        let log = proxy.log();
        let status = status.unwrap_or_else(|| panic!("still running 15 s after SIGTERM:\n{log}"));
        assert!(status.success(), "exit after SIGTERM: {status}\n{log}");
        assert!(!accepts(listen), "{listen} still accepts after exit");
        assert!(!accepts(http), "{http} still accepts after exit");
    }

    /// What the demo's banner says.
    struct Banner {
        /// The `DATABASE_URL` it prints.
        url: String,
        /// The port of its PostgreSQL.
        pg_port: u16,
        /// The HTTP endpoint its metrics URL names, if it prints one.
        http: Option<SocketAddr>,
    }

    /// Reads the demo's banner up to its last line ("Press Ctrl-C ...").
    fn read_banner(lines: &mpsc::Receiver<String>, proc: &mut Proc, timeout: Duration) -> Banner {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        let (mut url, mut pg_port, mut http) = (None, None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => continue,
                Err(e) => panic!(
                    "no complete banner from pgweir demo ({e}; exit: {:?}); stdout so far:\n{}\n--- stderr ---\n{}",
                    proc.child.try_wait(),
                    seen.join("\n"),
                    proc.log()
                ),
            };
            if let Some((_, rest)) = line.split_once(" on port ") {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                pg_port = digits.parse().ok();
            }
            if let Some((_, rest)) = line.split_once("DATABASE_URL=") {
                url = Some(rest.trim().to_owned());
            }
            if let Some((_, rest)) = line.split_once("metrics: http://") {
                http = rest.strip_suffix("/metrics").and_then(|a| a.parse().ok());
            }
            if line.starts_with("Press Ctrl-C") {
                let banner = seen.join("\n");
                return Banner {
                    url: url.unwrap_or_else(|| panic!("no DATABASE_URL in the banner:\n{banner}")),
                    pg_port: pg_port.unwrap_or_else(|| {
                        panic!("the banner names no PostgreSQL port:\n{banner}")
                    }),
                    http,
                };
            }
            seen.push(line);
        }
    }

    #[test]
    fn demo_serves_psql_and_cleans_up_on_sigint() {
        let (listen, http) = two_free_addrs();
        let mut demo = Proc::spawn(
            pgweir_command(&[
                "demo",
                "--listen",
                &listen.to_string(),
                "--http-listen",
                &http.to_string(),
            ]),
            Stdio::piped(),
        );
        let stdout = demo.child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Keeps reading to EOF so the demo never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let Banner {
            url,
            pg_port,
            http: shown_http,
        } = read_banner(&lines, &mut demo, Duration::from_secs(60));
        assert!(
            url.contains(&format!("@{listen}/")),
            "demo ignored --listen {listen}: {url}"
        );
        assert_eq!(shown_http, Some(http), "the banner's metrics URL");
        let pg_addr = SocketAddr::from(([127, 0, 0, 1], pg_port));
        assert!(
            accepts(pg_addr),
            "the demo's PostgreSQL is not on port {pg_port}"
        );

        let bin_dir = pgweir::cluster::find_bin_dir().expect("PostgreSQL binaries");
        let out = psql(&bin_dir, &url, "select 1", None);
        assert!(
            out.status.success(),
            "psql {url}: {}\n--- pgweir log ---\n{}",
            describe(&out),
            demo.log()
        );
        assert_eq!(text(&out.stdout).trim(), "1");
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(
                http_status(http, path),
                Some(200),
                "GET {path} on {http}:\n{}",
                demo.log()
            );
        }

        assert!(demo.signal(libc::SIGINT), "the demo exited before SIGINT");
        let status = demo.wait_for_exit(Duration::from_secs(20));
        let log = demo.log();
        let status =
            status.unwrap_or_else(|| panic!("demo still running 20 s after SIGINT:\n{log}"));
        assert!(status.success(), "demo exit after SIGINT: {status}\n{log}");

        // Drop stops PostgreSQL synchronously; the bounded poll only absorbs slow teardown.
        let deadline = Instant::now() + Duration::from_secs(10);
        while accepts(pg_addr) {
            assert!(
                Instant::now() < deadline,
                "the demo's PostgreSQL still accepts connections on {pg_addr} after pgweir exited:\n{log}"
            );
            thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !accepts(listen),
            "{listen} still accepts after the demo exited"
        );
        assert!(!accepts(http), "{http} still accepts after the demo exited");
    }
}
