//! The reactive rule for one pool: grow on utilization or wait time (an emergency step,
//! without cooldown, when critical or when clients time out), shrink after utilization
//! stayed low for `scale_down_after`, and hold instead of growing while the upstream's
//! breaker is open or when the last grow bought no throughput.
//!
//! Hysteresis: a grow aims for the utilization halfway between the grow and shrink
//! thresholds ([`ScaleSettings::aim`]), and any busy tick restarts the quiet spell a
//! shrink needs, so a load that comes and goes never makes the size saw up and down.

use std::time::Duration;

use crate::{Millis, Reason, Sample, ScaleSettings};

/// Ticks after a grow before its effect on throughput is judged.
const SETTLE_MS: Millis = 3_000;
/// A grow that raised throughput by less than this share bought nothing...
const FLAT_TPS: f64 = 1.05;
/// ...and if server time per transaction rose by at least this part of the share the
/// concurrency grew by (the added transactions went into waiting inside the
/// database), the database is saturated.
const ABSORBED: f64 = 0.5;
/// Concurrency must have grown by this share for a grow to be judged at all.
const JUDGEABLE: f64 = 1.05;
/// Weight of the newest tick in the throughput and transaction-time averages.
const EWMA_NEW: f64 = 0.5;

/// Throughput and transaction time when a grow was made, to judge it later.
#[derive(Clone, Debug)]
struct GrowProbe {
    at: Millis,
    tps: f64,
    txn_us: f64,
    /// Connections busy when the grow was made.
    busy: f64,
}

/// What the reactive rule wants for one tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proposal {
    /// The size it wants.
    pub to: u32,
    /// Why.
    pub reason: Reason,
    /// True when a grow was wanted (even if held).
    pub wants_grow: bool,
}

/// Reactive state of one pool.
#[derive(Clone, Debug)]
pub struct Reactive {
    size: u32,
    last_grow: Option<Millis>,
    low_since: Option<Millis>,
    low_peak: u32,
    last_tick: Option<Millis>,
    tps: f64,
    txn_us: f64,
    probe: Option<GrowProbe>,
    saturated_until: Option<Millis>,
    /// Connections busy at the last tick.
    busy: f64,
    /// Once found saturated, later grows are single probing steps until one of them
    /// buys throughput again.
    was_saturated: bool,
    utilization: f64,
}

impl Reactive {
    /// A pool now at `size`.
    pub fn new(size: u32) -> Self {
        Reactive {
            size,
            last_grow: None,
            low_since: None,
            low_peak: 0,
            last_tick: None,
            tps: 0.0,
            txn_us: 0.0,
            probe: None,
            saturated_until: None,
            busy: 0.0,
            was_saturated: false,
            utilization: 0.0,
        }
    }

    /// The size the rule believes the pool has.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Utilization seen at the last tick.
    pub fn utilization(&self) -> f64 {
        self.utilization
    }

    /// Whether the database was found saturated and grows are held until some time.
    pub fn saturated(&self, now: Millis) -> bool {
        self.saturated_until.is_some_and(|t| now < t)
    }

    /// The size this tick's sample calls for; `floor` is what the prediction wants
    /// kept (0 for none).
    pub fn decide(
        &mut self,
        now: Millis,
        s: &ScaleSettings,
        sample: &Sample,
        floor: u32,
    ) -> Proposal {
        self.learn(now, sample);
        let size = self.size;
        let busy = sample.active.max(sample.peak_active);
        let util = if size == 0 {
            if sample.demand() > 0 {
                1.0
            } else {
                0.0
            }
        } else {
            f64::from(busy) / f64::from(size)
        };
        self.utilization = util;
        let critical = util >= s.critical_threshold || sample.timeouts > 0;
        let by_util = util >= s.scale_up_threshold;
        // Long waits only call for more connections when the pool was full: waits while
        // it had room were connects (cold start), which warming handles, not size.
        let by_wait = sample.wait_p99 > s.target_wait && (busy >= size || sample.waiting > 0);
        let reactive_grow = critical || by_util || by_wait;
        let predicted_grow = floor > size;
        if !(reactive_grow || predicted_grow) {
            return self.maybe_shrink(now, s, sample, util, floor);
        }
        self.low_since = None;
        self.low_peak = 0;
        let hold = |reason| Proposal {
            to: size,
            reason,
            wants_grow: true,
        };
        if size >= s.max {
            return Proposal {
                to: size,
                reason: Reason::Steady,
                wants_grow: false,
            };
        }
        if sample.breaker_open {
            return hold(Reason::BreakerOpen);
        }
        // Held while saturated, and while a probing step is still being judged.
        if self.saturated(now) || (self.was_saturated && self.probe.is_some()) {
            return hold(Reason::Saturated);
        }
        let mut to = size;
        let mut reason = Reason::Steady;
        if reactive_grow {
            let cooled = self
                .last_grow
                .is_none_or(|t| now.saturating_sub(t) >= millis(s.scale_up_cooldown));
            if critical || cooled {
                let step = if critical {
                    s.scale_step.saturating_mul(2)
                } else {
                    s.scale_step
                };
                to = size
                    .saturating_add(step.max(1))
                    .max(s.size_for(f64::from(sample.demand())));
                reason = if critical {
                    Reason::Critical
                } else if by_util {
                    Reason::Utilization
                } else {
                    Reason::WaitTime
                };
            }
        }
        if self.was_saturated && to > size {
            // One probing step at a time while the database was last seen saturated.
            to = to.min(size.saturating_add(s.scale_step.max(1)));
        }
        if floor > to {
            to = floor;
            reason = Reason::Predicted;
        }
        Proposal {
            to: s.clamp(to),
            reason,
            wants_grow: true,
        }
    }

