//! The engine: every pool's reactive state and profile, the budgets, the history; one
//! `tick` turns samples into targets.

use std::collections::BTreeMap;

use crate::budget::allocate;
use crate::history::{Decision, History, Inputs};
use crate::predict::Profile;
use crate::reactive::{millis, Reactive};
use crate::{Millis, Reason, Sample, ScaleSettings};

/// Decisions kept by default.
const HISTORY: usize = 1000;

/// One pool's input to a tick.
#[derive(Clone, Debug)]
pub struct PoolInput {
    /// `database/user`.
    pub id: String,
    /// Its bounds and thresholds.
    pub settings: ScaleSettings,
    /// The budget groups it belongs to (its database, its server).
    pub groups: Vec<String>,
    /// What it looked like over the tick.
    pub sample: Sample,
}

/// What the engine knows of one pool, for `SHOW SCALING` and the JSON API.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoolView {
    /// `database/user`.
    pub pool: String,
    /// The target the engine set.
    pub target: u32,
    /// The floor.
    pub min: u32,
    /// The ceiling.
    pub max: u32,
    /// active / target at the last tick.
    pub utilization: f64,
    /// p99 wait over the last tick, ms.
    pub wait_p99_ms: f64,
    /// Learned peak demand for the coming hour (0 when nothing is trusted yet).
    pub predicted_next_hour: f64,
    /// Grows are held: the database looked saturated.
    pub saturated: bool,
    /// The last decision.
    pub last: Option<Decision>,
    /// The last sample.
    pub sample: Sample,
}

#[derive(Clone, Debug)]
struct PoolState {
    reactive: Reactive,
    profile: Profile,
    settings: ScaleSettings,
    sample: Sample,
    last: Option<Decision>,
    /// The reason of the last tick's proposal, so a held grow is recorded once.
    last_reason: Reason,
}

/// The scaling engine for all pools.
#[derive(Clone, Debug)]
pub struct Engine {
    pools: BTreeMap<String, PoolState>,
    budgets: BTreeMap<String, u32>,
    history: History,
    forced_until: Option<Millis>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine that knows no pool yet.
    pub fn new() -> Self {
        Engine {
            pools: BTreeMap::new(),
            budgets: BTreeMap::new(),
            history: History::new(HISTORY),
            forced_until: None,
        }
    }

    /// Set (or with `None` lift) the connection budget of a group.
    pub fn set_budget(&mut self, group: &str, budget: Option<u32>) {
        match budget {
            Some(b) => {
                self.budgets.insert(group.to_owned(), b);
            }
            None => {
                self.budgets.remove(group);
            }
        }
    }

    /// The budget of a group, if it has one.
    pub fn budget(&self, group: &str) -> Option<u32> {
        self.budgets.get(group).copied()
    }

    /// Until `until`, every pool is sized at its ceiling (as far as budgets allow).
    pub fn force_until(&mut self, until: Option<Millis>) {
        self.forced_until = until;
    }

    /// When a forced scale-up ends, if one is in force at `now`.
    pub fn forced(&self, now: Millis) -> Option<Millis> {
        self.forced_until.filter(|&t| now < t)
    }

    /// The profile a pool has learned (a new pool starts from `profile`, see
    /// [`Engine::restore_profile`]).
    pub fn profile(&self, pool: &str) -> Option<&Profile> {
        self.pools.get(pool).map(|p| &p.profile)
    }

    /// Give a pool a profile learned before (read back from `state_dir`), before or
    /// after its first tick.
    pub fn restore_profile(&mut self, pool: &str, profile: Profile, settings: ScaleSettings) {
        let state = self
            .pools
            .entry(pool.to_owned())
            .or_insert_with(|| new_state(settings));
        state.profile = profile;
    }

    /// Forget a pool (it was closed).
    pub fn remove(&mut self, pool: &str) {
        self.pools.remove(pool);
    }

    /// The current target of a pool.
    pub fn target(&self, pool: &str) -> Option<u32> {
        self.pools.get(pool).map(|p| p.reactive.size())
    }

    /// The decisions kept, oldest first.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// What the engine knows of every pool, at `now`.
    pub fn views(&self, now: Millis) -> Vec<PoolView> {
        self.pools
            .iter()
            .map(|(id, p)| PoolView {
                pool: id.clone(),
                target: p.reactive.size(),
                min: p.settings.min,
                max: p.settings.max,
                utilization: p.reactive.utilization(),
                wait_p99_ms: p.sample.wait_p99.as_secs_f64() * 1000.0,
                predicted_next_hour: p.profile.demand_ahead(now, 3_600_000).unwrap_or(0.0),
                saturated: p.reactive.saturated(now),
                last: p.last.clone(),
                sample: p.sample,
            })
            .collect()
    }

