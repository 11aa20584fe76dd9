//! The release build's profile-guided optimization: cargo runs every rustc through
//! `pgo/rustc-wrapper` (`.cargo/config.toml`), which adds the committed profile to
//! optimized builds only. These tests run the wrapper with `echo` as the compiler, so
//! what it would pass to rustc is what it prints.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The arguments the wrapper hands the compiler for `args`, with `env` set.
fn wrapped(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(repo().join("pgo/rustc-wrapper"))
        .arg("echo")
        .args(args)
        .env_remove("PGWEIR_PGO")
        .envs(env.iter().copied())
        .output()
        .expect("the wrapper runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

#[test]
fn cargo_runs_rustc_through_the_wrapper() {
    let config = std::fs::read_to_string(repo().join(".cargo/config.toml")).expect("config");
    assert!(
        config.contains("rustc-wrapper = \"pgo/rustc-wrapper\""),
        "{config}"
    );
    assert!(
        repo().join("pgo/pgweir.profdata").is_file(),
        "the profile is committed"
    );
}

#[test]
fn optimized_builds_get_the_profile() {
    let profile = repo()
        .join("pgo/pgweir.profdata")
        .canonicalize()
        .expect("profile");
    let args = wrapped(&["--crate-name", "x", "-C", "opt-level=3"], &[]);
    assert!(
        args.starts_with("--crate-name x -C opt-level=3 "),
        "the build's own arguments come first: {args}"
    );
    assert!(
        args.contains(&format!("-Cprofile-use={}", profile.display())),
        "{args}"
    );
    assert!(
        args.ends_with("-Cllvm-args=-no-pgo-warn-mismatch"),
        "{args}"
    );
}

#[test]
fn other_builds_run_rustc_unchanged() {
    for args in [
        // A debug build, and rustc asked for its version.
        &["--crate-name", "x", "-C", "opt-level=0"][..],
        &["-vV"][..],
        // Already profiling, before or after the optimization level.
        &["-C", "opt-level=3", "-Cprofile-generate=/tmp/p"][..],
        &["-Cprofile-generate=/tmp/p", "-C", "opt-level=3"][..],
        &["-C", "opt-level=3", "-Cinstrument-coverage"][..],
        // cargo fuzz's sanitizer coverage.
        &["-C", "opt-level=3", "-Cpasses=sancov-module"][..],
    ] {
        assert_eq!(wrapped(args, &[]), args.join(" "));
    }
    let off = ["-C", "opt-level=3"];
    assert_eq!(wrapped(&off, &[("PGWEIR_PGO", "0")]), off.join(" "));
}
