//! The engine in simulated time against a simulated database: closed-loop clients,
//! a server that serves `capacity` transactions at once at full speed and slows down
//! beyond that.

use std::time::Duration;

use weir_scale::budget::{cluster_cap, ClusterReading};
use weir_scale::{Engine, PoolInput, Profile, Reason, Sample, ScaleSettings};

/// 2024-01-01 00:00 UTC, a Monday.
const MONDAY: u64 = 1_704_067_200_000;
const SEC: u64 = 1_000;
const HOUR: u64 = 3_600 * SEC;

/// A database: `capacity` concurrent transactions at `service_ms` each; more run slower.
#[derive(Clone, Copy)]
struct Db {
    capacity: f64,
    service_ms: f64,
}

const ROOMY: Db = Db {
    capacity: 1000.0,
    service_ms: 10.0,
};

/// What a pool of `size` serving `demand` closed-loop clients looks like over `tick_ms`.
fn sample(db: Db, demand: u32, size: u32, tick_ms: u64) -> Sample {
    let active = demand.min(size);
    let waiting = demand - active;
    let service = db.service_ms * (f64::from(active) / db.capacity).max(1.0);
    let tps = if active == 0 {
        0.0
    } else {
        f64::from(active) / (service / 1000.0)
    };
    let wait_p99 = if waiting == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(
            service / 1000.0 * (f64::from(waiting) / f64::from(active.max(1)) + 1.0),
        )
    };
    Sample {
        active,
        idle: size - active,
        waiting,
        peak_active: active,
        wait_p99,
        transactions: (tps * tick_ms as f64 / 1000.0) as u64,
        transaction_mean: Duration::from_secs_f64(service / 1000.0),
        ..Sample::default()
    }
}

fn input(id: &str, s: &ScaleSettings, sample: Sample) -> PoolInput {
    PoolInput {
        id: id.into(),
        settings: s.clone(),
        groups: vec!["db".into()],
        sample,
    }
}

fn settings(min: u32, max: u32) -> ScaleSettings {
    ScaleSettings {
        min,
        max,
        ..ScaleSettings::default()
    }
}

/// Runs one pool for `secs` ticks of 1 s from `start`, demand from `load(t)`; returns
/// the target after each tick.
fn run(
    engine: &mut Engine,
    s: &ScaleSettings,
    db: Db,
    start: u64,
    secs: u64,
    load: impl Fn(u64) -> u32,
) -> Vec<u32> {
    let mut sizes = Vec::new();
    for i in 0..secs {
        let now = start + i * SEC;
        let size = engine.target("p").unwrap_or(s.min);
        engine.tick(now, &[input("p", s, sample(db, load(i), size, SEC))]);
        sizes.push(engine.target("p").unwrap_or(0));
    }
    sizes
}

#[test]
fn step_from_5_to_60_clients_grows_to_the_ceiling_within_5_ticks() {
    let s = settings(2, 40);
    let mut e = Engine::new();
    let sizes = run(
        &mut e,
        &s,
        ROOMY,
        MONDAY,
        40,
        |t| if t < 20 { 5 } else { 60 },
    );
    assert!(
        sizes[19] >= 9 && sizes[19] < 20,
        "5 clients at 0.55: {sizes:?}"
    );
    assert!(
        sizes[20..25].contains(&40),
        "converged within 5 s: {sizes:?}"
    );
    assert!(sizes.iter().all(|&n| n <= 40));
}

#[test]
fn a_ramp_is_followed_without_shrinking_on_the_way() {
    let s = settings(2, 100);
    let mut e = Engine::new();
    let sizes = run(&mut e, &s, ROOMY, MONDAY, 80, |t| (t as u32).min(60));
    assert!(
        sizes.windows(2).all(|w| w[1] >= w[0]),
        "monotone: {sizes:?}"
    );
    // Utilization stays under the critical mark most of the time.
    let starved = (0..80u32)
        .filter(|&t| t.min(60) > sizes[t as usize])
        .count();
    assert!(
        starved <= 5,
        "{starved} ticks with clients waiting: {sizes:?}"
    );
    assert!(sizes[79] >= 60 && sizes[79] <= 100, "{sizes:?}");
}

