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
pub mod duration;
mod error;
pub mod hba;
mod locate;
mod scaling;
pub mod size;
mod types;
mod unix_socket;
mod url;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::ConfigError;
pub use types::{
    AuthType, LogFormat, Mode, ParseSettingError, PoolMode, Priority, Secret, SessionFeatures,
    SslMode,
};
pub use validate::tls_protocols;

use locate::{dotted, line_at, SpanTree};
pub use scaling::ScalingConfig;

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

/// The whole proxy configuration (`proxy.toml`). Missing keys take [`Config::default`]'s values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address clients connect to, `"host:port"` with an IP address. Default `127.0.0.1:6432`.
    #[serde(deserialize_with = "de_socket_addr")]
    pub listen: SocketAddr,
    /// When server connections return to the pool. Default `transaction`.
    pub pool_mode: PoolMode,
    /// Most server connections per (database, user) pool. Default 20.
    pub default_pool_size: u32,
    /// Server connections kept open per pool even when idle (the scaling engine's
    /// floor). Default 0.
    pub min_pool_size: u32,
    /// The scaling engine's ceiling per pool: when above 0 (and `autoscale` is on) the
    /// engine sizes each pool between `min_pool_size` (at least 1) and this, and
    /// `default_pool_size` is not used. 0 = fixed pools (default).
    pub max_pool_size: u32,
    /// Whether the scaling engine runs for pools with a `max_pool_size`. Default true.
    pub autoscale: bool,
    /// The scaling engine's thresholds and timing (`[scaling]`).
    pub scaling: ScalingConfig,
    /// Transaction mode: most clients per pool pinned to a server connection at once by
    /// session features (LISTEN, temp tables, ...); a statement that would pin one more
    /// fails with 53300. `None` (default) = the pool size - 1, so pins always leave a
    /// server for everyone else.
    pub max_pinned: Option<u32>,
    /// Class of clients no rule and no `pgweir.priority` startup setting names. Default
    /// `normal`.
    pub default_priority: Priority,
    /// Waiting this long lifts a waiter one class, so no class starves. Default 1s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub priority_aging: Duration,
    /// Rules giving clients a class by user, database and `application_name`
    /// (`[[priority_rules]]`); the first that matches wins.
    pub priority_rules: Vec<PriorityRule>,
    /// Operation mode (`normal`, `high_performance`, `resource_saver`, `emergency`);
    /// changeable at runtime with `SET mode = '...'` or over HTTP. Default `normal`.
    pub mode: Mode,
    /// Bearer token for the HTTP API's changing endpoints (`POST /api/v1/...`); unset =
    /// those endpoints are off. Hidden from `Debug` and `SHOW CONFIG`.
    pub admin_token: Option<Secret>,
    /// Most clients per pool waiting for a server connection at once; one more is shed
    /// at once with 53300 instead of everyone timing out together. 0 = unlimited
    /// (default). Waiters whose expected wait exceeds `query_wait_timeout` are shed too.
    pub max_queue: u32,
    /// The last this many server connections of each pool go only to `critical`
    /// clients, so critical work never waits behind a pool full of others. 0 = none
    /// (default); per database too. At most the pool size - 1 takes effect.
    pub reserve_critical: u32,
    /// Single-flight query dedup (transaction mode): while a plain read runs, clients
    /// sending the identical Query (same text, database, user and settings) get that
    /// execution's answer instead of running it again. Off by default; per database
    /// too, and per client with `pgweir.dedup`. See the README for what is shared.
    pub dedup: bool,
    /// Largest answer held for a flight's followers, in bytes or with a unit; a bigger
    /// answer is not shared (the followers run the query themselves). Default 1 MiB.
    #[serde(deserialize_with = "size::deserialize_u32")]
    pub dedup_max_bytes: u32,
    /// Functions besides the built-in allow-list (immutable or stable built-ins) a
    /// shared query may call: bare names, or `schema.name` for another schema.
    pub dedup_functions: Vec<String>,
    /// Most client connections at once. Default 10 000.
    pub max_client_conn: u32,
    /// Most new connections per second from one source address (a burst of one
    /// second's worth); more are refused at once with 53300. 0 = unlimited (default).
    pub max_connection_rate: u32,
    /// Most server connections per database over all its pools; 0 = unlimited (default).
    pub max_db_connections: u32,
    /// PgBouncer's `reserve_pool_size`: extra server connections a pool may open once a
    /// client has waited `reserve_pool_timeout`; 0 = none (default). Per database too.
    pub reserve_pool_size: u32,
    /// How long a client waits before its pool may use the reserve. Default 5s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub reserve_pool_timeout: Duration,
    /// Most server connections per user over all its pools (every database); 0 =
    /// unlimited (default). Per user too (`[users.NAME]`).
    pub max_user_connections: u32,
    /// How clients authenticate to the proxy. Default `scram-sha-256`.
    pub auth_type: AuthType,
    /// PgBouncer-style `userlist.txt`; relative to the config file's directory. After
    /// [`Config::load`] this holds the resolved path.
    pub auth_file: Option<PathBuf>,
    /// pg_hba.conf-style rules used when `auth_type = "hba"`; relative to the config
    /// file's directory, re-read by `RELOAD`. After [`Config::load`] this holds the
    /// resolved path and [`Config::hba`] the rules.
    pub auth_hba_file: Option<PathBuf>,
    /// The rules of `auth_hba_file`, read by [`Config::load`] or [`Config::read_hba_file`].
    #[serde(skip)]
    pub hba: Option<std::sync::Arc<hba::HbaRules>>,
    /// PgBouncer's `auth_user`: a user not in the auth file is looked up on the server by
    /// running `auth_query` as this user (whose own secret must be known). `None` = off.
    pub auth_user: Option<String>,
    /// The query `auth_user` runs to fetch a user's name and secret; `$1` is the user
    /// name, sent as a parameter. Default PgBouncer's, schema-qualified.
    pub auth_query: String,
    /// Database (a `[databases]` name) `auth_query` runs in; `None` = the one the client
    /// asked for.
    pub auth_dbname: Option<String>,
    /// How long a secret fetched with `auth_query` is reused before it is fetched again;
    /// 0 = every login. Default 60s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub auth_query_cache_ttl: Duration,
    /// Run on a server connection before another client gets it, in session mode only;
    /// empty = none. Default `DISCARD ALL`.
    pub server_reset_query: String,
    /// Largest message (the Int32 length field) accepted from a client or server, in bytes
    /// or with a unit (`"64MiB"`); 1 MiB to 2 GiB - 1. Default 1 GiB, PostgreSQL's own limit.
    #[serde(deserialize_with = "size::deserialize_u32")]
    pub max_message_size: u32,
    /// Deadline for connecting and logging in to a server; must be > 0. Default 15s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub server_connect_timeout: Duration,
    /// After a server refused a pool's login (password, database), how long that pool's
    /// clients fail fast before the next attempt. Default 15s. An unreachable or unwell
    /// server is handled by the upstream's circuit breaker instead (`breaker_*`).
    #[serde(deserialize_with = "duration::deserialize")]
    pub server_login_retry: Duration,
    /// Consecutive connect/login failures to one upstream (host:port) that open its
    /// circuit breaker: checkouts then fail at once with 57P03 until a probe connect
    /// gets through. 0 = never by count. Default 3.
    pub breaker_failures: u32,
    /// Share of "server unwell" query errors (08, 53, 57P0x, 58, XX000; never a client's
    /// own) among an upstream's queries in a 10 s window (at least 20 such errors) that
    /// opens its breaker; 0 = never. Default 0.5.
    pub breaker_error_ratio: f64,
    /// Longest interval between probes of an open breaker (they start at 50 ms and
    /// double). Default 400ms, so a database that comes back is noticed within half a second.
    #[serde(deserialize_with = "duration::deserialize")]
    pub breaker_probe_max: Duration,
    /// Longest a client waits for a server connection; 0 = forever. Default 120s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub query_wait_timeout: Duration,
    /// Longest a client may take to log in. Default 60s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub client_login_timeout: Duration,
    /// Close clients idle (outside a transaction) this long; 0 = never (default).
    #[serde(deserialize_with = "duration::deserialize")]
    pub client_idle_timeout: Duration,
    /// Close clients idle inside a transaction this long; 0 = never (default).
    #[serde(deserialize_with = "duration::deserialize")]
    pub idle_transaction_timeout: Duration,
    /// Close pooled server connections unused this long; 0 = never. Default 600s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub server_idle_timeout: Duration,
    /// Close pooled server connections older than this when released; 0 = use once. Default 3600s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub server_lifetime: Duration,
    /// Cancel a query and close its client after it runs this long; 0 = never (default).
    /// Meant as a backstop slightly above the server's own `statement_timeout`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub query_timeout: Duration,
    /// How long in-flight transactions may finish after SIGTERM or `SHUTDOWN`. Default 10s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub shutdown_timeout: Duration,
    /// Named prepared statements mapped across server connections in transaction mode,
    /// per server connection (LRU); 0 turns the mapping off. Default 1000.
    pub max_prepared_statements: u32,
    /// Serve a client's repeated unnamed statements (the extended protocol without
    /// prepared statements: pgbench -M extended, most ORMs with bind parameters) from
    /// server-side named statements, so PostgreSQL parses them once per server connection
    /// (a statement with parameters: once per five executions) instead of once per
    /// execution. Transaction mode; needs `max_prepared_statements` > 0. Default true.
    ///
    /// Why it cannot change what a client gets: a client that sends an unnamed statement
    /// expects it planned for the values it binds, as on a direct connection, where the
    /// statement is parsed anew each time. A server-side prepared statement with
    /// parameters gets custom plans only for its first five Binds (PostgreSQL's
    /// `choose_custom_plan`, `plan_cache_mode = auto`); from the sixth it may use the
    /// generic plan. So the proxy counts the Binds of each such statement per server
    /// connection and, ahead of the sixth, closes and parses it again in the same write
    /// (answers swallowed): PostgreSQL's count starts over and every execution is planned
    /// for its values. A statement without parameters has one plan either way and is
    /// never re-prepared. These statements have server names of their own, apart from
    /// clients' named statements of the same text, whose plan choice (generic plans after
    /// five executions, which JDBC and npgsql rely on) stays PostgreSQL's: nothing is set
    /// on the connection (no `plan_cache_mode`).
    pub cache_unnamed_statements: bool,
    /// Session settings replayed on each server connection in transaction mode besides the
    /// ones PostgreSQL reports itself (`application_name`, `TimeZone`, ...).
    pub track_extra_parameters: Vec<String>,
    /// What transaction mode does with features that need a whole session (LISTEN,
    /// session advisory locks, `WITH HOLD` cursors, temp tables, SQL `PREPARE`). Default `pin`.
    pub session_features: SessionFeatures,
    /// Users who may run every admin console command (database `pgweir` or `pgbouncer`).
    pub admin_users: Vec<String>,
    /// Users who may run the admin console's `SHOW` commands.
    pub stats_users: Vec<String>,
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, `/api/v1/...`);
    /// `""` turns it off. Default `127.0.0.1:9930`.
    #[serde(deserialize_with = "de_optional_socket_addr")]
    pub http_listen: Option<SocketAddr>,
    /// Directory of a Unix-domain socket `.s.PGSQL.<port>` (the `listen` port) that
    /// clients reach with `host=<dir>`, as PgBouncer's `unix_socket_dir`; relative to
    /// the config file. Unset or `""`: no Unix socket (the default).
    #[serde(deserialize_with = "unix_socket::de_dir")]
    pub unix_socket_dir: Option<PathBuf>,
    /// Permissions of the Unix socket, octal as in PgBouncer (`"0777"`, the default).
    #[serde(deserialize_with = "unix_socket::de_mode")]
    pub unix_socket_mode: u32,
    /// How often a stats line is logged; 0 = never. Default 60s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub stats_period: Duration,
    /// Log each successful client login. Default true.
    pub log_connections: bool,
    /// Log each client disconnection with its reason. Default true.
    pub log_disconnections: bool,
    /// Log the errors the proxy sends to clients. Default true.
    pub log_pooler_errors: bool,
    /// Log line format. Default `text`.
    pub log_format: LogFormat,
    /// TLS for clients (PgBouncer's `client_tls_sslmode`, see [`SslMode`]). Default
    /// `disable`. Anything but `disable` needs `client_tls_cert_file` and `client_tls_key_file`.
    pub client_tls_sslmode: SslMode,
    /// The proxy's certificate chain for clients (PEM); relative to the config file.
    pub client_tls_cert_file: Option<PathBuf>,
    /// The private key of `client_tls_cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; needed by
    /// `verify-ca`/`verify-full`, else client certificates are not asked for.
    pub client_tls_ca_file: Option<PathBuf>,
    /// TLS versions clients may use, PgBouncer's words: `tlsv1.2`, `tlsv1.3`, `secure`
    /// (both), `all`/`legacy` (also 1.0 and 1.1, which pgweir does not implement; they
    /// are ignored). Comma or space separated. Default `secure`.
    pub client_tls_protocols: String,
    /// Cipher suites clients may use: `default`, `secure`, `fast`, `normal`, `all`
    /// (every suite rustls offers: AES-GCM and ChaCha20-Poly1305 with ECDHE) or a
    /// colon-separated list of OpenSSL or IANA suite names. Default `default`.
    pub client_tls_ciphers: String,
    /// TLS to servers, with libpq's meanings (see [`SslMode`]). Default `disable`.
    pub server_tls_sslmode: SslMode,
    /// CA certificates (PEM) for `server_tls_sslmode = verify-ca/verify-full`.
    pub server_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) pgweir shows to servers that ask for one.
    pub server_tls_cert_file: Option<PathBuf>,
    /// Private key of `server_tls_cert_file`.
    pub server_tls_key_file: Option<PathBuf>,
    /// TLS versions for server connections; as `client_tls_protocols`. Default `secure`.
    pub server_tls_protocols: String,
    /// Cipher suites for server connections; as `client_tls_ciphers`. Default `default`.
    pub server_tls_ciphers: String,
    /// Databases clients may connect to, by the name clients use (`[databases.NAME]`).
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// Users (`[users.NAME]`), merged by [`Config::load`] with the auth file's users.
    pub users: BTreeMap<String, UserConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 6432)),
            pool_mode: PoolMode::Transaction,
            default_pool_size: 20,
            min_pool_size: 0,
            max_pool_size: 0,
            autoscale: true,
            scaling: ScalingConfig::default(),
            max_pinned: None,
            max_queue: 0,
            reserve_critical: 0,
            dedup: false,
            dedup_max_bytes: 1 << 20,
            dedup_functions: Vec::new(),
            mode: Mode::Normal,
            admin_token: None,
            default_priority: Priority::Normal,
            priority_aging: Duration::from_secs(1),
            priority_rules: Vec::new(),
            max_client_conn: 10_000,
            max_connection_rate: 0,
            max_db_connections: 0,
            max_user_connections: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: Duration::from_secs(5),
            auth_type: AuthType::ScramSha256,
            auth_file: None,
            auth_hba_file: None,
            hba: None,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_owned(),
            auth_dbname: None,
            auth_query_cache_ttl: Duration::from_secs(60),
            server_reset_query: "DISCARD ALL".to_owned(),
            max_message_size: 1 << 30,
            server_connect_timeout: Duration::from_secs(15),
            server_login_retry: Duration::from_secs(15),
            breaker_failures: 3,
            breaker_error_ratio: 0.5,
            breaker_probe_max: Duration::from_millis(400),
            query_wait_timeout: Duration::from_secs(120),
            client_login_timeout: Duration::from_secs(60),
            client_idle_timeout: Duration::ZERO,
            idle_transaction_timeout: Duration::ZERO,
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            query_timeout: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(10),
            max_prepared_statements: 1000,
            cache_unnamed_statements: true,
            track_extra_parameters: vec![
                "search_path".to_owned(),
                "statement_timeout".to_owned(),
                "lock_timeout".to_owned(),
            ],
            session_features: SessionFeatures::Pin,
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            http_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_HTTP_PORT))),
            unix_socket_dir: None,
            unix_socket_mode: 0o777,
            stats_period: Duration::from_secs(60),
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            log_format: LogFormat::Text,
            client_tls_sslmode: SslMode::Disable,
            client_tls_cert_file: None,
            client_tls_key_file: None,
            client_tls_ca_file: None,
            client_tls_protocols: "secure".to_owned(),
            client_tls_ciphers: "default".to_owned(),
            server_tls_sslmode: SslMode::Disable,
            server_tls_ca_file: None,
            server_tls_cert_file: None,
            server_tls_key_file: None,
            server_tls_protocols: "secure".to_owned(),
            server_tls_ciphers: "default".to_owned(),
            databases: BTreeMap::new(),
            users: BTreeMap::new(),
        }
    }
}

