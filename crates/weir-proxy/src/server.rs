//! A connection to PostgreSQL: connect, log in as the pool's user, and the small amount
//! of state the proxy keeps about it (backend key, reported parameters, cleanliness).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_config::SslMode;
use weir_wire::auth::messages::{self as authmsg, AuthRequest};
use weir_wire::auth::{md5, scram, AuthError};
use weir_wire::backend::{self, ErrorFields};

use crate::io::{read_frame, ReadFrameError};
use crate::session_state::ServerSession;
use crate::stream::Stream;
use crate::tls::ServerTls;
use weir_wire::startup::put_startup_message;

mod address;
mod farewell;

pub use address::{unix_socket_path, ServerAddr};

/// Largest message accepted from a server during login (errors, parameter lists).
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// How the proxy proves itself to PostgreSQL.
#[derive(Clone)]
pub enum ServerCredential {
    /// No secret known: only `trust` servers accept the login.
    None,
    /// Plaintext password: works with SCRAM, md5 and cleartext.
    Password(String),
    /// A stored md5 secret ("md5…"): works with md5 auth only.
    Md5(String),
    /// A SCRAM ClientKey recovered from a client's own SCRAM login, with the verifier it
    /// matched (so the server's signature can be checked too).
    ScramClientKey {
        /// The ClientKey.
        key: [u8; 32],
        /// The configured verifier the key was checked against.
        secret: Box<scram::ScramSecret>,
    },
}

impl std::fmt::Debug for ServerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerCredential::None => "None",
            ServerCredential::Password(_) => "Password(..)",
            ServerCredential::Md5(_) => "Md5(..)",
            ServerCredential::ScramClientKey { .. } => "ScramClientKey(..)",
        })
    }
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    /// Host name or address, or the directory of a Unix socket (starts with `/`).
    pub host: String,
    /// TCP port (for a Unix socket, the suffix of its file name).
    pub port: u16,
    /// Database name on the server.
    pub dbname: String,
    /// Role to log in as.
    pub user: String,
}

