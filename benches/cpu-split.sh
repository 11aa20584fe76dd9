#!/usr/bin/env bash
# Where a proxy's CPU per transaction goes, pgweir beside PgBouncer under the same
# pgbench load (-S, CLIENTS clients, pool of 20, runs interleaved): user vs system
# time from /proc/PID/stat, and, where `perf` can sample the kernel, the share of
# samples in the kernel and in its wake-up and context-switch paths. It answers
# "can fewer instructions make this proxy cheaper?": when the kernel's share is
# ~90 % for both proxies, cutting user-space work moves the total by little, and
# fewer or cheaper syscalls and wake-ups are what would.
#
# Usage: benches/cpu-split.sh [pgweir-binary]   (default: target/release/pgweir)
# Knobs: CLIENTS=16, MODE=simple (pgbench -M), SECONDS_PER_RUN=8, REPS=3, PERF=1
#        (0 skips the perf profile), PG_BIN as for e2e.sh, FLOOR=0 (1 adds
#        benches/floor, built on first use: byte-for-byte relays with no user-space
#        work to speak of, one on epoll and one on io_uring, a server connection per
#        client; what they spend per transaction is the least a relay with their
#        system calls can spend, the yardstick for "how far under PgBouncer can a
#        proxy go"; FLOOR_DESIGNS="epoll uring" picks among epoll, uring, uring-coop
#        and uring-epoll, see benches/floor/src/main.rs).
# Output: a markdown table on stdout (medians of REPS runs, with their range);
# progress on stderr. perf data files stay in the temp dir, which is removed.
set -euo pipefail

LIB_NAME=cpu-split
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CLIENTS=${CLIENTS:-16}
MODE=${MODE:-simple}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
REPS=${REPS:-3}
PERF=${PERF:-1}
BIN=${1:-$REPO/target/release/pgweir}
[[ -x $BIN ]] || die "no pgweir binary at $BIN (cargo build --release -p pgweir)"
((SECONDS_PER_RUN >= 4)) || die "SECONDS_PER_RUN must be at least 4 (perf samples the middle)"
if ((PERF)) && ! perf record -q -o /dev/null -- true >/dev/null 2>&1; then
    log "perf cannot record here: user/system split only"
    PERF=0
fi

PG_BIN=${PG_BIN:-}
lib_find_tools
[[ -x $PG_BIN/pgbench ]] || die "pgbench not found in $PG_BIN"
lib_install_pgbouncer
CLK_TCK=$(getconf CLK_TCK)
lib_make_workdir
MAX_CONN=100 lib_start_postgres
psql_super -d postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=bench "$PG_BIN/pgbench" -i -q -s 10 -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1
printf '"bench" "bench"\n' >"$WORK/userlist.txt"
((IS_ROOT)) && chown postgres: "$WORK/userlist.txt"

# Both proxies: md5 from the same userlist, transaction pooling, 20 server connections.
free_port PORT
lib_pgweir_toml md5 20 500
"$BIN" --config "$WORK/pgweir.toml" >"$WORK/pgweir.log" 2>&1 &
declare -A PIDOF=([pgweir]=$!) PORTOF=([pgweir]=$PORT)
KILL_PIDS+=("${PIDOF[pgweir]}")
wait_port "$PORT" "${PIDOF[pgweir]}" 60 || die "pgweir did not start: $(tail -n 5 "$WORK/pgweir.log")"
free_port PORT
lib_pgbouncer_ini md5 20 500
lib_run_pgbouncer
PIDOF[pgbouncer]=$PID
PORTOF[pgbouncer]=$PORT
NAMES=(pgweir pgbouncer)
if ((${FLOOR:-0})); then
    log "building benches/floor"
    CARGO_TARGET_DIR=${FLOOR_TARGET_DIR:-$REPO/benches/floor/target} \
        cargo build -q --release --manifest-path "$REPO/benches/floor/Cargo.toml" ||
        die "cannot build benches/floor"
    FLOOR_BIN=${FLOOR_TARGET_DIR:-$REPO/benches/floor/target}/release/floor
    for design in ${FLOOR_DESIGNS:-epoll uring}; do
        free_port PORT
        "$FLOOR_BIN" "$design" "127.0.0.1:$PORT" "127.0.0.1:$PG_PORT" >"$WORK/floor-$design.log" 2>&1 &
        PIDOF[floor-$design]=$!
        PORTOF[floor-$design]=$PORT
        KILL_PIDS+=("$!")
        wait_port "$PORT" "$!" 30 || die "floor $design did not start: $(tail -n 5 "$WORK/floor-$design.log")"
        NAMES+=("floor-$design")
    done
fi

