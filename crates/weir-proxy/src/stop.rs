//! How a session is told to end from outside: `KILL`, a fast shutdown, or the drain of a
//! graceful one. One flag and one waker slot per client, inside its registry entry: no
//! waiter node, no allocation, and nothing pinned in the session's future, which every
//! idle client keeps (a cancellation token cost ~250 bytes per client here).

use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// Why a session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stop {
    /// The proxy drains: end when no transaction is running.
    Drain = 1,
    /// Disconnect now (`KILL`, `RECONNECT`, fast shutdown).
    Kill = 2,
}

/// One session's stop request and the waker of the session waiting for it. Only the
/// session's own task waits on it, so one waker slot is enough.
#[derive(Debug, Default)]
pub struct StopSignal {
    requested: AtomicU8,
    waker: AtomicWaker,
}

impl StopSignal {
    /// Asks the session to end for `stop` (a kill outranks a drain) and wakes it.
    pub fn request(&self, stop: Stop) {
        self.requested.fetch_max(stop as u8, SeqCst);
        self.waker.wake();
    }

    /// What has been asked, if anything.
    pub fn requested(&self) -> Option<Stop> {
        match self.requested.load(SeqCst) {
            0 => None,
            1 => Some(Stop::Drain),
            _ => Some(Stop::Kill),
        }
    }

    /// Whether the session was told to disconnect now.
    pub fn is_killed(&self) -> bool {
        self.requested() == Some(Stop::Kill)
    }

    /// Ready once a stop that ends this wait is asked: a kill always, a drain when
    /// `drain_ends_it` (a drain lets running transactions finish).
    pub fn poll_stop(&self, cx: &mut Context<'_>, drain_ends_it: bool) -> Poll<Stop> {
        // Register first, then look: a request between the two still wakes us.
        self.waker.register(cx.waker());
        match self.requested() {
            Some(Stop::Kill) => Poll::Ready(Stop::Kill),
            Some(Stop::Drain) if drain_ends_it => Poll::Ready(Stop::Drain),
            _ => Poll::Pending,
        }
    }

    /// Waits for a stop that ends this wait (see [`StopSignal::poll_stop`]).
    pub async fn stopped(&self, drain_ends_it: bool) -> Stop {
        poll_fn(|cx| self.poll_stop(cx, drain_ends_it)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_kill_wakes_the_waiter_and_outranks_a_drain() {
        let signal = Arc::new(StopSignal::default());
        assert_eq!(signal.requested(), None);
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.stopped(true).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        signal.request(Stop::Kill);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.expect("woken").expect("task"), Stop::Kill);
        signal.request(Stop::Drain);
        assert!(signal.is_killed(), "a later drain does not undo a kill");
    }

    #[tokio::test]
    async fn a_drain_ends_only_waits_that_allow_it() {
        let signal = Arc::new(StopSignal::default());
        signal.request(Stop::Drain);
        assert_eq!(signal.stopped(true).await, Stop::Drain);
        let mid_transaction =
            tokio::time::timeout(Duration::from_millis(50), signal.stopped(false));
        assert!(
            mid_transaction.await.is_err(),
            "a drain lets a transaction finish"
        );
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.stopped(false).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        signal.request(Stop::Kill);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.expect("woken").expect("task"), Stop::Kill);
    }
}
