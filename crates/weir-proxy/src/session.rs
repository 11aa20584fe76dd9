//! One client connection from accept to close: the startup packet, authentication, the
//! login greeting, then the relay loop (see [`crate::relay`]) or the admin console;
//! errors end in a FATAL ErrorResponse the client can read.
//!
//! Log lines name the client in a `client` field (`db/user@addr:port`), and PgBouncer's
//! `login attempt` / `closing because` lines are logged when `log_connections` /
//! `log_disconnections` are on. A logged-in client that idles parks
//! ([`crate::park`]): its task ends and [`relay_phase`] runs again when it speaks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weir_config::{Config, Mode, Priority};
use weir_pool::PoolError;
use weir_wire::build::{self, Severity};
use weir_wire::startup::{parse_initial, InitialPacket, StartupMessage};

use crate::admin_hook::{AdminConsole, AdminRole};
use crate::cancel::CancelRegistry;
use crate::client_auth::{authenticate, Credentials};
use crate::error::{ClientError, Unavailable, Violation};
use crate::params::{startup_settings, ClientParams};
use crate::park::{ParkingLot, Resume};
use crate::pools::{PoolEntry, Pools};
use crate::prepared::StatementRegistry;
use crate::registry::{ClientInfo, ClientRegistry, ClientTag, LoginInfo};
use crate::relay::{Ended, Relay, RelayParts};
use crate::server::{send_cancel, ServerError};
use crate::stream::Stream;
use crate::tls::ClientTls;
use crate::upstream::Upstream;

/// How long an admin console session may finish its current reply after shutdown began.
const CONSOLE_SHUTDOWN_GRACE: Duration = Duration::from_millis(200);
/// How long a connection that arrives while draining may take to say what it wants.
const DRAINING_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by every session of one proxy.
pub struct Shared {
    /// The configuration the proxy started with. Read [`Shared::config`] instead: it
    /// follows `RELOAD` and `SET`. (Kept while the relay moves over.)
    pub config: Arc<Config>,
    /// Users' secrets, derived once per (re)load.
    pub credentials: Credentials,
    /// Secrets fetched with `auth_query`, cached for `auth_query_cache_ttl`.
    pub auth_query: crate::auth_query::AuthQueryCache,
    /// `max_connection_rate`'s buckets by source address.
    pub(crate) connection_rate: crate::rate::ConnectionRate,
    /// The server connection pools (they hold the configuration in force).
    pub pools: Pools,
    /// Live clients' cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Live clients, for the admin console and `KILL`.
    pub clients: Arc<ClientRegistry>,
    /// Proxy-wide names of prepared statements (transaction mode).
    pub statements: Arc<StatementRegistry>,
    /// Per-fingerprint query timings for `SHOW QUERIES`.
    pub queries: Arc<weir_pool::query_stats::QueryStats>,
    /// Single-flight query dedup: the flights in progress and what they saved.
    pub dedup: Arc<crate::dedup::Dedup>,
    /// Idle clients parked without a task ([`crate::park`]).
    pub parking: ParkingLot,
    /// Cancelled when the proxy shuts down: idle clients are told and closed, running
    /// transactions finish first.
    pub shutdown: CancellationToken,
    /// Cancelled to ask the accept loop to begin a graceful shutdown (`SHUTDOWN`).
    pub(crate) stop: CancellationToken,
    /// Shutdown has begun: new connections are refused, `/readyz` fails.
    pub(crate) draining: AtomicBool,
    /// `SUSPEND` is in force (reported by `SHOW STATE`).
    pub(crate) suspended: AtomicBool,
    /// The client slots (`max_client_conn`), resized by `SET`/`RELOAD`.
    pub(crate) limit: Arc<Semaphore>,
    /// The size `limit` is being brought to.
    pub(crate) max_client_conn: AtomicU32,
    /// The admin console, installed by the binary.
    pub(crate) admin: OnceLock<Arc<dyn AdminConsole>>,
    /// When the proxy started.
    pub started_at: SystemTime,
}

