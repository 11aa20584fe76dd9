//! The pool's shared state (behind its one mutex) and the routing rule that
//! decides where a connection or a free slot goes next.
//!
//! Accounting invariant: every open connection and every connect in flight is
//! counted exactly once, in `idle`, `active`, `connecting` or `held`, and their
//! sum (`total`) only exceeds the pool's size ([`State::cap`]: the scaling engine's
//! target within `min_size..=max_size`, else `max_size`) after a shrink. A connection
//! being closed stays counted until it has been dropped, so a new one is never opened
//! while the old one still exists: the server never sees more than the size.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::expiry::ExpiryState;
use crate::queue::WaitQueue;
use crate::request::Class;
use crate::servers::ConnTicket;
use crate::{PoolSettings, ShedReason};

/// A pooled connection with the times the pool needs for reaping.
pub(crate) struct Conn<C> {
    pub(crate) raw: C,
    pub(crate) created: Instant,
    pub(crate) last_used: Instant,
    /// Its entry in the pool's server registry (and its generation).
    pub(crate) ticket: ConnTicket,
}

impl<C> Conn<C> {
    /// Whether a `reconnect` happened since this connection was opened.
    pub(crate) fn is_stale(&self, generation: u64) -> bool {
        self.ticket.meta.generation < generation
    }
}

/// What a waiter is handed.
pub(crate) enum Grant<C> {
    /// A ready connection (counted in `active`).
    Conn(Conn<C>),
    /// Permission to open a new connection (counted in `connecting`).
    Slot,
    /// Shed to make room for a more important waiter: give up with this reason.
    Shed(ShedReason),
    /// Waited out `wait_timeout` (this one): taken out of the queue by the expiry task.
    TimedOut(Duration),
}

/// Release intervals averaged before the expected wait is trusted.
const RELEASE_SAMPLES: u32 = 8;

/// The sending half a waiter is woken through.
pub(crate) type Waiter<C> = oneshot::Sender<Grant<C>>;

/// What to do, outside the lock, after a routing decision.
pub(crate) enum Route<C> {
    /// Nothing left to do.
    Done,
    /// Hand this grant to this waiter (if the send fails, route the grant again).
    Send(Waiter<C>, Grant<C>),
    /// Drop this connection (still counted in `active`), then free its slot.
    Close(Conn<C>),
}

/// Everything behind the pool's mutex.
pub(crate) struct State<C> {
    pub(crate) settings: PoolSettings,
    /// The size the scaling engine chose (kept within the bounds by [`State::cap`]);
    /// `None`: the pool is fixed at `max_size`. Settings changes never touch it.
    pub(crate) target: Option<u32>,
    /// Most connections checked out at once since the scaling engine last asked.
    pub(crate) peak_active: u32,
    /// Idle connections, least recently used at the front; checkouts pop the back (LIFO).
    pub(crate) idle: VecDeque<Conn<C>>,
    /// Checked out by clients (or granted to a waiter that has not woken yet).
    pub(crate) active: u32,
    /// Connects in flight, and slots granted to waiters that will connect.
    pub(crate) connecting: u32,
    /// Taken out of `idle` by the pool itself, to probe or to close.
    pub(crate) held: u32,
    pub(crate) waiters: WaitQueue<Waiter<C>>,
    /// Checkouts held by `PAUSE` (not in `waiters`: they get no grant, they retry).
    pub(crate) paused_waiters: WaitQueue<()>,
    /// Whether the expiry task runs, and until when it sleeps.
    pub(crate) expiry: ExpiryState,
    pub(crate) closed: bool,
    /// `PAUSE`: nothing is handed out; released connections are closed.
    pub(crate) paused: bool,
    /// The reserve is open: a checkout waited `reserve_timeout`, so the size includes
    /// `reserve_size` until nobody waits any more.
    pub(crate) reserve_on: bool,
    /// Bumped by `reconnect`: connections of older generations close when released.
    pub(crate) generation: u64,
    /// When the last connect failed, if the latest attempt failed (for `login_retry`).
    pub(crate) last_connect_failure: Option<Instant>,
    /// Moving average of the time between releases while clients wait (µs).
    release_interval_us: f64,
    release_samples: u32,
    last_release: Option<Instant>,
}

