#!/usr/bin/env bash
# Proxy CPU per transaction at a fixed rate: pgbench -S -R RATE through one or more
# pgweir binaries and PgBouncer, all running at once on the same PostgreSQL, runs
# interleaved (the order rotates each repetition). At a rate the box can sustain, the
# CPU a transaction costs depends on the proxy, not on how three saturated processes
# share two CPUs, so repetitions agree within a few percent where e2e.sh's saturated
# runs move by 25 % on a bad day: this is the A/B to use for a change of a few percent.
# CPU is the kernel's precise runtime of every thread (/proc/PID/task/*/schedstat),
# not clock ticks.
#
# Usage: benches/rate.sh [pgweir-binary ...]   (default: target/release/pgweir)
# Knobs: RATE=8000 (transactions per second), CLIENTS=16, MODE=simple (pgbench -M),
#        SECS=5 (per run), REPS=5, POOL_SIZE=20, PGBOUNCER=1 (0 leaves it out),
#        PG_BIN as for e2e.sh.
# Output: a markdown table on stdout (medians, ranges, and the median of each run's
# ratio to PgBouncer's run in the same repetition); each run on stderr.
set -euo pipefail

LIB_NAME=rate
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RATE=${RATE:-8000}
CLIENTS=${CLIENTS:-16}
MODE=${MODE:-simple}
SECS=${SECS:-5}
REPS=${REPS:-5}
POOL_SIZE=${POOL_SIZE:-20}
PGBOUNCER=${PGBOUNCER:-1}
lib_pgweir_bins "$@"

PG_BIN=${PG_BIN:-}
lib_find_tools
((PGBOUNCER)) && lib_install_pgbouncer
lib_make_workdir
MAX_CONN=$((2 * POOL_SIZE * (${#BINS[@]} + 1) + 20)) lib_start_postgres
psql_super -d postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=bench "$PG_BIN/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1
printf '"bench" "bench"\n' >"$WORK/userlist.txt"
((IS_ROOT)) && chown postgres: "$WORK/userlist.txt"

declare -A TPORT=() TPID=()
NAMES=()
for i in "${!BINS[@]}"; do
    name="pgweir#$((i + 1))"
    free_port PORT
    RUST_LOG=warn "${BINS[$i]}" --listen "127.0.0.1:$PORT" --http-listen '' \
        --upstream "postgres://bench:bench@127.0.0.1:$PG_PORT/bench" \
        --pool-size "$POOL_SIZE" --pool-mode transaction >"$WORK/pgweir$i.log" 2>&1 &
    TPID[$name]=$!
    KILL_PIDS+=("$!")
    wait_port "$PORT" "${TPID[$name]}" 30 || die "$name did not start: $(tail -n 20 "$WORK/pgweir$i.log")"
    TPORT[$name]=$PORT
    NAMES+=("$name")
done
if ((PGBOUNCER)); then
    free_port PORT
    lib_pgbouncer_ini md5 "$POOL_SIZE" $((CLIENTS + 50))
    lib_run_pgbouncer
    TPORT[pgbouncer]=$PORT
    TPID[pgbouncer]=$PID
    NAMES+=(pgbouncer)
fi

# cpu_ns PID: nanoseconds the process's threads have run.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
# run TARGET SECONDS [RATE]: pgbench through TARGET; prints "µs/txn tps".
run() {
    local c0 c1 out xacts tps
    c0=$(cpu_ns "${TPID[$1]}")
    out=$(PGPASSWORD=bench timeout $(($2 + 60)) "$PG_BIN/pgbench" -n -S -M "$MODE" -c "$CLIENTS" -j 2 \
        ${3:+-R "$3"} -T "$2" -h 127.0.0.1 -p "${TPORT[$1]}" -U bench bench 2>&1) ||
        die "pgbench through $1 failed: $(tail -n 3 <<<"$out")"
    c1=$(cpu_ns "${TPID[$1]}")
    xacts=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] }' <<<"$out")
    tps=$(awk '/^tps = / { print $3; exit }' <<<"$out")
    [[ -n $xacts && $xacts != 0 ]] || die "pgbench through $1 reported no transactions"
    awk -v c=$((c1 - c0)) -v n="$xacts" -v t="$tps" 'BEGIN { printf "%.2f %.0f\n", c / n / 1000, t }'
}

for name in "${NAMES[@]}"; do run "$name" 2 >/dev/null; done # warm: pools full, statements known
declare -A CPU=() TPS=() RUNCPU=()
n=${#NAMES[@]}
for ((r = 1; r <= REPS; r++)); do
    for ((k = 0; k < n; k++)); do
        name=${NAMES[$(((k + r) % n))]}
        read -r cpu tps < <(run "$name" "$SECS" "$RATE")
        log "rep $r/$REPS $name: $cpu µs/txn, $tps tps"
        CPU[$name]+="$cpu "
        TPS[$name]+="$tps "
        RUNCPU[$r,$name]=$cpu
    done
done

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
range() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }

printf '| target | CPU µs/txn (median, range) | TPS | vs PgBouncer, same repetition (median, range) |\n|---|---:|---:|---:|\n'
for name in "${NAMES[@]}"; do
    ratios=""
    if ((PGBOUNCER)) && [[ $name != pgbouncer ]]; then
        for ((r = 1; r <= REPS; r++)); do
            ratios+="$(awk -v a="${RUNCPU[$r,$name]}" -v b="${RUNCPU[$r,pgbouncer]}" 'BEGIN { printf "%.3f", a / b }') "
        done
    fi
    printf '| %s | %s (%s) | %.0f | %s |\n' "$name" "$(median "${CPU[$name]}")" "$(range "${CPU[$name]}")" \
        "$(median "${TPS[$name]}")" "${ratios:+$(median "$ratios") ($(range "$ratios"))}"
done
printf '\npgbench -S -M %s -c %s -R %s, %s s runs, %s repetitions, pool %s.\n' "$MODE" "$CLIENTS" "$RATE" "$SECS" "$REPS" "$POOL_SIZE"
for i in "${!BINS[@]}"; do printf 'pgweir#%s: %s\n' $((i + 1)) "${BINS[$i]}"; done
