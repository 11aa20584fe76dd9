//! Checking out a server connection for a client: the upstream's circuit breaker, the
//! operation mode's wait budget, and what the client is told when checkout fails.

use std::time::Duration;

use weir_config::Mode;
use weir_pool::PoolError;

use crate::error::{ClientError, Unavailable};
use crate::pools::PoolEntry;
use crate::server::ServerError;
use crate::upstream::Upstream;

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
    if let Some(refusal) = upstream.breaker.check() {
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
