//! TLS on both legs against real PostgreSQL 15 and real clients: psql with every
//! sslmode and client certificates, a raw PostgreSQL 17-style direct TLS login,
//! plaintext refused where TLS is required, certificates reloaded without dropping
//! connections, and a server that accepts only `hostssl` logins. Certificates are
//! made at test time with the `openssl` CLI.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::raw::{self, RawClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use weir_config::{AuthType, Config, PoolMode, SslMode};
use weir_proxy::{Proxy, ProxyHandle};
use weir_tests::certs::{make_certs, Certs};
use weir_tests::pg::{psql_output, run_psql};
use weir_tests::{app_config, APP_DB, SCRAM_PASSWORD, SCRAM_USER};

fn with_client_tls(mut config: Config, certs: &Certs, mode: SslMode) -> Config {
    config.client_tls_sslmode = mode;
    config.client_tls_cert_file = Some(certs.server_cert());
    config.client_tls_key_file = Some(certs.server_key());
    config.client_tls_ca_file = Some(certs.ca());
    config
}

/// A proxy started by hand, so the test holds its handle (for RELOAD).
struct Running {
    addr: SocketAddr,
    handle: ProxyHandle,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run_proxy(config: Config) -> Running {
    let proxy = Proxy::bind(config).await.expect("proxy binds");
    let addr = proxy.local_addr();
    let handle = proxy.handle();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = proxy.run(token).await;
    });
    Running { addr, handle, stop }
}

fn url(addr: SocketAddr, query: &str) -> String {
    format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{}/{APP_DB}?{query}",
        addr.port()
    )
}

/// Runs psql's `\conninfo` and a query; returns (success, stdout + stderr).
async fn psql(url: String) -> (bool, String) {
    let (ok, text) = psql_output(url, &["-At", "-c", "\\conninfo", "-c", "SELECT 40 + 2"]).await;
    (ok && text.contains("42"), text)
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_with_every_sslmode() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let proxy = run_proxy(with_client_tls(
        app_config(PoolMode::Transaction, 2),
        &certs,
        SslMode::Prefer,
    ))
    .await;
    let ca = certs.ca().display().to_string();
    for (mode, encrypted) in [
        ("disable", false),
        // libpq's allow tries plaintext first, which a `prefer` proxy accepts.
        ("allow", false),
        ("prefer", true),
        ("require", true),
        ("verify-ca", true),
        ("verify-full", true),
    ] {
        let (ok, text) = psql(url(proxy.addr, &format!("sslmode={mode}&sslrootcert={ca}"))).await;
        assert!(ok, "sslmode={mode}: {text}");
        assert_eq!(
            text.contains("SSL connection"),
            encrypted,
            "sslmode={mode}: {text}"
        );
    }
    // verify-full by host name, and a CA the proxy's certificate does not chain to.
    let (ok, text) = psql(format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@localhost:{}/{APP_DB}?sslmode=verify-full&sslrootcert={ca}",
        proxy.addr.port()
    ))
    .await;
    assert!(ok, "verify-full via localhost: {text}");
    let other = make_certs(&tmp.path().join("other"), "another CA");
    let (ok, text) = psql(url(
        proxy.addr,
        &format!("sslmode=verify-ca&sslrootcert={}", other.ca().display()),
    ))
    .await;
    assert!(!ok, "a certificate from another CA must not verify: {text}");
    assert!(text.contains("certificate verify failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_plaintext_with_28000_and_serves_tls() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let mut config = app_config(PoolMode::Transaction, 2);
    config.auth_type = AuthType::Trust;
    let proxy = run_proxy(with_client_tls(config, &certs, SslMode::Require)).await;

    let (ok, text) = psql(url(proxy.addr, "sslmode=disable")).await;
    assert!(!ok, "plaintext must be refused: {text}");
    assert!(text.contains("SSL required"), "{text}");
    let (ok, text) = psql(url(proxy.addr, "sslmode=require")).await;
    assert!(ok && text.contains("SSL connection"), "{text}");

    // A raw plaintext startup: FATAL 28000, PostgreSQL's code for a refused login.
    let mut c = RawClient::connect(proxy.addr).await;
    c.send(&raw::startup_packet(&[
        ("user", SCRAM_USER),
        ("database", APP_DB),
    ]))
    .await;
    let e = c.expect_fatal("28000").await;
    assert_eq!(e.message, "SSL required");

    // Bytes after the SSLRequest, before the answer: refused, TLS on or off (CVE-2021-23222).
    let mut c = RawClient::connect(proxy.addr).await;
    let mut stuffed = raw::ssl_request();
    stuffed.extend_from_slice(&raw::startup_packet(&[("user", SCRAM_USER)]));
    c.send(&stuffed).await;
    c.expect_fatal("08P01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_asks_for_a_client_certificate() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let proxy = run_proxy(with_client_tls(
        app_config(PoolMode::Transaction, 2),
        &certs,
        SslMode::VerifyCa,
    ))
    .await;
    let ca = certs.ca().display().to_string();
    let (ok, text) = psql(url(
        proxy.addr,
        &format!(
            "sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
            certs.client_cert().display(),
            certs.client_key().display()
        ),
    ))
    .await;
    assert!(
        ok && text.contains("SSL connection"),
        "with a client certificate: {text}"
    );
    let (ok, text) = psql(url(
        proxy.addr,
        &format!("sslmode=require&sslrootcert={ca}&sslcert=/nonexistent&sslkey=/nonexistent"),
    ))
    .await;
    assert!(!ok, "without a client certificate: {text}");
}

