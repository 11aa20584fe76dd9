//! Connection budgets: how the wanted sizes of pools that share a limit are cut to fit
//! it, and how one pgweir instance finds its share of a server's free connections.
//!
//! Two budgets apply: `max_db_connections` over the pools of one database, and the
//! server's own: `max_connections - superuser_reserved_connections`, minus every
//! connection open on it, minus `reserve_connections` kept free. Several pgweir
//! sidecars in front of one server each take at most an equal share of what is free
//! ([`cluster_cap`]), so their grows together never exceed it, with no coordination
//! service: the database itself is the shared state.

use serde::Serialize;

/// What a cheap query on the server reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterReading {
    /// `max_connections`.
    pub max_connections: u32,
    /// `superuser_reserved_connections`.
    pub superuser_reserved: u32,
    /// Client backends open now (`pg_stat_activity`), everyone's.
    pub connections: u32,
    /// pgweir instances watching this server (each holds one monitor connection);
    /// at least 1.
    pub peers: u32,
}

/// The most connections this instance may hold to the server: what it holds now plus
/// its equal share of the connections free beyond `reserve` (less than it holds when
/// the server is already past that).
pub fn cluster_cap(reading: &ClusterReading, ours: u32, reserve: u32) -> u32 {
    let usable = i64::from(reading.max_connections)
        - i64::from(reading.superuser_reserved)
        - i64::from(reserve);
    let free = usable - i64::from(reading.connections);
    let peers = i64::from(reading.peers.max(1));
    // Rounded down for growth and up for cuts, so the sum of shares never overshoots.
    let share = if free >= 0 {
        free / peers
    } else {
        -((-free + peers - 1) / peers)
    };
    u32::try_from((i64::from(ours) + share).max(0)).unwrap_or(u32::MAX)
}

/// Cut the `wanted` sizes of pools sharing `budget` so they fit: each first keeps what
/// it has (or wants, if less), then what is left goes one connection at a time to the
/// pool furthest from what it wants. When even the current sizes exceed the budget,
/// the largest pools give back first. `current` and `wanted` are parallel.
pub fn allocate(current: &[u32], wanted: &[u32], budget: u32) -> Vec<u32> {
    let total: u64 = wanted.iter().map(|&w| u64::from(w)).sum();
    if total <= u64::from(budget) {
        return wanted.to_vec();
    }
    let mut alloc: Vec<u32> = current
        .iter()
        .zip(wanted)
        .map(|(&c, &w)| c.min(w))
        .collect();
    let mut sum: u64 = alloc.iter().map(|&a| u64::from(a)).sum();
    while sum > u64::from(budget) {
        let Some((i, _)) = alloc.iter().enumerate().max_by_key(|(_, &a)| a) else {
            break;
        };
        alloc[i] -= 1;
        sum -= 1;
    }
    while sum < u64::from(budget) {
        let next = alloc
            .iter()
            .zip(wanted)
            .enumerate()
            .filter(|(_, (&a, &w))| a < w)
            .max_by_key(|(_, (&a, &w))| w - a)
            .map(|(i, _)| i);
        let Some(i) = next else {
            break;
        };
        alloc[i] += 1;
        sum += 1;
    }
    alloc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_within_budget_pass_untouched() {
        assert_eq!(allocate(&[2, 2], &[10, 5], 20), [10, 5]);
    }

    #[test]
    fn growth_is_shared_by_need() {
        assert_eq!(
            allocate(&[2, 2], &[20, 10], 20),
            [15, 5],
            "equal shortfalls: 5 each"
        );
        assert_eq!(allocate(&[10, 10], &[10, 10], 12), [6, 6]);
    }

    #[test]
    fn the_server_share_splits_what_is_free() {
        let r = ClusterReading {
            max_connections: 30,
            superuser_reserved: 3,
            connections: 14,
            peers: 2,
        };
        // 30 - 3 - 3 reserve = 24 usable, 14 used: 10 free, 5 each.
        assert_eq!(cluster_cap(&r, 2, 3), 7);
        let full = ClusterReading {
            connections: 27,
            ..r
        };
        assert_eq!(cluster_cap(&full, 4, 3), 2, "past the reserve: give back");
    }
}