impl<C> State<C> {
    pub(crate) fn new(settings: PoolSettings) -> Self {
        let capacity = usize::try_from(settings.max_size).unwrap_or(0).min(1024);
        let mut waiters = WaitQueue::new();
        waiters.aging = settings.priority_aging;
        Self {
            settings,
            target: None,
            peak_active: 0,
            idle: VecDeque::with_capacity(capacity),
            active: 0,
            connecting: 0,
            held: 0,
            waiters,
            paused_waiters: WaitQueue::new(),
            expiry: ExpiryState::default(),
            closed: false,
            paused: false,
            reserve_on: false,
            generation: 0,
            last_connect_failure: None,
            release_interval_us: 0.0,
            release_samples: 0,
            last_release: None,
        }
    }

    /// A connection came back at `now`: while clients wait, the time since the last
    /// one is a sample of how fast the pool frees connections.
    pub(crate) fn note_release(&mut self, now: Instant) {
        if let Some(last) = self.last_release.filter(|_| !self.waiters.is_empty()) {
            let sample = now.saturating_duration_since(last).as_micros() as f64;
            self.release_interval_us = if self.release_samples == 0 {
                sample
            } else {
                0.8 * self.release_interval_us + 0.2 * sample
            };
            self.release_samples = self.release_samples.saturating_add(1);
        }
        self.last_release = Some(now);
    }

    /// How long a waiter with `ahead` waiters before it can expect to wait, once enough
    /// releases were seen under load.
    pub(crate) fn expected_wait(&self, ahead: usize) -> Option<Duration> {
        (self.release_samples >= RELEASE_SAMPLES).then(|| {
            Duration::from_micros((self.release_interval_us * (ahead as f64 + 1.0)) as u64)
        })
    }

    /// Open connections plus connects in flight.
    pub(crate) fn total(&self) -> u32 {
        let idle = u32::try_from(self.idle.len()).unwrap_or(u32::MAX);
        idle.saturating_add(self.active)
            .saturating_add(self.connecting)
            .saturating_add(self.held)
    }

    /// The pool's size now: the engine's target within the bounds, else `max_size`;
    /// plus `reserve_size` while the reserve is open.
    pub(crate) fn cap(&self) -> u32 {
        let reserve = if self.reserve_on {
            self.settings.reserve_size
        } else {
            0
        };
        self.base_cap().saturating_add(reserve)
    }

    /// The size without the reserve.
    pub(crate) fn base_cap(&self) -> u32 {
        let max = self.settings.max_size;
        match self.target {
            Some(t) => t.max(self.settings.min_size.min(max)).min(max),
            None => max,
        }
    }

    /// Connections open beyond the size while the reserve is open.
    pub(crate) fn reserve_in_use(&self) -> u32 {
        if self.reserve_on {
            self.total()
                .saturating_sub(self.base_cap())
                .min(self.settings.reserve_size)
        } else {
            0
        }
    }

    /// Connections maintenance keeps open: the whole size when the engine sets it
    /// (servers are opened ahead of need), else `min_size`.
    pub(crate) fn warm_size(&self) -> u32 {
        match self.target {
            Some(_) => self.cap(),
            None => self.settings.min_size.min(self.settings.max_size),
        }
    }

    /// Whether a new connection (or slot) would still fit in the size.
    pub(crate) fn has_room(&self) -> bool {
        self.total() < self.cap()
    }

    /// Whether a checkout of `class` may take one more server while `in_use` others are
    /// checked out or being opened: the last `reserve_critical` of the size (at most
    /// size - 1, so others always get one) go only to critical checkouts.
    pub(crate) fn may_take(&self, class: Class, in_use: u32) -> bool {
        let reserve = self.settings.reserve_critical;
        // One compare when nothing is reserved (the usual case, on every checkout).
        if reserve == 0 || class == Class::Critical {
            return true;
        }
        let cap = self.cap();
        in_use < cap - reserve.min(cap.saturating_sub(1))
    }

    /// The next waiter for one server, `others` besides it being in use: anyone while
    /// the server is not one of those reserved for critical work, else a critical one.
    fn next_waiter(&mut self, others: u32) -> Option<Waiter<C>> {
        if self.may_take(Class::Normal, others) {
            self.waiters.pop()
        } else {
            self.waiters.pop_critical()
        }
    }

