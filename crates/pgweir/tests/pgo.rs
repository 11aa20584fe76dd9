//! The release build's profile-guided optimization: cargo runs every rustc through
//! `pgo/rustc-wrapper` (`.cargo/config.toml`), which adds the committed profile to
//! optimized builds by a compiler whose LLVM can read it. These tests run the wrapper
//! with a stand-in compiler that reports the LLVM version it is told to and otherwise
//! prints its arguments, so what the wrapper would pass to rustc is what it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A stand-in rustc: `-vV` reports LLVM `$FAKE_LLVM`, anything else is echoed.
fn fake_rustc(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("rustc");
    std::fs::write(
        &path,
        "#!/bin/sh\nif [ \"$1\" = -vV ]; then echo \"LLVM version: $FAKE_LLVM\"; exit 0; fi\necho \"$@\"\n",
    )
    .expect("write the stand-in");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The LLVM major version the committed profile was written by.
fn profile_llvm() -> u32 {
    std::fs::read_to_string(repo().join("pgo/llvm-major"))
        .expect("pgo/llvm-major")
        .trim()
        .parse()
        .expect("a number")
}

/// The arguments the wrapper hands a compiler with LLVM `llvm` for `args`, with `env`
/// set.
fn wrapped(llvm: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(repo().join("pgo/rustc-wrapper"))
        .arg(fake_rustc(dir.path()))
        .args(args)
        .env_remove("PGWEIR_PGO")
        .env("FAKE_LLVM", llvm)
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
    let llvm = format!("{}.1.2", profile_llvm());
    let args = wrapped(&llvm, &["--crate-name", "x", "-C", "opt-level=3"], &[]);
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
    let llvm = format!("{}.1.2", profile_llvm());
    for args in [
        // A debug build, and rustc asked where its sysroot is.
        &["--crate-name", "x", "-C", "opt-level=0"][..],
        &["--print", "sysroot"][..],
        // Already profiling, before or after the optimization level.
        &["-C", "opt-level=3", "-Cprofile-generate=/tmp/p"][..],
        &["-Cprofile-generate=/tmp/p", "-C", "opt-level=3"][..],
        &["-C", "opt-level=3", "-Cinstrument-coverage"][..],
        // cargo fuzz's sanitizer coverage.
        &["-C", "opt-level=3", "-Cpasses=sancov-module"][..],
    ] {
        assert_eq!(wrapped(&llvm, args, &[]), args.join(" "));
    }
    let off = ["-C", "opt-level=3"];
    assert_eq!(wrapped(&llvm, &off, &[("PGWEIR_PGO", "0")]), off.join(" "));
    // An LLVM older than the profile's cannot read it (rust-version allows one).
    let older = format!("{}.1.7", profile_llvm() - 1);
    assert_eq!(wrapped(&older, &off, &[]), off.join(" "));
}
