//! The client side of SCRAM-SHA-256: the proxy logs in to PostgreSQL.
//!
//! Behaves like libpq's fe-auth-scram.c without channel binding: sends `n,,n=,r=<nonce>`,
//! checks that the server's nonce extends ours and that salt and iteration count are sane,
//! and verifies the server's signature before reporting success, so a server that does not
//! know the secret cannot pass itself off as PostgreSQL.

use super::{
    b64, decode_key, decode_salt, expect_attr, hmac, message_str, new_nonce, parse_iterations,
    salted_password, sha256, skip_extensions, valid_nonce, xor, ScramSecret, MAX_ITERATIONS,
    MAX_SERVER_MESSAGE_LEN,
};
use crate::auth::{ct_eq, shorten, AuthError};

/// Client role of one SCRAM exchange: the proxy logs in to PostgreSQL.
pub struct ScramClient {
    credentials: Credentials,
    /// `n=<user>,r=<nonce>`; the user is always empty outside known-answer tests.
    client_first_bare: String,
    client_nonce: String,
    state: State,
}

enum Credentials {
    Password(String),
    /// A ClientKey recovered by [`super::ScramServer::client_key`]; with the verifier it came
    /// from, the salt, iterations and ServerKey are known too.
    ClientKey {
        client_key: [u8; 32],
        verifier: Option<ScramSecret>,
    },
}

enum State {
    Initial,
    /// client-final sent; `None` when there is no ServerKey to check the signature with.
    SentClientFinal {
        expected_signature: Option<[u8; 32]>,
    },
    Done,
    Failed,
}

impl ScramClient {
    /// Starts an exchange that proves knowledge of `password` (SASLprep is applied).
    pub fn new(password: &str) -> Self {
        Self::build(Credentials::Password(password.to_owned()))
    }

    /// Starts an exchange with a ClientKey instead of a password (see
    /// [`super::ScramServer::client_key`]); the server's salt and iterations must be those of
    /// the verifier the key came from.
    ///
    /// Without the ServerKey the server's signature cannot be checked, only its syntax:
    /// prefer [`ScramClient::with_client_key_and_secret`] when the verifier is at hand.
    pub fn with_client_key(client_key: [u8; 32]) -> Self {
        let credentials = Credentials::ClientKey {
            client_key,
            verifier: None,
        };
        Self::build(credentials)
    }

    /// Like [`ScramClient::with_client_key`], but also checks that the server uses the
    /// verifier's salt and iteration count and verifies its signature with the ServerKey.
    ///
    /// # Errors
    /// [`AuthError::InvalidSecret`] when `client_key` does not hash to the verifier's StoredKey.
    pub fn with_client_key_and_secret(
        client_key: [u8; 32],
        secret: &ScramSecret,
    ) -> Result<Self, AuthError> {
        if !ct_eq(&sha256(&client_key), &secret.stored_key) {
            return Err(AuthError::InvalidSecret(
                "the ClientKey does not belong to this SCRAM verifier".into(),
            ));
        }
        let credentials = Credentials::ClientKey {
            client_key,
            verifier: Some(secret.clone()),
        };
        Ok(Self::build(credentials))
    }

    /// Starts an exchange with a fixed username and nonce, to reproduce known-answer vectors.
    #[cfg(test)]
    pub(crate) fn with_nonce(password: &str, user: &str, nonce: &str) -> Self {
        let mut client = Self::new(password);
        client.set_nonce(user, nonce);
        client
    }

    /// Replaces the random nonce (and username) of a fresh exchange, for known-answer tests.
    #[cfg(test)]
    pub(crate) fn set_nonce(&mut self, user: &str, nonce: &str) {
        self.client_first_bare = format!("n={user},r={nonce}");
        nonce.clone_into(&mut self.client_nonce);
    }

    fn build(credentials: Credentials) -> Self {
        let client_nonce = new_nonce();
        Self {
            credentials,
            client_first_bare: format!("n=,r={client_nonce}"),
            client_nonce,
            state: State::Initial,
        }
    }

