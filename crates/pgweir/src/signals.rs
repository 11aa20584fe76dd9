//! Signals: SIGHUP reloads the configuration, SIGTERM drains, SIGINT (or a second
//! SIGTERM) stops at once.

use std::sync::Arc;

use crate::admin::Admin;

/// SIGHUP reloads the configuration; SIGTERM drains (transactions in flight finish,
/// up to `shutdown_timeout`); SIGINT, or a second SIGTERM, disconnects everyone now.
pub async fn on_signals(admin: Arc<Admin>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut draining = false;
    loop {
        tokio::select! {
            _ = term.recv() => {
                if draining {
                    tracing::info!("second SIGTERM: fast shutdown");
                    admin.handle().shutdown_fast();
                } else {
                    tracing::info!("SIGTERM: shutting down after transactions in flight");
                    admin.handle().shutdown();
                    draining = true;
                }
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: fast shutdown");
                admin.handle().shutdown_fast();
                draining = true;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                if let Err(e) = admin.reload() {
                    tracing::error!("reload failed, configuration unchanged: {e}");
                }
            }
        }
    }
}
