//! The periodic stats line, like PgBouncer's: every `stats_period`, one line per
//! database with the last period's rates and averages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_admin::{AdminBackend, StatsAverager};

use crate::admin::Admin;

/// Logs the stats line every `stats_period` (read again each time, so `SET` and
/// `RELOAD` apply) until `stop` is cancelled; a period of 0 turns it off.
pub async fn run(admin: Arc<Admin>, stop: CancellationToken) {
    let mut averager: Option<(Duration, StatsAverager)> = None;
    loop {
        let period = admin.handle().config().stats_period;
        let wait = if period.is_zero() {
            Duration::from_secs(1)
        } else {
            period
        };
        if averager.as_ref().is_none_or(|(p, _)| *p != period) {
            averager = Some((
                period,
                StatsAverager::new(period.max(Duration::from_millis(1))),
            ));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if period.is_zero() {
            continue;
        }
        let Some((_, avg)) = &averager else { continue };
        for row in avg.rows(admin.stats(), Instant::now()) {
            let a = row.averages;
            tracing::info!(
                db = %row.totals.database,
                "stats: {} xacts/s, {} queries/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
                a.avg_xact_count,
                a.avg_query_count,
                a.avg_recv,
                a.avg_sent,
                a.avg_xact_time,
                a.avg_query_time,
                a.avg_wait_time
            );
        }
    }
}
