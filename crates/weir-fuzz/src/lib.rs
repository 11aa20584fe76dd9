//! The bodies of pgweir's fuzz targets: one `fn(&[u8])` per target, for every parser
//! that sees bytes from a socket or a file.
//!
//! cargo-fuzz (`fuzz/`, nightly, excluded from the workspace) wraps each in a
//! `fuzz_target!`; `tests/corpus.rs` replays the committed corpus through the same
//! functions on stable, so CI keeps guarding what fuzzing found. A target panics only on
//! a bug: every parser must answer bad input with an error, never a panic, and the
//! targets add a few assertions of their own (what a parser says it consumed, what a
//! streaming scan agrees with a whole-frame split).

mod admin;
mod auth;
mod config;
mod wire;

pub use admin::admin_console;
pub use auth::{scram_client, scram_server, secret, secret_salt_b64};
pub use config::config;
pub use wire::{frame, sql, startup};

/// The client frame walker of the relay ([`weir_proxy::fuzzing::scan_client`]).
pub fn scan_client(data: &[u8]) {
    weir_proxy::fuzzing::scan_client(data);
}

/// Both frame walkers of the relay, client and server bytes interleaved
/// ([`weir_proxy::fuzzing::conversation`]).
pub fn scan_server(data: &[u8]) {
    weir_proxy::fuzzing::conversation(data);
}

/// A fuzz target: its name (the directory of its corpus) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("frame", frame),
    ("startup", startup),
    ("scram_server", scram_server),
    ("scram_client", scram_client),
    ("sql", sql),
    ("scan_client", scan_client),
    ("scan_server", scan_server),
    ("admin_console", admin_console),
    ("config", config),
];

/// Splits `data` at a 2-byte big-endian length prefix: `(first part, rest)`; a prefix
/// longer than what follows takes everything.
pub fn split_prefixed(data: &[u8]) -> (&[u8], &[u8]) {
    match data {
        [a, b, rest @ ..] => {
            rest.split_at(usize::from(u16::from_be_bytes([*a, *b])).min(rest.len()))
        }
        _ => (&[], &[]),
    }
}

/// Writes `part` with the 2-byte length prefix [`split_prefixed`] reads.
pub fn put_prefixed(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u16).to_be_bytes());
    out.extend_from_slice(part);
}
