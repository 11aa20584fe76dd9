//! Hour-of-week load patterns: the peak demand (clients holding or waiting for a server
//! connection) of each of the 168 hours of a week, learned as an EWMA over the weeks,
//! with a confidence that grows with the weeks seen. The engine grows a pool
//! `prescale_lead` ahead of an hour whose learned demand needs more than it has.
//!
//! Slots are in UTC, Monday 00:00 is slot 0. The profile is plain data and serializes
//! to JSON, so the binary can keep it in `state_dir` across restarts.

use serde::{Deserialize, Serialize};

use crate::{Millis, ProfileError};

/// Hours in a week: the number of slots.
pub const SLOTS: usize = 168;
/// Weight of the newest week in a slot's average.
const ALPHA: f64 = 0.3;
/// Confidence from which a slot's demand is acted on (one week seen).
pub const MIN_CONFIDENCE: f64 = 0.5;
const HOUR_MS: Millis = 3_600_000;

/// The hour-of-week slot (0 = Monday 00:00-01:00 UTC) of a time.
pub fn slot_of(t: Millis) -> usize {
    let hours = t / HOUR_MS;
    let days = hours / 24;
    // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday.
    let weekday = (days + 3) % 7;
    (weekday * 24 + hours % 24) as usize
}

/// One hour of the week.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// Learned peak demand (EWMA over weeks).
    pub demand: f64,
    /// Weeks folded in.
    pub weeks: u32,
}

impl Slot {
    /// How much the learned demand is trusted: 0 before any week, 0.5 after one, then
    /// 0.75, 0.875, ...
    pub fn confidence(&self) -> f64 {
        1.0 - 0.5f64.powi(i32::try_from(self.weeks.min(30)).unwrap_or(30))
    }
}

/// The 168-slot profile of one pool, plus the hour being observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    slots: Vec<Slot>,
    /// The absolute hour (since the epoch) being observed and its peak so far.
    current: Option<(u64, u32)>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            slots: vec![Slot::default(); SLOTS],
            current: None,
        }
    }
}

/// The prediction for one coming hour.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Forecast {
    /// Start of the hour (ms since the epoch).
    pub at: Millis,
    /// Its hour-of-week slot.
    pub slot: usize,
    /// Learned peak demand.
    pub demand: f64,
    /// 0..1, from the weeks seen.
    pub confidence: f64,
}

impl Profile {
    /// Note the demand seen at `now`; an hour that ended is folded into its slot.
    pub fn observe(&mut self, now: Millis, demand: u32) {
        let hour = now / HOUR_MS;
        if let Some((h, peak)) = &mut self.current {
            if *h == hour {
                *peak = (*peak).max(demand);
                return;
            }
        }
        if let Some((h, peak)) = self.current.take() {
            self.fold(h, peak);
        }
        self.current = Some((hour, demand));
    }

    fn fold(&mut self, hour: u64, peak: u32) {
        let slot = &mut self.slots[slot_of(hour * HOUR_MS)];
        slot.demand = if slot.weeks == 0 {
            f64::from(peak)
        } else {
            ALPHA * f64::from(peak) + (1.0 - ALPHA) * slot.demand
        };
        slot.weeks = slot.weeks.saturating_add(1);
    }

    /// The 168 slots.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Learned demand at time `t`, when trusted enough to act on.
    pub fn demand_at(&self, t: Millis) -> Option<f64> {
        let slot = self.slots[slot_of(t)];
        (slot.confidence() >= MIN_CONFIDENCE).then_some(slot.demand)
    }

    /// The highest trusted demand from `now` to `now + lead` (the hours a pool must be
    /// ready for now), if any.
    pub fn demand_ahead(&self, now: Millis, lead: Millis) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut t = now;
        loop {
            if let Some(d) = self.demand_at(t) {
                best = Some(best.map_or(d, |b: f64| b.max(d)));
            }
            if t >= now.saturating_add(lead) {
                return best;
            }
            // The next hour boundary, or the end of the lead.
            t = ((t / HOUR_MS + 1) * HOUR_MS).min(now.saturating_add(lead));
        }
    }

    /// The coming `hours` hours, from the one `now` is in.
    pub fn forecast(&self, now: Millis, hours: u32) -> Vec<Forecast> {
        (0..u64::from(hours))
            .map(|i| {
                let at = (now / HOUR_MS + i) * HOUR_MS;
                let slot = self.slots[slot_of(at)];
                Forecast {
                    at,
                    slot: slot_of(at),
                    demand: slot.demand,
                    confidence: slot.confidence(),
                }
            })
            .collect()
    }

    /// The profile as JSON, for `state_dir`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A profile written by [`Profile::to_json`].
    ///
    /// # Errors
    /// [`ProfileError`] when the text is not such a profile.
    pub fn from_json(text: &str) -> Result<Self, ProfileError> {
        let p: Profile = serde_json::from_str(text)?;
        if p.slots.len() != SLOTS {
            return Err(ProfileError::Slots(p.slots.len()));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_on_monday_utc() {
        // 2024-01-01 00:00 UTC was a Monday.
        let monday = 1_704_067_200_000;
        assert_eq!(slot_of(monday), 0);
        assert_eq!(slot_of(monday + 25 * HOUR_MS), 25);
        assert_eq!(slot_of(monday + 7 * 24 * HOUR_MS - 1), 167);
    }

    #[test]
    fn a_week_is_learned_and_trusted_after_one_pass() {
        let monday = 1_704_067_200_000;
        let mut p = Profile::default();
        for h in 0..=(7 * 24) {
            let demand = if h % 24 == 14 { 50 } else { 4 };
            p.observe(monday + h * HOUR_MS, demand);
        }
        assert_eq!(p.demand_at(monday + 14 * HOUR_MS), Some(50.0));
        assert_eq!(p.demand_at(monday + 13 * HOUR_MS), Some(4.0));
        let f = p.forecast(monday + 13 * HOUR_MS + 5, 2);
        assert_eq!(f[1].demand, 50.0);
        assert_eq!(f[1].confidence, 0.5);
        let back = Profile::from_json(&p.to_json()).expect("round trip");
        assert_eq!(back, p);
    }
}
