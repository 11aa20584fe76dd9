//! Bad input against the real proxy and PostgreSQL 15: garbage and malformed startup
//! packets, login timeouts, SSL/GSS refusal, malformed messages after login, wrong
//! credentials, transaction-mode refusals and `max_client_conn`. Every refusal must be
//! PostgreSQL-shaped (FATAL ErrorResponse with the right SQLSTATE, then close) and must
//! hurt only the client that sent it.

mod common;

/// Authentication input and cancel keys.
#[path = "bad_input/auth.rs"]
mod auth;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{self, RawClient};
use common::{
    code, connect_with_task, describe, eventually_async, must_connect, simple, trust_config, value,
};
use weir_config::{AuthType, PoolMode};
use weir_tests::{app_config, start_proxy, TestProxy, APP_DB, SCRAM_USER};

const PROTOCOL_VIOLATION: &str = "08P01";

/// A real client still logs in and queries through `proxy`.
async fn assert_proxy_serves(proxy: &TestProxy) {
    let (client, _task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&client, "select 40 + 2").await, "42");
}

/// A deterministic byte generator (xorshift64), so a failing "random" packet can be replayed.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_first_packets_get_fatal_08p01_and_the_proxy_keeps_serving() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    let fixed: Vec<(&str, Vec<u8>)> = vec![
        // An HTTP client on the wrong port: "GET " read as a length of ~1.2 GB.
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: db\r\n\r\n".to_vec(),
        ),
        // A length word of -1.
        ("all 0xff", vec![0xff; 16]),
        // A plausible length with a nonsense protocol code (0xdead.0xbeef).
        (
            "bad protocol code",
            raw::initial_packet(0xdead_beef_u32 as i32, b"user\0x\0\0", None).to_vec(),
        ),
        // Protocol 3.0 with an unterminated parameter list.
        (
            "unterminated parameters",
            raw::initial_packet(196_608, b"user\0app", None).to_vec(),
        ),
        // A parameter value that is not UTF-8.
        (
            "invalid UTF-8",
            raw::initial_packet(196_608, b"user\0\xff\xfe\0\0", None).to_vec(),
        ),
        // A CancelRequest too short to hold a key.
        (
            "short cancel request",
            raw::initial_packet(80_877_102, &7i32.to_be_bytes(), None).to_vec(),
        ),
    ];
    for (what, packet) in fixed {
        let mut c = RawClient::connect(proxy.addr).await;
        c.send(&packet).await;
        let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
        assert!(!e.message.is_empty(), "{what}: {e:?}");
    }

    // A well-formed CancelRequest with a key nobody holds: closed without a reply, as
    // PostgreSQL does (a reply would tell a prober which keys exist).
    let mut c = RawClient::connect(proxy.addr).await;
    c.send(&raw::cancel_request(12_345, &[1, 2, 3, 4])).await;
    c.expect_closed().await;

    for seed in 1..=24u64 {
        let packet = random_bytes(seed, 8 + (seed as usize * 7) % 57);
        let declared = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        let mut c = RawClient::connect(proxy.addr).await;
        c.send(&packet).await;
        // EOF after the bytes: an incomplete packet cannot be answered, only closed.
        c.shutdown_write().await;
        let incomplete = (8..=10_000).contains(&declared) && packet.len() < declared as usize;
        match c.next().await {
            Some(m) => {
                assert_eq!(m.tag, b'E', "seed {seed} ({packet:?}): not an error");
                let e = raw::ErrorReport::parse(&m.body);
                assert_eq!(
                    (e.severity.as_str(), e.code.as_str()),
                    ("FATAL", PROTOCOL_VIOLATION),
                    "seed {seed} ({packet:?}): {e:?}"
                );
                c.expect_closed().await;
            }
            None => assert!(
                incomplete,
                "seed {seed} ({packet:?}): closed without telling the client why"
            ),
        }
    }
    assert_proxy_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_packets_of_bad_length_get_fatal_08p01() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;

    for declared in [0, 4, 7, -8] {
        let mut c = RawClient::connect(proxy.addr).await;
        c.send(&raw::initial_packet(196_608, &[], Some(declared)))
            .await;
        let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
        assert!(
            e.message.contains("invalid length"),
            "len {declared}: {e:?}"
        );
    }

    // Over the 10 000-byte limit, refused on the length word alone: the proxy must not
    // wait for (or buffer) the announced body.
    for declared in [10_001, 1 << 20, i32::MAX] {
        let mut c = RawClient::connect(proxy.addr).await;
        c.send(&raw::initial_packet(196_608, b"user\0", Some(declared)))
            .await;
        let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
        assert!(
            e.message.contains("invalid length"),
            "len {declared}: {e:?}"
        );
    }

    // A real, well-formed 10 001-byte StartupMessage sent in full.
    let padding = "x".repeat(10_001 - 8 - "user\0app_scram\0options\0\0\0".len());
    let big = raw::startup_packet(&[("user", SCRAM_USER), ("options", &padding)]);
    assert_eq!(big.len(), 10_001);
    let mut c = RawClient::connect(proxy.addr).await;
    // The proxy may close before reading it all; only its answer matters.
    let _ = c.try_send(&big).await;
    let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
    assert!(e.message.contains("10001"), "{e:?}");

    assert_proxy_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_startup_gets_fatal_08p01() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    for (major, minor) in [(2u16, 0u16), (1, 0), (4, 0)] {
        let code = (i32::from(major) << 16) | i32::from(minor);
        let mut c = RawClient::connect(proxy.addr).await;
        c.send(&raw::initial_packet(code, b"user\0app_scram\0\0", None))
            .await;
        let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
        assert!(
            e.message.contains(&format!("{major}.{minor}")),
            "protocol {major}.{minor}: {e:?}"
        );
    }
    // Protocol 3.0 but no user name: PostgreSQL's 28000.
    let mut c = RawClient::connect(proxy.addr).await;
    c.send(&raw::startup_packet(&[("database", APP_DB)])).await;
    let e = c.expect_fatal("28000").await;
    assert!(e.message.contains("no PostgreSQL user name"), "{e:?}");

    assert_proxy_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_startup_then_silence_hits_client_login_timeout() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.client_login_timeout = Duration::from_secs(1);
    // md5 keeps honest logins far inside 1 s on a loaded machine running debug builds
    // (SCRAM's 4096 PBKDF2 rounds on both sides are not).
    config.auth_type = AuthType::Md5;
    let proxy = start_proxy(config).await;
    // The first login also opens the pool's first server connection; retry it if a busy
    // machine made it miss the 1 s limit.
    let mut warm = false;
    for _ in 0..3 {
        if connect_with_task(&proxy.app_url()).await.is_ok() {
            warm = true;
            break;
        }
    }
    assert!(warm, "no honest login within client_login_timeout");

    // Half a StartupMessage, then nothing.
    let whole = raw::startup_packet(&[("user", SCRAM_USER), ("database", APP_DB)]);
    let mut c = RawClient::connect(proxy.addr).await;
    let started = Instant::now();
    c.send(&whole[..whole.len() / 2]).await;
    let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
    let waited = started.elapsed();
    assert!(e.message.contains("client_login_timeout"), "{e:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}, wanted ~1 s"
    );

    // Silence after the startup, at the password challenge, counts too.
    let mut c = RawClient::connect(proxy.addr).await;
    let started = Instant::now();
    c.send(&whole).await;
    let m = c.next().await.expect("authentication request");
    assert_eq!(m.tag, b'R');
    let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
    let waited = started.elapsed();
    assert!(e.message.contains("client_login_timeout"), "{e:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}, wanted ~1 s"
    );

    assert_proxy_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_get_n_then_the_startup_reaches_sasl() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    let mut c = RawClient::connect(proxy.addr).await;
    c.send(&raw::ssl_request()).await;
    assert_eq!(c.read_byte().await, b'N', "SSLRequest must be declined");
    c.send(&raw::gssenc_request()).await;
    assert_eq!(c.read_byte().await, b'N', "GSSENCRequest must be declined");
    c.send(&raw::startup_packet(&[
        ("user", SCRAM_USER),
        ("database", APP_DB),
    ]))
    .await;
    let m = c.next().await.expect("an authentication request");
    assert_eq!(
        m.tag, b'R',
        "wanted Authentication, got {:?}",
        m.tag as char
    );
    // AuthenticationSASL (10) offering SCRAM-SHA-256: the startup was accepted.
    assert_eq!(&m.body[..4], &10i32.to_be_bytes());
    assert!(
        m.body.windows(14).any(|w| w == b"SCRAM-SHA-256\0"),
        "mechanisms: {:?}",
        m.body
    );
    drop(c);

    // Bytes piggy-backed on an SSLRequest, before the answer, are refused (CVE-2021-23222).
    let mut c = RawClient::connect(proxy.addr).await;
    let mut stuffed = raw::ssl_request();
    stuffed.extend_from_slice(&raw::startup_packet(&[("user", SCRAM_USER)]));
    c.send(&stuffed).await;
    c.expect_fatal(PROTOCOL_VIOLATION).await;

    // Endless SSLRequests: the negotiation is bounded.
    let mut c = RawClient::connect(proxy.addr).await;
    let mut answered = 0;
    loop {
        c.send(&raw::ssl_request()).await;
        if c.peek_byte().await != b'N' {
            break;
        }
        c.read_byte().await;
        answered += 1;
        assert!(answered <= 10, "{answered} SSLRequests answered, no limit");
    }
    c.expect_fatal(PROTOCOL_VIOLATION).await;

    assert_proxy_serves(&proxy).await;
    proxy.stop().await;
}

