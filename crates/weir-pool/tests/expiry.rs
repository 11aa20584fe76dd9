//! `wait_timeout` of queued checkouts, enforced by the pool's one expiry task rather
//! than a timer per wait: nobody expires early or much late, a grant and an expiry
//! never both reach a waiter, a RELOAD's new limit applies to those already waiting,
//! and the task neither keeps the pool alive nor dies with the first runtime it ran on.
//! On a paused clock, so "late" is measured exactly.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{pool, settings, until, Fake, FakeError};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use weir_pool::{Checkout, Class, Pool, PoolError};

const LIMIT: Duration = Duration::from_secs(5);
/// How late an expiry may be: the timer wheel's 1 ms and a task switch.
const SLACK: Duration = Duration::from_millis(5);

type Outcome = (Duration, Result<u64, PoolError<FakeError>>);

/// A checkout of `class` in its own task: how long it took, and what it got (the
/// connection's id; the connection goes straight back).
fn waiter(pool: &Pool<Fake>, class: Class) -> JoinHandle<Outcome> {
    let pool = pool.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let req = Checkout {
            class,
            budget: None,
        };
        let got = pool.checkout(&req).await.map(|c| c.id);
        (started.elapsed(), got)
    })
}

/// Asserts a timeout with `limit` after waiting `limit`, give or take nothing early and
/// [`SLACK`] late.
fn assert_timed_out((waited, got): Outcome, limit: Duration) {
    match got {
        Err(PoolError::Timeout(d)) => assert_eq!(d, limit),
        other => panic!("expected Timeout({limit:?}), got {other:?}"),
    }
    assert!(
        waited >= limit,
        "expired early: after {waited:?} of {limit:?}"
    );
    assert!(
        waited <= limit + SLACK,
        "expired late: after {waited:?} of {limit:?}"
    );
}

fn with_wait_timeout(max_size: u32, limit: Option<Duration>) -> weir_pool::PoolSettings {
    let mut s = settings(max_size);
    s.wait_timeout = limit;
    s
}

