//! Protocol version negotiation: a PostgreSQL 18 client may ask for protocol 3.2 and send
//! `_pq_.` options; the proxy speaks 3.0 and must say so with exactly one
//! NegotiateProtocolVersion before authentication, then work normally (pitfall 12).

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
                    &0i32.to_be_bytes(),
                    "newest minor supported: 3.0"
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
