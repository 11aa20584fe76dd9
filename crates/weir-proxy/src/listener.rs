//! The accept loop: one task per client, `max_client_conn` enforced with a semaphore,
//! accept errors (such as running out of file descriptors) retried with backoff, and
//! the graceful shutdown (drain) that follows SIGTERM or `SHUTDOWN`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use std::sync::atomic::Ordering::Relaxed;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use weir_config::Config;
use weir_wire::build::{self, Severity};
use weir_wire::sqlstate;

use crate::admin_hook::AdminConsole;
use crate::error::ProxyError;
use crate::handle::ProxyHandle;
use crate::session::{self, Shared};
use crate::stream::Stream;
use crate::unix_listener::{self, UnixSocket};

/// After `shutdown_timeout`, how long killed sessions get to close before the proxy stops waiting.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// A bound, ready-to-run proxy.
pub struct Proxy {
    listener: TcpListener,
    /// The Unix socket, with `unix_socket_dir`.
    unix: Option<UnixSocket>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Derives credentials, prepares the pools and binds the listen address.
    ///
    /// # Errors
    /// The address cannot be bound, or a configured secret is unusable.
    pub async fn bind(config: Config) -> Result<Proxy, ProxyError> {
        let shared = Shared::new(config)?;
        let listen = shared.config().listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: listen,
                source,
            })?;
        let config = shared.config();
        let unix = match &config.unix_socket_dir {
            Some(dir) => {
                let port = listener.local_addr().map_or(listen.port(), |a| a.port());
                Some(UnixSocket::bind(dir, port, config.unix_socket_mode)?)
            }
            None => None,
        };
        Ok(Proxy {
            listener,
            unix,
            shared: Arc::new(shared),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.shared.config().listen)
    }

    /// Installs the admin console that logins to `pgweir`/`pgbouncer` reach; without
    /// one they are refused. Only the first call has an effect.
    pub fn set_admin_console(&self, console: Arc<dyn AdminConsole>) {
        let _ = self.shared.admin.set(console);
    }

    /// A cloneable handle on the running proxy's state, for the admin console, the
    /// HTTP endpoints and signal handlers.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle::new(self.shared.clone(), self.local_addr())
    }

    /// Accepts clients until `shutdown` is cancelled (or [`ProxyHandle::shutdown`] is
    /// called), then drains: new connections get FATAL 57P01, idle clients are told
    /// (57P01) and closed, transactions in flight may finish for `shutdown_timeout`;
    /// whatever is left then is disconnected.
    ///
    /// # Errors
    /// None today; the signature leaves room for fatal listener errors.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProxyError> {
        let Proxy {
            listener,
            unix,
            shared,
        } = self;
        let sessions = TaskTracker::new();
        let refusals = TaskTracker::new();
        let local = listener.local_addr();
        info!(addr = %local.as_ref().map(|a| a.to_string()).unwrap_or_default(), "pgweir listening");
        if let Some(u) = &unix {
            info!(path = %u.path().display(), "pgweir listening on a Unix socket");
        }
        // How Unix clients show in SHOW CLIENTS and logs: no address, the listen port
        // (PgBouncer shows "unix" and the port).
        let unix_peer = SocketAddr::from((
            std::net::Ipv4Addr::UNSPECIFIED,
            local.map_or(0, |a| a.port()),
        ));
        let mut backoff = Duration::from_millis(5);
        let mut deadline = None;
        loop {
            let draining = deadline.is_some();
            let accepted = tokio::select! {
                _ = shutdown.cancelled(), if !draining => {
                    deadline = Some(begin_drain(&shared, &sessions));
                    continue;
                }
                _ = shared.stop.cancelled(), if !draining => {
                    deadline = Some(begin_drain(&shared, &sessions));
                    continue;
                }
                _ = sessions.wait(), if draining => break,
                _ = sleep_until_opt(deadline), if draining => {
                    warn!("shutdown_timeout passed: disconnecting the remaining clients");
                    shared.clients.stop_all(crate::stop::Stop::Kill);
                    if tokio::time::timeout(KILL_GRACE, sessions.wait()).await.is_err() {
                        warn!("sessions still running after shutdown");
                    }
                    break;
                }
                r = listener.accept() => r.map(|(s, peer)| {
                    let _ = s.set_nodelay(true);
                    (Stream::from(s), peer, true)
                }),
                r = unix_listener::accept(unix.as_ref()), if unix.is_some() => {
                    r.map(|s| (Stream::from(s), unix_peer, false))
                }
            };
            let (stream, peer, tcp) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // EMFILE and friends: wait rather than spin, like mini-redis.
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            if draining {
                refusals.spawn(session::serve_draining(shared.clone(), stream));
                continue;
            }
            let rate = shared.config().max_connection_rate;
            if tcp
                && rate > 0
                && !shared
                    .connection_rate
                    .admit(peer.ip(), rate, Instant::now())
            {
                // Before any byte is read: a storm from one address costs no login work.
                debug!(%peer, "max_connection_rate reached, refusing connection");
                let message = format!(
                    "pgweir: too many connection attempts from {} (max_connection_rate = {rate} per second); retry later",
                    peer.ip()
                );
                refusals.spawn(refuse(stream, message));
                continue;
            }
            match shared.limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    // The ticket, not the task, holds the permit and the tracker's count:
                    // a parked session has no task ([`crate::park`]).
                    let ticket = session::Ticket::new(permit, sessions.token());
                    // Boxed: tokio moves a task's whole future twice as it ends (its
                    // output, then "consumed"); a boxed one is a pointer to move.
                    tokio::spawn(Box::pin(session::serve(
                        shared.clone(),
                        stream,
                        peer,
                        ticket,
                    )));
                }
                Err(_) => {
                    warn!(%peer, "max_client_conn reached, refusing client");
                    refusals.spawn(refuse(stream, "sorry, too many clients already".into()));
                }
            }
        }
        drop(listener);
        drop(unix);
        shared.pools.close_all();
        refusals.close();
        let _ = tokio::time::timeout(KILL_GRACE, refusals.wait()).await;
        info!("pgweir stopped");
        Ok(())
    }
}

/// Starts the drain: `/readyz` fails and new logins are refused from now on, idle
/// clients are told; returns when to give up waiting for the others.
fn begin_drain(shared: &Shared, sessions: &TaskTracker) -> Instant {
    let timeout = shared.config().shutdown_timeout;
    info!(
        clients = shared.clients.len(),
        "shutting down: waiting up to {}s for transactions in flight",
        timeout.as_secs_f64()
    );
    shared.draining.store(true, Relaxed);
    shared.shutdown.cancel();
    shared.clients.stop_all(crate::stop::Stop::Drain);
    // Pools held by PAUSE would keep waiting clients (and the drain) until the deadline.
    shared.pools.resume_all_for_shutdown();
    sessions.close();
    Instant::now() + timeout
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Tells a client refused at accept (`max_client_conn`, `max_connection_rate`) why,
/// with FATAL 53300.
async fn refuse(mut stream: Stream, message: String) {
    let mut out = BytesMut::new();
    build::put_simple_error(
        &mut out,
        Severity::Fatal,
        sqlstate::TOO_MANY_CONNECTIONS,
        &message,
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
