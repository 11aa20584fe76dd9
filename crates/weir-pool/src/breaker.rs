//! A circuit breaker for one upstream (host:port), shared by every pool that reaches it:
//! closed → open → half-open → closed. Pure logic: the caller passes the time in, so it
//! is tested without sockets or sleeps.
//!
//! - **Closed**: connects go ahead. `failures` consecutive connect/login failures, or a
//!   windowed share of "server unwell" query errors, open it.
//! - **Open**: checkouts and connects fail at once (no connect attempt) until the next
//!   probe is due.
//! - **Half-open**: one connect at a time is let through as a probe; success closes the
//!   breaker, failure opens it again with the probe interval doubled (capped, jittered).
//!
//! The closed state is one relaxed atomic load on the checkout path; everything else
//! takes a short mutex.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// How sensitive a breaker is.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive connect/login failures that open it (0: never by count).
    pub failures: u32,
    /// First probe interval after opening; doubles per failed probe.
    pub probe_min: Duration,
    /// Longest probe interval.
    pub probe_max: Duration,
    /// Window over which query errors are counted.
    pub window: Duration,
    /// Share of "server unwell" query errors in the window that opens it (0: never).
    pub error_ratio: f64,
    /// Fewest unwell errors in a window before the ratio counts.
    pub min_errors: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 3,
            probe_min: Duration::from_millis(50),
            probe_max: Duration::from_millis(400),
            window: Duration::from_secs(10),
            error_ratio: 0.5,
            min_errors: 20,
        }
    }
}

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    /// Connects go ahead.
    Closed = 0,
    /// Everything fails fast until the next probe.
    Open = 1,
    /// One probe connect is in flight.
    HalfOpen = 2,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// Lower-case name, as `SHOW BREAKERS` and logs print it.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// What a connect attempt may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead (closed).
    Go,
    /// Go ahead as the half-open probe: report the outcome.
    Probe,
    /// Fail now: the upstream is considered down; next probe in this long.
    Refuse(Duration),
}

/// Why an open breaker refuses, for the client's message.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// Until the next probe.
    pub retry_in: Duration,
    /// The failure that opened it or failed the last probe.
    pub last_error: String,
    /// A probe is due and none is running: the caller should start one (in the
    /// background: the client is refused at once all the same).
    pub probe_due: bool,
}

/// A snapshot for `SHOW BREAKERS` and `/metrics`.
#[derive(Clone, Debug)]
pub struct BreakerSnapshot {
    /// Current state.
    pub state: BreakerState,
    /// When it entered that state.
    pub since: SystemTime,
    /// Consecutive failures counted now.
    pub failures: u32,
    /// The last failure seen.
    pub last_error: String,
    /// Until the next probe (open only).
    pub next_probe_in: Option<Duration>,
    /// Times it opened from closed.
    pub trips: u64,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    state: AtomicU8,
    /// Queries that ended without an unwell error, ever (the window keeps a base).
    ok: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: BreakerSettings,
    since: SystemTime,
    failures: u32,
    last_error: String,
    next_probe: Instant,
    interval: Duration,
    probe_in_flight: bool,
    trips: u64,
    window_start: Instant,
    window_ok_base: u64,
    window_unwell: u32,
    jitter_seed: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        let now = Instant::now();
        Breaker {
            state: AtomicU8::new(BreakerState::Closed as u8),
            ok: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                interval: settings.probe_min,
                settings,
                since: SystemTime::now(),
                failures: 0,
                last_error: String::new(),
                next_probe: now,
                probe_in_flight: false,
                trips: 0,
                window_start: now,
                window_ok_base: 0,
                window_unwell: 0,
                jitter_seed: 0x9e37_79b9_7f4a_7c15,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the settings (RELOAD, a mode change); the state is kept.
    pub fn update_settings(&self, settings: BreakerSettings) {
        self.lock().settings = settings;
    }

    /// The current state (one atomic load).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Relaxed))
    }

    /// May a checkout go on? Closed: `None`, without reading the clock (every checkout
    /// asks). Open or half-open: as [`Breaker::check_at`] now.
    pub fn check(&self) -> Option<Refusal> {
        if self.state() == BreakerState::Closed {
            return None;
        }
        self.check_at(Instant::now())
    }

    /// [`Breaker::check`] at `now`: closed, `None`; open or half-open, why not, and
    /// whether a probe is due (checkouts never wait for one: they fail at once).
    pub fn check_at(&self, now: Instant) -> Option<Refusal> {
        let inner = self.lock();
        match self.state() {
            BreakerState::Closed => None,
            state => Some(Refusal {
                retry_in: inner.next_probe.saturating_duration_since(now),
                last_error: inner.last_error.clone(),
                probe_due: state == BreakerState::Open && now >= inner.next_probe,
            }),
        }
    }

