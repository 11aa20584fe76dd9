#!/usr/bin/env bash
# Memory per idle client: N clients log in through each proxy and then only sleep
# (pgbench -f with a script that sleeps); the proxy's RSS growth divided by N.
# PgBouncer runs beside each pgweir binary in the same run, on the same PostgreSQL.
#
# Usage: benches/idle.sh [pgweir-binary ...]   (default: target/release/pgweir)
# Knobs: IDLE="1000 10000" (client counts), AUTH=md5|scram-sha-256 (client logins;
#        the proxies log in to PostgreSQL with SCRAM either way), PGBOUNCER=1,
#        HEAP=1 (run the first binary once more under heaptrack at the first count and
#        print where its live heap is), LOG=info (pgweir's RUST_LOG; info is its default),
#        PG_BIN as for e2e.sh.
# Output: a markdown table on stdout; progress on stderr.
set -euo pipefail

LIB_NAME=idle
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

IDLE=${IDLE:-"1000 10000"}
AUTH=${AUTH:-md5}
PGBOUNCER=${PGBOUNCER:-1}
HEAP=${HEAP:-0}
# pgweir's log level; its default (info) keeps a tracing span per client.
LOG=${LOG:-info}
BINS=("$@")
((${#BINS[@]})) || BINS=("$REPO/target/release/pgweir")
for b in "${BINS[@]}"; do [[ -x $b ]] || die "no pgweir binary at $b (cargo build --release -p pgweir)"; done
MAX_IDLE=0
for n in $IDLE; do ((n > MAX_IDLE)) && MAX_IDLE=$n; done
# Each idle client holds a socket at the client and one at the proxy.
ulimit -n "$((MAX_IDLE * 2 + 1000))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) > MAX_IDLE + 100)) || die "open-file limit $(ulimit -n) is too low for $MAX_IDLE clients"

PG_BIN=${PG_BIN:-}
lib_find_tools
((PGBOUNCER)) && lib_install_pgbouncer
lib_make_workdir
MAX_CONN=100 lib_start_postgres
psql_super -d postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
printf '\\sleep 600 s\n' >"$WORK/idle.sql"
printf '"bench" "bench"\n' >"$WORK/userlist.txt"
((IS_ROOT)) && chown postgres: "$WORK/userlist.txt"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
socket_count() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }

# start_pgweir BIN PREFIX...: starts it on a free port; sets PID and PORT.
start_pgweir() {
    local bin=$1
    shift
    free_port PORT
    cat >"$WORK/pgweir.toml" <<EOF
listen = "127.0.0.1:$PORT"
http_listen = ""
auth_type = "$AUTH"
auth_file = "$WORK/userlist.txt"
max_client_conn = $((MAX_IDLE + 100))
default_pool_size = 4
[databases.bench]
host = "127.0.0.1"
port = $PG_PORT
EOF
    RUST_LOG=$LOG "$@" "$bin" --config "$WORK/pgweir.toml" >"$WORK/pgweir.log" 2>&1 &
    PID=$!
    KILL_PIDS+=("$PID")
    wait_port "$PORT" "$PID" 60 || die "pgweir did not start: $(tail -n 20 "$WORK/pgweir.log")"
    # Under a wrapper script, measure the pgweir process itself.
    MEASURED=$PID
    local child
    for ((i = 0; i < 5 && $# > 0; i++)); do
        child=$(ps --ppid "$MEASURED" -o pid= | head -n 1 | tr -d ' ' || true)
        [[ -n $child ]] || break
        MEASURED=$child
    done
}

start_pgbouncer() {
    free_port PORT
    lib_pgbouncer_ini "$AUTH" 4 $((MAX_IDLE + 100)) "listen_backlog = 4096" \
        "log_connections = 0" "log_disconnections = 0"
    lib_run_pgbouncer
    MEASURED=$PID
}

# measure N: N idle clients through the proxy at $PID/$PORT; prints KiB per client.
measure() {
    local n=$1 rss0 rss1 sock0 bpid i connected
    # One warm-up login, so one-time allocations (the pool's first server) are not counted.
    PGPASSWORD=bench "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U bench -d bench -c 'SELECT 1' >/dev/null
    sleep 0.5
    rss0=$(rss_kib "$MEASURED")
    sock0=$(socket_count "$MEASURED")
    PGPASSWORD=bench timeout 900 "$PG_BIN/pgbench" -n -c "$n" -j 2 -T 600 -f "$WORK/idle.sql" \
        -h 127.0.0.1 -p "$PORT" -U bench bench >"$WORK/pgbench.log" 2>&1 &
    bpid=$!
    KILL_PIDS+=("$bpid")
    for ((i = 0; i < 6000; i++)); do
        (($(socket_count "$MEASURED") - sock0 >= n)) && break
        kill -0 "$bpid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 2
    rss1=$(rss_kib "$MEASURED")
    connected=$(($(socket_count "$MEASURED") - sock0))
    stop_pid "$bpid" 10
    ((connected >= n)) || log "!! only $connected of $n clients connected: $(tail -n 3 "$WORK/pgbench.log")"
    awk -v a="$rss0" -v b="$rss1" -v c="$connected" 'BEGIN { printf "%.2f", (c > 0 ? (b - a) / c : 0) }'
}

declare -A RESULT=()
NAMES=()
for n in $IDLE; do
    for i in "${!BINS[@]}"; do
        name="pgweir#$((i + 1))"
        ((${#BINS[@]} == 1)) && name=pgweir
        has "$name" "${NAMES[*]:-}" || NAMES+=("$name")
        log "$n idle clients through $name (${BINS[$i]})"
        start_pgweir "${BINS[$i]}"
        RESULT[$name.$n]=$(measure "$n")
        stop_pid "$PID" 10
    done
    if ((PGBOUNCER)); then
        has pgbouncer "${NAMES[*]}" || NAMES+=(pgbouncer)
        log "$n idle clients through pgbouncer"
        start_pgbouncer
        RESULT[pgbouncer.$n]=$(measure "$n")
        stop_pid "$PID" 10
    fi
done

printf '| target (auth %s) |' "$AUTH"
for n in $IDLE; do printf ' KiB per idle client, %s clients |' "$n"; done
printf '\n|---|'
for n in $IDLE; do printf -- '---:|'; done
printf '\n'
for name in "${NAMES[@]}"; do
    printf '| %s |' "$name"
    for n in $IDLE; do printf ' %s |' "${RESULT[$name.$n]:-n/a}"; done
    printf '\n'
done
for i in "${!BINS[@]}"; do printf '\npgweir#%d: %s' "$((i + 1))" "${BINS[$i]}"; done
printf '\n'

if ((HEAP)); then
    # Where the live heap is with N idle clients: DHAT's bytes at the global peak,
    # grouped by the innermost pgweir/tokio frame of each allocation's stack.
    command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
    n=${IDLE%% *}
    log "dhat: $n idle clients through ${BINS[0]}"
    start_pgweir "${BINS[0]}" valgrind --tool=dhat --dhat-out-file="$WORK/dhat.json"
    measure "$n" >/dev/null
    stop_pid "$PID" 60
    python3 - "$WORK/dhat.json" "$n" <<'PY'
import json, sys, collections
d = json.load(open(sys.argv[1])); n = int(sys.argv[2]); ftbl = d["ftbl"]
by = collections.Counter(); count = collections.Counter()
for pp in d["pps"]:
    frames = [ftbl[i] for i in pp["fs"]]
    ours = [f for f in frames if ("weir" in f or "tokio" in f or "pgweir" in f) and "alloc::" not in f.split(":")[1][:12]]
    key = (ours[0] if ours else frames[0])[:160]
    by[key] += pp.get("gb", 0); count[key] += pp.get("gbk", 0)
total = sum(by.values())
print(f"\nlive heap at the peak: {total / 1024:.0f} KiB, {total / n:.0f} B per idle client")
for key, b in by.most_common(25):
    print(f"{b / n:8.0f} B/client  {count[key] / n:5.1f} blocks/client  {key}")
PY
fi