/// A rustls client config trusting `ca`, offering ALPN `alpn` if given.
fn client_config(ca: &Path, alpn: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca cert")).expect("add ca");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Arc::new(config)
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// TLS straight away (no SSLRequest), as PostgreSQL 17's `sslnegotiation=direct`.
async fn direct_tls(
    addr: SocketAddr,
    ca: &Path,
    alpn: Option<&[u8]>,
) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(client_config(ca, alpn))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// Logs in with trust over `tls` and runs `SELECT 42`; returns the row's text.
async fn trust_login_and_query(tls: &mut ClientTls) -> String {
    tls.write_all(&raw::startup_packet(&[
        ("user", SCRAM_USER),
        ("database", APP_DB),
    ]))
    .await
    .expect("send startup");
    read_until_ready(tls).await;
    query(tls, "SELECT 42").await
}

/// Reads messages until ReadyForQuery; returns the DataRow values seen.
async fn read_until_ready(tls: &mut ClientTls) -> String {
    let mut buf = BytesMut::new();
    let mut values = String::new();
    loop {
        while let Some(f) = weir_wire::frame::split_frame(&mut buf, 1 << 20).expect("frame") {
            match f.tag() {
                b'Z' => return values,
                b'E' => panic!("error: {:?}", raw::ErrorReport::parse(f.body())),
                b'D' => {
                    let body = f.body();
                    values.push_str(&String::from_utf8_lossy(&body[6..]));
                }
                _ => {}
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read_buf(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "closed before ReadyForQuery");
    }
}

async fn query(tls: &mut ClientTls, sql: &str) -> String {
    let mut out = BytesMut::new();
    weir_wire::build::put_query(&mut out, sql);
    tls.write_all(&out).await.expect("send query");
    read_until_ready(tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_postgresql_logs_in() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let mut config = app_config(PoolMode::Transaction, 2);
    config.auth_type = AuthType::Trust;
    let proxy = run_proxy(with_client_tls(config, &certs, SslMode::Require)).await;

    let mut tls = direct_tls(proxy.addr, &certs.ca(), Some(b"postgresql"))
        .await
        .expect("direct TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    assert_eq!(trust_login_and_query(&mut tls).await, "42");

    // Without ALPN, PostgreSQL 17 refuses direct TLS: so does pgweir.
    let mut tls = direct_tls(proxy.addr, &certs.ca(), None)
        .await
        .expect("the handshake itself completes");
    tls.write_all(&raw::startup_packet(&[
        ("user", SCRAM_USER),
        ("database", APP_DB),
    ]))
    .await
    .expect("send");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    assert!(
        !buf.windows(3).any(|w| w == b"42\0") && !buf.contains(&b'Z'),
        "no login without ALPN: {buf:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_certificates_keeps_open_connections() {
    let tmp = temp_dir();
    let first = make_certs(&tmp.path().join("first"), "first CA");
    let second = make_certs(&tmp.path().join("second"), "second CA");
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).expect("live dir");
    let install = |c: &Certs| {
        std::fs::copy(c.server_cert(), live.join("server.crt")).expect("copy cert");
        std::fs::copy(c.server_key(), live.join("server.key")).expect("copy key");
    };
    install(&first);
    let mut config = app_config(PoolMode::Transaction, 2);
    config.auth_type = AuthType::Trust;
    config.client_tls_sslmode = SslMode::Require;
    config.client_tls_cert_file = Some(live.join("server.crt"));
    config.client_tls_key_file = Some(live.join("server.key"));
    let proxy = run_proxy(config.clone()).await;

    let mut old = direct_tls(proxy.addr, &first.ca(), Some(b"postgresql"))
        .await
        .expect("handshake with the first certificate");
    assert_eq!(trust_login_and_query(&mut old).await, "42");

    install(&second);
    proxy.handle.apply_config(config).expect("RELOAD");

    let mut new = direct_tls(proxy.addr, &second.ca(), Some(b"postgresql"))
        .await
        .expect("new connections get the second certificate");
    assert_eq!(trust_login_and_query(&mut new).await, "42");
    assert!(
        direct_tls(proxy.addr, &first.ca(), Some(b"postgresql"))
            .await
            .is_err(),
        "the first certificate is no longer presented"
    );
    // The connection made before the RELOAD still works.
    assert_eq!(query(&mut old, "SELECT 43").await, "43");
    // psql agrees.
    let (ok, text) = psql(url(
        proxy.addr,
        &format!("sslmode=verify-full&sslrootcert={}", second.ca().display()),
    ))
    .await;
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_gets_scram_sha_256_plus_over_tls() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let proxy = run_proxy(with_client_tls(
        app_config(PoolMode::Transaction, 2),
        &certs,
        SslMode::Prefer,
    ))
    .await;
    let ca = certs.ca().display().to_string();
    for mode in ["require", "verify-full"] {
        let (ok, text) = psql(url(
            proxy.addr,
            &format!("sslmode={mode}&sslrootcert={ca}&channel_binding=require"),
        ))
        .await;
        assert!(
            ok && text.contains("SSL connection"),
            "sslmode={mode}: {text}"
        );
    }
    // A wrong password still fails with -PLUS.
    let bad = format!(
        "postgres://{SCRAM_USER}:wrong@127.0.0.1:{}/{APP_DB}?sslmode=require&channel_binding=require",
        proxy.addr.port()
    );
    let (ok, text) = psql(bad).await;
    assert!(
        !ok && text.contains("password authentication failed"),
        "{text}"
    );
    // Without TLS there is nothing to bind to: libpq refuses, as against PostgreSQL.
    let (ok, text) = psql(url(proxy.addr, "sslmode=disable&channel_binding=require")).await;
    assert!(!ok, "{text}");
    assert!(text.contains("channel binding"), "{text}");
}

/// Turns on TLS in `cluster` with `certs` and leaves only `hostssl` logins over TCP.
fn hostssl_only(cluster: &pgweir::cluster::TempCluster, certs: &Certs) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let data = cluster.data_dir();
    let meta = std::fs::metadata(data).expect("data dir");
    for (from, to) in [
        (certs.server_cert(), "server.crt"),
        (certs.server_key(), "server.key"),
    ] {
        let dest = data.join(to);
        std::fs::copy(&from, &dest).expect("copy into the data dir");
        std::os::unix::fs::chown(&dest, Some(meta.uid()), Some(meta.gid())).expect("chown");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n";
    let hba_path = data.join("pg_hba.conf");
    std::fs::write(&hba_path, hba).expect("pg_hba.conf");
    std::os::unix::fs::chown(&hba_path, Some(meta.uid()), Some(meta.gid())).expect("chown");
    cluster
        .psql("postgres", "ALTER SYSTEM SET ssl = on")
        .expect("ssl = on");
    cluster
        .psql("postgres", "SELECT pg_reload_conf()")
        .expect("reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostssl_only_server_with_verify_full_serves_and_cancels() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "server CA");
    let cluster = common::private_cluster();
    hostssl_only(&cluster, &certs);
    let upstream = cluster.url(SCRAM_USER, SCRAM_PASSWORD, APP_DB);

    // Plaintext to a hostssl-only server: refused by the server.
    let plain =
        weir_tests::start_proxy(weir_tests::config_for(&upstream, PoolMode::Transaction, 2)).await;
    let Err(e) = weir_tests::connect(&plain.app_url()).await else {
        panic!("plaintext must be refused");
    };
    assert!(
        common::describe(&e).contains("no encryption"),
        "{}",
        common::describe(&e)
    );
    plain.stop().await;

    for mode in [
        // allow: plaintext first; the server's 28000 makes the proxy retry with TLS.
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ] {
        let mut config = weir_tests::config_for(&upstream, PoolMode::Transaction, 2);
        config.server_tls_sslmode = mode;
        config.server_tls_ca_file = Some(certs.ca());
        let proxy = weir_tests::start_proxy(config).await;
        let client = weir_tests::connect(&proxy.app_url())
            .await
            .unwrap_or_else(|e| panic!("{mode}: {}", common::describe(&e)));
        let ssl = common::value(
            &client,
            "SELECT ssl::text FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
        )
        .await;
        assert_eq!(ssl, "true", "{mode}: the server connection is encrypted");
        // The idle probe at the next checkout finds the TLS connection alive: reused.
        let pid = "SELECT pg_catalog.pg_backend_pid()::text";
        let first = common::value(&client, pid).await;
        assert_eq!(common::value(&client, pid).await, first, "{mode}: reused");
        if mode == SslMode::VerifyFull {
            // A cancel reaches the server over TLS too.
            let token = client.cancel_token();
            let sleeper =
                tokio::spawn(
                    async move { client.simple_query("SELECT pg_catalog.pg_sleep(30)").await },
                );
            tokio::time::sleep(Duration::from_millis(500)).await;
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .expect("cancel sent");
            let r = tokio::time::timeout(Duration::from_secs(10), sleeper)
                .await
                .expect("the query ends soon after the cancel")
                .expect("task");
            let Err(e) = r else {
                panic!("the query must be canceled");
            };
            assert_eq!(common::code(&e), "57014", "{}", common::describe(&e));
        }
        proxy.stop().await;
    }

    // verify-full against a CA that did not sign the server's certificate: no login.
    let other = make_certs(&tmp.path().join("other"), "another CA");
    let mut config = weir_tests::config_for(&upstream, PoolMode::Transaction, 2);
    config.server_tls_sslmode = SslMode::VerifyFull;
    config.server_tls_ca_file = Some(other.ca());
    let proxy = weir_tests::start_proxy(config).await;
    let Err(e) = weir_tests::connect(&proxy.app_url()).await else {
        panic!("an unverified server must be refused");
    };
    assert!(
        common::describe(&e).contains("TLS"),
        "{}",
        common::describe(&e)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_connect_with_every_sslmode_channel_binding_and_direct_tls() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned();
    let setup = tokio::task::spawn_blocking({
        let repo = repo.clone();
        move || {
            Command::new(repo.join("tests/drivers/setup.sh"))
                .arg("python")
                .output()
                .expect("setup.sh runs")
        }
    })
    .await
    .expect("setup task");
    assert!(
        setup.status.success(),
        "tests/drivers/setup.sh python: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let proxy = run_proxy(with_client_tls(
        app_config(PoolMode::Transaction, 2),
        &certs,
        SslMode::Prefer,
    ))
    .await;
    let port = proxy.addr.port().to_string();
    let ca = certs.ca();
    for script in ["psycopg_tls.py", "asyncpg_tls.py"] {
        let (repo, port, ca) = (repo.clone(), port.clone(), ca.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(repo.join("target/drivers/venv/bin/python"))
                .arg(repo.join("tests/drivers/python").join(script))
                .env("PGHOST", "127.0.0.1")
                .env("PGPORT", port)
                .env("PGUSER", SCRAM_USER)
                .env("PGPASSWORD", SCRAM_PASSWORD)
                .env("PGDATABASE", APP_DB)
                .env("PGWEIR_TLS_CA", ca)
                .env("PGCONNECT_TIMEOUT", "10")
                .output()
                .expect("python runs")
        })
        .await
        .expect("python task");
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Half a TLS record from an idle client must not leave its session deaf: the idle
/// wait looks at whole records (a socket-readable wait followed by a read would block
/// in the read until the record completes, and no timeout or shutdown would reach it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_tls_record_does_not_block_the_idle_timeout() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let mut config = app_config(PoolMode::Transaction, 2);
    config.auth_type = AuthType::Trust;
    config.client_idle_timeout = Duration::from_secs(1);
    let proxy = run_proxy(with_client_tls(config, &certs, SslMode::Require)).await;

    let mut tls = direct_tls(proxy.addr, &certs.ca(), Some(b"postgresql"))
        .await
        .expect("handshake");
    assert_eq!(trust_login_and_query(&mut tls).await, "42");
    // The first bytes of an application-data record header, straight onto the socket.
    tls.get_mut()
        .0
        .write_all(&[0x17, 0x03, 0x03])
        .await
        .expect("write raw bytes");
    let mut buf = BytesMut::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tls.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle timeout closed the session");
    let idle_timeout = buf.windows(5).any(|w| w == b"57P05");
    assert!(idle_timeout, "57P05 sent before closing: {buf:?}");
}

/// The admin console is served over TLS like any login, and SHOW CONFIG lists the
/// TLS settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_over_tls_shows_the_tls_settings() {
    let tmp = temp_dir();
    let certs = make_certs(tmp.path(), "pgweir test CA");
    let mut config = with_client_tls(
        app_config(PoolMode::Transaction, 2),
        &certs,
        SslMode::Require,
    );
    config.admin_users = vec![SCRAM_USER.to_owned()];
    let started = pgweir::serve::start(config, None)
        .await
        .expect("pgweir starts");
    let addr = started.addr;
    tokio::spawn(async move {
        let _ = started.run().await;
    });
    let url = format!(
        "postgres://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{}/pgbouncer?sslmode=verify-full&sslrootcert={}",
        addr.port(),
        certs.ca().display()
    );
    let out = tokio::task::spawn_blocking(move || run_psql(&url, &["-At", "-c", "SHOW CONFIG"]))
        .await
        .expect("psql task");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("client_tls_sslmode|require|disable")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("server_tls_sslmode|disable|disable")),
        "{text}"
    );
}
