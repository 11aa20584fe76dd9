#!/usr/bin/env bash
# Takes the release build's profile again (pgo/pgweir.profdata, which pgo/rustc-wrapper
# feeds to every optimized build): builds an instrumented pgweir, drives it with real
# clients against a throwaway PostgreSQL through the paths a deployment runs (pgbench's
# simple, extended and prepared protocols at 16 and 64 clients over TCP and the Unix
# socket, transactions that write, a 20 MB result, a 10 MB COPY, session pooling,
# dedup, md5 and SCRAM logins with connection logging, TLS clients) and merges what it
# counted. Code no run reaches is laid out as cold, so a path that matters belongs in
# this workload (server-side TLS and the admin console are not in it yet).
#
# Run it after changing the relay, the pool or the login path, then rebuild from clean
# (cargo clean --release): cargo cannot see that the profile changed.
#
# Usage: pgo/train.sh
# Knobs: SECS=4 (seconds per pgbench run), PG_BIN as for benches/e2e.sh.
# Needs: PostgreSQL 15 with pgbench, openssl, rustup's llvm-tools (added when missing).
set -euo pipefail

LIB_NAME=pgo
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../benches/lib.sh"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${SECS:-4}

PG_BIN=${PG_BIN:-}
lib_find_tools
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"

# llvm-profdata must come from the LLVM that rustc uses: rustup's llvm-tools.
RUST_HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$RUST_HOST/bin/llvm-profdata"
if [[ ! -x $PROFDATA ]]; then
    log "adding rustup's llvm-tools (llvm-profdata)"
    rustup component add llvm-tools >&2
fi
[[ -x $PROFDATA ]] || die "no llvm-profdata at $PROFDATA"

lib_make_workdir
TARGET_DIR=$REPO/target/pgo-generate
# A fixed path: it is part of the build's flags, so a new one would rebuild everything.
RAW=$TARGET_DIR/profraw
log "building an instrumented pgweir into $TARGET_DIR"
(cd "$REPO" && RUSTFLAGS="-Cprofile-generate=$RAW" cargo build --release --locked -p pgweir \
    --target-dir "$TARGET_DIR" >&2)
BIN=$TARGET_DIR/release/pgweir
rm -rf "$RAW" # the build scripts' own counts

MAX_CONN=200 lib_start_postgres
psql_super -d postgres -c "SET password_encryption = 'scram-sha-256'" \
    -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=bench "$PG_BIN/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1
VERIFIER=$(psql_super -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/server.key" -out "$WORK/server.crt" >/dev/null 2>&1
seq 1 100000 | awk '{ printf "%s%0100d\n", $1, 0 }' >"$WORK/copy.txt"

# pb ARGS...: one bounded pgbench run through the proxy on $PORT (over TCP, or over
# the Unix socket in $WORK with HOST=$WORK).
pb() {
    PGPASSWORD=bench timeout $((SECS + 60)) "$PG_BIN/pgbench" -n "$@" -T "$SECS" \
        -h "${HOST:-127.0.0.1}" -p "$PORT" -U bench bench >/dev/null 2>&1 || die "pgbench $* failed"
}

# start_pgweir AUTH [LINE ...]: the instrumented binary on a free port, pools of 20,
# each LINE a top-level setting (lib_pgweir_toml); sets PID and PORT.
start_pgweir() {
    if [[ $1 == md5 ]]; then
        printf '"bench" "bench"\n' >"$WORK/userlist.txt"
    else
        printf '"bench" "%s"\n' "$VERIFIER" >"$WORK/userlist.txt"
    fi
    free_port PORT
    lib_pgweir_toml "$1" 20 300 "${@:2}"
    LLVM_PROFILE_FILE="$RAW/pgweir-%p.profraw" "$BIN" --config "$WORK/pgweir.toml" >>"$WORK/pgweir.log" 2>&1 &
    PID=$!
    KILL_PIDS+=("$PID")
    wait_port "$PORT" "$PID" 60 || die "pgweir did not start: $(tail -n 20 "$WORK/pgweir.log")"
}
# stop_pgweir: a clean shutdown, which is when the counts are written.
stop_pgweir() { stop_pid "$PID" 30; }

log "training: the relay (md5 clients, default settings, TCP and Unix socket)"
start_pgweir md5 "unix_socket_dir = \"$WORK\""
for mode in simple extended prepared; do
    for clients in 16 64; do pb -S -M "$mode" -c "$clients" -j 2; done
done
pb -M simple -c 8 -j 2
pb -M extended -c 8 -j 2
HOST=$WORK pb -S -M simple -c 16 -j 2
HOST=$WORK pb -S -M extended -c 16 -j 2
bench_psql "$PORT" -c "SELECT repeat('x', 1000) FROM generate_series(1, 20000)" >/dev/null
bench_psql "$PORT" -c "CREATE TABLE IF NOT EXISTS pgo_copy (x text)" \
    -c "\\copy pgo_copy from '$WORK/copy.txt'" -c "DROP TABLE pgo_copy" >/dev/null
log "training: md5 logins"
pb -C -S -c 4 -j 2
stop_pgweir

log "training: session pooling, and dedup in transaction pooling"
start_pgweir md5 'pool_mode = "session"'
pb -S -M extended -c 16 -j 2
pb -M simple -c 8 -j 2
stop_pgweir
start_pgweir md5 'dedup = true'
pb -S -M simple -c 16 -j 2
stop_pgweir

log "training: SCRAM logins and TLS clients"
start_pgweir scram-sha-256 'client_tls_sslmode = "allow"' \
    "client_tls_cert_file = \"$WORK/server.crt\"" "client_tls_key_file = \"$WORK/server.key\""
pb -C -S -c 4 -j 2
PGSSLMODE=require pb -S -M extended -c 16 -j 2
stop_pgweir

shopt -s nullglob
raws=("$RAW"/*.profraw)
((${#raws[@]})) || die "the instrumented pgweir wrote no profile"
"$PROFDATA" merge -o "$REPO/pgo/pgweir.profdata" "${raws[@]}"
# The wrapper gives the profile only to rustc whose LLVM can read it.
rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p' >"$REPO/pgo/llvm-major"
log "wrote $REPO/pgo/pgweir.profdata ($(stat -c %s "$REPO/pgo/pgweir.profdata") bytes) from ${#raws[@]} runs"
log "rebuild from clean to use it: cargo clean --release && cargo build --release -p pgweir"
