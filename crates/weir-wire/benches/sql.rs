//! Cost of the SQL lexer on the relay's hot path: fingerprinting a pgbench-sized
//! query (target: well under 1 µs), first keywords and call detection.

use divan::black_box;

const SELECT: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = 4123456;";
const UPDATE: &[u8] = b"UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 88211;";

fn main() {
    divan::main();
}

#[divan::bench]
fn fingerprint_select() -> u64 {
    weir_wire::sql::fingerprint(black_box(SELECT)).hash
}

#[divan::bench]
fn fingerprint_update() -> u64 {
    weir_wire::sql::fingerprint(black_box(UPDATE)).hash
}

#[divan::bench]
fn normalize_select() -> String {
    weir_wire::sql::normalize(black_box(SELECT))
}

#[divan::bench]
fn statement_keywords_select() -> usize {
    weir_wire::sql::statement_keywords(black_box(SELECT)).count()
}

#[divan::bench]
fn contains_call_select() -> bool {
    weir_wire::sql::contains_call(black_box(SELECT), "pg_advisory_lock")
}