impl Shared {
    /// Everything a proxy needs for `config`, with no admin console yet.
    ///
    /// # Errors
    /// A configured secret is unusable.
    pub(crate) fn new(mut config: Config) -> Result<Shared, crate::ProxyError> {
        if config.auth_hba_file.is_some() && config.hba.is_none() {
            config
                .read_hba_file()
                .map_err(|e| crate::ProxyError::Config(e.to_string()))?;
        }
        let credentials = Credentials::from_config(&config)?;
        let tls = Arc::new(crate::tls::Tls::from_config(&config)?);
        let config = Arc::new(config);
        Ok(Shared {
            pools: Pools::new(config.clone(), tls),
            limit: Arc::new(Semaphore::new(config.max_client_conn as usize)),
            max_client_conn: AtomicU32::new(config.max_client_conn),
            config,
            credentials,
            auth_query: Default::default(),
            connection_rate: Default::default(),
            cancels: Arc::new(CancelRegistry::default()),
            clients: Arc::new(ClientRegistry::default()),
            statements: Arc::default(),
            queries: Arc::new(weir_pool::query_stats::QueryStats::new(
                weir_pool::query_stats::DEFAULT_CAPACITY,
            )),
            dedup: Arc::default(),
            parking: ParkingLot::default(),
            shutdown: CancellationToken::new(),
            stop: CancellationToken::new(),
            draining: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            admin: OnceLock::new(),
            started_at: SystemTime::now(),
        })
    }

    /// The configuration in force (follows `RELOAD` and `SET`). One read lock and an
    /// `Arc` clone: read it once per session or checkout, not per message.
    pub fn config(&self) -> Arc<Config> {
        self.pools.config()
    }

    /// The admin console, if the binary installed one.
    pub fn admin_console(&self) -> Option<&Arc<dyn AdminConsole>> {
        self.admin.get()
    }

    /// The TLS configurations in force (both legs).
    pub fn tls(&self) -> &crate::tls::Tls {
        &self.pools.tls
    }

    /// Shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }
}

/// What a session holds for the proxy as a whole: its place under `max_client_conn`,
/// and in the count a drain waits for. A parked session keeps it.
#[derive(Default)]
pub struct Ticket {
    // Held for what dropping them does: a free `max_client_conn` place, a drain that
    // stops waiting for this session.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _token: Option<tokio_util::task::task_tracker::TaskTrackerToken>,
}

impl Ticket {
    /// A session's ticket: its `max_client_conn` permit and its drain-tracker token.
    pub fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        token: tokio_util::task::task_tracker::TaskTrackerToken,
    ) -> Self {
        Ticket {
            _permit: Some(permit),
            _token: Some(token),
        }
    }
}

/// Serves one accepted client until it leaves or parks; never panics on its input.
///
/// The task keeps this future while the client is connected and not parked, so it is
/// built to stay small: the login, the relay and the admin console run in boxed futures
/// (only one at a time), and the arguments are captured once (an `async fn` would copy
/// them).
// Not an `async fn`: that would keep a second copy of the arguments in the future.
#[allow(clippy::manual_async_fn)]
pub fn serve(
    shared: Arc<Shared>,
    mut stream: Stream,
    peer: SocketAddr,
    ticket: Ticket,
) -> impl std::future::Future<Output = ()> + Send {
    // No tracing span per client: log lines name the client in a field instead (see
    // `ClientTag`); a span cost every idle client ~480 bytes at the default log level.
    async move {
        let client = shared
            .clients
            .register(peer, matches!(stream, Stream::Unix(_)));
        let info = client.info().clone();
        // Room for a whole typical startup packet and SCRAM message in one read.
        let mut rbuf = BytesMut::with_capacity(1024);
        let login = Box::pin(login_in_time(&shared, &mut stream, &mut rbuf)).await;
        let tls = stream.tls_version();
        let result = match after_login(&shared, &info, login, tls, rbuf) {
            Step::Relay(parts) => {
                drop(info);
                let relay = Relay::new(shared, stream, client, ticket, parts, Resume::Woken);
                // Boxed: the relay's future is the task's state from here on, and the
                // login's is gone; inline, the session's future would hold both.
                return Box::pin(relay_phase(relay)).await;
            }
            Step::Console { rbuf, user, role } => {
                Box::pin(serve_console(
                    &shared,
                    &info,
                    &mut stream,
                    rbuf,
                    &user,
                    role,
                ))
                .await
            }
            // A served CancelRequest: not a client session, nothing to log.
            Step::Cancelled => return,
            Step::Failed(e) => Err(e),
        };
        finish(&shared, &mut stream, &info, result).await;
        drop((client, ticket));
    }
}

