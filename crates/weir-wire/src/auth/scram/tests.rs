//! Known-answer tests: RFC 7677's vector and an exchange recorded between psql and
//! PostgreSQL 15, replayed through both roles; verifiers produced by PostgreSQL 15.

use super::*;

// RFC 7677 section 3.
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

// Recorded on the socket between psql (libpq 15) and PostgreSQL 15.18 for role `u`, created
// with `CREATE ROLE u LOGIN PASSWORD 'pencil'`; PG15_VERIFIER is its `pg_authid.rolpassword`.
const PG15_VERIFIER: &str = "SCRAM-SHA-256$4096:XlWvg1mhqwJXFOJ6j86iIA==$\
                             VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E=:\
                             vmyb7/bQNUphgC8D7rq52DDBm+LCMt4nIyPDakcdIAY=";
const PG15_CLIENT_NONCE: &str = "UPHYMDvKdt9fZAmPxfnTCsB+";
const PG15_SERVER_NONCE: &str = "U8gowoaWV/L3luOdZzsU0x/S";
const PG15_CLIENT_FIRST: &str = "n,,n=,r=UPHYMDvKdt9fZAmPxfnTCsB+";
const PG15_SERVER_FIRST: &str = "r=UPHYMDvKdt9fZAmPxfnTCsB+U8gowoaWV/L3luOdZzsU0x/S,\
                                 s=XlWvg1mhqwJXFOJ6j86iIA==,i=4096";
const PG15_CLIENT_FINAL: &str = "c=biws,r=UPHYMDvKdt9fZAmPxfnTCsB+U8gowoaWV/L3luOdZzsU0x/S,\
                                 p=Q4ZMsKdTIw0MVWVnSFn8YqMNNuS75/ahYu1SY35Q0s8=";
const PG15_SERVER_FINAL: &str = "v=Co+/+Vk8iTlQYFDeCgZRQV5vfo+rdPN9YNuJxw3y+/E=";

fn rfc_secret() -> ScramSecret {
    let salt = base64::decode(RFC_SALT).expect("RFC salt is base64");
    ScramSecret::from_password("pencil", &salt, 4096)
}

#[test]
fn rfc7677_client() {
    let mut client = ScramClient::with_nonce("pencil", "user", RFC_CLIENT_NONCE);
    assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
    let client_final = client
        .handle_server_first(RFC_SERVER_FIRST.as_bytes())
        .expect("server-first accepted");
    assert_eq!(String::from_utf8_lossy(&client_final), RFC_CLIENT_FINAL);
    client
        .handle_server_final(RFC_SERVER_FINAL.as_bytes())
        .expect("server signature verified");
    assert!(client.is_complete());
}

#[test]
fn rfc7677_server() {
    let mut server = ScramServer::with_nonce(rfc_secret(), RFC_SERVER_NONCE);
    let server_first = server
        .handle_client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .expect("client-first accepted");
    assert_eq!(String::from_utf8_lossy(&server_first), RFC_SERVER_FIRST);
    let server_final = server
        .handle_client_final(RFC_CLIENT_FINAL.as_bytes())
        .expect("proof verified");
    assert_eq!(String::from_utf8_lossy(&server_final), RFC_SERVER_FINAL);
    let client_key = server.client_key().expect("client key after success");
    assert_eq!(sha256(&client_key), rfc_secret().stored_key);
}

#[test]
fn postgres15_verifier_parses_and_matches_derivation() {
    let secret = ScramSecret::parse(PG15_VERIFIER).expect("PostgreSQL verifier parses");
    assert_eq!(secret.iterations, 4096);
    assert_eq!(secret.salt.len(), 16);
    let derived = ScramSecret::from_password("pencil", &secret.salt, secret.iterations);
    assert_eq!(derived, secret);
    assert_eq!(derived.to_verifier(), PG15_VERIFIER);
}

#[test]
fn postgres15_exchange_replayed_as_server() {
    let secret = ScramSecret::parse(PG15_VERIFIER).expect("verifier parses");
    let mut server = ScramServer::with_nonce(secret, PG15_SERVER_NONCE);
    let server_first = server
        .handle_client_first(SCRAM_SHA_256, PG15_CLIENT_FIRST.as_bytes())
        .expect("libpq client-first accepted");
    assert_eq!(String::from_utf8_lossy(&server_first), PG15_SERVER_FIRST);
    let server_final = server
        .handle_client_final(PG15_CLIENT_FINAL.as_bytes())
        .expect("libpq proof verified");
    assert_eq!(String::from_utf8_lossy(&server_final), PG15_SERVER_FINAL);
}

