//! pgweir's typed configuration: `proxy.toml`, the auth file, overrides, validation, defaults.
//!
//! One serde tree ([`Config`]) with `deny_unknown_fields` everywhere, so a misspelt key is
//! an error naming its line, not a silently ignored setting. Setting names and semantics
//! are PgBouncer's where PgBouncer has the setting. Defaults live in one place:
//! [`Config::default`]. Durations are human (`"30s"`, `"5m"`, see [`duration`]).
//!
//! Loading order ([`Config::load_with_overrides`]): parse the file, read the auth file and
//! merge its users under `[users]`, apply command-line/environment overrides, validate.
//! Every error says where: `proxy.toml:12: key `databases.app.pool_size`: must be at least 1`.

mod access;
pub mod auth_file;
mod config;
pub mod duration;
mod error;
pub mod hba;
mod load;
mod locate;
mod pools;
mod scaling;
pub mod size;
mod tables;
mod types;
mod unix_socket;
mod url;
mod validate;

pub use config::Config;
pub use error::ConfigError;
pub use load::Overrides;
pub use scaling::ScalingConfig;
pub use tables::{DatabaseConfig, PriorityRule, UserConfig};
pub use types::{
    AuthType, LogFormat, Mode, ParseSettingError, PoolMode, Priority, Secret, SessionFeatures,
    SslMode,
};
pub use validate::tls_protocols;

/// PostgreSQL's default port, used when a database or URL gives none.
pub const DEFAULT_SERVER_PORT: u16 = 5432;
/// Default port of the HTTP endpoint (`http_listen`).
pub const DEFAULT_HTTP_PORT: u16 = 9930;
/// A boolean as PostgreSQL and PgBouncer spell them (`on`/`off`, `true`/`false`,
/// `yes`/`no`, `1`/`0`, any case, surrounding blanks ignored); `None` for anything else.
pub fn parse_flag(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// PgBouncer's default `auth_query`, with `pg_catalog.` so that no `search_path` can
/// put another `pg_shadow` in front of the real one (CVE-2025-12819's lesson).
pub const DEFAULT_AUTH_QUERY: &str =
    "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename=$1";

/// Smallest accepted `max_message_size` (1 MiB): lower limits break ordinary queries with
/// large parameters or rows in ways that are hard to diagnose.
pub const MIN_MESSAGE_SIZE: u32 = 1 << 20;
/// Largest accepted `max_message_size`: the protocol's length field is a signed Int32.
pub const MAX_MESSAGE_SIZE: u32 = i32::MAX as u32;

/// What `Debug` shows instead of a password.
const REDACTED: &str = "<redacted>";
