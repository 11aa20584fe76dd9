//! Per-pool counters and latency histograms, written on the hot path by every
//! worker thread and read (rarely) by the admin console, `/metrics` and the
//! scaling engine.
//!
//! Histograms are sharded so recording takes no lock and shares no cache line with
//! another worker: each thread counts into its own shard (see [`sharded`]); readers
//! merge all shards into an hdrhistogram (3 significant digits over 1 µs..1 h). A
//! shard's counters are allocated on its first record, so shards no thread uses cost
//! nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::request::{Class, CLASSES};

mod sharded;
use sharded::ShardedHistogram;

/// Lowest value the histograms resolve, in microseconds.
const LOWEST_US: u64 = 1;
/// Highest value the histograms track (one hour, in microseconds); longer
/// durations are recorded as this.
const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits kept per value.
const SIGFIG: u8 = 3;

/// Counters and histograms of one pool. Durations are in microseconds.
///
/// The pool records checkouts, waits, connects and closes; the proxy records
/// transactions, queries and bytes.
pub struct PoolMetrics {
    /// Successful checkouts.
    pub checkouts: AtomicU64,
    /// Checkouts that gave up after `wait_timeout`.
    pub wait_timeouts: AtomicU64,
    /// Checkouts shed under overload (queue full, or expected wait over budget).
    pub shed: AtomicU64,
    /// Connections opened.
    pub connects: AtomicU64,
    /// Connect attempts that failed or timed out.
    pub connect_errors: AtomicU64,
    /// Connections the pool closed (not reusable, dead, expired, surplus, shutdown).
    pub closed: AtomicU64,
    /// Transactions recorded with [`PoolMetrics::record_transaction`].
    pub transactions: AtomicU64,
    /// Queries recorded with [`PoolMetrics::record_query`].
    pub queries: AtomicU64,
    /// Bytes forwarded from clients to servers (recorded by the proxy).
    pub bytes_from_client: AtomicU64,
    /// Bytes forwarded from servers to clients (recorded by the proxy).
    pub bytes_from_server: AtomicU64,
    /// Total checkout wait time, µs.
    pub wait_us: AtomicU64,
    /// Total transaction time, µs.
    pub xact_us: AtomicU64,
    /// Total query time, µs.
    pub query_us: AtomicU64,
    /// Transaction-mode clients pinned to a server connection by a session feature, now.
    pub pinned_clients: AtomicU64,
    /// Times a client was pinned (LISTEN, advisory lock, WITH HOLD cursor, ...).
    pub pins: AtomicU64,
    /// Prepared statements parsed on a server connection under the proxy's names: the
    /// client's statement was not there yet, or a cached unnamed statement with
    /// parameters was parsed again after five executions so each gets a custom plan.
    pub prepares: AtomicU64,
    /// Named prepared statement uses served by a statement the server already had.
    pub prepare_hits: AtomicU64,
    /// Errors relayed to clients, by SQLSTATE class (the first two characters).
    errors: Mutex<BTreeMap<[u8; 2], u64>>,
    /// Checkout waits per class ([`Class`] as index): a shard's histogram is allocated
    /// on its first record, so classes nobody uses cost 5 empty shard slots.
    wait: [ShardedHistogram; CLASSES],
    xact: ShardedHistogram,
    query: ShardedHistogram,
}

impl PoolMetrics {
    /// Zeroed metrics with one histogram shard slot per two threads of parallelism.
    pub fn new() -> Self {
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = parallelism.saturating_mul(2);
        Self {
            checkouts: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            bytes_from_client: AtomicU64::new(0),
            bytes_from_server: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            xact_us: AtomicU64::new(0),
            query_us: AtomicU64::new(0),
            pinned_clients: AtomicU64::new(0),
            pins: AtomicU64::new(0),
            prepares: AtomicU64::new(0),
            prepare_hits: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            wait: std::array::from_fn(|_| ShardedHistogram::new(shards)),
            xact: ShardedHistogram::new(shards),
            query: ShardedHistogram::new(shards),
        }
    }

    /// Record one checkout wait of a `normal` client.
    pub fn record_wait(&self, d: Duration) {
        self.record_wait_of(Class::Normal, d);
    }

    /// Record one checkout wait of a client of `class` (the pool calls this for every
    /// checkout).
    pub fn record_wait_of(&self, class: Class, d: Duration) {
        let us = micros(d);
        self.wait_us.fetch_add(us, Relaxed);
        self.wait[class as usize].record(us);
    }

    /// Record one finished transaction and its duration.
    pub fn record_transaction(&self, d: Duration) {
        let us = micros(d);
        self.transactions.fetch_add(1, Relaxed);
        self.xact_us.fetch_add(us, Relaxed);
        self.xact.record(us);
    }

    /// Record one finished query and its duration.
    pub fn record_query(&self, d: Duration) {
        let us = micros(d);
        self.queries.fetch_add(1, Relaxed);
        self.query_us.fetch_add(us, Relaxed);
        self.query.record(us);
    }

