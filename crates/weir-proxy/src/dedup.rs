//! Single-flight query dedup: while one client's read runs on a server, clients that
//! send the identical request (same text, database, user and session settings) wait
//! for that execution and get its answer's bytes instead of running it again.
//!
//! The first client of a key leads: its request runs as usual and the relay's sink
//! copies the server's answer into the flight ([`Leader::record`]) up to
//! `dedup_max_bytes`. At the answer's ReadyForQuery the flight is published to the
//! followers. A leader that cannot finish cleanly (its session ended, the answer grew
//! too big, the checkout was refused) publishes "run it yourself", and each follower
//! then runs its own request as if no flight had existed.

pub mod classify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

/// What a flight's followers get.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The leader's answer, ReadyForQuery included.
    Answer(Bytes),
    /// No answer to share: run the request yourself.
    RunYourself,
}

/// Where a flight's outcome is published (`None` until the leader is done).
type FlightRx = watch::Receiver<Option<Outcome>>;

/// The flights in progress, one per key, and what dedup has saved.
#[derive(Debug, Default)]
pub struct Dedup {
    flights: Mutex<HashMap<Box<[u8]>, FlightRx>>,
    /// Requests answered from another client's execution.
    pub shared: AtomicU64,
    /// Bytes of answers those requests got without a server.
    pub bytes_saved: AtomicU64,
    /// Requests that led a flight (ran on a server, answer offered to followers).
    pub led: AtomicU64,
    /// Flights that ended without an answer to share (too big, failed, refused).
    pub unshared: AtomicU64,
}

/// A client's part in a flight.
pub enum Role {
    /// Run the request and record its answer.
    Leader(Leader),
    /// Wait for the leader's outcome.
    Follower(FlightRx),
}

impl Dedup {
    /// Joins the flight for `key`, or starts it.
    pub fn join(self: &Arc<Self>, key: Box<[u8]>, max_bytes: usize) -> Role {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = flights.get(&key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.clone(), rx);
        drop(flights);
        self.led.fetch_add(1, Relaxed);
        Role::Leader(Leader {
            dedup: Arc::clone(self),
            key,
            tx,
            answer: BytesMut::new(),
            max_bytes,
            overflow: false,
        })
    }

    /// Flights in progress (for tests and `SHOW`).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map(|f| f.len()).unwrap_or(0)
    }
}

/// The client whose execution a flight shares. Dropping it unfinished tells the
/// followers to run their requests themselves.
pub struct Leader {
    dedup: Arc<Dedup>,
    key: Box<[u8]>,
    tx: watch::Sender<Option<Outcome>>,
    answer: BytesMut,
    max_bytes: usize,
    overflow: bool,
}

impl Leader {
    /// Copies server output bound for the leader's client.
    pub fn record(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.answer.len() + bytes.len() > self.max_bytes {
            // Too big to hold for others: they run it themselves.
            self.overflow = true;
            self.answer = BytesMut::new();
            return;
        }
        self.answer.extend_from_slice(bytes);
    }

    /// The answer is complete: publish it (or "run it yourself" if it overflowed).
    pub fn finish(mut self) {
        let outcome = if self.overflow {
            Outcome::RunYourself
        } else {
            Outcome::Answer(std::mem::take(&mut self.answer).freeze())
        };
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: Outcome) {
        {
            // Out of the map first: a client arriving from now on starts a new flight.
            let mut flights = self.dedup.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights
                .get(&self.key)
                .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
            {
                flights.remove(&self.key);
            }
        }
        if matches!(outcome, Outcome::RunYourself) {
            self.dedup.unshared.fetch_add(1, Relaxed);
        }
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.tx.borrow().is_none() {
            self.publish(Outcome::RunYourself);
        }
    }
}

/// Waits for a flight's outcome; a leader gone without one means "run it yourself".
pub async fn outcome(mut rx: FlightRx) -> Outcome {
    match rx.wait_for(Option::is_some).await {
        Ok(o) => o.clone().unwrap_or(Outcome::RunYourself),
        Err(_) => Outcome::RunYourself,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_answer_and_later_clients_lead_anew() {
        let d = Arc::new(Dedup::default());
        let Role::Leader(mut leader) = d.join(b"k".to_vec().into(), 1024) else {
            panic!("first client leads");
        };
        let Role::Follower(rx) = d.join(b"k".to_vec().into(), 1024) else {
            panic!("second client follows");
        };
        leader.record(b"answer");
        leader.finish();
        match outcome(rx).await {
            Outcome::Answer(b) => assert_eq!(&b[..], b"answer"),
            Outcome::RunYourself => panic!("answer expected"),
        }
        assert!(matches!(
            d.join(b"k".to_vec().into(), 1024),
            Role::Leader(_)
        ));
    }

    #[tokio::test]
    async fn a_leader_that_fails_or_overflows_sends_followers_to_run_it_themselves() {
        let d = Arc::new(Dedup::default());
        let Role::Leader(leader) = d.join(b"a".to_vec().into(), 4) else {
            panic!("leads");
        };
        let Role::Follower(rx) = d.join(b"a".to_vec().into(), 4) else {
            panic!("follows");
        };
        drop(leader);
        assert!(matches!(outcome(rx).await, Outcome::RunYourself));

        let Role::Leader(mut leader) = d.join(b"b".to_vec().into(), 4) else {
            panic!("leads");
        };
        let Role::Follower(rx) = d.join(b"b".to_vec().into(), 4) else {
            panic!("follows");
        };
        leader.record(b"too big");
        leader.finish();
        assert!(matches!(outcome(rx).await, Outcome::RunYourself));
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.unshared.load(Relaxed), 2);
    }
}
