//! The HTTP endpoints on `http_listen`: `/metrics` (OpenMetrics text),
//! `/healthz` (the process is alive), `/readyz` (listening, not draining, some
//! upstream reachable; 503 with the reason otherwise, so Kubernetes stops routing
//! at once on SIGTERM) and the JSON API `/api/v1/pools` and `/api/v1/stats`.
//!
//! HTTP/1.1 only, one task per connection, `GET` and `HEAD`, plus
//! `POST /api/v1/database/advanced/mode/{mode}` with the admin token. The scaling
//! engine's API under `/api/v1/database/automation/` is answered by the backend
//! ([`AdminBackend::automation`]); its POSTs need the admin token too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backend::AdminBackend;
use crate::metrics;

/// How long open HTTP connections get to finish after shutdown is signalled.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves HTTP on `listener` until `shutdown` is cancelled, then stops accepting
/// and lets open connections finish their current request.
pub async fn serve_http(
    listener: TcpListener,
    backend: Arc<dyn AdminBackend>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let backend = Arc::clone(&backend);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let backend = Arc::clone(&backend);
                async move {
                    let response = if req.method() == Method::POST {
                        post(req, backend).await
                    } else {
                        handle(&req, backend)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(socket), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(DRAIN, conn.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
        });
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => response(StatusCode::OK, "application/json", body),
        Err(e) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("could not encode: {e}\n"),
        ),
    }
}

/// Where the operation mode is set: `POST /api/v1/database/advanced/mode/{mode}`.
const MODE_PATH: &str = "/api/v1/database/advanced/mode/";

/// Where the scaling engine's JSON API lives (`status`, `scaling/...`, `start`, ...).
pub const AUTOMATION_PATH: &str = "/api/v1/database/automation/";

/// Largest POST body read (the automation endpoints take small JSON objects).
const MAX_BODY: usize = 64 * 1024;

/// Answers a `POST`: the mode endpoint and the automation endpoints, each with
/// `Authorization: Bearer <admin_token>`.
pub async fn post(req: Request<Incoming>, backend: Arc<dyn AdminBackend>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let mode = path.strip_prefix(MODE_PATH).map(str::to_owned);
    let automation = path.strip_prefix(AUTOMATION_PATH).map(str::to_owned);
    if mode.is_none() && automation.is_none() {
        // Every other path is read-only.
        return route(req.method(), &path, backend);
    }
    if let Some(refused) = authorize(&req, backend.as_ref()) {
        return refused;
    }
    if let Some(rest) = automation {
        use http_body_util::BodyExt;
        let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return response(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("cannot read the body: {e}\n"),
                )
            }
        };
        return automation_response(backend.automation(true, &rest, &query, &body));
    }
    let mode = mode.unwrap_or_default();
    let cmd = crate::backend::AdminCommand::Set {
        key: "mode".to_owned(),
        value: mode.clone(),
    };
    match backend.command(cmd).await {
        Ok(()) => json(&serde_json::json!({ "mode": mode })),
        Err(e) => response(StatusCode::BAD_REQUEST, TEXT, format!("{e}\n")),
    }
}

/// `None` when the request carries the admin token; else the refusal to send.
fn authorize<B>(req: &Request<B>, backend: &dyn AdminBackend) -> Option<Response<Full<Bytes>>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match backend.admin_token() {
        None => Some(response(
            StatusCode::FORBIDDEN,
            TEXT,
            "the HTTP admin API is off: set admin_token in the configuration\n",
        )),
        Some(expected)
            if token.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes())) =>
        {
            None
        }
        Some(_) => {
            let mut r = response(
                StatusCode::UNAUTHORIZED,
                TEXT,
                "a valid bearer token is required\n",
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            Some(r)
        }
    }
}

fn automation_response(answer: Option<(u16, String)>) -> Response<Full<Bytes>> {
    match answer {
        Some((status, body)) => response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "application/json",
            body,
        ),
        None => response(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"no such automation endpoint (or the wrong method)\"}",
        ),
    }
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers one request (also used directly by tests).
pub fn handle(req: &Request<Incoming>, backend: Arc<dyn AdminBackend>) -> Response<Full<Bytes>> {
    if let Some(rest) = req.uri().path().strip_prefix(AUTOMATION_PATH) {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let query = req.uri().query().unwrap_or("");
            return automation_response(backend.automation(false, rest, query, b""));
        }
    }
    route(req.method(), req.uri().path(), backend)
}

/// Answers `method path` from the backend's current state.
pub fn route(method: &Method, path: &str, backend: Arc<dyn AdminBackend>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        let mut r = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => match metrics::render(backend) {
            Ok(body) => response(StatusCode::OK, metrics::CONTENT_TYPE, body),
            Err(_) => response(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                "could not render metrics\n",
            ),
        },
        "/healthz" => response(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" => {
            let r = backend.readiness();
            match r.reason() {
                None => response(StatusCode::OK, TEXT, "ready\n"),
                Some(why) => response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("not ready: {why}\n"),
                ),
            }
        }
        "/api/v1/pools" => json(&backend.pools()),
        "/api/v1/stats" => json(&backend.averager().rows(backend.stats(), Instant::now())),
        _ => response(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics, /healthz, /readyz, /api/v1/pools, /api/v1/stats\n",
        ),
    }
}