/// Where and how to reach one upstream database (`[databases.NAME]`). `Debug` hides `password`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Server host name or IP address (one; no lists, no Unix sockets). Required.
    pub host: String,
    /// Server port. Default 5432.
    #[serde(default = "default_server_port")]
    pub port: u16,
    /// Database name on the server; `None` = the name clients use.
    pub dbname: Option<String>,
    /// Log in to the server as this user instead of the client's (one pool for the database).
    pub user: Option<String>,
    /// Password for `user`; `None` = the user's secret from `[users]`/the auth file.
    pub password: Option<String>,
    /// Pool size for this database; `None` = `default_pool_size`.
    pub pool_size: Option<u32>,
    /// Minimum pool size for this database; `None` = the global `min_pool_size`.
    pub min_pool_size: Option<u32>,
    /// The scaling engine's ceiling for this database's pools; `None` = the global
    /// `max_pool_size` (0 there and here: fixed pools).
    pub max_pool_size: Option<u32>,
    /// Most pinned clients per pool of this database; `None` = the global `max_pinned`.
    pub max_pinned: Option<u32>,
    /// Most waiting clients per pool of this database; `None` = the global `max_queue`.
    pub max_queue: Option<u32>,
    /// Servers of each pool of this database only critical clients get; `None` = the
    /// global `reserve_critical`.
    pub reserve_critical: Option<u32>,
    /// Pool mode for this database; `None` = the global `pool_mode`.
    pub pool_mode: Option<PoolMode>,
    /// Query dedup for this database; `None` = the global `dedup`.
    pub dedup: Option<bool>,
    /// `reserve_pool_size` for this database's pools; `None` = the global one.
    pub reserve_pool_size: Option<u32>,
    /// `reserve_pool_timeout` for this database's pools; `None` = the global one.
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub reserve_pool_timeout: Option<Duration>,
    /// `auth_user` for logins to this database; `None` = the global one.
    pub auth_user: Option<String>,
    /// `auth_query` for logins to this database; `None` = the global one.
    pub auth_query: Option<String>,
    /// `auth_dbname` for logins to this database; `None` = the global one.
    pub auth_dbname: Option<String>,
}

