//! What can end a client session, whose fault it was, and what the client is told.
//! Every error is typed: what happened, with the values it names; the text a client
//! reads is each type's `Display`, in PostgreSQL's words where PostgreSQL has them.

use std::time::Duration;

use weir_pool::ShedReason;
use weir_wire::auth::AuthError;
use weir_wire::frame::FrameError;
use weir_wire::sqlstate;
use weir_wire::startup::StartupError;

use crate::server::ServerError;

/// Why a client session ended (or could not start). Each variant maps to the SQLSTATE and
/// message the client receives in a FATAL ErrorResponse.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client's socket failed or closed: nobody to tell.
    #[error("client connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol.
    #[error(transparent)]
    Protocol(#[from] Violation),
    /// Authentication failed; the text is PostgreSQL's own.
    #[error("password authentication failed for user \"{0}\"")]
    PasswordFailed(String),
    /// Authentication could not even be attempted (method, missing secret).
    #[error(transparent)]
    AuthRefused(#[from] AuthRefusal),
    /// No such database in the proxy's configuration.
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    /// `max_client_conn` reached.
    #[error("sorry, too many clients already")]
    TooManyClients,
    /// The pool could not give a server connection: server down or refusing.
    #[error("server connection unavailable: {0}")]
    ServerUnavailable(#[source] Unavailable),
    /// The server refused the pool's login with its own error (`28P01`, `3D000`,
    /// `53300`, `57P03`, ...): relayed as PostgreSQL sent it.
    #[error("{message}")]
    ServerSaid {
        /// The server's SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
        /// The server's detail line.
        detail: Option<String>,
        /// The server's hint.
        hint: Option<String>,
    },
    /// The upstream's circuit breaker is open: failed at once, nothing attempted.
    #[error("pgweir: upstream {upstream} is unavailable (circuit breaker open: {last_error}); next attempt in {} ms", retry_in.as_millis())]
    BreakerOpen {
        /// host:port.
        upstream: String,
        /// Until the next probe.
        retry_in: Duration,
        /// What opened it, as the breaker recorded it.
        last_error: String,
    },
    /// A startup parameter pgweir reads itself has a value it cannot use.
    #[error("invalid value for parameter \"{name}\": \"{value}\" ({expected})")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
    /// Shed under overload (`max_queue`, or a hopeless expected wait); `emergency`:
    /// the emergency mode admits only critical and high work.
    #[error("{reason}{}", if *emergency { " (mode = emergency: only critical and high work may wait)" } else { "" })]
    Shed {
        /// Why the pool shed it.
        reason: ShedReason,
        /// Shed because of the emergency mode.
        emergency: bool,
    },
    /// No server connection became free within `query_wait_timeout`.
    #[error("query_wait_timeout: no server connection became free within {0:?}")]
    WaitTimeout(std::time::Duration),
    /// The server connection broke while this client was using it.
    #[error("server connection lost: {0}")]
    ServerLost(#[source] ServerLoss),
    /// Something this version of pgweir does not support in the current pool mode.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// `client_login_timeout` passed before the login finished.
    #[error("client_login_timeout: login not completed within {0:?}")]
    LoginTimeout(std::time::Duration),
    /// `client_idle_timeout` passed with no activity.
    #[error("client_idle_timeout: connection idle for more than {0:?}")]
    IdleTimeout(std::time::Duration),
    /// `idle_transaction_timeout` passed inside a transaction.
    #[error("idle_transaction_timeout: transaction idle for more than {0:?}")]
    IdleInTransaction(std::time::Duration),
    /// The proxy is shutting down.
    #[error("terminating connection due to administrator command")]
    Shutdown,
    /// An administrator disconnected this client (`KILL`, `RECONNECT`).
    #[error("terminating connection due to administrator command (pgweir KILL)")]
    Killed,
    /// `query_timeout` passed while a query ran; the query was cancelled.
    #[error("query_timeout: query ran longer than {0:?} and was canceled")]
    QueryTimeout(std::time::Duration),
    /// Session settings could not be restored on a server connection; the text is the
    /// server's own error message.
    #[error("could not restore session settings on the server connection: {server_message}")]
    SettingsRestore {
        /// What the server answered.
        server_message: String,
    },
    /// A user in neither `admin_users` nor `stats_users` asked for the admin console.
    #[error("not allowed: user \"{0}\" may not connect to the admin console")]
    AdminNotAllowed(String),
    /// The admin console is not part of this build or process.
    #[error("the admin console is not available in this process")]
    AdminUnavailable,
    /// `DISABLE db` is in force.
    #[error("database \"{0}\" is not currently accepting connections (disabled with DISABLE)")]
    DatabaseDisabled(String),
    /// A new connection arrived while the proxy drains for shutdown.
    #[error("pgweir is shutting down and accepts no new connections")]
    Draining,
    /// A plaintext login while `client_tls_sslmode` requires TLS (28000, as
    /// PostgreSQL refuses a `hostssl`-only login).
    #[error("SSL required")]
    TlsRequired,
    /// The TLS handshake with the client failed; nothing can be told to it.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(#[source] std::io::Error),
}

/// How a client broke the protocol (08P01), in PostgreSQL's words where it has them.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// A message type byte no frontend message has.
    #[error("invalid frontend message type {0}")]
    UnknownMessage(u8),
    /// A length field smaller than itself.
    #[error("invalid message length {len} for message type {tag:?}")]
    LengthTooSmall {
        /// The message type.
        tag: char,
        /// The length sent.
        len: i32,
    },
    /// A message over `max_message_size`.
    #[error("message of type {tag:?} is {len} bytes, over max_message_size ({max} bytes)")]
    TooLarge {
        /// The message type.
        tag: char,
        /// The length sent.
        len: usize,
        /// `max_message_size`.
        max: usize,
    },
    /// The startup packet (or an encryption request) is malformed.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A SASLInitialResponse that does not parse.
    #[error("malformed SASL message: {0}")]
    SaslMessage(#[source] AuthError),
    /// A PasswordMessage that does not parse.
    #[error("malformed password message: {0}")]
    PasswordMessage(#[source] AuthError),
    /// The SCRAM exchange broke (not a wrong password: that is 28P01).
    #[error("SCRAM authentication failed: {0}")]
    Scram(#[source] AuthError),
    /// Something else where a password message was due.
    #[error("expected password response, got message type {0:?}")]
    ExpectedPassword(char),
    /// A TLS ClientHello first while TLS is off.
    #[error(
        "received a direct TLS connection, but TLS is not enabled (client_tls_sslmode = disable)"
    )]
    DirectTlsDisabled,
    /// Plaintext bytes pipelined behind an SSLRequest (CVE-2021-23214).
    #[error("received unencrypted data after encryption request")]
    DataAfterEncryptionRequest,
    /// SSLRequest or GSSENCRequest over and over.
    #[error("too many encryption requests before the startup packet")]
    TooManyEncryptionRequests,
    /// Direct TLS without the `postgresql` ALPN protocol (as PostgreSQL 17 refuses).
    #[error("received direct SSL connection request without ALPN protocol negotiation extension")]
    NoAlpn,
    /// The connection cannot be upgraded to TLS (not plain TCP any more).
    #[error("cannot start TLS on this connection: {0}")]
    NotUpgradable(#[source] std::io::Error),
}

impl From<FrameError> for Violation {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::LengthTooSmall { tag, len } => Violation::LengthTooSmall { tag, len },
            FrameError::TooLarge { tag, len, max } => Violation::TooLarge { tag, len, max },
        }
    }
}

/// Why a login cannot even be attempted (28000).
#[derive(Debug, thiserror::Error)]
pub enum AuthRefusal {
    /// The startup packet named no user.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// No `auth_hba_file` rule matches (PostgreSQL's words).
    #[error("no pg_hba.conf entry for host \"{}\", user \"{user}\", database \"{database}\", {}", hba_host(*host), encryption(*tls))]
    NoHbaEntry {
        /// The client's address (`None`: the Unix socket).
        host: Option<std::net::IpAddr>,
        /// The user.
        user: String,
        /// The database.
        database: String,
        /// Over TLS.
        tls: bool,
    },
    /// The matching `auth_hba_file` rule says `reject`.
    #[error("pg_hba.conf rejects connection for host \"{}\", user \"{user}\", database \"{database}\", {}", hba_host(*host), encryption(*tls))]
    HbaReject {
        /// The client's address (`None`: the Unix socket).
        host: Option<std::net::IpAddr>,
        /// The user.
        user: String,
        /// The database.
        database: String,
        /// Over TLS.
        tls: bool,
    },
    /// `cert`: the client certificate does not name the user.
    #[error("certificate authentication failed for user \"{0}\"")]
    CertificateMismatch(String),
    /// The client chose a SASL mechanism the proxy did not offer (its description).
    #[error("unsupported authentication mechanism: {0}")]
    UnsupportedMechanism(String),
}

/// How PostgreSQL's hba messages name the client's host.
fn hba_host(host: Option<std::net::IpAddr>) -> String {
    host.map_or_else(|| "[local]".to_owned(), |ip| ip.to_string())
}

/// How PostgreSQL's hba messages name the transport.
fn encryption(tls: bool) -> &'static str {
    if tls {
        "SSL encryption"
    } else {
        "no encryption"
    }
}

/// Why the pool had no server connection to give (08006).
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The connect or the pool's login failed.
    #[error(transparent)]
    Connect(ServerError),
    /// The connect took longer than `server_connect_timeout`.
    #[error("timed out connecting to the server after {0:?}")]
    ConnectTimeout(Duration),
    /// The last connect failed less than `server_login_retry` ago.
    #[error("server login has been failing, next attempt in {0:?} (server_login_retry)")]
    LoginRetry(Duration),
    /// The `auth_query` lookup of a user's secret failed (boxed: it is rare and big).
    #[error(transparent)]
    AuthQuery(Box<crate::auth_query::LookupError>),
    /// `auth_query` answered with a secret that is neither md5 nor SCRAM nor plain.
    #[error("auth_query returned an unusable secret for user \"{0}\"")]
    UnusableSecret(String),
}