    /// May a connect be attempted now?
    pub fn admit(&self, now: Instant) -> Admit {
        if self.state() == BreakerState::Closed {
            return Admit::Go;
        }
        let mut inner = self.lock();
        match self.state() {
            BreakerState::Closed => Admit::Go,
            BreakerState::Open if now >= inner.next_probe && !inner.probe_in_flight => {
                inner.probe_in_flight = true;
                self.set_state(&mut inner, BreakerState::HalfOpen);
                Admit::Probe
            }
            _ => Admit::Refuse(inner.next_probe.saturating_duration_since(now)),
        }
    }

    /// A connect (probe or not) succeeded: the upstream is up.
    pub fn on_success(&self) {
        if self.state() == BreakerState::Closed {
            let mut inner = self.lock();
            inner.failures = 0;
            return;
        }
        let mut inner = self.lock();
        inner.failures = 0;
        inner.probe_in_flight = false;
        inner.interval = inner.settings.probe_min;
        self.set_state(&mut inner, BreakerState::Closed);
    }

    /// A connect or login failed in a way that says the upstream is unwell (refused,
    /// timed out, the server starting up or out of connections).
    pub fn on_failure(&self, now: Instant, why: &str) {
        let mut inner = self.lock();
        inner.last_error = why.to_owned();
        inner.failures = inner.failures.saturating_add(1);
        match self.state() {
            BreakerState::Closed => {
                let limit = inner.settings.failures;
                if limit > 0 && inner.failures >= limit {
                    self.trip(&mut inner, now);
                }
            }
            BreakerState::HalfOpen => {
                inner.probe_in_flight = false;
                inner.interval = (inner.interval * 2).min(inner.settings.probe_max);
                self.reopen(&mut inner, now);
            }
            // A connect that began before the breaker opened.
            BreakerState::Open => {}
        }
    }

    /// The half-open probe ended without an outcome (its caller went away): let the
    /// next caller probe.
    pub fn probe_abandoned(&self, now: Instant) {
        let mut inner = self.lock();
        if self.state() == BreakerState::HalfOpen && inner.probe_in_flight {
            inner.probe_in_flight = false;
            inner.next_probe = now;
            self.set_state(&mut inner, BreakerState::Open);
        }
    }

    /// A query ended without a "server unwell" error (one relaxed add).
    pub fn record_ok(&self) {
        self.ok.fetch_add(1, Relaxed);
    }

    /// A query ended with a "server unwell" error (see [`is_unwell`]).
    pub fn record_unwell(&self, now: Instant, why: &str) {
        let ok_now = self.ok.load(Relaxed);
        let mut inner = self.lock();
        if now.saturating_duration_since(inner.window_start) > inner.settings.window {
            inner.window_start = now;
            inner.window_ok_base = ok_now;
            inner.window_unwell = 0;
        }
        inner.window_unwell = inner.window_unwell.saturating_add(1);
        let unwell = f64::from(inner.window_unwell);
        let ok = ok_now.saturating_sub(inner.window_ok_base) as f64;
        let ratio = inner.settings.error_ratio;
        if self.state() == BreakerState::Closed
            && ratio > 0.0
            && inner.window_unwell >= inner.settings.min_errors
            && unwell / (unwell + ok) >= ratio
        {
            inner.last_error = why.to_owned();
            self.trip(&mut inner, now);
        }
    }

    /// A snapshot for display.
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let inner = self.lock();
        let state = self.state();
        BreakerSnapshot {
            state,
            since: inner.since,
            failures: inner.failures,
            last_error: inner.last_error.clone(),
            next_probe_in: (state == BreakerState::Open)
                .then(|| inner.next_probe.saturating_duration_since(now)),
            trips: inner.trips,
        }
    }

    fn trip(&self, inner: &mut Inner, now: Instant) {
        inner.trips += 1;
        inner.interval = inner.settings.probe_min;
        inner.window_unwell = 0;
        inner.window_ok_base = self.ok.load(Relaxed);
        inner.window_start = now;
        self.reopen(inner, now);
    }

    fn reopen(&self, inner: &mut Inner, now: Instant) {
        let wait = jitter(inner.interval, &mut inner.jitter_seed);
        inner.next_probe = now + wait;
        self.set_state(inner, BreakerState::Open);
    }

    fn set_state(&self, inner: &mut Inner, state: BreakerState) {
        let before = self.state.swap(state as u8, Relaxed);
        if before != state as u8 {
            inner.since = SystemTime::now();
        }
    }
}

