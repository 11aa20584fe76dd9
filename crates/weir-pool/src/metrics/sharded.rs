//! A latency histogram recorded lock-free per thread and merged into an
//! [`hdrhistogram::Histogram`] when read.
//!
//! Recording is on the hot path three times per transaction, so a record is one
//! relaxed `fetch_add` on a counter in the recording thread's own shard: no lock, no
//! min/max bookkeeping (a `Mutex<Histogram>` per shard cost ~120 instructions a
//! record). The buckets are hdrhistogram's own at 3 significant digits (2 048
//! sub-buckets, unit 1), so a merged snapshot holds exactly what recording each value
//! into it would have. A shard's counters (~190 KiB) are allocated, zeroed by the
//! allocator and paged in lazily, on the shard's first record.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use hdrhistogram::Histogram;

use super::{empty_histogram, HIGHEST_US};

/// log2 of the sub-buckets per bucket: hdrhistogram's layout at 3 significant digits
/// ([`super::SIGFIG`]; a test holds the two together).
const SUB_BUCKET_BITS: u32 = 11;
/// Half a bucket's sub-buckets: each bucket past the first adds this many counters.
const HALF: u64 = 1 << (SUB_BUCKET_BITS - 1);

/// The counter index of `value`: values below 2 048 have one each; above, each power
/// of two is split into 1 024 equal ranges.
fn index(value: u64) -> usize {
    let bucket = u64::from(64 - SUB_BUCKET_BITS - (value | (2 * HALF - 1)).leading_zeros());
    (bucket * HALF + (value >> bucket)) as usize
}

/// The lowest value counted at `index` (the inverse of [`index`] on range starts).
fn lowest_value(index: usize) -> u64 {
    let i = index as u64;
    if i < 2 * HALF {
        return i;
    }
    let bucket = i / HALF - 1;
    (i - bucket * HALF) << bucket
}

/// One thread's counters, alone on its cache lines so two recording threads never
/// share one (128 bytes: adjacent-line prefetch pairs 64-byte lines on x86).
#[repr(align(128))]
struct Shard(OnceLock<Box<[AtomicU64]>>);

/// A histogram recorded per thread and merged when read; values are clamped to
/// [`HIGHEST_US`].
pub(super) struct ShardedHistogram {
    shards: Box<[Shard]>,
}

static NEXT_THREAD_INDEX: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard index (modulo the shard count), handed out round robin.
    static THREAD_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

fn thread_index() -> usize {
    THREAD_INDEX
        .try_with(|cell| match cell.get() {
            Some(i) => i,
            None => {
                let i = NEXT_THREAD_INDEX.fetch_add(1, Relaxed);
                cell.set(Some(i));
                i
            }
        })
        // Thread-locals are gone while the thread exits: any shard will do.
        .unwrap_or(0)
}

impl ShardedHistogram {
    /// `shards` shard slots (at least one).
    pub(super) fn new(shards: usize) -> Self {
        let shards = (0..shards.max(1)).map(|_| Shard(OnceLock::new())).collect();
        Self { shards }
    }

    /// Counts one value.
    pub(super) fn record(&self, value: u64) {
        let shard = &self.shards[thread_index() % self.shards.len()];
        let counts = shard.0.get_or_init(|| zeroed(index(HIGHEST_US) + 1));
        // In range: the counters end at the clamped value's index.
        if let Some(count) = counts.get(index(value.min(HIGHEST_US))) {
            count.fetch_add(1, Relaxed);
        }
    }

    /// What was recorded so far, as an hdrhistogram with the pool-wide bounds.
    pub(super) fn snapshot(&self) -> Histogram<u64> {
        let mut merged = empty_histogram();
        self.merge_into(&mut merged);
        merged
    }

    /// Adds every shard's counts to `merged` (which must have the pool-wide bounds).
    pub(super) fn merge_into(&self, merged: &mut Histogram<u64>) {
        for counts in self.shards.iter().filter_map(|s| s.0.get()) {
            for (i, count) in counts.iter().enumerate() {
                let n = count.load(Relaxed);
                if n > 0 {
                    merged.saturating_record_n(lowest_value(i), n);
                }
            }
        }
    }
}

/// `len` zeroed counters, from zeroed memory so untouched pages stay unmapped.
fn zeroed(len: usize) -> Box<[AtomicU64]> {
    let counts = Box::<[AtomicU64]>::new_zeroed_slice(len);
    // SAFETY: an all-zero `AtomicU64` is a valid zero, and every element was zeroed.
    unsafe { counts.assume_init() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_hdrhistograms_own() {
        // Every range start maps back to itself, and values inside a range share its
        // index, exactly where hdrhistogram draws its equivalence ranges (with the
        // pool's bounds and significant digits).
        let h = empty_histogram();
        let mut v = 0u64;
        while v < HIGHEST_US {
            let i = index(v);
            assert_eq!(lowest_value(i), h.lowest_equivalent(v), "value {v}");
            assert_eq!(index(h.highest_equivalent(v)), i, "value {v}");
            assert_eq!(index(h.highest_equivalent(v) + 1), i + 1, "value {v}");
            v = v * 9 / 8 + 1;
        }
    }

    #[test]
    fn merged_snapshot_equals_direct_records() {
        let sharded = ShardedHistogram::new(3);
        let mut direct = empty_histogram();
        for v in [0, 1, 7, 999, 2047, 2048, 2049, 123_456, 9_999_999, u64::MAX] {
            sharded.record(v);
            direct.saturating_record(v.min(HIGHEST_US));
        }
        let merged = sharded.snapshot();
        assert_eq!(merged.len(), direct.len());
        assert_eq!(merged.min(), direct.min());
        assert_eq!(merged.max(), direct.max());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                direct.value_at_quantile(q),
                "q {q}"
            );
        }
    }
}
