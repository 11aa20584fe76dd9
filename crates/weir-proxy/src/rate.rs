//! `max_connection_rate`: new connections per second per source address, as a token
//! bucket per address (a burst of one second's worth, refilled continuously). Checked
//! in the accept loop, before the client may send a byte, so a connection storm from
//! one address costs no authentication work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

/// Addresses tracked before full buckets (which are the same as no entry) are dropped.
const PRUNE_AT: usize = 4096;

/// Token buckets by source address.
#[derive(Default)]
pub struct ConnectionRate {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ConnectionRate {
    /// Whether one more connection from `addr` fits in `per_second` (0 = no limit);
    /// takes a token if it does.
    pub fn admit(&self, addr: IpAddr, per_second: u32, now: Instant) -> bool {
        if per_second == 0 {
            return true;
        }
        let rate = f64::from(per_second);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| b.level(now, rate) < rate);
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        bucket.tokens = bucket.level(now, rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Bucket {
    /// Tokens at `now`: refilled at `rate` per second, at most `rate`.
    fn level(&self, now: Instant, rate: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate).min(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_of_one_seconds_worth_then_the_rate() {
        let r = ConnectionRate::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t = Instant::now();
        assert!((0..3).all(|_| r.admit(a, 3, t)));
        assert!(!r.admit(a, 3, t), "the fourth in the same instant");
        assert!(r.admit(b, 3, t), "another address has its own bucket");
        assert!(!r.admit(a, 3, t + Duration::from_millis(100)));
        assert!(r.admit(a, 3, t + Duration::from_millis(400)), "refilled");
        assert!((0..100).all(|_| r.admit(a, 0, t)), "0 = no limit");
    }
}
