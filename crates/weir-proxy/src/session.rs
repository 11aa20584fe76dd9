//! One client connection from accept to close: the startup packet, authentication, the
//! login greeting, then the relay loop (see `crate::relay`) or the admin console;
//! errors end in a FATAL ErrorResponse the client can read.
//!
//! Log lines name the client in a `client` field (`db/user@addr:port`), and PgBouncer's
//! `login attempt` / `closing because` lines are logged when `log_connections` /
//! `log_disconnections` are on. A logged-in client that idles parks
//! ([`crate::park`]): its task ends and `relay_phase` runs again when it speaks.

mod checkout;
mod login;
mod pgweir_settings;
mod shared;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};
use weir_config::Config;
use weir_wire::build::Severity;

use crate::admin_hook::AdminRole;
use crate::error::ClientError;
use crate::park::Resume;
use crate::registry::{ClientInfo, ClientTag, LoginInfo};
use crate::relay::{Ended, Relay, RelayParts};
use crate::stream::Stream;

pub use checkout::{checkout, pool_error};
use login::login;
pub use login::{LoggedIn, Login};
pub use pgweir_settings::{parse_dedup, parse_priority, DEDUP_SETTING, PRIORITY_SETTING};
pub use shared::{Shared, Ticket};
use startup::read_startup;

/// How long an admin console session may finish its current reply after shutdown began.
const CONSOLE_SHUTDOWN_GRACE: Duration = Duration::from_millis(200);
/// How long a connection that arrives while draining may take to say what it wants.
const DRAINING_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

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
        // One `finish` await, with the outcome moved in: each await site would keep
        // its own copy of the outcome in this future, which every login allocates.
        let result = match relay.run().await {
            // Batched writes are with the kernel before the socket leaves tokio.
            Ok(Ended::Parked(deadline)) => match relay.flush_client().await {
                Ok(()) => return relay.park(deadline),
                Err(e) => Err(e.into()),
            },
            Ok(Ended::Left) => Ok(()),
            Err(e) => Err(e),
        };
        relay.finish(result).await
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
        // Boxed: only a session that ends in an error writes one.
        Box::pin(report(stream, e, config.log_pooler_errors, info.tag())).await;
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
// Lives for one step after login: boxing the relay's parts would cost every login an
// allocation to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
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

#[cfg(test)]
mod footprint {
    use std::net::SocketAddr;

    use crate::stream::Stream;

    /// A connected client socket (its listener's address too) and a default proxy.
    async fn client() -> (Stream, SocketAddr, super::Shared) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let shared = super::Shared::new(weir_config::Config::default()).expect("shared");
        (Stream::from(tcp), addr, shared)
    }

    /// The task keeps this future for as long as the client is connected, idle or not:
    /// it must stay small (it was 4.3 KiB before the relay kept its held-server state
    /// in a per-checkout box, 1.1 KiB before shared settings and the stop signal; 832
    /// bytes since). A change that inlines a big future here fails this.
    #[tokio::test]
    async fn an_idle_sessions_future_stays_small() {
        let (stream, addr, shared) = client().await;
        let session = super::serve(
            std::sync::Arc::new(shared),
            stream,
            addr,
            super::Ticket::default(),
        );
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1024, "a session's future takes {size} bytes");
    }

    /// Every login allocates its future and copies it there: past 1 KiB it misses
    /// malloc's per-thread cache, and each byte is a copy. It was 4.4 KiB while the
    /// rare paths (an `auth_query` lookup, TLS, a forwarded cancel) were inline.
    #[tokio::test]
    async fn a_logins_future_stays_under_a_kibibyte() {
        let (mut stream, _, shared) = client().await;
        let mut rbuf = bytes::BytesMut::new();
        let login = super::login_in_time(&shared, &mut stream, &mut rbuf);
        let size = std::mem::size_of_val(&login);
        assert!(size <= 1024, "a login's future takes {size} bytes");
    }
}
