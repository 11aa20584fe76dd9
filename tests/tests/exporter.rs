//! Prometheus: Debian's `prometheus-pgbouncer-exporter` (a tool nobody here wrote),
//! pointed unchanged at pgweir's admin console, exports the metric families it
//! exports against PgBouncer 1.18, with live values; and pgweir's own `/metrics`
//! parses and moves with traffic.
//!
//! The family list was taken from the exporter run against a real PgBouncer 1.18.
//! (Against 1.18 itself the exporter 1.7 dies on its missing `total_requests`
//! column unless told to skip every database; pgweir's `SHOW STATS` keeps that
//! legacy column after PgBouncer's fifteen, so the exporter works unfiltered.)
//!
//! The exporter is installed on first use by `tests/drivers/setup.sh exporter` (a
//! no-op once it is there; `.ci/run` installs it up front), as the driver suites
//! install theirs.

mod admin_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use admin_support::{admin_config, start};
use pgweir::cluster::run_bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_config::PoolMode;
use weir_tests::{connect, SCRAM_PASSWORD, SCRAM_USER};

const EXPORTER: &str = "prometheus-pgbouncer-exporter";
/// How long installing the exporter may take (an `apt-get update` and a few packages).
const SETUP_TIMEOUT: Duration = Duration::from_secs(180);

/// Every family the exporter exported against PgBouncer 1.18.
const FAMILIES: [&str; 20] = [
    "pgbouncer_requests_total",
    "pgbouncer_received_bytes_total",
    "pgbouncer_sent_bytes_total",
    "pgbouncer_query_microseconds_total",
    "pgbouncer_active_clients",
    "pgbouncer_waiting_clients",
    "pgbouncer_pool_size",
    "pgbouncer_reserve_pool",
    "pgbouncer_databases",
    "pgbouncer_dns_names",
    "pgbouncer_dns_pending",
    "pgbouncer_dns_queries",
    "pgbouncer_dns_zones",
    "pgbouncer_free_clients",
    "pgbouncer_free_servers",
    "pgbouncer_login_clients",
    "pgbouncer_pools",
    "pgbouncer_used_clients",
    "pgbouncer_used_servers",
    "pgbouncer_users",
];

/// A plain HTTP/1.0 GET; returns (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Samples of a Prometheus text exposition: "name{labels}" -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Installs the exporter unless it is there (`tests/drivers/setup.sh exporter`).
async fn install_exporter() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers/setup.sh");
    let mut cmd = Command::new(&script);
    cmd.arg("exporter");
    let out = tokio::task::spawn_blocking(move || run_bounded(&mut cmd, None, SETUP_TIMEOUT))
        .await
        .expect("setup task")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.output.status.success() && !out.timed_out,
        "tests/drivers/setup.sh exporter: {}{}\n{}{}",
        out.output.status,
        if out.timed_out { " (timed out)" } else { "" },
        String::from_utf8_lossy(&out.output.stdout),
        String::from_utf8_lossy(&out.output.stderr)
    );
}

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_pgbouncer_exporter_works_unchanged_against_pgweir() {
    install_exporter().await;
    let pgweir = start(admin_config(PoolMode::Transaction, 4), None).await;
    let client = connect(&pgweir.app_url()).await.expect("app login");
    client.simple_query("SELECT 1").await.expect("traffic");

    let port = free_port();
    let child = Command::new(EXPORTER)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--pgbouncer-host", &pgweir.addr.ip().to_string()])
        .args(["--pgbouncer-port", &pgweir.addr.port().to_string()])
        .args(["--pgbouncer-user", SCRAM_USER])
        .env("PGPASSWORD", SCRAM_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {EXPORTER}, though setup.sh installed it: {e}"));
    let mut exporter = Exporter(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        if let Some((200, body)) = http_get(addr, "/metrics").await {
            break body;
        }
        if let Ok(Some(status)) = exporter.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = exporter.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("{EXPORTER} exited ({status}): {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "{EXPORTER} never served /metrics"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for family in FAMILIES {
        assert!(
            body.contains(&format!("# TYPE {family} gauge")),
            "missing family {family} in:\n{body}"
        );
    }
    let s = samples(&body);
    let value = |k: &str| {
        *s.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in:\n{body}"))
    };
    assert!(value("pgbouncer_requests_total{database=\"app\"}") >= 1.0);
    assert!(value("pgbouncer_received_bytes_total{database=\"app\"}") > 0.0);
    assert!(value("pgbouncer_sent_bytes_total{database=\"app\"}") > 0.0);
    assert_eq!(value("pgbouncer_pool_size{database=\"app\"}"), 4.0);
    assert!(
        value(&format!(
            "pgbouncer_active_clients{{database=\"app\",user=\"{SCRAM_USER}\"}}"
        )) >= 1.0
    );
    assert!(value("pgbouncer_pools") >= 1.0);
    assert!(
        value("pgbouncer_used_clients") >= 2.0,
        "the app client and the exporter"
    );
    assert!(value("pgbouncer_databases") >= 1.0);
    drop(exporter);
    pgweir.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_parses_and_moves_with_traffic() {
    let mut config = admin_config(PoolMode::Transaction, 4);
    config.http_listen = Some(([127, 0, 0, 1], 0).into());
    let pgweir = start(config, None).await;
    let http = pgweir.http_addr.expect("HTTP endpoint bound");
    let (status, _) = http_get(http, "/healthz").await.expect("healthz");
    assert_eq!(status, 200);
    let (status, _) = http_get(http, "/readyz").await.expect("readyz");
    assert_eq!(status, 200);

    let client = connect(&pgweir.app_url()).await.expect("app login");
    client.simple_query("SELECT 1").await.expect("traffic");
    let queries = |body: &str| -> f64 {
        samples(body)
            .iter()
            .filter(|(k, _)| {
                k.contains("quer") && k.contains("_total") && k.contains("database=\"app\"")
            })
            .map(|(_, v)| v)
            .sum()
    };
    let (status, before) = http_get(http, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(!samples(&before).is_empty(), "parsable samples:\n{before}");
    let q0 = queries(&before);
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.expect("traffic");
    }
    let (_, after) = http_get(http, "/metrics").await.expect("metrics");
    assert!(
        queries(&after) >= q0 + 5.0,
        "queries moved: {q0} -> {}\n{after}",
        queries(&after)
    );

    // Draining (held open by a transaction): /readyz fails at once.
    client.batch_execute("BEGIN").await.expect("begin");
    pgweir.admin.handle().shutdown();
    // A time bound, not a try count (the drain begins on the proxy's accept task), and
    // well inside shutdown_timeout (10 s), which would end the transaction.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failed = false;
    while Instant::now() < deadline {
        if let Some((503, _)) = http_get(http, "/readyz").await {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(failed, "/readyz kept answering 200 while draining");
    client
        .batch_execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("the transaction finishes: {e:?}"));
}
