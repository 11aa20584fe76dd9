//! The wait queue: checkouts that found no idle connection and no free slot.
//!
//! Callers only push, pop, remove and count, so the FIFO here can later become a
//! priority queue with load shedding without touching them. Each entry records
//! when it was queued, for `PoolStats::max_wait`.

use std::collections::VecDeque;

use tokio::time::Instant;

/// Identifies one queued waiter, to remove it when it times out or is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaiterId(u64);

struct Entry<T> {
    id: u64,
    since: Instant,
    item: T,
}

/// First-in first-out wait queue.
pub(crate) struct WaitQueue<T> {
    // Ids grow from front to back, so `remove` can binary-search.
    entries: VecDeque<Entry<T>>,
    next_id: u64,
}

impl<T> WaitQueue<T> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Queue `item`, waiting since `since`, behind everything already queued.
    pub(crate) fn push(&mut self, since: Instant, item: T) -> WaiterId {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push_back(Entry { id, since, item });
        WaiterId(id)
    }

    /// Take the waiter that should be served next.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.entries.pop_front().map(|e| e.item)
    }

    /// Take a specific waiter out (it gave up); `None` if it was already popped.
    pub(crate) fn remove(&mut self, id: WaiterId) -> Option<T> {
        let at = self.entries.binary_search_by_key(&id.0, |e| e.id).ok()?;
        self.entries.remove(at).map(|e| e.item)
    }

    /// Number of waiters.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the longest current waiter was queued.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        // FIFO: the front waited longest.
        self.entries.front().map(|e| e.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order() {
        let now = Instant::now();
        let mut q = WaitQueue::new();
        for i in 0..5 {
            q.push(now, i);
        }
        assert_eq!(q.len(), 5);
        let popped: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(popped, vec![0, 1, 2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn remove_middle_keeps_order() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new();
        let a = q.push(t0, 'a');
        let b = q.push(t0 + std::time::Duration::from_secs(1), 'b');
        let c = q.push(t0, 'c');
        assert_eq!(q.remove(b), Some('b'));
        assert_eq!(q.remove(b), None);
        assert_eq!(q.oldest(), Some(t0));
        assert_eq!(q.pop(), Some('a'));
        assert_eq!(q.remove(a), None);
        assert_eq!(q.remove(c), Some('c'));
        assert!(q.is_empty());
        assert_eq!(q.oldest(), None);
    }
}