/// A logged-in client's relay, run until the client leaves (then the session ends) or
/// parks (then the parking lot keeps its parts and its socket, and the task ends).
// Not an `async fn`, so the relay is kept once in the future, not twice.
#[allow(clippy::manual_async_fn)]
pub(crate) fn relay_phase(mut relay: Relay) -> impl std::future::Future<Output = ()> + Send {
    async move {
        match relay.run().await {
            Ok(Ended::Parked(deadline)) => relay.park(deadline),
            Ok(Ended::Left) => relay.finish(Ok(())).await,
            Err(e) => relay.finish(Err(e)).await,
        }
    }
}

/// The end of a session: the error told to the client, the disconnection logged.
pub(crate) async fn finish(
    shared: &Shared,
    stream: &mut Stream,
    info: &ClientInfo,
    result: Result<(), ClientError>,
) {
    // The setting in force now, not at login: SET log_disconnections applies at once.
    let config = shared.config();
    if let Err(e) = &result {
        report(stream, e, config.log_pooler_errors, info.tag()).await;
    }
    if config.log_disconnections {
        let age = info.connected_at.elapsed().unwrap_or_default();
        let reason = match &result {
            Ok(()) => "client close request".to_owned(),
            Err(e) => e.to_string(),
        };
        info!(client = %info.tag(), "closing because: {reason} (age={}s)", age.as_secs());
    }
}

/// The login, bounded by `client_login_timeout`.
async fn login_in_time(
    shared: &Shared,
    stream: &mut Stream,
    rbuf: &mut BytesMut,
) -> Result<Option<Login>, ClientError> {
    let login_timeout = shared.config().client_login_timeout;
    let login = login(shared, stream, rbuf);
    if login_timeout.is_zero() {
        login.await
    } else {
        tokio::time::timeout(login_timeout, login)
            .await
            .unwrap_or(Err(ClientError::LoginTimeout(login_timeout)))
    }
}

/// What a session does once its login is over.
enum Step {
    /// Relay to its pool.
    Relay(RelayParts),
    /// Serve the admin console.
    Console {
        rbuf: BytesMut,
        user: String,
        role: AdminRole,
    },
    /// It was a CancelRequest, served.
    Cancelled,
    /// The login failed.
    Failed(ClientError),
}

/// Turns a login's outcome into the session's next step (logged like PgBouncer). Not
/// async and takes the outcome whole, so none of it is kept in the session's future.
fn after_login(
    shared: &Shared,
    info: &Arc<ClientInfo>,
    login: Result<Option<Login>, ClientError>,
    tls: Option<&'static str>,
    rbuf: BytesMut,
) -> Step {
    let config = shared.config();
    match login {
        Ok(Some(Login::Pool(session))) => {
            let session = *session;
            let (db, user) = (&session.entry.database, &session.entry.user);
            logged_in(&config, info, db, user, session.application_name, tls);
            Step::Relay(RelayParts::new(
                session.entry,
                session.cancel,
                crate::session_state::ClientSession {
                    params: session.params,
                    class: session.class,
                    dedup: session.dedup,
                    ..Default::default()
                },
                rbuf,
            ))
        }
        Ok(Some(Login::Admin {
            user,
            database,
            role,
            application_name,
        })) => {
            logged_in(&config, info, &database, &user, application_name, tls);
            Step::Console { rbuf, user, role }
        }
        Ok(None) => Step::Cancelled,
        Err(e) => Step::Failed(e),
    }
}

/// Records a login in the registry and the span, and logs it like PgBouncer.
fn logged_in(
    config: &Config,
    info: &ClientInfo,
    db: &str,
    user: &str,
    application_name: String,
    tls: Option<&'static str>,
) {
    info.set_login(LoginInfo {
        user: crate::params::intern(user),
        database: crate::params::intern(db),
        application_name: crate::params::intern(&application_name),
    });
    if config.log_connections {
        match tls {
            Some(version) => {
                info!(client = %info.tag(), "login attempt: db={db} user={user} tls={version}");
            }
            None => info!(client = %info.tag(), "login attempt: db={db} user={user} tls=no"),
        }
    }
}

