//! Batched sends ([`weir_proxy::uring`]) over real loopback sockets: bytes arrive
//! whole and in order, through large writes to slow readers, dropped streams, reused
//! descriptors and the runtime's end; a failed peer surfaces as an error; threads
//! without the park hook, or with batching off, write directly.
//!
//! Each test builds its own runtime as pgweir's binary does (a current-thread runtime
//! whose turns end in `before_park`). Nextest runs every test in its own process, so
//! `disable` in one cannot touch another.

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_proxy::stream::Stream;
use weir_proxy::uring;

fn batching_runtime() -> tokio::runtime::Runtime {
    uring::runtime_builder(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A connected pair: the proxy's side as a [`Stream`], the peer's as a socket.
async fn pair() -> (Stream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (
        Stream::from(ours.expect("connect")),
        theirs.expect("accept").0,
    )
}

/// Lets the runtime park once, so the thread's ring is set up.
async fn park_once() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Runs `test` on a batching runtime once the thread's ring is up.
fn batched<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    batching_runtime().block_on(async {
        park_once().await;
        assert!(
            uring::batching(),
            "io_uring is not available on this machine"
        );
        test().await;
    });
}

/// Everything the peer receives until EOF, which must come within 10 s.
async fn read_all(mut theirs: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), theirs.read_to_end(&mut got))
        .await
        .expect("EOF within 10 s")
        .expect("read");
    got
}

/// Message `i` of a test stream: its length and bytes vary with `i`.
fn message(i: usize) -> Vec<u8> {
    let len = 1 + (i * 37) % 300;
    (0..len).map(|j| (i + j) as u8).collect()
}

#[test]
fn small_writes_arrive_whole_and_in_order() {
    batched(|| async {
        let (mut ours, theirs) = pair().await;
        let expected: Vec<u8> = (0..2000).flat_map(message).collect();
        let reader = tokio::spawn(read_all(theirs));
        for i in 0..2000 {
            ours.write_all(&message(i)).await.expect("write");
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        ours.shutdown().await.expect("shutdown");
        assert_eq!(reader.await.expect("reader"), expected);
    });
}

#[test]
fn many_sockets_written_in_one_turn_each_get_their_own_bytes() {
    batched(|| async {
        let mut ours = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..16 {
            let (o, theirs) = pair().await;
            ours.push(o);
            readers.push(tokio::spawn(read_all(theirs)));
        }
        // Each round writes once to every socket without yielding: one turn, sixteen
        // sends, handed to the kernel together.
        for round in 0..200 {
            for (k, o) in ours.iter_mut().enumerate() {
                o.write_all(&message(round * 16 + k)).await.expect("write");
            }
            tokio::task::yield_now().await;
        }
        // The last round's sends are still queued when the streams go.
        drop(ours);
        for (k, reader) in readers.into_iter().enumerate() {
            let expected: Vec<u8> = (0..200).flat_map(|round| message(round * 16 + k)).collect();
            let got = reader.await.expect("reader");
            assert!(
                got == expected,
                "socket {k} got other bytes than were written to it"
            );
        }
    });
}

#[test]
fn a_large_write_to_a_slow_reader_arrives_whole() {
    batched(|| async {
        let (mut ours, mut theirs) = pair().await;
        // Larger than one outbox (256 KiB) and than the socket buffers: the writer
        // is held back while the reader dawdles.
        let big: Vec<u8> = (0..8 * 1024 * 1024)
            .map(|i: usize| (i % 251) as u8)
            .collect();
        let expected = big.clone();
        let reader = tokio::spawn(async move {
            let mut got = Vec::with_capacity(expected.len());
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = theirs.read(&mut chunk).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&chunk[..n]);
                if got.len() < 1024 * 1024 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            got == expected
        });
        ours.write_all(&big).await.expect("write");
        ours.flush().await.expect("flush");
        ours.shutdown().await.expect("shutdown");
        assert!(
            reader.await.expect("reader"),
            "the bytes read differ from those written"
        );
    });
}

#[test]
fn a_peer_that_went_away_fails_later_writes() {
    batched(|| async {
        let (mut ours, theirs) = pair().await;
        // Closed with unread data: the kernel answers further segments with RST.
        theirs.set_zero_linger().expect("linger");
        drop(theirs);
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            for _ in 0..1000 {
                if let Err(e) = ours.write_all(b"are you there?").await {
                    return Some(e);
                }
                if let Err(e) = ours.flush().await {
                    return Some(e);
                }
                park_once().await;
            }
            None
        })
        .await
        .expect("writes to a dead peer must not hang");
        let e = outcome.expect("writes to a dead peer must fail");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "unexpected error {e:?}"
        );
    });
}

#[test]
fn bytes_queued_before_a_drop_still_arrive() {
    batched(|| async {
        let (mut ours, theirs) = pair().await;
        ours.write_all(&[7u8; 1000]).await.expect("write");
        // Gone before the runtime parked, so before its send was submitted.
        drop(ours);
        assert_eq!(read_all(theirs).await, vec![7u8; 1000]);
    });
}

#[test]
fn a_reused_descriptor_gets_only_its_own_bytes() {
    batched(|| async {
        let mut peers = Vec::new();
        // Each stream queues its bytes and is dropped before they are submitted; the
        // next connection may well get the same descriptor number.
        for i in 0..20u8 {
            let (mut ours, theirs) = pair().await;
            ours.write_all(&[i; 100]).await.expect("write");
            drop(ours);
            peers.push((i, theirs));
        }
        for (i, theirs) in peers {
            assert_eq!(
                read_all(theirs).await,
                vec![i; 100],
                "connection {i} got another's bytes"
            );
        }
    });
}

#[test]
fn drain_sends_what_the_last_turn_queued() {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let runtime = batching_runtime();
    runtime.block_on(async {
        park_once().await;
        assert!(uring::batching());
        let mut ours = Stream::from(TcpStream::connect(addr).await.expect("connect"));
        // Queued, and block_on returns without parking again: nothing submits it.
        ours.write_all(b"goodbye").await.expect("write");
        drop(ours);
    });
    uring::drain(Duration::from_secs(5));
    drop(runtime);
    assert_eq!(reader.join().expect("reader"), b"goodbye");
}

#[test]
fn without_the_park_hook_writes_go_straight_out() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    writes_go_straight_out(runtime);
}

#[test]
fn batching_turned_off_writes_go_straight_out() {
    uring::disable();
    writes_go_straight_out(batching_runtime());
}

/// On `runtime`, the thread does not batch after a park, and writes still arrive.
fn writes_go_straight_out(runtime: tokio::runtime::Runtime) {
    runtime.block_on(async {
        park_once().await;
        assert!(!uring::batching());
        let (mut ours, mut theirs) = pair().await;
        ours.write_all(b"direct").await.expect("write");
        let mut got = [0u8; 6];
        theirs.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"direct");
    });
}
