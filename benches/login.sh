#!/usr/bin/env bash
# Logins and one client's latency, pgweir beside PgBouncer (and PostgreSQL direct for
# the latency), on the same PostgreSQL in the same run, runs interleaved:
#   - CPU per login: pgbench -C (a new connection per transaction: connect, log in, one
#     SELECT, close) with md5 and with SCRAM (the proxies hold the stored verifier, as
#     PgBouncer's auth_file does, so PBKDF2 is the client's cost, not the proxy's);
#     the proxy's CPU (utime + stime from /proc) per transaction.
#   - One client's latency: pgbench -c 1 -S with a per-transaction log; the median and
#     what each proxy adds to the direct median.
#
# Usage: benches/login.sh [pgweir-binary ...]   (default: target/release/pgweir)
# Knobs: AUTHS="md5 scram-sha-256", REPS=3 (medians of), SECONDS_PER_RUN=8,
#        LOGIN_CLIENTS=4 (pgbench -C clients), PG_BIN as for e2e.sh.
# Output: two markdown tables on stdout; progress on stderr.
set -euo pipefail

LIB_NAME=login
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

AUTHS=${AUTHS:-"md5 scram-sha-256"}
REPS=${REPS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
LOGIN_CLIENTS=${LOGIN_CLIENTS:-4}
BINS=("$@")
((${#BINS[@]})) || BINS=("$REPO/target/release/pgweir")
for b in "${BINS[@]}"; do [[ -x $b ]] || die "no pgweir binary at $b (cargo build --release -p pgweir)"; done

PG_BIN=${PG_BIN:-}
lib_find_tools
[[ -x $PG_BIN/pgbench ]] || die "pgbench not found in $PG_BIN"
lib_install_pgbouncer
CLK_TCK=$(getconf CLK_TCK)
lib_make_workdir
MAX_CONN=100 lib_start_postgres
psql_super -d postgres -c "SET password_encryption = 'scram-sha-256'" \
    -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=bench "$PG_BIN/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1
VERIFIER=$(psql_super -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench'")

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# user and system ticks, then voluntary and involuntary context switches summed over
# the process's threads (a voluntary one is a sleep in epoll_wait)
proc_counts() {
    awk '{ print $14, $15 }' "/proc/$1/stat" 2>/dev/null | tr '\n' ' '
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^voluntary_ctxt_switches/ { v += $2 } /^nonvoluntary_ctxt_switches/ { i += $2 } END { print v + 0, i + 0 }'
}

# auth_file AUTH: the userlist each proxy checks clients against (md5: the password,
# from which both derive the md5 hash; SCRAM: the stored verifier).
auth_file() {
    if [[ $1 == md5 ]]; then
        printf '"bench" "bench"\n' >"$WORK/userlist.txt"
    else
        printf '"bench" "%s"\n' "$VERIFIER" >"$WORK/userlist.txt"
    fi
    ((IS_ROOT)) && chown postgres: "$WORK/userlist.txt"
    return 0
}

# start_target NAME AUTH: starts pgweir binary #i ("pgweir#i") or PgBouncer on a free
# port; sets PID and PORT. "direct" is PostgreSQL itself.
start_target() {
    local name=$1 auth=$2
    free_port PORT
    case $name in
    direct)
        PID=$PM_PID
        PORT=$PG_PORT
        ;;
    pgbouncer)
        lib_pgbouncer_ini "$auth" 4 200 "log_connections = 0" "log_disconnections = 0"
        lib_run_pgbouncer
        ;;
    pgweir*)
        local bin=${BINS[$((${name#pgweir#} - 1))]}
        lib_pgweir_toml "$auth" 4 200 "log_connections = false" "log_disconnections = false"
        "$bin" --config "$WORK/pgweir.toml" >"$WORK/pgweir.log" 2>&1 &
        PID=$!
        KILL_PIDS+=("$PID")
        wait_port "$PORT" "$PID" 60 || die "pgweir did not start: $(tail -n 20 "$WORK/pgweir.log")"
        ;;
    esac
    # Warm up: the pool's servers are open before anything is measured.
    PGPASSWORD=bench "$PG_BIN/pgbench" -n -S -c 4 -j 2 -t 50 -h 127.0.0.1 -p "$PORT" -U bench bench >/dev/null 2>&1 ||
        die "$name does not serve: $(tail -n 5 "$WORK/pgweir.log" "$WORK/pgbouncer.log" 2>/dev/null)"
}

stop_target() { [[ $1 == direct ]] || stop_pid "$PID" 10; }

# login_cpu: µs of proxy CPU per pgbench -C transaction (connect, SELECT, close);
# appends "user_us sys_us sleeps preemptions" per transaction to SPLIT[$1].
declare -A SPLIT=()
login_cpu() {
    local u0 s0 v0 i0 u1 s1 v1 i1 txns
    read -r u0 s0 v0 i0 < <(proc_counts "$PID")
    txns=$(PGPASSWORD=bench "$PG_BIN/pgbench" -n -C -S -c "$LOGIN_CLIENTS" -j 2 -T "$SECONDS_PER_RUN" \
        -h 127.0.0.1 -p "$PORT" -U bench bench 2>/dev/null | awk '/^number of transactions actually processed/ { print $NF }')
    read -r u1 s1 v1 i1 < <(proc_counts "$PID")
    SPLIT[$1]+="$(awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v v="$((v1 - v0))" -v i="$((i1 - i0))" \
        -v n="${txns:-0}" -v hz="$CLK_TCK" \
        'BEGIN { if (n > 0) printf "%.1f/%.1f/%.2f/%.2f", u / hz * 1e6 / n, s / hz * 1e6 / n, v / n, i / n; else print "n/a" }') "
    awk -v a="$((u0 + s0))" -v b="$((u1 + s1))" -v n="${txns:-0}" -v hz="$CLK_TCK" \
        'BEGIN { if (n > 0) printf "%.1f", (b - a) / hz * 1e6 / n; else print "n/a" }'
}

# latency_p50: median µs of one client's select-only transactions.
latency_p50() {
    rm -f "$WORK"/lat.*
    PGPASSWORD=bench "$PG_BIN/pgbench" -n -S -c 1 -T "$SECONDS_PER_RUN" -l --log-prefix="$WORK/lat" \
        -h 127.0.0.1 -p "$PORT" -U bench bench >/dev/null 2>&1
    # Log lines: client_id transaction_no time script_no time_epoch time_us (time in µs).
    cat "$WORK"/lat.* | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "n/a" }'
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
spread() { printf '%s\n' "$@" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }

NAMES=()
for i in "${!BINS[@]}"; do NAMES+=("pgweir#$((i + 1))"); done
NAMES+=(pgbouncer)
declare -A CPU=() LAT=()
for auth in $AUTHS; do
    auth_file "$auth"
    for ((r = 0; r < REPS; r++)); do
        for name in "${NAMES[@]}"; do
            log "login CPU, $auth, run $((r + 1)): $name"
            start_target "$name" "$auth"
            login_cpu "$name.$auth" >"$WORK/login_cpu"
            CPU[$name.$auth]+="$(cat "$WORK/login_cpu") "
            stop_target "$name"
        done
    done
done
auth_file md5
for ((r = 0; r < REPS; r++)); do
    for name in direct "${NAMES[@]}"; do
        log "one client's latency, run $((r + 1)): $name"
        start_target "$name" md5
        LAT[$name]+="$(latency_p50) "
        stop_target "$name"
    done
done

printf '| target | %s |\n|---|%s\n' "$(for a in $AUTHS; do printf 'CPU µs per login (%s; median, range) | ' "$a"; done | sed 's/ | $//')" \
    "$(for a in $AUTHS; do printf -- '---:|'; done)"
for name in "${NAMES[@]}"; do
    printf '| %s |' "$name"
    # shellcheck disable=SC2086
    for a in $AUTHS; do printf ' %s (%s) |' "$(median ${CPU[$name.$a]})" "$(spread ${CPU[$name.$a]})"; done
    printf '\n'
done
# Per login, each the median of its runs: where the proxy's CPU goes, and how often it
# slept (a wake-up each) or was preempted.
printf '\n| target | auth | user µs | system µs | sleeps | preemptions |\n|---|---|---:|---:|---:|---:|\n'
for a in $AUTHS; do
    for name in "${NAMES[@]}"; do
        printf '| %s | %s |' "$name" "$a"
        for f in 1 2 3 4; do
            # shellcheck disable=SC2086
            printf ' %s |' "$(median $(printf '%s\n' ${SPLIT[$name.$a]} | cut -d/ -f$f))"
        done
        printf '\n'
    done
done
# shellcheck disable=SC2086
direct=$(median ${LAT[direct]})
printf '\n| target | 1 client SELECT p50 µs (median of %s runs, range) | added over direct |\n|---|---:|---:|\n' "$REPS"
for name in direct "${NAMES[@]}"; do
    # shellcheck disable=SC2086
    p=$(median ${LAT[$name]})
    # shellcheck disable=SC2086
    printf '| %s | %s (%s) | %s |\n' "$name" "$p" "$(spread ${LAT[$name]})" "$((p - direct))"
done
for i in "${!BINS[@]}"; do printf '\npgweir#%d: %s' "$((i + 1))" "${BINS[$i]}"; done
printf '\n'