/// Why a server connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TCP connect or I/O failure.
    #[error("could not connect to server {addr}: {source}")]
    Io {
        /// host:port tried.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// PostgreSQL answered the login with an error (bad password, no such database...).
    #[error("server login failed: {message}")]
    Rejected {
        /// SQLSTATE reported by the server (`XX000` if it sent none).
        code: String,
        /// The server's message.
        message: String,
        /// The server's detail line, if any.
        detail: Option<String>,
        /// The server's hint, if any.
        hint: Option<String>,
    },
    /// The upstream's circuit breaker is open: no connect was attempted.
    #[error("pgweir: upstream {upstream} is unavailable (circuit breaker open: {last_error}); next attempt in {} ms", retry_in.as_millis())]
    BreakerOpen {
        /// host:port.
        upstream: String,
        /// Until the next probe.
        retry_in: std::time::Duration,
        /// The failure that opened it.
        last_error: String,
    },
    /// The server asked for an authentication method or secret we cannot provide.
    #[error("cannot log in to the server: {0}")]
    Auth(#[source] LoginAuthError),
    /// The server sent something that is not the PostgreSQL protocol.
    #[error("server protocol error during login: {0}")]
    Protocol(#[source] LoginProtocolError),
}

/// Why the proxy cannot answer the server's authentication request.
#[derive(Debug, thiserror::Error)]
pub enum LoginAuthError {
    /// Cleartext password asked, and none is known for this user.
    #[error("server asks for a cleartext password, which pgweir does not know for this user")]
    NoCleartextPassword,
    /// md5 asked, and neither the password nor the md5 secret is known.
    #[error("server asks for md5 authentication, which needs the user's password or md5 secret")]
    NoMd5Secret,
    /// SCRAM asked, and neither the password nor a client's proven key is known.
    #[error("server asks for SCRAM authentication, which needs the user's password (or a client's SCRAM login first)")]
    NoScramSecret,
    /// A method pgweir does not implement (Kerberos, GSS, SSPI, ...).
    #[error("server asks for authentication method {0}, which pgweir does not support")]
    UnsupportedMethod(i32),
    /// The md5 or SCRAM exchange itself failed.
    #[error(transparent)]
    Exchange(#[from] AuthError),
}

/// How the server broke the protocol during the pool's login.
#[derive(Debug, thiserror::Error)]
pub enum LoginProtocolError {
    /// A malformed frame.
    #[error(transparent)]
    Frame(#[from] weir_wire::frame::FrameError),
    /// SASLContinue before SASL started.
    #[error("SASL continue before SASL start")]
    SaslContinueFirst,
    /// SASLFinal before SASL started.
    #[error("SASL final before SASL start")]
    SaslFinalFirst,
    /// A BackendKeyData that does not parse.
    #[error("malformed BackendKeyData")]
    MalformedBackendKey,
    /// ReadyForQuery without BackendKeyData.
    #[error("server sent no BackendKeyData")]
    NoBackendKey,
    /// Bytes after the login's ReadyForQuery.
    #[error("server sent data after ReadyForQuery at login")]
    DataAfterReady,
}

/// Whose fault a failed server connect was, as the breaker and the client see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The upstream could not be reached or is unwell (refused, timed out, starting up,
    /// out of connections): counts toward its breaker.
    Unreachable,
    /// The server answered, refusing this pool's login (password, database, role): the
    /// upstream is up; the error is relayed to the client as the server said it.
    ServerSaid,
    /// A limit of the proxy itself (the breaker is open).
    ProxyLimit,
}

impl ServerError {
    /// Whose fault it was; see [`Fault`].
    pub fn fault(&self) -> Fault {
        match self {
            ServerError::Io { .. } | ServerError::Protocol(_) => Fault::Unreachable,
            // A role's or database's own CONNECTION LIMIT is this pool's business, not
            // the upstream's health ("too many connections for role ...").
            ServerError::Rejected { code, message, .. }
                if weir_pool::breaker::is_unwell(code.as_bytes())
                    && !(code == "53300" && message.contains(" for ")) =>
            {
                Fault::Unreachable
            }
            ServerError::Rejected { .. } | ServerError::Auth(_) => Fault::ServerSaid,
            ServerError::BreakerOpen { .. } => Fault::ProxyLimit,
        }
    }
}

impl From<AuthError> for ServerError {
    fn from(e: AuthError) -> Self {
        ServerError::Auth(LoginAuthError::Exchange(e))
    }
}

/// ParameterStatus (name, value) pairs a server reported at login, shared.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// The server's real cancel key and address, for forwarding a client's CancelRequest.
#[derive(Clone)]
pub struct CancelTarget {
    /// Address the connection was made to.
    pub addr: ServerAddr,
    /// Host name the connection was made to (TLS server name).
    pub host: String,
    /// Set when the connection is encrypted: the cancel goes over TLS too, as libpq
    /// sends it when its sslmode asks for TLS.
    pub tls: Option<Arc<ServerTls>>,
    /// Backend process id.
    pub pid: i32,
    /// Backend secret key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for CancelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelTarget")
            .field("addr", &self.addr)
            .field("pid", &self.pid)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A logged-in server connection.
pub struct ServerConn {
    /// The connection (TCP, or TLS over TCP).
    pub stream: Stream,
    /// Bytes read from the server and not yet relayed.
    pub rbuf: BytesMut,
    /// This backend's cancel key and address.
    pub cancel: Arc<CancelTarget>,
    /// ParameterStatus values reported at login.
    pub params: ServerParams,
    /// Set by the session when it hands the connection back in a known idle state;
    /// anything else makes the pool close it.
    pub clean: bool,
    /// This connection's share of `max_db_connections`, released when it closes.
    pub db_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// This connection's share of `max_user_connections`, released when it closes.
    pub user_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Its prepared statements and current settings, kept across clients.
    pub state: ServerSession,
    /// The owed-responses queue of its last checkout, emptied: the next checkout's
    /// conversation reuses the allocation instead of growing a new queue.
    pub(crate) spare_queue: std::collections::VecDeque<crate::conversation::Expect>,
    /// Likewise the buffer the last checkout rewrote client messages into.
    pub(crate) spare_out: BytesMut,
}

impl ServerConn {
    /// Connects and logs in.
    ///
    /// # Errors
    /// See [`ServerError`].
    pub async fn connect(
        target: &ServerTarget,
        credential: &ServerCredential,
        tls: Option<&Arc<ServerTls>>,
    ) -> Result<ServerConn, ServerError> {
        match tls {
            // libpq's allow: plaintext first, TLS only if the server refuses that.
            Some(t) if t.mode == SslMode::Allow => {
                match Self::connect_once(target, credential, None).await {
                    Err(ServerError::Rejected { code, .. }) if code == "28000" => {
                        Self::connect_once(target, credential, tls).await
                    }
                    other => other,
                }
            }
            _ => Self::connect_once(target, credential, tls).await,
        }
    }

    async fn connect_once(
        target: &ServerTarget,
        credential: &ServerCredential,
        tls: Option<&Arc<ServerTls>>,
    ) -> Result<ServerConn, ServerError> {
        let unix_path = unix_socket_path(&target.host, target.port);
        let addr_text = match &unix_path {
            Some(path) => path.display().to_string(),
            None => format!("{}:{}", target.host, target.port),
        };
        let io = |source| ServerError::Io {
            addr: addr_text.clone(),
            source,
        };
        let (mut stream, tls, addr) = match unix_path {
            // libpq never asks for TLS over a Unix socket, whatever sslmode says; the
            // server would not offer it there either.
            Some(path) => {
                let unix = tokio::net::UnixStream::connect(&path).await.map_err(io)?;
                (Stream::from(unix), None, ServerAddr::Unix(path))
            }
            None => {
                let tcp = TcpStream::connect((target.host.as_str(), target.port))
                    .await
                    .map_err(io)?;
                tcp.set_nodelay(true).map_err(io)?;
                let addr = ServerAddr::Tcp(tcp.peer_addr().map_err(io)?);
                match tls {
                    Some(t) => match ssl_request(tcp, &target.host, t).await.map_err(io)? {
                        (stream, true) => (stream, Some(t.clone()), addr),
                        (stream, false) => (stream, None, addr),
                    },
                    None => (Stream::from(tcp), None, addr),
                }
            }
        };

        let mut out = BytesMut::with_capacity(256);
        put_startup_message(
            &mut out,
            [
                ("user", target.user.as_str()),
                ("database", target.dbname.as_str()),
                // Drivers such as JDBC insist on UTF8; every client shares these connections.
                ("client_encoding", "UTF8"),
            ],
        );
        stream.write_all(&out).await.map_err(io)?;
        out.clear();

        let mut rbuf = BytesMut::with_capacity(4096);
        let mut params = Vec::new();
        let mut key = None;
        let mut scram: Option<scram::ScramClient> = None;
        loop {
            let frame = read_frame(&mut stream, &mut rbuf, MAX_LOGIN_MESSAGE)
                .await
                .map_err(|e| match e {
                    ReadFrameError::Io(e) => io(e),
                    ReadFrameError::Frame(e) => ServerError::Protocol(e.into()),
                })?;
            match frame.tag() {
                b'R' => {
                    match authmsg::parse_auth_request(frame.body())? {
                        AuthRequest::Ok => {}
                        AuthRequest::CleartextPassword => match credential {
                            ServerCredential::Password(p) => {
                                authmsg::put_password_message(&mut out, p.as_bytes())
                            }
                            _ => {
                                return Err(ServerError::Auth(LoginAuthError::NoCleartextPassword))
                            }
                        },
                        AuthRequest::Md5Password { salt } => {
                            let response = match credential {
                                ServerCredential::Password(p) => {
                                    md5::md5_response_from_password(&target.user, p, salt)
                                }
                                ServerCredential::Md5(secret) => {
                                    md5::md5_response_from_secret(secret, salt)?
                                }
                                _ => return Err(ServerError::Auth(LoginAuthError::NoMd5Secret)),
                            };
                            authmsg::put_password_message(&mut out, response.as_bytes());
                        }
                        AuthRequest::Sasl { mechanisms } => {
                            let mechanism = scram::choose_mechanism(mechanisms.iter().copied())?;
                            let client = match credential {
                                ServerCredential::Password(p) => scram::ScramClient::new(p),
                                ServerCredential::ScramClientKey { key, secret } => {
                                    scram::ScramClient::with_client_key_and_secret(*key, secret)?
                                }
                                _ => return Err(ServerError::Auth(LoginAuthError::NoScramSecret)),
                            };
                            authmsg::put_sasl_initial_response(
                                &mut out,
                                mechanism,
                                &client.client_first(),
                            );
                            scram = Some(client);
                        }
                        AuthRequest::SaslContinue(data) => {
                            let client = scram.as_mut().ok_or(ServerError::Protocol(
                                LoginProtocolError::SaslContinueFirst,
                            ))?;
                            let reply = client.handle_server_first(data)?;
                            authmsg::put_sasl_response(&mut out, &reply);
                        }
                        AuthRequest::SaslFinal(data) => {
                            let client = scram
                                .as_mut()
                                .ok_or(ServerError::Protocol(LoginProtocolError::SaslFinalFirst))?;
                            client.handle_server_final(data)?;
                        }
                        AuthRequest::Other(code) => {
                            return Err(ServerError::Auth(LoginAuthError::UnsupportedMethod(code)))
                        }
                    }
                    if !out.is_empty() {
                        stream.write_all(&out).await.map_err(io)?;
                        out.clear();
                    }
                }
                b'S' => {
                    if let Some((k, v)) = backend::parse_parameter_status(frame.body()) {
                        params.push((k.to_owned(), v.to_owned()));
                    }
                }
                b'K' => {
                    let (pid, k) = backend::parse_backend_key_data(frame.body()).ok_or(
                        ServerError::Protocol(LoginProtocolError::MalformedBackendKey),
                    )?;
                    key = Some((pid, k.to_vec()));
                }
                b'E' => {
                    let e = ErrorFields::parse(frame.body());
                    let text =
                        |f: Option<&[u8]>| f.map(|v| String::from_utf8_lossy(v).into_owned());
                    return Err(ServerError::Rejected {
                        code: String::from_utf8_lossy(e.code.unwrap_or(b"XX000")).into_owned(),
                        message: e.message_lossy(),
                        detail: text(e.detail),
                        hint: text(e.hint),
                    });
                }
                b'Z' => break,
                // NoticeResponse, NegotiateProtocolVersion: nothing to do at login.
                _ => {}
            }
        }
        let (pid, key) = key.ok_or(ServerError::Protocol(LoginProtocolError::NoBackendKey))?;
        if !rbuf.is_empty() {
            return Err(ServerError::Protocol(LoginProtocolError::DataAfterReady));
        }
        let mut state = ServerSession::default();
        for (name, value) in &params {
            state.params.reported.set_shared(name, value);
        }
        Ok(ServerConn {
            stream,
            rbuf,
            cancel: Arc::new(CancelTarget {
                addr,
                host: target.host.clone(),
                tls,
                pid,
                key,
            }),
            params: Arc::new(params),
            clean: true,
            spare_queue: std::collections::VecDeque::new(),
            spare_out: BytesMut::new(),
            db_permit: None,
            user_permit: None,
            state,
        })
    }

    /// Runs the reset query (`server_reset_query`) on an idle connection, noting the
    /// settings it reports; true if it ended with ReadyForQuery `I` and nothing more.
    pub async fn reset(&mut self, sql: &str) -> bool {
        let mut out = BytesMut::new();
        weir_wire::build::put_query(&mut out, sql);
        if self.stream.write_all(&out).await.is_err() {
            return false;
        }
        loop {
            let Ok(f) = read_frame(&mut self.stream, &mut self.rbuf, MAX_LOGIN_MESSAGE).await
            else {
                return false;
            };
            match f.tag() {
                b'Z' => {
                    // DISCARD ALL (the usual reset) dropped statements and settings.
                    self.state.discarded();
                    return backend::parse_ready_for_query(f.body()) == Some(b'I')
                        && self.rbuf.is_empty();
                }
                b'S' => {
                    if let Some((name, value)) = backend::parse_parameter_status(f.body()) {
                        self.state.params.reported.set_shared(name, value);
                    }
                }
                b'E' => {
                    tracing::warn!(error = %ErrorFields::parse(f.body()).message_lossy(), "server_reset_query failed");
                }
                _ => {}
            }
        }
    }

    /// Non-blocking probe of an idle connection: readable (data or EOF) means dead or desynced.
    pub fn is_idle_and_alive(&mut self) -> bool {
        self.rbuf.is_empty() && self.stream.probe_idle()
    }
}

/// Sends a CancelRequest for `target` over a fresh connection, as PostgreSQL expects.
///
/// # Errors
/// Connect or write failure.
pub async fn send_cancel(target: &CancelTarget) -> std::io::Result<()> {
    let mut stream = match (&target.addr, &target.tls) {
        (ServerAddr::Unix(path), _) => Stream::from(tokio::net::UnixStream::connect(path).await?),
        (ServerAddr::Tcp(addr), Some(tls)) => {
            let tcp = TcpStream::connect(addr).await?;
            match ssl_request(tcp, &target.host, tls).await? {
                (stream, true) => stream,
                (_, false) => {
                    return Err(std::io::Error::other(
                        "server refused TLS for the cancel request",
                    ))
                }
            }
        }
        (ServerAddr::Tcp(addr), None) => Stream::from(TcpStream::connect(addr).await?),
    };
    let mut buf = BytesMut::with_capacity(16 + target.key.len());
    weir_wire::startup::put_cancel_request(&mut buf, target.pid, &target.key);
    stream.write_all(&buf).await?;
    stream.flush().await?;
    // PostgreSQL closes the connection once it has read the request; wait for that so the
    // cancel is delivered before we report it done.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut sink)).await;
    Ok(())
}

/// Asks the server for TLS (SSLRequest) and runs the handshake if it agrees. Returns the
/// stream and whether it is encrypted; a refusal is an error when `tls.mode` requires TLS.
///
/// # Errors
/// I/O, an unexpected answer, a refusal under require/verify-*, or a failed handshake
/// (such as a certificate that does not verify).
async fn ssl_request(
    mut tcp: TcpStream,
    host: &str,
    tls: &ServerTls,
) -> std::io::Result<(Stream, bool)> {
    let mut out = BytesMut::with_capacity(8);
    weir_wire::startup::put_ssl_request(&mut out);
    tcp.write_all(&out).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let stream = tls.connect(host, tcp).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("TLS handshake with the server failed: {e}"),
                )
            })?;
            Ok((Stream::TlsClient(Box::new(stream)), true))
        }
        b'N' if tls.mode.requires_tls() => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "server does not support SSL, but server_tls_sslmode is {}",
                tls.mode
            ),
        )),
        b'N' => Ok((Stream::from(tcp), false)),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("server answered SSLRequest with {:?}", other as char),
        )),
    }
}
