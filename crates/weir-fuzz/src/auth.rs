//! Targets over the authentication exchanges, both roles: the proxy as a SCRAM/md5
//! server to its clients, and as a SCRAM/md5 client to PostgreSQL.
//!
//! Nonces are random, so a fuzzer cannot echo them: the literal `%N` in a later message
//! is replaced by the nonce the earlier one established, letting inputs reach the
//! checks after the nonce comparison.

use std::sync::OnceLock;

use weir_wire::auth::messages::{
    parse_auth_request, parse_password_message, parse_sasl_initial_response, AuthRequest,
};
use weir_wire::auth::scram::{choose_mechanism, ScramClient, ScramSecret, ScramServer};
use weir_wire::auth::{md5, AuthError};

use crate::split_prefixed;

/// The marker a later message uses for the nonce established before it.
pub const NONCE_MARKER: &[u8] = b"%N";

/// The password every harness secret is made from.
pub const PASSWORD: &str = "pencil";

/// The user's SCRAM verifier (computed once: 4096 iterations is slow per run).
pub fn secret() -> &'static ScramSecret {
    static SECRET: OnceLock<ScramSecret> = OnceLock::new();
    SECRET.get_or_init(|| ScramSecret::from_password(PASSWORD, b"fuzz-salt-16byte", 4096))
}

/// The salt of [`secret`] as a server-first-message carries it.
pub fn secret_salt_b64() -> String {
    let verifier = secret().to_verifier();
    // SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>
    verifier
        .split(['$', ':'])
        .nth(2)
        .unwrap_or_default()
        .to_owned()
}

fn with_nonce(message: &[u8], nonce: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + nonce.len());
    let mut rest = message;
    while let Some(i) = rest
        .windows(NONCE_MARKER.len())
        .position(|w| w == NONCE_MARKER)
    {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(nonce.as_bytes());
        rest = &rest[i + NONCE_MARKER.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The `r=` attribute of a SCRAM message.
fn nonce_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.split(',')
        .find_map(|a| a.strip_prefix("r="))
        .unwrap_or_default()
        .to_owned()
}

/// The proxy as server: `len, SASLInitialResponse body, SASLResponse body` (the
/// client-first and client-final messages, `%N` = the combined nonce). The rest of the
/// input also goes through the PasswordMessage reader and md5 check, and the stored
/// secret parsers (auth_file and config secrets are files, not peers, but untrusted
/// enough).
pub fn scram_server(data: &[u8]) {
    let (initial, final_msg) = split_prefixed(data);
    let mut server = ScramServer::new(secret().clone());
    if let Ok((mechanism, first)) = parse_sasl_initial_response(initial) {
        match server.handle_client_first(mechanism, first) {
            Ok(server_first) => {
                let nonce = nonce_of(&server_first);
                let client_final = with_nonce(final_msg, &nonce);
                match server.handle_client_final(&client_final) {
                    Ok(_) => assert!(server.is_authenticated() && server.client_key().is_some()),
                    Err(e) => {
                        assert!(!server.is_authenticated());
                        check_error(&e);
                    }
                }
            }
            Err(e) => check_error(&e),
        }
        // Out of order after either outcome: an error, not a panic.
        assert!(server.handle_client_final(final_msg).is_err() || server.is_authenticated());
    }
    if let Ok(password) = parse_password_message(data) {
        let secret = md5::md5_secret("app", PASSWORD);
        let _ = md5::verify_md5_response(&secret, [1, 2, 3, 4], password);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = ScramSecret::parse(text) {
            assert!(s.iterations >= 1);
            let _ = s.to_verifier();
        }
        let _ = md5::is_md5_secret(text);
        let _ = md5::md5_response_from_secret(text, [0, 0, 0, 0]);
    }
}

/// The proxy as client: `len, Authentication request body, len, server-first, then
/// server-final` (`%N` in server-first = the client's nonce).
pub fn scram_client(data: &[u8]) {
    let (request, rest) = split_prefixed(data);
    let (server_first, server_final) = split_prefixed(rest);
    match parse_auth_request(request) {
        Ok(AuthRequest::Sasl { mechanisms }) => {
            let _ = choose_mechanism(mechanisms.iter().copied());
        }
        Ok(AuthRequest::Md5Password { salt }) => {
            let _ = md5::md5_response_from_password("app", PASSWORD, salt);
        }
        Ok(_) => {}
        Err(e) => check_error(&e),
    }
    // A ClientKey login: no PBKDF2 per run, so the fuzzer stays fast; the verifier lets
    // the server signature be checked.
    let client_key = client_key();
    let Ok(mut client) = ScramClient::with_client_key_and_secret(client_key, secret()) else {
        panic!("the harness's own ClientKey is refused");
    };
    let first = client.client_first();
    let nonce = nonce_of(&first);
    match client.handle_server_first(&with_nonce(server_first, &nonce)) {
        Ok(_) => match client.handle_server_final(server_final) {
            Ok(()) => assert!(client.is_complete()),
            Err(e) => check_error(&e),
        },
        Err(e) => check_error(&e),
    }
    assert!(client.handle_server_first(server_first).is_err());
}

/// The ClientKey of [`secret`], as a [`ScramServer`] learns it from a successful login.
fn client_key() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut client = ScramClient::new(PASSWORD);
        let mut server = ScramServer::new(secret().clone());
        let first = client.client_first();
        let (mechanism, data) = ("SCRAM-SHA-256", &first[..]);
        let server_first = server
            .handle_client_first(mechanism, data)
            .expect("client-first");
        let client_final = client
            .handle_server_first(&server_first)
            .expect("server-first");
        server
            .handle_client_final(&client_final)
            .expect("client-final");
        server.client_key().expect("authenticated")
    })
}

/// Errors quote peer text shortened: an error message must stay small whatever was sent.
fn check_error(e: &AuthError) {
    assert!(e.to_string().len() < 1024, "oversized error: {e}");
}
