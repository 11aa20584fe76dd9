//! Checkout and checkin without contention: reuse, probing, closing, connect failures.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{pool, settings, until};
use weir_pool::PoolError;

#[tokio::test]
async fn idle_connections_are_reused_lifo() {
    let (pool, fake) = pool(settings(3));
    let a = pool.get().await.expect("get a");
    let b = pool.get().await.expect("get b");
    let (a_id, b_id) = (a.id, b.id);
    assert_ne!(a_id, b_id);
    drop(a);
    drop(b);
    assert_eq!(pool.stats().idle, 2);
    // The most recently returned connection comes out first.
    let c = pool.get().await.expect("get c");
    assert_eq!(c.id, b_id);
    let d = pool.get().await.expect("get d");
    assert_eq!(d.id, a_id);
    assert_eq!(fake.attempts(), 2);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active, stats.connecting), (0, 2, 0));
    assert_eq!(pool.metrics().checkouts.load(SeqCst), 4);
    assert_eq!(pool.metrics().wait_histogram().len(), 4);
}

#[tokio::test]
async fn dead_idle_connection_is_skipped_at_checkout() {
    let (pool, fake) = pool(settings(2));
    let mut a = pool.get().await.expect("get");
    let dead_id = a.id;
    a.alive = false;
    drop(a);
    assert_eq!(pool.stats().idle, 1);
    let b = pool.get().await.expect("get after dead");
    assert_ne!(b.id, dead_id);
    assert_eq!(fake.attempts(), 2);
    assert_eq!(fake.live(), 1);
    assert_eq!(pool.metrics().closed.load(SeqCst), 1);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active), (0, 1));
}

#[tokio::test]
async fn dead_idle_connection_at_full_pool_is_replaced() {
    let (pool, fake) = pool(settings(1));
    let mut a = pool.get().await.expect("get");
    a.alive = false;
    drop(a);
    // The pool is full (one idle), the idle one is dead: its slot is reused to connect.
    let b = pool.get().await.expect("get after dead");
    assert_eq!(b.id, 2);
    assert_eq!(fake.high_water(), 1);
}

#[tokio::test]
async fn non_reusable_and_discarded_connections_are_closed() {
    let (pool, fake) = pool(settings(2));
    let mut a = pool.get().await.expect("get");
    a.reusable = false;
    drop(a);
    assert_eq!(fake.live(), 0);
    assert_eq!(pool.stats().idle, 0);

    let b = pool.get().await.expect("get");
    b.discard();
    assert_eq!(fake.live(), 0);
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active, stats.connecting), (0, 0, 0));
    assert_eq!(pool.metrics().closed.load(SeqCst), 2);
}

#[tokio::test]
async fn connect_error_is_returned_and_slot_freed() {
    let mut s = settings(1);
    s.login_retry = Duration::ZERO;
    let (pool, fake) = pool(s);
    fake.fail_next.store(1, SeqCst);
    match pool.get().await {
        Err(PoolError::Connect(_)) => {}
        other => panic!("expected Connect error, got {other:?}"),
    }
    let stats = pool.stats();
    assert_eq!((stats.connecting, stats.active), (0, 0));
    assert_eq!(pool.metrics().connect_errors.load(SeqCst), 1);
    // The slot is free again.
    let a = pool.get().await.expect("get after failure");
    assert_eq!(a.id, 1);
    assert_eq!(pool.metrics().connects.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_is_returned_and_slot_freed() {
    let mut s = settings(1);
    s.connect_timeout = Duration::from_secs(1);
    s.login_retry = Duration::ZERO;
    let (pool, fake) = pool(s);
    fake.set_delay(Duration::from_secs(10));
    match pool.get().await {
        Err(PoolError::ConnectTimeout(d)) => assert_eq!(d, Duration::from_secs(1)),
        other => panic!("expected ConnectTimeout, got {other:?}"),
    }
    assert_eq!(pool.stats().connecting, 0);
    assert_eq!(fake.live(), 0);
    fake.set_delay(Duration::ZERO);
    pool.get().await.expect("get after timeout");
}

#[tokio::test(start_paused = true)]
async fn checkout_dropped_while_connecting_frees_its_slot() {
    let (pool, fake) = pool(settings(1));
    fake.set_delay(Duration::from_secs(10));
    let p = pool.clone();
    let task = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    until(Duration::from_secs(1), "connect started", || {
        pool.stats().connecting == 1
    })
    .await;
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(pool.stats().connecting, 0);
    fake.set_delay(Duration::ZERO);
    pool.get().await.expect("slot was freed");
}

#[tokio::test(start_paused = true)]
async fn expired_connection_is_closed_at_checkin() {
    let mut s = settings(2);
    s.max_lifetime = Some(Duration::from_secs(60));
    let (pool, fake) = pool(s);
    let a = pool.get().await.expect("get");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(a.age() >= Duration::from_secs(61));
    drop(a);
    assert_eq!(fake.live(), 0);
    assert_eq!(pool.stats().idle, 0);
    let b = pool.get().await.expect("get");
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(b);
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test]
async fn closed_pool_refuses_checkouts_and_closes_at_checkin() {
    let (pool, fake) = pool(settings(2));
    let a = pool.get().await.expect("get");
    let b = pool.get().await.expect("get");
    drop(b);
    pool.close();
    assert_eq!(fake.live(), 1, "idle connection closed at close()");
    assert!(matches!(pool.get().await, Err(PoolError::Closed)));
    drop(a);
    assert_eq!(fake.live(), 0, "busy connection closed at checkin");
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active, stats.connecting), (0, 0, 0));
}

#[tokio::test]
async fn errors_read_well() {
    let e: PoolError<common::FakeError> = PoolError::Timeout(Duration::from_secs(2));
    assert_eq!(
        e.to_string(),
        "timed out waiting for a server connection after 2s"
    );
    let e: PoolError<common::FakeError> = PoolError::Connect(common::FakeError);
    assert_eq!(
        e.to_string(),
        "could not connect to the server: fake connect failure"
    );
    assert_eq!(
        PoolError::<common::FakeError>::Closed.to_string(),
        "pool is closed"
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_failed_login_checkouts_fail_fast_until_login_retry_passes() {
    let mut s = settings(2);
    s.login_retry = Duration::from_secs(5);
    let (pool, fake) = pool(s);
    fake.fail_next.store(1, SeqCst);
    assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
    match pool.get().await {
        Err(PoolError::LoginRetry(d)) => assert!(d <= Duration::from_secs(5), "{d:?}"),
        other => panic!("expected LoginRetry, got {other:?}"),
    }
    assert_eq!(
        fake.attempts(),
        1,
        "no second connect attempt inside login_retry"
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    pool.get()
        .await
        .expect("login retried after server_login_retry");
    assert_eq!(fake.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn inside_login_retry_a_checkout_waits_for_an_open_connection() {
    let mut s = settings(2);
    s.login_retry = Duration::from_secs(5);
    let (pool, fake) = pool(s);
    let held = pool.get().await.expect("first connection");
    fake.fail_next.store(1, SeqCst);
    assert!(matches!(pool.get().await, Err(PoolError::Connect(_))));
    // One connection is open: wait for it instead of failing or reconnecting.
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|c| c.id) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let held_id = held.id;
    drop(held);
    assert_eq!(waiter.await.unwrap().expect("got the open one"), held_id);
    assert_eq!(fake.attempts(), 2);
}