impl Default for DatabaseConfig {
    /// A local server on the default port with every option inherited.
    fn default() -> Self {
        DatabaseConfig {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_SERVER_PORT,
            dbname: None,
            user: None,
            password: None,
            pool_size: None,
            min_pool_size: None,
            max_pool_size: None,
            max_pinned: None,
            max_queue: None,
            reserve_critical: None,
            pool_mode: None,
            dedup: None,
            reserve_pool_size: None,
            reserve_pool_timeout: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("pool_size", &self.pool_size)
            .field("min_pool_size", &self.min_pool_size)
            .field("max_pool_size", &self.max_pool_size)
            .field("max_pinned", &self.max_pinned)
            .field("max_queue", &self.max_queue)
            .field("reserve_critical", &self.reserve_critical)
            .field("pool_mode", &self.pool_mode)
            .field("dedup", &self.dedup)
            .field("reserve_pool_size", &self.reserve_pool_size)
            .field("reserve_pool_timeout", &self.reserve_pool_timeout)
            .field("auth_user", &self.auth_user)
            .field("auth_query", &self.auth_query)
            .field("auth_dbname", &self.auth_dbname)
            .finish()
    }
}

impl DatabaseConfig {
    /// The database name to ask the server for: `dbname`, or else `name`, the client-side name.
    pub fn server_dbname<'a>(&'a self, name: &'a str) -> &'a str {
        self.dbname.as_deref().unwrap_or(name)
    }
}

/// One `[[priority_rules]]` entry: clients matching every given field get `priority`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    /// The client's user name, if the rule names one.
    pub user: Option<String>,
    /// The database the client asked for, if the rule names one.
    pub database: Option<String>,
    /// The client's `application_name`, if the rule names one.
    pub application_name: Option<String>,
    /// The class its clients get.
    pub priority: Priority,
}

