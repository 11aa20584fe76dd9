//! The wait queue: checkouts that found no idle connection and no free slot, served
//! by (class with aging, arrival): a more important class goes first, but every
//! [`AGING_STEP`] a waiter has waited counts as one class up, so nobody starves; within
//! a class, first come first served. Callers only push, pop, remove, expire and count.
//!
//! A waiter that goes first only by aging (a more important class waits too) takes at
//! most every other pop. Without that, waiters that queued together age together: once
//! the first of a burst (200 low clients started at once) overtakes the critical queue,
//! the whole burst does, and critical work waits out the burst (measured: critical p99
//! 565 ms against a p50 of 103 ms, 200 low + 20 critical clients on 4 servers). Taking
//! turns keeps the critical wait near its own queue's, and the aged work still gets at
//! least half the servers, so it still cannot starve.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::request::{Class, CLASSES};

/// Waiting this long counts as one class more important, unless the pool says otherwise.
#[cfg(test)]
pub(crate) const AGING_STEP: Duration = Duration::from_millis(500);

/// Identifies one queued waiter, to remove it when it times out or is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WaiterId(u64, Class);

struct Entry<T> {
    id: u64,
    since: Instant,
    item: T,
}

/// One queue per class; ids grow with arrival.
pub(crate) struct WaitQueue<T> {
    // Ids grow from front to back in each, so `remove` can binary-search.
    classes: [VecDeque<Entry<T>>; CLASSES],
    len: usize,
    next_id: u64,
    /// Waiting this long counts as one class more important.
    pub(crate) aging: Duration,
    /// The last pop served a waiter that went first only by aging.
    aged_last: bool,
}