    /// The SASLInitialResponse data: `n,,n=,r=<nonce>` (PostgreSQL ignores the username).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Takes the server-first-message (AuthenticationSASLContinue data); returns the
    /// client-final-message to send in a SASLResponse.
    ///
    /// Iteration counts above [`super::MAX_ITERATIONS`] are refused: PBKDF2 cost is linear in
    /// them and the exchange runs on the caller's thread.
    ///
    /// # Errors
    /// [`AuthError::Protocol`] for a malformed message, a nonce that does not extend ours, an
    /// empty or over-long salt, an iteration count outside 1..=MAX_ITERATIONS, a mandatory
    /// extension or a call out of order; [`AuthError::InvalidSecret`] when the server's salt
    /// or iterations differ from the verifier given to [`ScramClient::with_client_key_and_secret`].
    pub fn handle_server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Failed;
            return Err(AuthError::Protocol(
                "unexpected SCRAM server-first-message".into(),
            ));
        }
        let result = self.server_first(data);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        const MSG: &str = "SCRAM server-first-message";
        let text = message_str(data, MAX_SERVER_MESSAGE_LEN, MSG)?;
        if text.starts_with("m=") {
            return Err(AuthError::Protocol(
                "the server requires an unsupported SCRAM extension (m=)".into(),
            ));
        }
        let mut parts = text.split(',');
        let nonce = expect_attr(&mut parts, 'r', MSG)?;
        // The combined nonce must be ours plus a non-empty server part (RFC 5802 §5.1).
        if !valid_nonce(nonce)
            || nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(&self.client_nonce)
        {
            return Err(AuthError::Protocol(format!(
                "{MSG}: server nonce does not extend the client nonce"
            )));
        }
        let salt = decode_salt(expect_attr(&mut parts, 's', MSG)?).ok_or_else(|| {
            AuthError::Protocol(format!("{MSG}: salt is not base64 of 1..=256 bytes"))
        })?;
        let iterations = parse_iterations(expect_attr(&mut parts, 'i', MSG)?)
            .filter(|i| *i <= MAX_ITERATIONS)
            .ok_or_else(|| {
                AuthError::Protocol(format!(
                    "{MSG}: iteration count is not a number in 1..={MAX_ITERATIONS}"
                ))
            })?;
        skip_extensions(parts, MSG)?;

        let (client_key, server_key) = match &self.credentials {
            Credentials::Password(password) => {
                let salted = salted_password(password, &salt, iterations);
                (
                    hmac(&salted, b"Client Key"),
                    Some(hmac(&salted, b"Server Key")),
                )
            }
            Credentials::ClientKey {
                client_key,
                verifier,
            } => {
                if let Some(secret) = verifier {
                    if secret.salt != salt || secret.iterations != iterations {
                        return Err(AuthError::InvalidSecret(
                            "the server's SCRAM salt or iteration count differs from the \
                             stored verifier (was the password changed?)"
                                .into(),
                        ));
                    }
                }
                (*client_key, verifier.as_ref().map(|s| s.server_key))
            }
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let stored_key = sha256(&client_key);
        let proof = xor(&client_key, &hmac(&stored_key, auth_message.as_bytes()));
        self.state = State::SentClientFinal {
            expected_signature: server_key.map(|key| hmac(&key, auth_message.as_bytes())),
        };
        Ok(format!("{without_proof},p={}", b64(&proof)).into_bytes())
    }

    /// Checks the server-final-message (AuthenticationSASLFinal data): `v=<signature>`.
    ///
    /// # Errors
    /// [`AuthError::ServerSignatureMismatch`] for a wrong signature, [`AuthError::InvalidPassword`]
    /// for `e=invalid-proof`, [`AuthError::Protocol`] for other `e=` errors, a malformed message
    /// or a call out of order.
    pub fn handle_server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::SentClientFinal { expected_signature } = state else {
            return Err(AuthError::Protocol(
                "unexpected SCRAM server-final-message".into(),
            ));
        };
        const MSG: &str = "SCRAM server-final-message";
        let text = message_str(data, MAX_SERVER_MESSAGE_LEN, MSG)?;
        if let Some(error) = text.strip_prefix("e=") {
            let error = error.split(',').next().unwrap_or_default();
            return Err(match error {
                "invalid-proof" => AuthError::InvalidPassword,
                other => AuthError::Protocol(format!(
                    "the server reported a SCRAM error: {}",
                    shorten(other)
                )),
            });
        }
        let mut parts = text.split(',');
        let signature = decode_key(expect_attr(&mut parts, 'v', MSG)?).ok_or_else(|| {
            AuthError::Protocol(format!("{MSG}: signature is not base64 of 32 bytes"))
        })?;
        skip_extensions(parts, MSG)?;
        if let Some(expected) = expected_signature {
            if !ct_eq(&signature, &expected) {
                return Err(AuthError::ServerSignatureMismatch);
            }
        }
        self.state = State::Done;
        Ok(())
    }

    /// Whether the server's final message was accepted.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentClientFinal { .. } => "sent-client-final",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramClient")
            .field("state", &state)
            .finish()
    }
}
