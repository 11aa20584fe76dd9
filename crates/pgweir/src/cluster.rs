//! A throwaway PostgreSQL cluster for `pgweir demo` and the end-to-end tests.
//!
//! [`TempCluster::start`] runs `initdb` into a fresh temporary directory, starts a
//! postmaster on a free loopback port with durability turned off, and creates the
//! requested roles and databases; dropping the value stops the server and deletes
//! the directory. Everything is synchronous (`std::process`) and every external
//! command runs under a deadline, so a wedged server fails a test instead of
//! hanging it. PostgreSQL refuses to run as root, so when we are root the server
//! runs as the `postgres` user (the one the Debian packages create).

use std::fmt::Write as _;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

mod os;
mod setup;

use os::{
    clean_env, describe_status, effective_uid, is_port_clash, make_root_dir, passwd_ids,
    pick_free_port, process_alive,
};
pub use os::{find_bin_dir, run_bounded, BoundedOutput};
use setup::{pct, setup_sql, validate};

/// Name of the bootstrap superuser (`initdb -U`), whatever OS user runs the server.
pub const SUPERUSER: &str = "postgres";
/// Seconds `pg_ctl -w -t` may wait for a start or a stop.
const PG_CTL_WAIT_SECS: u64 = 60;
/// Deadline for any one helper command; above `PG_CTL_WAIT_SECS` so pg_ctl reports first.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
/// Free-port picks to try when another process grabs the port between pick and bind.
const PORT_ATTEMPTS: u32 = 5;
/// Oldest PostgreSQL major version we run against.
const MIN_MAJOR: u32 = 15;

/// Why a temporary cluster could not be started, used or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable `pg_ctl`/`initdb`/`postgres` was found.
    #[error(
        "PostgreSQL {MIN_MAJOR}+ binaries not found (looked at {searched}): \
         install postgresql-15 (`apt-get install postgresql-15`) or set PGWEIR_PG_BIN to its bin directory"
    )]
    BinariesNotFound {
        /// The places that were looked at.
        searched: String,
    },
    /// Running as root but there is no `postgres` user to run the server as.
    #[error(
        "running as root, but /etc/passwd has no `postgres` user to run PostgreSQL as \
         (PostgreSQL refuses root): install postgresql-15 or create that user"
    )]
    NoPostgresUser,
    /// The options cannot be turned into a cluster.
    #[error("invalid cluster options: {0}")]
    InvalidOptions(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A PostgreSQL tool exited unsuccessfully.
    #[error("{what} failed ({status}): {stderr}")]
    CommandFailed {
        /// The command, in words.
        what: String,
        /// How it exited.
        status: String,
        /// Its stderr (and stdout when stderr was empty).
        stderr: String,
    },
    /// A PostgreSQL tool did not finish in time and was killed.
    #[error("{what} did not finish within {secs} s and was killed")]
    Timeout {
        /// The command, in words.
        what: String,
        /// The deadline.
        secs: u64,
    },
    /// The server did not come up; carries the end of its log.
    #[error("PostgreSQL did not start: {detail}\n--- end of {log} ---\n{log_tail}")]
    StartFailed {
        /// The pg_ctl error.
        detail: String,
        /// Path of the server log.
        log: String,
        /// Its last lines.
        log_tail: String,
    },
    /// SQL sent through psql failed.
    #[error("SQL failed in database {db:?}: {stderr} (SQL: {sql})")]
    Sql {
        /// Database it ran in.
        db: String,
        /// The start of the SQL text.
        sql: String,
        /// psql's error output.
        stderr: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// What to create in a [`TempCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `max_connections` of the server (default 300: enough for 256 direct clients).
    pub max_connections: u32,
    /// Login roles to create, each with its own pg_hba.conf method.
    pub users: Vec<ClusterUser>,
    /// Databases to create, as (database, owner) pairs; owners must be listed in `users`
    /// or be [`SUPERUSER`].
    pub databases: Vec<(String, String)>,
    /// Fixed TCP port; `None` picks a free one.
    pub port: Option<u16>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            max_connections: 300,
            users: Vec::new(),
            databases: Vec::new(),
            port: None,
        }
    }
}