/// Runs an admin console session; ends it (57P01) shortly after shutdown begins and at
/// once on `KILL`.
async fn serve_console(
    shared: &Shared,
    info: &ClientInfo,
    stream: &mut Stream,
    rbuf: BytesMut,
    user: &str,
    role: AdminRole,
) -> Result<(), ClientError> {
    let Some(console) = shared.admin_console().cloned() else {
        return Err(ClientError::AdminUnavailable);
    };
    let shutdown = async {
        shared.shutdown.cancelled().await;
        // Let the session answer the command that may have started the shutdown.
        tokio::time::sleep(CONSOLE_SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = console.serve(stream, rbuf, user, role) => Ok(()),
        () = shutdown => Err(ClientError::Shutdown),
        _ = info.stop.stopped(false) => Err(ClientError::Killed),
    }
}

/// Answers a connection that arrives while the proxy drains: a CancelRequest is still
/// forwarded (it may be for a transaction that is finishing), anything else gets
/// FATAL 57P01.
pub(crate) async fn serve_draining(shared: Arc<Shared>, mut stream: Stream) {
    let mut rbuf = BytesMut::with_capacity(256);
    let startup = tokio::time::timeout(
        DRAINING_STARTUP_TIMEOUT,
        read_startup(&shared, &mut stream, &mut rbuf, &mut None),
    )
    .await;
    if let Ok(Ok(Some(_))) = startup {
        report(&mut stream, &ClientError::Draining, false, ClientTag::NONE).await;
    }
}

/// Sends `e` to the client as a FATAL ErrorResponse (when it can still be told), and
/// logs it when `log_pooler_errors` is on.
async fn report(stream: &mut Stream, e: &ClientError, log: bool, who: ClientTag<'_>) {
    let Some(code) = e.sqlstate() else {
        debug!(client = %who, error = %e, "client connection ended");
        return;
    };
    if log {
        warn!(client = %who, sqlstate = code, "pooler error: {e}");
    }
    let mut out = BytesMut::new();
    e.put(&mut out, Severity::Fatal);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Where a successful login goes.
pub enum Login {
    /// To its pool and the relay loop.
    Pool(Box<LoggedIn>),
    /// To the admin console (the client got AuthenticationOk and nothing else yet).
    Admin {
        /// The authenticated user.
        user: String,
        /// `pgweir` or `pgbouncer`, as the client asked.
        database: String,
        /// What the user may do there.
        role: AdminRole,
        /// `application_name` from the startup packet (empty if none).
        application_name: String,
    },
}

/// A logged-in client, ready for the relay loop.
pub struct LoggedIn {
    /// Its pool.
    pub entry: Arc<PoolEntry>,
    /// Its proxy-issued cancel key.
    pub cancel: crate::cancel::CancelGuard,
    /// `application_name` from the startup packet (empty if none).
    pub application_name: String,
    /// The settings it asked for, to be set on every server connection it uses.
    pub params: ClientParams,
    /// Its class in the pool's wait queue.
    pub class: weir_pool::Class,
    /// Its own `pgweir.dedup`, if it set one.
    pub dedup: Option<bool>,
}

/// Startup packet, authentication and greeting. `Ok(None)` for a served CancelRequest.
async fn login(
    shared: &Shared,
    stream: &mut Stream,
    rbuf: &mut BytesMut,
) -> Result<Option<Login>, ClientError> {
    let mut tls = None;
    let startup = match read_startup(shared, stream, rbuf, &mut tls).await? {
        Some(s) => s,
        None => return Ok(None),
    };
    let user = startup
        .user()
        .ok_or_else(|| ClientError::from(crate::error::AuthRefusal::NoUser))?
        .to_owned();
    let database = startup.database().unwrap_or(&user).to_owned();

    let mut out = BytesMut::with_capacity(512);
    let minor = negotiate_protocol(&startup, &mut out);
    if !out.is_empty() {
        stream.write_all(&out).await?;
        out.clear();
    }
    let (method, secrets, from_query) =
        crate::client_auth::method_and_secrets(shared, stream, &user, &database).await?;
    let outcome = authenticate(
        stream,
        rbuf,
        &user,
        method,
        secrets.as_deref(),
        tls.as_ref().map(|t| t.end_point()),
    )
    .await?;
    if let Some(role) = crate::admin_hook::route_login(shared, &database, &user)? {
        let application_name = startup.get("application_name").unwrap_or_default();
        return Ok(Some(Login::Admin {
            application_name: application_name.to_owned(),
            user,
            database,
            role,
        }));
    }

    let credential = secrets
        .as_ref()
        .map(|s| s.server.clone())
        .unwrap_or(crate::server::ServerCredential::None);
    let entry = shared
        .pools
        .get_or_create(&database, &user, &credential)
        .ok_or_else(|| ClientError::UnknownDatabase(database.clone()))?;
    if from_query {
        // The pool may predate a password change the lookup just saw.
        entry.pool.manager().refresh_credential(&user, &credential);
    }
    if let (Some(key), Some(secret)) = (
        outcome.client_key,
        secrets.as_ref().and_then(|s| s.scram.as_ref()),
    ) {
        entry.pool.manager().learn_client_key(key, secret);
    }
    if let Some(password) = outcome.password {
        entry.pool.manager().learn_password(&user, password);
    }

    // The client expects the server's parameters now; the first login to a pool makes a
    // server connection to learn them (and proves the server is reachable).
    let params = match entry.pool.manager().server_params() {
        Some(p) => p,
        None => {
            let upstream = entry.pool.manager().upstream();
            let conn = checkout(
                &entry,
                &upstream,
                shared.config().mode,
                weir_pool::Class::Critical,
            )
            .await?;
            conn.params.clone()
        }
    };
    let app_name = startup.get("application_name");
    let mut settings = startup_settings(&startup.params);
    let class = client_class(
        &mut settings,
        &shared.config(),
        &user,
        &database,
        app_name.unwrap_or_default(),
    )?;
    let dedup = client_dedup(&mut settings)?;
    let greeting =
        entry
            .pool
            .manager()
            .greeting(&params, &settings, &shared.config().track_extra_parameters);
    out.extend_from_slice(&greeting.status);
    // Protocol 3.2 clients get PostgreSQL 18's 32-byte cancel keys; the servers behind
    // may speak 3.0 (the proxy maps keys, so the lengths need not agree).
    let cancel = shared.cancels.register_with_key_len(if minor >= 2 {
        crate::cancel::LONG_KEY_LEN
    } else {
        crate::cancel::SHORT_KEY_LEN
    });
    build::put_backend_key_data(&mut out, cancel.pid(), cancel.slot().key());
    build::put_ready_for_query(&mut out, b'I');
    stream.write_all(&out).await?;
    Ok(Some(Login::Pool(Box::new(LoggedIn {
        entry,
        cancel,
        application_name: app_name.unwrap_or_default().to_owned(),
        params: greeting.params,
        class,
        dedup,
    }))))
}

/// The startup setting that gives a client its class; pgweir's own, never forwarded.
pub const PRIORITY_SETTING: &str = "pgweir.priority";
/// The startup setting that turns query dedup on or off for a client; never forwarded.
pub const DEDUP_SETTING: &str = "pgweir.dedup";

/// A client's own `pgweir.dedup` (taken out of the settings replayed on servers):
/// `None` if it did not set it.
///
/// # Errors
/// The value is not a boolean (22023).
fn client_dedup(settings: &mut Vec<(String, String)>) -> Result<Option<bool>, ClientError> {
    let Some(i) = settings
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case(DEDUP_SETTING))
    else {
        return Ok(None);
    };
    parse_dedup(&settings.remove(i).1).map(Some)
}

/// The switch a `pgweir.dedup` value names.
///
/// # Errors
/// It is not a boolean (22023).
pub fn parse_dedup(value: &str) -> Result<bool, ClientError> {
    weir_config::parse_flag(value).ok_or_else(|| ClientError::InvalidParameter {
        name: DEDUP_SETTING,
        value: value.to_owned(),
        expected: "on or off",
    })
}

/// A client's class: `pgweir.priority` from its startup packet (a parameter, or
/// `options=-c pgweir.priority=...`; taken out of the settings replayed on servers),
/// else the first `priority_rules` entry matching its user, database and
/// `application_name`, else `default_priority`.
///
/// # Errors
/// `pgweir.priority` names no class (22023).
fn client_class(
    settings: &mut Vec<(String, String)>,
    config: &Config,
    user: &str,
    database: &str,
    application_name: &str,
) -> Result<weir_pool::Class, ClientError> {
    let asked = settings
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case(PRIORITY_SETTING))
        .map(|i| settings.remove(i).1);
    match asked {
        Some(v) => parse_priority(&v),
        None => Ok(class_of(config.priority_for(
            user,
            database,
            application_name,
        ))),
    }
}

