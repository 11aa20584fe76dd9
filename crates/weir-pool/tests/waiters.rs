//! The wait queue: fairness, timeouts, cancelled waiters, hand-offs and close.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{pool, settings, until};
use weir_pool::PoolError;

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn waiters_are_served_first_in_first_out() {
    let (pool, fake) = pool(settings(1));
    let held = pool.get().await.expect("get");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (p, order) = (pool.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let conn = p.get().await.expect("waiter get");
            order.lock().expect("order lock").push(i);
            drop(conn);
        }));
        // Each waiter is queued before the next one is spawned.
        until(LIMIT, "waiter queued", || pool.stats().waiting == i + 1).await;
    }
    assert!(pool.stats().max_wait <= LIMIT);
    drop(held);
    for t in tasks {
        t.await.expect("waiter task");
    }
    assert_eq!(
        *order.lock().expect("order lock"),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(
        fake.attempts(),
        1,
        "one connection handed from waiter to waiter"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_timeout_fails_and_leaves_the_queue() {
    let mut s = settings(1);
    s.wait_timeout = Some(Duration::from_secs(2));
    let (pool, _fake) = pool(s);
    let held = pool.get().await.expect("get");
    let started = tokio::time::Instant::now();
    match pool.get().await {
        Err(PoolError::Timeout(d)) => assert_eq!(d, Duration::from_secs(2)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    let stats = pool.stats();
    assert_eq!((stats.waiting, stats.max_wait), (0, Duration::ZERO));
    assert_eq!(pool.metrics().wait_timeouts.load(SeqCst), 1);
    // The returned connection goes to idle, not to the departed waiter.
    drop(held);
    assert_eq!(pool.stats().idle, 1);
}

#[tokio::test]
async fn dropped_waiter_does_not_leak_the_connection() {
    let (pool, fake) = pool(settings(1));
    let held = pool.get().await.expect("get");
    let held_id = held.id;
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    until(LIMIT, "waiter queued", || pool.stats().waiting == 1).await;
    waiter.abort();
    assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!(pool.stats().waiting, 0);
    drop(held);
    assert_eq!(pool.stats().idle, 1);
    assert_eq!(pool.get().await.expect("get again").id, held_id);
    assert_eq!(fake.attempts(), 1);
}

#[tokio::test]
async fn connection_sent_to_a_waiter_dropped_before_waking_comes_back() {
    let (pool, fake) = pool(settings(1));
    let held = pool.get().await.expect("get");
    {
        let mut waiting = pin!(pool.get());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(pool.stats().waiting, 1);
        // Checkin hands the connection to the queued waiter...
        drop(held);
        assert_eq!(pool.stats().active, 1);
        // ...which is dropped without ever reading it.
    }
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active, stats.waiting), (1, 0, 0));
    pool.get().await.expect("get again");
    assert_eq!(fake.attempts(), 1);
}

#[tokio::test]
async fn connection_skips_a_departed_waiter_for_the_next() {
    let (pool, _fake) = pool(settings(1));
    let held = pool.get().await.expect("get");
    let mut cx = Context::from_waker(Waker::noop());
    let mut first = Box::pin(pool.get());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    let mut second = pin!(pool.get());
    assert!(second.as_mut().poll(&mut cx).is_pending());
    assert_eq!(pool.stats().waiting, 2);
    drop(held);
    drop(first);
    match second.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(conn)) => assert_eq!(conn.id, 1),
        other => panic!("second waiter should have the connection: {other:?}"),
    }
    assert_eq!(pool.stats().waiting, 0);
}

#[tokio::test]
async fn non_reusable_checkin_lets_a_waiter_connect() {
    let (pool, fake) = pool(settings(1));
    let mut held = pool.get().await.expect("get");
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    until(LIMIT, "waiter queued", || pool.stats().waiting == 1).await;
    held.reusable = false;
    drop(held);
    let id = waiter.await.expect("waiter task").expect("waiter get");
    assert_eq!(id, 2);
    assert_eq!(fake.attempts(), 2);
    assert_eq!(fake.high_water(), 1);
}

#[tokio::test(start_paused = true)]
async fn failed_connect_passes_its_slot_to_a_waiter() {
    let (pool, fake) = pool(settings(1));
    fake.set_delay(Duration::from_millis(100));
    fake.fail_next.store(1, SeqCst);
    let p = pool.clone();
    let first = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    until(LIMIT, "first connecting", || pool.stats().connecting == 1).await;
    let p = pool.clone();
    let second = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    until(LIMIT, "second queued", || pool.stats().waiting == 1).await;
    assert!(matches!(
        first.await.expect("first task"),
        Err(PoolError::Connect(_))
    ));
    assert_eq!(second.await.expect("second task").expect("second get"), 1);
    assert_eq!(fake.attempts(), 2);
}

#[tokio::test]
async fn close_fails_current_waiters() {
    let (pool, fake) = pool(settings(1));
    let held = pool.get().await.expect("get");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.get().await.map(|c| c.id) })
        })
        .collect();
    until(LIMIT, "waiters queued", || pool.stats().waiting == 3).await;
    pool.close();
    for w in waiters {
        assert!(matches!(
            w.await.expect("waiter task"),
            Err(PoolError::Closed)
        ));
    }
    assert_eq!(pool.stats().waiting, 0);
    drop(held);
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn stats_report_the_longest_wait() {
    let (pool, _fake) = pool(settings(1));
    let held = pool.get().await.expect("get");
    let p = pool.clone();
    let waiter = tokio::spawn(async move { p.get().await.map(|c| c.id) });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = pool.stats();
    assert_eq!(stats.waiting, 1);
    assert!(stats.max_wait >= Duration::from_secs(3));
    drop(held);
    waiter.await.expect("waiter task").expect("waiter get");
    // The recorded wait is in the histogram, in microseconds.
    let waits = pool.metrics().wait_histogram();
    assert_eq!(waits.len(), 2);
    assert!(waits.max() >= 3_000_000);
}
