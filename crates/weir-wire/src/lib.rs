//! Sans-IO PostgreSQL wire protocol for pgweir.
//!
//! Everything here works on byte slices and [`bytes::BytesMut`]: framing (check, then
//! split), the untagged startup packets, the few message bodies the proxy must read,
//! builders for the messages it synthesizes, and the authentication crypto for both
//! sides. No sockets, no runtime: every function is testable with plain bytes.

pub mod auth;
pub mod backend;
pub mod build;
pub mod der;
pub mod frame;
pub mod frontend;
pub mod scan;
pub mod sql;
pub mod sqlstate;
pub mod startup;

pub use frame::{Frame, FrameError, Header};