/// A login role; its password is stored as SCRAM or md5 according to `method`
/// (SCRAM for [`AuthMethod::Trust`]).
#[derive(Debug, Clone)]
pub struct ClusterUser {
    /// Role name.
    pub name: String,
    /// Password, stored hashed.
    pub password: String,
    /// How TCP logins of this role are checked.
    pub method: AuthMethod,
}

impl ClusterUser {
    /// A user with the given name, password and method.
    pub fn new(name: &str, password: &str, method: AuthMethod) -> Self {
        ClusterUser {
            name: name.to_owned(),
            password: password.to_owned(),
            method,
        }
    }
}

/// pg_hba.conf method for a user's TCP logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `scram-sha-256`, password stored as a SCRAM secret.
    Scram,
    /// `md5`, password stored as an md5 hash (so the server really asks for md5).
    Md5,
    /// `trust`: no password asked.
    Trust,
}

impl AuthMethod {
    fn hba(self) -> &'static str {
        match self {
            AuthMethod::Scram => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }

    fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::Scram | AuthMethod::Trust => "scram-sha-256",
        }
    }
}

/// A running throwaway PostgreSQL cluster; dropping it stops the server
/// (`pg_ctl stop -m immediate`) and deletes its directory.
#[derive(Debug)]
pub struct TempCluster {
    // `Drop::drop` stops the server before fields drop, so this directory (with the
    // data dir, log and socket) is removed only once the postmaster is gone.
    root: tempfile::TempDir,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    /// (uid, gid) of `postgres` when we are root.
    run_as: Option<(u32, u32)>,
}