pgbench_run() { # PORT SECONDS: prints transactions processed
    PGPASSWORD=bench "$PG_BIN/pgbench" -n -S -M "$MODE" -c "$CLIENTS" -j 2 -T "$2" \
        -h 127.0.0.1 -p "$1" -U bench bench 2>/dev/null |
        sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p'
}
# user and system ticks of a process
ticks() { awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"; }
# voluntary and involuntary context switches of a process, summed over its threads:
# a voluntary one is a sleep (epoll_wait with nothing ready), which costs the
# sleeper a switch out and in, and its waker a wake-up
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { i += $2 } END { print v + 0, i + 0 }'
}
# TCP segments sent on the box (all of loopback: clients, proxy and server alike),
# from the kernel's counters: pure ACKs a proxy's reads provoke show up here
out_segs() { awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "OutSegs") c = i; h = 1 } else print $c }' /proc/net/snmp; }

# one_run NAME REP: appends "user_us sys_us kernel% wake% sleeps switches segments
# tps" to RES[NAME]: per transaction but the last (sleeps and switches: voluntary and
# involuntary context switches).
# The CPU times come from a run without perf (sampling with call graphs costs the
# sampled process time of its own, more for deeper stacks); the shares from a second
# run under perf.
declare -A RES=()
one_run() {
    local name=$1 rep=$2 pid=${PIDOF[$1]} port=${PORTOF[$1]} u0 s0 u1 s1 v0 i0 v1 i1 g0 g1 n ppid split="- -"
    pgbench_run "$port" 2 >/dev/null # warm: pool open, statements cached
    read -r u0 s0 < <(ticks "$pid")
    read -r v0 i0 < <(switches "$pid")
    g0=$(out_segs)
    n=$(pgbench_run "$port" "$SECONDS_PER_RUN")
    g1=$(out_segs)
    read -r u1 s1 < <(ticks "$pid")
    read -r v1 i1 < <(switches "$pid")
    if ((PERF)); then
        # The middle of the run: no start-up or wind-down in the profile.
        (sleep 1 && exec perf record -q -g -o "$WORK/$name.$rep.perf" -p "$pid" -- sleep $((SECONDS_PER_RUN - 2))) \
            >/dev/null 2>&1 &
        ppid=$!
        pgbench_run "$port" "$SECONDS_PER_RUN" >/dev/null
        wait "$ppid" || true
        # Kernel samples, and those where the kernel re-enables interrupts after a
        # wake-up or finishes a context switch (where a VM's wake-up IPIs and switches
        # show up).
        split=$(perf report -i "$WORK/$name.$rep.perf" --no-children --sort sym --stdio 2>/dev/null |
            awk '/^ +[0-9.]+%/ { p = $1; sub("%", "", p); all += p; if ($2 == "[k]") k += p
                     if ($3 ~ /^(_raw_spin_unlock_irqrestore|finish_task_switch)/) w += p }
                 END { if (all > 0) printf "%.0f %.0f", k / all * 100, w / all * 100; else print "- -" }')
    fi
    local cpu sw
    cpu=$(awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v n="${n:-0}" -v hz="$CLK_TCK" \
        'BEGIN { if (n > 0) printf "%.2f %.2f", u / hz * 1e6 / n, s / hz * 1e6 / n; else print "- -" }')
    sw=$(awk -v v="$((v1 - v0))" -v i="$((i1 - i0))" -v g="$((g1 - g0))" -v n="${n:-0}" \
        -v secs="$SECONDS_PER_RUN" \
        'BEGIN { if (n > 0) printf "%.3f %.3f %.2f %.0f", v / n, i / n, g / n, n / secs; else print "- - - -" }')
    RES[$name]+="$cpu $split $sw;"
}

for ((r = 0; r < REPS; r++)); do
    for name in "${NAMES[@]}"; do
        log "run $((r + 1)) of $REPS: $name"
        one_run "$name" "$r"
    done
done

# column I of RES[NAME] as "median (lo-hi)"
stat() {
    tr ';' '\n' <<<"${RES[$1]}" | awk -v i="$2" 'NF { print $i }' | sort -n |
        awk '{ v[NR] = $1 } END { if (v[1] == "-") print "-"; else printf "%s (%s-%s)", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
printf '| proxy | user µs/txn | system µs/txn | kernel share of samples %% | wake-up and switch share %% | sleeps/txn | preemptions/txn | TCP segments/txn | TPS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for name in "${NAMES[@]}"; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$(stat "$name" 1)" "$(stat "$name" 2)" \
        "$(stat "$name" 3)" "$(stat "$name" 4)" "$(stat "$name" 5)" "$(stat "$name" 6)" "$(stat "$name" 7)" "$(stat "$name" 8)"
done
printf '\npgbench -S -M %s -c %s, %s s runs, medians of %s; pgweir: %s\n' "$MODE" "$CLIENTS" "$SECONDS_PER_RUN" "$REPS" "$BIN"
