//! One client connection from accept to close: the startup packet, authentication, the
//! login greeting, then the relay loop (see [`crate::relay`]); errors end in a FATAL
//! ErrorResponse the client can read.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weir_config::Config;
use weir_pool::PoolError;
use weir_wire::build::{self, Severity};
use weir_wire::startup::{parse_initial, InitialPacket, StartupMessage};

use crate::cancel::CancelRegistry;
use crate::client_auth::{authenticate, Credentials};
use crate::error::ClientError;
use crate::pools::{PoolEntry, Pools};
use crate::registry::{ClientRegistry, LoginInfo};
use crate::relay::Relay;
use crate::server::{send_cancel, ServerError};

/// State shared by every session of one proxy.
pub struct Shared {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Users' secrets, derived once.
    pub credentials: Credentials,
    /// The server connection pools.
    pub pools: Pools,
    /// Live clients' cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Live clients, for the admin console and `KILL`.
    pub clients: Arc<ClientRegistry>,
    /// Cancelled when the proxy shuts down.
    pub shutdown: CancellationToken,
}

/// Serves one accepted client until it leaves; never panics on its input.
pub async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let client = shared.clients.register(peer);
    // Room for a whole typical startup packet and SCRAM message in one read.
    let mut rbuf = BytesMut::with_capacity(1024);
    let login_timeout = shared.config.client_login_timeout;
    let login = login(&shared, &mut stream, &mut rbuf);
    let login = if login_timeout.is_zero() {
        login.await
    } else {
        tokio::time::timeout(login_timeout, login)
            .await
            .unwrap_or(Err(ClientError::LoginTimeout(login_timeout)))
    };
    let result = match login {
        Ok(Some(session)) => {
            info!(%peer, db = %session.entry.database, user = %session.entry.user, "login");
            let db = session.entry.database.clone();
            client.info().set_login(LoginInfo {
                user: session.entry.user.clone(),
                database: db.clone(),
                application_name: session.application_name,
            });
            let r = Relay::new(
                &shared,
                session.entry,
                &mut stream,
                rbuf,
                session.cancel,
                client.info().clone(),
            )
            .run()
            .await;
            debug!(%peer, %db, "client closed");
            r
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        report(&mut stream, peer, &e).await;
    }
}

/// Sends `e` to the client as a FATAL ErrorResponse (when it can still be told) and logs it.
async fn report(stream: &mut TcpStream, peer: SocketAddr, e: &ClientError) {
    let Some(code) = e.sqlstate() else {
        debug!(%peer, error = %e, "client connection ended");
        return;
    };
    warn!(%peer, sqlstate = code, error = %e, "closing client connection");
    let mut out = BytesMut::new();
    let message = e.to_string();
    build::put_error(
        &mut out,
        &build::ErrorMessage {
            severity: Severity::Fatal,
            code,
            message: &message,
            detail: None,
            hint: e.hint(),
        },
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// A logged-in client, ready for the relay loop.
pub struct LoggedIn {
    /// Its pool.
    pub entry: Arc<PoolEntry>,
    /// Its proxy-issued cancel key.
    pub cancel: crate::cancel::CancelGuard,
    /// `application_name` from the startup packet (empty if none).
    pub application_name: String,
}

/// Startup packet, authentication and greeting. `Ok(None)` for a served CancelRequest.
async fn login(
    shared: &Shared,
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
) -> Result<Option<LoggedIn>, ClientError> {
    let startup = match read_startup(shared, stream, rbuf).await? {
        Some(s) => s,
        None => return Ok(None),
    };
    let user = startup
        .user()
        .ok_or_else(|| {
            ClientError::AuthRefused("no PostgreSQL user name specified in startup packet".into())
        })?
        .to_owned();
    let database = startup.database().unwrap_or(&user).to_owned();

    let mut out = BytesMut::with_capacity(512);
    negotiate_protocol(&startup, &mut out);
    if !out.is_empty() {
        stream.write_all(&out).await?;
        out.clear();
    }
    let outcome = authenticate(
        stream,
        rbuf,
        &user,
        shared.config.auth_type,
        &shared.credentials,
    )
    .await?;

    let credential = shared
        .credentials
        .get(&user)
        .map(|s| s.server.clone())
        .unwrap_or(crate::server::ServerCredential::None);
    let entry = shared
        .pools
        .get_or_create(&database, &user, &credential)
        .ok_or_else(|| ClientError::UnknownDatabase(database.clone()))?;
    if let (Some(key), Some(secret)) = (
        outcome.client_key,
        shared.credentials.get(&user).and_then(|s| s.scram.as_ref()),
    ) {
        entry.pool.manager().learn_client_key(key, secret);
    }

    // The client expects the server's parameters now; the first login to a pool makes a
    // server connection to learn them (and proves the server is reachable).
    let params = match entry.pool.manager().server_params() {
        Some(p) => p,
        None => {
            let conn = entry.pool.get().await.map_err(pool_error)?;
            conn.params.clone()
        }
    };
    let app_name = startup.get("application_name");
    for (name, value) in params.iter() {
        let value = match (name.as_str(), app_name) {
            ("application_name", Some(a)) => a,
            _ => value.as_str(),
        };
        build::put_parameter_status(&mut out, name, value);
    }
    let cancel = shared.cancels.register();
    build::put_backend_key_data(&mut out, cancel.pid(), &cancel.slot().key());
    build::put_ready_for_query(&mut out, b'I');
    stream.write_all(&out).await?;
    Ok(Some(LoggedIn {
        entry,
        cancel,
        application_name: app_name.unwrap_or_default().to_owned(),
    }))
}

/// Reads initial packets, answering SSL/GSS requests with `N`, until a StartupMessage
/// (returned) or a CancelRequest (forwarded; `None`).
async fn read_startup(
    shared: &Shared,
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
) -> Result<Option<StartupMessage>, ClientError> {
    // SSLRequest then GSSENCRequest (or the reverse) at most: bound the negotiation.
    for _ in 0..3 {
        let packet = loop {
            if let Some(p) =
                parse_initial(rbuf).map_err(|e| ClientError::Protocol(e.to_string()))?
            {
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
                    return Err(ClientError::Protocol(
                        "received unencrypted data after encryption request".into(),
                    ));
                }
                stream.write_all(b"N").await?;
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
            InitialPacket::Startup(m) => return Ok(Some(m)),
        }
    }
    Err(ClientError::Protocol(
        "too many encryption requests before the startup packet".into(),
    ))
}

/// Answers a request for a newer protocol minor version or `_pq_.` options with
/// NegotiateProtocolVersion (3.0, all options unsupported), as PostgreSQL does.
fn negotiate_protocol(startup: &StartupMessage, out: &mut BytesMut) {
    let unsupported: Vec<&str> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    if startup.minor > 0 || !unsupported.is_empty() {
        build::put_negotiate_protocol_version(out, 0, &unsupported);
    }
}

/// Maps a checkout failure to what the client is told.
pub fn pool_error(e: PoolError<ServerError>) -> ClientError {
    match e {
        PoolError::Timeout(d) => ClientError::WaitTimeout(d),
        PoolError::Connect(e) => ClientError::ServerUnavailable(e.to_string()),
        PoolError::ConnectTimeout(d) => ClientError::ServerUnavailable(format!(
            "timed out connecting to the server after {d:?}"
        )),
        PoolError::LoginRetry(_) => ClientError::ServerUnavailable(e.to_string()),
        PoolError::Closed => ClientError::Shutdown,
    }
}
