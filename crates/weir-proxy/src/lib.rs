//! pgweir's proxy: accepts PostgreSQL clients, authenticates them itself, and relays
//! their transactions over pooled server connections.
//!
//! [`Proxy::bind`] builds everything from a [`weir_config::Config`]; [`Proxy::run`] serves
//! until the shutdown token is cancelled.

pub mod cancel;
pub mod client_auth;
mod conversation;
pub mod error;
pub mod io;
mod listener;
pub mod pools;
pub mod registry;
mod relay;
pub mod server;
pub mod session;
mod statement;

pub use error::{ClientError, ProxyError};
pub use listener::Proxy;
