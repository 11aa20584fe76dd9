//! `/metrics`: the backend's snapshots rendered in the OpenMetrics text format
//! with `prometheus-client`.
//!
//! Nothing is registered ahead of time: every scrape builds a registry around one
//! collector that reads the backend, so the numbers are as fresh as the scrape and
//! pools that come and go need no bookkeeping. Latency histograms are built from
//! the HDR snapshots at scrape time with fixed buckets from 100 µs to 60 s.

use std::fmt;
use std::sync::Arc;

use hdrhistogram::Histogram;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::{AdminBackend, PoolCounters};

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histogram buckets, in microseconds (`+Inf` follows).
pub const BUCKETS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Renders every metric family for one scrape.
///
/// # Errors
/// Only if formatting into the string fails, which it does not in practice.
pub fn render(backend: Arc<dyn AdminBackend>) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("pgweir");
    registry.register_collector(Box::new(Scrape(backend)));
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

struct Scrape(Arc<dyn AdminBackend>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

/// A value with the labels of one series.
pub(crate) type Series<'a, V> = Vec<(Vec<(&'static str, &'a str)>, V)>;

/// The database and user labels of a pool's counters.
fn labels(c: &PoolCounters) -> Vec<(&'static str, &str)> {
    vec![("database", c.database.as_str()), ("user", c.user.as_str())]
}

pub(crate) fn gauge_family<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &Series<'_, V>,
) -> fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in series {
        if labels.is_empty() {
            m.encode_gauge(v)?;
        } else {
            m.encode_family(labels)?.encode_gauge(v)?;
        }
    }
    Ok(())
}

pub(crate) fn counter_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &Series<'_, u64>,
) -> fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in series {
        m.encode_family(labels)?
            .encode_counter::<NoLabelSet, u64, f64>(v, None)?;
    }
    Ok(())
}