#[test]
fn a_spike_grows_at_once_and_shrinks_back_after_the_quiet_spell() {
    let s = settings(2, 40);
    let mut e = Engine::new();
    let sizes = run(&mut e, &s, ROOMY, MONDAY, 200, |t| {
        if (10..20).contains(&t) {
            80
        } else {
            2
        }
    });
    assert_eq!(sizes[11], 40, "{sizes:?}");
    let back = sizes.iter().skip(20).position(|&n| n < 40).map(|p| p + 20);
    let back = back.expect("shrinks back");
    assert!(
        (79..=84).contains(&back),
        "shrinks 60 s after the spike ended (+ a few ticks): tick {back}"
    );
    assert!(
        sizes[back] <= 6,
        "straight to what the quiet spell needed: {}",
        sizes[back]
    );
}

#[test]
fn a_flapping_load_makes_no_flapping_decisions() {
    let s = settings(2, 60);
    let mut e = Engine::new();
    // 30 clients for 15 s, 2 for 15 s, for 10 minutes.
    let sizes = run(&mut e, &s, ROOMY, MONDAY, 600, |t| {
        if (t / 15) % 2 == 0 {
            30
        } else {
            2
        }
    });
    let changes: Vec<_> = sizes.windows(2).filter(|w| w[0] != w[1]).collect();
    let shrinks = changes.iter().filter(|w| w[1] < w[0]).count();
    assert_eq!(shrinks, 0, "never shrinks between bursts: {sizes:?}");
    assert!(changes.len() <= 2, "{changes:?}");
}

#[test]
fn a_saturated_database_stops_the_growth() {
    let s = settings(2, 200);
    let db = Db {
        capacity: 8.0,
        service_ms: 10.0,
    };
    let mut e = Engine::new();
    let sizes = run(&mut e, &s, db, MONDAY, 120, |t| (t as u32 + 1).min(150));
    let peak = *sizes.iter().max().unwrap_or(&0);
    assert!(
        peak < 60,
        "held well below the ceiling and the demand: {sizes:?}"
    );
    assert!(
        e.history().iter().any(|d| d.reason == Reason::Saturated),
        "says so: {:?}",
        e.history().iter().collect::<Vec<_>>()
    );
}

#[test]
fn an_open_breaker_is_never_answered_with_more_connections() {
    let s = settings(2, 40);
    let mut e = Engine::new();
    for i in 0..10 {
        let mut smp = sample(ROOMY, 30, e.target("p").unwrap_or(2), SEC);
        smp.breaker_open = true;
        e.tick(MONDAY + i * SEC, &[input("p", &s, smp)]);
    }
    assert_eq!(e.target("p"), Some(2));
    let refusals = e
        .history()
        .iter()
        .filter(|d| d.reason == Reason::BreakerOpen)
        .count();
    assert_eq!(refusals, 1, "recorded once, not every tick");
}

#[test]
fn max_db_connections_is_shared_by_the_pools_of_a_database() {
    let s = settings(2, 40);
    let mut e = Engine::new();
    e.set_budget("db", Some(30));
    for i in 0..20 {
        let a = e.target("a").unwrap_or(2);
        let b = e.target("b").unwrap_or(2);
        e.tick(
            MONDAY + i * SEC,
            &[
                input("a", &s, sample(ROOMY, 40, a, SEC)),
                input("b", &s, sample(ROOMY, 10, b, SEC)),
            ],
        );
        let (a, b) = (e.target("a").unwrap_or(0), e.target("b").unwrap_or(0));
        assert!(a + b <= 30, "tick {i}: {a} + {b}");
    }
    assert!(e.history().iter().any(|d| d.reason == Reason::Budget));
}

#[test]
fn three_sidecars_share_one_server_and_never_exceed_it() {
    // max_connections 60, 3 reserved for superusers, 3 kept free, 5 held by others,
    // one monitor connection per sidecar.
    let (max_connections, su, reserve, others) = (60u32, 3u32, 3u32, 5u32);
    let s = settings(2, 40);
    let mut engines: Vec<Engine> = (0..3).map(|_| Engine::new()).collect();
    for i in 0..120u64 {
        let sizes: Vec<u32> = engines.iter().map(|e| e.target("p").unwrap_or(2)).collect();
        let reading = ClusterReading {
            max_connections,
            superuser_reserved: su,
            connections: sizes.iter().sum::<u32>() + others + 3,
            peers: 3,
        };
        // All three read the same snapshot and decide in the same tick: the worst case.
        for (k, e) in engines.iter_mut().enumerate() {
            let ours = sizes[k] + 1;
            let cap = cluster_cap(&reading, ours, reserve).saturating_sub(1);
            e.set_budget("db", Some(cap));
            let demand = if k == 0 { 40 } else { 25 + (i % 7) as u32 };
            e.tick(
                MONDAY + i * SEC,
                &[input("p", &s, sample(ROOMY, demand, sizes[k], SEC))],
            );
        }
        let total: u32 = engines
            .iter()
            .map(|e| e.target("p").unwrap_or(0))
            .sum::<u32>()
            + others
            + 3;
        assert!(
            total <= max_connections - su - reserve,
            "tick {i}: {total} connections"
        );
    }
    let total: u32 = engines.iter().map(|e| e.target("p").unwrap_or(0)).sum();
    assert!(total >= 40, "the free connections are used: {total}");
}

