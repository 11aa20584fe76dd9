//! A bounded ring of scaling decisions: when, which pool, from what size to what, why,
//! and the inputs that led there.

use std::collections::VecDeque;

use serde::Serialize;

use crate::{Millis, Reason};

/// The inputs a decision was made from, kept with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Inputs {
    /// active / size at the tick.
    pub utilization: f64,
    /// Connections checked out.
    pub active: u32,
    /// Clients waiting.
    pub waiting: u32,
    /// p99 wait over the tick, ms.
    pub wait_p99_ms: f64,
    /// Predicted demand for the lead window (0 when none is trusted).
    pub predicted: f64,
    /// The budget the pool was held to, if any.
    pub budget: Option<u32>,
}

/// One decision (a change of target, or a grow refused).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// When (ms since the epoch).
    pub at: Millis,
    /// The pool (`database/user`).
    pub pool: String,
    /// Target before.
    pub from: u32,
    /// Target after (equal to `from` for a refused grow).
    pub to: u32,
    /// Why.
    pub reason: Reason,
    /// What it was based on.
    pub inputs: Inputs,
}

/// The most recent decisions, oldest first, at most `capacity`.
#[derive(Clone, Debug)]
pub struct History {
    ring: VecDeque<Decision>,
    capacity: usize,
}

impl History {
    /// An empty ring holding at most `capacity` decisions.
    pub fn new(capacity: usize) -> Self {
        History {
            ring: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
        }
    }

    /// Add one, dropping the oldest when full.
    pub fn push(&mut self, d: Decision) {
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(d);
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Decision> {
        self.ring.iter()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest() {
        let mut h = History::new(3);
        for at in 0..5 {
            h.push(Decision {
                at,
                pool: "db/u".into(),
                from: 1,
                to: 2,
                reason: Reason::Utilization,
                inputs: Inputs::default(),
            });
        }
        let ats: Vec<_> = h.iter().map(|d| d.at).collect();
        assert_eq!(ats, [2, 3, 4]);
    }
}
