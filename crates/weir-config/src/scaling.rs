//! The scaling engine's settings: the `[scaling]` table (thresholds, steps, timing,
//! the server-side reserve) and the checks that tie them to the pool bounds
//! (`min_pool_size`, `max_pool_size`, per database too).
//!
//! A pool is sized by the engine when its `max_pool_size` is set (above 0) and
//! `autoscale` is on; otherwise it keeps the fixed `pool_size` as before.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration;

/// `[scaling]`: how the engine reacts and predicts. Every key has a default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    /// How often the engine samples the pools and decides. Default 1s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub tick: Duration,
    /// Connections added per ordinary grow (an emergency step is twice this). Default 2.
    pub scale_step: u32,
    /// Utilization (checked out / size) at which a pool grows. Default 0.8.
    pub scale_up_threshold: f64,
    /// Utilization at which it grows at once by an emergency step. Default 0.95.
    pub critical_threshold: f64,
    /// Utilization at or below which, for `scale_down_after`, a pool shrinks. Default 0.3.
    pub scale_down_threshold: f64,
    /// How long utilization must stay low before a shrink. Default 60s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub scale_down_after: Duration,
    /// p99 wait for a server connection above which a pool grows. Default 10ms.
    #[serde(deserialize_with = "duration::deserialize")]
    pub target_wait: Duration,
    /// Least time between two ordinary grows of one pool. Default 3s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub scale_up_cooldown: Duration,
    /// How long before a learned weekly peak a pool grows to meet it. Default 5m.
    #[serde(deserialize_with = "duration::deserialize")]
    pub prescale_lead: Duration,
    /// Server connections kept free on each server (beyond
    /// `superuser_reserved_connections`), shared with every other client and pgweir
    /// instance. Default 5.
    pub reserve_connections: u32,
    /// How often each server is asked for `max_connections` and its open connections.
    /// Default 5s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub cluster_check_interval: Duration,
    /// Where the learned weekly profile is kept across restarts; unset = not kept.
    pub state_dir: Option<PathBuf>,
    /// URL (`http://host:port/path`) that gets a JSON POST for each alert; unset = log only.
    pub alert_webhook: Option<String>,
    /// Least time between two alerts of one kind for one pool. Default 5m.
    #[serde(deserialize_with = "duration::deserialize")]
    pub alert_interval: Duration,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig {
            tick: Duration::from_secs(1),
            scale_step: 2,
            scale_up_threshold: 0.8,
            critical_threshold: 0.95,
            scale_down_threshold: 0.3,
            scale_down_after: Duration::from_secs(60),
            target_wait: Duration::from_millis(10),
            scale_up_cooldown: Duration::from_secs(3),
            prescale_lead: Duration::from_secs(300),
            reserve_connections: 5,
            cluster_check_interval: Duration::from_secs(5),
            state_dir: None,
            alert_webhook: None,
            alert_interval: Duration::from_secs(300),
        }
    }
}

impl ScalingConfig {
    /// The first rule these settings break, as (key, message).
    pub(crate) fn problem(&self) -> Option<(&'static str, String)> {
        let unit = |v: f64| v > 0.0 && v <= 1.0;
        if self.tick.is_zero() {
            return Some(("tick", "must be more than 0".into()));
        }
        if self.scale_step == 0 {
            return Some(("scale_step", "must be at least 1".into()));
        }
        for (key, v) in [
            ("scale_up_threshold", self.scale_up_threshold),
            ("critical_threshold", self.critical_threshold),
            ("scale_down_threshold", self.scale_down_threshold),
        ] {
            if !unit(v) {
                return Some((key, format!("must be above 0 and at most 1, got {v}")));
            }
        }
        if self.scale_down_threshold >= self.scale_up_threshold {
            return Some((
                "scale_down_threshold",
                format!(
                    "must be below scale_up_threshold ({} >= {}), or pools would flap",
                    self.scale_down_threshold, self.scale_up_threshold
                ),
            ));
        }
        if self.critical_threshold < self.scale_up_threshold {
            return Some((
                "critical_threshold",
                format!(
                    "must not be below scale_up_threshold ({} < {})",
                    self.critical_threshold, self.scale_up_threshold
                ),
            ));
        }
        if self.cluster_check_interval.is_zero() {
            return Some(("cluster_check_interval", "must be more than 0".into()));
        }
        if let Some(url) = &self.alert_webhook {
            if !url.starts_with("http://") {
                return Some((
                    "alert_webhook",
                    format!("must be an http:// URL, got {url:?}"),
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const DB: &str = "[databases.app]\nhost = \"127.0.0.1\"\n";

    #[test]
    fn scaling_settings_parse_and_are_checked() {
        let c = Config::from_toml_str(
            &format!("max_pool_size = 40\nmin_pool_size = 2\n{DB}[scaling]\ntarget_wait = \"20ms\"\nscale_step = 4\n"),
            "t",
        )
        .expect("valid");
        assert_eq!(c.scaling.scale_step, 4);
        assert_eq!(c.max_pool_size_for("x"), 40);
        let err =
            Config::from_toml_str(&format!("{DB}[scaling]\nscale_down_threshold = 0.9\n"), "t")
                .expect_err("flaps");
        assert!(
            err.to_string().contains("scaling.scale_down_threshold"),
            "{err}"
        );
        let err =
            Config::from_toml_str(&format!("max_pool_size = 4\nmin_pool_size = 5\n{DB}"), "t")
                .expect_err("crossed bounds");
        assert!(err.to_string().contains("max_pool_size"), "{err}");
    }
}