impl TempCluster {
    /// Finds PostgreSQL 15+ binaries, runs initdb into a fresh temp dir, starts the
    /// server on a free loopback port and creates the users and databases.
    ///
    /// # Errors
    /// [`ClusterError::BinariesNotFound`] without PostgreSQL, [`ClusterError::StartFailed`]
    /// with the server log when it does not come up, or the failing step's error.
    pub fn start(opts: ClusterOptions) -> Result<TempCluster, ClusterError> {
        validate(&opts)?;
        let bin_dir = find_bin_dir()?;
        let run_as = if effective_uid()? == 0 {
            let passwd =
                fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
            Some(passwd_ids(&passwd, "postgres").ok_or(ClusterError::NoPostgresUser)?)
        } else {
            None
        };
        let root = make_root_dir()?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).map_err(io_err(
                format!("chown {} to postgres", root.path().display()),
            ))?;
        }
        let data_dir = root.path().join("data");
        let mut cluster = TempCluster {
            root,
            data_dir,
            bin_dir,
            port: 0,
            run_as,
        };

        let mut initdb = cluster.pg_command("initdb");
        initdb.arg("-D").arg(&cluster.data_dir);
        initdb.args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
            "--no-instructions",
        ]);
        cluster.run_checked(&mut initdb, "initdb")?;
        cluster.write_hba(&opts.users)?;
        cluster.append_config_include()?;

        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.port = match opts.port {
                Some(port) => port,
                None => pick_free_port()?,
            };
            cluster.write_settings(opts.max_connections)?;
            match cluster.start_server() {
                Ok(()) => break,
                Err(ClusterError::StartFailed { log_tail, .. })
                    if opts.port.is_none()
                        && attempt < PORT_ATTEMPTS
                        && is_port_clash(&log_tail) =>
                {
                    tracing::debug!(
                        port = cluster.port,
                        "port taken before PostgreSQL bound it, retrying"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let setup = setup_sql(&opts);
        if !setup.is_empty() {
            cluster.psql("postgres", &setup)?;
        }
        tracing::debug!(port = cluster.port, dir = %cluster.root.path().display(), "temporary PostgreSQL started");
        Ok(cluster)
    }

    /// Address the server listens on (always `127.0.0.1`).
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// TCP port of the server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory holding `initdb`, `pg_ctl`, `psql`, `pgbench`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Directory of the server's unix socket: the temp root that also holds the data
    /// dir and `postgres.log`, deleted on drop.
    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    /// The server log file.
    pub fn log_file(&self) -> PathBuf {
        self.root.path().join("postgres.log")
    }

    /// `postgres://user:password@127.0.0.1:port/db`, with the parts percent-encoded.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            pct(user),
            pct(password),
            self.host(),
            self.port,
            pct(db)
        )
    }

    /// Runs SQL as the superuser through psql over the unix socket (statements one
    /// by one, stopping at the first error); returns stdout in `-At` form without
    /// the trailing newline.
    ///
    /// # Errors
    /// [`ClusterError::Sql`] with psql's stderr when a statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, ClusterError> {
        let mut cmd = self.psql_command();
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
            "-U",
            SUPERUSER,
            "-d",
            db,
        ]);
        cmd.arg("-h")
            .arg(self.root.path())
            .arg("-p")
            .arg(self.port.to_string());
        let out = run_bounded(&mut cmd, Some(sql.as_bytes()), COMMAND_TIMEOUT).map_err(io_err(
            format!("running psql from {}", self.bin_dir.display()),
        ))?;
        if out.timed_out || !out.output.status.success() {
            let mut stderr = String::from_utf8_lossy(&out.output.stderr)
                .trim()
                .to_owned();
            if out.timed_out {
                let _ = write!(stderr, " (killed after {} s)", COMMAND_TIMEOUT.as_secs());
            }
            let sql = sql.chars().take(200).collect();
            return Err(ClusterError::Sql {
                db: db.to_owned(),
                sql,
                stderr,
            });
        }
        let stdout = String::from_utf8_lossy(&out.output.stdout);
        Ok(stdout.trim_end_matches('\n').to_owned())
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`, like a crash); a no-op
    /// when it is not running. With `synchronous_commit = off` the last few hundred
    /// milliseconds of commits may be lost, as in a real crash.
    ///
    /// # Errors
    /// The pg_ctl failure.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        self.stop_mode("immediate")
    }

    /// Stops the server (`-m fast`) if it runs, then starts it again on the same port:
    /// for tests where the server goes away and comes back.
    ///
    /// # Errors
    /// The pg_ctl failure, or [`ClusterError::StartFailed`] with the log.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.stop_mode("fast")?;
        self.start_server()
    }

    /// PID of the running postmaster, from `postmaster.pid`; `None` when it is not running.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    /// Spawns a watchdog (`sh`, stdio on /dev/null) that, once this process has
    /// exited however it exits, stops the server (SIGQUIT, as `pg_ctl stop -m
    /// immediate` sends; SIGKILL after 10 s) and deletes the temp dir. For clusters
    /// whose `Drop` may never run: a `static`, or a process killed by a signal.
    ///
    /// # Errors
    /// Spawning `sh` failed.
    pub fn stop_on_exit(&self) -> Result<(), ClusterError> {
        self.spawn_watchdog(std::process::id())
    }

    fn spawn_watchdog(&self, watched: u32) -> Result<(), ClusterError> {
        // $1 = the watched process, $2 = the temp root. The postmaster PID is read
        // once it is gone, so a restart in between is handled and a normal Drop (no
        // pid file left) makes this a no-op.
        const SCRIPT: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null) || pid=