    /// Counts one error sent to a client, by its SQLSTATE's class. Errors are rare next
    /// to queries, so a short lock is fine here.
    pub fn record_error(&self, sqlstate: &[u8]) {
        let class = match sqlstate {
            [a, b, ..] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => [*a, *b],
            _ => *b"XX",
        };
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        *errors.entry(class).or_insert(0) += 1;
    }

    /// Errors sent to clients so far, by SQLSTATE class (`"23"`, `"57"`, ...).
    pub fn errors_by_class(&self) -> Vec<(String, u64)> {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors
            .iter()
            .map(|(c, n)| (String::from_utf8_lossy(c).into_owned(), *n))
            .collect()
    }

    /// Snapshot of all checkout waits so far, in µs, merged over shards and classes.
    pub fn wait_histogram(&self) -> Histogram<u64> {
        let mut merged = empty_histogram();
        for w in &self.wait {
            w.merge_into(&mut merged);
        }
        merged
    }

    /// Snapshot of the checkout waits of clients of `class` so far, in µs.
    pub fn wait_histogram_of(&self, class: Class) -> Histogram<u64> {
        self.wait[class as usize].snapshot()
    }

    /// Snapshot of all transaction durations so far, in µs, merged over shards.
    pub fn transaction_histogram(&self) -> Histogram<u64> {
        self.xact.snapshot()
    }

    /// Snapshot of all query durations so far, in µs, merged over shards.
    pub fn query_histogram(&self) -> Histogram<u64> {
        self.query.snapshot()
    }
}

impl Default for PoolMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolMetrics")
            .field("checkouts", &self.checkouts)
            .field("wait_timeouts", &self.wait_timeouts)
            .field("shed", &self.shed)
            .field("connects", &self.connects)
            .field("connect_errors", &self.connect_errors)
            .field("closed", &self.closed)
            .field("transactions", &self.transactions)
            .field("queries", &self.queries)
            .field("bytes_from_client", &self.bytes_from_client)
            .field("bytes_from_server", &self.bytes_from_server)
            .field("wait_us", &self.wait_us)
            .field("xact_us", &self.xact_us)
            .field("query_us", &self.query_us)
            .finish_non_exhaustive()
    }
}

/// Whole microseconds, saturating (a `u64` of µs is 584 000 years).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An empty histogram with the pool-wide bounds.
fn empty_histogram() -> Histogram<u64> {
    // The bounds are constants checked by a unit test, so this cannot fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .expect("constant histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounds_are_valid() {
        let h = empty_histogram();
        assert_eq!(h.low(), LOWEST_US);
        assert!(h.high() >= HIGHEST_US);
    }

    #[test]
    fn saturates_and_totals() {
        let m = PoolMetrics::new();
        m.record_query(Duration::from_secs(10 * 3600));
        m.record_query(Duration::ZERO);
        m.record_query(Duration::from_micros(1500));
        let h = m.query_histogram();
        assert_eq!(h.len(), 3);
        assert!(h.max() >= HIGHEST_US && h.max() <= HIGHEST_US + HIGHEST_US / 1000);
        assert_eq!(h.min(), 0);
        assert_eq!(m.queries.load(Relaxed), 3);
        assert_eq!(m.query_us.load(Relaxed), 10 * 3_600_000_000 + 1500);
    }

    #[test]
    fn merges_counts_from_many_threads() {
        let m = Arc::new(PoolMetrics::new());
        let threads = 16;
        let per_thread = 5_000u64;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        m.record_transaction(Duration::from_micros(100 + (i + t) % 900));
                        m.record_wait(Duration::from_micros(7));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("recording thread panicked");
        }
        let total = threads * per_thread;
        let x = m.transaction_histogram();
        assert_eq!(x.len(), total);
        assert_eq!(x.min(), 100);
        assert_eq!(x.max(), 999);
        assert_eq!(m.transactions.load(Relaxed), total);
        let w = m.wait_histogram();
        assert_eq!(w.len(), total);
        assert_eq!(w.value_at_quantile(0.5), 7);
        assert_eq!(m.wait_us.load(Relaxed), total * 7);
        assert!(m.query_histogram().is_empty());
    }

    #[test]
    fn waits_are_kept_per_class_and_merged() {
        let m = PoolMetrics::new();
        m.record_wait_of(Class::Critical, Duration::from_micros(10));
        m.record_wait_of(Class::Low, Duration::from_micros(5000));
        m.record_wait_of(Class::Low, Duration::from_micros(7000));
        m.record_wait(Duration::from_micros(20));
        assert_eq!(m.wait_histogram_of(Class::Critical).len(), 1);
        assert_eq!(m.wait_histogram_of(Class::Low).len(), 2);
        assert_eq!(m.wait_histogram_of(Class::Normal).len(), 1);
        assert!(m.wait_histogram_of(Class::High).is_empty());
        let all = m.wait_histogram();
        assert_eq!(all.len(), 4);
        assert_eq!(all.min(), 10);
        assert_eq!(m.wait_us.load(Relaxed), 12_030);
    }
}
