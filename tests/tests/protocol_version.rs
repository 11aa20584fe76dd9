//! Protocol version negotiation: a PostgreSQL 18 client may ask for protocol 3.2 and send
//! `_pq_.` options; the proxy speaks 3.0 and 3.2 (with 32-byte cancel keys of its own,
//! whatever the server speaks) and answers anything else with exactly one
//! NegotiateProtocolVersion before authentication, then works normally (pitfall 12).

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_config::{AuthType, PoolMode};
use weir_tests::{app_config, start_proxy, APP_DB, SCRAM_USER};
use weir_wire::backend::parse_ready_for_query;
use weir_wire::build::{put_cstr, put_query};
use weir_wire::frame::split_frame;
use weir_wire::Frame;

async fn next(stream: &mut TcpStream, buf: &mut BytesMut) -> Frame {
    loop {
        if let Some(f) = split_frame(buf, 1 << 20).unwrap() {
            return f;
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_buf(buf))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "proxy closed the connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_and_pq_options_get_one_negotiate_protocol_version() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.auth_type = AuthType::Trust;
    let proxy = start_proxy(config).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();

    // StartupMessage for protocol 3.2 with an unknown protocol option.
    let mut startup = BytesMut::new();
    startup.put_i32(0);
    startup.put_i32((3 << 16) | 2);
    for (k, v) in [
        ("user", SCRAM_USER),
        ("database", APP_DB),
        ("_pq_.test_option", "on"),
    ] {
        put_cstr(&mut startup, k.as_bytes());
        put_cstr(&mut startup, v.as_bytes());
    }
    startup.put_u8(0);
    let len = startup.len() as i32;
    startup[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&startup).await.unwrap();

    let mut buf = BytesMut::new();
    let mut tags = Vec::new();
    loop {
        let f = next(&mut stream, &mut buf).await;
        tags.push(f.tag());
        match f.tag() {
            b'v' => {
                let body = f.body();
                assert_eq!(
                    &body[..4],
                    &2i32.to_be_bytes(),
                    "3.2 as asked; only the option is refused"
                );
                assert_eq!(
                    &body[4..8],
                    &1i32.to_be_bytes(),
                    "one option not recognized"
                );
                assert_eq!(&body[8..], b"_pq_.test_option\0");
            }
            b'E' => panic!("login refused"),
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(tags.iter().filter(|t| **t == b'v').count(), 1, "{tags:?}");
    assert_eq!(
        tags[0], b'v',
        "negotiation comes before authentication: {tags:?}"
    );

    // The session then works as protocol 3.0.
    let mut q = BytesMut::new();
    put_query(&mut q, "select 42");
    stream.write_all(&q).await.unwrap();
    let mut value = None;
    loop {
        let f = next(&mut stream, &mut buf).await;
        match f.tag() {
            b'D' => value = Some(String::from_utf8_lossy(&f.body()[6..]).into_owned()),
            b'Z' => {
                assert_eq!(parse_ready_for_query(f.body()), Some(b'I'));
                break;
            }
            b'E' => panic!("query failed"),
            _ => {}
        }
    }
    assert_eq!(value.as_deref(), Some("42"));
}

/// A StartupMessage for protocol 3.`minor` with `params`.
fn startup(minor: i32, params: &[(&str, &str)]) -> BytesMut {
    let mut startup = BytesMut::new();
    startup.put_i32(0);
    startup.put_i32((3 << 16) | minor);
    for (k, v) in params {
        put_cstr(&mut startup, k.as_bytes());
        put_cstr(&mut startup, v.as_bytes());
    }
    startup.put_u8(0);
    let len = startup.len() as i32;
    startup[..4].copy_from_slice(&len.to_be_bytes());
    startup
}

/// Logs in with `minor`; returns the tags seen and the BackendKeyData (pid, key).
async fn login(stream: &mut TcpStream, buf: &mut BytesMut, minor: i32) -> (Vec<u8>, i32, Vec<u8>) {
    stream
        .write_all(&startup(
            minor,
            &[("user", SCRAM_USER), ("database", APP_DB)],
        ))
        .await
        .unwrap();
    let mut tags = Vec::new();
    let mut key = None;
    loop {
        let f = next(stream, buf).await;
        tags.push(f.tag());
        match f.tag() {
            b'K' => {
                let body = f.body();
                let pid = i32::from_be_bytes(body[..4].try_into().unwrap());
                key = Some((pid, body[4..].to_vec()));
            }
            b'E' => panic!("login refused"),
            b'Z' => break,
            _ => {}
        }
    }
    let (pid, key) = key.expect("BackendKeyData");
    (tags, pid, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_gets_32_byte_cancel_keys_that_cancel_over_a_3_0_server() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.auth_type = AuthType::Trust;
    let proxy = start_proxy(config).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = BytesMut::new();
    let (tags, pid, key) = login(&mut stream, &mut buf, 2).await;
    assert!(!tags.contains(&b'v'), "3.2 needs no negotiation: {tags:?}");
    assert_eq!(key.len(), 32, "PostgreSQL 18's key length under 3.2");

    // 3.1 was never used: PostgreSQL 18 answers 3.0, so does the proxy; keys stay 4 bytes.
    let mut old = TcpStream::connect(proxy.addr).await.unwrap();
    let mut old_buf = BytesMut::new();
    let (tags, _, old_key) = login(&mut old, &mut old_buf, 1).await;
    assert_eq!(tags.iter().filter(|t| **t == b'v').count(), 1, "{tags:?}");
    assert_eq!(old_key.len(), 4);

    // The 32-byte key cancels a query running on the (protocol 3.0) server.
    let mut q = BytesMut::new();
    put_query(&mut q, "select pg_catalog.pg_sleep(30)");
    stream.write_all(&q).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (attempt, key) in [&key[..4], &key[..]].into_iter().enumerate() {
        let mut cancel = TcpStream::connect(proxy.addr).await.unwrap();
        let mut req = BytesMut::new();
        req.put_i32(12 + key.len() as i32);
        req.put_i32(80_877_102);
        req.put_i32(pid);
        req.put_slice(key);
        cancel.write_all(&req).await.unwrap();
        let mut sink = Vec::new();
        let _ = cancel.read_to_end(&mut sink).await;
        if attempt == 0 {
            // A truncated key must not cancel: the query is still running.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert!(buf.is_empty(), "nothing answered yet");
        }
    }
    let started = std::time::Instant::now();
    let mut code = None;
    loop {
        let f = next(&mut stream, &mut buf).await;
        match f.tag() {
            b'E' => {
                code = Some(
                    weir_wire::backend::ErrorFields::parse(f.body())
                        .code
                        .map(|c| c.to_vec()),
                )
            }
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(code.flatten().as_deref(), Some(&b"57014"[..]), "canceled");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
