//! [`Config`], the one serde tree of `proxy.toml`, and its defaults ([`Config::default`]):
//! every setting, its meaning and its default value in one place.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{
    duration, hba, size, unix_socket, AuthType, DatabaseConfig, LogFormat, Mode, PoolMode,
    Priority, PriorityRule, ScalingConfig, Secret, SessionFeatures, SslMode, UserConfig,
    DEFAULT_AUTH_QUERY, DEFAULT_HTTP_PORT,
};

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
