//! Authenticating clients: the proxy is the server here (SCRAM-SHA-256, md5 or trust),
//! with secrets from the configuration, derived once at start-up.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::stream::Stream;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use weir_config::{AuthType, Config, Secret};
use weir_wire::auth::messages as authmsg;
use weir_wire::auth::scram::{ScramSecret, ScramServer};
use weir_wire::auth::{md5, AuthError};

use crate::error::{AuthRefusal, ClientError, ProxyError, Violation};
use crate::io::read_frame;
use crate::server::ServerCredential;

/// Largest authentication message a client may send.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;

/// One user's secrets in every form the proxy needs.
#[derive(Clone)]
pub struct UserSecrets {
    /// SCRAM verifier, when the user can log in with SCRAM.
    pub scram: Option<ScramSecret>,
    md5: Option<String>,
    /// How to log in to PostgreSQL as this user.
    pub server: ServerCredential,
}

impl UserSecrets {
    /// The secrets of user `name` whose stored secret is `secret` (SCRAM verifiers are
    /// derived here, once).
    ///
    /// # Errors
    /// A SCRAM verifier that does not parse.
    pub fn from_secret(name: &str, secret: Option<&Secret>) -> Result<UserSecrets, String> {
        Ok(match secret {
            None => UserSecrets {
                scram: None,
                md5: None,
                server: ServerCredential::None,
            },
            Some(Secret::Plain(p)) => UserSecrets {
                scram: Some(ScramSecret::generate(p)),
                md5: Some(md5::md5_secret(name, p)),
                server: ServerCredential::Password(p.clone()),
            },
            Some(Secret::Md5(m)) => UserSecrets {
                scram: None,
                md5: Some(m.clone()),
                server: ServerCredential::Md5(m.clone()),
            },
            Some(Secret::Scram(v)) => UserSecrets {
                scram: Some(ScramSecret::parse(v).map_err(|e| e.to_string())?),
                md5: None,
                server: ServerCredential::None,
            },
        })
    }
}

impl UserSecrets {
    /// Whether `password` is this user's (clear-text method): it matches the md5 hash or
    /// the SCRAM verifier (a plain-text secret is stored as both).
    fn accepts_password(&self, user: &str, password: &str) -> bool {
        if password.is_empty() {
            return false;
        }
        if let Some(m) = &self.md5 {
            return md5::md5_secret(user, password) == *m;
        }
        self.scram.as_ref().is_some_and(|s| {
            ScramSecret::from_password(password, &s.salt, s.iterations).stored_key == s.stored_key
        })
    }
}

/// All configured users' secrets; replaced as a whole on `RELOAD`.
#[derive(Default)]
pub struct Credentials {
    users: RwLock<Arc<HashMap<String, Arc<UserSecrets>>>>,
}

impl Credentials {
    /// Derives every user's secrets from the configuration (SCRAM verifiers are computed once here).
    ///
    /// # Errors
    /// A stored SCRAM verifier that does not parse.
    pub fn from_config(config: &Config) -> Result<Credentials, ProxyError> {
        let mut users = HashMap::new();
        for (name, user) in &config.users {
            let secrets =
                UserSecrets::from_secret(name, user.password.as_ref()).map_err(|message| {
                    ProxyError::Credential {
                        user: name.clone(),
                        message,
                    }
                })?;
            users.insert(name.clone(), Arc::new(secrets));
        }
        Ok(Credentials {
            users: RwLock::new(Arc::new(users)),
        })
    }

    /// The secrets of `user`, if configured (read once per login, not per message).
    pub fn get(&self, user: &str) -> Option<Arc<UserSecrets>> {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user)
            .cloned()
    }

    /// Takes over `other`'s users (`RELOAD`): logins from now on use them.
    pub fn replace(&self, other: Credentials) {
        let users = other
            .users
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = users;
    }

    /// How many users are configured.
    pub fn len(&self) -> usize {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// No user is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a successful login leaves behind.
#[derive(Default)]
pub struct AuthOutcome {
    /// A SCRAM ClientKey recovered from the client's proof: lets the proxy log in to the
    /// server as this user when the configuration holds only a verifier.
    pub client_key: Option<[u8; 32]>,
    /// The clear-text password a client proved (`password` method): the server login
    /// can use it when only a verifier or hash is stored.
    pub password: Option<String>,
}

/// How one client logs in: `auth_type`, or the method of its `auth_hba_file` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No password.
    Trust,
    /// md5 (SCRAM for users with only a SCRAM verifier).
    Md5,
    /// SCRAM-SHA-256 (md5 for users with only an md5 hash).
    ScramSha256,
    /// A clear-text password, checked against whatever secret is stored.
    Password,
}

impl Method {
    /// The method `auth_type` prescribes; `hba` has none of its own (the rule decides).
    pub fn of(auth_type: AuthType) -> Option<Method> {
        match auth_type {
            AuthType::Trust => Some(Method::Trust),
            AuthType::Md5 => Some(Method::Md5),
            AuthType::ScramSha256 => Some(Method::ScramSha256),
            AuthType::Hba => None,
        }
    }
}

/// How `user` asking for `database` logs in (`auth_type`, or its `auth_hba_file` rule)
/// and with which secrets: the configured ones, else (unless no password is needed, or
/// it is the admin console) those `auth_query` fetches. The flag says they came from
/// `auth_query`.
///
/// # Errors
/// An hba rule refuses the client (28000), or the `auth_query` lookup failed.
pub async fn method_and_secrets(
    shared: &crate::session::Shared,
    stream: &Stream,
    user: &str,
    database: &str,
) -> Result<(Method, Option<Arc<UserSecrets>>, bool), ClientError> {
    let method = {
        let config = shared.config();
        match Method::of(config.auth_type) {
            Some(m) => m,
            None => crate::hba::method_for(&config, stream, user, database)?,
        }
    };
    Ok(match shared.credentials.get(user) {
        Some(s) => (method, Some(s), false),
        None if method != Method::Trust && !crate::admin_hook::is_admin_database(database) => {
            // Boxed: the lookup (a server login and a query, ~3.8 KiB of future) is
            // the rare path; inline, every login's future would be that big.
            let found = Box::pin(shared.auth_query.lookup(shared, database, user)).await?;
            (method, found, true)
        }
        None => (method, None, false),
    })
}

