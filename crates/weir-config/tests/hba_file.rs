//! `auth_hba_file`: read with the config (relative to it), errors name file and line,
//! and it goes with `auth_type = "hba"`.

use std::fs;

use weir_config::hba::HbaMethod;
use weir_config::{AuthType, Config};

const BASE: &str = "[databases.app]\nhost = \"127.0.0.1\"\n";

#[test]
fn the_rules_load_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hba.conf"), "host all all 0.0.0.0/0 md5\n").unwrap();
    let path = dir.path().join("proxy.toml");
    fs::write(
        &path,
        format!("auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n{BASE}"),
    )
    .unwrap();
    let config = Config::load(&path).expect("loads");
    assert_eq!(config.auth_type, AuthType::Hba);
    assert_eq!(config.auth_hba_file, Some(dir.path().join("hba.conf")));
    let rules = config.hba.expect("rules read");
    assert_eq!(rules.rules[0].method, HbaMethod::Md5);
}

#[test]
fn a_bad_rule_is_an_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("hba.conf");
    fs::write(&hba, "# ok\nhost all +staff 0.0.0.0/0 md5\n").unwrap();
    let path = dir.path().join("proxy.toml");
    fs::write(
        &path,
        format!("auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n{BASE}"),
    )
    .unwrap();
    let e = Config::load(&path).expect_err("bad rule").to_string();
    assert!(
        e.starts_with(&format!("{}:2: ", hba.display())) && e.contains("+staff"),
        "{e}"
    );
}

#[test]
fn hba_and_its_file_go_together() {
    let e = Config::from_toml_str(&format!("auth_type = \"hba\"\n{BASE}"), "t.toml")
        .expect_err("no file");
    assert!(e.to_string().contains("needs auth_hba_file"), "{e}");
    let e = Config::from_toml_str(&format!("auth_hba_file = \"x\"\n{BASE}"), "t.toml")
        .expect_err("file without hba");
    assert!(e.to_string().contains("only used with auth_type"), "{e}");
}