/// `d` scaled by a factor in [0.8, 1.2), so many proxies do not probe in step.
fn jitter(d: Duration, seed: &mut u64) -> Duration {
    // xorshift64: enough to spread probes, no dependency.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let unit = (*seed % 1000) as f64 / 1000.0;
    d.mul_f64(0.8 + 0.4 * unit)
}

/// Whether a SQLSTATE says the server is unwell (counts toward the breaker): connection
/// exceptions (08), insufficient resources (53) other than a client's own limits,
/// operator intervention shutdowns and startups (57P0x), system errors (58) and
/// internal errors (XX000). Never a client's own error (23505, 42601, 40001, ...).
pub fn is_unwell(code: &[u8]) -> bool {
    match code {
        [b'0', b'8', ..] | [b'5', b'8', ..] => true,
        // 53400 configuration limit exceeded is the client's own doing (e.g. work_mem).
        [b'5', b'3', rest @ ..] => rest != b"400",
        [b'5', b'7', b'P', b'0', _] => true,
        b"XX000" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failures: 3,
            probe_min: Duration::from_millis(50),
            probe_max: Duration::from_millis(400),
            window: Duration::from_secs(10),
            error_ratio: 0.5,
            min_errors: 4,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_good_probe_closes_it() {
        let b = Breaker::new(settings());
        let t = Instant::now();
        assert_eq!(b.admit(t), Admit::Go);
        b.on_failure(t, "refused");
        b.on_failure(t, "refused");
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure(t, "refused");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(t), Admit::Refuse(d) if d <= Duration::from_millis(60)));
        let refusal = b.check_at(t).expect("refused while open");
        assert_eq!(refusal.last_error, "refused");
        assert!(!refusal.probe_due);
        // The probe is due within 50 ms ± 20%.
        let due = t + Duration::from_millis(61);
        assert!(
            b.check_at(due).is_some_and(|r| r.probe_due),
            "a probe is due"
        );
        assert_eq!(b.admit(due), Admit::Probe);
        assert!(
            matches!(b.admit(due), Admit::Refuse(_)),
            "one probe at a time"
        );
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(due), Admit::Go);
        assert_eq!(b.snapshot(due).trips, 1);
    }

    #[test]
    fn failed_probes_back_off_to_the_cap() {
        let b = Breaker::new(settings());
        let mut t = Instant::now();
        for _ in 0..3 {
            b.on_failure(t, "timeout");
        }
        let mut waits = Vec::new();
        for _ in 0..6 {
            let wait = b.snapshot(t).next_probe_in.expect("open");
            waits.push(wait);
            t += wait;
            assert_eq!(b.admit(t), Admit::Probe);
            b.on_failure(t, "timeout");
        }
        assert!(waits[1] > waits[0] && waits[2] > waits[1], "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(480)),
            "{waits:?}"
        );
        assert_eq!(b.snapshot(t).trips, 1, "re-opening is not a new trip");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_caller_probe() {
        let b = Breaker::new(settings());
        let t = Instant::now();
        for _ in 0..3 {
            b.on_failure(t, "x");
        }
        let due = t + Duration::from_secs(1);
        assert_eq!(b.admit(due), Admit::Probe);
        b.probe_abandoned(due);
        assert_eq!(b.admit(due), Admit::Probe);
    }

    #[test]
    fn a_share_of_unwell_query_errors_opens_it_but_client_errors_never_count() {
        let b = Breaker::new(settings());
        let t = Instant::now();
        for _ in 0..10 {
            b.record_ok();
        }
        for _ in 0..4 {
            b.record_unwell(t, "57P01");
        }
        assert_eq!(b.state(), BreakerState::Closed, "4 of 14: under half");
        for _ in 0..6 {
            b.record_unwell(t, "57P01");
        }
        assert_eq!(b.state(), BreakerState::Open, "10 of 20");
        assert!(is_unwell(b"08006") && is_unwell(b"57P03") && is_unwell(b"53300"));
        assert!(is_unwell(b"XX000") && is_unwell(b"58030"));
        for code in [
            &b"23505"[..],
            b"42601",
            b"40001",
            b"53400",
            b"57014",
            b"XX001",
        ] {
            assert!(!is_unwell(code), "{}", String::from_utf8_lossy(code));
        }
    }

    #[test]
    fn the_window_forgets_old_errors() {
        let b = Breaker::new(settings());
        let t = Instant::now();
        for _ in 0..3 {
            b.record_unwell(t, "x");
        }
        let later = t + Duration::from_secs(11);
        b.record_unwell(later, "x");
        assert_eq!(b.state(), BreakerState::Closed, "only 1 in the new window");
    }
}
