//! How a session is told to end from outside: `KILL`, a fast shutdown, or the drain of a
//! graceful one. One flag and one waker slot per client, inside its registry entry: no
//! waiter node, no allocation, and nothing pinned in the session's future, which every
//! idle client keeps (a cancellation token cost ~250 bytes per client here).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};

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

/// What wakes an idle session besides its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleWake {
    /// It must end.
    Stop(Stop),
    /// The parking lot's sweep asks it to park ([`crate::park`]).
    Park,
}

/// One session's stop request and the waker of the session waiting for it (or of the
/// parking lot, while it is parked). Only one waits on it, so one waker slot is enough.
#[derive(Debug, Default)]
pub struct StopSignal {
    requested: AtomicU8,
    /// Asked to park, or parked: the sweep asks only once.
    park: AtomicBool,
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

    /// An idle session's wait: ready for any stop, and for a park request if `parks`.
    pub fn poll_idle(&self, cx: &mut Context<'_>, parks: bool) -> Poll<IdleWake> {
        if let Poll::Ready(stop) = self.poll_stop(cx, true) {
            return Poll::Ready(IdleWake::Stop(stop));
        }
        if parks && self.park.load(Relaxed) {
            return Poll::Ready(IdleWake::Park);
        }
        Poll::Pending
    }

    /// Asks an idle session to park, once (until it runs a transaction again).
    pub fn request_park(&self) {
        if !self.park.swap(true, SeqCst) {
            self.waker.wake();
        }
    }

    /// Whether a park was asked and not yet cleared.
    pub fn park_requested(&self) -> bool {
        self.park.load(Relaxed)
    }

    /// The session is busy again: a later idle spell may be asked to park. One relaxed
    /// load per transaction when there is nothing to clear.
    pub fn clear_park(&self) {
        if self.park.load(Relaxed) {
            self.park.store(false, Relaxed);
        }
    }

    /// Makes `waker` the one a request wakes (the parking lot's, while parked).
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
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
