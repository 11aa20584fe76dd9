#!/usr/bin/env bash
# Hot-path counts that do not drift with the machine's load: instructions per
# transaction (valgrind --tool=callgrind, the proxy process only) and syscalls per
# transaction (strace -c -f), for one or more pgweir binaries and PgBouncer, with the
# same pgbench run through each (-S, 4 clients, a fixed number of transactions).
# Timings from e2e.sh differ by up to 4x from day to day; these counts move only
# when the code does.
#
# Usage: benches/hotpath.sh [pgweir-binary ...]    (default: target/release/pgweir)
# Knobs: TXNS=4000 (transactions per run), MODES="simple extended" (pgbench -M values,
#        and "login": pgbench -C, so each transaction is a connect, a SCRAM login with
#        the stored verifier, one SELECT and a close), CLIENTS=4, POOL_SIZE=4 (server
#        connections per proxy pool: below CLIENTS, clients queue for servers),
#        PGBOUNCER=1 (0 skips it), CG_DIR= (keep the callgrind files there, for
#        callgrind_annotate, and the strace -c tables), CACHE=0 (1: callgrind
#        simulates this CPU's L1 caches too and two columns count, per transaction,
#        the instruction and data cache lines missed: a login's cost follows them
#        more than its instructions), PG_BIN as for e2e.sh.
# Output: one markdown table on stdout; progress on stderr. Instructions are "a run
# with the measured workload" minus "a run with the warm-up only": start-up, shutdown
# and each run's 4 client logins largely cancel out, but work done per second
# (maintenance ticks) scales with the run's length under valgrind, so compare
# binaries with each other more than with PgBouncer's event loop.
set -euo pipefail

LIB_NAME=hotpath
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

