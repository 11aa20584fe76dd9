//! `ServerManager`: how one pool opens and logs in its server connections (credentials,
//! the upstream's breaker, the database and user connection budgets).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use weir_pool::breaker::{Admit, Breaker};
use weir_pool::{ConnLabel, ManageConnection, Pool};
use weir_wire::auth::scram::ScramSecret;

use crate::db_budget::DbGroup;
use crate::server::{
    Fault, ServerAddr, ServerConn, ServerCredential, ServerError, ServerParams, ServerTarget,
};
use crate::upstream::{log_transition, Upstream};

/// Opens server connections for one pool.
pub struct ServerManager {
    /// Replaced by `RELOAD` when the database's upstream changes (with a reconnect).
    pub(super) target: RwLock<ServerTarget>,
    /// `max_db_connections`: shared by every pool of the database.
    pub(super) db_group: Arc<DbGroup>,
    /// `max_user_connections`: the same kind of budget, shared by every pool that logs
    /// in as the same server user (across databases).
    pub(super) user_group: Arc<DbGroup>,
    pub(super) credential: RwLock<ServerCredential>,
    /// ParameterStatus set of the first successful login, sent to clients at their login.
    pub(super) params: RwLock<Option<ServerParams>>,
    /// The last few greetings built from `params` for this pool's clients.
    pub(super) greetings: crate::greeting::Greetings,
    /// The upstream `target` points at, with its breaker (replaced with the target).
    pub(super) upstream: RwLock<Arc<Upstream>>,
    /// `server_connect_timeout` in ms: a connect dropped this late timed out (the pool
    /// applies the timeout by dropping the connect), which the breaker must hear.
    pub(super) connect_timeout_ms: AtomicU64,
    /// The TLS settings in force (`server_tls_*`), read at each connect.
    pub(super) tls: Arc<crate::tls::Tls>,
}