impl<T> WaitQueue<T> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self {
            classes: std::array::from_fn(|_| VecDeque::new()),
            len: 0,
            next_id: 0,
            aging: Duration::from_secs(1),
            aged_last: false,
        }
    }

    /// Queue `item` of `class`, waiting since `since`.
    pub(crate) fn push(&mut self, class: Class, since: Instant, item: T) -> WaiterId {
        let id = self.next_id;
        self.next_id += 1;
        self.classes[class as usize].push_back(Entry { id, since, item });
        self.len += 1;
        WaiterId(id, class)
    }

    /// The class whose front waiter goes next: lowest (class - aging), then arrival;
    /// but not by aging twice in a row while a more important class waits (see the
    /// module docs).
    fn next_class(&mut self, now: Instant) -> Option<usize> {
        let step = self.aging.as_micros().max(1) as i128;
        // (class - aging, arrival, class) of each class's front waiter.
        let mut fronts = self.classes.iter().enumerate().filter_map(|(c, q)| {
            let e = q.front()?;
            let waited = now.saturating_duration_since(e.since).as_micros() as i128;
            Some(((c as i128) * step - waited, e.id, c))
        });
        let first = fronts.next()?;
        let best = fronts.fold(first, std::cmp::min);
        let class = if best.2 != first.2 && self.aged_last {
            first.2
        } else {
            best.2
        };
        self.aged_last = class != first.2;
        Some(class)
    }

    /// Take the waiter that should be served next.
    pub(crate) fn pop(&mut self) -> Option<T> {
        // Every checkin asks: no clock read when nobody waits.
        if self.len == 0 {
            return None;
        }
        let class = self.next_class(Instant::now())?;
        self.len -= 1;
        self.classes[class].pop_front().map(|e| e.item)
    }

    /// Take the longest-waiting critical waiter: the one a server held back for critical
    /// work (`reserve_critical`) may go to.
    pub(crate) fn pop_critical(&mut self) -> Option<T> {
        let e = self.classes[Class::Critical as usize].pop_front()?;
        self.len -= 1;
        Some(e.item)
    }

    /// Take the waiter that would be served last (to shed it for a more important one):
    /// the newest of the least important class.
    pub(crate) fn pop_last(&mut self) -> Option<(Class, T)> {
        let class = (0..CLASSES).rev().find(|&c| !self.classes[c].is_empty())?;
        self.len -= 1;
        self.classes[class]
            .pop_back()
            .map(|e| (Class::from_index(class), e.item))
    }

    /// The least important class waiting, if any.
    pub(crate) fn last_class(&self) -> Option<Class> {
        (0..CLASSES)
            .rev()
            .find(|&c| !self.classes[c].is_empty())
            .map(Class::from_index)
    }

    /// Waiters that would be served before a new one of `class`, ignoring aging.
    pub(crate) fn ahead_of(&self, class: Class) -> usize {
        self.classes[..=class as usize]
            .iter()
            .map(VecDeque::len)
            .sum()
    }

    /// Take a specific waiter out (it gave up); `None` if it was already popped.
    pub(crate) fn remove(&mut self, id: WaiterId) -> Option<T> {
        let q = &mut self.classes[id.1 as usize];
        let at = q.binary_search_by_key(&id.0, |e| e.id).ok()?;
        self.len -= 1;
        q.remove(at).map(|e| e.item)
    }

    /// Take out, into `out` (most important class first), every waiter that has waited
    /// `limit` by `now`; returns the earliest deadline among those left (`None`: none
    /// left, or none representable).
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        limit: Duration,
        out: &mut Vec<T>,
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for q in &mut self.classes {
            // Waiters queue in the order they started, so the first not yet due ends the
            // class and a pass costs only the waiters it takes out. One that started
            // before the one ahead of it (it lost the race to the lock, or was held by
            // PAUSE) goes with that one: never early, late by at most the gap, and never
            // later than a full wait counted from joining the queue.
            while let Some(front) = q.front() {
                let Some(deadline) = front.since.checked_add(limit) else {
                    break;
                };
                if deadline > now {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    break;
                }
                if let Some(e) = q.pop_front() {
                    self.len -= 1;
                    out.push(e.item);
                }
            }
        }
        next
    }

    /// Number of waiters.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Waiters per class, most important first.
    pub(crate) fn per_class(&self) -> [usize; CLASSES] {
        std::array::from_fn(|c| self.classes[c].len())
    }

    /// When the longest current waiter was queued.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.classes
            .iter()
            .filter_map(|q| q.front().map(|e| e.since))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_within_a_class() {
        let now = Instant::now();
        let mut q = WaitQueue::new();
        for i in 0..5 {
            q.push(Class::Normal, now, i);
        }
        assert_eq!(q.len(), 5);
        let popped: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(popped, vec![0, 1, 2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn more_important_classes_first_but_aging_prevents_starvation() {
        let now = Instant::now();
        let mut q = WaitQueue::new();
        q.aging = AGING_STEP;
        q.push(Class::Low, now, "low");
        q.push(Class::Normal, now, "normal");
        q.push(Class::Critical, now, "critical");
        assert_eq!(q.pop(), Some("critical"));
        assert_eq!(q.pop(), Some("normal"));
        assert_eq!(q.pop(), Some("low"));
        // A low waiter queued long enough ago goes before a fresh normal one.
        let long_ago = now.checked_sub(AGING_STEP * 3).unwrap_or(now);
        q.push(Class::Normal, now, "fresh normal");
        q.push(Class::Low, long_ago, "old low");
        if long_ago < now {
            assert_eq!(q.pop(), Some("old low"));
        }
    }

    #[test]
    fn aged_waiters_take_turns_with_the_class_they_overtake() {
        let now = Instant::now();
        let Some(long_ago) = now.checked_sub(AGING_STEP * 10) else {
            return;
        };
        let mut q = WaitQueue::new();
        q.aging = AGING_STEP;
        for i in 0..4 {
            q.push(Class::Low, long_ago, ("low", i));
        }
        for i in 0..2 {
            q.push(Class::Critical, now, ("critical", i));
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [
                ("low", 0),
                ("critical", 0),
                ("low", 1),
                ("critical", 1),
                ("low", 2),
                ("low", 3)
            ]
        );
    }

    #[test]
    fn expire_takes_the_due_fronts_of_every_class_and_says_what_is_next() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let limit = ms(1_000);
        let mut q = WaitQueue::new();
        q.push(Class::Normal, t0, "normal 0");
        q.push(Class::High, t0 + ms(100), "high 100");
        q.push(Class::Normal, t0 + ms(200), "normal 200");
        // Started before the one queued ahead of it: due with that one, never before.
        q.push(Class::Normal, t0 + ms(150), "normal 150");
        let mut out = Vec::new();
        assert_eq!(q.expire(t0 + ms(999), limit, &mut out), Some(t0 + limit));
        assert!(out.is_empty());
        assert_eq!(
            q.expire(t0 + ms(1_100), limit, &mut out),
            Some(t0 + ms(1_200))
        );
        assert_eq!(out, ["high 100", "normal 0"], "most important class first");
        out.clear();
        assert_eq!(q.len(), 2);
        assert_eq!(
            q.expire(t0 + ms(1_199), limit, &mut out),
            Some(t0 + ms(1_200))
        );
        assert!(out.is_empty(), "normal 150 waits behind normal 200");
        assert_eq!(q.expire(t0 + ms(1_200), limit, &mut out), None);
        assert_eq!(out, ["normal 200", "normal 150"]);
        assert!(q.is_empty());
        // A limit too far off to represent never expires anyone.
        q.push(Class::Low, t0, "low");
        assert_eq!(q.expire(t0, Duration::MAX, &mut out), None);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn remove_and_shed_the_last() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new();
        let a = q.push(Class::Normal, t0, 'a');
        let b = q.push(Class::High, t0 + Duration::from_secs(1), 'b');
        let c = q.push(Class::Normal, t0, 'c');
        assert_eq!(q.ahead_of(Class::High), 1);
        assert_eq!(q.ahead_of(Class::Normal), 3);
        assert_eq!(q.last_class(), Some(Class::Normal));
        assert_eq!(q.pop_last(), Some((Class::Normal, 'c')));
        assert_eq!(q.remove(c), None);
        assert_eq!(q.remove(b), Some('b'));
        assert_eq!(q.oldest(), Some(t0));
        assert_eq!(q.remove(a), Some('a'));
        assert!(q.is_empty());
        assert_eq!(q.oldest(), None);
    }
}
