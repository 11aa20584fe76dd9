//! SCRAM-SHA-256 exchanges between our own client and server roles, through the public API
//! and the wire codecs: success, wrong password, forged server, refused channel binding and
//! hostile or out-of-order messages.

use bytes::BytesMut;
use weir_wire::auth::messages::{
    parse_auth_request, parse_sasl_initial_response, put_authentication_sasl_continue,
    put_sasl_initial_response, AuthRequest,
};
use weir_wire::auth::scram::{
    ScramClient, ScramSecret, ScramServer, MAX_CLIENT_FINAL_LEN, MAX_CLIENT_FIRST_LEN,
    SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use weir_wire::auth::AuthError;

/// A cheap secret: tests need correctness, not PBKDF2 cost.
fn secret(password: &str) -> ScramSecret {
    ScramSecret::from_password(password, b"some salt bytes!", 16)
}

/// Runs a whole exchange; returns the server (for its client key) and the client's verdict.
fn exchange(mut client: ScramClient, secret: ScramSecret) -> (ScramServer, Result<(), AuthError>) {
    let mut server = ScramServer::new(secret);
    let result = (|| {
        let server_first = server.handle_client_first(SCRAM_SHA_256, &client.client_first())?;
        let client_final = client.handle_server_first(&server_first)?;
        let server_final = server.handle_client_final(&client_final)?;
        client.handle_server_final(&server_final)
    })();
    (server, result)
}

#[test]
fn right_password_round_trip() {
    let (server, result) = exchange(ScramClient::new("pencil"), secret("pencil"));
    assert_eq!(result, Ok(()));
    assert!(server.is_authenticated());
    assert!(server.client_key().is_some());
}

#[test]
fn round_trip_through_wire_frames() {
    let mut client = ScramClient::new("pencil");
    let mut server = ScramServer::new(secret("pencil"));
    let mut buf = BytesMut::new();
    put_sasl_initial_response(&mut buf, SCRAM_SHA_256, &client.client_first());
    let (mechanism, data) = parse_sasl_initial_response(&buf[5..]).expect("initial response");
    let server_first = server
        .handle_client_first(mechanism, data)
        .expect("client-first");
    let mut buf = BytesMut::new();
    put_authentication_sasl_continue(&mut buf, &server_first);
    let Ok(AuthRequest::SaslContinue(data)) = parse_auth_request(&buf[5..]) else {
        panic!("expected SASLContinue");
    };
    let client_final = client.handle_server_first(data).expect("server-first");
    let server_final = server.handle_client_final(&client_final).expect("proof");
    client
        .handle_server_final(&server_final)
        .expect("signature");
    assert!(client.is_complete());
}

#[test]
fn unicode_and_empty_passwords_round_trip() {
    for password in ["pässwörd", "I\u{00AD}X", "\u{2168}", "", "a\u{7}b"] {
        let (_, result) = exchange(ScramClient::new(password), secret(password));
        assert_eq!(result, Ok(()), "{password:?}");
    }
    // SASLprep makes these equivalent, as in PostgreSQL.
    let (_, result) = exchange(ScramClient::new("\u{2168}"), secret("IX"));
    assert_eq!(result, Ok(()));
}

#[test]
fn client_key_logs_in_against_the_same_secret() {
    let stored = secret("pencil");
    let (server, result) = exchange(ScramClient::new("pencil"), stored.clone());
    assert_eq!(result, Ok(()));
    let key = server.client_key().expect("client key");

    // Key alone: the proof is accepted; the server signature is only checked for syntax.
    let (server, result) = exchange(ScramClient::with_client_key(key), stored.clone());
    assert_eq!(result, Ok(()));
    assert_eq!(server.client_key(), Some(key));

    // Key plus verifier: the server signature is verified too.
    let client = ScramClient::with_client_key_and_secret(key, &stored).expect("key fits");
    assert_eq!(exchange(client, stored.clone()).1, Ok(()));

    // A key for another secret does not fit the verifier, and fails at the server.
    let other = secret("other");
    assert!(matches!(
        ScramClient::with_client_key_and_secret(key, &other),
        Err(AuthError::InvalidSecret(_))
    ));
    let (_, result) = exchange(ScramClient::with_client_key(key), other);
    assert_eq!(result, Err(AuthError::InvalidPassword));

    // Same password but re-salted on the server: a clear stale-verifier error.
    let resalted = ScramSecret::from_password("pencil", b"another salt", 16);
    let client = ScramClient::with_client_key_and_secret(key, &stored).expect("key fits");
    assert!(matches!(
        exchange(client, resalted).1,
        Err(AuthError::InvalidSecret(_))
    ));
}

#[test]
fn wrong_password_is_invalid_password() {
    let (server, result) = exchange(ScramClient::new("pencil2"), secret("pencil"));
    assert_eq!(result, Err(AuthError::InvalidPassword));
    assert!(!server.is_authenticated());
    assert_eq!(server.client_key(), None);
}

#[test]
fn forged_server_signature_is_detected() {
    let mut client = ScramClient::new("pencil");
    let mut server = ScramServer::new(secret("pencil"));
    let server_first = server
        .handle_client_first(SCRAM_SHA_256, &client.client_first())
        .expect("client-first");
    let client_final = client
        .handle_server_first(&server_first)
        .expect("server-first");
    let mut server_final = server.handle_client_final(&client_final).expect("proof");
    // Flip one base64 char of the signature.
    let i = server_final.len() - 5;
    server_final[i] = if server_final[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        client.handle_server_final(&server_final),
        Err(AuthError::ServerSignatureMismatch)
    );
    assert!(!client.is_complete());

    // A server that only knows a different secret cannot fake success either.
    let mut client = ScramClient::new("pencil");
    let mut impostor = ScramServer::new(secret("guess"));
    let server_first = impostor
        .handle_client_first(SCRAM_SHA_256, &client.client_first())
        .expect("client-first");
    client
        .handle_server_first(&server_first)
        .expect("server-first");
    let fake = format!("v={}", "A".repeat(43) + "=");
    assert_eq!(
        client.handle_server_final(fake.as_bytes()),
        Err(AuthError::ServerSignatureMismatch)
    );
}

#[test]
fn server_errors_are_reported() {
    for (message, expected) in [
        (&b"e=invalid-proof"[..], AuthError::InvalidPassword),
        (
            b"e=other-error",
            AuthError::Protocol("the server reported a SCRAM error: other-error".into()),
        ),
    ] {
        let mut client = ScramClient::new("pencil");
        let mut server = ScramServer::new(secret("pencil"));
        let first = server
            .handle_client_first(SCRAM_SHA_256, &client.client_first())
            .expect("client-first");
        client.handle_server_first(&first).expect("server-first");
        assert_eq!(client.handle_server_final(message), Err(expected));
    }
}

#[test]
fn channel_binding_is_refused_clearly() {
    let mut server = ScramServer::new(secret("pencil"));
    let err = server
        .handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc")
        .expect_err("PLUS refused");
    assert!(
        matches!(&err, AuthError::UnsupportedMechanism(m) if m.contains("channel binding")),
        "{err:?}"
    );

    let mut server = ScramServer::new(secret("pencil"));
    let err = server
        .handle_client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc")
        .expect_err("p= refused");
    assert!(
        matches!(&err, AuthError::Protocol(m) if m.contains("channel binding")),
        "{err:?}"
    );

    let mut server = ScramServer::new(secret("pencil"));
    assert!(matches!(
        server.handle_client_first("PLAIN", b"n,,n=,r=abc"),
        Err(AuthError::UnsupportedMechanism(_))
    ));
}

#[test]
fn gs2_flag_y_is_accepted_and_must_be_echoed() {
    let stored = secret("pencil");
    let mut server = ScramServer::new(stored.clone());
    let first = server
        .handle_client_first(SCRAM_SHA_256, b"y,,n=,r=clientnonce")
        .expect("y accepted");
    let first = String::from_utf8(first).expect("UTF-8");
    let nonce = first
        .split(',')
        .next()
        .expect("r=")
        .trim_start_matches("r=");
    // "biws" encodes "n,,", but the client said "y,,": channel-binding attribute mismatch.
    let final_msg = format!("c=biws,r={nonce},p={}", "A".repeat(43) + "=");
    assert!(matches!(
        server.handle_client_final(final_msg.as_bytes()),
        Err(AuthError::Protocol(m)) if m.contains("channel-binding")
    ));
}

#[test]
fn hostile_client_first_messages_are_refused() {
    let long_nonce = format!("n,,n=,r={}", "a".repeat(300));
    let too_long = format!("n,,n=,r={}", "a".repeat(MAX_CLIENT_FIRST_LEN));
    let cases: Vec<&[u8]> = vec![
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=,r=abc",
        b"n,a=admin,n=,r=abc",
        b"n,,m=ext,n=,r=abc",
        b"n,,n=,r=",
        b"n,,n=,r=a b",
        b"n,,n=,r=\x7f",
        b"n,,n=",
        b"n,,r=abc",
        b"n,,n=,r=abc,bogus",
        b"n,,n=,r=abc,=x",
        b"n,,n=,r=\xff\xfe",
        long_nonce.as_bytes(),
        too_long.as_bytes(),
    ];
    for data in cases {
        let mut server = ScramServer::new(secret("pencil"));
        let result = server.handle_client_first(SCRAM_SHA_256, data);
        assert!(
            matches!(result, Err(AuthError::Protocol(_))),
            "{:?} gave {result:?}",
            String::from_utf8_lossy(data)
        );
        // A failed exchange stays failed.
        assert!(server.handle_client_final(b"c=biws,r=abc,p=x").is_err());
    }
    // Extensions after the nonce are ignored, as PostgreSQL does.
    let mut server = ScramServer::new(secret("pencil"));
    assert!(server
        .handle_client_first(SCRAM_SHA_256, b"n,,n=someone,r=abc,x=ext")
        .is_ok());
}

#[test]
fn hostile_client_final_messages_are_refused() {
    type Mutate = fn(&str, &str) -> String;
    let cases: [Mutate; 10] = [
        |_, _| String::new(),
        |nonce, _| format!("c=biws,r={nonce}"),
        |nonce, proof| format!("c=eSws,r={nonce},p={proof}"),
        |nonce, proof| format!("c=biws,r={nonce}x,p={proof}"),
        |_, proof| format!("c=biws,r=other,p={proof}"),
        |nonce, proof| format!("r={nonce},c=biws,p={proof}"),
        |nonce, _| format!("c=biws,r={nonce},p=short"),
        |nonce, proof| format!("c=biws,r={nonce},p={proof},x=after"),
        |nonce, proof| format!("c=biws,r={nonce},bad,p={proof}"),
        |nonce, proof| {
            let pad = "a".repeat(MAX_CLIENT_FINAL_LEN);
            format!("c=biws,r={nonce},x={pad},p={proof}")
        },
    ];
    for mutate in cases {
        let mut client = ScramClient::new("pencil");
        let mut server = ScramServer::new(secret("pencil"));
        let first = server
            .handle_client_first(SCRAM_SHA_256, &client.client_first())
            .expect("client-first");
        let good = client.handle_server_first(&first).expect("server-first");
        let good = String::from_utf8(good).expect("UTF-8");
        let (without_proof, proof) = good.rsplit_once(",p=").expect("proof");
        let nonce = without_proof.trim_start_matches("c=biws,r=");
        let data = mutate(nonce, proof);
        let result = server.handle_client_final(data.as_bytes());
        assert!(
            matches!(result, Err(AuthError::Protocol(_))),
            "{data:?} gave {result:?}"
        );
        assert_eq!(server.client_key(), None);
    }
    // Extensions between the nonce and the proof are signed and otherwise ignored.
    let mut client = ScramClient::new("pencil");
    let mut server = ScramServer::new(secret("pencil"));
    let first = server
        .handle_client_first(SCRAM_SHA_256, &client.client_first())
        .expect("client-first");
    let good = client.handle_server_first(&first).expect("server-first");
    assert!(server.handle_client_final(&good).is_ok());
    assert!(
        server.handle_client_final(&good).is_err(),
        "no replay on the same state"
    );
}

#[test]
fn hostile_server_first_messages_are_refused() {
    let client = ScramClient::new("pencil");
    let first = String::from_utf8(client.client_first()).expect("UTF-8");
    let nonce = first.trim_start_matches("n,,n=,r=");
    let cases = [
        String::new(),
        format!("r={nonce},s=c2FsdA==,i=4096,x"),
        format!("m=ext,r={nonce}srv,s=c2FsdA==,i=4096"),
        format!("r={nonce},s=c2FsdA==,i=4096"), // no server part
        format!("r=X{nonce}srv,s=c2FsdA==,i=4096"),
        format!("r={nonce}s v,s=c2FsdA==,i=4096"),
        format!("r={nonce}srv,s=,i=4096"),
        format!("r={nonce}srv,s=!!!,i=4096"),
        format!("r={nonce}srv,s={},i=4096", "QUFB".repeat(100)),
        format!("r={nonce}srv,s=c2FsdA==,i=0"),
        format!("r={nonce}srv,s=c2FsdA==,i=-1"),
        format!("r={nonce}srv,s=c2FsdA==,i=10000001"),
        format!("r={nonce}srv,s=c2FsdA==,i=2147483647"),
        format!("r={nonce}srv,s=c2FsdA==,i=99999999999999999999"),
        format!("r={nonce}srv,s=c2FsdA=="),
        format!("r={nonce}srv,i=4096,s=c2FsdA=="),
        format!("r={nonce}{},s=c2FsdA==,i=1", "a".repeat(300)),
        format!("r={nonce}srv,s=c2FsdA==,i=1,{}", "x=".repeat(600)),
    ];
    for data in &cases {
        let mut client = ScramClient::new("pencil");
        // Give each fresh client the nonce the case was built for.
        let data = data.replace(nonce, &nonce_of(&client));
        let result = client.handle_server_first(data.as_bytes());
        assert!(
            matches!(result, Err(AuthError::Protocol(_))),
            "{data:?} gave {result:?}"
        );
        assert!(client.handle_server_final(b"v=x").is_err());
    }
}

#[test]
fn out_of_order_calls_are_refused() {
    let mut server = ScramServer::new(secret("pencil"));
    assert!(server.handle_client_final(b"c=biws,r=a,p=b").is_err());
    let mut client = ScramClient::new("pencil");
    assert!(client.handle_server_final(b"v=abc").is_err());
    let mut server = ScramServer::new(secret("pencil"));
    let first = ScramClient::new("pencil").client_first();
    assert!(server.handle_client_first(SCRAM_SHA_256, &first).is_ok());
    assert!(server.handle_client_first(SCRAM_SHA_256, &first).is_err());
}

fn nonce_of(client: &ScramClient) -> String {
    let first = String::from_utf8(client.client_first()).expect("UTF-8");
    first.trim_start_matches("n,,n=,r=").to_owned()
}
