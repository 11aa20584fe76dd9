//! pgweir's operator surface: the PgBouncer-compatible admin console and the HTTP
//! endpoints (`/metrics`, `/healthz`, `/readyz`, `/api/v1/*`).
//!
//! Everything here reads the proxy through one boundary, the [`AdminBackend`]
//! trait, which the binary implements over the proxy's registries and pools.
//! This crate owns the presentation: PgBouncer's column names, order and types,
//! Prometheus families, JSON.

#![warn(missing_docs)]

pub mod backend;
pub mod command;
pub mod console;
pub mod error;
pub mod extended;
pub mod http;
pub mod metrics;
pub mod metrics_doc;
pub mod result;
pub mod scaling;
mod scaling_metrics;
pub mod show;
pub mod stats;

pub use backend::{AdminBackend, AdminCommand, BoxFuture, Role};
pub use console::serve_console;
pub use error::AdminError;
pub use http::serve_http;
pub use stats::{StatsAverager, StatsAverages, StatsRow};
