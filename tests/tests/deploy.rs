//! `deploy/` checked with real tools, offline:
//!
//! - every manifest under `deploy/k8s` validates (`deploy/check/validate.py`): core
//!   objects against the Kubernetes 1.29 and newest schemas of `kubernetes-validate`,
//!   strict; ServiceMonitor/PodMonitor against `deploy/check/schemas`; plus the sidecar,
//!   probe, drain, selector and reference rules; the validator fails on a broken copy;
//! - each ConfigMap's `proxy.toml` loads with pgweir's own config loader;
//! - `deploy/Dockerfile` passes hadolint;
//! - `deploy/entrypoint.sh` turns `DATABASE_URL` and a mounted file into pgweir's
//!   upstream and config, and passes subcommands through.
//!
//! The validators are installed on first use by `deploy/check/setup.sh` into
//! `target/deploy-check/venv` (`.ci/run` runs it first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use pgweir::cluster::run_bounded;
use weir_config::{Config, Overrides};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_owned()
}

fn venv_bin(name: &str) -> PathBuf {
    repo().join("target/deploy-check/venv/bin").join(name)
}

fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let out = run_bounded(cmd, None, timeout).expect("the command runs");
    assert!(!out.timed_out, "{cmd:?} timed out after {timeout:?}");
    out.output
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs deploy/check/setup.sh once per process (idempotent, locked).
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = run(
            &mut Command::new(repo().join("deploy/check/setup.sh")),
            Duration::from_secs(600),
        );
        assert!(
            out.status.success(),
            "deploy/check/setup.sh: {}",
            text(&out)
        );
    });
}

fn validate(k8s_dir: &Path, out_dir: &Path) -> Output {
    run(
        Command::new(venv_bin("python"))
            .arg(repo().join("deploy/check/validate.py"))
            .arg(k8s_dir)
            .arg(repo().join("deploy/check/schemas"))
            .arg(out_dir),
        Duration::from_secs(120),
    )
}

#[test]
fn manifests_validate_and_their_proxy_toml_loads() {
    setup();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = validate(&repo().join("deploy/k8s"), out_dir.path());
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    for must in [
        "Deployment/app: Kubernetes 1.29.0 schema (strict)",
        "Deployment/pgweir: Kubernetes 1.29.0 schema (strict)",
        "Service/pgweir",
        "PodDisruptionBudget/pgweir",
        "PodMonitor/app-pgweir: monitoring.coreos.com/v1",
        "ServiceMonitor/pgweir: monitoring.coreos.com/v1",
        "grace 45s > preStop 0.0s + shutdown_timeout 20.0s",
    ] {
        assert!(report.contains(must), "missing {must:?} in:\n{report}");
    }
    eprintln!("{report}");
    // The sidecar's file gets its database from PGWEIR_UPSTREAM (the Secret).
    let sidecar = std::fs::read_to_string(out_dir.path().join("sidecar-app-pgweir.toml"))
        .expect("sidecar proxy.toml written");
    let mut config = Config::from_toml_str(
        &format!("{sidecar}\n[databases.placeholder]\nhost = \"x\"\n"),
        "sidecar configmap",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    config
        .apply_overrides(&Overrides {
            upstream: Some("postgres://app:pw@db.internal:5432/app".to_owned()),
            ..Overrides::default()
        })
        .expect("with an upstream");
    assert_eq!(config.listen.to_string(), "127.0.0.1:6432");
    let standalone = std::fs::read_to_string(out_dir.path().join("standalone-pgweir.toml"))
        .expect("standalone proxy.toml written");
    let config = Config::from_toml_str(&standalone, "standalone configmap")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen.to_string(), "0.0.0.0:6432");
    assert!(config.databases.contains_key("app"));
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let k8s = dir.path().join("k8s/sidecar");
    std::fs::create_dir_all(&k8s).expect("mkdir");
    for entry in std::fs::read_dir(repo().join("deploy/k8s/sidecar")).expect("read dir") {
        let path = entry.expect("entry").path();
        let mut text = std::fs::read_to_string(&path).expect("read");
        if path.ends_with("deployment.yaml") {
            text = text
                .replace(
                    "terminationGracePeriodSeconds: 45",
                    "terminationGracePeriodSeconds: 15",
                )
                .replace(
                    "          restartPolicy: Always",
                    "          restartPolicy: Always\n          restartPolicyy: Always",
                );
        }
        std::fs::write(k8s.join(path.file_name().expect("name")), text).expect("write");
    }
    let out = validate(&dir.path().join("k8s"), &dir.path().join("out"));
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(report.contains("restartPolicyy"), "{report}");
    assert!(
        report.contains("terminationGracePeriodSeconds 15 must exceed"),
        "{report}"
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    setup();
    let out = run(
        Command::new(venv_bin("hadolint")).arg(repo().join("deploy/Dockerfile")),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "hadolint: {}", text(&out));
}

/// What the entrypoint execs, seen through a stub that prints its arguments and env.
fn entrypoint(args: &[&str], env: &[(&str, &str)], config_exists: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = dir.path().join("pgweir");
    std::fs::write(
        &stub,
        "#!/bin/sh\necho \"args=$* config=${PGWEIR_CONFIG:-} upstream=${PGWEIR_UPSTREAM:-}\"\n",
    )
    .expect("stub");
    let config = dir.path().join("proxy.toml");
    if config_exists {
        std::fs::write(&config, "").expect("config");
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut cmd = Command::new("sh");
    cmd.arg(repo().join("deploy/entrypoint.sh"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PGWEIR_ENTRYPOINT_BIN", &stub)
        .env("PGWEIR_ENTRYPOINT_CONFIG", &config)
        .envs(env.iter().copied());
    let out = run(&mut cmd, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace(&config.display().to_string(), "FILE")
}

#[test]
fn entrypoint_uses_database_url_and_a_mounted_config() {
    let url = "postgres://app:pw@db:5432/app";
    assert_eq!(
        entrypoint(&[], &[("DATABASE_URL", url)], false),
        format!("args= config= upstream={url}")
    );
    assert_eq!(entrypoint(&[], &[], true), "args= config=FILE upstream=");
    assert_eq!(
        entrypoint(
            &["--pool-mode", "session"],
            &[("DATABASE_URL", url), ("PGWEIR_UPSTREAM", "explicit")],
            true
        ),
        "args=--pool-mode session config=FILE upstream=explicit"
    );
    assert_eq!(
        entrypoint(&["check"], &[("DATABASE_URL", url)], true),
        "args=check config= upstream="
    );
}
