//! The metrics reference, generated from the code: [`render`] scrapes
//! [`crate::metrics::render`] over a one-pool sample backend and lists every family
//! with its type, labels and help text as a Markdown table. `pgweir metrics-doc`
//! prints it, and a test keeps README.md's copy equal to it, so the reference cannot
//! drift from what `/metrics` serves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::backend::{
    AdminBackend, AdminCommand, BoxFuture, ConfigRow, DatabaseRow, ListsRow, MemRow, PoolCounters,
    PoolLatency, PoolRow, QueryRow, Readiness, SocketRow, StateRow, StatsTotals, UserRow,
};
use crate::stats::StatsAverager;

/// One metric family as `/metrics` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The family name (`pgweir_transactions`; samples add `_total`, `_bucket`, ...).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// The help text.
    pub help: String,
    /// Label names of its series (without `le`).
    pub labels: BTreeSet<String>,
}

impl Family {
    /// The sample names a query uses: `name_total` for counters; `name_bucket`,
    /// `name_sum` and `name_count` for histograms; the name itself otherwise.
    pub fn sample_names(&self) -> Vec<String> {
        match self.kind.as_str() {
            "counter" => vec![format!("{}_total", self.name)],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }
}

/// Reads the families (HELP, TYPE, label names) of an OpenMetrics/Prometheus text
/// exposition. Sample lines are matched to the family they start with.
pub fn parse_families(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.push(Family {
                name: name.to_owned(),
                kind: String::new(),
                help: help.to_owned(),
                labels: BTreeSet::new(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let (Some((name, kind)), Some(f)) = (rest.split_once(' '), families.last_mut()) {
                if f.name == name {
                    kind.clone_into(&mut f.kind);
                }
            }
        } else if !line.starts_with('#') {
            let Some(f) = families.last_mut() else {
                continue;
            };
            if let Some((_, labels)) = line.split_once('{') {
                let labels = labels.split('}').next().unwrap_or("");
                for pair in labels.split(',') {
                    if let Some((k, _)) = pair.split_once('=') {
                        if k != "le" && !k.is_empty() {
                            f.labels.insert(k.to_owned());
                        }
                    }
                }
            }
        }
    }
    families
}

/// The Markdown table of every family `/metrics` serves.
pub fn render() -> String {
    let text = crate::metrics::render(Arc::new(Sample::new())).unwrap_or_default();
    let mut out = String::from("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for f in parse_families(&text) {
        let names: Vec<String> = f.sample_names().iter().map(|n| format!("`{n}`")).collect();
        let labels: Vec<&str> = f.labels.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            names.join("<br>"),
            f.kind,
            labels.join(", "),
            f.help.replace('|', "\\|")
        ));
    }
    out
}

/// A backend with one pool and one error class, so every family shows its labels.
struct Sample {
    averager: StatsAverager,
}

impl Sample {
    fn new() -> Self {
        Sample {
            averager: StatsAverager::new(Duration::from_secs(60)),
        }
    }
}

fn empty_histogram() -> Histogram<u64> {
    Histogram::new(3).unwrap_or_else(|_| Histogram::new(2).expect("2 significant digits"))
}

impl AdminBackend for Sample {
    fn pools(&self) -> Vec<PoolRow> {
        vec![PoolRow {
            database: "db".into(),
            user: "user".into(),
            ..PoolRow::default()
        }]
    }
    fn clients(&self) -> Vec<SocketRow> {
        Vec::new()
    }
    fn servers(&self) -> Vec<SocketRow> {
        Vec::new()
    }
    fn databases(&self) -> Vec<DatabaseRow> {
        Vec::new()
    }
    fn users(&self) -> Vec<UserRow> {
        Vec::new()
    }
    fn config(&self) -> Vec<ConfigRow> {
        Vec::new()
    }
    fn lists(&self) -> ListsRow {
        ListsRow::default()
    }
    fn mem(&self) -> Vec<MemRow> {
        Vec::new()
    }
    fn state(&self) -> StateRow {
        StateRow::default()
    }
    fn stats(&self) -> Vec<StatsTotals> {
        Vec::new()
    }
    fn averager(&self) -> &StatsAverager {
        &self.averager
    }
    fn pool_counters(&self) -> Vec<PoolCounters> {
        vec![PoolCounters {
            database: "db".into(),
            user: "user".into(),
            errors_by_class: vec![("42".into(), 0)],
            ..PoolCounters::default()
        }]
    }
    fn latency(&self) -> Vec<PoolLatency> {
        vec![PoolLatency {
            database: "db".into(),
            user: "user".into(),
            query: empty_histogram(),
            transaction: empty_histogram(),
            wait: empty_histogram(),
            wait_by_class: Vec::new(),
        }]
    }
    fn queries(&self, _limit: usize) -> Vec<QueryRow> {
        Vec::new()
    }
    fn scaling(&self) -> Vec<crate::scaling::ScalingRow> {
        vec![crate::scaling::ScalingRow {
            database: "db".into(),
            user: "user".into(),
            size: 2,
            min: 2,
            max: 40,
            target: 2,
            utilization: 0.0,
            wait_p99_ms: 0.0,
            predicted_next_hour: 0.0,
            last_decision: String::new(),
            reason: "initial".into(),
        }]
    }
    fn scaling_decisions(&self) -> Vec<(String, u64)> {
        vec![("initial".into(), 1)]
    }
    fn readiness(&self) -> Readiness {
        Readiness {
            listening: true,
            draining: false,
            upstream_reachable: true,
        }
    }
    fn command(&self, _cmd: AdminCommand) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("the metrics reference backend runs no commands".to_owned()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_type_and_help_and_pool_families_their_labels() {
        let text = crate::metrics::render(Arc::new(Sample::new())).expect("renders");
        let families = parse_families(&text);
        assert!(families.len() >= 20, "{families:?}");
        for f in &families {
            assert!(!f.kind.is_empty() && !f.help.is_empty(), "{f:?}");
        }
        let errors = families
            .iter()
            .find(|f| f.name == "pgweir_errors")
            .expect("errors family");
        assert_eq!(
            errors.labels.iter().map(String::as_str).collect::<Vec<_>>(),
            ["class", "database", "user"]
        );
        let doc = render();
        assert!(
            doc.contains("`pgweir_query_duration_seconds_bucket`"),
            "{doc}"
        );
        assert!(doc.contains("`pgweir_transactions_total`"), "{doc}");
    }
}
