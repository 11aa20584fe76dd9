//! PgBouncer's `auth_query`: the secret of a user who is in no file is fetched from the
//! server by running `auth_query` as `auth_user`, then cached for
//! `auth_query_cache_ttl`. The client is authenticated against that secret (md5 or a
//! SCRAM verifier); a SCRAM user's server login then uses the ClientKey recovered from
//! the client's own proof, so the proxy never needs a plain password.
//!
//! The query runs on a short-lived connection of its own, not on a pooled one: a pooled
//! connection carries another client's session settings (a `search_path` could shadow
//! `pg_shadow`, CVE-2025-12819), and a lookup must not wait behind a saturated pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::{debug, warn};
use weir_config::{Config, Secret};
use weir_wire::backend::ErrorFields;
use weir_wire::build::{put_cstr, put_frame, put_terminate};

use crate::client_auth::UserSecrets;
use crate::error::{ClientError, Unavailable};
use crate::io::read_frame;
use crate::server::{ServerConn, ServerError, ServerTarget};
use crate::session::Shared;

/// Largest message accepted in the answer to an auth query (a row with a verifier).
const MAX_ANSWER_MESSAGE: usize = 64 * 1024;
/// Most cached lookups; past this the expired ones are dropped, then everything.
const MAX_CACHED: usize = 10_000;

/// (auth database, user).
type CacheKey = (String, String);

/// Secrets fetched with `auth_query`, by (auth database, user), each with when it was fetched.
#[derive(Default)]
pub struct AuthQueryCache {
    entries: Mutex<HashMap<CacheKey, (Instant, Arc<UserSecrets>)>>,
    /// One lookup per key at a time: a burst of logins (an application's pool starting)
    /// waits for the first answer instead of each opening a connection to the server.
    inflight: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl AuthQueryCache {
    /// The secrets of `user` logging in to `database` via `auth_query`: cached if fetched
    /// within `auth_query_cache_ttl`, else fetched now. `Ok(None)` when no `auth_user`
    /// applies to the database, or the server knows no such user (or it has no password):
    /// the caller then fails the login as a wrong password would, so nobody can probe
    /// which users exist.
    ///
    /// # Errors
    /// The lookup itself failed: the upstream's breaker is open (57P03) or the auth
    /// connection or query failed (08006), with a message naming `auth_query`.
    pub async fn lookup(
        &self,
        shared: &Shared,
        database: &str,
        user: &str,
    ) -> Result<Option<Arc<UserSecrets>>, ClientError> {
        let config = shared.config();
        let Some((auth_user, query, auth_db)) = config.auth_query_for(database) else {
            return Ok(None);
        };
        let key = (auth_db.to_owned(), user.to_owned());
        let ttl = config.auth_query_cache_ttl;
        if let Some(secrets) = self.cached(&key, ttl) {
            return Ok(Some(secrets));
        }
        let gate = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _turn = gate.lock().await;
            // The lookup this one waited for may have answered it.
            match self.cached(&key, ttl) {
                Some(secrets) => Ok(Some(secrets)),
                None => {
                    self.fetch_and_cache(shared, &config, (auth_user, query), key.clone(), ttl)
                        .await
                }
            }
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map and this lookup hold it: nobody waits, forget it.
        if inflight
            .get(&key)
            .is_some_and(|g| Arc::strong_count(g) <= 2)
        {
            inflight.remove(&key);
        }
        result
    }

    /// The cached secrets for `key`, if fetched within `ttl`.
    fn cached(&self, key: &CacheKey, ttl: Duration) -> Option<Arc<UserSecrets>> {
        if ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, secrets)| secrets.clone())
    }

    /// Runs the lookup for `key` (auth database, user) and caches a secret found.
    async fn fetch_and_cache(
        &self,
        shared: &Shared,
        config: &Config,
        (auth_user, query): (&str, &str),
        key: CacheKey,
        ttl: Duration,
    ) -> Result<Option<Arc<UserSecrets>>, ClientError> {
        let (auth_db, user) = (key.0.as_str(), key.1.as_str());
        let secret = fetch(shared, config, auth_user, query, auth_db, user).await?;
        let Some(secret) = secret else {
            self.forget(&key);
            return Ok(None);
        };
        let secrets = Arc::new(UserSecrets::from_secret(user, Some(&secret)).map_err(
            |message| {
                warn!(%user, "auth_query returned an unusable secret: {message}");
                ClientError::ServerUnavailable(Unavailable::UnusableSecret(user.to_owned()))
            },
        )?);
        if !ttl.is_zero() {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if entries.len() >= MAX_CACHED {
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
                if entries.len() >= MAX_CACHED {
                    entries.clear();
                }
            }
            entries.insert(key, (Instant::now(), secrets.clone()));
        }
        Ok(Some(secrets))
    }

    /// Drops every cached secret (`RELOAD`: the auth settings may have changed).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn forget(&self, key: &CacheKey) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// Connects to `auth_db` as `auth_user`, runs `query` with `user` as `$1` and returns the
