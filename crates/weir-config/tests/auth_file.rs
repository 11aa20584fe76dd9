//! The auth file (PgBouncer's userlist.txt) and how `load` merges it with `[users]`.

use std::fs;
use std::path::{Path, PathBuf};

use weir_config::auth_file::{self, AuthFileEntry};
use weir_config::{Config, ConfigError, PoolMode, Secret};

const MD5: &str = "md545f2603610af569b6155c45067268c6b";
const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$c3RvcmVka2V5:c2VydmVya2V5";

fn parse(text: &str) -> Result<Vec<AuthFileEntry>, ConfigError> {
    auth_file::parse(text, Path::new("userlist.txt"))
}

fn line_error(text: &str) -> (usize, String) {
    match parse(text) {
        Err(e @ ConfigError::AuthFile { line, .. }) => (line, e.to_string()),
        other => panic!("expected an AuthFile error, got {other:?}"),
    }
}

#[test]
fn parses_quotes_escapes_comments_and_secret_kinds() {
    let text = format!(
        "; PgBouncer comment\n\
         # hash comment\n\
         \n\
         \"alice\" \"plain pw\"\n\
         \t\"bob\"   \"{MD5}\"  extra columns are ignored\n\
         \"carol\" \"{SCRAM}\"\n\
         \"say \"\"hi\"\"\" \"a\"\"b\"\n\
         \"nopw\" \"\"\n"
    );
    let entries = parse(&text).expect("valid");
    let got: Vec<(&str, Option<&Secret>, usize)> = entries
        .iter()
        .map(|e| (e.user.as_str(), e.secret.as_ref(), e.line))
        .collect();
    assert_eq!(
        got,
        vec![
            ("alice", Some(&Secret::Plain("plain pw".into())), 4),
            ("bob", Some(&Secret::Md5(MD5.into())), 5),
            ("carol", Some(&Secret::Scram(SCRAM.into())), 6),
            ("say \"hi\"", Some(&Secret::Plain("a\"b".into())), 7),
            ("nopw", None, 8),
        ]
    );
}

