//! The scaling engine's JSON API and admin rows (the paths are under
//! `/api/v1/database/automation/`; POSTs arrive authenticated with the admin token):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `status` | on/off, forced scale-up, per pool state, server budgets |
//! | GET | `scaling/patterns` | each pool's 168 hour-of-week slots (demand, confidence) |
//! | POST | `scaling/evaluate` | what the engine would decide now from the last samples, and why |
//! | POST | `scaling/predict` | demand for the next `hours` (body `{"hours":N}` or `?hours=N`, default 24) |
//! | GET | `scaling/history` | the decisions kept |
//! | GET | `load/history?hours=24` | per-minute peak demand, size, p99 wait, transactions |
//! | GET | `recommendations` | pool bounds and settings the data supports, with the evidence |
//! | POST | `emergency/scale-up` | every pool to the ceiling its budgets allow for `seconds` (default 600) |
//! | POST | `start`, `stop` | engine on / off (off: every pool keeps the size it has) |

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use weir_admin::scaling::{ScalingHistoryRow, ScalingRow};
use weir_scale::{Clock, Decision, SystemClock};

use super::{pool_id, Scaler};

const HOUR_MS: u64 = 3_600_000;

impl Scaler {
    /// Answers one automation API request: (HTTP status, JSON body), `None` = not found.
    pub fn automation(
        &self,
        post: bool,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Option<(u16, String)> {
        let now = SystemClock.now_ms();
        let arg = |name: &str| -> Option<u64> {
            let from_query = query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.parse().ok()).flatten()
            });
            from_query.or_else(|| {
                serde_json::from_slice::<Value>(body)
                    .ok()?
                    .get(name)?
                    .as_u64()
            })
        };
        let ok = |v: Value| Some((200, v.to_string()));
        match (post, path.trim_end_matches('/')) {
            (false, "status") => ok(self.status(now)),
            (false, "scaling/patterns") => ok(self.patterns()),
            (true, "scaling/evaluate") => ok(self.evaluate(now)),
            (true, "scaling/predict") => {
                let hours = arg("hours").unwrap_or(24).clamp(1, 168);
                ok(self.predict(now, u32::try_from(hours).unwrap_or(24)))
            }
            (false, "scaling/history") => {
                let st = self.lock();
                ok(json!({ "decisions": st.engine.history().iter().collect::<Vec<&Decision>>() }))
            }
            (false, "load/history") => {
                let hours = arg("hours").unwrap_or(24).clamp(1, 48);
                let since = now.saturating_sub(hours * HOUR_MS);
                let st = self.lock();
                let pools: serde_json::Map<String, Value> = st
                    .load
                    .iter()
                    .map(|(id, points)| {
                        let kept: Vec<_> = points.iter().filter(|p| p.at >= since).collect();
                        (id.clone(), json!(kept))
                    })
                    .collect();
                ok(json!({ "hours": hours, "pools": pools }))
            }
            (false, "recommendations") => ok(self.recommendations(now)),
            (true, "emergency/scale-up") => {
                let secs = arg("seconds").unwrap_or(600).clamp(1, 24 * 3600);
                let until = now + secs * 1000;
                self.lock().engine.force_until(Some(until));
                tracing::warn!(
                    seconds = secs,
                    "emergency scale-up: every autoscaled pool to its ceiling"
                );
                ok(json!({ "forced_until_ms": until, "seconds": secs }))
            }
            (true, "start") => {
                self.set_enabled(true);
                ok(json!({ "enabled": true }))
            }
            (true, "stop") => {
                self.set_enabled(false);
                ok(json!({ "enabled": false }))
            }
            _ => None,
        }
    }

    fn status(&self, now: u64) -> Value {
        let st = self.lock();
        json!({
            "enabled": self.enabled(),
            "forced_until_ms": st.engine.forced(now),
            "pools": st.engine.views(now),
            "servers": st.servers,
        })
    }

    fn patterns(&self) -> Value {
        let st = self.lock();
        let pools: serde_json::Map<String, Value> = st
            .inputs
            .iter()
            .filter_map(|i| {
                let p = st.engine.profile(&i.id)?;
                let slots: Vec<Value> = p
                    .slots()
                    .iter()
                    .enumerate()
                    .map(|(n, s)| json!({ "slot": n, "day": n / 24, "hour": n % 24, "demand": s.demand, "weeks": s.weeks, "confidence": s.confidence() }))
                    .collect();
                Some((i.id.clone(), json!(slots)))
            })
            .collect();
        json!({ "slot_0": "Monday 00:00-01:00 UTC", "pools": pools })
    }

    fn evaluate(&self, now: u64) -> Value {
        let st = self.lock();
        let mut dry = st.engine.clone();
        let decisions = dry.tick(now, &st.inputs);
        let pools: Vec<Value> = st
            .inputs
            .iter()
            .map(|i| {
                let current = st.engine.target(&i.id);
                let would = dry.target(&i.id);
                let why = decisions
                    .iter()
                    .find(|d| d.pool == i.id)
                    .map_or("steady", |d| d.reason.as_str());
                json!({ "pool": i.id, "target": current, "would_set": would, "reason": why, "sample": i.sample })
            })
            .collect();
        json!({ "enabled": self.enabled(), "pools": pools, "decisions": decisions })
    }

    fn predict(&self, now: u64, hours: u32) -> Value {
        let st = self.lock();
        let pools: serde_json::Map<String, Value> = st
            .inputs
            .iter()
            .filter_map(|i| {
                let p = st.engine.profile(&i.id)?;
                let rows: Vec<Value> = p
                    .forecast(now, hours)
                    .into_iter()
                    .map(|f| {
                        let size = i.settings.clamp(i.settings.size_for(f.demand));
                        json!({ "at_ms": f.at, "slot": f.slot, "demand": f.demand, "confidence": f.confidence, "size": size })
                    })
                    .collect();
                Some((i.id.clone(), json!(rows)))
            })
            .collect();
        json!({ "hours": hours, "pools": pools })
    }

    fn recommendations(&self, now: u64) -> Value {
        let st = self.lock();
        let out: Vec<Value> = st
            .inputs
            .iter()
            .map(|i| {
                let points = st.load.get(&i.id);
                let peak = points.map_or(0, |p| p.iter().map(|x| x.peak_demand).max().unwrap_or(0));
                let minutes = points.map_or(0, |p| p.len());
                let worst_wait = points.map_or(0.0, |p| p.iter().map(|x| x.wait_p99_ms).fold(0.0, f64::max));
                let learned_peak = st
                    .engine
                    .profile(&i.id)
                    .map_or(0.0, |p| p.slots().iter().map(|s| s.demand).fold(0.0, f64::max));
                let quiet = st
                    .engine
                    .profile(&i.id)
                    .and_then(|p| {
                        p.slots()
                            .iter()
                            .filter(|s| s.weeks > 0)
                            .map(|s| s.demand)
                            .min_by(f64::total_cmp)
                    })
                    .unwrap_or(0.0);
                let s = &i.settings;
                let needed_max = s.size_for(f64::from(peak).max(learned_peak));
                let history = st.engine.history();
                let refused = history.iter().filter(|d| d.pool == i.id && d.reason.is_refusal()).count();
                let saturated = history.iter().any(|d| d.pool == i.id && d.reason == weir_scale::Reason::Saturated);
                let mut advice = Vec::new();
                if needed_max > s.max && !saturated {
                    advice.push(format!("raise max_pool_size to {needed_max}: the peak demand seen ({}) needs it at the aimed utilization", f64::from(peak).max(learned_peak)));
                } else if needed_max.saturating_mul(2) < s.max && minutes >= 60 {
                    advice.push(format!("max_pool_size could be {}: demand never came near {}", needed_max.max(s.min), s.max));
                }
                if saturated {
                    advice.push("the database looked saturated: more connections bought no throughput; do not raise max_pool_size, look at the queries or the server".to_owned());
                }
                let floor = s.size_for(quiet).max(1);
                if floor > s.min {
                    advice.push(format!("min_pool_size {floor} would keep the quietest hour warm"));
                }
                json!({
                    "pool": i.id,
                    "min_pool_size": s.min,
                    "max_pool_size": s.max,
                    "suggested_max_pool_size": needed_max.max(s.min),
                    "suggested_min_pool_size": floor,
                    "advice": advice,
                    "evidence": {
                        "minutes_observed": minutes,
                        "peak_demand": peak,
                        "learned_weekly_peak": learned_peak,
                        "quietest_learned_hour": quiet,
                        "worst_p99_wait_ms": worst_wait,
                        "refused_grows": refused,
                        "saturated": saturated,
                    }
                })
            })
            .collect();
        json!({ "at_ms": now, "pools": out })
    }

    /// `SHOW SCALING` rows.
    pub fn rows(&self) -> Vec<ScalingRow> {
        let now = SystemClock.now_ms();
        let st = self.lock();
        let views = st.engine.views(now);
        let entries = self.handle().pools();
        views
            .into_iter()
            .filter_map(|v| {
                let e = entries.iter().find(|e| pool_id(e) == v.pool)?;
                let s = e.pool.stats();
                Some(ScalingRow {
                    database: e.database.clone(),
                    user: e.user.clone(),
                    size: s.idle + s.active + s.connecting,
                    min: v.min,
                    max: v.max,
                    target: v.target,
                    utilization: v.utilization,
                    wait_p99_ms: v.wait_p99_ms,
                    predicted_next_hour: v.predicted_next_hour,
                    last_decision: v.last.as_ref().map_or_else(String::new, |d| {
                        format!(
                            "{} -> {} at {}",
                            d.from,
                            d.to,
                            weir_admin::show::format_time(UNIX_EPOCH + Duration::from_millis(d.at))
                        )
                    }),
                    reason: v
                        .last
                        .as_ref()
                        .map_or_else(String::new, |d| d.reason.to_string()),
                })
            })
            .collect()
    }

    /// `SHOW SCALING_HISTORY` rows.
    pub fn history_rows(&self) -> Vec<ScalingHistoryRow> {
        let st = self.lock();
        st.engine
            .history()
            .iter()
            .map(|d| {
                let (database, user) = d.pool.split_once('/').unwrap_or((d.pool.as_str(), ""));
                ScalingHistoryRow {
                    at: UNIX_EPOCH + Duration::from_millis(d.at),
                    database: database.to_owned(),
                    user: user.to_owned(),
                    from: d.from,
                    to: d.to,
                    reason: d.reason.to_string(),
                    utilization: d.inputs.utilization,
                    waiting: d.inputs.waiting,
                    wait_p99_ms: d.inputs.wait_p99_ms,
                    predicted: d.inputs.predicted,
                    budget: d.inputs.budget,
                }
            })
            .collect()
    }

    /// Decisions by reason, for `/metrics`.
    pub fn decision_counts(&self) -> Vec<(String, u64)> {
        self.lock()
            .decisions_by_reason
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect()
    }
}