#[test]
fn postgres15_exchange_replayed_as_client() {
    let mut client = ScramClient::with_nonce("pencil", "", PG15_CLIENT_NONCE);
    assert_eq!(client.client_first(), PG15_CLIENT_FIRST.as_bytes());
    let client_final = client
        .handle_server_first(PG15_SERVER_FIRST.as_bytes())
        .expect("PostgreSQL server-first accepted");
    assert_eq!(String::from_utf8_lossy(&client_final), PG15_CLIENT_FINAL);
    client
        .handle_server_final(PG15_SERVER_FINAL.as_bytes())
        .expect("PostgreSQL signature verified");
}

#[test]
fn client_key_login_replays_the_recorded_proof() {
    // The key the proxy recovers from psql's proof reproduces that proof byte for byte.
    let secret = ScramSecret::parse(PG15_VERIFIER).expect("verifier parses");
    let mut server = ScramServer::with_nonce(secret.clone(), PG15_SERVER_NONCE);
    server
        .handle_client_first(SCRAM_SHA_256, PG15_CLIENT_FIRST.as_bytes())
        .expect("client-first");
    server
        .handle_client_final(PG15_CLIENT_FINAL.as_bytes())
        .expect("client-final");
    let key = server.client_key().expect("client key");
    let mut client = ScramClient::with_client_key_and_secret(key, &secret).expect("key fits");
    client.set_nonce("", PG15_CLIENT_NONCE);
    let client_final = client
        .handle_server_first(PG15_SERVER_FIRST.as_bytes())
        .expect("server-first");
    assert_eq!(String::from_utf8_lossy(&client_final), PG15_CLIENT_FINAL);
    client
        .handle_server_final(PG15_SERVER_FINAL.as_bytes())
        .expect("signature verified with the verifier's ServerKey");
}

/// Verifiers PostgreSQL 15 stored for non-ASCII passwords, checking SASLprep and its fallback.
#[test]
fn saslprep_matches_postgresql() {
    let cases = [
        // U+00AD SOFT HYPHEN is mapped to nothing: the key is derived from "IX".
        (
            "I\u{00AD}X",
            "SCRAM-SHA-256$4096:AaE1xRZKIopIEUUB6QlcEg==$\
             67g17fazaZVupOnO8dCNCNgL+jmNl991bQgsnJNfLB4=:\
             /2WJbDW8y2lG61KqwBDSuPAca2lzLpdYefVmTQHSh8g=",
        ),
        // U+2168 ROMAN NUMERAL NINE normalizes (NFKC) to "IX".
        (
            "\u{2168}",
            "SCRAM-SHA-256$4096:WdHc0T5W2nlsZMrAEc8VWg==$\
             mKJhytDEXKBhqjQcbKj0FDxKXMQCewsUP2o3siWmHtM=:\
             4wi5izhwvvqlF/r3THgZSe5hlNV4daCJsNUgTaEG0CQ=",
        ),
        // A password that SASLprep maps to nothing is used raw.
        (
            "\u{00AD}",
            "SCRAM-SHA-256$4096:G98WTttIFDSnnfvTCm5s/g==$\
             ll+fzE2L0t7z6j9cOfCU6qXdLAhKu5AeZVK2V1zioko=:\
             RHWY6I59qDStx044/z8IrKxCw/S1JI4qiXl1Oj+wBZs=",
        ),
    ];
    for (password, verifier) in cases {
        let stored = ScramSecret::parse(verifier).expect("verifier parses");
        let derived = ScramSecret::from_password(password, &stored.salt, stored.iterations);
        assert_eq!(derived, stored, "password {password:?}");
    }
    // A prohibited character (U+0007 BELL) makes SASLprep fail: the raw password is used.
    assert_eq!(normalize_password("a\u{7}b"), "a\u{7}b");
    assert_eq!(normalize_password(""), "");
}