#[test]
fn bad_lines_name_their_line() {
    let (line, msg) = line_error("\"ok\" \"pw\"\nalice \"pw\"\n");
    assert_eq!(line, 2);
    assert!(
        msg.starts_with("userlist.txt:2: user name: expected a value in double quotes"),
        "{msg}"
    );

    let (line, msg) = line_error("; c\n\n\"alice\n");
    assert_eq!(line, 3);
    assert!(msg.contains("missing closing double quote"), "{msg}");

    let (line, msg) = line_error("\"alice\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("expected the password"), "{msg}");

    let (line, msg) = line_error("\"alice\" pw\n");
    assert_eq!(line, 1);
    assert!(msg.contains("expected the password"), "{msg}");

    let (line, msg) = line_error("\"alice\" \"pw\n");
    assert_eq!(line, 1);
    assert!(
        msg.contains("password: missing closing double quote"),
        "{msg}"
    );

    let (line, msg) = line_error("\"\" \"pw\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("empty user name"), "{msg}");

    let (line, msg) = line_error("\"a\" \"1\"\n\"b\" \"2\"\n\"a\" \"3\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("listed twice (first on line 1)"), "{msg}");
}

#[test]
fn empty_file_is_fine() {
    assert_eq!(parse("").expect("valid"), vec![]);
    assert_eq!(parse("\n; only comments\n").expect("valid"), vec![]);
}

/// A directory with proxy.toml (auth_file = "users/userlist.txt") and that auth file.
fn setup(toml_extra: &str, userlist: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("users")).unwrap();
    fs::write(dir.path().join("users/userlist.txt"), userlist).unwrap();
    let config = dir.path().join("proxy.toml");
    fs::write(
        &config,
        format!(
            "auth_file = \"users/userlist.txt\"\n{toml_extra}\n[databases.app]\nhost = \"h\"\n"
        ),
    )
    .unwrap();
    (dir, config)
}

#[test]
fn load_resolves_relative_path_and_merges_users() {
    let userlist = format!("\"alice\" \"from-file\"\n\"carol\" \"{SCRAM}\"\n\"dave\" \"\"\n");
    let (dir, config) = setup(
        "[users.alice]\npassword = \"from-toml\"\n[users.carol]\npool_mode = \"session\"\n[users.erin]\npassword = \"e\"",
        &userlist,
    );
    let c = Config::load(&config).expect("valid");
    assert_eq!(c.auth_file, Some(dir.path().join("users/userlist.txt")));
    // [users] password wins; a [users] entry without a password keeps the file's.
    assert_eq!(
        c.users["alice"].password,
        Some(Secret::Plain("from-toml".into()))
    );
    assert_eq!(c.users["carol"].password, Some(Secret::Scram(SCRAM.into())));
    assert_eq!(c.users["carol"].pool_mode, Some(PoolMode::Session));
    assert_eq!(c.users["dave"].password, None);
    assert_eq!(c.users["erin"].password, Some(Secret::Plain("e".into())));
    // from_toml_str does not read the file.
    let text = fs::read_to_string(&config).unwrap();
    let c = Config::from_toml_str(&text, "proxy.toml").expect("valid");
    assert!(!c.users.contains_key("dave"));
}

#[test]
fn incompatible_secret_in_file_names_its_line() {
    let (dir, config) = setup("", &format!("\"a\" \"pw\"\n\"b\" \"{MD5}\"\n"));
    let err = Config::load(&config).expect_err("md5 hash with scram auth");
    match &err {
        ConfigError::AuthFile { path, line, .. } => {
            assert_eq!(path, &dir.path().join("users/userlist.txt"));
            assert_eq!(*line, 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("an md5 hash cannot verify SCRAM"),
        "{err}"
    );
    // ...but fine with md5 auth, or when [users] gives a usable password instead.
    let (_dir, config) = setup("auth_type = \"md5\"", &format!("\"b\" \"{MD5}\"\n"));
    Config::load(&config).expect("md5 auth takes md5 hashes");
    let (_dir, config) = setup(
        "[users.b]\npassword = \"pw\"",
        &format!("\"b\" \"{MD5}\"\n"),
    );
    Config::load(&config).expect("[users] password overrides the file's");
}

#[test]
fn md5_auth_takes_a_file_mixing_md5_and_scram_secrets() {
    // One userlist.txt copied from pg_authid: some users md5, some SCRAM (PgBouncer's
    // documented behaviour: under md5, a SCRAM secret logs its user in with SCRAM).
    let (_dir, config) = setup(
        "auth_type = \"md5\"",
        &format!("\"a\" \"{MD5}\"\n\"b\" \"{SCRAM}\"\n\"c\" \"plain\"\n"),
    );
    let c = Config::load(&config).expect("md5 auth takes md5 and SCRAM secrets together");
    assert_eq!(c.users["a"].password, Some(Secret::Md5(MD5.into())));
    assert_eq!(c.users["b"].password, Some(Secret::Scram(SCRAM.into())));
}

#[test]
fn malformed_auth_file_fails_load() {
    let (_dir, config) = setup("", "\"a\" \"pw\"\n\nbroken\n");
    let err = Config::load(&config).expect_err("bad line");
    assert!(
        matches!(err, ConfigError::AuthFile { line: 3, .. }),
        "{err}"
    );
}

#[test]
fn missing_files_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::load(&dir.path().join("nope.toml")).expect_err("missing");
    assert!(
        matches!(&err, ConfigError::Io { path, .. } if path.ends_with("nope.toml")),
        "{err}"
    );
    let config = dir.path().join("proxy.toml");
    fs::write(
        &config,
        "auth_file = \"missing.txt\"\n[databases.app]\nhost = \"h\"\n",
    )
    .unwrap();
    let err = Config::load(&config).expect_err("missing auth file");
    assert!(
        matches!(&err, ConfigError::Io { path, .. } if path == &dir.path().join("missing.txt")),
        "{err}"
    );
    assert!(err.to_string().contains("missing.txt"), "{err}");
}

#[test]
fn load_reports_file_name_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    fs::write(&config, "[databases.app]\nhost = \"h\"\n\npool_size = 0\n").unwrap();
    let err = Config::load(&config).expect_err("zero");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4: key `databases.app.pool_size`: must be at least 1",
            config.display()
        )
    );
}