if [ -n "$pid" ]; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while [ "$i" -lt 10 ] && kill -0 "$pid" 2>/dev/null; do sleep 1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$2"
"#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(SCRIPT).arg("pgweir-pg-watchdog");
        cmd.arg(watched.to_string()).arg(self.root.path());
        // Null stdio: it must not hold a test runner's output pipes open.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Never waited for on purpose: it outlives us and is then reaped by init.
        let _watchdog = cmd
            .spawn()
            .map_err(io_err("spawning the cluster watchdog (sh)"))?;
        Ok(())
    }

    fn stop_mode(&mut self, mode: &str) -> Result<(), ClusterError> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t"]);
        cmd.arg(PG_CTL_WAIT_SECS.to_string()).arg("stop");
        self.run_checked(&mut cmd, "pg_ctl stop").map(drop)
    }

    fn start_server(&self) -> Result<(), ClusterError> {
        let log = self.log_file();
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t"]);
        cmd.arg(PG_CTL_WAIT_SECS.to_string()).arg("start");
        match self.run_checked(&mut cmd, "pg_ctl start") {
            Ok(_) => Ok(()),
            Err(e) => {
                // Only this attempt's lines: an earlier port clash must not look like this one.
                let text = fs::read(&log).unwrap_or_default();
                let fresh = text
                    .get(usize::try_from(log_start).unwrap_or(0)..)
                    .unwrap_or(&[]);
                let fresh = String::from_utf8_lossy(fresh);
                let lines: Vec<&str> = fresh.lines().collect();
                let log_tail = lines[lines.len().saturating_sub(20)..].join("\n");
                Err(ClusterError::StartFailed {
                    detail: e.to_string(),
                    log: log.display().to_string(),
                    log_tail,
                })
            }
        }
    }

    fn write_hba(&self, users: &[ClusterUser]) -> Result<(), ClusterError> {
        let mut hba = String::from("# written by pgweir TempCluster\nlocal all all trust\n");
        let _ = writeln!(hba, "host all {SUPERUSER} 127.0.0.1/32 trust");
        for user in users {
            let _ = writeln!(
                hba,
                "host all \"{}\" 127.0.0.1/32 {}",
                user.name,
                user.method.hba()
            );
        }
        self.write_file("pg_hba.conf", &hba)
    }

    fn append_config_include(&self) -> Result<(), ClusterError> {
        let path = self.data_dir.join("postgresql.conf");
        let mut conf =
            fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
        conf.push_str("\ninclude 'pgweir.conf'\n");
        self.write_file("postgresql.conf", &conf)
    }

    fn write_settings(&self, max_connections: u32) -> Result<(), ClusterError> {
        let socket_dir = self.root.path().display().to_string().replace('\'', "''");
        let conf = format!(
            "# written by pgweir TempCluster: a throwaway server, durability off\n\
             listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{socket_dir}'\n\
             max_connections = {max_connections}\nshared_buffers = 32MB\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\n",
            self.port
        );
        self.write_file("pgweir.conf", &conf)
    }

    /// Writes a file in the data dir, owned by the server's user.
    fn write_file(&self, name: &str, text: &str) -> Result<(), ClusterError> {
        let path = self.data_dir.join(name);
        fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// A server-side tool (initdb, pg_ctl) run as the server's user from the temp root.
    fn pg_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        clean_env(&mut cmd);
        // The caller's cwd (e.g. /root) may be unreadable for `postgres`.
        cmd.current_dir(self.root.path());
        if let Some((uid, gid)) = self.run_as {
            // std drops root's supplementary groups when it changes uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn psql_command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        clean_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    fn run_checked(&self, cmd: &mut Command, what: &str) -> Result<Output, ClusterError> {
        let out = run_bounded(cmd, None, COMMAND_TIMEOUT).map_err(io_err(format!(
            "running {what} from {}",
            self.bin_dir.display()
        )))?;
        if out.timed_out {
            return Err(ClusterError::Timeout {
                what: what.to_owned(),
                secs: COMMAND_TIMEOUT.as_secs(),
            });
        }
        if !out.output.status.success() {
            let mut stderr = String::from_utf8_lossy(&out.output.stderr)
                .trim()
                .to_owned();
            if stderr.is_empty() {
                stderr = String::from_utf8_lossy(&out.output.stdout)
                    .trim()
                    .to_owned();
            }
            return Err(ClusterError::CommandFailed {
                what: what.to_owned(),
                status: describe_status(out.output.status),
                stderr,
            });
        }
        Ok(out.output)
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "pg_ctl stop failed; killing the postmaster");
            if let Some(pid) = self.postmaster_pid() {
                let mut kill = Command::new("kill");
                kill.args(["-KILL", &pid.to_string()]);
                let _ = run_bounded(&mut kill, None, Duration::from_secs(5));
                let deadline = Instant::now() + Duration::from_secs(5);
                while process_alive(pid) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        // `root` (the TempDir) is removed right after this, with the data dir inside.
    }
}

#[cfg(test)]
mod tests;