    fn maybe_shrink(
        &mut self,
        now: Millis,
        s: &ScaleSettings,
        sample: &Sample,
        util: f64,
        floor: u32,
    ) -> Proposal {
        let steady = Proposal {
            to: self.size,
            reason: Reason::Steady,
            wants_grow: false,
        };
        if util > s.scale_down_threshold {
            self.low_since = None;
            self.low_peak = 0;
            return steady;
        }
        let since = *self.low_since.get_or_insert(now);
        self.low_peak = self.low_peak.max(sample.demand());
        if now.saturating_sub(since) < millis(s.scale_down_after) {
            return steady;
        }
        // The quiet spell is over: shrink to what it needed (at least one step when
        // that is more than a step), never under the predicted floor.
        let needed = s.clamp(s.size_for(f64::from(self.low_peak)).max(floor));
        self.low_since = Some(now);
        self.low_peak = 0;
        if needed >= self.size {
            return steady;
        }
        Proposal {
            to: needed,
            reason: Reason::Idle,
            wants_grow: false,
        }
    }

    /// The engine applied `to` (after budgets) at `now`.
    pub fn applied(&mut self, now: Millis, to: u32) {
        if to > self.size {
            self.last_grow = Some(now);
            self.probe = Some(GrowProbe {
                at: now,
                tps: self.tps,
                txn_us: self.txn_us,
                busy: self.busy,
            });
            self.low_since = None;
            self.low_peak = 0;
        }
        self.size = to;
    }

    /// Follow throughput and server time per transaction; judge the last grow once it
    /// has settled.
    fn learn(&mut self, now: Millis, sample: &Sample) {
        let busy = f64::from(sample.active.max(sample.peak_active));
        self.busy = busy;
        let secs = self
            .last_tick
            .map_or(1.0, |t| (now.saturating_sub(t) as f64 / 1000.0).max(0.001));
        self.last_tick = Some(now);
        let tps = sample.transactions as f64 / secs;
        self.tps = if self.tps == 0.0 {
            tps
        } else {
            EWMA_NEW * tps + (1.0 - EWMA_NEW) * self.tps
        };
        if sample.transactions > 0 {
            let txn = sample.transaction_mean.as_micros() as f64;
            self.txn_us = if self.txn_us == 0.0 {
                txn
            } else {
                EWMA_NEW * txn + (1.0 - EWMA_NEW) * self.txn_us
            };
        }
        let Some(probe) = self.probe.clone() else {
            return;
        };
        if now.saturating_sub(probe.at) < SETTLE_MS {
            return;
        }
        self.probe = None;
        // Judged only if more transactions ran at once: flat throughput without more
        // concurrency says nothing about the database.
        let grew = busy / probe.busy.max(1.0);
        if probe.tps <= 0.0 || probe.txn_us <= 0.0 || grew < JUDGEABLE {
            return;
        }
        let slower = 1.0 + ABSORBED * (grew - 1.0);
        if self.tps < probe.tps * FLAT_TPS && self.txn_us > probe.txn_us * slower {
            self.saturated_until = Some(now.saturating_add(SATURATION_HOLD_MS));
            self.was_saturated = true;
        } else if self.tps >= probe.tps * FLAT_TPS {
            self.was_saturated = false;
        }
    }
}

/// How long grows stay held once the database was found saturated.
const SATURATION_HOLD_MS: Millis = 60_000;

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(active: u32, waiting: u32) -> Sample {
        Sample {
            active,
            waiting,
            ..Sample::default()
        }
    }

    #[test]
    fn grows_to_serve_the_demand_at_the_aimed_utilization() {
        let s = ScaleSettings::default();
        let mut r = Reactive::new(2);
        let p = r.decide(1_000, &s, &busy(2, 58), 0);
        assert_eq!(p.reason, Reason::Critical);
        assert_eq!(p.to, 40, "60 wanted at 0.55 is more than the ceiling");
    }

    #[test]
    fn waits_out_the_cooldown_unless_critical() {
        let s = ScaleSettings::default();
        let mut r = Reactive::new(10);
        let p = r.decide(1_000, &s, &busy(8, 0), 0);
        assert_eq!(p.reason, Reason::Utilization);
        r.applied(1_000, p.to);
        let size = r.size();
        let p = r.decide(2_000, &s, &busy(size * 85 / 100, 0), 0);
        assert_eq!(p.to, size, "within the cooldown");
        let p = r.decide(3_000, &s, &busy(size, 3), 0);
        assert_eq!(p.reason, Reason::Critical);
        assert!(p.to > size);
    }

    #[test]
    fn slow_connects_while_the_pool_has_room_are_not_a_reason_to_grow() {
        let s = ScaleSettings::default();
        let mut r = Reactive::new(2);
        let sample = Sample {
            active: 1,
            peak_active: 1,
            wait_p99: std::time::Duration::from_millis(30),
            ..Sample::default()
        };
        assert_eq!(r.decide(1_000, &s, &sample, 0).to, 2);
    }

    #[test]
    fn an_open_breaker_holds_growth() {
        let s = ScaleSettings::default();
        let mut r = Reactive::new(4);
        let mut sample = busy(4, 10);
        sample.breaker_open = true;
        let p = r.decide(1_000, &s, &sample, 0);
        assert_eq!((p.to, p.reason), (4, Reason::BreakerOpen));
    }
}