/// A well-behaved client querying in a loop, and what it saw.
struct SteadyClient {
    /// Queries answered correctly so far.
    ok: Arc<AtomicU64>,
    /// Set to end the loop.
    stop: Arc<AtomicBool>,
    /// Ends with the first error, or with the distinct backend pids that served it.
    task: tokio::task::JoinHandle<Result<BTreeSet<String>, String>>,
}

/// Starts a [`SteadyClient`]; each query reports the serving backend's pid.
async fn steady_client(proxy: &TestProxy) -> SteadyClient {
    let (client, _connection) = must_connect(&proxy.app_url()).await;
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok2, stop2) = (ok.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let mut pids = BTreeSet::new();
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let sql = format!("select {i} + 1, pg_backend_pid()");
            let rows = simple(&client, &sql)
                .await
                .map_err(|e| format!("{sql}: {}", describe(&e)))?;
            let row = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((r.get(0).map(str::to_owned), r.get(1).map(str::to_owned)))
                }
                _ => None,
            });
            let Some((Some(sum), Some(pid))) = row else {
                return Err(format!("{sql} returned no row"));
            };
            if sum != (i + 1).to_string() {
                return Err(format!("{sql} returned {sum}"));
            }
            pids.insert(pid);
            ok2.fetch_add(1, Ordering::Relaxed);
            i += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(pids)
    });
    SteadyClient { ok, stop, task }
}

