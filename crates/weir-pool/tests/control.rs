//! PAUSE / RESUME, RECONNECT / WAIT_CLOSE and the server snapshot.

mod common;

use std::time::Duration;

use common::{pool, settings, until};
use weir_pool::{PoolError, ServerState};

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn pause_waits_for_checked_out_connections_and_holds_new_checkouts() {
    let (pool, fake) = pool(settings(2));
    let held = pool.get().await.expect("get");
    drop(pool.get().await.expect("second get")); // one idle connection
    assert_eq!(fake.live(), 2);

    let mut paused = tokio::spawn(pool.pause());
    // The idle connection is closed at once; the held one keeps the pause pending.
    until(LIMIT, "idle closed", || fake.live() == 1).await;
    assert!(pool.is_paused());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!paused.is_finished());

    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|c| c.id) }
    });
    until(LIMIT, "checkout held by the pause", || {
        pool.stats().waiting == 1
    })
    .await;

    drop(held);
    tokio::time::timeout(LIMIT, &mut paused)
        .await
        .expect("pause completes once released")
        .expect("pause task");
    // Released while paused: closed, not kept.
    assert_eq!(fake.live(), 0);
    assert!(!waiter.is_finished());

    pool.resume();
    let id = tokio::time::timeout(LIMIT, waiter)
        .await
        .expect("waiter proceeds")
        .expect("task")
        .expect("checkout succeeds after resume");
    assert_eq!(id, 3, "a fresh connection after the pause");
    assert!(!pool.is_paused());
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_applies_while_paused() {
    let mut s = settings(1);
    s.wait_timeout = Some(Duration::from_millis(200));
    let (pool, _fake) = pool(s);
    pool.pause().await;
    let err = pool.get().await.expect_err("times out");
    assert!(matches!(err, PoolError::Timeout(_)), "{err:?}");
    assert_eq!(pool.stats().waiting, 0);
    assert_eq!(
        pool.metrics()
            .wait_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn close_wakes_paused_checkouts() {
    let (pool, _fake) = pool(settings(1));
    pool.pause().await;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|_| ()) }
    });
    until(LIMIT, "held", || pool.stats().waiting == 1).await;
    pool.close();
    let r = tokio::time::timeout(LIMIT, waiter)
        .await
        .expect("woken")
        .expect("task");
    assert!(matches!(r, Err(PoolError::Closed)));
}

#[tokio::test]
async fn reconnect_closes_old_connections_at_release() {
    let (pool, fake) = pool(settings(3));
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    drop(b); // idle
    let rows = pool.servers();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].state, ServerState::Active);
    assert_eq!(rows[1].state, ServerState::Idle);

    pool.reconnect();
    assert_eq!(fake.live(), 1, "idle connection closed at once");
    assert_eq!(pool.stale_connections(), 1);
    assert!(pool.servers()[0].close_needed);
    let mut closing = tokio::spawn(pool.wait_close());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!closing.is_finished());

    // A new checkout gets a new-generation connection, which survives release.
    let c = pool.get().await.expect("c");
    assert!(!pool.servers().iter().any(|r| r.id == 3 && r.close_needed));
    drop(c);
    drop(a);
    tokio::time::timeout(LIMIT, &mut closing)
        .await
        .expect("wait_close completes")
        .expect("task");
    assert_eq!(fake.live(), 1);
    assert_eq!(pool.stale_connections(), 0);
    assert_eq!(pool.servers().len(), 1);
    assert_eq!(pool.servers()[0].state, ServerState::Idle);
}
