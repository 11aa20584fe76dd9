//! The accept loop: one task per client, `max_client_conn` enforced with a semaphore,
//! accept errors (such as running out of file descriptors) retried with backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use weir_config::Config;
use weir_wire::build::{self, Severity};
use weir_wire::sqlstate;

use crate::cancel::CancelRegistry;
use crate::client_auth::Credentials;
use crate::error::ProxyError;
use crate::pools::Pools;
use crate::registry::ClientRegistry;
use crate::session::{self, Shared};

/// How long sessions get to finish after shutdown before the proxy stops waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bound, ready-to-run proxy.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Derives credentials, prepares the pools and binds the listen address.
    ///
    /// # Errors
    /// The address cannot be bound, or a configured secret is unusable.
    pub async fn bind(config: Config) -> Result<Proxy, ProxyError> {
        let credentials = Credentials::from_config(&config)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let config = Arc::new(config);
        Ok(Proxy {
            listener,
            shared: Arc::new(Shared {
                pools: Pools::new(config.clone()),
                config,
                credentials,
                cancels: Arc::new(CancelRegistry::default()),
                clients: Arc::new(ClientRegistry::default()),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.config.listen)
    }

    /// Accepts clients until `shutdown` is cancelled, then stops accepting, tells idle
    /// clients, and waits a little for the others.
    ///
    /// # Errors
    /// None today; the signature leaves room for fatal listener errors.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProxyError> {
        let Proxy { listener, shared } = self;
        let limit = Arc::new(Semaphore::new(shared.config.max_client_conn as usize));
        let tracker = TaskTracker::new();
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "pgweir listening");
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
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
            let _ = stream.set_nodelay(true);
            match limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = shared.clone();
                    tracker.spawn(async move {
                        session::serve(shared, stream, peer).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    warn!(%peer, "max_client_conn reached, refusing client");
                    tracker.spawn(refuse(stream));
                }
            }
        }
        shared.shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("sessions still running after the shutdown grace period");
        }
        shared.pools.close_all();
        Ok(())
    }
}

/// Tells a client over `max_client_conn` why it is refused, in PostgreSQL's words.
async fn refuse(mut stream: TcpStream) {
    let mut out = BytesMut::new();
    build::put_simple_error(
        &mut out,
        Severity::Fatal,
        sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
