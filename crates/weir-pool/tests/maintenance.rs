//! The maintenance task: warm-up, reaping, probing, login retry, shutdown.
//! All on a paused clock, so hours pass instantly.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{pool, settings, until};

const TICK: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn warms_up_to_min_size() {
    let mut s = settings(5);
    s.min_size = 3;
    let (pool, fake) = pool(s);
    let _task = pool.spawn_maintenance(TICK);
    until(LIMIT, "warm", || pool.stats().idle == 3).await;
    tokio::time::sleep(TICK * 5).await;
    assert_eq!(fake.attempts(), 3);
    // Checked-out connections count toward min_size.
    let _a = pool.get().await.expect("get");
    tokio::time::sleep(TICK * 3).await;
    assert_eq!(fake.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn warm_up_never_exceeds_max_size() {
    let mut s = settings(2);
    s.min_size = 10;
    let (pool, fake) = pool(s);
    let held = [
        pool.get().await.expect("get"),
        pool.get().await.expect("get"),
    ];
    let _task = pool.spawn_maintenance(TICK);
    tokio::time::sleep(TICK * 5).await;
    assert_eq!(fake.attempts(), 2, "pool is full with busy connections");
    drop(held);
    tokio::time::sleep(TICK * 5).await;
    assert_eq!(fake.high_water(), 2);
    assert_eq!(pool.stats().idle, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_reaps_down_to_min_size() {
    let mut s = settings(5);
    s.min_size = 1;
    s.idle_timeout = Some(Duration::from_secs(10));
    let (pool, fake) = pool(s);
    let conns: Vec<_> = [
        pool.get().await,
        pool.get().await,
        pool.get().await,
        pool.get().await,
    ]
    .into_iter()
    .map(|c| c.expect("get"))
    .collect();
    drop(conns);
    let _task = pool.spawn_maintenance(TICK);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.stats().idle, 4, "not idle long enough yet");
    until(LIMIT, "reaped", || pool.stats().idle == 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.stats().idle, 1, "never below min_size");
    assert_eq!(fake.live(), 1);
    assert_eq!(fake.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn recently_used_connections_are_not_reaped() {
    let mut s = settings(5);
    s.idle_timeout = Some(Duration::from_secs(10));
    let (pool, _fake) = pool(s);
    let _task = pool.spawn_maintenance(TICK);
    for _ in 0..30 {
        drop(pool.get().await.expect("get"));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(pool.stats().idle, 1);
    assert_eq!(pool.metrics().connects.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_reaps_and_warm_up_replaces() {
    let mut s = settings(3);
    s.min_size = 2;
    s.max_lifetime = Some(Duration::from_secs(60));
    let (pool, fake) = pool(s);
    let _task = pool.spawn_maintenance(TICK);
    until(LIMIT, "warm", || pool.stats().idle == 2).await;
    assert_eq!(fake.attempts(), 2);
    tokio::time::sleep(Duration::from_secs(62)).await;
    assert_eq!(fake.attempts(), 4, "both replaced");
    assert_eq!(pool.stats().idle, 2);
    assert_eq!(pool.metrics().closed.load(SeqCst), 2);
    assert!(fake.high_water() <= 3);
}

#[tokio::test(start_paused = true)]
async fn dead_idle_connections_are_dropped() {
    let (pool, fake) = pool(settings(3));
    let mut a = pool.get().await.expect("get");
    let b = pool.get().await.expect("get");
    let c = pool.get().await.expect("get");
    a.alive = false;
    drop(c);
    drop(a);
    drop(b);
    let _task = pool.spawn_maintenance(TICK);
    until(LIMIT, "dead one dropped", || pool.stats().idle == 2).await;
    assert_eq!(fake.live(), 2);
    assert_eq!(pool.metrics().closed.load(SeqCst), 1);
    // The survivors keep their LIFO order: b was returned last.
    assert_eq!(pool.get().await.expect("get").id, 2);
}

#[tokio::test(start_paused = true)]
async fn login_retry_spaces_out_failed_warm_ups() {
    let mut s = settings(2);
    s.min_size = 1;
    s.login_retry = Duration::from_secs(10);
    let (pool, fake) = pool(s);
    fake.fail_next.store(2, SeqCst);
    let _task = pool.spawn_maintenance(TICK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.attempts(), 1);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(fake.attempts(), 1, "still inside login_retry");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.attempts(), 2);
    until(LIMIT, "warm after retries", || pool.stats().idle == 1).await;
    assert_eq!(fake.attempts(), 3);
    assert_eq!(pool.metrics().connect_errors.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn close_stops_maintenance() {
    let mut s = settings(2);
    s.min_size = 2;
    let (pool, fake) = pool(s);
    let task = pool.spawn_maintenance(Duration::from_secs(3600));
    until(LIMIT, "warm", || pool.stats().idle == 2).await;
    pool.close();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("maintenance ended promptly")
        .expect("maintenance task");
    assert_eq!(fake.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_pool_stops_maintenance() {
    let (pool, fake) = pool(settings(2));
    let task = pool.spawn_maintenance(TICK);
    tokio::time::sleep(TICK).await;
    drop(pool);
    tokio::time::timeout(TICK * 3, task)
        .await
        .expect("maintenance ended")
        .expect("maintenance task");
    assert_eq!(fake.live(), 0);
}