/// secret of the first row (`None`: no row, or a NULL secret).
async fn fetch(
    shared: &Shared,
    config: &Config,
    auth_user: &str,
    query: &str,
    auth_db: &str,
    user: &str,
) -> Result<Option<Secret>, ClientError> {
    let failed = |reason: LookupFailure| {
        warn!(%user, %auth_user, db = %auth_db, "auth_query failed: {reason}");
        ClientError::ServerUnavailable(Unavailable::AuthQuery(Box::new(LookupError {
            user: user.to_owned(),
            auth_user: auth_user.to_owned(),
            auth_db: auth_db.to_owned(),
            reason,
        })))
    };
    let Some(db) = config.databases.get(auth_db) else {
        return Err(failed(LookupFailure::UnknownDatabase));
    };
    let credential = match (&db.user, &db.password) {
        (Some(u), Some(p)) if u == auth_user => {
            crate::server::ServerCredential::Password(p.clone())
        }
        _ => shared
            .credentials
            .get(auth_user)
            .map_or(crate::server::ServerCredential::None, |s| s.server.clone()),
    };
    let target = ServerTarget {
        host: db.host.clone(),
        port: db.port,
        dbname: db.server_dbname(auth_db).to_owned(),
        user: auth_user.to_owned(),
    };
    let upstream = shared.pools.upstreams().get(&target.host, target.port);
    if let Some(refusal) = upstream.breaker.check() {
        return Err(ClientError::BreakerOpen {
            upstream: upstream.addr.clone(),
            retry_in: refusal.retry_in,
            last_error: refusal.last_error,
        });
    }
    let deadline = config
        .server_connect_timeout
        .max(Duration::from_millis(100));
    let tls = shared.tls().server();
    let work = async {
        let mut conn = ServerConn::connect(&target, &credential, tls.as_ref())
            .await
            .map_err(|e| failed(LookupFailure::Connect(e)))?;
        let answer = run_query(&mut conn, query, user)
            .await
            .map_err(|e| failed(LookupFailure::Query(e)));
        let mut bye = BytesMut::new();
        put_terminate(&mut bye);
        let _ = conn.stream.write_all(&bye).await;
        answer
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(answer) => answer,
        Err(_) => Err(failed(LookupFailure::Timeout(deadline))),
    }
}

/// An `auth_query` lookup that failed: for whom, as whom, where, and why.
#[derive(Debug, thiserror::Error)]
#[error("could not look up user \"{user}\" with auth_query (as auth_user \"{auth_user}\" in database \"{auth_db}\"): {reason}")]
pub struct LookupError {
    /// The user logging in.
    pub user: String,
    /// Who the lookup ran as.
    pub auth_user: String,
    /// Where it ran.
    pub auth_db: String,
    /// What went wrong.
    #[source]
    pub reason: LookupFailure,
}

