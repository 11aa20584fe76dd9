//! Load shedding and the ordered wait queue: a full queue (`max_queue`) turns the
//! newcomer away at once, unless a less important waiter can make room; a waiter whose
//! expected wait (queue position over the measured release rate) exceeds its budget is
//! shed at once; more important classes are served first.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{pool, settings, until};
use weir_pool::{Checkout, Class, PoolError, ShedReason};

const LIMIT: Duration = Duration::from_secs(5);

fn req(class: Class) -> Checkout {
    Checkout {
        class,
        budget: None,
    }
}

#[tokio::test]
async fn a_full_queue_sheds_the_newcomer_at_once() {
    let mut s = settings(1);
    s.max_queue = 2;
    let (pool, _fake) = pool(s);
    let held = pool.get().await.expect("the only connection");
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.get().await.map(|c| c.id) })
        })
        .collect();
    until(LIMIT, "two waiters", || pool.stats().waiting == 2).await;
    let started = tokio::time::Instant::now();
    match pool.get().await {
        Err(PoolError::Shed { reason }) => {
            assert!(
                matches!(reason, ShedReason::QueueFull { max_queue: 2, .. }),
                "{reason:?}"
            );
            assert!(reason.to_string().contains("max_queue = 2"), "{reason}");
        }
        other => panic!("expected Shed, got {:?}", other.map(|c| c.id)),
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(pool.metrics().shed.load(SeqCst), 1);
    drop(held);
    for w in waiters {
        w.await.expect("task").expect("admitted waiters are served");
    }
}

#[tokio::test]
async fn a_more_important_newcomer_sheds_the_least_important_waiter() {
    let mut s = settings(1);
    s.max_queue = 1;
    let (pool, _fake) = pool(s);
    let held = pool.get().await.expect("the only connection");
    let low = {
        let p = pool.clone();
        tokio::spawn(async move { p.checkout(&req(Class::Low)).await.map(|c| c.id) })
    };
    until(LIMIT, "the low waiter", || pool.stats().waiting == 1).await;
    let high = {
        let p = pool.clone();
        tokio::spawn(async move { p.checkout(&req(Class::High)).await.map(|c| c.id) })
    };
    match low.await.expect("task") {
        Err(PoolError::Shed { reason }) => {
            assert!(matches!(reason, ShedReason::QueueFull { .. }), "{reason:?}");
            assert!(reason.to_string().contains("overload"), "{reason}");
        }
        other => panic!("the low waiter should be shed, got {other:?}"),
    }
    drop(held);
    high.await
        .expect("task")
        .expect("the high waiter is served");
}

#[tokio::test]
async fn more_important_classes_are_served_first() {
    let (pool, _fake) = pool(settings(1));
    let held = pool.get().await.expect("the only connection");
    let mut tasks = Vec::new();
    for class in [Class::Low, Class::Normal, Class::Critical] {
        let p = pool.clone();
        tasks.push(tokio::spawn(async move {
            let c = p.checkout(&req(class)).await.expect("served");
            let order = p.metrics().checkouts.load(SeqCst);
            drop(c);
            (class, order)
        }));
        let n = tasks.len() as u32;
        until(LIMIT, "queued", || pool.stats().waiting == n).await;
    }
    drop(held);
    let mut served = Vec::new();
    for t in tasks {
        served.push(t.await.expect("task"));
    }
    served.sort_by_key(|(_, order)| *order);
    let classes: Vec<_> = served.into_iter().map(|(c, _)| c).collect();
    assert_eq!(classes, [Class::Critical, Class::Normal, Class::Low]);
}

#[tokio::test]
async fn a_hopeless_expected_wait_is_shed_at_once() {
    let (pool, _fake) = pool(settings(1));
    // Teach the pool its release rate under load: ~20 ms per release.
    let held = pool.get().await.expect("connection");
    let mut waiters = Vec::new();
    for _ in 0..30 {
        let p = pool.clone();
        waiters.push(tokio::spawn(async move {
            let c = p.get().await.expect("served");
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(c);
        }));
    }
    until(LIMIT, "thirty waiters", || pool.stats().waiting == 30).await;
    drop(held);
    // Once about a dozen releases were seen (~250 ms), one that may wait only 5 ms is
    // behind the rest, at 20 ms a release.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(pool.stats().waiting >= 5, "still draining");
    let tight = Checkout {
        class: Class::Normal,
        budget: Some(Duration::from_millis(5)),
    };
    let result = pool.checkout(&tight).await;
    match result {
        Err(PoolError::Shed { reason }) => {
            assert!(matches!(reason, ShedReason::Hopeless { .. }), "{reason:?}");
            assert!(reason.to_string().contains("expected wait"), "{reason}");
        }
        other => panic!("expected Shed, got {:?}", other.map(|c| c.id)),
    }
    for w in waiters {
        w.await.expect("task");
    }
    // A generous budget waits its turn.
    let easy = Checkout {
        class: Class::Normal,
        budget: Some(Duration::from_secs(5)),
    };
    pool.checkout(&easy).await.expect("served");
}

#[tokio::test]
async fn reserved_servers_go_only_to_critical_checkouts() {
    let mut s = settings(4);
    s.reserve_critical = 2;
    let (pool, _fake) = pool(s);
    let mut low = Vec::new();
    for _ in 0..2 {
        low.push(
            pool.checkout(&req(Class::Low))
                .await
                .expect("an unreserved server"),
        );
    }
    // A third low checkout waits although two servers are free (or could be opened).
    let third = {
        let p = pool.clone();
        tokio::spawn(async move { p.checkout(&req(Class::Low)).await.map(|c| c.id) })
    };
    until(LIMIT, "the third low checkout to wait", || {
        pool.stats().waiting == 1
    })
    .await;
    // Critical work is served at once from the reserve, both reserved servers.
    let started = tokio::time::Instant::now();
    let c1 = pool
        .checkout(&req(Class::Critical))
        .await
        .expect("reserved");
    let c2 = pool
        .checkout(&req(Class::Critical))
        .await
        .expect("reserved");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(pool.stats().waiting, 1);
    // Servers coming back while two low checkouts still hold servers are among the
    // last two: they do not go to the low waiter.
    drop((c1, c2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        pool.stats().waiting,
        1,
        "a reserved server went to a low waiter"
    );
    // With one low checkout left, the next server is not among the last two.
    drop(low.pop());
    tokio::time::timeout(LIMIT, third)
        .await
        .expect("served once fewer than 2 servers are in use")
        .expect("task")
        .expect("a server");
}

#[tokio::test]
async fn a_reserve_as_big_as_the_pool_still_leaves_one_server_for_others() {
    let mut s = settings(2);
    s.reserve_critical = 5;
    let (pool, _fake) = pool(s);
    let held = pool
        .checkout(&req(Class::Background))
        .await
        .expect("one server is always open to all");
    let critical = pool
        .checkout(&req(Class::Critical))
        .await
        .expect("the reserved one");
    drop((held, critical));
}