/// Waits until `ok` moves past its current value: the steady client is still served.
async fn assert_progress(ok: &AtomicU64, after: &str) {
    let before = ok.load(Ordering::Relaxed);
    let moved = eventually_async(Duration::from_secs(5), || async {
        ok.load(Ordering::Relaxed) > before + 2
    })
    .await;
    assert!(moved, "the well-behaved client stalled after {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_after_login_close_only_that_client() {
    // One server connection, shared by the steady client and each bad one in turn: if
    // the proxy let a bad message through, PostgreSQL would close that connection and the
    // steady client would be served by a new backend.
    let mut config = trust_config(PoolMode::Transaction, 1);
    config.max_message_size = 1 << 20;
    let proxy = start_proxy(config).await;
    let steady = steady_client(&proxy).await;
    let ok = &steady.ok;
    assert_progress(ok, "start").await;

    let cases: Vec<(&str, bytes::BytesMut, &str)> = vec![
        ("length 3", raw::header(b'Q', 3), "invalid message length"),
        ("length 0", raw::header(b'Q', 0), "invalid message length"),
        ("length -1", raw::header(b'P', -1), "invalid message length"),
        (
            "max_message_size + 1",
            raw::header(b'Q', (1 << 20) + 1),
            "max_message_size",
        ),
        ("2 GiB", raw::header(b'Q', i32::MAX), "max_message_size"),
        (
            "unknown type 'y'",
            raw::frame(b'y', b""),
            "invalid frontend message type 121",
        ),
        (
            "unknown type 0",
            raw::frame(0, b"junk"),
            "invalid frontend message type 0",
        ),
    ];
    for (what, bytes, text) in cases {
        let mut c = RawClient::login_trust(proxy.addr, SCRAM_USER, APP_DB).await;
        c.send(&bytes).await;
        let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
        assert!(e.message.contains(text), "{what}: {e:?}");
        assert_progress(ok, what).await;
    }

    // A fresh raw client is still served normally.
    let mut c = RawClient::login_trust(proxy.addr, SCRAM_USER, APP_DB).await;
    c.send(&raw::frame(b'Q', b"select 1\0")).await;
    let tags: Vec<u8> = {
        let mut tags = Vec::new();
        while let Some(m) = c.next().await {
            tags.push(m.tag);
            if m.tag == b'Z' {
                break;
            }
        }
        tags
    };
    assert_eq!(
        tags, b"TDCZ",
        "RowDescription, DataRow, CommandComplete, ReadyForQuery"
    );

    steady.stop.store(true, Ordering::Relaxed);
    let pids = tokio::time::timeout(Duration::from_secs(10), steady.task)
        .await
        .expect("steady client stops")
        .expect("steady client task")
        .unwrap_or_else(|e| panic!("the well-behaved client saw an error: {e}"));
    assert_eq!(
        pids.len(),
        1,
        "the server connection was replaced ({pids:?}): a bad message reached PostgreSQL"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_prepare_with_mapping_off_gets_0a000_and_ends_the_session() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.max_prepared_statements = 0;
    let proxy = start_proxy(config).await;
    let (client, task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&client, "select 1").await, "1");

    let e = tokio::time::timeout(Duration::from_secs(10), client.prepare("select 1"))
        .await
        .expect("prepare answered in time")
        .expect_err("a named Parse must be refused in transaction mode");
    assert_eq!(code(&e), "0A000", "{}", describe(&e));
    let db_error = e.as_db_error().expect("a database error");
    assert_eq!(db_error.severity(), "FATAL");
    assert!(
        db_error.message().contains("named prepared statement"),
        "{}",
        describe(&e)
    );
    assert!(db_error.hint().is_some(), "a hint says what to do instead");

    // The session is over: the connection ends and further queries fail.
    let _ = common::connection_result(task, Duration::from_secs(5)).await;
    assert!(client.is_closed());
    assert!(simple(&client, "select 1").await.is_err());

    // Unnamed statements (query_typed) work for a new client on the same proxy.
    let (client, _task) = must_connect(&proxy.app_url()).await;
    let rows = client
        .query_typed(
            "select $1::int4 + 1",
            &[(&1i32, tokio_postgres::types::Type::INT4)],
        )
        .await
        .expect("unnamed extended query");
    assert_eq!(rows[0].get::<_, i32>(0), 2);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_set_in_transaction_mode_stays_with_the_client_and_set_local_ends() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 1)).await;
    let (client, _task) = must_connect(&proxy.app_url()).await;
    let (other, _other_task) = must_connect(&proxy.app_url()).await;
    let default_path = value(&client, "show search_path").await;

    simple(&client, "SET search_path = x, public")
        .await
        .unwrap_or_else(|e| panic!("SET refused: {}", describe(&e)));
    simple(&client, "set statement_timeout to 5000")
        .await
        .unwrap_or_else(|e| panic!("SET refused: {}", describe(&e)));
    for _ in 0..3 {
        // The only server connection goes back and forth between the two clients.
        assert_eq!(value(&client, "show search_path").await, "x, public");
        assert_eq!(value(&client, "show statement_timeout").await, "5s");
        assert_eq!(value(&other, "show search_path").await, default_path);
        assert_eq!(value(&other, "show statement_timeout").await, "0");
    }
    simple(&client, "RESET search_path").await.expect("reset");
    assert_eq!(value(&client, "show search_path").await, default_path);
    assert_eq!(value(&client, "show statement_timeout").await, "5s");
    assert_eq!(value(&other, "show statement_timeout").await, "0");

    // SET LOCAL inside a transaction is fine and ends with it.
    simple(&client, "BEGIN").await.expect("begin");
    simple(&client, "SET LOCAL search_path = x")
        .await
        .unwrap_or_else(|e| panic!("SET LOCAL refused: {}", describe(&e)));
    assert_eq!(value(&client, "show search_path").await, "x");
    simple(&client, "SET TRANSACTION READ ONLY")
        .await
        .unwrap_or_else(|e| panic!("SET TRANSACTION refused: {}", describe(&e)));
    simple(&client, "COMMIT").await.expect("commit");
    assert_eq!(value(&client, "show search_path").await, default_path);
    assert_eq!(value(&client, "show transaction_read_only").await, "off");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300_until_a_client_leaves() {
    let mut config = app_config(PoolMode::Transaction, 2);
    config.max_client_conn = 3;
    let proxy = start_proxy(config).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (client, task) = must_connect(&proxy.app_url()).await;
        assert_eq!(value(&client, "select 1").await, "1");
        clients.push((client, task));
    }
    let Err(e) = connect_with_task(&proxy.app_url()).await else {
        panic!("a 4th client logged in with max_client_conn = 3");
    };
    assert_eq!(code(&e), "53300", "{}", describe(&e));
    assert_eq!(
        e.as_db_error().map(|d| d.message()),
        Some("sorry, too many clients already")
    );
    // The three are unaffected.
    for (client, _) in &clients {
        assert_eq!(value(client, "select 2").await, "2");
    }

    // One leaves (Terminate and close); a new client gets its place.
    let (client, task) = clients.remove(0);
    drop(client);
    common::connection_result(task, Duration::from_secs(5))
        .await
        .expect("clean close");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match connect_with_task(&proxy.app_url()).await {
            Ok(admitted) => {
                clients.push(admitted);
                break;
            }
            Err(e) => {
                assert_eq!(code(&e), "53300", "{}", describe(&e));
                assert!(
                    Instant::now() < until,
                    "no client admitted within 5 s after one of three left"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let (newest, _) = clients.last().expect("the new client");
    assert_eq!(value(newest, "select 3").await, "3");
    // And the limit still holds.
    let Err(e) = connect_with_task(&proxy.app_url()).await else {
        panic!("a 4th client logged in with max_client_conn = 3");
    };
    assert_eq!(code(&e), "53300", "{}", describe(&e));
    proxy.stop().await;
}