/// How a server connection broke while a client used it (08006).
#[derive(Debug, thiserror::Error)]
pub enum ServerLoss {
    /// The server closed it.
    #[error("server closed the connection")]
    Closed,
    /// Reading or writing it failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// It sent something that is not the protocol.
    #[error("server sent a malformed message: {0}")]
    Malformed(#[source] weir_wire::frame::FrameError),
}

/// What this version of pgweir does not support where the client asked for it (0A000).
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    /// A named prepared statement in transaction mode with `max_prepared_statements = 0`.
    #[error("named prepared statement \"{0}\" is not supported in transaction pooling mode with max_prepared_statements = 0: the next transaction may run on another server connection")]
    NamedStatement(String),
}

impl Unsupported {
    /// What to do instead.
    pub fn hint(&self) -> &'static str {
        match self {
            Unsupported::NamedStatement(_) => crate::statement::PREPARED_HINT,
        }
    }
}

impl From<crate::stop::Stop> for ClientError {
    fn from(stop: crate::stop::Stop) -> Self {
        match stop {
            crate::stop::Stop::Drain => ClientError::Shutdown,
            crate::stop::Stop::Kill => ClientError::Killed,
        }
    }
}

/// SQLSTATE 55000 `object_not_in_prerequisite_state`, PostgreSQL's code for a database
/// that does not accept connections.
const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// SQLSTATE 57P03 `cannot_connect_now`.
const CANNOT_CONNECT_NOW: &str = "57P03";