/// Runs the authentication exchange with a client; on success AuthenticationOk is left
/// in `out` (the login's write buffer, empty before), for the greeting to follow in
/// the same write, as PostgreSQL sends them. `secrets` are the user's (from the
/// configuration or `auth_query`); `None` runs the exchange against a throwaway secret
/// and fails it as a wrong password.
///
/// # Errors
/// Wrong password (28P01 with PostgreSQL's text), a protocol violation, or I/O.
pub async fn authenticate(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    out: &mut BytesMut,
    user: &str,
    method: Method,
    secrets: Option<&UserSecrets>,
    channel_binding: Option<&[u8]>,
) -> Result<AuthOutcome, ClientError> {
    let mut outcome = AuthOutcome::default();
    let use_scram = match method {
        Method::Trust | Method::Password => false,
        // PostgreSQL's md5 method upgrades to SCRAM when only a SCRAM secret is stored.
        Method::Md5 => secrets.is_some_and(|s| s.md5.is_none() && s.scram.is_some()),
        // A user with only an md5 secret cannot do SCRAM: use md5 for them.
        Method::ScramSha256 => !secrets.is_some_and(|s| s.scram.is_none() && s.md5.is_some()),
    };
    match method {
        Method::Trust => {}
        Method::Password => {
            authmsg::put_authentication_cleartext(out);
            flush(stream, out).await?;
            let msg = expect_password_message(stream, rbuf).await?;
            let response =
                authmsg::parse_password_message(msg.body()).map_err(Violation::PasswordMessage)?;
            let password = std::str::from_utf8(response).unwrap_or_default();
            if !secrets.is_some_and(|s| s.accepts_password(user, password)) {
                return Err(ClientError::PasswordFailed(user.to_owned()));
            }
            outcome.password = Some(password.to_owned());
        }
        _ if use_scram => {
            // Unknown users run the whole exchange against a throwaway secret, so that a
            // prober cannot tell "no such user" from "wrong password".
            let secret = secrets
                .and_then(|s| s.scram.clone())
                .unwrap_or_else(|| dummy_secret().clone());
            // Over TLS, SCRAM-SHA-256-PLUS binds the exchange to this TLS connection.
            // Boxed: its 240 bytes inline would keep every login's future past malloc's
            // per-thread cache (1 KiB).
            let mut server = Box::new(match channel_binding {
                Some(end_point) => ScramServer::with_channel_binding(secret, end_point.to_vec()),
                None => ScramServer::new(secret),
            });
            authmsg::put_authentication_sasl(out, server.mechanisms());
            flush(stream, out).await?;
            let first = expect_password_message(stream, rbuf).await?;
            let (mechanism, data) = authmsg::parse_sasl_initial_response(first.body())
                .map_err(Violation::SaslMessage)?;
            let server_first = server
                .handle_client_first(mechanism, data)
                .map_err(|e| scram_error(user, e))?;
            authmsg::put_authentication_sasl_continue(out, &server_first);
            flush(stream, out).await?;
            let fin = expect_password_message(stream, rbuf).await?;
            let server_final = server
                .handle_client_final(fin.body())
                .map_err(|e| scram_error(user, e))?;
            if secrets.is_none() {
                return Err(ClientError::PasswordFailed(user.to_owned()));
            }
            authmsg::put_authentication_sasl_final(out, &server_final);
            outcome.client_key = server.client_key();
        }
        _ => {
            let salt: [u8; 4] = rand::random();
            authmsg::put_authentication_md5(out, salt);
            flush(stream, out).await?;
            let msg = expect_password_message(stream, rbuf).await?;
            let response =
                authmsg::parse_password_message(msg.body()).map_err(Violation::PasswordMessage)?;
            let ok = secrets
                .and_then(|s| s.md5.as_deref())
                .is_some_and(|secret| md5::verify_md5_response(secret, salt, response));
            if !ok {
                return Err(ClientError::PasswordFailed(user.to_owned()));
            }
        }
    }
    authmsg::put_authentication_ok(out);
    Ok(outcome)
}

fn scram_error(user: &str, e: AuthError) -> ClientError {
    match e {
        AuthError::InvalidPassword => ClientError::PasswordFailed(user.to_owned()),
        AuthError::UnsupportedMechanism(m) => AuthRefusal::UnsupportedMechanism(m).into(),
        other => Violation::Scram(other).into(),
    }
}

async fn expect_password_message(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
) -> Result<weir_wire::Frame, ClientError> {
    let frame = read_frame(stream, rbuf, MAX_AUTH_MESSAGE).await?;
    if frame.tag() != b'p' {
        return Err(Violation::ExpectedPassword(frame.tag() as char).into());
    }
    Ok(frame)
}

async fn flush(stream: &mut Stream, out: &mut BytesMut) -> Result<(), ClientError> {
    stream.write_all(out).await?;
    out.clear();
    Ok(())
}

fn dummy_secret() -> &'static ScramSecret {
    static DUMMY: OnceLock<ScramSecret> = OnceLock::new();
    DUMMY.get_or_init(|| ScramSecret::generate(&format!("{:x}", rand::random::<u128>())))
}