    /// Count one more connection checked out.
    pub(crate) fn add_active(&mut self) {
        self.active += 1;
        self.peak_active = self.peak_active.max(self.active);
    }

    /// While the last connect failed less than `login_retry` ago: how long until the next attempt.
    pub(crate) fn login_backoff(&self, now: Instant) -> Option<Duration> {
        let failed = self.last_connect_failure?;
        self.settings
            .login_retry
            .checked_sub(now.saturating_duration_since(failed))
            .filter(|d| !d.is_zero())
    }

    /// Route a connection (counted in `active`) or a slot (counted in
    /// `connecting`) to the first waiter, else back to idle / release it. While
    /// paused nothing is handed out and connections are closed (PgBouncer's
    /// `PAUSE` disconnects from the server); stale ones are always closed.
    pub(crate) fn route(&mut self, grant: Grant<C>) -> Route<C> {
        if self.reserve_on && self.waiters.is_empty() {
            // Nobody waits any more: the reserve closes, its connections as they return.
            self.reserve_on = false;
        }
        let over = self.total() > self.cap();
        match grant {
            Grant::Conn(conn) => {
                if self.closed || over || self.paused || conn.is_stale(self.generation) {
                    return Route::Close(conn);
                }
                // This connection is counted in `active`.
                let others = (self.active + self.connecting).saturating_sub(1);
                if let Some(tx) = self.next_waiter(others) {
                    // A warmed or probed connection becomes a checkout here.
                    self.peak_active = self.peak_active.max(self.active);
                    return Route::Send(tx, Grant::Conn(conn));
                }
                self.active -= 1;
                self.idle.push_back(conn);
                Route::Done
            }
            Grant::Slot => {
                if !self.closed && !over && !self.paused {
                    // This slot is counted in `connecting`.
                    let others = (self.active + self.connecting).saturating_sub(1);
                    if let Some(tx) = self.next_waiter(others) {
                        return Route::Send(tx, Grant::Slot);
                    }
                }
                self.connecting -= 1;
                Route::Done
            }
            // Its waiter is gone already: nothing to do.
            Grant::Shed(_) | Grant::TimedOut(_) => Route::Done,
        }
    }

    /// A connection was dropped and its count removed by the caller: offer the
    /// freed slot to the first waiter.
    pub(crate) fn free_slot(&mut self) -> Route<C> {
        self.connecting += 1;
        self.route(Grant::Slot)
    }

    /// Whether a checkout of `req` may join the queue. `Ok(Some(..))`: yes, and this
    /// less important waiter is shed to make room (send it the reason). `Err`: shed
    /// the newcomer (the reason is the client's message).
    #[allow(clippy::type_complexity)]
    pub(crate) fn admit_waiter(
        &mut self,
        req: &crate::request::Checkout,
    ) -> Result<Option<(Waiter<C>, ShedReason)>, ShedReason> {
        let budget = req.budget.or(self.settings.wait_timeout);
        if budget.is_some_and(|b| b.is_zero()) {
            return Err(ShedReason::MayNotWait);
        }
        if let (Some(budget), Some(expected)) =
            (budget, self.expected_wait(self.waiters.ahead_of(req.class)))
        {
            if expected > budget {
                return Err(ShedReason::Hopeless { expected, budget });
            }
        }
        let limit = self.settings.max_queue;
        if limit == 0 || self.waiters.len() < limit {
            return Ok(None);
        }
        let reason = ShedReason::QueueFull {
            waiting: self.waiters.len(),
            max_queue: limit,
        };
        match self.waiters.last_class() {
            Some(last) if last > req.class => {
                Ok(self.waiters.pop_last().map(|(_, tx)| (tx, reason)))
            }
            _ => Err(reason),
        }
    }

    /// Grant slots to waiters while there is room (after a grow or a close).
    pub(crate) fn grant_slots(&mut self, out: &mut Vec<Route<C>>) {
        while !self.closed && !self.paused && self.has_room() {
            let Some(tx) = self.next_waiter(self.active + self.connecting) else {
                break;
            };
            self.connecting += 1;
            out.push(Route::Send(tx, Grant::Slot));
        }
    }
}