/// Why the `auth_query` lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum LookupFailure {
    /// `auth_dbname` (or the login's database) is not configured.
    #[error("auth_dbname names no configured database")]
    UnknownDatabase,
    /// Connecting or logging in as `auth_user` failed.
    #[error(transparent)]
    Connect(ServerError),
    /// The query failed or answered something unusable.
    #[error(transparent)]
    Query(QueryError),
    /// It took longer than `server_connect_timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Why an auth query's answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The connection failed or sent a malformed message.
    #[error("{0}")]
    Io(#[from] crate::io::ReadFrameError),
    /// The server answered with an error.
    #[error("server error {code}: {message}")]
    Server {
        /// Its SQLSTATE.
        code: String,
        /// Its message.
        message: String,
    },
    /// The rows do not have the (user name, secret) shape.
    #[error("the query must return (user name, secret): {0}")]
    Shape(&'static str),
}

/// Runs `query` with `$1 = user` over the extended protocol (the name is a parameter,
/// never spliced into SQL) and returns the secret column of the first row.
async fn run_query(
    conn: &mut ServerConn,
    query: &str,
    user: &str,
) -> Result<Option<Secret>, QueryError> {
    let mut out = BytesMut::with_capacity(128 + query.len() + user.len());
    put_extended_query(&mut out, query, user);
    conn.stream
        .write_all(&out)
        .await
        .map_err(|e| QueryError::Io(e.into()))?;
    let mut secret = None;
    let mut rows = 0usize;
    let mut error = None;
    loop {
        let frame = read_frame(&mut conn.stream, &mut conn.rbuf, MAX_ANSWER_MESSAGE).await?;
        match frame.tag() {
            b'D' => {
                rows += 1;
                if rows == 1 {
                    secret = second_column(frame.body())?;
                }
            }
            b'E' => {
                let e = ErrorFields::parse(frame.body());
                error = Some(QueryError::Server {
                    code: String::from_utf8_lossy(e.code.unwrap_or(b"XX000")).into_owned(),
                    message: e.message_lossy(),
                });
            }
            b'Z' => break,
            // ParseComplete, BindComplete, RowDescription, CommandComplete, notices.
            _ => {}
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    if rows > 1 {
        debug!(%user, rows, "auth_query returned several rows; the first is used");
    }
    Ok(secret
        .filter(|s: &String| !s.is_empty())
        .map(Secret::classify))
}

/// Parse (unnamed) + Bind (one text parameter) + Execute + Sync.
fn put_extended_query(out: &mut BytesMut, query: &str, param: &str) {
    put_frame(out, b'P', |b| {
        put_cstr(b, b"");
        put_cstr(b, query.as_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
    });
    put_frame(out, b'B', |b| {
        put_cstr(b, b"");
        put_cstr(b, b"");
        b.extend_from_slice(&0i16.to_be_bytes()); // parameter formats: all text
        b.extend_from_slice(&1i16.to_be_bytes());
        let len = i32::try_from(param.len()).unwrap_or(i32::MAX);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(param.as_bytes());
        b.extend_from_slice(&0i16.to_be_bytes()); // result formats: all text
    });
    put_frame(out, b'E', |b| {
        put_cstr(b, b"");
        b.extend_from_slice(&0i32.to_be_bytes());
    });
    put_frame(out, b'S', |_| {});
}

/// The second column of a DataRow body as text (`None` if NULL); every length is checked.
fn second_column(mut body: &[u8]) -> Result<Option<String>, QueryError> {
    if body.len() < 2 {
        return Err(QueryError::Shape("malformed DataRow"));
    }
    let columns = body.get_i16();
    if columns < 2 {
        return Err(QueryError::Shape("fewer than two columns"));
    }
    let mut value = None;
    for i in 0..2 {
        if body.len() < 4 {
            return Err(QueryError::Shape("malformed DataRow"));
        }
        let len = body.get_i32();
        if len < 0 {
            value = None;
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return Err(QueryError::Shape("malformed DataRow"));
        }
        if i == 1 {
            value = Some(String::from_utf8_lossy(&body[..len]).into_owned());
        }
        body.advance(len);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[Option<&str>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in cols {
            match c {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(s) => {
                    b.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn the_secret_is_the_second_column() {
        let body = row(&[Some("alice"), Some("md5abc")]);
        assert_eq!(second_column(&body).unwrap().as_deref(), Some("md5abc"));
        assert_eq!(second_column(&row(&[Some("a"), None])).unwrap(), None);
        assert!(second_column(&row(&[Some("a")])).is_err());
        // A length past the end of the message is refused, not read.
        let mut bad = row(&[Some("a"), Some("b")]);
        bad.truncate(bad.len() - 1);
        assert!(second_column(&bad).is_err());
        assert!(second_column(&[0]).is_err());
    }

    #[test]
    fn the_user_name_is_a_parameter_not_sql() {
        let mut out = BytesMut::new();
        put_extended_query(&mut out, "SELECT $1", "x'; drop table t; --");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("SELECT $1\0"));
        assert!(text.contains("x'; drop table t; --"));
        assert_eq!(out.last(), Some(&4u8)); // Sync is last: 'S', length 4
    }
}
