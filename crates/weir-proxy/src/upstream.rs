//! Upstreams: one per server host:port, shared by every pool that reaches it, each
//! with its circuit breaker ([`weir_pool::breaker`]), so ten pools on one dead host
//! learn it once. The manager asks the breaker before each connect and tells it how
//! the connect went; the relay tells it how queries end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use weir_pool::breaker::{Breaker, BreakerSettings, BreakerState};

/// One upstream server address and its breaker.
#[derive(Debug)]
pub struct Upstream {
    /// `host:port`.
    pub addr: String,
    /// Its circuit breaker.
    pub breaker: Breaker,
}

/// Every upstream in use, by `host:port`.
#[derive(Debug, Default)]
pub struct Upstreams {
    map: Mutex<HashMap<String, Arc<Upstream>>>,
    settings: Mutex<BreakerSettings>,
}

impl Upstreams {
    /// Upstreams whose breakers start with `settings`.
    pub fn new(settings: BreakerSettings) -> Self {
        Upstreams {
            map: Mutex::default(),
            settings: Mutex::new(settings),
        }
    }

    /// The upstream for `host:port` (or a Unix socket directory's `unix:<socket file>`),
    /// created on first use.
    pub fn get(&self, host: &str, port: u16) -> Arc<Upstream> {
        let addr = match crate::server::unix_socket_path(host, port) {
            Some(path) => crate::server::ServerAddr::Unix(path).to_string(),
            None => format!("{host}:{port}"),
        };
        let settings = self.settings().clone();
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(addr.clone())
            .or_insert_with(|| {
                Arc::new(Upstream {
                    addr,
                    breaker: Breaker::new(settings),
                })
            })
            .clone()
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, BreakerSettings> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// New breaker settings (RELOAD, a mode change) for every upstream, now and later.
    pub fn update_settings(&self, settings: BreakerSettings) {
        *self.settings() = settings.clone();
        for u in self.all() {
            u.breaker.update_settings(settings.clone());
        }
    }

    /// Every upstream, sorted by address.
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        let mut all: Vec<_> = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.addr.cmp(&b.addr));
        all
    }
}

/// Logs a breaker's state change, once per transition.
pub fn log_transition(upstream: &Upstream, before: BreakerState, why: &str) {
    let after = upstream.breaker.state();
    if before == after {
        return;
    }
    match after {
        BreakerState::Open if before == BreakerState::Closed => tracing::warn!(
            upstream = %upstream.addr,
            error = %why,
            "circuit breaker opened: clients fail fast with 57P03 until a probe gets through"
        ),
        BreakerState::Closed => {
            tracing::info!(upstream = %upstream.addr, "circuit breaker closed: upstream is back")
        }
        state => tracing::debug!(
            upstream = %upstream.addr,
            state = state.as_str(),
            "circuit breaker state"
        ),
    }
}
