#!/usr/bin/env bash
# What server-side reuse of unnamed statements (cache_unnamed_statements) costs and
# saves: pgbench -S -M extended through three pgweir setups, plus a direct connection,
# against one throwaway PostgreSQL, runs interleaved (order rotating per repetition).
#
#   off     NEW_BIN with cache_unnamed_statements = false: every execution parsed
#   auto    OLD_BIN (a build from before the re-prepare) with the cache on: parsed
#           once per server connection, generic plans from the sixth execution on
#   custom  NEW_BIN with its default: parsed once per five executions, custom plans
#   direct  pgbench straight to PostgreSQL
#
# Reports TPS, and CPU per transaction of the proxy and of the whole PostgreSQL
# server (utime + stime from /proc, as benches/e2e.sh reads them), per run and as
# median with min..max.
#
# Knobs: NEW_BIN, OLD_BIN (required), SECONDS_PER_RUN=20, REPS=3, CLIENTS=16,
# THREADS=2, POOL_SIZE=20, SCALE=10, VARIANTS="off auto custom direct", PG_BIN.
# Run as root (servers then run as user postgres) or as an ordinary user.
# Everything started here is stopped by PID on exit.
set -euo pipefail

NEW_BIN=${NEW_BIN:?NEW_BIN: the pgweir binary to measure}
OLD_BIN=${OLD_BIN:?OLD_BIN: a pgweir binary from before the re-prepare}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-20}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-16}
THREADS=${THREADS:-2}
POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
VARIANTS=${VARIANTS:-"off auto custom direct"}
PG_BIN=${PG_BIN:-$(dirname "$(readlink -f "$(command -v pg_ctl)")")}

log() { printf '%s\n' "$*" >&2; }
if [[ $(id -u) -eq 0 ]]; then
    as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
else
    as_pg() { "$@"; }
fi
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d /tmp/pgweir-reuse.XXXXXX)
PGDATA=$WORK/pg
KILL_PIDS=()
PG_STARTED=0
cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT INT TERM
    for pid in "${KILL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${KILL_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    ((PG_STARTED)) && (cd "$WORK" && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop) >/dev/null 2>&1
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[[ $(id -u) -eq 0 ]] && chown postgres: "$WORK"
cd "$WORK"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 10000))
        port_open "$p" || break
    done
    echo "$p"
}
wait_port() {
    local i
    for ((i = 0; i < 300; i++)); do
        port_open "$1" && return 0
        sleep 0.1
    done
    return 1
}

PG_PORT=$(free_port)
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --no-locale -N >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null
PG_STARTED=1
PM_PID=$(head -n 1 "$PGDATA/postmaster.pid")
"$PG_BIN/psql" -X -q -h "$WORK" -p "$PG_PORT" -U postgres -d postgres \
    -c "SET password_encryption = 'scram-sha-256'" -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" \
    -c "CREATE DATABASE bench OWNER bench"
PGPASSWORD=bench "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U bench bench >/dev/null 2>&1

declare -A PORT=([direct]=$PG_PORT) PID=()
start_pgweir() { # start_pgweir VARIANT BINARY CACHE(true|false|default)
    local port conf=()
    port=$(free_port)
    if [[ $3 != default ]]; then
        printf 'cache_unnamed_statements = %s\n' "$3" >"$WORK/$1.toml"
        conf=(--config "$WORK/$1.toml")
    fi
    RUST_LOG=warn "$2" "${conf[@]}" --listen "127.0.0.1:$port" \
        --upstream "postgres://bench:bench@127.0.0.1:$PG_PORT/bench" \
        --pool-size "$POOL_SIZE" --pool-mode transaction --http-listen '' >"$WORK/$1.log" 2>&1 &
    PID[$1]=$!
    KILL_PIDS+=("$!")
    PORT[$1]=$port
    wait_port "$port" || { log "pgweir ($1) did not start: $(tail -n 5 "$WORK/$1.log")"; exit 1; }
}
for v in $VARIANTS; do
    case $v in
        off) start_pgweir off "$NEW_BIN" false ;;
        auto) start_pgweir auto "$OLD_BIN" true ;;
        custom) start_pgweir custom "$NEW_BIN" default ;;
        direct) ;;
        *) log "unknown variant $v"; exit 1 ;;
    esac
done

proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
server_ticks() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$PM_PID" '
        { pid = $1; sub(/^.*\) /, "") }
        pid == pm { total += $12 + $13 + $14 + $15; next }
        $2 == pm  { total += $12 + $13 }
        END { print total + 0 }'
}
pm_children() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$PM_PID" '{ sub(/^.*\) /, "") } $2 == pm { n++ } END { print n + 0 }'; }

declare -A R_TPS=() R_S=() R_P=()
run() { # run VARIANT SECONDS
    local v=$1 pid=${PID[$1]:-} out xacts s0 s1 p0=0 p1=0 children i
    children=$(pm_children)
    [[ -n $pid ]] && p0=$(proc_ticks "$pid")
    s0=$(server_ticks)
    out=$(PGPASSWORD=bench "$PG_BIN/pgbench" -n -S -M extended -c "$CLIENTS" -j "$THREADS" -T "$2" \
        -h 127.0.0.1 -p "${PORT[$v]}" -U bench bench 2>"$WORK/pgbench.err")
    for ((i = 0; i < 100; i++)); do
        (($(pm_children) <= children)) && break
        sleep 0.05
    done
    s1=$(server_ticks)
    [[ -n $pid ]] && p1=$(proc_ticks "$pid")
    TPS=$(awk '/^tps = / { printf "%.0f", $3; exit }' <<<"$out")
    xacts=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' <<<"$out")
    SCPU=$(awk -v d=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$xacts" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    PCPU=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$xacts" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
}

for v in $VARIANTS; do run "$v" 3; done # warm-up: pools filled, caches hot
read -r -a LIST <<<"$VARIANTS"
n=${#LIST[@]}
for ((rep = 0; rep < REPS; rep++)); do
    for ((k = 0; k < n; k++)); do
        v=${LIST[$(((k + rep) % n))]}
        run "$v" "$SECONDS_PER_RUN"
        R_TPS[$v]+=" $TPS"
        R_S[$v]+=" $SCPU"
        R_P[$v]+=" $PCPU"
        log "[rep $((rep + 1))/$REPS] $v: $TPS tps, PG $SCPU µs/xact, proxy $PCPU µs/xact"
    done
done

stats() { # median and min..max of a list
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ a[NR] = $1 }
        END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
              printf "%s (%s..%s)", m, a[1], a[NR] }'
}
echo "pgbench -S -M extended -c $CLIENTS -j $THREADS -T $SECONDS_PER_RUN, scale $SCALE, pool $POOL_SIZE;" \
    "$REPS interleaved runs; $("$PG_BIN/postgres" --version); $(nproc) CPUs"
echo
echo "| variant | TPS median (min..max) | PG CPU µs/xact | proxy CPU µs/xact | raw TPS | raw PG µs/xact |"
echo "|---|---|---|---|---|---|"
for v in $VARIANTS; do
    p=$(stats "${R_P[$v]}")
    [[ $v == direct ]] && p="–"
    echo "| $v | $(stats "${R_TPS[$v]}") | $(stats "${R_S[$v]}") | $p |${R_TPS[$v]} |${R_S[$v]} |"
done
