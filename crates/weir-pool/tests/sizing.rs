//! `max_size` under heavy concurrency, and resizing at runtime.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{pool, settings, until};
use weir_pool::PoolSettings;

const LIMIT: Duration = Duration::from_secs(5);

/// xorshift64*: reproducible hold times without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_size_is_never_exceeded_under_200_tasks() {
    const MAX: u32 = 8;
    let (pool, fake) = pool(settings(MAX));
    fake.set_delay(Duration::from_micros(200));
    let tasks: Vec<_> = (0..200u64)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut rng = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..10 {
                    let mut conn = pool.get().await.expect("get");
                    let r = next_random(&mut rng);
                    tokio::time::sleep(Duration::from_micros(r % 1500)).await;
                    match r % 13 {
                        0 => conn.reusable = false,
                        1 => conn.alive = false,
                        2 => {
                            conn.discard();
                            continue;
                        }
                        _ => {}
                    }
                    drop(conn);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert!(fake.high_water() <= MAX, "high water {}", fake.high_water());
    assert_eq!(pool.metrics().checkouts.load(SeqCst), 2000);
    let stats = pool.stats();
    assert_eq!((stats.active, stats.connecting, stats.waiting), (0, 0, 0));
    assert_eq!(stats.idle, fake.live());
    assert!(stats.idle <= MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resizing_under_load_respects_the_largest_size() {
    let (pool, fake) = pool(settings(6));
    fake.set_delay(Duration::from_micros(100));
    let tasks: Vec<_> = (0..100u64)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut rng = (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for _ in 0..10 {
                    let conn = pool.get().await.expect("get");
                    let r = next_random(&mut rng);
                    tokio::time::sleep(Duration::from_micros(r % 800)).await;
                    drop(conn);
                }
            })
        })
        .collect();
    for size in [2, 12, 3, 9, 1, 6] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        pool.update_settings(settings(size));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert!(fake.high_water() <= 12, "high water {}", fake.high_water());
    let stats = pool.stats();
    assert_eq!((stats.active, stats.connecting, stats.waiting), (0, 0, 0));
    assert!(stats.idle <= 6 && stats.idle == fake.live());
}

#[tokio::test]
async fn shrinking_closes_idle_now_and_busy_at_checkin() {
    let (pool, fake) = pool(settings(4));
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(pool.get().await.expect("get"));
    }
    pool.update_settings(settings(2));
    assert_eq!(pool.stats().max_size, 2);
    drop(conns.pop());
    drop(conns.pop());
    assert_eq!(fake.live(), 2, "surplus busy connections close at checkin");
    conns.clear();
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.active), (2, 0));

    pool.update_settings(settings(4));
    let held: Vec<_> = [pool.get().await, pool.get().await, pool.get().await]
        .into_iter()
        .map(|c| c.expect("get"))
        .collect();
    drop(held);
    assert_eq!(pool.stats().idle, 3);
    pool.update_settings(settings(1));
    assert_eq!(
        pool.stats().idle,
        1,
        "surplus idle connections close at once"
    );
    assert_eq!(fake.live(), 1);
}

#[tokio::test]
async fn growing_lets_waiters_connect() {
    let (pool, fake) = pool(settings(1));
    let held = pool.get().await.expect("get");
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.get().await.map(|c| c.id) })
        })
        .collect();
    until(LIMIT, "waiters queued", || pool.stats().waiting == 2).await;
    pool.update_settings(PoolSettings {
        max_size: 3,
        ..settings(1)
    });
    for w in waiters {
        w.await.expect("waiter task").expect("waiter get");
    }
    assert_eq!(fake.attempts(), 3);
    assert_eq!(fake.high_water(), 3);
    drop(held);
}

#[tokio::test]
async fn zero_max_size_waits_until_grown() {
    let mut s = settings(0);
    s.wait_timeout = Some(Duration::from_millis(20));
    let (pool, _fake) = pool(s.clone());
    assert!(pool.get().await.is_err());
    s.max_size = 1;
    pool.update_settings(s);
    pool.get().await.expect("get after grow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_cancellations_under_load_leak_nothing() {
    const MAX: u32 = 4;
    let mut s = settings(MAX);
    s.wait_timeout = Some(Duration::from_micros(300));
    let (pool, fake) = pool(s);
    fake.set_delay(Duration::from_micros(50));
    let tasks: Vec<_> = (0..200u64)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut rng = (t + 7).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for _ in 0..20 {
                    let r = next_random(&mut rng);
                    // Some checkouts are abandoned mid-wait, racing with hand-offs.
                    let cap = Duration::from_micros(r % 400);
                    if let Ok(Ok(mut conn)) = tokio::time::timeout(cap, pool.get()).await {
                        tokio::time::sleep(Duration::from_micros(r % 300)).await;
                        if r.is_multiple_of(11) {
                            conn.reusable = false;
                        }
                    }
                }
            })
        })
        .collect();
    // Abort a few tasks outright, wherever they are.
    for t in tasks.iter().step_by(17) {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    assert!(fake.high_water() <= MAX, "high water {}", fake.high_water());
    let stats = pool.stats();
    assert_eq!((stats.active, stats.connecting, stats.waiting), (0, 0, 0));
    assert_eq!(stats.idle, fake.live());
    // Every slot is usable again.
    let held: Vec<_> = check_out_all(&pool, MAX).await;
    assert_eq!(held.len(), MAX as usize);
}

async fn check_out_all(
    pool: &weir_pool::Pool<common::Fake>,
    n: u32,
) -> Vec<weir_pool::PooledConnection<common::Fake>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.get().await.expect("slot available"));
    }
    out
}

#[tokio::test]
async fn close_idle_lru_closes_one_idle_connection_and_frees_its_slot() {
    let (pool, fake) = pool(settings(2));
    let a = pool.get().await.expect("a");
    let b = pool.get().await.expect("b");
    assert!(!pool.close_idle_lru(), "nothing idle yet");
    drop(a);
    drop(b);
    assert_eq!(fake.live(), 2);
    assert!(pool.close_idle_lru());
    assert_eq!(fake.live(), 1);
    assert_eq!(pool.stats().idle, 1);
    // The freed slot is usable: two checkouts at once still work.
    let _c = pool.get().await.expect("c");
    let _d = pool.get().await.expect("d");
    assert!(fake.high_water() <= 2);
}