TXNS=${TXNS:-4000}
CACHE=${CACHE:-0}
MODES=${MODES:-"simple extended"}
CLIENTS=${CLIENTS:-4}
POOL_SIZE=${POOL_SIZE:-4}
PGBOUNCER=${PGBOUNCER:-1}
BINS=("$@")
((${#BINS[@]})) || BINS=("$REPO/target/release/pgweir")
for b in "${BINS[@]}"; do [[ -x $b ]] || die "no pgweir binary at $b (cargo build --release -p pgweir)"; done
command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
command -v strace >/dev/null || die "strace is missing (apt-get install strace)"

PG_BIN=${PG_BIN:-}
lib_find_tools
((PGBOUNCER)) && ! command -v pgbouncer >/dev/null && ! [[ -x /usr/sbin/pgbouncer ]] && lib_install_pgbouncer
PGBOUNCER_BIN=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
lib_make_workdir
MAX_CONN=100 lib_start_postgres
USER_NAME=bench PASSWORD=bench
psql_super -d postgres -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'" -c "CREATE DATABASE bench OWNER $USER_NAME"
PGPASSWORD=$PASSWORD "$PG_BIN/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U "$USER_NAME" bench >/dev/null 2>&1

# run_pgbench PORT MODE: the fixed workload; prints transactions processed.
run_pgbench() {
    local per_client=$((TXNS / CLIENTS)) how=(-M "$2")
    [[ $2 == login ]] && how=(-C -M simple)
    PGPASSWORD=$PASSWORD "$PG_BIN/pgbench" -n -S "${how[@]}" -c "$CLIENTS" -j 2 -t "$per_client" \
        -h 127.0.0.1 -p "$1" -U "$USER_NAME" bench 2>&1 |
        sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p'
}

# callgrind_ir NAME PORT MODE MEASURE PREFIX CMD...: runs CMD under callgrind, the
# warm-up workload through it and, if MEASURE is 1, the measured one too; prints the
# program's total instructions and (measured runs) the transactions processed.
callgrind_ir() {
    local name=$1 port=$2 mode=$3 measure=$4 prefix=$5 pid out txns=0
    shift 5
    local pre=()
    [[ -n $prefix ]] && read -r -a pre <<<"$prefix"
    out=$WORK/cg.$name.$mode.$measure
    local sim=()
    ((CACHE)) && sim=(--cache-sim=yes)
    "${pre[@]}" valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out" "$@" >"$WORK/$name.cg.log" 2>&1 &
    pid=$!
    KILL_PIDS+=("$pid")
    wait_port "$port" "$pid" 60 || die "$name did not start under valgrind: $(tail -5 "$WORK/$name.cg.log")"
    run_pgbench "$port" "$mode" >/dev/null # warm-up: logins, statements, pool
    if ((measure)); then txns=$(run_pgbench "$port" "$mode"); fi
    stop_pid "$pid" 30
    if [[ -n ${CG_DIR:-} ]]; then mkdir -p "$CG_DIR" && cp "$out" "$CG_DIR/"; fi
    # The totals line: Ir, then with CACHE=1 Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
    local totals
    totals=$(callgrind_annotate "$out" 2>/dev/null | grep 'PROGRAM TOTALS' | head -1 |
        sed 's/([^)]*)//g' | tr -d , | awk '{ print $1, ($4 == "" ? 0 : $4), ($5 == "" ? 0 : $5 + $6) }')
    printf '%s %s\n' "${totals:-0 0 0}" "$txns"
}

# measure NAME PORT MODE PREFIX CMD...: instructions of the measured run (a run with
# it minus one with the warm-up only, so start-up, logins and shutdown cancel out),
# then syscalls of the measured run (strace attached after the warm-up). PREFIX runs
# before CMD (the setpriv that runs PgBouncer as postgres; "" for none). Prints
# "Ir/txn syscalls/txn".
measure() {
    local name=$1 port=$2 mode=$3 prefix=$4 pid spid base with txns calls
    shift 4
    local pre=()
    [[ -n $prefix ]] && read -r -a pre <<<"$prefix"
    local base i1_0 d1_0 with i1_1 d1_1
    read -r base i1_0 d1_0 _ < <(callgrind_ir "$name" "$port" "$mode" 0 "$prefix" "$@")
    read -r with i1_1 d1_1 txns < <(callgrind_ir "$name" "$port" "$mode" 1 "$prefix" "$@")
    local ir=$(( ${with:-0} - ${base:-0} ))
    local misses=""
    ((CACHE)) && misses=$(awk -v i=$((i1_1 - i1_0)) -v d=$((d1_1 - d1_0)) -v t="${txns:-1}" \
        'BEGIN {printf " %.0f %.0f", i / t, d / t}')

    "${pre[@]}" "$@" >"$WORK/$name.log" 2>&1 &
    pid=$!
    KILL_PIDS+=("$pid")
    wait_port "$port" "$pid" 30 || die "$name did not start"
    run_pgbench "$port" "$mode" >/dev/null
    strace -f -c -p "$pid" -o "$WORK/$name.$mode.strace" 2>/dev/null &
    spid=$!
    sleep 1
    local txns2
    txns2=$(run_pgbench "$port" "$mode")
    kill -INT "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null || true
    stop_pid "$pid" 20
    calls=$(awk '$NF == "total" {print $4}' "$WORK/$name.$mode.strace")
    if [[ -n ${CG_DIR:-} ]]; then cp "$WORK/$name.$mode.strace" "$CG_DIR/"; fi
    printf '%s %s%s\n' "$(awk -v i="$ir" -v t="${txns:-1}" 'BEGIN {printf "%.0f", i / t}')" \
        "$(awk -v c="${calls:-0}" -v t="${txns2:-1}" 'BEGIN {printf "%.2f", c / t}')" "$misses"
}

log "pgweir binaries: ${BINS[*]}"
if ((CACHE)); then
    printf '| proxy | protocol | instructions per txn (callgrind) | syscalls per txn (strace -c) | L1i lines missed | L1d lines missed |\n|---|---|---:|---:|---:|---:|\n'
else
    printf '| proxy | protocol | instructions per txn (callgrind) | syscalls per txn (strace -c) |\n|---|---|---:|---:|\n'
fi
# row NAME MODE IR CALLS [I1 D1]: one table row.
row() {
    local name=$1 mode=$2
    shift 2
    printf '| %s | %s |' "$name" "$mode"
    printf ' %s |' "$@"
    printf '\n'
}
for mode in $MODES; do
    for bin in "${BINS[@]}"; do
        free_port PORT
        free_port HTTP
        read -r -a cols < <(measure "pgweir" "$PORT" "$mode" "" "$bin" --listen "127.0.0.1:$PORT" \
            --http-listen "127.0.0.1:$HTTP" --pool-size "$POOL_SIZE" \
            --upstream "postgres://$USER_NAME:$PASSWORD@127.0.0.1:$PG_PORT/bench")
        row "pgweir \`$bin\`" "$mode" "${cols[@]}"
    done
    if ((PGBOUNCER)); then
        free_port PORT
        cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 100
logfile = $WORK/pgbouncer.log
pidfile =
EOF
        # The stored SCRAM verifier, as pgweir keeps its own: with a plain password
        # PgBouncer would run PBKDF2 at every login, which is not the hot path.
        printf '"%s" "%s"\n' "$USER_NAME" \
            "$(psql_super -d postgres -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$USER_NAME'")" \
            >"$WORK/userlist.txt"
        ((IS_ROOT)) && chown postgres: "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
        read -r -a cols < <(measure "pgbouncer" "$PORT" "$mode" "${AS_PG[*]}" "$PGBOUNCER_BIN" "$WORK/pgbouncer.ini")
        row PgBouncer "$mode" "${cols[@]}"
    fi
done
