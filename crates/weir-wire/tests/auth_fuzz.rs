//! Property tests: no input makes an auth parser or SCRAM state machine panic, and valid
//! messages survive only the mutations that keep them valid.

use proptest::prelude::*;
use weir_wire::auth::md5::{is_md5_secret, md5_response_from_secret, verify_md5_response};
use weir_wire::auth::messages::{
    parse_auth_request, parse_password_message, parse_sasl_initial_response,
};
use weir_wire::auth::scram::{ScramClient, ScramSecret, ScramServer, SCRAM_SHA_256};
use weir_wire::auth::AuthError;

fn secret() -> ScramSecret {
    ScramSecret::from_password("pencil", b"fuzz salt", 2)
}

/// Bytes biased towards SCRAM syntax, so the fuzzer gets past the first checks.
fn scram_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"n,,".to_vec()),
        Just(b"y,,".to_vec()),
        Just(b"p=x,,".to_vec()),
        Just(b"n=".to_vec()),
        Just(b"r=".to_vec()),
        Just(b"s=".to_vec()),
        Just(b"i=".to_vec()),
        Just(b"c=biws".to_vec()),
        Just(b"p=".to_vec()),
        Just(b"v=".to_vec()),
        Just(b"e=".to_vec()),
        Just(b"m=".to_vec()),
        Just(b",".to_vec()),
        Just(b"=".to_vec()),
        Just(b"4096".to_vec()),
        Just(b"c2FsdA==".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..12).prop_map(|parts| parts.concat())
}

/// Applies one mutation (flip, truncate or insert) to a valid message.
fn mutate(mut data: Vec<u8>, pos: usize, byte: u8, kind: u8) -> Vec<u8> {
    if data.is_empty() {
        return vec![byte];
    }
    let pos = pos % data.len();
    match kind % 3 {
        0 => data[pos] ^= byte.max(1),
        1 => data.truncate(pos),
        _ => data.insert(pos, byte),
    }
    data
}

proptest! {
    #[test]
    fn message_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_auth_request(&body);
        let _ = parse_sasl_initial_response(&body);
        let _ = parse_password_message(&body);
    }

    #[test]
    fn auth_request_parser_never_panics_on_known_codes(
        code in prop_oneof![Just(0i32), Just(3), Just(5), Just(10), Just(11), Just(12), any::<i32>()],
        rest in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(&rest);
        let _ = parse_auth_request(&body);
    }

    #[test]
    fn secret_parsers_never_panic(s in ".{0,200}", salt in any::<[u8; 4]>(), response in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = ScramSecret::parse(&s);
        let _ = ScramSecret::parse(&format!("SCRAM-SHA-256${s}"));
        let _ = is_md5_secret(&s);
        let _ = md5_response_from_secret(&s, salt);
        prop_assert!(!verify_md5_response(&s, salt, &response) || is_md5_secret(&s));
    }

    #[test]
    fn scram_server_never_panics(
        mechanism in prop_oneof![Just(SCRAM_SHA_256.to_owned()), ".{0,20}"],
        first in scram_bytes(),
        last in scram_bytes(),
    ) {
        let mut server = ScramServer::new(secret());
        let _ = server.handle_client_first(&mechanism, &first);
        let result = server.handle_client_final(&last);
        // Random bytes can never carry a valid proof.
        prop_assert!(result.is_err());
        prop_assert!(server.client_key().is_none());
    }

    #[test]
    fn scram_server_never_panics_after_a_valid_first(last in scram_bytes()) {
        let client = ScramClient::new("pencil");
        let mut server = ScramServer::new(secret());
        server.handle_client_first(SCRAM_SHA_256, &client.client_first()).expect("valid");
        prop_assert!(server.handle_client_final(&last).is_err());
    }

    #[test]
    fn scram_client_never_panics(first in scram_bytes(), last in scram_bytes()) {
        let mut client = ScramClient::new("pencil");
        let _ = client.handle_server_first(&first);
        let _ = client.handle_server_final(&last);
        prop_assert!(!client.is_complete());
    }

    #[test]
    fn scram_client_never_panics_on_near_valid_server_first(
        suffix in "[!-+--~]{0,40}",
        salt in prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..40).prop_map(|raw| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(raw)
            }),
            "[A-Za-z0-9+/=]{0,40}",
        ],
        iterations in "[0-9]{0,12}",
        extra in prop_oneof![3 => Just(String::new()), 1 => ",[a-z]=[^,]{0,10}", 1 => ".{0,20}"],
        last in scram_bytes(),
    ) {
        let mut client = ScramClient::new("pencil");
        let first = String::from_utf8(client.client_first()).expect("UTF-8");
        let nonce = first.trim_start_matches("n,,n=,r=");
        // Keep PBKDF2 cheap in debug builds: cap the iteration count this test can reach.
        let iterations: String = iterations.chars().take(3).collect();
        let message = format!("r={nonce}{suffix},s={salt},i={iterations}{extra}");
        let _ = client.handle_server_first(message.as_bytes());
        // No random bytes carry the right server signature.
        prop_assert!(client.handle_server_final(&last).is_err());
    }

    #[test]
    fn mutated_exchanges_fail_cleanly(
        pos in any::<usize>(), byte in any::<u8>(), kind in any::<u8>(), step in 0u8..4,
    ) {
        let mut client = ScramClient::new("pencil");
        let mut server = ScramServer::new(secret());
        let outcome = (|| -> Result<(), AuthError> {
            let mut m = client.client_first();
            if step == 0 { m = mutate(m, pos, byte, kind); }
            let mut m = server.handle_client_first(SCRAM_SHA_256, &m)?;
            if step == 1 { m = mutate(m, pos, byte, kind); }
            let mut m = client.handle_server_first(&m)?;
            if step == 2 { m = mutate(m, pos, byte, kind); }
            let mut m = server.handle_client_final(&m)?;
            if step == 3 { m = mutate(m, pos, byte, kind); }
            client.handle_server_final(&m)
        })();
        // A mutation may be harmless (e.g. inside an ignored username); success must then be
        // mutual, and failure must leave the client unauthenticated.
        match outcome {
            Ok(()) => prop_assert!(client.is_complete() && server.is_authenticated()),
            Err(_) => prop_assert!(!client.is_complete()),
        }
    }
}
