//! Starting the proxy with everything around it: the admin console, the HTTP
//! endpoint (`http_listen`) and the stats log line. Used by the binary and by tests
//! that need the whole process in-process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use weir_config::Config;
use weir_proxy::Proxy;

use crate::admin::{Admin, Console, Loader};
use crate::stats_log;

/// A bound proxy with its admin surface, ready to [`Started::run`].
pub struct Started {
    /// Where clients (and the admin console) connect.
    pub addr: SocketAddr,
    /// The HTTP endpoint's address, when enabled.
    pub http_addr: Option<SocketAddr>,
    /// The admin backend (also the way to reload, set and shut down).
    pub admin: Arc<Admin>,
    proxy: Proxy,
    stopped: CancellationToken,
}

/// Binds the client listener and the HTTP endpoint and installs the admin console.
///
/// # Errors
/// An address cannot be bound (named in the message), or a secret is unusable.
pub async fn start(config: Config, loader: Option<Loader>) -> anyhow::Result<Started> {
    let http_listen = config.http_listen;
    let proxy = Proxy::bind(config).await?;
    let admin = Admin::new(proxy.handle(), loader);
    admin.set_scaler(crate::scaling::Scaler::new(proxy.handle()));
    proxy.set_admin_console(Arc::new(Console(admin.clone())));
    let stopped = CancellationToken::new();
    let mut http_addr = None;
    if let Some(addr) = http_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for HTTP on {addr} (http_listen; --http-listen '' turns it off)")
        })?;
        http_addr = listener.local_addr().ok();
        tracing::info!(addr = %http_addr.unwrap_or(addr), "HTTP endpoint listening (/metrics, /healthz, /readyz)");
        let backend: Arc<dyn weir_admin::AdminBackend> = admin.clone();
        tokio::spawn(weir_admin::serve_http(listener, backend, stopped.clone()));
    }
    Ok(Started {
        addr: proxy.local_addr(),
        http_addr,
        admin,
        proxy,
        stopped,
    })
}

impl Started {
    /// Serves until shutdown (SIGTERM, `SHUTDOWN`, [`weir_proxy::ProxyHandle::shutdown`]).
    ///
    /// # Errors
    /// As [`Proxy::run`].
    pub async fn run(self) -> anyhow::Result<()> {
        tokio::spawn(stats_log::run(self.admin.clone(), self.stopped.clone()));
        if let Some(scaler) = self.admin.scaler() {
            tokio::spawn(scaler.clone().run(self.stopped.clone()));
        }
        let result = self.proxy.run(CancellationToken::new()).await;
        self.stopped.cancel();
        result?;
        Ok(())
    }
}
