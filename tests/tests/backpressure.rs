//! Flow control: a client that pipelines far more than the socket buffers hold, reading
//! its answers concurrently (as libpq's pipeline mode and JDBC batches do), must not
//! deadlock the proxy. PostgreSQL stops reading requests while its output is blocked, so
//! a proxy that blocks writing requests without reading answers would hang forever
//! where a direct connection would not.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_config::{AuthType, PoolMode};
use weir_tests::{app_config, start_proxy, APP_DB, SCRAM_USER};
use weir_wire::build::put_query;
use weir_wire::frame::split_frame;
use weir_wire::startup::put_startup_message;

/// Queries in the pipeline; with ~1 KiB each way that is ~20 MiB in each direction,
/// far beyond loopback socket buffers.
const QUERIES: usize = 20_000;
const DEADLINE: Duration = Duration::from_secs(90);

async fn trust_login(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut out = BytesMut::new();
    put_startup_message(&mut out, [("user", SCRAM_USER), ("database", APP_DB)]);
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        match split_frame(&mut buf, 1 << 20).unwrap() {
            Some(f) if f.tag() == b'Z' => return stream,
            Some(f) if f.tag() == b'E' => panic!("login refused"),
            Some(_) => {}
            None => {
                assert!(
                    stream.read_buf(&mut buf).await.unwrap() > 0,
                    "closed at login"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_pipeline_read_concurrently_does_not_deadlock() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let mut config = app_config(mode, 2);
        config.auth_type = AuthType::Trust;
        let proxy = start_proxy(config).await;
        let stream = trust_login(proxy.addr).await;
        let (mut rd, mut wr) = stream.into_split();

        // ~1 KiB of request and ~1 KiB of answer per query.
        let padding = "x".repeat(900);
        let mut out = BytesMut::new();
        for i in 0..QUERIES {
            put_query(
                &mut out,
                &format!("select {i}, repeat('y', 1000) /* {padding} */"),
            );
        }
        let writer = tokio::spawn(async move {
            wr.write_all(&out)
                .await
                .expect("client writes its pipeline");
            wr
        });
        let reader = async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let mut ready = 0;
            let mut rows = 0;
            while ready < QUERIES {
                match split_frame(&mut buf, 1 << 20).unwrap() {
                    Some(f) if f.tag() == b'Z' => ready += 1,
                    Some(f) if f.tag() == b'D' => rows += 1,
                    Some(f) if f.tag() == b'E' => panic!("query failed"),
                    Some(_) => {}
                    None => {
                        let n = rd.read_buf(&mut buf).await.expect("read answers");
                        assert!(n > 0, "proxy closed after {ready} answers");
                    }
                }
            }
            (ready, rows)
        };
        let (ready, rows) = tokio::time::timeout(DEADLINE, reader)
            .await
            .unwrap_or_else(|_| {
                panic!("{mode}: pipeline stalled: proxy deadlocked on backpressure")
            });
        assert_eq!((ready, rows), (QUERIES, QUERIES), "{mode}");
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("writer finished")
            .expect("writer task");
    }
}
