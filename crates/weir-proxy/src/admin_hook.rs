//! Where an authenticated login goes before any pool is touched: the admin console
//! (virtual databases `pgweir` and `pgbouncer`), a refusal (`DISABLE`d database,
//! shutdown in progress), or on to its pool.
//!
//! The console itself lives in `weir-admin`, which depends on this crate; the proxy
//! only knows the [`AdminConsole`] trait object the binary installs with
//! [`crate::Proxy::set_admin_console`].

use std::future::Future;
use std::pin::Pin;

use crate::stream::Stream;
use bytes::BytesMut;

use crate::error::ClientError;
use crate::session::Shared;

/// Database names that reach the admin console instead of a pool (PgBouncer's
/// `pgbouncer` keeps existing tools working).
pub const ADMIN_DATABASES: [&str; 2] = ["pgweir", "pgbouncer"];

/// Which commands an admin console user may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Listed in `admin_users`: every command.
    Admin,
    /// Listed in `stats_users`: `SHOW` commands only.
    Stats,
}

/// The admin console, as the proxy sees it.
pub trait AdminConsole: Send + Sync {
    /// Serves one console session on `stream`, right after the proxy sent
    /// AuthenticationOk: the console sends the rest of the greeting (ParameterStatus,
    /// BackendKeyData, ReadyForQuery) and answers commands until the client leaves.
    /// `rbuf` holds any bytes already read after the login.
    fn serve<'a>(
        &'a self,
        stream: &'a mut Stream,
        rbuf: BytesMut,
        user: &'a str,
        role: AdminRole,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Whether `database` names the admin console.
pub fn is_admin_database(database: &str) -> bool {
    ADMIN_DATABASES.contains(&database)
}

/// Decides, after authentication, whether `user`'s login to `database` goes to the
/// admin console (`Some(role)`), to a pool (`None`), or is refused.
///
/// # Errors
/// [`ClientError::AdminNotAllowed`] for a console login by a user in neither list,
/// [`ClientError::AdminUnavailable`] when no console is installed,
/// [`ClientError::DatabaseDisabled`] after `DISABLE`, [`ClientError::Draining`]
/// during shutdown.
pub fn route_login(
    shared: &Shared,
    database: &str,
    user: &str,
) -> Result<Option<AdminRole>, ClientError> {
    if is_admin_database(database) {
        let config = shared.config();
        let role = if config.admin_users.iter().any(|u| u == user) {
            AdminRole::Admin
        } else if config.stats_users.iter().any(|u| u == user) {
            AdminRole::Stats
        } else {
            return Err(ClientError::AdminNotAllowed(user.to_owned()));
        };
        if shared.admin_console().is_none() {
            return Err(ClientError::AdminUnavailable);
        }
        // The console stays reachable while draining: operators watch the drain there.
        return Ok(Some(role));
    }
    if shared.is_draining() {
        return Err(ClientError::Draining);
    }
    if shared.pools.is_disabled(database) {
        return Err(ClientError::DatabaseDisabled(database.to_owned()));
    }
    Ok(None)
}