/// The class a `pgweir.priority` value names.
///
/// # Errors
/// It names none (22023).
pub fn parse_priority(value: &str) -> Result<weir_pool::Class, ClientError> {
    value
        .trim()
        .parse::<Priority>()
        .map(class_of)
        .map_err(|_| ClientError::InvalidParameter {
            name: PRIORITY_SETTING,
            value: value.to_owned(),
            expected: "critical, high, normal, low or background",
        })
}

/// The pool's class for a configured priority.
fn class_of(p: Priority) -> weir_pool::Class {
    match p {
        Priority::Critical => weir_pool::Class::Critical,
        Priority::High => weir_pool::Class::High,
        Priority::Normal => weir_pool::Class::Normal,
        Priority::Low => weir_pool::Class::Low,
        Priority::Background => weir_pool::Class::Background,
    }
}

/// Reads initial packets until a StartupMessage (returned) or a CancelRequest
/// (forwarded; `None`). An SSLRequest is answered `S` and the TLS handshake follows when
/// `client_tls_sslmode` allows TLS (else `N`), a TLS ClientHello in place of a first
/// packet is PostgreSQL 17's direct TLS; GSSENCRequest gets `N`. `tls` is set to the
/// configuration the handshake used (for channel binding).
async fn read_startup(
    shared: &Shared,
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    tls: &mut Option<Arc<ClientTls>>,
) -> Result<Option<StartupMessage>, ClientError> {
    let config = shared.tls().client();
    // SSLRequest then GSSENCRequest (or the reverse) at most: bound the negotiation.
    for _ in 0..3 {
        let packet = loop {
            if rbuf.first() == Some(&crate::tls::TLS_HANDSHAKE_RECORD) && !stream.is_tls() {
                // No startup packet starts so (its length would be over 350 MB).
                let Some(config) = &config else {
                    return Err(Violation::DirectTlsDisabled.into());
                };
                let prefix = rbuf.split();
                upgrade(config, stream, prefix, true).await?;
                *tls = Some(config.clone());
                continue;
            }
            if let Some(p) = parse_initial(rbuf).map_err(Violation::Startup)? {
                break p;
            }
            if stream.read_buf(rbuf).await? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        };
        match packet {
            InitialPacket::SslRequest | InitialPacket::GssEncRequest => {
                if !rbuf.is_empty() {
                    // Bytes after an encryption request before our answer: a buffer-stuffing attack (CVE-2021-23222).
                    return Err(Violation::DataAfterEncryptionRequest.into());
                }
                match &config {
                    Some(config)
                        if matches!(packet, InitialPacket::SslRequest) && !stream.is_tls() =>
                    {
                        stream.write_all(b"S").await?;
                        upgrade(config, stream, BytesMut::new(), false).await?;
                        *tls = Some(config.clone());
                    }
                    _ => stream.write_all(b"N").await?,
                }
            }
            InitialPacket::Cancel { pid, key } => {
                if let Some(ticket) = shared.cancels.begin_cancel(pid, &key) {
                    debug!(pid, "forwarding cancel request");
                    if let Err(e) = send_cancel(&ticket.target).await {
                        warn!(error = %e, "could not forward cancel request");
                    }
                }
                return Ok(None);
            }
            InitialPacket::Startup(m) => {
                if config.as_ref().is_some_and(|c| c.mode.requires_tls()) && !stream.is_tls() {
                    return Err(ClientError::TlsRequired);
                }
                return Ok(Some(m));
            }
        }
    }
    Err(Violation::TooManyEncryptionRequests.into())
}