/// Weekdays 14:00-15:00 UTC: 30 clients; otherwise 3.
fn weekly(t: u64) -> u32 {
    let hour = (t - MONDAY) / HOUR;
    let (day, h) = ((hour / 24) % 7, hour % 24);
    if day < 5 && h == 14 {
        30
    } else {
        3
    }
}

/// Runs from `from` to `to` (ms) in ticks of 10 s; returns (time, target) pairs.
fn run_week(e: &mut Engine, s: &ScaleSettings, from: u64, to: u64) -> Vec<(u64, u32)> {
    let step = 10 * SEC;
    let mut out = Vec::new();
    let mut now = from;
    while now < to {
        let size = e.target("p").unwrap_or(s.min);
        e.tick(
            now,
            &[input("p", s, sample(ROOMY, weekly(now), size, step))],
        );
        out.push((now, e.target("p").unwrap_or(0)));
        now += step;
    }
    out
}

fn assert_ready_before_peaks(trace: &[(u64, u32)], s: &ScaleSettings, week: u64) {
    let lead = s.prescale_lead.as_millis() as u64;
    let needed = s.clamp(s.size_for(30.0));
    for day in 0..5 {
        let peak = MONDAY + week * 7 * 24 * HOUR + day * 24 * HOUR + 14 * HOUR;
        let at = trace
            .iter()
            .find(|(t, _)| *t >= peak - lead)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        assert!(
            at >= needed,
            "day {day}: {at} connections {lead} ms before the peak, {needed} needed"
        );
        let hour_before = trace
            .iter()
            .find(|(t, _)| *t >= peak - HOUR)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        assert!(hour_before < needed, "not grown long before: {hour_before}");
    }
}

#[test]
fn a_diurnal_week_is_learned_and_the_second_week_is_prescaled() {
    let s = settings(2, 40);
    let mut e = Engine::new();
    let week = 7 * 24 * HOUR;
    run_week(&mut e, &s, MONDAY, MONDAY + week);
    let trace = run_week(&mut e, &s, MONDAY + week, MONDAY + 2 * week);
    assert_ready_before_peaks(&trace, &s, 1);
    let predicted = e
        .history()
        .iter()
        .filter(|d| d.reason == Reason::Predicted)
        .count();
    assert!(predicted >= 5, "{predicted} predicted grows");
}

#[test]
fn a_restart_keeps_the_learned_profile() {
    let s = settings(2, 40);
    let mut e = Engine::new();
    let week = 7 * 24 * HOUR;
    run_week(&mut e, &s, MONDAY, MONDAY + week);
    let saved = e.profile("p").expect("learned").to_json();
    // A new process: a fresh engine, the profile read back from state_dir.
    let mut e = Engine::new();
    e.restore_profile("p", Profile::from_json(&saved).expect("valid"), s.clone());
    let trace = run_week(&mut e, &s, MONDAY + week, MONDAY + 2 * week);
    assert_ready_before_peaks(&trace, &s, 1);
}

#[test]
fn an_emergency_scale_up_goes_to_the_ceiling_the_budget_allows_for_a_while() {
    let s = settings(2, 40);
    let mut e = Engine::new();
    e.set_budget("db", Some(25));
    e.force_until(Some(MONDAY + 10 * SEC));
    let sizes = run(&mut e, &s, ROOMY, MONDAY, 100, |_| 1);
    assert_eq!(sizes[0], 25, "{sizes:?}");
    assert_eq!(sizes[9], 25);
    assert!(
        sizes[99] <= 4,
        "then back down after the quiet spell: {sizes:?}"
    );
}