impl PriorityRule {
    /// Whether a client of `user` on `database` with `application_name` matches.
    pub fn matches(&self, user: &str, database: &str, application_name: &str) -> bool {
        self.user.as_deref().is_none_or(|u| u == user)
            && self.database.as_deref().is_none_or(|d| d == database)
            && self
                .application_name
                .as_deref()
                .is_none_or(|a| a == application_name)
    }
}

/// Per-user settings (`[users.NAME]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's secret: a plain-text password, an md5 hash or a SCRAM secret.
    pub password: Option<Secret>,
    /// Pool mode for this user's pools; wins over the database's and the global one.
    pub pool_mode: Option<PoolMode>,
    /// Most server connections of this user over all databases; `None` = the global
    /// `max_user_connections`.
    pub max_user_connections: Option<u32>,
}

/// Command-line / environment values; each `Some` wins over everything in the file.
/// `Debug` hides the upstream URL, which holds a password.
#[derive(Default, Clone)]
pub struct Overrides {
    /// Replaces `listen`.
    pub listen: Option<SocketAddr>,
    /// An upstream URL added with [`Config::apply_upstream_url`].
    pub upstream: Option<String>,
    /// Replaces `pool_mode`, and clears per-database and per-user pool modes.
    pub pool_mode: Option<PoolMode>,
    /// Replaces `default_pool_size`, and clears per-database pool sizes.
    pub pool_size: Option<u32>,
    /// Replaces `max_client_conn`.
    pub max_client_conn: Option<u32>,
    /// Replaces `log_format`.
    pub log_format: Option<LogFormat>,
    /// Replaces `admin_users`.
    pub admin_users: Option<Vec<String>>,
    /// Replaces `stats_users`.
    pub stats_users: Option<Vec<String>>,
    /// Replaces `http_listen` (`None` inside = off).
    pub http_listen: Option<Option<SocketAddr>>,
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream.as_ref().map(|_| REDACTED))
            .field("pool_mode", &self.pool_mode)
            .field("pool_size", &self.pool_size)
            .field("max_client_conn", &self.max_client_conn)
            .field("log_format", &self.log_format)
            .field("admin_users", &self.admin_users)
            .field("stats_users", &self.stats_users)
            .field("http_listen", &self.http_listen)
            .finish()
    }
}