/// Runs the TLS handshake on a client connection (after our `S`, or at once for direct
/// TLS, whose ClientHello is already in `prefix`). Direct TLS must name the
/// `postgresql` ALPN protocol, as PostgreSQL 17 insists.
async fn upgrade(
    config: &ClientTls,
    stream: &mut Stream,
    prefix: BytesMut,
    direct: bool,
) -> Result<(), ClientError> {
    let tcp = stream.take_tcp().map_err(Violation::NotUpgradable)?;
    let tls = config
        .accept(tcp, prefix)
        .await
        .map_err(ClientError::TlsHandshake)?;
    let alpn_ok = tls.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_POSTGRESQL);
    *stream = Stream::TlsServer(Box::new(tls));
    if direct && !alpn_ok {
        return Err(Violation::NoAlpn.into());
    }
    Ok(())
}

/// The newest protocol minor version the proxy speaks with clients (3.2, PostgreSQL 18's).
const PROTOCOL_MINOR: i32 = 2;

/// Negotiates the protocol version, as PostgreSQL 18 does: 3.0 and 3.2 are spoken as
/// asked; a newer minor, 3.1 (never used) or any `_pq_.` option gets one
/// NegotiateProtocolVersion naming the minor chosen and the options refused. Returns
/// the minor version in force.
fn negotiate_protocol(startup: &StartupMessage, out: &mut BytesMut) -> i32 {
    let unsupported: Vec<&str> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    let asked = i32::from(startup.minor);
    let minor = if asked >= PROTOCOL_MINOR {
        PROTOCOL_MINOR
    } else {
        0
    };
    if asked != minor || !unsupported.is_empty() {
        build::put_negotiate_protocol_version(out, minor, &unsupported);
    }
    minor
}

