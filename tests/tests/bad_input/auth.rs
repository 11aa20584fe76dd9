//! Bad authentication input: malformed password/SASL messages, wrong passwords (SCRAM
//! and md5), unknown users and databases, and forged cancel keys.

use std::time::{Duration, Instant};

use weir_config::{AuthType, PoolMode};
use weir_tests::{
    app_config, config_for, shared_cluster, start_proxy, APP_DB, MD5_PASSWORD, MD5_USER,
    SCRAM_PASSWORD, SCRAM_USER,
};

use super::{assert_proxy_serves, PROTOCOL_VIOLATION};
use crate::common::raw::{self, RawClient};
use crate::common::{
    code, connect_with_task, describe, must_connect, trust_config, value, wait_until_running,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authentication_messages_get_fatal_errors() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    let startup = raw::startup_packet(&[("user", SCRAM_USER), ("database", APP_DB)]);
    let sasl_initial = |mechanism: &str, data: &[u8]| {
        let mut body = mechanism.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&(data.len() as i32).to_be_bytes());
        body.extend_from_slice(data);
        raw::frame(b'p', &body)
    };
    let long_nonce = format!("n,,n=,r={}", "A".repeat(6000));
    let cases: Vec<(&str, bytes::BytesMut, &[&str])> = vec![
        ("length 3", raw::header(b'p', 3), &[PROTOCOL_VIOLATION]),
        (
            "64 KiB password message",
            raw::header(b'p', 1 << 16),
            &[PROTOCOL_VIOLATION],
        ),
        (
            "a query instead",
            raw::frame(b'Q', b"select 1\0"),
            &[PROTOCOL_VIOLATION],
        ),
        (
            "empty SASL body",
            raw::frame(b'p', b""),
            &[PROTOCOL_VIOLATION],
        ),
        (
            "SASL data length past the end",
            {
                let mut body = b"SCRAM-SHA-256\0".to_vec();
                body.extend_from_slice(&1000i32.to_be_bytes());
                body.extend_from_slice(b"n,,n=,r=abc");
                raw::frame(b'p', &body)
            },
            &[PROTOCOL_VIOLATION],
        ),
        (
            "garbage client-first",
            sasl_initial("SCRAM-SHA-256", b"\xff\x00garbage"),
            &[PROTOCOL_VIOLATION],
        ),
        (
            "unknown mechanism",
            sasl_initial("SCRAM-SHA-1", b"n,,n=,r=abc"),
            // PostgreSQL says 08P01; an authorization error is as good.
            &[PROTOCOL_VIOLATION, "28000"],
        ),
        (
            "channel binding requested without TLS",
            sasl_initial("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc"),
            &[PROTOCOL_VIOLATION, "28000"],
        ),
    ];
    for (what, bytes, codes) in cases {
        let mut c = RawClient::connect(proxy.addr).await;
        c.send(&startup).await;
        let m = c.next().await.expect("authentication request");
        assert_eq!(m.tag, b'R', "{what}");
        let _ = c.try_send(&bytes).await;
        let m = c
            .next()
            .await
            .unwrap_or_else(|| panic!("{what}: closed without an ErrorResponse"));
        assert_eq!(m.tag, b'E', "{what}: got {:?}", m.tag as char);
        let e = raw::ErrorReport::parse(&m.body);
        assert_eq!(e.severity, "FATAL", "{what}: {e:?}");
        assert!(codes.contains(&e.code.as_str()), "{what}: {e:?}");
        c.expect_closed().await;
    }

    // A 6000-byte nonce is within the message limit: the exchange goes on (or is
    // refused) without harm; the wrong proof at the end gets 28P01.
    let mut c = RawClient::connect(proxy.addr).await;
    c.send(&startup).await;
    assert_eq!(c.next().await.map(|m| m.tag), Some(b'R'));
    c.send(&sasl_initial("SCRAM-SHA-256", long_nonce.as_bytes()))
        .await;
    let m = c.next().await.expect("an answer to a long nonce");
    match m.tag {
        b'R' => {
            let server_first = String::from_utf8_lossy(&m.body[4..]).into_owned();
            let nonce = server_first
                .split(',')
                .find_map(|f| f.strip_prefix("r="))
                .expect("server nonce");
            let fin = format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
            c.send(&raw::frame(b'p', fin.as_bytes())).await;
            let m = c.next().await.expect("an answer to the proof");
            assert_eq!(m.tag, b'E');
            let e = raw::ErrorReport::parse(&m.body);
            assert_eq!(
                (e.severity.as_str(), e.code.as_str()),
                ("FATAL", "28P01"),
                "{e:?}"
            );
            c.expect_closed().await;
        }
        b'E' => {
            let e = raw::ErrorReport::parse(&m.body);
            assert_eq!(e.severity, "FATAL", "{e:?}");
            c.expect_closed().await;
        }
        other => panic!("unexpected {:?}", other as char),
    }

    // md5: a password message without its terminating NUL.
    let mut config = app_config(PoolMode::Transaction, 2);
    config.auth_type = AuthType::Md5;
    let md5_proxy = start_proxy(config).await;
    let mut c = RawClient::connect(md5_proxy.addr).await;
    c.send(&startup).await;
    assert_eq!(c.next().await.map(|m| m.tag), Some(b'R'));
    c.send(&raw::frame(b'p', b"md5abc")).await;
    let e = c.expect_fatal(PROTOCOL_VIOLATION).await;
    assert!(!e.message.is_empty());
    md5_proxy.stop().await;

    assert_proxy_serves(&proxy).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_wrong_password_or_unknown_user_get_28p01_and_unknown_database_3d000() {
    let proxy = start_proxy(app_config(PoolMode::Transaction, 2)).await;
    let cases = [
        (
            SCRAM_USER,
            "wrong",
            APP_DB,
            "28P01",
            "password authentication failed for user \"app_scram\"",
        ),
        (
            SCRAM_USER,
            "",
            APP_DB,
            "28P01",
            "password authentication failed for user \"app_scram\"",
        ),
        (
            "nobody",
            "pw",
            APP_DB,
            "28P01",
            "password authentication failed for user \"nobody\"",
        ),
        (
            SCRAM_USER,
            SCRAM_PASSWORD,
            "nosuchdb",
            "3D000",
            "database \"nosuchdb\" does not exist",
        ),
    ];
    for (user, password, db, want, message) in cases {
        let Err(e) = connect_with_task(&proxy.url(user, password, db)).await else {
            panic!("{user}/{password:?}@{db}: login succeeded");
        };
        assert_eq!(code(&e), want, "{user}@{db}: {}", describe(&e));
        let db_error = e.as_db_error().expect("a database error");
        assert_eq!(db_error.severity(), "FATAL");
        assert_eq!(db_error.message(), message);
    }
    let (client, _task) = must_connect(&proxy.app_url()).await;
    assert_eq!(value(&client, "select current_user").await, SCRAM_USER);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_auth_rejects_a_wrong_password_with_28p01_and_accepts_the_right_one() {
    let pg = shared_cluster();
    let mut config = config_for(
        &pg.url(MD5_USER, MD5_PASSWORD, APP_DB),
        PoolMode::Transaction,
        2,
    );
    config.auth_type = AuthType::Md5;
    let proxy = start_proxy(config).await;

    // The proxy really asks for md5 (AuthenticationMD5Password, code 5, 4-byte salt).
    let mut c = RawClient::connect(proxy.addr).await;
    c.send(&raw::startup_packet(&[
        ("user", MD5_USER),
        ("database", APP_DB),
    ]))
    .await;
    let m = c.next().await.expect("an authentication request");
    assert_eq!(m.tag, b'R');
    assert_eq!(m.body.len(), 8, "{:?}", m.body);
    assert_eq!(&m.body[..4], &5i32.to_be_bytes());
    drop(c);

    for (user, password) in [
        (MD5_USER, "wrong"),
        (MD5_USER, "PW_MD5"),
        ("nobody", MD5_PASSWORD),
    ] {
        let Err(e) = connect_with_task(&proxy.url(user, password, APP_DB)).await else {
            panic!("{user}/{password}: login succeeded");
        };
        assert_eq!(code(&e), "28P01", "{user}/{password}: {}", describe(&e));
        let db_error = e.as_db_error().expect("a database error");
        assert_eq!(
            db_error.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
    let (client, _task) = must_connect(&proxy.url(MD5_USER, MD5_PASSWORD, APP_DB)).await;
    assert_eq!(value(&client, "select current_user").await, MD5_USER);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cancel_request_is_ignored_and_the_real_one_works() {
    let proxy = start_proxy(trust_config(PoolMode::Transaction, 1)).await;
    let mut c = RawClient::login_trust(proxy.addr, SCRAM_USER, APP_DB).await;
    let (pid, key) = c.key.clone().expect("BackendKeyData at login");
    assert_eq!(key.len(), 4);

    // The right pid with a wrong key, and a truncated key: both ignored.
    c.send(&raw::frame(b'Q', b"select pg_sleep(2)\0")).await;
    wait_until_running("select pg_sleep(2)").await;
    let mut wrong = key.clone();
    wrong[0] ^= 1;
    for forged in [
        raw::cancel_request(pid, &wrong),
        raw::cancel_request(pid ^ 1, &key),
    ] {
        let mut f = RawClient::connect(proxy.addr).await;
        f.send(&forged).await;
        f.expect_closed().await;
    }
    let (tags, error) = c.query_answers().await;
    assert_eq!(error, None, "a forged cancel stopped the query");
    assert_eq!(tags, b"TDCZ");

    // The real key cancels.
    c.send(&raw::frame(b'Q', b"select pg_sleep(20)\0")).await;
    wait_until_running("select pg_sleep(20)").await;
    let started = Instant::now();
    let mut f = RawClient::connect(proxy.addr).await;
    f.send(&raw::cancel_request(pid, &key)).await;
    f.expect_closed().await;
    let (_, error) = c.query_answers().await;
    let error = error.expect("the query was cancelled");
    assert_eq!(
        (error.severity.as_str(), error.code.as_str()),
        ("ERROR", "57014"),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(c);
    proxy.stop().await;
}