#[test]
fn verifier_round_trip_and_rejections() {
    let secret = ScramSecret::from_password("pencil", b"0123456789abcdef", 4096);
    assert_eq!(
        ScramSecret::parse(&secret.to_verifier()),
        Ok(secret.clone())
    );
    assert_eq!(ScramSecret::from_password("x", b"s", 0).iterations, 1);
    let generated = ScramSecret::generate("pencil");
    assert_eq!(generated.iterations, DEFAULT_ITERATIONS);
    assert_eq!(generated.salt.len(), 16);
    let debug = format!("{generated:?}");
    assert!(debug.contains("redacted") && !debug.contains(&b64(&generated.stored_key)));

    let bad = [
        "",
        "md5abc",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:XlWvg1mhqwJXFOJ6j86iIA==",
        "SCRAM-SHA-256$0:c2FsdA==$VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E=:vmyb7/bQNUphgC8D7rq52DDBm+LCMt4nIyPDakcdIAY=",
        "SCRAM-SHA-256$+1:c2FsdA==$VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E=:vmyb7/bQNUphgC8D7rq52DDBm+LCMt4nIyPDakcdIAY=",
        "SCRAM-SHA-256$4294967295:c2FsdA==$VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E=:vmyb7/bQNUphgC8D7rq52DDBm+LCMt4nIyPDakcdIAY=",
        "SCRAM-SHA-256$4096:$VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E=:vmyb7/bQNUphgC8D7rq52DDBm+LCMt4nIyPDakcdIAY=",
        "SCRAM-SHA-256$4096:c2FsdA==$VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E:vmyb7/bQNUphgC8D7rq52DDBm+LCMt4nIyPDakcdIAY=",
        "SCRAM-SHA-256$4096:c2FsdA==$VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E=:dG9vc2hvcnQ=",
        "SCRAM-SHA-256$4096:c2FsdA==$VEOogo5Rsq5fzKTwIyzg0aM5F+RAtuGyI55/n4HNI6E=vmyb7/bQNUphgC8D7rq52DDBm+LCMt4nIyPDakcdIAY=",
    ];
    for verifier in bad {
        let err = ScramSecret::parse(verifier).expect_err(verifier);
        assert!(
            matches!(err, AuthError::InvalidSecret(_)),
            "{verifier}: {err:?}"
        );
        // Error messages never echo key material.
        assert!(!err.to_string().contains("VEOogo5"), "{err}");
    }
    let long = format!("SCRAM-SHA-256$4096:{}$x:y", "A".repeat(2000));
    assert!(ScramSecret::parse(&long).is_err());
}

#[test]
fn mechanism_choice() {
    assert_eq!(
        choose_mechanism([SCRAM_SHA_256_PLUS, SCRAM_SHA_256]),
        Ok(SCRAM_SHA_256)
    );
    let Err(AuthError::UnsupportedMechanism(msg)) = choose_mechanism([SCRAM_SHA_256_PLUS]) else {
        panic!("PLUS alone must be refused");
    };
    assert!(msg.contains("channel binding"), "{msg}");
    assert!(matches!(
        choose_mechanism(["OAUTHBEARER"]),
        Err(AuthError::UnsupportedMechanism(m)) if m.contains("OAUTHBEARER")
    ));
    assert!(choose_mechanism([]).is_err());
}

#[test]
fn nonce_and_attribute_helpers() {
    assert!(valid_nonce("abc~!"));
    assert!(!valid_nonce(""));
    assert!(!valid_nonce("a,b"));
    assert!(!valid_nonce("a b"));
    assert!(!valid_nonce("\u{e9}"));
    assert!(!valid_nonce(&"a".repeat(MAX_NONCE_LEN + 1)));
    assert_eq!(new_nonce().len(), 24);
    assert!(valid_nonce(&new_nonce()));
    assert_eq!(parse_iterations("4096"), Some(4096));
    for bad in ["", "0", "-1", "+1", " 1", "1 ", "99999999999", "4294967296"] {
        assert_eq!(parse_iterations(bad), None, "{bad:?}");
    }
    assert!(decode_salt("").is_none());
    assert!(decode_salt(&base64::encode(&[0u8; MAX_SALT_LEN])).is_some());
    assert!(decode_salt(&base64::encode(&[0u8; MAX_SALT_LEN + 1])).is_none());
}

