//! A client's login, top to bottom: the startup packet (read by `startup`), protocol
//! negotiation, authentication, routing to the admin console or a pool, and the
//! greeting (ParameterStatus, BackendKeyData, ReadyForQuery).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use weir_wire::build;

use super::checkout::checkout;
use super::pgweir_settings::{client_class, client_dedup};
use super::startup::{negotiate_protocol, read_startup};
use super::Shared;
use crate::admin_hook::AdminRole;
use crate::client_auth::authenticate;
use crate::error::ClientError;
use crate::params::{into_startup_settings, ClientParams};
use crate::pools::PoolEntry;
use crate::stream::Stream;

/// Where a successful login goes.
pub enum Login {
    /// To its pool and the relay loop.
    Pool(Box<LoggedIn>),
    /// To the admin console (the client got AuthenticationOk and nothing else yet).
    Admin {
        /// The authenticated user.
        user: String,
        /// `pgweir` or `pgbouncer`, as the client asked.
        database: String,
        /// What the user may do there.
        role: AdminRole,
        /// `application_name` from the startup packet (empty if none).
        application_name: String,
    },
}

/// A logged-in client, ready for the relay loop.
pub struct LoggedIn {
    /// Its pool.
    pub entry: Arc<PoolEntry>,
    /// Its proxy-issued cancel key.
    pub cancel: crate::cancel::CancelGuard,
    /// `application_name` from the startup packet (empty if none).
    pub application_name: String,
    /// The settings it asked for, to be set on every server connection it uses.
    pub params: ClientParams,
    /// Its class in the pool's wait queue.
    pub class: weir_pool::Class,
    /// Its own `pgweir.dedup`, if it set one.
    pub dedup: Option<bool>,
}

/// Startup packet, authentication and greeting. `Ok(None)` for a served CancelRequest.
pub(super) async fn login(
    shared: &Shared,
    stream: &mut Stream,
    rbuf: &mut BytesMut,
) -> Result<Option<Login>, ClientError> {
    let mut tls = None;
    let mut startup = match read_startup(shared, stream, rbuf, &mut tls).await? {
        Some(s) => s,
        None => return Ok(None),
    };
    let user = startup
        .user()
        .ok_or_else(|| ClientError::from(crate::error::AuthRefusal::NoUser))?
        .to_owned();
    let database = startup.database().unwrap_or(&user).to_owned();

    let mut out = BytesMut::with_capacity(512);
    let minor = negotiate_protocol(&startup, &mut out);
    if !out.is_empty() {
        stream.write_all(&out).await?;
        out.clear();
    }
    let (method, secrets, from_query) =
        crate::client_auth::method_and_secrets(shared, stream, &user, &database).await?;
    let outcome = authenticate(
        stream,
        rbuf,
        &mut out,
        &user,
        method,
        secrets.as_deref(),
        tls.as_ref().map(|t| t.end_point()),
    )
    .await?;
    if let Some(role) = crate::admin_hook::route_login(shared, &database, &user)? {
        stream.write_all(&out).await?;
        let application_name = startup.get("application_name").unwrap_or_default();
        return Ok(Some(Login::Admin {
            application_name: application_name.to_owned(),
            user,
            database,
            role,
        }));
    }

    let no_credential = crate::server::ServerCredential::None;
    let credential = secrets.as_ref().map_or(&no_credential, |s| &s.server);
    let entry = shared
        .pools
        .get_or_create(&database, &user, credential)
        .ok_or_else(|| ClientError::UnknownDatabase(database.clone()))?;
    if from_query {
        // The pool may predate a password change the lookup just saw.
        entry.pool.manager().refresh_credential(&user, credential);
    }
    if let (Some(key), Some(secret)) = (
        outcome.client_key,
        secrets.as_ref().and_then(|s| s.scram.as_ref()),
    ) {
        entry.pool.manager().learn_client_key(key, secret);
    }
    if let Some(password) = outcome.password {
        entry.pool.manager().learn_password(&user, password);
    }

    // The client expects the server's parameters now; the first login to a pool makes a
    // server connection to learn them (and proves the server is reachable).
    let params = match entry.pool.manager().server_params() {
        Some(p) => p,
        None => {
            let upstream = entry.pool.manager().upstream();
            // Boxed: once per pool, and inline it would grow every login's future.
            let conn = Box::pin(checkout(
                &entry,
                &upstream,
                shared.config().mode,
                weir_pool::Class::Critical,
            ))
            .await?;
            conn.params.clone()
        }
    };
    let application_name = startup
        .get("application_name")
        .unwrap_or_default()
        .to_owned();
    let mut settings = into_startup_settings(std::mem::take(&mut startup.params));
    let class = client_class(
        &mut settings,
        &shared.config(),
        &user,
        &database,
        &application_name,
    )?;
    let dedup = client_dedup(&mut settings)?;
    let greeting =
        entry
            .pool
            .manager()
            .greeting(&params, &settings, &shared.config().track_extra_parameters);
    out.extend_from_slice(&greeting.status);
    // Protocol 3.2 clients get PostgreSQL 18's 32-byte cancel keys; the servers behind
    // may speak 3.0 (the proxy maps keys, so the lengths need not agree).
    let cancel = shared.cancels.register_with_key_len(if minor >= 2 {
        crate::cancel::LONG_KEY_LEN
    } else {
        crate::cancel::SHORT_KEY_LEN
    });
    build::put_backend_key_data(&mut out, cancel.pid(), cancel.slot().key());
    build::put_ready_for_query(&mut out, b'I');
    stream.write_all(&out).await?;
    Ok(Some(Login::Pool(Box::new(LoggedIn {
        entry,
        cancel,
        application_name,
        params: greeting.params,
        class,
        dedup,
    }))))
}