/// What `Debug` shows instead of a password.
const REDACTED: &str = "<redacted>";

impl Config {
    /// Parse and validate TOML text; `origin` names the source in errors. Does not read `auth_file`.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for malformed TOML, unknown keys and wrong types;
    /// [`ConfigError::Invalid`] for values [`Config::validate`] rejects; both with the line.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = parse_toml(text, origin)?;
        config
            .check()
            .map_err(|p| p.into_error(origin, SpanTree::parse(text).as_ref(), &[]))?;
        Ok(config)
    }

    /// Read a config file, parse it, read its auth file (relative to the config file's
    /// directory) and merge the users, then validate.
    ///
    /// # Errors
    /// As [`Config::load_with_overrides`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_overrides(path, &Overrides::default())
    }

    /// [`Config::load`] with `overrides` applied before validation, so a file without
    /// databases is fine when the overrides bring an upstream URL.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if a file cannot be read; [`ConfigError::Parse`] or
    /// [`ConfigError::Invalid`] (with the line) for the config; [`ConfigError::AuthFile`]
    /// for a bad auth-file line or a secret unusable with `auth_type`; [`ConfigError::Url`]
    /// for a bad upstream URL.
    pub fn load_with_overrides(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let mut config = parse_toml(&text, &origin)?;
        if let Some(file) = config.auth_file.take() {
            let resolved = path.parent().unwrap_or(Path::new("")).join(file);
            let entries = auth_file::read(&resolved)?;
            config.merge_auth_file(entries, &resolved)?;
            config.auth_file = Some(resolved);
        }
        let dir = path.parent().unwrap_or(Path::new(""));
        if let Some(file) = config.auth_hba_file.take() {
            config.auth_hba_file = Some(dir.join(file));
            config.read_hba_file()?;
        }
        for file in config.tls_files_mut() {
            if let Some(p) = file.as_mut() {
                *p = dir.join(&*p);
            }
        }
        if let Some(p) = config.unix_socket_dir.as_mut() {
            *p = dir.join(&*p);
        }
        let overridden = config.apply_overrides_unchecked(overrides)?;
        let tree = SpanTree::parse(&text);
        config
            .check()
            .map_err(|p| p.into_error(&origin, tree.as_ref(), &overridden))?;
        Ok(config)
    }

    /// The TLS certificate, key and CA file settings (resolved against the config file's
    /// directory by [`Config::load`]).
    fn tls_files_mut(&mut self) -> [&mut Option<PathBuf>; 6] {
        [
            &mut self.client_tls_cert_file,
            &mut self.client_tls_key_file,
            &mut self.client_tls_ca_file,
            &mut self.server_tls_ca_file,
            &mut self.server_tls_cert_file,
            &mut self.server_tls_key_file,
        ]
    }

    /// Apply command-line / environment overrides (each `Some` wins over the file), then re-validate.
    ///
    /// # Errors
    /// [`ConfigError::Url`] for a bad upstream URL; [`ConfigError::Invalid`] if the result
    /// does not validate.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let overridden = self.apply_overrides_unchecked(o)?;
        self.check()
            .map_err(|p| p.into_error("config", None, &overridden))
    }

    /// Effective pool size for database `db`: its `pool_size`, else `default_pool_size`.
    pub fn pool_size_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.pool_size)
            .unwrap_or(self.default_pool_size)
    }

    /// The class of a client from the rules, else `default_priority`.
    pub fn priority_for(&self, user: &str, database: &str, application_name: &str) -> Priority {
        self.priority_rules
            .iter()
            .find(|r| r.matches(user, database, application_name))
            .map_or(self.default_priority, |r| r.priority)
    }

    /// Whether query dedup is on for database `db`: its own `dedup`, else the global
    /// one, which `high_performance` mode turns on.
    pub fn dedup_for(&self, db: &str) -> bool {
        self.databases
            .get(db)
            .and_then(|d| d.dedup)
            .unwrap_or(self.dedup || self.mode == Mode::HighPerformance)
    }

    /// Effective `reserve_critical` for each pool of database `db`.
    pub fn reserve_critical_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.reserve_critical)
            .unwrap_or(self.reserve_critical)
    }

    /// Effective `max_queue` for each pool of database `db`.
    pub fn max_queue_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.max_queue)
            .unwrap_or(self.max_queue)
    }

    /// Effective pin cap for each pool of database `db`: its `max_pinned`, else the
    /// global one, else its pool size (`max_pool_size` when autoscaled) - 1.
    pub fn max_pinned_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.max_pinned)
            .or(self.max_pinned)
            .unwrap_or_else(|| {
                // An autoscaled pool may grow to max_pool_size: pins leave one of those.
                let size = match self.max_pool_size_for(db) {
                    0 => self.pool_size_for(db),
                    max => max,
                };
                size.saturating_sub(1)
            })
    }

    /// Effective minimum pool size for database `db`: its `min_pool_size`, else the global one.
    pub fn min_pool_size_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.min_pool_size)
            .unwrap_or(self.min_pool_size)
    }

    /// Effective scaling ceiling for database `db` (0: fixed pools).
    pub fn max_pool_size_for(&self, db: &str) -> u32 {
        self.databases
            .get(db)
            .and_then(|d| d.max_pool_size)
            .unwrap_or(self.max_pool_size)
    }

    /// Whether the scaling engine sizes the pools of database `db`.
    pub fn autoscaled(&self, db: &str) -> bool {
        self.autoscale && self.max_pool_size_for(db) > 0
    }

    /// Effective pool mode for `user` on `db`: the user's, else the database's, else the
    /// global one (PgBouncer's precedence).
    pub fn pool_mode_for(&self, db: &str, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or_else(|| self.databases.get(db).and_then(|d| d.pool_mode))
            .unwrap_or(self.pool_mode)
    }

    /// Merge auth-file users under `[users]`: a `[users]` password wins over the file's.
    fn merge_auth_file(
        &mut self,
        entries: Vec<auth_file::AuthFileEntry>,
        path: &Path,
    ) -> Result<(), ConfigError> {
        for entry in entries {
            let user = self.users.entry(entry.user).or_default();
            if user.password.is_some() {
                continue;
            }
            if let Some(secret) = &entry.secret {
                secret
                    .check_usable_with(self.auth_type)
                    .map_err(|message| ConfigError::AuthFile {
                        path: path.to_owned(),
                        line: entry.line,
                        message,
                    })?;
            }
            user.password = entry.secret;
        }
        Ok(())
    }

    /// Apply overrides without validating; returns the key paths they set.
    fn apply_overrides_unchecked(
        &mut self,
        o: &Overrides,
    ) -> Result<Vec<Vec<String>>, ConfigError> {
        let mut set: Vec<Vec<String>> = Vec::new();
        let mut mark = |path: &[&str]| set.push(path.iter().map(|s| (*s).to_owned()).collect());
        if let Some(upstream) = &o.upstream {
            let up = url::parse(upstream)?;
            mark(&["databases", &up.dbname]);
            mark(&["users", &up.user]);
            self.apply_upstream_url(upstream)?;
        }
        if let Some(listen) = o.listen {
            self.listen = listen;
            mark(&["listen"]);
        }
        if let Some(mode) = o.pool_mode {
            self.pool_mode = mode;
            self.databases.values_mut().for_each(|d| d.pool_mode = None);
            self.users.values_mut().for_each(|u| u.pool_mode = None);
            mark(&["pool_mode"]);
        }
        if let Some(size) = o.pool_size {
            self.default_pool_size = size;
            self.databases.values_mut().for_each(|d| d.pool_size = None);
            mark(&["default_pool_size"]);
        }
        if let Some(max) = o.max_client_conn {
            self.max_client_conn = max;
            mark(&["max_client_conn"]);
        }
        if let Some(format) = o.log_format {
            self.log_format = format;
            mark(&["log_format"]);
        }
        if let Some(users) = &o.admin_users {
            self.admin_users = users.clone();
            mark(&["admin_users"]);
        }
        if let Some(users) = &o.stats_users {
            self.stats_users = users.clone();
            mark(&["stats_users"]);
        }
        if let Some(addr) = o.http_listen {
            self.http_listen = addr;
            mark(&["http_listen"]);
        }
        Ok(set)
    }
}

fn default_server_port() -> u16 {
    DEFAULT_SERVER_PORT
}

/// Parse TOML into a [`Config`] without validating it.
fn parse_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
    toml::from_str::<Config>(text).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        // Keep the message on one line: the parser's may span several.
        let mut message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        // Name the key the parser complained about; unknown-field messages already do.
        if let (Some(offset), Some(tree)) = (offset, SpanTree::parse(text)) {
            let path = tree.path_at(offset);
            if !path.is_empty() && !message.starts_with("unknown field") {
                message = format!("key `{}`: {message}", dotted(&path));
            }
        }
        ConfigError::Parse {
            origin: origin.to_owned(),
            line: offset.map_or(0, |o| line_at(text, o)),
            message,
        }
    })
}

/// `http_listen` as `"ip:port"`, or `""` for off.
fn de_optional_socket_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {text:?}: expected \"IP:PORT\", e.g. \"127.0.0.1:9930\", or \"\" for off"
        ))
    })
}

/// `listen` as `"ip:port"`, with an error that shows the expected form.
fn de_socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {text:?}: expected \"IP:PORT\", e.g. \"127.0.0.1:6432\" or \"[::]:6432\""
        ))
    })
}