#[test]
fn plus_is_offered_and_accepted_only_with_channel_binding() {
    let secret = ScramSecret::generate("pw");
    let plain = ScramServer::new(secret.clone());
    assert_eq!(plain.mechanisms(), &[SCRAM_SHA_256]);
    let mut plain = ScramServer::new(secret.clone());
    assert!(matches!(
        plain.handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc"),
        Err(AuthError::UnsupportedMechanism(_))
    ));

    let bound = ScramServer::with_channel_binding(secret.clone(), vec![7; 32]);
    assert_eq!(bound.mechanisms(), &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
    // Over TLS a "y" client saw no -PLUS although we offered it: a downgrade.
    let mut bound = ScramServer::with_channel_binding(secret.clone(), vec![7; 32]);
    assert!(bound
        .handle_client_first(SCRAM_SHA_256, b"y,,n=,r=abc")
        .is_err());
    // "p=" with the plain mechanism, or -PLUS without "p=": refused.
    let mut bound = ScramServer::with_channel_binding(secret.clone(), vec![7; 32]);
    assert!(bound
        .handle_client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc")
        .is_err());
    let mut bound = ScramServer::with_channel_binding(secret.clone(), vec![7; 32]);
    assert!(bound
        .handle_client_first(SCRAM_SHA_256_PLUS, b"n,,n=,r=abc")
        .is_err());
    let mut bound = ScramServer::with_channel_binding(secret.clone(), vec![7; 32]);
    assert!(bound
        .handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-unique,,n=,r=abc")
        .is_err());

    // The accepted -PLUS exchange: client-final must carry the header and the binding data.
    let mut bound = ScramServer::with_channel_binding(secret, vec![7; 32]);
    let first = bound
        .handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc")
        .expect("client-first accepted");
    let first = String::from_utf8(first).expect("utf8");
    let nonce = first
        .split(',')
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .expect("nonce");
    // The binding data of another connection (a relayed exchange) does not match.
    let mut wrong = b"p=tls-server-end-point,,".to_vec();
    wrong.extend_from_slice(&[8; 32]);
    let fin = format!("c={},r={nonce},p={}", b64(&wrong), b64(&[0u8; 32]));
    let e = bound.handle_client_final(fin.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("channel-binding"), "{e}");
}

#[test]
fn end_point_hash_follows_the_certificate_signature_algorithm() {
    // A minimal DER shape: SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID }, BIT STRING }.
    let cert = |oid: &[u8]| {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut der = vec![0x30, body.len() as u8];
        der.extend_from_slice(&body);
        der
    };
    let ecdsa_sha256 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
    assert_eq!(tls_server_end_point(&ecdsa_sha256).len(), 32);
    let ecdsa_sha384 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]);
    assert_eq!(tls_server_end_point(&ecdsa_sha384).len(), 48);
    let rsa_sha512 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]);
    assert_eq!(tls_server_end_point(&rsa_sha512).len(), 64);
    // Garbage: SHA-256 of whatever it is, no panic.
    assert_eq!(tls_server_end_point(&[0x30, 0x85, 0xff]).len(), 32);
}

/// The memo answers what the derivation would, for repeats and for near misses (another
/// salt, iteration count or password), and stays bounded.
#[test]
fn remembered_salted_passwords_match_the_derivation() {
    let cases: [(&str, &[u8], u32); 4] = [
        ("pencil", b"salt-one", 64),
        ("pencil", b"salt-two", 64),
        ("pencil", b"salt-one", 63),
        ("pencil!", b"salt-one", 64),
    ];
    for (password, salt, iterations) in cases {
        let derived = derive_salted_password(password, salt, iterations);
        assert_eq!(salted_password(password, salt, iterations), derived);
        assert_eq!(
            salted_password(password, salt, iterations),
            derived,
            "remembered"
        );
    }
    for i in 0..2 * SALTED_MEMO as u32 {
        salted_password("p", &i.to_be_bytes(), 2);
    }
    assert_eq!(
        salted_password("pencil", b"salt-one", 64),
        derive_salted_password("pencil", b"salt-one", 64),
        "forgotten and derived again"
    );
}
