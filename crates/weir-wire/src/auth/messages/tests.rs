//! Byte layouts checked against frames PostgreSQL 15 and psql exchanged, plus malformed bodies.

use super::*;

/// Splits a built frame into (tag, body) after checking its length field.
fn body_of(frame: &[u8]) -> (u8, &[u8]) {
    let (&tag, rest) = frame.split_first().expect("tag");
    let (len, body) = rest.split_first_chunk::<4>().expect("length");
    assert_eq!(i32::from_be_bytes(*len) as usize, body.len() + 4);
    (tag, body)
}

#[test]
fn builders_match_recorded_postgres_frames() {
    let mut buf = BytesMut::new();
    put_authentication_sasl(&mut buf, &["SCRAM-SHA-256"]);
    assert_eq!(
        &buf[..],
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"
    );

    let mut buf = BytesMut::new();
    put_sasl_initial_response(
        &mut buf,
        "SCRAM-SHA-256",
        b"n,,n=,r=UPHYMDvKdt9fZAmPxfnTCsB+",
    );
    assert_eq!(
        &buf[..],
        b"p\x00\x00\x006SCRAM-SHA-256\x00\x00\x00\x00 n,,n=,r=UPHYMDvKdt9fZAmPxfnTCsB+"
    );

    let mut buf = BytesMut::new();
    put_authentication_md5(&mut buf, [0x7d, 0xdb, 0x71, 0x4b]);
    assert_eq!(
        &buf[..],
        b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x7d\xdb\x71\x4b"
    );

    let mut buf = BytesMut::new();
    put_password_message(&mut buf, b"md5f54cadd45eaa45b3a34f46e33fd5f150");
    assert_eq!(
        &buf[..],
        b"p\x00\x00\x00(md5f54cadd45eaa45b3a34f46e33fd5f150\x00"
    );

    let mut buf = BytesMut::new();
    put_authentication_ok(&mut buf);
    assert_eq!(&buf[..], b"R\x00\x00\x00\x08\x00\x00\x00\x00");
}

#[test]
fn round_trips() {
    let mut buf = BytesMut::new();
    put_authentication_ok(&mut buf);
    assert_eq!(parse_auth_request(body_of(&buf).1), Ok(AuthRequest::Ok));

    let mut buf = BytesMut::new();
    put_authentication_cleartext(&mut buf);
    assert_eq!(
        parse_auth_request(body_of(&buf).1),
        Ok(AuthRequest::CleartextPassword)
    );

    let mut buf = BytesMut::new();
    put_authentication_md5(&mut buf, [1, 2, 3, 4]);
    assert_eq!(
        parse_auth_request(body_of(&buf).1),
        Ok(AuthRequest::Md5Password { salt: [1, 2, 3, 4] })
    );

    let mut buf = BytesMut::new();
    put_authentication_sasl(&mut buf, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
    assert_eq!(
        parse_auth_request(body_of(&buf).1),
        Ok(AuthRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
        })
    );

    let mut buf = BytesMut::new();
    put_authentication_sasl_continue(&mut buf, b"r=abc,s=c2FsdA==,i=1");
    assert_eq!(
        parse_auth_request(body_of(&buf).1),
        Ok(AuthRequest::SaslContinue(b"r=abc,s=c2FsdA==,i=1"))
    );

    let mut buf = BytesMut::new();
    put_authentication_sasl_final(&mut buf, b"v=xyz");
    assert_eq!(
        parse_auth_request(body_of(&buf).1),
        Ok(AuthRequest::SaslFinal(b"v=xyz"))
    );

    let mut buf = BytesMut::new();
    put_sasl_initial_response(&mut buf, "SCRAM-SHA-256", b"n,,n=,r=x");
    let (tag, body) = body_of(&buf);
    assert_eq!(tag, b'p');
    assert_eq!(
        parse_sasl_initial_response(body),
        Ok(("SCRAM-SHA-256", &b"n,,n=,r=x"[..]))
    );

    let mut buf = BytesMut::new();
    put_sasl_response(&mut buf, b"c=biws");
    assert_eq!(body_of(&buf), (b'p', &b"c=biws"[..]));

    let mut buf = BytesMut::new();
    put_password_message(&mut buf, b"pencil");
    assert_eq!(parse_password_message(body_of(&buf).1), Ok(&b"pencil"[..]));
    assert_eq!(parse_password_message(b"\0"), Ok(&b""[..]));
}

