//! The server side of SCRAM-SHA-256: the proxy verifies a connecting client.
//!
//! Follows PostgreSQL's auth-scram.c: the username in client-first is ignored (the startup
//! packet names the role), authzid and mandatory extensions are refused, optional extensions
//! are ignored, and the nonce and channel-binding attribute of client-final must echo what
//! was agreed. Any error moves the exchange to a failed state it cannot leave.

use std::borrow::Cow;
use std::ops::Range;

use super::{
    b64, decode_key, expect_attr, hmac, message_str, new_nonce, sha256, skip_extensions,
    valid_nonce, xor, ScramSecret, MAX_CLIENT_FINAL_LEN, MAX_CLIENT_FIRST_LEN, SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
};
use crate::auth::{base64, ct_eq, shorten, AuthError};

/// Server role of one SCRAM exchange: the proxy verifies a connecting client.
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    /// tls-server-end-point data (the hash of the proxy's certificate) when the client
    /// is connected over TLS: then `SCRAM-SHA-256-PLUS` is offered and bound to it.
    binding: Option<Vec<u8>>,
    state: State,
}

enum State {
    /// Waiting for client-first-message.
    Initial,
    /// server-first-message sent; waiting for client-final-message.
    SentServerFirst {
        /// The AuthMessage so far: client-first-message-bare, server-first-message and
        /// the commas after each; client-final-without-proof completes it. Built in
        /// one buffer: a login's exchange allocates little.
        auth_message: String,
        /// Where the combined nonce is in `auth_message`.
        nonce: Range<usize>,
        /// The `c=` value client-final must carry: base64 of the gs2 header (and of the
        /// channel-binding data with `-PLUS`).
        channel_binding: Cow<'static, str>,
    },
    /// Proof verified.
    Done { client_key: [u8; 32] },
    /// An error happened; the exchange is over.
    Failed,
}

impl ScramServer {
    /// Starts an exchange against `secret` with a random 18-byte nonce (base64).
    pub fn new(secret: ScramSecret) -> Self {
        Self {
            secret,
            server_nonce: new_nonce(),
            binding: None,
            state: State::Initial,
        }
    }

    /// Starts an exchange for a client connected over TLS: `SCRAM-SHA-256-PLUS` with
    /// `tls-server-end-point` channel binding to `end_point` (see
    /// [`super::tls_server_end_point`]) is accepted besides plain `SCRAM-SHA-256`.
    pub fn with_channel_binding(secret: ScramSecret, end_point: Vec<u8>) -> Self {
        Self {
            binding: Some(end_point),
            ..Self::new(secret)
        }
    }

    /// The mechanisms to offer in AuthenticationSASL, preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        if self.binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Starts an exchange with a fixed server nonce, to reproduce known-answer vectors.
    #[cfg(test)]
    pub(crate) fn with_nonce(secret: ScramSecret, server_nonce: &str) -> Self {
        Self {
            secret,
            server_nonce: server_nonce.to_owned(),
            binding: None,
            state: State::Initial,
        }
    }

    /// Takes `mechanism` and `data` of the client's SASLInitialResponse; returns the
    /// server-first-message to send in AuthenticationSASLContinue.
    ///
    /// # Errors
    /// [`AuthError::UnsupportedMechanism`] for anything but `SCRAM-SHA-256` (including
    /// `-PLUS`), [`AuthError::Protocol`] for a malformed message, a channel-binding request
    /// (`p=`), an authzid, a mandatory extension or a call out of order.
    pub fn handle_client_first(
        &mut self,
        mechanism: &str,
        data: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Failed;
            return Err(AuthError::Protocol(
                "unexpected SCRAM client-first-message".into(),
            ));
        }
        let result = self.client_first(mechanism, data);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let plus = match mechanism {
            SCRAM_SHA_256 => false,
            SCRAM_SHA_256_PLUS if self.binding.is_some() => true,
            SCRAM_SHA_256_PLUS => {
                return Err(AuthError::UnsupportedMechanism(
                    "SCRAM-SHA-256-PLUS needs a TLS connection (channel binding)".into(),
                ))
            }
            other => return Err(AuthError::UnsupportedMechanism(shorten(other))),
        };
        const MSG: &str = "SCRAM client-first-message";
        let text = message_str(data, MAX_CLIENT_FIRST_LEN, MSG)?;
        let mut parts = text.split(',');
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let flag = parts.next().unwrap_or_default();
        let channel_binding = match (flag, plus) {
            ("n", false) => Cow::Borrowed("biws"), // base64("n,,")
            // The client could bind but thinks we cannot: fine without TLS; over TLS we
            // offered -PLUS, so someone removed it on the way (RFC 5802 section 6).
            ("y", false) if self.binding.is_none() => Cow::Borrowed("eSws"), // base64("y,,")
            ("y", false) => {
                return Err(AuthError::Protocol(
                    "SCRAM channel binding negotiation error: the client supports channel \
                     binding but thinks the server does not"
                        .into(),
                ))
            }
            ("p=tls-server-end-point", true) => {
                let mut header = b"p=tls-server-end-point,,".to_vec();
                header.extend_from_slice(self.binding.as_deref().unwrap_or_default());
                Cow::Owned(b64(&header))
            }
            (f, true) if f.starts_with("p=") => {
                return Err(AuthError::Protocol(format!(
                    "unsupported SCRAM channel-binding type \"{}\" (only tls-server-end-point)",
                    shorten(&f[2..])
                )))
            }
            (f, false) if f.starts_with("p=") => {
                return Err(AuthError::Protocol(
                    "SCRAM channel binding requested (gs2 flag \"p=\"), but the client \
                     selected SCRAM-SHA-256 instead of SCRAM-SHA-256-PLUS"
                        .into(),
                ))
            }
            (_, true) => {
                return Err(AuthError::Protocol(
                    "SCRAM-SHA-256-PLUS selected without channel binding in the gs2 header".into(),
                ))
            }
            _ => return Err(AuthError::Protocol(format!("{MSG}: malformed gs2 header"))),
        };
        match parts.next() {
            Some("") => {}
            Some(authzid) if authzid.starts_with("a=") => {
                return Err(AuthError::Protocol(
                    "SCRAM authorization identity (a=) is not supported".into(),
                ))
            }
            _ => return Err(AuthError::Protocol(format!("{MSG}: malformed gs2 header"))),
        }
        // client-first-message-bare starts after the second comma of the gs2 header.
        let bare_start = flag.len() + ",,".len();
        let client_first_bare = text
            .get(bare_start..)
            .ok_or_else(|| AuthError::Protocol(format!("{MSG}: truncated")))?;
        if client_first_bare.starts_with("m=") {
            return Err(AuthError::Protocol(
                "the client requires an unsupported SCRAM extension (m=)".into(),
            ));
        }
        // The username is ignored, as in PostgreSQL: the startup packet names the role.
        expect_attr(&mut parts, 'n', MSG)?;
        let client_nonce = expect_attr(&mut parts, 'r', MSG)?;
        if !valid_nonce(client_nonce) {
            return Err(AuthError::Protocol(format!(
                "{MSG}: nonce must be 1..=256 printable characters"
            )));
        }
        skip_extensions(parts, MSG)?;

