//! README.md's generated parts stay generated: the metrics reference between the
//! `metrics-doc` markers must equal what `pgweir metrics-doc` prints (the same
//! collector `/metrics` uses), and the binary's `import` and `metrics-doc` subcommands
//! work as the README shows. `PGWEIR_BLESS=1` rewrites the README section instead of
//! failing.

use std::path::PathBuf;
use std::process::Command;

const BEGIN: &str = "<!-- metrics-doc:begin -->\n";
const END: &str = "<!-- metrics-doc:end -->";

fn readme() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")
}

#[test]
fn readme_metrics_reference_is_what_metrics_doc_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgweir"))
        .arg("metrics-doc")
        .output()
        .expect("pgweir metrics-doc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(
        generated,
        weir_admin::metrics_doc::render(),
        "the subcommand prints the render"
    );
    let text = std::fs::read_to_string(readme()).expect("read README.md");
    let start = text
        .find(BEGIN)
        .expect("README has the metrics-doc:begin marker")
        + BEGIN.len();
    let end = text
        .find(END)
        .expect("README has the metrics-doc:end marker");
    if text[start..end] == generated {
        return;
    }
    if std::env::var("PGWEIR_BLESS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{generated}{}", &text[..start], &text[end..]);
        std::fs::write(readme(), updated).expect("write README.md");
        return;
    }
    panic!(
        "README.md's metrics reference differs from `pgweir metrics-doc`; regenerate it with \
         PGWEIR_BLESS=1 cargo nextest run -p pgweir --test readme\n--- README\n{}\n--- generated\n{generated}",
        &text[start..end]
    );
}

#[test]
fn import_subcommand_writes_toml_on_stdout_and_notes_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        "[databases]\napp = host=db.internal dbname=app\n[pgbouncer]\nlisten_addr = *\n\
         listen_port = 6432\nlogfile = /var/log/pgbouncer.log\nreserve_pool_size = 5\n\
         server_round_robin = 1\n",
    )
    .expect("write ini");
    let out = Command::new(env!("CARGO_BIN_EXE_pgweir"))
        .arg("import")
        .arg(&ini)
        .output()
        .expect("pgweir import runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let config = weir_config::Config::from_toml_str(&stdout, "stdout").expect("valid proxy.toml");
    assert_eq!(config.listen.to_string(), "0.0.0.0:6432");
    assert!(
        stderr.contains("pgbouncer.ini:6: ignored: logfile"),
        "{stderr}"
    );
    assert_eq!(config.reserve_pool_size, 5);
    assert!(
        stderr.contains("pgbouncer.ini:8: unsupported: server_round_robin"),
        "{stderr}"
    );
    // A missing file is an error with the path, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_pgweir"))
        .args(["import", "/nonexistent/pgbouncer.ini"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pgbouncer.ini"));
}
