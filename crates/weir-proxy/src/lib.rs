//! pgweir's proxy: accepts PostgreSQL clients, authenticates them itself, and relays
//! their transactions over pooled server connections.
//!
//! [`Proxy::bind`] builds everything from a [`weir_config::Config`]; [`Proxy::run`] serves
//! until the shutdown token is cancelled. [`Proxy::handle`] gives the admin console,
//! HTTP endpoints and signal handlers a [`ProxyHandle`] on the running proxy.

pub mod admin_hook;
pub mod auth_query;
pub mod cancel;
pub mod client_auth;
mod control;
mod conversation;
pub mod db_budget;
pub mod dedup;
pub mod error;
pub mod features;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod greeting;
mod handle;
pub mod hba;
pub mod io;
mod listener;
pub mod params;
pub mod park;
pub mod pools;
pub mod prepared;
pub mod proxy_set;
pub mod rate;
pub mod registry;
mod relay;
mod responses;
pub mod server;
pub mod session;
pub mod session_state;
mod statement;
pub mod stop;
pub mod stream;
pub mod tls;
mod unix_listener;
pub mod upstream;
pub mod uring;

pub use admin_hook::{AdminConsole, AdminRole};
pub use error::{ClientError, ProxyError};
pub use handle::{ProxyHandle, SETTABLE};
pub use listener::Proxy;
