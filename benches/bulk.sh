#!/usr/bin/env bash
# Bulk transfers through pgweir: receive calls the proxy makes (strace -c) for one
# 50 MB result (SELECT) and one 50 MB COPY FROM STDIN, per pgweir binary, on the same
# PostgreSQL. Few, full-size reads are what a streaming relay should do; a read
# buffer that stays small multiplies the calls (session 12 caught a 5x regression so).
#
# Usage: benches/bulk.sh [pgweir-binary ...]   (default: target/release/pgweir)
# Knobs: ROWS=50000 (SELECT rows of 1 000 bytes), COPY_ROWS=500000 (COPY lines of
#        ~106 bytes), PG_BIN as for e2e.sh.
# Output: a markdown table on stdout; progress on stderr.
set -euo pipefail

LIB_NAME=bulk
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROWS=${ROWS:-50000}
COPY_ROWS=${COPY_ROWS:-500000}
lib_pgweir_bins "$@"
command -v strace >/dev/null || die "strace is missing (apt-get install strace)"

PG_BIN=${PG_BIN:-}
lib_find_tools
lib_make_workdir
MAX_CONN=50 lib_start_postgres
psql_super -d postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
bench_psql "$PG_PORT" -c "CREATE TABLE t (x text)"
seq 1 "$COPY_ROWS" | awk '{ printf "%s%0100d\n", $1, 0 }' >"$WORK/copy.txt"
((IS_ROOT)) && chown postgres: "$WORK/copy.txt"

printf '| pgweir | recv calls, %s-row SELECT | recv calls, %s-line COPY |\n|---|---:|---:|\n' "$ROWS" "$COPY_ROWS"
for bin in "${BINS[@]}"; do
    free_port PORT
    free_port HTTP
    "$bin" --listen "127.0.0.1:$PORT" --http-listen "127.0.0.1:$HTTP" --pool-size 4 \
        --upstream "postgres://bench:bench@127.0.0.1:$PG_PORT/bench" >"$WORK/pgweir.log" 2>&1 &
    pid=$!
    KILL_PIDS+=("$pid")
    wait_port "$PORT" "$pid" 30 || die "pgweir did not start: $(tail -n 5 "$WORK/pgweir.log")"
    bench_psql "$PORT" -c "SELECT 1" >/dev/null
    calls=()
    for job in select copy; do
        strace -f -c -e trace=recvfrom,read -p "$pid" -o "$WORK/strace.txt" 2>/dev/null &
        spid=$!
        sleep 1
        log "$job through $bin"
        if [[ $job == select ]]; then
            bench_psql "$PORT" -c "SELECT repeat('x', 1000) FROM generate_series(1, $ROWS)" >/dev/null
        else
            bench_psql "$PORT" -c "\\copy t from '$WORK/copy.txt'" >/dev/null
        fi
        kill -INT "$spid"
        wait "$spid" 2>/dev/null || true
        calls+=("$(awk '$NF == "recvfrom" || $NF == "read" { n += $4 } END { print n + 0 }' "$WORK/strace.txt")")
    done
    printf '| `%s` | %s | %s |\n' "$bin" "${calls[0]}" "${calls[1]}"
    stop_pid "$pid" 20
done
