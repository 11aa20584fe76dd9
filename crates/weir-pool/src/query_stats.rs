//! Per-query statistics for `SHOW QUERIES`: calls, total time and a p99 per query
//! fingerprint (literals normalized by [`weir_wire::sql`]).
//!
//! The relay records every finished query through its session's [`Batch`]: the
//! fingerprint is computed once per distinct text a client sends (the common shapes in
//! one pass, see `weir_wire::sql`), and one short lock on one of 16 shards is taken per
//! 16 executions of a fingerprint, not per query; the normalized text is computed once per fingerprint, outside the lock. The store is bounded: when a shard is full, a new fingerprint replaces
//! the one with the least total time (so the heavy hitters stay).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use weir_wire::sql;

/// Default bound on distinct fingerprints kept.
pub const DEFAULT_CAPACITY: usize = 5000;

const SHARDS: usize = 16;
/// Histogram buckets per power of two (bucket width ≈ 19%).
const SUB: u32 = 4;
/// Buckets cover 0 µs .. 2^40 µs (12.7 days); longer is counted in the last one.
const BUCKETS: usize = (40 * SUB) as usize;

/// One fingerprint's totals, as `SHOW QUERIES` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRow {
    /// Stable 64-bit hash of the normalized query.
    pub fingerprint: u64,
    /// The normalized text (literals replaced by `$n`), from the first sighting.
    pub query: String,
    /// Executions recorded.
    pub calls: u64,
    /// Total execution time, µs.
    pub total_time_us: u64,
    /// Mean execution time, µs.
    pub mean_us: u64,
    /// 99th percentile execution time, µs (upper bound of its bucket, at most the max).
    pub p99_us: u64,
    /// Longest execution, µs.
    pub max_us: u64,
}

struct Entry {
    query: Box<str>,
    calls: u64,
    total_us: u64,
    max_us: u64,
    buckets: Box<[u32; BUCKETS]>,
}

impl Entry {
    fn new(query: String) -> Self {
        Self {
            query: query.into_boxed_str(),
            calls: 0,
            total_us: 0,
            max_us: 0,
            buckets: Box::new([0; BUCKETS]),
        }
    }

    fn add(&mut self, us: u64) {
        self.calls = self.calls.saturating_add(1);
        self.total_us = self.total_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
        if let Some(b) = self.buckets.get_mut(bucket(us)) {
            *b = b.saturating_add(1);
        }
    }

    fn quantile(&self, q: f64) -> u64 {
        let counted: u64 = self.buckets.iter().map(|&c| u64::from(c)).sum();
        let rank = ((counted as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return bucket_upper(i).min(self.max_us);
            }
        }
        self.max_us
    }

    fn row(&self, fingerprint: u64) -> QueryRow {
        QueryRow {
            fingerprint,
            query: self.query.to_string(),
            calls: self.calls,
            total_time_us: self.total_us,
            mean_us: self.total_us.checked_div(self.calls).unwrap_or(0),
            p99_us: self.quantile(0.99),
            max_us: self.max_us,
        }
    }
}

/// Bucket of a duration in µs: 0..4 exact, then `SUB` buckets per power of two.
fn bucket(us: u64) -> usize {
    if us < u64::from(SUB) {
        return us as usize;
    }
    let log2 = 63 - us.leading_zeros(); // >= 2
    let sub = (us >> (log2 - 2)) & u64::from(SUB - 1);
    let i = (log2 - 1) * SUB + sub as u32;
    (i as usize).min(BUCKETS - 1)
}

/// Largest value that falls in bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    let sub = SUB as usize;
    if i < sub {
        return i as u64;
    }
    let log2 = (i / sub + 1) as u32;
    let s = (i % sub) as u64;
    ((u64::from(SUB) + s + 1) << (log2 - 2)).saturating_sub(1)
}

/// The per-fingerprint store; share it behind an `Arc`.
pub struct QueryStats {
    shards: Box<[Mutex<HashMap<u64, Entry>>]>,
    per_shard: usize,
}

