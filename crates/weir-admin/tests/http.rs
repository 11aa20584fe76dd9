//! The HTTP endpoints over real TCP with a plain client: status codes, readiness
//! reasons, JSON, and a small OpenMetrics parser over `/metrics`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::Fake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use weir_admin::backend::Readiness;
use weir_admin::serve_http;

struct Server {
    addr: std::net::SocketAddr,
    backend: Arc<Fake>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let backend = Arc::new(Fake::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_http(listener, backend.clone(), shutdown.clone()));
    Server {
        addr,
        backend,
        shutdown,
        task,
    }
}

/// Status, headers (lowercased names) and body of one request.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> (u16, HashMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// `name{labels} value` samples of an OpenMetrics text (labels kept verbatim).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse::<f64>().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn health_and_readiness() {
    let srv = start().await;
    let (status, _, body) = request(srv.addr, "GET", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = request(srv.addr, "GET", "/readyz").await;
    assert_eq!(status, 200);
    *srv.backend.ready.lock().unwrap() = Readiness {
        listening: true,
        draining: true,
        upstream_reachable: true,
    };
    let (status, _, body) = request(srv.addr, "GET", "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    let (status, _, _) = request(srv.addr, "GET", "/nope").await;
    assert_eq!(status, 404);
    let (status, headers, _) = request(srv.addr, "POST", "/metrics").await;
    assert_eq!(status, 405);
    assert_eq!(headers.get("allow").map(String::as_str), Some("GET, HEAD"));
    srv.shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), srv.task)
        .await
        .expect("stopped")
        .expect("no panic");
}

#[tokio::test]
async fn metrics_parse_and_follow_the_backend() {
    let srv = start().await;
    let (status, headers, body) = request(srv.addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(body.ends_with("# EOF\n"));
    let m = samples(&body);
    let pool = "database=\"app\",user=\"alice\"";
    assert_eq!(
        m[&format!("pgweir_pool_clients{{{pool},state=\"active\"}}")],
        3.0
    );
    assert_eq!(
        m[&format!("pgweir_pool_servers{{{pool},state=\"idle\"}}")],
        4.0
    );
    assert_eq!(m[&format!("pgweir_pool_max_wait_seconds{{{pool}}}")], 2.5);
    assert_eq!(m[&format!("pgweir_transactions_total{{{pool}}}")], 7.0);
    assert_eq!(m[&format!("pgweir_received_bytes_total{{{pool}}}")], 1000.0);
    assert_eq!(
        m[&format!("pgweir_errors_total{{{pool},class=\"23\"}}")],
        2.0
    );
    assert_eq!(m["pgweir_ready"], 1.0);
    assert_eq!(
        m[&format!("pgweir_query_duration_seconds_count{{{pool}}}")],
        4.0
    );
    assert_eq!(
        m[&format!("pgweir_query_duration_seconds_bucket{{le=\"0.0001\",{pool}}}")],
        1.0
    );
    assert_eq!(
        m[&format!("pgweir_query_duration_seconds_bucket{{le=\"+Inf\",{pool}}}")],
        4.0
    );
    assert_eq!(
        m[&format!("pgweir_wait_duration_seconds_count{{{pool},class=\"normal\"}}")],
        0.0
    );

    *srv.backend.xacts.lock().unwrap() = 42;
    let (_, _, body) = request(srv.addr, "GET", "/metrics").await;
    assert_eq!(
        samples(&body)[&format!("pgweir_transactions_total{{{pool}}}")],
        42.0
    );
}

#[tokio::test]
async fn json_api() {
    let srv = start().await;
    let (status, headers, body) = request(srv.addr, "GET", "/api/v1/pools").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v[0]["database"], "app");
    assert_eq!(v[0]["cl_active"], 3);
    let (_, _, body) = request(srv.addr, "GET", "/api/v1/stats").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v[0]["total_xact_count"], 7);
    assert!(v[0]["avg_xact_time"].is_u64());
}