    /// One tick at `now`: learn from the samples, decide every pool's target within its
    /// bounds and budgets. Returns the decisions made (changes, and grows refused for a
    /// new reason); [`Engine::target`] has every target afterwards.
    pub fn tick(&mut self, now: Millis, inputs: &[PoolInput]) -> Vec<Decision> {
        let forced = self.forced(now).is_some();
        let mut plans: Vec<(usize, u32, Reason, bool, f64)> = Vec::with_capacity(inputs.len());
        let mut out = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let state = self
                .pools
                .entry(input.id.clone())
                .or_insert_with(|| new_state(input.settings.clone()));
            let s = &input.settings;
            // Bounds changed (RELOAD, SET): the target moves inside them, nothing else.
            let first = state.last.is_none();
            let current = state.reactive.size();
            if first || state.settings != *s {
                state.settings = s.clone();
                let to = s.clamp(current);
                if first || to != current {
                    let reason = if first {
                        Reason::Initial
                    } else {
                        Reason::Bounds
                    };
                    let d = decision(now, &input.id, current, to, reason, &input.sample, state);
                    state.reactive.applied(now, to);
                    state.last = Some(d.clone());
                    self.history.push(d.clone());
                    out.push(d);
                }
            }
            state.sample = input.sample;
            state.profile.observe(now, input.sample.demand());
            let predicted = state
                .profile
                .demand_ahead(now, millis(s.prescale_lead))
                .unwrap_or(0.0);
            let floor = if forced {
                s.max
            } else {
                s.clamp(s.size_for(predicted)).min(s.max)
            };
            let floor = if predicted > 0.0 || forced { floor } else { 0 };
            let mut p = state.reactive.decide(now, s, &input.sample, floor);
            if forced && p.to == s.max && p.reason == Reason::Predicted {
                p.reason = Reason::Manual;
            }
            plans.push((i, p.to, p.reason, p.wants_grow, predicted));
        }
        // Budgets: each group cuts its members' wanted sizes to fit.
        let mut wanted: Vec<u32> = plans.iter().map(|p| p.1).collect();
        let mut cut_to: Vec<Option<u32>> = vec![None; plans.len()];
        for (group, &budget) in &self.budgets {
            let members: Vec<usize> = (0..plans.len())
                .filter(|&k| inputs[plans[k].0].groups.iter().any(|g| g == group))
                .collect();
            if members.is_empty() {
                continue;
            }
            let current: Vec<u32> = members
                .iter()
                .map(|&k| self.pools[&inputs[plans[k].0].id].reactive.size())
                .collect();
            let want: Vec<u32> = members.iter().map(|&k| wanted[k]).collect();
            let alloc = allocate(&current, &want, budget);
            for (j, &k) in members.iter().enumerate() {
                if alloc[j] < wanted[k] {
                    wanted[k] = alloc[j];
                    cut_to[k] = Some(budget);
                }
            }
        }
        for (k, &(i, _, reason, wants_grow, predicted)) in plans.iter().enumerate() {
            let input = &inputs[i];
            let Some(state) = self.pools.get_mut(&input.id) else {
                continue;
            };
            let from = state.reactive.size();
            let to = wanted[k];
            let reason = if cut_to[k].is_some() {
                Reason::Budget
            } else {
                reason
            };
            let refused = to == from && wants_grow && reason.is_refusal();
            let record = to != from || (refused && state.last_reason != reason);
            state.last_reason = reason;
            if record {
                let mut d = decision(now, &input.id, from, to, reason, &input.sample, state);
                d.inputs.predicted = predicted;
                d.inputs.budget = cut_to[k];
                state.last = Some(d.clone());
                self.history.push(d.clone());
                out.push(d);
            }
            if to != from {
                state.reactive.applied(now, to);
            }
        }
        out
    }
}

fn new_state(settings: ScaleSettings) -> PoolState {
    PoolState {
        reactive: Reactive::new(settings.min),
        profile: Profile::default(),
        settings,
        sample: Sample::default(),
        last: None,
        last_reason: Reason::Initial,
    }
}

fn decision(
    now: Millis,
    pool: &str,
    from: u32,
    to: u32,
    reason: Reason,
    sample: &Sample,
    state: &PoolState,
) -> Decision {
    Decision {
        at: now,
        pool: pool.to_owned(),
        from,
        to,
        reason,
        inputs: Inputs {
            utilization: state.reactive.utilization(),
            active: sample.active,
            waiting: sample.waiting,
            wait_p99_ms: sample.wait_p99.as_secs_f64() * 1000.0,
            predicted: 0.0,
            budget: None,
        },
    }
}
