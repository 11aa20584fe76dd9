//! The OS side of [`TempCluster`](super::TempCluster): finding PostgreSQL binaries, users,
//! processes and free ports, and running commands under a deadline.

use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{fs, thread};

use super::{io_err, ClusterError, MIN_MAJOR};

/// The bin directory of PostgreSQL 15+: `$PGWEIR_PG_BIN` if set, else that of
/// `pg_ctl` on PATH when it is 15 or newer, else the newest `/usr/lib/postgresql/*/bin`.
///
/// # Errors
/// [`ClusterError::BinariesNotFound`] naming the places looked at.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os("PGWEIR_PG_BIN") {
        let dir = PathBuf::from(dir);
        searched.push(format!("PGWEIR_PG_BIN={}", dir.display()));
        if has_server_tools(&dir) {
            return Ok(dir);
        }
    }
    searched.push("pg_ctl on PATH".to_owned());
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let pg_ctl = dir.join("pg_ctl");
        if !pg_ctl.is_file() {
            continue;
        }
        let version = run_bounded(
            Command::new(&pg_ctl).arg("--version"),
            None,
            Duration::from_secs(10),
        );
        let major = version
            .ok()
            .and_then(|v| major_version(&String::from_utf8_lossy(&v.output.stdout)));
        // Debian links pg_ctl into PATH; the real directory holds initdb and postgres.
        if let (Some(major), Ok(real)) = (major, fs::canonicalize(&pg_ctl)) {
            if major >= MIN_MAJOR {
                if let Some(bin) = real.parent().filter(|d| has_server_tools(d)) {
                    return Ok(bin.to_path_buf());
                }
            }
        }
    }
    searched.push("/usr/lib/postgresql/*/bin".to_owned());
    let newest = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse::<u32>().ok()?,
                e.path().join("bin"),
            ))
        })
        .filter(|(major, bin)| *major >= MIN_MAJOR && has_server_tools(bin))
        .max_by_key(|(major, _)| *major);
    match newest {
        Some((_, bin)) => Ok(bin),
        None => Err(ClusterError::BinariesNotFound {
            searched: searched.join(", "),
        }),
    }
}

pub(super) fn has_server_tools(dir: &Path) -> bool {
    ["pg_ctl", "initdb", "postgres", "psql"]
        .iter()
        .all(|t| dir.join(t).is_file())
}

/// Major version from `pg_ctl --version` output, e.g. `pg_ctl (PostgreSQL) 15.18 (Debian ...)`.
pub(super) fn major_version(text: &str) -> Option<u32> {
    let rest = text.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// (uid, gid) of `user` in /etc/passwd-formatted text.
pub(super) fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// Effective uid, from /proc (no unsafe libc call needed).
pub(super) fn effective_uid() -> Result<u32, ClusterError> {
    let status =
        fs::read_to_string("/proc/self/status").map_err(io_err("reading /proc/self/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| ClusterError::Io {
            context: "reading the effective uid".into(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                "no Uid: line in /proc/self/status",
            ),
        })
}

/// Whether `pid` exists and is not a zombie (a dead postmaster nobody reaped yet).
pub(super) fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')').and_then(|i| stat.get(i + 1..)) {
            Some(rest) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// A fresh temp root whose socket path stays under the 107-byte unix limit and which
/// `postgres` can reach when we are root (`$TMPDIR` may be under /root).
pub(super) fn make_root_dir() -> Result<tempfile::TempDir, ClusterError> {
    let env_tmp = std::env::temp_dir();
    let parent = if effective_uid()? == 0 || env_tmp.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        env_tmp
    };
    tempfile::Builder::new()
        .prefix("pgweir-pg-")
        .tempdir_in(&parent)
        .map_err(io_err(format!(
            "creating a temp dir in {}",
            parent.display()
        )))
}

/// A port that was free a moment ago (the kernel picks it; we release it for PostgreSQL).
pub(super) fn pick_free_port() -> Result<u16, ClusterError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(io_err("binding 127.0.0.1:0 to pick a port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("reading the picked port"))?
        .port())
}

pub(super) fn is_port_clash(log: &str) -> bool {
    log.contains("could not bind")
        || log.contains("Address already in use")
        || log.contains("could not create any TCP/IP")
}

/// Drops inherited `PG*` variables (PGHOST, PGDATA, PGOPTIONS, ...) that would
/// redirect or alter the tools, and fixes the message language for error matching.
pub(super) fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C");
}

pub(super) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// Output of [`run_bounded`].
#[derive(Debug)]
pub struct BoundedOutput {
    /// Status and captured stdout/stderr.
    pub output: Output,
    /// True when the deadline passed and the child was killed.
    pub timed_out: bool,
}

/// Runs `cmd` with piped stdout/stderr, `stdin` fed to it (or /dev/null), and kills it
/// (SIGKILL, that child only) if it outlives `timeout`.
///
/// # Errors
/// Spawning or waiting failed.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<BoundedOutput> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // A thread, so a child that does not read its input cannot block us; EPIPE is its business.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    // A grandchild (a daemon) could keep a pipe open; don't wait for it forever.
    let grace = Duration::from_secs(2);
    let output = Output {
        status,
        stdout: stdout.recv_timeout(grace).unwrap_or_default(),
        stderr: stderr.recv_timeout(grace).unwrap_or_default(),
    };
    Ok(BoundedOutput { output, timed_out })
}

pub(super) fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}