/// Checks out a server connection for `entry`: fails at once with 57P03 while its
/// upstream's breaker is open (no wait, no connect; a due probe starts in the
/// background), else asks the pool.
///
/// # Errors
/// The breaker is open, or see [`pool_error`].
pub async fn checkout(
    entry: &PoolEntry,
    upstream: &Upstream,
    mode: Mode,
    class: weir_pool::Class,
) -> Result<weir_pool::PooledConnection<crate::pools::ServerManager>, ClientError> {
    if let Some(refusal) = upstream.breaker.check(tokio::time::Instant::now()) {
        if refusal.probe_due {
            crate::pools::spawn_probe(entry.pool.clone());
        }
        return Err(ClientError::BreakerOpen {
            upstream: upstream.addr.clone(),
            retry_in: refusal.retry_in,
            last_error: refusal.last_error,
        });
    }
    let budget = match mode {
        // New work that cannot be served at once is shed; critical and high work waits.
        Mode::Emergency if class > weir_pool::Class::High => Some(Duration::ZERO),
        Mode::Emergency => None,
        Mode::HighPerformance => entry.pool.wait_timeout().map(|d| d * 2),
        Mode::Normal | Mode::ResourceSaver => None,
    };
    let req = weir_pool::Checkout { class, budget };
    entry
        .pool
        .checkout(&req)
        .await
        .map_err(|e| match (e, mode) {
            (PoolError::Shed { reason }, Mode::Emergency) => ClientError::Shed {
                reason,
                emergency: true,
            },
            (e, _) => pool_error(e),
        })
}

/// Maps a checkout failure to what the client is told.
pub fn pool_error(e: PoolError<ServerError>) -> ClientError {
    match e {
        PoolError::Timeout(d) => ClientError::WaitTimeout(d),
        PoolError::Connect(ServerError::Rejected {
            code,
            message,
            detail,
            hint,
        }) => ClientError::ServerSaid {
            code,
            message,
            detail,
            hint,
        },
        PoolError::Connect(ServerError::BreakerOpen {
            upstream,
            retry_in,
            last_error,
        }) => ClientError::BreakerOpen {
            upstream,
            retry_in,
            last_error,
        },
        PoolError::Connect(e) => ClientError::ServerUnavailable(Unavailable::Connect(e)),
        PoolError::ConnectTimeout(d) => {
            ClientError::ServerUnavailable(Unavailable::ConnectTimeout(d))
        }
        PoolError::LoginRetry(d) => ClientError::ServerUnavailable(Unavailable::LoginRetry(d)),
        PoolError::Closed => ClientError::Shutdown,
        PoolError::Shed { reason } => ClientError::Shed {
            reason,
            emergency: false,
        },
    }
}

#[cfg(test)]
mod footprint {
    /// The task keeps this future for as long as the client is connected, idle or not:
    /// it must stay small (it was 4.3 KiB before the relay kept its held-server state
    /// in a per-checkout box, 1.1 KiB before shared settings and the stop signal; 832
    /// bytes since). A change that inlines a big future here fails this.
    #[tokio::test]
    async fn an_idle_sessions_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = crate::stream::Stream::Tcp(
            tokio::net::TcpStream::connect(addr).await.expect("connect"),
        );
        let shared = std::sync::Arc::new(
            super::Shared::new(weir_config::Config::default()).expect("shared"),
        );
        let session = super::serve(shared, stream, addr, super::Ticket::default());
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1024, "a session's future takes {size} bytes");
    }
}