#[test]
fn other_auth_codes_are_reported() {
    assert_eq!(
        parse_auth_request(&7i32.to_be_bytes()),
        Ok(AuthRequest::Other(7))
    );
    assert_eq!(
        parse_auth_request(&(-1i32).to_be_bytes()),
        Ok(AuthRequest::Other(-1))
    );
}

#[test]
fn malformed_auth_requests_are_errors() {
    let bad: &[&[u8]] = &[
        b"",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x00\x00",                 // Ok with trailing byte
        b"\x00\x00\x00\x03x",                    // Cleartext with trailing byte
        b"\x00\x00\x00\x05\x01\x02\x03",         // md5 salt too short
        b"\x00\x00\x00\x05\x01\x02\x03\x04\x05", // md5 salt too long
        b"\x00\x00\x00\x0a",                     // SASL without list
        b"\x00\x00\x00\x0aSCRAM-SHA-256",        // unterminated name
        b"\x00\x00\x00\x0aSCRAM-SHA-256\x00",    // unterminated list
        b"\x00\x00\x00\x0a\x00",                 // empty list
        b"\x00\x00\x00\x0aA\x00\x00junk",        // bytes after the list
        b"\x00\x00\x00\x0a\xff\x00\x00",         // non-UTF-8 name
    ];
    for body in bad {
        assert!(
            matches!(parse_auth_request(body), Err(AuthError::Protocol(_))),
            "{body:?}"
        );
    }
    let mut many = 10i32.to_be_bytes().to_vec();
    for _ in 0..=MAX_SASL_MECHANISMS {
        many.extend_from_slice(b"M\0");
    }
    many.push(0);
    assert!(parse_auth_request(&many).is_err());
    let mut huge = 11i32.to_be_bytes().to_vec();
    huge.resize(MAX_AUTH_MESSAGE_LEN + 1, b'x');
    assert!(parse_auth_request(&huge).is_err());
}

#[test]
fn malformed_sasl_initial_responses_are_errors() {
    let bad: &[&[u8]] = &[
        b"",
        b"SCRAM-SHA-256",
        b"SCRAM-SHA-256\0",
        b"SCRAM-SHA-256\0\x00\x00\x00",
        b"SCRAM-SHA-256\0\x00\x00\x00\x05abc", // length larger than data
        b"SCRAM-SHA-256\0\x00\x00\x00\x01abc", // trailing bytes
        b"SCRAM-SHA-256\0\xff\xff\xff\xfe",    // -2
        b"SCRAM-SHA-256\0\xff\xff\xff\xffx",   // -1 with data
        b"SCRAM-SHA-256\0\x80\x00\x00\x00",    // i32::MIN
        b"SCRAM-\xff\0\x00\x00\x00\x00",       // non-UTF-8 mechanism
        b"SCRAM-SHA-256\0\x7f\xff\xff\xff",    // i32::MAX, nothing follows
    ];
    for body in bad {
        assert!(
            matches!(
                parse_sasl_initial_response(body),
                Err(AuthError::Protocol(_))
            ),
            "{body:?}"
        );
    }
    assert_eq!(
        parse_sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xff"),
        Ok(("SCRAM-SHA-256", &b""[..]))
    );
}

#[test]
fn malformed_password_messages_are_errors() {
    for body in [&b""[..], b"pencil", b"pen\0cil\0", b"pencil\0\0"] {
        assert!(parse_password_message(body).is_err(), "{body:?}");
    }
    let mut huge = vec![b'x'; MAX_AUTH_MESSAGE_LEN + 1];
    huge.push(0);
    assert!(parse_password_message(&huge).is_err());
}