        // server-first-message: r=<client nonce><server nonce>,s=<salt>,i=<iterations>
        let mut auth_message = String::with_capacity(
            client_first_bare.len() + client_nonce.len() + self.server_nonce.len() + 200,
        );
        auth_message.push_str(client_first_bare);
        auth_message.push(',');
        let server_first_start = auth_message.len();
        auth_message.push_str("r=");
        let nonce_start = auth_message.len();
        auth_message.push_str(client_nonce);
        auth_message.push_str(&self.server_nonce);
        let nonce = nonce_start..auth_message.len();
        auth_message.push_str(",s=");
        base64::encode_to(&self.secret.salt, &mut auth_message);
        auth_message.push_str(",i=");
        auth_message.push_str(crate::build::decimal(self.secret.iterations, &mut [0; 10]));
        let reply = auth_message.as_bytes()[server_first_start..].to_vec();
        auth_message.push(',');
        self.state = State::SentServerFirst {
            auth_message,
            nonce,
            channel_binding,
        };
        Ok(reply)
    }

    /// Takes the client-final-message (a SASLResponse body); returns the server-final-message
    /// (`v=...`) to send in AuthenticationSASLFinal.
    ///
    /// # Errors
    /// [`AuthError::InvalidPassword`] when the proof is wrong; [`AuthError::Protocol`] for a
    /// malformed message, a nonce or channel-binding mismatch, or a call out of order.
    pub fn handle_client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::SentServerFirst {
            mut auth_message,
            nonce,
            channel_binding,
        } = state
        else {
            return Err(AuthError::Protocol(
                "unexpected SCRAM client-final-message".into(),
            ));
        };
        const MSG: &str = "SCRAM client-final-message";
        let text = message_str(data, MAX_CLIENT_FINAL_LEN, MSG)?;
        // The proof is the last attribute; what precedes it is signed.
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| AuthError::Protocol(format!("{MSG}: missing proof")))?;
        let proof = decode_key(proof).ok_or_else(|| {
            AuthError::Protocol(format!("{MSG}: proof is not base64 of 32 bytes"))
        })?;
        let mut parts = without_proof.split(',');
        let cbind = expect_attr(&mut parts, 'c', MSG)?;
        if cbind != channel_binding {
            return Err(AuthError::Protocol(format!(
                "{MSG}: channel-binding attribute does not match the gs2 header"
            )));
        }
        if expect_attr(&mut parts, 'r', MSG)? != &auth_message[nonce] {
            return Err(AuthError::Protocol(format!("{MSG}: nonce mismatch")));
        }
        skip_extensions(parts, MSG)?;

        auth_message.push_str(without_proof);
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(AuthError::InvalidPassword);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        self.state = State::Done { client_key };
        let mut server_final = String::with_capacity(2 + 44);
        server_final.push_str("v=");
        base64::encode_to(&server_signature, &mut server_final);
        Ok(server_final.into_bytes())
    }

    /// After a successful exchange, the client's ClientKey (ClientProof XOR ClientSignature).
    ///
    /// With it and the verifier the proxy can log in to PostgreSQL by SCRAM without knowing
    /// the password (see [`super::ScramClient::with_client_key`]), as PgBouncer does.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            State::Done { client_key } => Some(client_key),
            _ => None,
        }
    }

    /// Whether the client has proven it knows the password.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentServerFirst { .. } => "sent-server-first",
            State::Done { .. } => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("state", &state)
            .finish()
    }
}