impl ServerManager {
    /// Where and as whom this pool's connections log in.
    pub fn target(&self) -> ServerTarget {
        self.target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The upstream this pool's connections go to.
    pub fn upstream(&self) -> Arc<Upstream> {
        self.upstream
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The parameters the server reported at login, once a connection has been made.
    pub fn server_params(&self) -> Option<ServerParams> {
        self.params
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The greeting for a client of this pool with these startup settings.
    pub fn greeting(
        &self,
        server: &ServerParams,
        settings: &[(String, String)],
        track_extra: &[String],
    ) -> crate::greeting::Greeting {
        self.greetings.get(server, settings, track_extra)
    }

    /// Learns a SCRAM ClientKey from a client's login (checked against the user's
    /// verifier), when no better credential is known; a newer key replaces an older one
    /// (the verifier may have changed: `auth_query` fetched a new one).
    pub fn learn_client_key(&self, key: [u8; 32], secret: &ScramSecret) {
        let mut cred = self.credential.write().unwrap_or_else(|e| e.into_inner());
        let stale = match &*cred {
            ServerCredential::None => true,
            ServerCredential::ScramClientKey { key: old, .. } => *old != key,
            _ => false,
        };
        if stale {
            *cred = ServerCredential::ScramClientKey {
                key,
                secret: Box::new(secret.clone()),
            };
        }
    }

    /// Learns the clear-text password `user` proved (`password` method) when nothing
    /// better than a learned ClientKey is known (and the pool logs in as `user`).
    pub fn learn_password(&self, user: &str, password: String) {
        if self.target().user != user {
            return;
        }
        let mut cred = self.credential.write().unwrap_or_else(|e| e.into_inner());
        if matches!(
            *cred,
            ServerCredential::None | ServerCredential::ScramClientKey { .. }
        ) {
            *cred = ServerCredential::Password(password);
        }
    }

    /// Takes `credential` (fetched with `auth_query` for `user`) as this pool's server
    /// login, unless the pool logs in as a database's fixed user or the credential is no
    /// better than a ClientKey already learned.
    pub fn refresh_credential(&self, user: &str, credential: &ServerCredential) {
        if matches!(credential, ServerCredential::None) || self.target().user != user {
            return;
        }
        *self.credential.write().unwrap_or_else(|e| e.into_inner()) = credential.clone();
    }
}

impl ManageConnection for ServerManager {
    // Boxed: a connection moves through the pool's lists, its guard and the relay's
    // checkout several times per transaction; as a pointer it costs 8 bytes per move,
    // not the ~370 that were ~2 000 instructions of memcpy per transaction.
    type Connection = Box<ServerConn>;
    type Error = ServerError;

    async fn connect(&self) -> Result<Box<ServerConn>, ServerError> {
        let credential = self
            .credential
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let upstream = self.upstream();
        let started = tokio::time::Instant::now();
        let probe = match upstream.breaker.admit(started) {
            Admit::Go => false,
            Admit::Probe => true,
            Admit::Refuse(retry_in) => {
                return Err(ServerError::BreakerOpen {
                    upstream: upstream.addr.clone(),
                    retry_in,
                    last_error: upstream.breaker.snapshot(started).last_error,
                })
            }
        };
        let mut outcome = ConnectOutcome {
            upstream: &upstream,
            started,
            timeout: Duration::from_millis(self.connect_timeout_ms.load(Relaxed)),
            probe,
            resolved: false,
        };
        // Waiting here counts against server_connect_timeout, like any slow connect.
        // The user's budget first: a connect holding a database permit while it waits
        // for its user's would keep that permit from other users.
        let user_permit = Some(self.user_group.acquire(self).await);
        let db_permit = Some(self.db_group.acquire(self).await);
        let target = self.target();
        let tls = self.tls.server();
        let result = ServerConn::connect(&target, &credential, tls.as_ref()).await;
        outcome.resolve(result.as_ref().err());
        let mut conn = Box::new(result?);
        conn.db_permit = db_permit;
        conn.user_permit = user_permit;
        let mut params = self.params.write().unwrap_or_else(|e| e.into_inner());
        if params.is_none() {
            *params = Some(conn.params.clone());
        }
        Ok(conn)
    }

    fn backs_off(&self, e: Option<&ServerError>) -> bool {
        // Unreachable upstreams (and timeouts) are the breaker's; a refused login is
        // this pool's.
        e.is_some_and(|e| e.fault() == Fault::ServerSaid)
    }

    fn is_reusable(&self, conn: &Box<ServerConn>) -> bool {
        self.db_group.note_checkin();
        self.user_group.note_checkin();
        conn.clean
    }

    fn is_alive(&self, conn: &mut Box<ServerConn>) -> bool {
        conn.is_idle_and_alive()
    }

    fn describe(&self, conn: &Box<ServerConn>) -> ConnLabel {
        let (remote, unix_port) = match &conn.cancel.addr {
            ServerAddr::Tcp(addr) => (Some(*addr), None),
            ServerAddr::Unix(_) => (None, Some(self.target().port)),
        };
        ConnLabel {
            backend_pid: Some(conn.cancel.pid),
            remote,
            unix_port,
            local: conn.stream.local_addr().ok(),
        }
    }
}

/// Tells an upstream's breaker how one connect went, also when the pool drops the
/// connect at `server_connect_timeout` (a silent upstream) or its caller leaves.
struct ConnectOutcome<'a> {
    upstream: &'a Upstream,
    started: tokio::time::Instant,
    timeout: Duration,
    probe: bool,
    resolved: bool,
}

impl ConnectOutcome<'_> {
    fn resolve(&mut self, error: Option<&ServerError>) {
        self.resolved = true;
        let breaker: &Breaker = &self.upstream.breaker;
        let before = breaker.state();
        let why = match error {
            // A refused login still proves the upstream up.
            None => None,
            Some(e) if e.fault() != Fault::Unreachable => None,
            Some(e) => Some(e.to_string()),
        };
        match &why {
            None => breaker.on_success(),
            Some(why) => breaker.on_failure(tokio::time::Instant::now(), why),
        }
        log_transition(self.upstream, before, why.as_deref().unwrap_or(""));
    }
}

impl Drop for ConnectOutcome<'_> {
    fn drop(&mut self) {
        if self.resolved {
            return;
        }
        let now = tokio::time::Instant::now();
        let breaker = &self.upstream.breaker;
        let before = breaker.state();
        // The pool drops a connect at its timeout: a silent upstream.
        let why = "timed out connecting (server_connect_timeout)";
        if now.saturating_duration_since(self.started) + Duration::from_millis(20) >= self.timeout {
            breaker.on_failure(now, why);
        } else if self.probe {
            breaker.probe_abandoned(now);
        }
        log_transition(self.upstream, before, why);
    }
}

/// Probes an open breaker's upstream in the background with one real connect and login
/// of `pool` (bounded by `server_connect_timeout`); its outcome opens or closes the
/// breaker, and the connection is closed. Only one probe runs at a time per upstream
/// (the breaker admits one); extra calls return at once.
pub fn spawn_probe(pool: Pool<ServerManager>) {
    tokio::spawn(async move {
        let manager = pool.manager();
        let limit = Duration::from_millis(manager.connect_timeout_ms.load(Relaxed));
        match tokio::time::timeout(limit, manager.connect()).await {
            Ok(Ok(conn)) => drop(conn),
            Ok(Err(e)) => tracing::debug!(error = %e, "breaker probe failed"),
            Err(_) => tracing::debug!("breaker probe timed out"),
        }
    });
}
