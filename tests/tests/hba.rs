//! `auth_type = "hba"` with an `auth_hba_file`: the first rule matching a client's
//! address, TLS state, database and user picks its login method, with PostgreSQL's
//! 28000 answers when no rule matches or the rule rejects. Real clients (tokio-postgres
//! from two loopback addresses, psql with and without TLS and with a certificate).

mod admin_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use weir_config::{AuthType, Config, DatabaseConfig, PoolMode, SslMode};
use weir_tests::certs::make_certs;
use weir_tests::pg::{psql_output, run_psql};
use weir_tests::{
    app_config, start_proxy, APP_DB, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER,
};

/// `config` with `rules` as its hba file (written into `dir`).
fn with_hba(mut config: Config, dir: &Path, rules: &str) -> Config {
    let path = dir.join("hba.conf");
    std::fs::write(&path, rules).expect("write hba file");
    config.auth_type = AuthType::Hba;
    config.auth_hba_file = Some(path);
    config.read_hba_file().expect("hba file parses");
    config.validate().expect("valid config");
    config
}

/// Logs in from `source` (a loopback address) with tokio-postgres.
async fn connect_from(
    source: &str,
    proxy: SocketAddr,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind the source address");
    let stream = socket.connect(proxy).await.expect("tcp connect");
    let mut config = tokio_postgres::Config::new();
    config.user(user).password(password).dbname(db);
    let (client, connection) = config.connect_raw(stream, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn refusal(r: Result<tokio_postgres::Client, tokio_postgres::Error>) -> (SqlState, String) {
    let Err(e) = r else {
        panic!("login was accepted")
    };
    let db = e.as_db_error().expect("an ErrorResponse");
    (db.code().clone(), db.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_pick_the_method_by_address_user_and_database() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = app_config(PoolMode::Transaction, 2);
    let app = config.databases[APP_DB].clone();
    config.databases.insert(
        "other".to_owned(),
        DatabaseConfig {
            dbname: Some(APP_DB.to_owned()),
            ..app
        },
    );
    let config = with_hba(
        config,
        tmp.path(),
        &format!(
            "# test rules\n\
             host  all  \"{MD5_USER}\"  127.0.0.1/32  reject\n\
             host  all  all  127.0.0.2  255.255.255.255  password  # clear text from .2\n\
             host  {APP_DB}  all  127.0.0.1/32  scram-sha-256\n"
        ),
    );
    let proxy = start_proxy(config).await;

    let (code, message) =
        refusal(connect_from("127.0.0.1", proxy.addr, MD5_USER, MD5_PASSWORD, APP_DB).await);
    assert_eq!(code, SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert_eq!(
        message,
        format!("pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{MD5_USER}\", database \"{APP_DB}\", no encryption")
    );

    // From 127.0.0.2 the password rule applies: a clear-text password, checked.
    let client = connect_from("127.0.0.2", proxy.addr, SCRAM_USER, SCRAM_PASSWORD, APP_DB)
        .await
        .expect("password method");
    client.simple_query("select 1").await.unwrap();
    let (code, _) =
        refusal(connect_from("127.0.0.2", proxy.addr, SCRAM_USER, "nope", APP_DB).await);
    assert_eq!(code, SqlState::INVALID_PASSWORD);

    // From 127.0.0.1 SCRAM, with psql too.
    let client = connect_from("127.0.0.1", proxy.addr, SCRAM_USER, SCRAM_PASSWORD, APP_DB)
        .await
        .expect("scram method");
    client.simple_query("select 1").await.unwrap();
    let out = run_psql(
        &proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB),
        &["-At", "-c", "select 42"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No rule for database `other` from 127.0.0.1.
    let (code, message) =
        refusal(connect_from("127.0.0.1", proxy.addr, SCRAM_USER, SCRAM_PASSWORD, "other").await);
    assert_eq!(code, SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert_eq!(
        message,
        format!("no pg_hba.conf entry for host \"127.0.0.1\", user \"{SCRAM_USER}\", database \"other\", no encryption")
    );
    proxy.stop().await;
}

/// psql's output and whether it succeeded.
async fn psql(url: String) -> (bool, String) {
    let (ok, text) = psql_output(url, &["-At", "-c", "select 40 + 2"]).await;
    (ok && text.contains("42"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostssl_and_hostnossl_follow_the_clients_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(tmp.path(), "pgweir hba CA");
    let mut config = app_config(PoolMode::Transaction, 2);
    config.client_tls_sslmode = SslMode::Prefer;
    config.client_tls_cert_file = Some(certs.server_cert());
    config.client_tls_key_file = Some(certs.server_key());
    let config = with_hba(
        config,
        tmp.path(),
        "hostssl   all all 127.0.0.1/32 scram-sha-256\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    );
    let proxy = start_proxy(config).await;
    let url = proxy.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB);
    let (ok, text) = psql(format!("{url}?sslmode=require")).await;
    assert!(ok, "over TLS: {text}");
    let (ok, text) = psql(format!("{url}?sslmode=disable")).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("pg_hba.conf rejects connection for host \"127.0.0.1\"")
            && text.contains("no encryption"),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_logs_in_the_user_its_certificate_names() {
    let tmp = tempfile::tempdir().unwrap();
    // The client certificate's CN is SCRAM_USER.
    let certs = make_certs(tmp.path(), "pgweir hba CA");
    let mut config = app_config(PoolMode::Transaction, 2);
    config.client_tls_sslmode = SslMode::VerifyCa;
    config.client_tls_cert_file = Some(certs.server_cert());
    config.client_tls_key_file = Some(certs.server_key());
    config.client_tls_ca_file = Some(certs.ca());
    let config = with_hba(config, tmp.path(), "hostssl all all 127.0.0.1/32 cert\n");
    let proxy = start_proxy(config).await;
    let tls = format!(
        "sslmode=require&sslcert={}&sslkey={}",
        certs.client_cert().display(),
        certs.client_key().display()
    );
    // No password given: the certificate is the proof.
    let (ok, text) = psql(format!(
        "postgres://{SCRAM_USER}@127.0.0.1:{}/{APP_DB}?{tls}",
        proxy.addr.port()
    ))
    .await;
    assert!(ok, "cert login: {text}");
    let (ok, text) = psql(format!(
        "postgres://{MD5_USER}@127.0.0.1:{}/{APP_DB}?{tls}",
        proxy.addr.port()
    ))
    .await;
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "certificate authentication failed for user \"{MD5_USER}\""
        )),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rereads_the_rules_and_keeps_the_old_ones_if_the_new_file_is_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let base = admin_support::admin_config(PoolMode::Transaction, 2);
    let hba = tmp.path().join("hba.conf");
    let config = with_hba(
        base.clone(),
        tmp.path(),
        &format!(
            "host all {MD5_USER} 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n"
        ),
    );
    // RELOAD re-reads the file as the binary does (Config::load reads it with the config).
    let loader: pgweir::admin::Loader = {
        let (base, hba) = (config.clone(), hba.clone());
        Arc::new(move || {
            let mut c = base.clone();
            c.auth_hba_file = Some(hba.clone());
            c.read_hba_file().map_err(|e| e.to_string())?;
            Ok(c)
        })
    };
    let pgweir = admin_support::start(config, Some(loader)).await;
    let md5 = || connect_from("127.0.0.1", pgweir.addr, MD5_USER, MD5_PASSWORD, APP_DB);
    let (code, _) = refusal(md5().await);
    assert_eq!(code, SqlState::INVALID_AUTHORIZATION_SPECIFICATION);

    std::fs::write(&hba, "host all all 127.0.0.1/32 md5\n").unwrap();
    admin_support::ok(&pgweir.admin("RELOAD"));
    md5().await.expect("allowed after RELOAD");

    // A bad file: RELOAD fails with file:line and the rules in force stay.
    std::fs::write(
        &hba,
        "host all all 127.0.0.1/32 md5\nhost all +staff all md5\n",
    )
    .unwrap();
    let err = admin_support::err(&pgweir.admin("RELOAD"));
    assert!(
        err.contains("hba.conf:2") && err.contains("+staff"),
        "{err}"
    );
    md5().await.expect("the previous rules still apply");
    pgweir.stop().await;
}