#[tokio::test(start_paused = true)]
async fn a_queued_checkout_times_out_after_wait_timeout_not_before() {
    let limit = Duration::from_secs(2);
    let (pool, _fake) = pool(with_wait_timeout(1, Some(limit)));
    let held = pool.get().await.expect("the only connection");
    let w = waiter(&pool, Class::Normal);
    sleep(limit - Duration::from_millis(1)).await;
    assert!(!w.is_finished(), "expired before wait_timeout");
    assert_eq!(pool.stats().waiting, 1);
    assert_timed_out(w.await.expect("waiter task"), limit);
    assert_eq!(pool.stats().waiting, 0);
    assert_eq!(pool.metrics().wait_timeouts.load(SeqCst), 1);
    // The connection goes to idle, not to the departed waiter.
    drop(held);
    let s = pool.stats();
    assert_eq!((s.idle, s.active), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn waiters_that_started_at_different_times_expire_in_order() {
    let limit = Duration::from_secs(1);
    let (pool, _fake) = pool(with_wait_timeout(1, Some(limit)));
    let _held = pool.get().await.expect("the only connection");
    // Different classes too: each class's front bounds its own deadlines.
    let t0 = Instant::now();
    let first = waiter(&pool, Class::Low);
    sleep(Duration::from_millis(300)).await;
    let second = waiter(&pool, Class::High);
    sleep(Duration::from_millis(400)).await;
    let third = waiter(&pool, Class::Low);
    let fourth = waiter(&pool, Class::Normal);
    until(LIMIT, "four waiters", || pool.stats().waiting == 4).await;
    // Between the deadlines, exactly the earlier waiters have gone.
    sleep_until_after(t0, Duration::from_millis(1_100)).await;
    assert_eq!(pool.stats().waiting, 3);
    assert!(first.is_finished() && !second.is_finished());
    sleep_until_after(t0, Duration::from_millis(1_400)).await;
    assert_eq!(pool.stats().waiting, 2);
    assert!(second.is_finished() && !third.is_finished() && !fourth.is_finished());
    for w in [first, second, third, fourth] {
        assert_timed_out(w.await.expect("waiter task"), limit);
    }
    let end = Instant::now() - t0;
    assert!(end >= Duration::from_millis(1_700) && end <= Duration::from_millis(1_700) + SLACK);
    assert_eq!(pool.metrics().wait_timeouts.load(SeqCst), 4);
}

async fn sleep_until_after(t0: Instant, d: Duration) {
    tokio::time::sleep_until(t0 + d).await;
}

#[tokio::test(start_paused = true)]
async fn a_waiter_granted_before_its_deadline_is_not_expired() {
    let limit = Duration::from_secs(1);
    let (pool, _fake) = pool(with_wait_timeout(1, Some(limit)));
    let held = pool.get().await.expect("the only connection");
    let lucky = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let conn = pool.get().await?;
            // Held past its deadline: the checkout is over, nothing expires it.
            sleep(limit * 3).await;
            Ok::<_, PoolError<FakeError>>(conn.id)
        })
    };
    let unlucky = waiter(&pool, Class::Normal);
    until(LIMIT, "two waiters", || pool.stats().waiting == 2).await;
    sleep(limit - Duration::from_millis(10)).await;
    drop(held);
    assert_eq!(lucky.await.expect("task").expect("granted in time"), 1);
    assert_timed_out(unlucky.await.expect("task"), limit);
    assert_eq!(pool.metrics().wait_timeouts.load(SeqCst), 1);
    let s = pool.stats();
    assert_eq!((s.idle, s.active, s.waiting), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_grant_at_the_deadline_either_serves_or_expires_the_waiter_never_both() {
    let limit = Duration::from_secs(1);
    let ms = Duration::from_millis(1);
    let (pool, fake) = pool(with_wait_timeout(1, Some(limit)));
    let mut served = 0;
    for round in 0..30 {
        let held = pool.get().await.expect("the only connection");
        let w = waiter(&pool, Class::Normal);
        // Queued at this instant, without letting the clock move.
        for _ in 0..100 {
            if pool.stats().waiting == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.stats().waiting, 1);
        // A millisecond before the deadline, in the expiry task's timer tick, or after.
        let release = [limit - ms, limit, limit + ms][round % 3];
        sleep(release).await;
        drop(held);
        match w.await.expect("waiter task") {
            (waited, Ok(id)) => {
                assert_eq!(id, 1);
                assert!(release <= limit, "served after expiring, at {waited:?}");
                served += 1;
            }
            outcome => {
                assert!(release >= limit, "expired early");
                assert_timed_out(outcome, limit);
            }
        }
        let s = pool.stats();
        assert_eq!((s.idle, s.active, s.waiting), (1, 0, 0), "{s:?}");
        assert_eq!(
            pool.metrics().wait_timeouts.load(SeqCst),
            round as u64 + 1 - served
        );
    }
    assert_eq!(fake.attempts(), 1, "the one connection was never lost");
}

#[tokio::test(start_paused = true)]
async fn a_wait_timeout_change_applies_to_waiters_already_queued() {
    let long = Duration::from_secs(10);
    let short = Duration::from_secs(2);
    let (pool, _fake) = pool(with_wait_timeout(1, Some(long)));
    let held = pool.get().await.expect("the only connection");

    // Shortened: the waiter expires `short` after it started, not `long`.
    let w = waiter(&pool, Class::Normal);
    sleep(Duration::from_secs(1)).await;
    pool.update_settings(with_wait_timeout(1, Some(short)));
    assert_timed_out(w.await.expect("task"), short);

    // Lengthened: it outlives the old deadline.
    let w = waiter(&pool, Class::Normal);
    sleep(Duration::from_secs(1)).await;
    pool.update_settings(with_wait_timeout(1, Some(long)));
    sleep(short * 2).await;
    assert!(!w.is_finished(), "expired by the old wait_timeout");
    assert_timed_out(w.await.expect("task"), long);

    // None: it waits as long as it takes.
    pool.update_settings(with_wait_timeout(1, None));
    let w = waiter(&pool, Class::Normal);
    sleep(long * 100).await;
    assert!(!w.is_finished(), "no wait_timeout, no expiry");

    // Set again while it waits: it applies from when the waiter started.
    pool.update_settings(with_wait_timeout(1, Some(short)));
    let (waited, got) = w.await.expect("task");
    assert!(matches!(got, Err(PoolError::Timeout(d)) if d == short));
    assert!(
        waited >= long * 100 && waited <= long * 100 + SLACK,
        "{waited:?}"
    );
    assert_eq!(pool.metrics().wait_timeouts.load(SeqCst), 3);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn without_wait_timeout_waiters_wait_until_served() {
    let (pool, _fake) = pool(with_wait_timeout(1, None));
    let held = pool.get().await.expect("the only connection");
    let w = waiter(&pool, Class::Normal);
    sleep(Duration::from_secs(24 * 3600)).await;
    assert!(!w.is_finished());
    drop(held);
    let (waited, got) = w.await.expect("task");
    assert_eq!(got.expect("served"), 1);
    assert!(waited >= Duration::from_secs(24 * 3600));
}

/// The task lives on the runtime of the first checkout that had to wait; when that
/// runtime ends and the pool lives on, the next one starts another.
#[test]
fn the_expiry_task_moves_on_when_its_runtime_ends() {
    let limit = Duration::from_millis(300);
    let (pool, _fake) = pool(with_wait_timeout(1, Some(limit)));
    for round in 0..3 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let held = pool.get().await.expect("the only connection");
            // Bounded: without a live expiry task this would wait forever.
            let outcome = tokio::time::timeout(limit * 10, waiter(&pool, Class::Normal))
                .await
                .expect("expired by a task on this runtime")
                .expect("task");
            assert_timed_out(outcome, limit);
            drop(held);
        });
        drop(runtime);
        assert_eq!(
            pool.metrics().wait_timeouts.load(SeqCst),
            round + 1,
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_on_a_multi_thread_runtime_is_on_time() {
    let limit = Duration::from_millis(100);
    let (pool, _fake) = pool(with_wait_timeout(2, Some(limit)));
    let _held = [
        pool.get().await.expect("first"),
        pool.get().await.expect("second"),
    ];
    let waiters: Vec<_> = (0..16)
        .map(|i| waiter(&pool, Class::ALL[i % Class::ALL.len()]))
        .collect();
    for w in waiters {
        let (waited, got) = w.await.expect("task");
        assert!(
            matches!(got, Err(PoolError::Timeout(d)) if d == limit),
            "{got:?}"
        );
        // Real time on a busy 2-core box: generous on the late side only.
        assert!(waited >= limit, "expired early: {waited:?}");
        assert!(waited < limit * 10, "expired late: {waited:?}");
    }
    assert_eq!(pool.metrics().wait_timeouts.load(SeqCst), 16);
    assert_eq!(pool.stats().waiting, 0);
}
