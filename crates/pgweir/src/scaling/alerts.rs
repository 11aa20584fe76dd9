//! Scaling alerts: a log line and, with `scaling.alert_webhook`, a JSON POST, when a
//! pool's utilization stays critical, its connection budget is exhausted, its
//! upstream's breaker is open, or a grow was refused (the database looked saturated).
//! Each kind is sent at most once per `scaling.alert_interval` per pool.
//!
//! The POST is plain HTTP/1.1 over a fresh TCP connection (no client library: one
//! request, `Connection: close`), sent from its own task so a slow receiver never
//! delays a tick.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_config::ScalingConfig;
use weir_scale::{Decision, Millis, PoolInput, PoolView, Reason};

/// Ticks in a row at or above `critical_threshold` before "stays critical" fires.
const CRITICAL_TICKS: u32 = 5;
/// Deadline for delivering one webhook POST.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// One alert as posted.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// `utilization_critical`, `budget_exhausted`, `breaker_open`, `scale_up_refused`.
    pub kind: &'static str,
    /// `database/user`.
    pub pool: String,
    /// When (ms since the epoch).
    pub at: Millis,
    /// What happened, for people.
    pub message: String,
}

/// Rate-limited alerting state.
#[derive(Default)]
pub struct Alerts {
    last: Mutex<HashMap<(&'static str, String), Millis>>,
    critical: Mutex<HashMap<String, u32>>,
}

impl Alerts {
    /// Look at one tick's outcome and raise what is due.
    pub fn check(
        &self,
        cfg: &ScalingConfig,
        now: Millis,
        decisions: &[Decision],
        views: &[PoolView],
        inputs: &[PoolInput],
    ) {
        let mut due = Vec::new();
        {
            let mut critical = self.critical.lock().unwrap_or_else(PoisonError::into_inner);
            for v in views {
                if !inputs.iter().any(|i| i.id == v.pool) {
                    continue;
                }
                let n = critical.entry(v.pool.clone()).or_default();
                if v.utilization >= cfg.critical_threshold {
                    *n += 1;
                } else {
                    *n = 0;
                }
                if *n >= CRITICAL_TICKS {
                    due.push(Alert {
                        kind: "utilization_critical",
                        pool: v.pool.clone(),
                        at: now,
                        message: format!(
                            "utilization {:.0}% for {n} ticks at {} of {} connections",
                            v.utilization * 100.0,
                            v.target,
                            v.max
                        ),
                    });
                }
            }
        }
        for d in decisions {
            let kind = match d.reason {
                Reason::Budget => "budget_exhausted",
                Reason::BreakerOpen => "breaker_open",
                Reason::Saturated => "scale_up_refused",
                _ => continue,
            };
            let message = match d.reason {
                Reason::Budget => format!(
                    "wanted to grow but the connection budget ({}) is spent; held at {}",
                    d.inputs.budget.map_or("?".to_owned(), |b| b.to_string()),
                    d.to
                ),
                Reason::BreakerOpen => format!(
                    "the upstream's circuit breaker is open; not growing past {}",
                    d.to
                ),
                _ => format!(
                    "grow refused: more connections stopped buying throughput (the database looks saturated); held at {}",
                    d.to
                ),
            };
            due.push(Alert {
                kind,
                pool: d.pool.clone(),
                at: now,
                message,
            });
        }
        for alert in due {
            self.raise(cfg, alert);
        }
    }

    fn raise(&self, cfg: &ScalingConfig, alert: Alert) {
        let interval = u64::try_from(cfg.alert_interval.as_millis()).unwrap_or(u64::MAX);
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (alert.kind, alert.pool.clone());
            if last
                .get(&key)
                .is_some_and(|&t| alert.at.saturating_sub(t) < interval)
            {
                return;
            }
            last.insert(key, alert.at);
        }
        tracing::warn!(kind = alert.kind, pool = %alert.pool, "scaling alert: {}", alert.message);
        if let Some(url) = cfg.alert_webhook.clone() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    match tokio::time::timeout(WEBHOOK_TIMEOUT, post_json(&url, &alert)).await {
                        Ok(Ok(status)) if (200..300).contains(&status) => {}
                        Ok(Ok(status)) => {
                            tracing::warn!(%url, status, "alert webhook answered with an error")
                        }
                        Ok(Err(e)) => tracing::warn!(%url, error = %e, "alert webhook failed"),
                        Err(_) => tracing::warn!(%url, "alert webhook timed out"),
                    }
                });
            }
        }
    }
}

/// POSTs `body` as JSON to an `http://host:port/path` URL; returns the status code.
///
/// # Errors
/// A malformed URL, a connect or write failure, or a reply without a status line.
pub async fn post_json<T: Serialize>(url: &str, body: &T) -> std::io::Result<u16> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_owned());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let json = serde_json::to_vec(body).map_err(|e| bad(&e.to_string()))?;
    let mut stream = tokio::net::TcpStream::connect(&target).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: pgweir\r\n\r\n",
        json.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&json).await?;
    let mut reply = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !reply.windows(2).any(|w| w == b"\r\n") && reply.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&reply);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no HTTP status line in the reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_webhook_gets_a_json_post() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("}") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        let alert = Alert {
            kind: "budget_exhausted",
            pool: "app/app".into(),
            at: 1,
            message: "m".into(),
        };
        let status = post_json(&format!("http://{addr}/hook"), &alert)
            .await
            .expect("post");
        assert_eq!(status, 204);
        let request = server.await.expect("server");
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains("\"kind\":\"budget_exhausted\""),
            "{request}"
        );
    }

    #[test]
    fn alerts_are_rate_limited_per_kind_and_pool() {
        let cfg = ScalingConfig::default();
        let alerts = Alerts::default();
        let d = Decision {
            at: 0,
            pool: "a/a".into(),
            from: 4,
            to: 4,
            reason: Reason::Budget,
            inputs: Default::default(),
        };
        alerts.check(&cfg, 1_000, std::slice::from_ref(&d), &[], &[]);
        alerts.check(&cfg, 2_000, std::slice::from_ref(&d), &[], &[]);
        let last = alerts.last.lock().expect("lock");
        assert_eq!(
            last.get(&("budget_exhausted", "a/a".to_owned())),
            Some(&1_000)
        );
    }
}