impl std::fmt::Debug for QueryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStats")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl Default for QueryStats {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl QueryStats {
    /// A store keeping at most about `capacity` fingerprints (rounded up to a multiple of 16).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
        }
    }

    fn shard(&self, fp: u64) -> &Mutex<HashMap<u64, Entry>> {
        // High bits: FNV's low bits are fine too, but this keeps shard choice
        // independent of the HashMap's own use of the key.
        let i = (fp >> 60) as usize % self.shards.len().max(1);
        // `i` is in range by construction; fall back to shard 0 rather than panic.
        self.shards.get(i).unwrap_or(&self.shards[0])
    }

    /// Records one execution of `sql` that took `elapsed`.
    pub fn record(&self, sql: &[u8], elapsed: Duration) {
        self.record_fingerprint(sql::fingerprint(sql).hash, sql, elapsed);
    }

    /// [`QueryStats::record`] with `sql`'s fingerprint already known (callers that see
    /// the same text again keep it).
    pub fn record_fingerprint(&self, fp: u64, sql: &[u8], elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let shard = self.shard(fp);
        {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = map.get_mut(&fp) {
                e.add(us);
                return;
            }
        }
        // First sighting: normalize outside the lock.
        let mut entry = Entry::new(sql::normalize(sql));
        entry.add(us);
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(&fp) {
            e.add(us);
            return;
        }
        if map.len() >= self.per_shard {
            let victim = map.iter().min_by_key(|(_, e)| e.total_us).map(|(&k, _)| k);
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        map.insert(fp, entry);
    }

    /// Adds a session's batched executions of `fp` ([`Batch`]) under one lock. A
    /// fingerprint evicted since its first execution was recorded loses them: it was
    /// the lightest in its shard.
    fn add_all(&self, fp: u64, durations_us: &[u32]) {
        let mut map = self
            .shard(fp)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(&fp) {
            for &us in durations_us {
                e.add(u64::from(us));
            }
        }
    }

    /// The `n` fingerprints with the most total time, heaviest first.
    pub fn top(&self, n: usize) -> Vec<QueryRow> {
        let mut rows: Vec<QueryRow> = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            rows.extend(map.iter().map(|(&fp, e)| e.row(fp)));
        }
        rows.sort_unstable_by(|a, b| {
            b.total_time_us
                .cmp(&a.total_time_us)
                .then(b.calls.cmp(&a.calls))
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        rows.truncate(n);
        rows
    }

    /// Distinct fingerprints held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// True when nothing has been recorded (or everything was cleared).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }
}

/// Executions per session batch.
const BATCH: usize = 16;

/// One session's executions not yet in the store: the store's shard lock is taken once
/// per `BATCH` executions of a fingerprint, not per query. The first execution of a
/// fingerprint goes to the store at once (with its text, for a new entry); the session
/// flushes the rest when the batch is full, when its fingerprint changes, and when it
/// parks or ends, so `SHOW QUERIES` lags a busy client by at most 15 executions.
#[derive(Debug, Default)]
pub struct Batch {
    fp: Option<u64>,
    len: usize,
    us: [u32; BATCH],
}

impl Batch {
    /// Records one execution of `sql` (fingerprint `fp`) that took `elapsed`.
    pub fn record(&mut self, store: &QueryStats, fp: u64, sql: &[u8], elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        match u32::try_from(us) {
            Ok(us) if self.fp == Some(fp) => {
                if let Some(slot) = self.us.get_mut(self.len) {
                    *slot = us;
                    self.len += 1;
                }
                if self.len == BATCH {
                    self.flush(store);
                }
            }
            _ => {
                self.flush(store);
                store.record_fingerprint(fp, sql, elapsed);
                self.fp = Some(fp);
            }
        }
    }

    /// Adds what is batched to the store.
    pub fn flush(&mut self, store: &QueryStats) {
        if let (Some(fp), 1..) = (self.fp, self.len) {
            store.add_all(fp, &self.us[..self.len.min(BATCH)]);
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_adds_every_execution_once_flushed() {
        let store = QueryStats::new(64);
        let mut batch = Batch::default();
        for i in 0..40u64 {
            batch.record(&store, 7, b"select 1", Duration::from_micros(100 + i));
        }
        // The first went in at once, 32 in two full batches; 7 wait.
        assert_eq!(store.top(1)[0].calls, 33);
        batch.record(&store, 9, b"select 2", Duration::from_micros(5));
        assert_eq!(store.top(5).iter().map(|r| r.calls).sum::<u64>(), 41);
        batch.record(&store, 9, b"select 2", Duration::from_micros(5));
        batch.flush(&store);
        batch.flush(&store);
        let rows = store.top(5);
        let calls = |fp| rows.iter().find(|r| r.fingerprint == fp).map(|r| r.calls);
        assert_eq!((calls(7), calls(9)), (Some(40), Some(2)));
        assert_eq!(
            rows.iter()
                .find(|r| r.fingerprint == 7)
                .map(|r| r.total_time_us),
            Some((100..140).sum())
        );
    }

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            1 << 20,
            1 << 39,
            u64::MAX,
        ] {
            let b = bucket(us);
            assert!(b >= last && b < BUCKETS, "{us} -> {b}");
            if us < (1 << 40) {
                assert!(bucket_upper(b) >= us, "{us}: upper {}", bucket_upper(b));
                assert!(
                    bucket_upper(b) <= us + us / 4 + 1,
                    "{us}: upper {}",
                    bucket_upper(b)
                );
            }
            last = b;
        }
    }

    #[test]
    fn groups_by_fingerprint_and_ranks_by_total_time() {
        let s = QueryStats::new(100);
        for i in 0..100u64 {
            let q = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}");
            s.record(q.as_bytes(), Duration::from_micros(100 + i % 10));
        }
        s.record(b"UPDATE t SET x = 1", Duration::from_millis(50));
        s.record(b"update T set X = 2;", Duration::from_millis(10));
        let top = s.top(10);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].query, "UPDATE t SET x = $1");
        assert_eq!(top[0].calls, 2);
        assert_eq!(top[0].total_time_us, 60_000);
        assert_eq!(top[0].mean_us, 30_000);
        assert_eq!(top[0].p99_us, 50_000);
        assert_eq!(
            top[1].query,
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        );
        assert_eq!(top[1].calls, 100);
        assert!((109..=120).contains(&top[1].p99_us), "{}", top[1].p99_us);
        assert_eq!(s.top(1).len(), 1);
    }

    #[test]
    fn bounded_with_heavy_hitters_kept() {
        let s = QueryStats::new(32);
        s.record(b"SELECT heavy FROM t", Duration::from_secs(5));
        for i in 0..1000 {
            let q = format!("SELECT col{i} FROM t");
            s.record(q.as_bytes(), Duration::from_micros(10));
        }
        assert!(s.len() <= 32, "{}", s.len());
        assert_eq!(s.top(1)[0].query, "SELECT heavy FROM t");
        s.clear();
        assert!(s.is_empty());
    }
}