/// Per-bucket (not cumulative: the encoder accumulates) counts, sum (seconds)
/// and count of an HDR histogram in µs; the last bucket is `+Inf`.
pub fn buckets(h: &Histogram<u64>) -> (Vec<(f64, u64)>, f64, u64) {
    let mut counts = [0u64; BUCKETS_US.len() + 1];
    let mut sum_us = 0f64;
    for v in h.iter_recorded() {
        let value = v.value_iterated_to();
        let n = v.count_at_value();
        sum_us += value as f64 * n as f64;
        // The first bucket whose bound the value does not exceed; HDR values are
        // exact to 0.1%, well inside bucket widths.
        let lowest = h.lowest_equivalent(value);
        let i = BUCKETS_US
            .iter()
            .position(|&b| lowest <= b)
            .unwrap_or(BUCKETS_US.len());
        if let Some(c) = counts.get_mut(i) {
            *c += n;
        }
    }
    let bounds = BUCKETS_US
        .iter()
        .map(|&b| b as f64 / 1e6)
        // prometheus-client writes `le="+Inf"` for f64::MAX.
        .chain(std::iter::once(f64::MAX));
    let out = bounds.zip(counts).collect();
    (out, sum_us / 1e6, h.len())
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let b = &*self.0;
        let ready = b.readiness();
        gauge_family(
            &mut encoder,
            "ready",
            "1 when listening, not draining and some upstream is reachable",
            None,
            &vec![(vec![], i64::from(ready.is_ready()))],
        )?;
        let state = b.state();
        gauge_family(
            &mut encoder,
            "paused",
            "1 while PAUSE or SUSPEND is in effect",
            None,
            &vec![(vec![], i64::from(state.paused || state.suspended))],
        )?;

        gauge_family(
            &mut encoder,
            "clients_parked",
            "Idle clients parked without a task (a small record each, no task or buffers)",
            None,
            &vec![(vec![], i64::from(b.lists().parked_clients))],
        )?;

        let pools = b.pools();
        let mut clients: Series<'_, u32> = Vec::new();
        let mut servers: Series<'_, u32> = Vec::new();
        let mut maxwait: Series<'_, f64> = Vec::new();
        for p in &pools {
            let l = |s: &'static str| {
                vec![
                    ("database", p.database.as_str()),
                    ("user", p.user.as_str()),
                    ("state", s),
                ]
            };
            for (s, v) in [
                ("active", p.cl_active),
                ("waiting", p.cl_waiting),
                ("active_cancel_req", p.cl_active_cancel_req),
                ("waiting_cancel_req", p.cl_waiting_cancel_req),
            ] {
                clients.push((l(s), v));
            }
            for (s, v) in [
                ("active", p.sv_active),
                ("active_cancel", p.sv_active_cancel),
                ("being_canceled", p.sv_being_canceled),
                ("idle", p.sv_idle),
                ("used", p.sv_used),
                ("tested", p.sv_tested),
                ("login", p.sv_login),
            ] {
                servers.push((l(s), v));
            }
            let wait = f64::from(p.maxwait) + f64::from(p.maxwait_us) / 1e6;
            maxwait.push((
                vec![("database", p.database.as_str()), ("user", p.user.as_str())],
                wait,
            ));
        }
        gauge_family(
            &mut encoder,
            "pool_clients",
            "Client connections by pool and state (SHOW POOLS cl_*)",
            None,
            &clients,
        )?;
        gauge_family(
            &mut encoder,
            "pool_servers",
            "Server connections by pool and state (SHOW POOLS sv_*)",
            None,
            &servers,
        )?;
        gauge_family(
            &mut encoder,
            "pool_max_wait",
            "How long the oldest waiting client has waited",
            Some(&Unit::Seconds),
            &maxwait,
        )?;

        let counters = b.pool_counters();
        type Field = fn(&PoolCounters) -> u64;
        let families: [(&str, &str, Option<Unit>, Field); 13] = [
            ("transactions", "Transactions finished", None, |c| {
                c.transactions
            }),
            ("queries", "Queries finished", None, |c| c.queries),
            (
                "received",
                "Bytes received from clients",
                Some(Unit::Bytes),
                |c| c.bytes_received,
            ),
            ("sent", "Bytes sent to clients", Some(Unit::Bytes), |c| {
                c.bytes_sent
            }),
            (
                "checkouts",
                "Server connections handed to clients",
                None,
                |c| c.checkouts,
            ),
            (
                "wait_timeouts",
                "Clients that gave up waiting for a server connection",
                None,
                |c| c.wait_timeouts,
            ),
            (
                "shed",
                "Clients turned away at once with 53300 under overload (max_queue, or an expected wait over budget)",
                None,
                |c| c.shed,
            ),
            ("server_connects", "Server connections opened", None, |c| {
                c.connects
            }),
            (
                "server_connect_errors",
                "Server connection attempts that failed",
                None,
                |c| c.connect_errors,
            ),
            ("server_closes", "Server connections closed", None, |c| {
                c.closed
            }),
            (
                "pins",
                "Times a client was pinned to a server connection by session state",
                None,
                |c| c.pins,
            ),
            (
                "prepares",
                "Prepared statements parsed on a server that lacked them, or again after five executions of a cached unnamed statement with parameters",
                None,
                |c| c.prepares,
            ),
            (
                "prepare_hits",
                "Prepared statement uses served by a statement the server had",
                None,
                |c| c.prepare_hits,
            ),
        ];
        for (name, help, unit, field) in &families {
            let series: Series<'_, u64> = counters.iter().map(|c| (labels(c), field(c))).collect();
            counter_family(&mut encoder, name, help, unit.as_ref(), &series)?;
        }
        let pinned: Series<'_, u64> = counters
            .iter()
            .map(|c| (labels(c), c.pinned_clients))
            .collect();
        gauge_family(
            &mut encoder,
            "pinned_clients",
            "Clients pinned to a server connection now",
            None,
            &pinned,
        )?;
        let mut errors: Series<'_, u64> = Vec::new();
        for c in &counters {
            for (class, n) in &c.errors_by_class {
                let mut l = labels(c);
                l.push(("class", class.as_str()));
                errors.push((l, *n));
            }
        }
        counter_family(
            &mut encoder,
            "errors",
            "ErrorResponses sent to clients by SQLSTATE class",
            None,
            &errors,
        )?;

        let mode = crate::show::current_mode(b);
        let modes: Series<'_, i64> = ["normal", "high_performance", "resource_saver", "emergency"]
            .into_iter()
            .map(|m| (vec![("mode", m)], i64::from(m == mode)))
            .collect();
        gauge_family(
            &mut encoder,
            "mode",
            "Operation mode in force (1 for the current one)",
            None,
            &modes,
        )?;
        let breakers = b.breakers();
        let state: Series<'_, i64> = breakers
            .iter()
            .map(|r| {
                let v = match r.state {
                    "open" => 1,
                    "half-open" => 2,
                    _ => 0,
                };
                (vec![("upstream", r.upstream.as_str())], v)
            })
            .collect();
        gauge_family(
            &mut encoder,
            "breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open",
            None,
            &state,
        )?;
        let trips: Series<'_, u64> = breakers
            .iter()
            .map(|r| (vec![("upstream", r.upstream.as_str())], r.trips))
            .collect();
        counter_family(
            &mut encoder,
            "breaker_trips",
            "Times an upstream's circuit breaker opened",
            None,
            &trips,
        )?;

        let dedup = b.dedup();
        for (name, help, v) in [
            (
                "dedup_shared_queries",
                "Queries answered from another client's identical execution (single-flight dedup)",
                dedup.shared,
            ),
            (
                "dedup_saved_bytes",
                "Bytes of answers served by dedup without running the query again",
                dedup.bytes_saved,
            ),
            (
                "dedup_flights",
                "Queries that led a dedup flight (ran on a server, answer offered to followers)",
                dedup.flights,
            ),
            (
                "dedup_unshared_flights",
                "Dedup flights that ended with nothing to share (answer too big, failed, refused)",
                dedup.unshared,
            ),
        ] {
            counter_family(&mut encoder, name, help, None, &vec![(Vec::new(), v)])?;
        }
        crate::scaling_metrics::encode(&mut encoder, b)?;

        let latency = b.latency();
        for (name, help, pick) in [
            ("query_duration", "Query execution time", 0usize),
            ("transaction_duration", "Transaction time", 1),
            (
                "wait_duration",
                "Time clients waited for a server connection",
                2,
            ),
        ] {
            let mut m = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for p in &latency {
                let pool = [("database", p.database.as_str()), ("user", p.user.as_str())];
                if pick < 2 {
                    let h = if pick == 0 { &p.query } else { &p.transaction };
                    let (bk, sum, count) = buckets(h);
                    m.encode_family(&pool)?
                        .encode_histogram::<NoLabelSet>(sum, count, &bk, None)?;
                    continue;
                }
                // Waits by class: one series per class that has waited, and an empty
                // `normal` one before any wait, so the label set never changes.
                let by_class: Vec<(&str, &Histogram<u64>)> = if p.wait_by_class.is_empty() {
                    vec![("normal", &p.wait)]
                } else {
                    p.wait_by_class.iter().map(|(c, h)| (*c, h)).collect()
                };
                for (class, h) in by_class {
                    let l = [pool[0], pool[1], ("class", class)];
                    let (bk, sum, count) = buckets(h);
                    m.encode_family(&l)?
                        .encode_histogram::<NoLabelSet>(sum, count, &bk, None)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_each_value_once_and_end_with_inf() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        for v in [50u64, 100, 101, 900, 2_000_000, 90_000_000] {
            h.record(v).expect("in range");
        }
        let (b, sum, count) = buckets(&h);
        assert_eq!(count, 6);
        assert_eq!(b.len(), BUCKETS_US.len() + 1);
        assert_eq!(b[0], (0.0001, 2)); // 50 and 100
        assert_eq!(b[1].1, 1); // 101
        assert_eq!(b[3].1, 1); // 900
        assert_eq!(b[13].1, 1); // 2 s
        assert_eq!(b[18], (f64::MAX, 1)); // 90 s
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 6);
        assert!((sum - 92.001151).abs() < 0.2, "{sum}");
    }
}