impl ClientError {
    /// Appends this error as an ErrorResponse of `severity` with its SQLSTATE (08006 if
    /// it has none), message, detail and hint.
    pub fn put(&self, out: &mut bytes::BytesMut, severity: weir_wire::build::Severity) {
        let message = self.to_string();
        weir_wire::build::put_error(
            out,
            &weir_wire::build::ErrorMessage {
                severity,
                code: self.sqlstate().unwrap_or(sqlstate::CONNECTION_FAILURE),
                message: &message,
                detail: self.detail(),
                hint: self.hint(),
            },
        );
    }

    /// The pool turned a request away (breaker open, shed, server down or refusing the
    /// pool's login): the request fails, the session need not.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ClientError::BreakerOpen { .. }
                | ClientError::Shed { .. }
                | ClientError::ServerUnavailable(_)
                | ClientError::ServerSaid { .. }
        )
    }

    /// The server connection failed under this session (lost, left in an unknown
    /// state, or cancelled over `query_timeout`): it must be closed, never reused.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self,
            ClientError::ServerLost(_)
                | ClientError::SettingsRestore { .. }
                | ClientError::QueryTimeout(_)
        )
    }

    /// The SQLSTATE to report, or `None` when the client cannot be told anything.
    pub fn sqlstate(&self) -> Option<&str> {
        Some(match self {
            ClientError::ServerSaid { code, .. } => code,
            // cannot_connect_now: drivers treat it as retryable.
            ClientError::BreakerOpen { .. } => CANNOT_CONNECT_NOW,
            ClientError::Shed { .. } => sqlstate::TOO_MANY_CONNECTIONS,
            // invalid_parameter_value
            ClientError::InvalidParameter { .. } => "22023",
            ClientError::Io(_) => return None,
            ClientError::Protocol(_) => sqlstate::PROTOCOL_VIOLATION,
            ClientError::PasswordFailed(_) => sqlstate::INVALID_PASSWORD,
            ClientError::AuthRefused(_) => sqlstate::INVALID_AUTHORIZATION,
            ClientError::UnknownDatabase(_) => sqlstate::INVALID_CATALOG_NAME,
            ClientError::TooManyClients => sqlstate::TOO_MANY_CONNECTIONS,
            ClientError::ServerUnavailable(_) | ClientError::ServerLost(_) => {
                sqlstate::CONNECTION_FAILURE
            }
            ClientError::WaitTimeout(_) => sqlstate::QUERY_CANCELED,
            ClientError::Unsupported(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            ClientError::LoginTimeout(_) => sqlstate::PROTOCOL_VIOLATION,
            ClientError::IdleTimeout(_) => sqlstate::IDLE_SESSION_TIMEOUT,
            ClientError::IdleInTransaction(_) => sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
            ClientError::Shutdown | ClientError::Killed => sqlstate::ADMIN_SHUTDOWN,
            ClientError::QueryTimeout(_) => sqlstate::QUERY_CANCELED,
            ClientError::SettingsRestore { .. } => sqlstate::CONNECTION_FAILURE,
            ClientError::AdminNotAllowed(_) | ClientError::AdminUnavailable => {
                sqlstate::INVALID_AUTHORIZATION
            }
            ClientError::DatabaseDisabled(_) => OBJECT_NOT_IN_PREREQUISITE_STATE,
            ClientError::Draining => sqlstate::ADMIN_SHUTDOWN,
            ClientError::TlsRequired => sqlstate::INVALID_AUTHORIZATION,
            ClientError::TlsHandshake(_) => return None,
        })
    }

    /// Detail for the client, where there is one (the server's own).
    pub fn detail(&self) -> Option<&str> {
        match self {
            ClientError::ServerSaid { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// A hint telling the user what to do, where there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            ClientError::ServerSaid { hint, .. } => hint.as_deref(),
            ClientError::BreakerOpen { .. } => Some(
                "The database is down or unreachable; pgweir fails fast and retries it on its own. Retry later.",
            ),
            ClientError::Shed { .. } => Some(
                "The database is saturated: pgweir turned this request away at once rather than let every client time out. Retry with backoff, or raise max_queue / pool_size.",
            ),
            ClientError::Unsupported(u) => Some(u.hint()),
            ClientError::WaitTimeout(_) => Some(
                "The database is saturated; raise pool_size or query_wait_timeout, or retry later.",
            ),
            ClientError::AdminNotAllowed(_) => Some(
                "List the user in admin_users or stats_users (or --admin-users / --stats-users).",
            ),
            ClientError::TlsRequired => Some(
                "pgweir accepts only encrypted connections (client_tls_sslmode); connect with sslmode=require or stronger.",
            ),
            ClientError::DatabaseDisabled(_) => {
                Some("An administrator ran DISABLE; ENABLE on the admin console lifts it.")
            }
            _ => None,
        }
    }
}

/// Why the proxy itself could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Binding the Unix socket (`unix_socket_dir`) failed.
    #[error("cannot listen on Unix socket {}: {source}", path.display())]
    BindUnix {
        /// The socket file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate, key or setting is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("user \"{user}\": {message}")]
    Credential {
        /// The user.
        user: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration file the proxy reads itself (`auth_hba_file`) is unusable.
    #[error("{0}")]
    Config(String),
}
