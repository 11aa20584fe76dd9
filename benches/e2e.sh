#!/usr/bin/env bash
# End-to-end benchmark: pgbench straight to PostgreSQL ("direct"), through pgweir
# and through PgBouncer, on the same machine in the same run.
#
# One throwaway PostgreSQL (initdb into a temp dir, durability off, pgbench -i) is
# shared by all targets. Runs are interleaved: for each repetition and each cell
# (workload x protocol x clients) the targets run back to back, their order
# rotating per repetition, so drift on the box (thermal, noisy neighbours) hits
# every target alike; each cell reports the median of REPS runs. With more than
# one transport (TRANSPORTS="tcp unix") every (target, transport) pair is a run
# of its own in that rotation, so TCP and Unix sockets are compared in one run
# rather than across runs on a box that may have drifted in between.
#
# Besides TPS it reports CPU per transaction, read from /proc/PID/stat (utime +
# stime) before and after each run: of the proxy process, and of the PostgreSQL
# server (postmaster, its live children, and the children it reaped meanwhile).
# On a box where clients, proxy and server share the CPUs, proxy CPU is taken
# straight out of throughput, so TPS alone misleads.
#
# Finally it holds IDLE_CLIENTS idle connections open through each proxy
# (pgbench -f idle.sql, a script that only sleeps) and reports the RSS growth per
# idle client.
#
# Output: one markdown table plus the idle-RSS lines on stdout; progress on stderr.
#
# Knobs (environment):
#   BENCH_SECONDS=10      pgbench -T per run
#   REPS=3                repetitions per cell (median reported)
#   CLIENTS="1 16 64 256" client counts
#   MODES="simple extended"           pgbench -M values (prepared also works)
#   WORKLOADS="select tpcb"           select = -S (select-only), tpcb = tpcb-like
#   TARGETS="direct pgweir pgbouncer" which targets to run
#   THREADS=2             pgbench -j (capped at the client count)
#   SCALE=10              pgbench -i -s
#   POOL_SIZE=20          server connections per proxy pool
#   IDLE_CLIENTS=1000     idle connections for the RSS measurement (0 = skip)
#   WARMUP_SECONDS=2      one unmeasured run per target before the matrix
#   PG_BIN=               PostgreSQL bin dir (default: pg_ctl 15+ on PATH, else
#                         the newest /usr/lib/postgresql/*/bin)
#   PGWEIR_BIN=           pgweir binary (default: cargo build --release -p pgweir)
#   PGWEIR_BASELINE_BIN=  a second pgweir binary (say, the build before a change), run
#                         as target "baseline" with the same arguments and interleaved
#                         with the others: a same-run A/B, reported in a table of its
#                         own (baseline vs pgweir, both against PgBouncer's CPU)
#   PGWEIR_ARGS=          extra pgweir arguments, e.g. "--config nocache.toml" with
#                         cache_unnamed_statements = false (on by default; see
#                         benches/statement-reuse.sh to compare both)
#   TRANSPORTS=tcp        how clients reach every target: tcp (loopback), unix
#                         (PostgreSQL's own socket, pgweir's and PgBouncer's
#                         unix_socket_dir), or "tcp unix" for both, interleaved, with
#                         a row per transport (ratios compare targets on the same
#                         transport) and a second table of Unix/TCP ratios per
#                         target. Idle clients use the first transport listed.
#   SERVER_TRANSPORT=tcp  how both proxies reach PostgreSQL: tcp (127.0.0.1) or unix
#                         (its socket directory: pgweir's --upstream with
#                         ?host=<dir>, PgBouncer's host=<dir>), the co-located setup
#   UNIX=0                1 = the older spelling of TRANSPORTS=unix
#   TLS=0                 1 = clients connect over TLS (pgbench with PGSSLMODE=require)
#                         to every target: pgweir with client_tls_sslmode = require,
#                         PgBouncer with its client_tls_* settings, PostgreSQL with
#                         ssl = on; one self-signed certificate (EC P-256) for all. The
#                         proxies' server connections stay plaintext. pgweir gets its
#                         TLS settings from a --config file, so PGWEIR_ARGS must not
#                         name one then. TCP only: refused with unix in TRANSPORTS.
#
# Example (quick check without pgweir):
#   TARGETS="direct pgbouncer" BENCH_SECONDS=3 REPS=1 CLIENTS="1 16" benches/e2e.sh
#
# Runs as root (PostgreSQL and PgBouncer then run as user postgres, via setpriv)
# or as an ordinary user. Installs pgbouncer with apt-get when it is missing (on a
# machine with systemd the Debian package also starts its own service on port
# 6432; this script runs a separate PgBouncer with its own config and port).
# Everything it starts is stopped by PID on exit, and its temp dir removed.
set -euo pipefail

BENCH_SECONDS=${BENCH_SECONDS:-10}
REPS=${REPS:-3}
CLIENTS=${CLIENTS:-"1 16 64 256"}
MODES=${MODES:-"simple extended prepared"}
WORKLOADS=${WORKLOADS:-"select tpcb"}
TARGETS=${TARGETS:-"direct pgweir pgbouncer"}
THREADS=${THREADS:-2}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-20}
IDLE_CLIENTS=${IDLE_CLIENTS:-1000}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
PG_BIN=${PG_BIN:-}
PGWEIR_ARGS=${PGWEIR_ARGS:-}
PGWEIR_BIN=${PGWEIR_BIN:-}
TLS=${TLS:-0}
UNIX=${UNIX:-0}
TRANSPORTS=${TRANSPORTS:-}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
die() {
    log "e2e.sh: $*"
    exit 1
}
has() { [[ " $2 " == *" $1 "* ]]; }

# --- check the knobs -------------------------------------------------------
for knob in BENCH_SECONDS REPS THREADS SCALE POOL_SIZE IDLE_CLIENTS WARMUP_SECONDS TLS UNIX; do
    [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a whole number, not '${!knob}'"
done
((BENCH_SECONDS > 0 && REPS > 0 && THREADS > 0 && SCALE > 0 && POOL_SIZE > 0)) ||
    die "BENCH_SECONDS, REPS, THREADS, SCALE and POOL_SIZE must be positive"
for c in $CLIENTS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "CLIENTS: '$c' is not a client count"; done
for m in $MODES; do has "$m" "simple extended prepared" || die "MODES: unknown pgbench -M '$m'"; done
for w in $WORKLOADS; do has "$w" "select tpcb" || die "WORKLOADS: '$w' is not select or tpcb"; done
PGWEIR_BASELINE_BIN=${PGWEIR_BASELINE_BIN:-}
if [[ -n $PGWEIR_BASELINE_BIN ]] && ! has baseline "$TARGETS"; then TARGETS="$TARGETS baseline"; fi
for t in $TARGETS; do has "$t" "direct pgweir pgbouncer baseline" || die "TARGETS: unknown target '$t'"; done
if has baseline "$TARGETS"; then
    [[ -x $PGWEIR_BASELINE_BIN ]] || die "target baseline needs PGWEIR_BASELINE_BIN, an executable pgweir"
fi
[[ -n $CLIENTS && -n $MODES && -n $WORKLOADS && -n $TARGETS ]] || die "empty CLIENTS/MODES/WORKLOADS/TARGETS"
read -r -a TARGET_LIST <<<"$TARGETS"
# UNIX=1 predates TRANSPORTS; it stays an alias so old command lines still work,
# but it cannot be combined with a TRANSPORTS that says something else.
if ((UNIX)); then
    [[ -z ${TRANSPORTS// /} || ${TRANSPORTS// /} == unix ]] ||
        die "UNIX=1 means TRANSPORTS=unix; set only TRANSPORTS='$TRANSPORTS'"
    TRANSPORTS=unix
fi
TRANSPORTS=${TRANSPORTS:-tcp}
SERVER_TRANSPORT=${SERVER_TRANSPORT:-tcp}
has "$SERVER_TRANSPORT" "tcp unix" || die "SERVER_TRANSPORT: '$SERVER_TRANSPORT' is not tcp or unix"
for t in $TRANSPORTS; do has "$t" "tcp unix" || die "TRANSPORTS: '$t' is not tcp or unix"; done
# libpq ignores sslmode on Unix sockets, so with TLS=1 the unix runs would be
# plaintext while the report calls the whole run TLS.
if ((TLS)) && has unix "$TRANSPORTS"; then
    die "TLS=1 applies to TCP only (libpq never uses TLS over a Unix socket); use TRANSPORTS=tcp"
fi
read -r -a TRANSPORT_LIST <<<"$TRANSPORTS"
((${#TRANSPORT_LIST[@]} > 0)) || die "empty TRANSPORTS"
MAX_CLIENTS=$(tr ' ' '\n' <<<"$CLIENTS" | sort -n | tail -n 1)

# --- tools -----------------------------------------------------------------
IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

if [[ -z $PG_BIN ]]; then
    if pg_ctl=$(command -v pg_ctl) &&
        [[ $("$pg_ctl" --version | sed -n 's/.*(PostgreSQL) \([0-9]*\).*/\1/p') -ge 15 ]]; then
        PG_BIN=$(dirname "$(readlink -f "$pg_ctl")")
    else
        for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5nr); do
            major=$(basename "$(dirname "$dir")")
            if [[ $major =~ ^[0-9]+$ ]] && ((major >= 15)) && [[ -x $dir/postgres ]]; then
                PG_BIN=$dir
                break
            fi
        done
    fi
fi
for tool in initdb pg_ctl postgres psql pgbench; do
    [[ -x $PG_BIN/$tool ]] || die "PostgreSQL 15+ not found (PG_BIN='$PG_BIN'): apt-get install postgresql-15"
done
for tool in timeout getconf awk find; do command -v "$tool" >/dev/null || die "$tool is required"; done

if ((IS_ROOT)); then
    command -v setpriv >/dev/null || die "setpriv (util-linux) is required to run servers as postgres"
    getent passwd postgres >/dev/null || die "no postgres user: install postgresql-15"
    # PostgreSQL and PgBouncer refuse to run as root.
    as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
else
    as_pg() { "$@"; }
fi

if has pgbouncer "$TARGETS" && ! command -v pgbouncer >/dev/null; then
    log "installing pgbouncer"
    sudo=()
    ((IS_ROOT)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >&2
fi

if has pgweir "$TARGETS" && [[ -z $PGWEIR_BIN ]]; then
    log "building pgweir (release)"
    (cd "$REPO" && cargo build --release -p pgweir) >&2
    PGWEIR_BIN=$REPO/target/release/pgweir
fi
if has pgweir "$TARGETS"; then [[ -x $PGWEIR_BIN ]] || die "pgweir binary '$PGWEIR_BIN' not found"; fi

CLK_TCK=$(getconf CLK_TCK)
# 1000 idle clients need sockets on both ends; raise the soft limit if we may.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

# --- cleanup: everything started here is stopped by PID ---------------------
WORK=$(mktemp -d /tmp/pgweir-bench.XXXXXX)
KILL_PIDS=()
PGDATA=$WORK/pg
PG_STARTED=0
cleanup() {
    local rc=$? pid i
    set +e
    trap - EXIT INT TERM
    for pid in "${KILL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for ((i = 0; i < 50; i++)); do
        local alive=0
        for pid in "${KILL_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${KILL_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    if ((PG_STARTED)); then
        local pm
        pm=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)
        (cd "$WORK" && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop) >/dev/null 2>&1 ||
            { [[ -n $pm ]] && kill -KILL "$pm" 2>/dev/null; }
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
((IS_ROOT)) && chown postgres: "$WORK"
cd "$WORK" # servers running as postgres need a cwd they can read

# --- ports -----------------------------------------------------------------
USED_PORTS=""
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_port VAR: a port nothing listens on, below the ephemeral range.
free_port() {
    local i p
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 10000))
        if ! has "$p" "$USED_PORTS" && ! port_open "$p"; then
            USED_PORTS+=" $p"
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}
# wait_port PORT PID SECONDS: until PORT accepts, PID dies, or time runs out.
wait_port() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        port_open "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# --- PostgreSQL ------------------------------------------------------------
log "initdb into $PGDATA"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --no-locale -N --no-instructions \
    >"$WORK/initdb.log" 2>&1 || die "initdb failed: $(cat "$WORK/initdb.log")"
MAX_CONN=$((MAX_CLIENTS + 2 * POOL_SIZE + 20))
((MAX_CONN >= 300)) || MAX_CONN=300
cat >"$PGDATA/pg_hba.conf" <<EOF
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
EOF
TLS_CONF=""
if ((TLS)); then
    command -v openssl >/dev/null || die "TLS=1 needs the openssl CLI"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1 || die "openssl could not make a certificate"
    chmod 600 "$WORK/tls.key"
    ((IS_ROOT)) && chown postgres: "$WORK/tls.key" "$WORK/tls.crt"
    TLS_CONF="ssl = on
ssl_cert_file = '$WORK/tls.crt'
ssl_key_file = '$WORK/tls.key'"
fi
PG_PORT=
for attempt in 1 2 3 4 5; do
    free_port PG_PORT
    cat >"$PGDATA/bench.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
max_connections = $MAX_CONN
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
$TLS_CONF
EOF
    grep -q "^include 'bench.conf'" "$PGDATA/postgresql.conf" || echo "include 'bench.conf'" >>"$PGDATA/postgresql.conf"
    if as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 start >/dev/null 2>&1; then
        PG_STARTED=1
        break
    fi
    log "PostgreSQL did not start on port $PG_PORT (attempt $attempt)"
    tail -n 5 "$WORK/postgres.log" >&2 || true
done
((PG_STARTED)) || die "PostgreSQL did not start; see the log above"
PM_PID=$(head -n 1 "$PGDATA/postmaster.pid")
PG_VERSION=$("$PG_BIN/postgres" --version)

psql_super() { timeout 120 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres "$@"; }
psql_super -d postgres -c "SET password_encryption = 'scram-sha-256'" -c "CREATE ROLE bench LOGIN PASSWORD 'bench'"
psql_super -d postgres -c "CREATE DATABASE bench OWNER bench"
log "pgbench -i -s $SCALE (PostgreSQL on port $PG_PORT, max_connections $MAX_CONN)"
PGPASSWORD=bench timeout 1800 "$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U bench bench \
    >"$WORK/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -n 5 "$WORK/pgbench-init.log")"

# --- proxies ---------------------------------------------------------------
declare -A PORT=([direct]=$PG_PORT) PROXY_PID=() LOGFILE=()
# host_of TARGET TRANSPORT: pgbench's -h for that target. libpq takes a host that
# starts with "/" as the directory holding the socket .s.PGSQL.<port>: PostgreSQL's
# is in $WORK, the proxies' in $WORK/sock.
host_of() {
    case $2 in
    tcp) printf '127.0.0.1' ;;
    unix) if [[ $1 == direct ]]; then printf '%s' "$WORK"; else printf '%s' "$WORK/sock"; fi ;;
    esac
}
# With unix among the transports every proxy also gets a Unix socket; each keeps
# listening on TCP as well, so one process serves both transports and a
# TCP-vs-Unix difference cannot come from two differently warmed processes.
# PostgreSQL always has both (listen_addresses and unix_socket_directories above).
BOUNCER_UNIX_DIR="" # empty: PgBouncer opens no Unix socket
if has unix "$TRANSPORTS"; then
    mkdir -p "$WORK/sock"
    ((IS_ROOT)) && chown postgres: "$WORK/sock"
    BOUNCER_UNIX_DIR=$WORK/sock
    printf 'unix_socket_dir = "%s"\n' "$WORK/sock" >"$WORK/pgweir-unix.toml"
    PGWEIR_ARGS="--config $WORK/pgweir-unix.toml $PGWEIR_ARGS"
    log "transports: ${TRANSPORT_LIST[*]} (Unix sockets: PostgreSQL's in $WORK, the proxies' in $WORK/sock)"
fi

if ((TLS)); then
    # From here on every pgbench connection (runs and idle clients) is TLS.
    export PGSSLMODE=require
    printf 'client_tls_sslmode = "require"\nclient_tls_cert_file = "%s"\nclient_tls_key_file = "%s"\n' \
        "$WORK/tls.crt" "$WORK/tls.key" >"$WORK/pgweir-tls.toml"
    PGWEIR_ARGS="--config $WORK/pgweir-tls.toml $PGWEIR_ARGS"
    log "TLS: clients connect with sslmode=require to every target"
fi

# Where the proxies find PostgreSQL (SERVER_TRANSPORT).
if [[ $SERVER_TRANSPORT == unix ]]; then
    UPSTREAM_URL="postgres://bench:bench@/bench?host=$WORK&port=$PG_PORT"
    BOUNCER_SERVER="host=$WORK port=$PG_PORT dbname=bench"
else
    UPSTREAM_URL="postgres://bench:bench@127.0.0.1:$PG_PORT/bench"
    BOUNCER_SERVER="host=127.0.0.1 port=$PG_PORT dbname=bench"
fi
log "the proxies reach PostgreSQL over $SERVER_TRANSPORT"

# start_pgweir TARGET BINARY: one pgweir with the benchmark's arguments.
start_pgweir() {
    local target=$1 bin=$2 port
    free_port port
    # shellcheck disable=SC2086 # PGWEIR_ARGS is a list of arguments
    RUST_LOG=${RUST_LOG:-warn} "$bin" --listen "127.0.0.1:$port" \
        --upstream "$UPSTREAM_URL" \
        --pool-size "$POOL_SIZE" --pool-mode transaction --http-listen '' \
        $PGWEIR_ARGS >"$WORK/$target.log" 2>&1 &
    PROXY_PID[$target]=$!
    KILL_PIDS+=("$!")
    LOGFILE[$target]=$WORK/$target.log
    PORT[$target]=$port
    wait_port "$port" "${PROXY_PID[$target]}" 30 ||
        die "$target did not start listening on $port: $(tail -n 20 "$WORK/$target.log")"
}
if has pgweir "$TARGETS"; then start_pgweir pgweir "$PGWEIR_BIN"; fi
if has baseline "$TARGETS"; then start_pgweir baseline "$PGWEIR_BASELINE_BIN"; fi

if has pgbouncer "$TARGETS"; then
    free_port B_PORT
    printf '"bench" "bench"\n' >"$WORK/userlist.txt"
    BOUNCER_MAX_CLIENTS=$((IDLE_CLIENTS + MAX_CLIENTS + 100))
    ((BOUNCER_MAX_CLIENTS >= 2000)) || BOUNCER_MAX_CLIENTS=2000
    cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = $BOUNCER_SERVER

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $B_PORT
listen_backlog = 1024
unix_socket_dir = $BOUNCER_UNIX_DIR
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $BOUNCER_MAX_CLIENTS
ignore_startup_parameters = extra_float_digits
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
    if ((TLS)); then
        printf 'client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n' \
            "$WORK/tls.crt" "$WORK/tls.key" >>"$WORK/pgbouncer.ini"
    fi
    ((IS_ROOT)) && chown postgres: "$WORK"/userlist.txt "$WORK"/pgbouncer.ini
    as_pg pgbouncer -d "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 ||
        die "pgbouncer failed: $(cat "$WORK/pgbouncer.out" "$WORK/pgbouncer.log" 2>/dev/null | tail -n 20)"
    for ((i = 0; i < 100; i++)); do
        [[ -s $WORK/pgbouncer.pid ]] && break
        sleep 0.1
    done
    PROXY_PID[pgbouncer]=$(cat "$WORK/pgbouncer.pid" 2>/dev/null) || die "pgbouncer wrote no pidfile"
    KILL_PIDS+=("${PROXY_PID[pgbouncer]}")
    LOGFILE[pgbouncer]=$WORK/pgbouncer.log
    PORT[pgbouncer]=$B_PORT
    wait_port "$B_PORT" "${PROXY_PID[pgbouncer]}" 30 ||
        die "pgbouncer did not start listening on $B_PORT: $(tail -n 20 "$WORK/pgbouncer.log")"
fi

# A target started without its Unix socket would otherwise fail every unix run of
# the matrix one by one; say so once, now.
if has unix "$TRANSPORTS"; then
    for target in "${TARGET_LIST[@]}"; do
        sock=$(host_of "$target" unix)/.s.PGSQL.${PORT[$target]}
        [[ -S $sock ]] || die "$target has no Unix socket at $sock"
    done
fi

# --- measuring -------------------------------------------------------------
# utime + stime of one process, in clock ticks.
proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU of the whole server: postmaster (own + reaped children) plus live children.
server_ticks() {
    # Processes come and go while cat reads; a vanished one is no error.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$PM_PID" '
        { pid = $1; sub(/^.*\) /, "") }
        pid == pm { total += $12 + $13 + $14 + $15; next }
        $2 == pm  { total += $12 + $13 }
        END { print total + 0 }'
}
# Children of the postmaster (backends and auxiliary processes).
pm_children() { { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$PM_PID" '{ sub(/^.*\) /, "") } $2 == pm { n++ } END { print n + 0 }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
socket_count() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }

declare -A R_TPS=() R_PCPU=() R_SCPU=()
DEAD_WARNED=""

# bench_once TARGET TRANSPORT WORKLOAD MODE CLIENTS SECONDS: sets TPS PCPU SCPU
# ("" if failed).
bench_once() {
    local target=$1 transport=$2 workload=$3 mode=$4 clients=$5 secs=$6
    local pid=${PROXY_PID[$target]:-} jobs=$((clients < THREADS ? clients : THREADS))
    local builtin=tpcb-like out xacts failed p0=0 p1=0 s0 s1 children i host
    host=$(host_of "$target" "$transport")
    TPS="" PCPU="" SCPU=""
    [[ $workload == select ]] && builtin=select-only
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
        if ! has "$target" "$DEAD_WARNED"; then
            log "!! $target (pid $pid) is gone; its log ends with:"
            tail -n 20 "${LOGFILE[$target]}" >&2 || true
            DEAD_WARNED+=" $target"
        fi
        return 0
    fi
    # Sample the server only while no backend is exiting: a backend read as a live
    # child and then reaped into the postmaster's cutime within one sample would be
    # counted twice (or not at all), moving a whole run's CPU into the next run.
    children=$(pm_children)
    [[ -n $pid ]] && p0=$(proc_ticks "$pid")
    s0=$(server_ticks)
    if ! out=$(PGPASSWORD=bench timeout $((secs + 60)) "$PG_BIN/pgbench" -n -b "$builtin" -M "$mode" \
        -c "$clients" -j "$jobs" -T "$secs" -h "$host" -p "${PORT[$target]}" -U bench bench \
        2>"$WORK/pgbench.err"); then
        log "!! pgbench against $target over $transport failed: $(tail -n 3 "$WORK/pgbench.err" | tr '\n' ' ')"
        return 0
    fi
    for ((i = 0; i < 100; i++)); do # direct runs: until their backends have exited (up to 5 s)
        (($(pm_children) <= children)) && break
        sleep 0.05
    done
    s1=$(server_ticks)
    [[ -n $pid ]] && p1=$(proc_ticks "$pid")
    TPS=$(awk '/^tps = / { print $3; exit }' <<<"$out")
    xacts=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' <<<"$out")
    failed=$(awk -F': ' '/^number of failed transactions/ { split($2, a, " "); print a[1]; exit }' <<<"$out")
    if [[ -n $failed && $failed != 0 ]]; then log "!! $target: $failed failed transactions"; fi
    if [[ -z $TPS || -z $xacts || $xacts == 0 ]]; then
        TPS=""
        log "!! pgbench against $target over $transport reported no transactions"
        return 0
    fi
    SCPU=$(awk -v d=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$xacts" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    if [[ -n $pid ]]; then
        PCPU=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$xacts" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    fi
}

median() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{ a[NR] = $1 }
        END { if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Every (target, transport) pair, as "target/transport": the unit that runs back
# to back within a cell and rotates per repetition. With one transport this is
# just the target list in its order, so the rotation is the one from before
# TRANSPORTS existed.
RUNS=()
for transport in "${TRANSPORT_LIST[@]}"; do
    for target in "${TARGET_LIST[@]}"; do RUNS+=("$target/$transport"); done
done

# Each pair warms up, not only each target: every measured run then follows one
# unmeasured run over the same path.
if ((WARMUP_SECONDS > 0)); then
    for run in "${RUNS[@]}"; do
        log "warm-up: $run"
        bench_once "${run%/*}" "${run#*/}" select simple "$((MAX_CLIENTS < 16 ? MAX_CLIENTS : 16))" "$WARMUP_SECONDS"
    done
fi

n_runs=${#RUNS[@]}
for ((rep = 0; rep < REPS; rep++)); do
    for workload in $WORKLOADS; do
        for mode in $MODES; do
            for clients in $CLIENTS; do
                for ((k = 0; k < n_runs; k++)); do
                    run=${RUNS[$(((k + rep) % n_runs))]}
                    target=${run%/*} transport=${run#*/}
                    # Transport before target: the report's cell() looks a
                    # target up under "workload|mode|clients|transport".
                    key="$workload|$mode|$clients|$transport|$target"
                    bench_once "$target" "$transport" "$workload" "$mode" "$clients" "$BENCH_SECONDS"
                    R_TPS[$key]+=" $TPS"
                    R_PCPU[$key]+=" $PCPU"
                    R_SCPU[$key]+=" $SCPU"
                    log "[rep $((rep + 1))/$REPS] $workload -M $mode -c $clients $run:" \
                        "${TPS:-failed} tps, proxy ${PCPU:--} µs/xact, server ${SCPU:--} µs/xact"
                done
            done
        done
    done
done

# --- idle clients ----------------------------------------------------------
declare -A IDLE_LINE=()
if ((IDLE_CLIENTS > 0)); then
    # Each client connects, then only sleeps. pgbench counts -T from before it
    # connects, and 1000 SCRAM logins take a while on a small box, so the run is
    # long and is stopped (by PID) once the RSS has been read.
    printf '\\sleep 100 s\n' >"$WORK/idle.sql"
    # RSS per idle client is the proxy's own memory, which the transport should
    # not change; one transport (the first listed) keeps this step's length.
    transport=${TRANSPORT_LIST[0]}
    for target in pgweir pgbouncer; do
        has "$target" "$TARGETS" || continue
        pid=${PROXY_PID[$target]}
        if ! kill -0 "$pid" 2>/dev/null; then
            IDLE_LINE[$target]="$target: not running"
            continue
        fi
        log "idle: $IDLE_CLIENTS clients through $target over $transport"
        rss0=$(rss_kib "$pid")
        sock0=$(socket_count "$pid")
        PGPASSWORD=bench timeout 150 "$PG_BIN/pgbench" -n -c "$IDLE_CLIENTS" -j "$THREADS" -T 110 -f "$WORK/idle.sql" \
            -h "$(host_of "$target" "$transport")" -p "${PORT[$target]}" -U bench bench >"$WORK/idle-$target.log" 2>&1 &
        bpid=$!
        KILL_PIDS+=("$bpid")
        # Until every client is connected (up to 90 s), then let it settle.
        for ((i = 0; i < 900; i++)); do
            (($(socket_count "$pid") - sock0 >= IDLE_CLIENTS)) && break
            kill -0 "$bpid" 2>/dev/null || break
            sleep 0.1
        done
        sleep 1
        rss1=$(rss_kib "$pid")
        connected=$(($(socket_count "$pid") - sock0))
        kill -TERM "$bpid" 2>/dev/null || true
        wait "$bpid" 2>/dev/null || true
        if ((connected < IDLE_CLIENTS)); then
            log "!! only $connected of $IDLE_CLIENTS idle clients connected to $target; pgbench said:"
            tail -n 5 "$WORK/idle-$target.log" >&2 || true
        fi
        IDLE_LINE[$target]=$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE_CLIENTS" -v c="$connected" -v t="$target over $transport" \
            'BEGIN { printf "%s: RSS %.1f MiB before, %.1f MiB with %d of %d idle clients connected: %.2f KiB per idle client",
                     t, a / 1024, b / 1024, c, n, (c > 0 ? (b - a) / c : 0) }')
    done
fi

# --- report ----------------------------------------------------------------
fmt() { # fmt VALUE PRINTF-FORMAT: "n/a" when empty
    if [[ -n $1 ]]; then awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; else printf 'n/a'; fi
}
ratio() { # ratio A B: A/B, "–" if a target was not run, "n/a" if a run failed
    if [[ $1 == "–" || $2 == "–" ]]; then
        printf -- '–'
    elif [[ -n $1 && -n $2 ]]; then awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; else printf 'n/a'; fi
}
show() { # show VALUE FORMAT: "–" stays, "" becomes "n/a"
    if [[ $1 == "–" ]]; then printf -- '–'; else fmt "$1" "$2"; fi
}
cell() { # cell TARGET KIND KEY-PREFIX: median, or "–" for a target not run
    local target=$1 kind=$2 prefix=$3
    has "$target" "$TARGETS" || {
        printf -- '–'
        return
    }
    local -n arr=$kind
    median "${arr[$prefix|$target]:-}"
}
workload_name() { # workload_name WORKLOAD: as the tables spell it
    if [[ $1 == select ]]; then printf 'select-only (-S)'; else printf 'tpcb-like'; fi
}
unix_vs_tcp() { # unix_vs_tcp TARGET KIND KEY-PREFIX: the Unix median over the TCP one
    ratio "$(cell "$1" "$2" "$3|unix")" "$(cell "$1" "$2" "$3|tcp")"
}

pgweir_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
bouncer_version=$(command -v pgbouncer >/dev/null && pgbouncer --version 2>/dev/null | head -n 1 || echo "-")
cat <<EOF
## pgweir end-to-end benchmark

$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -sr); $PG_VERSION; ${bouncer_version}; pgweir ${pgweir_rev}.
pgbench -T $BENCH_SECONDS -j $THREADS (capped at clients), scale $SCALE, median of $REPS interleaved runs;
proxies in transaction mode with $POOL_SIZE server connections; clients, proxies and server share this machine.
Clients connect over: ${TRANSPORT_LIST[*]} (unix = Unix sockets); the proxies reach PostgreSQL over ${SERVER_TRANSPORT}.
CPU µs/xact = (utime + stime) over the run / transactions; "PG" is the server's CPU per transaction.

| workload | protocol | clients | transport | direct TPS | pgweir TPS | pgbouncer TPS | pgweir/direct | pgweir/pgbouncer | pgweir CPU µs/xact | pgbouncer CPU µs/xact | PG CPU µs/xact direct | PG CPU µs/xact pgweir | PG CPU µs/xact pgbouncer |
|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
# each_row FUNCTION: calls FUNCTION NAME MODE CLIENTS TRANSPORT KEY-PREFIX for every
# row of a per-transport table, in the matrix's order. One row per transport, so the
# ratio columns compare targets that were reached the same way.
each_row() {
    local workload mode clients transport
    for workload in $WORKLOADS; do
        for mode in $MODES; do
            for clients in $CLIENTS; do
                for transport in "${TRANSPORT_LIST[@]}"; do
                    "$1" "$(workload_name "$workload")" "$mode" "$clients" "$transport" \
                        "$workload|$mode|$clients|$transport"
                done
            done
        done
    done
}
main_row() {
    local p=$5 d w b
    d=$(cell direct R_TPS "$p")
    w=$(cell pgweir R_TPS "$p")
    b=$(cell pgbouncer R_TPS "$p")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$1" "$2" "$3" "$4" \
        "$(show "$d" '%.0f')" "$(show "$w" '%.0f')" "$(show "$b" '%.0f')" \
        "$(ratio "$w" "$d")" "$(ratio "$w" "$b")" \
        "$(show "$(cell pgweir R_PCPU "$p")" '%.1f')" "$(show "$(cell pgbouncer R_PCPU "$p")" '%.1f')" \
        "$(show "$(cell direct R_SCPU "$p")" '%.1f')" "$(show "$(cell pgweir R_SCPU "$p")" '%.1f')" \
        "$(show "$(cell pgbouncer R_SCPU "$p")" '%.1f')"
}
each_row main_row
# The question TRANSPORTS="tcp unix" asks, per target: what the Unix socket buys
# over loopback TCP, from the same interleaved runs as the table above.
if has tcp "$TRANSPORTS" && has unix "$TRANSPORTS"; then
    cat <<EOF

Unix socket / loopback TCP, per target (TPS above 1: Unix is faster; CPU below 1: Unix costs less):

| workload | protocol | clients | direct TPS | pgweir TPS | pgbouncer TPS | pgweir CPU µs/xact | pgbouncer CPU µs/xact |
|---|---|---:|---:|---:|---:|---:|---:|
EOF
    for workload in $WORKLOADS; do
        name=$(workload_name "$workload")
        for mode in $MODES; do
            for clients in $CLIENTS; do
                p="$workload|$mode|$clients"
                printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$mode" "$clients" \
                    "$(unix_vs_tcp direct R_TPS "$p")" "$(unix_vs_tcp pgweir R_TPS "$p")" \
                    "$(unix_vs_tcp pgbouncer R_TPS "$p")" \
                    "$(unix_vs_tcp pgweir R_PCPU "$p")" "$(unix_vs_tcp pgbouncer R_PCPU "$p")"
            done
        done
    done
fi
# The A/B PGWEIR_BASELINE_BIN asks for: this build against the baseline build, from
# the same interleaved runs (CPU ratios below 1: this build costs less).
if has baseline "$TARGETS"; then
    cat <<EOF

This build (pgweir) against PGWEIR_BASELINE_BIN (baseline), same runs:

| workload | protocol | clients | transport | baseline TPS | pgweir TPS | pgweir/baseline TPS | baseline CPU µs/xact | pgweir CPU µs/xact | pgweir/baseline CPU | baseline/pgbouncer CPU | pgweir/pgbouncer CPU |
|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
    baseline_row() {
        local p=$5 bt wt bc wc pc
        bt=$(cell baseline R_TPS "$p") wt=$(cell pgweir R_TPS "$p")
        bc=$(cell baseline R_PCPU "$p") wc=$(cell pgweir R_PCPU "$p") pc=$(cell pgbouncer R_PCPU "$p")
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$1" "$2" "$3" "$4" \
            "$(show "$bt" '%.0f')" "$(show "$wt" '%.0f')" "$(ratio "$wt" "$bt")" \
            "$(show "$bc" '%.1f')" "$(show "$wc" '%.1f')" "$(ratio "$wc" "$bc")" \
            "$(ratio "$bc" "$pc")" "$(ratio "$wc" "$pc")"
    }
    each_row baseline_row
fi
if ((IDLE_CLIENTS > 0)) && ((${#IDLE_LINE[@]} > 0)); then
    echo
    echo "Idle clients (pgbench -f idle.sql: each client connects, then only sleeps):"
    echo
    for target in pgweir pgbouncer; do
        [[ -n ${IDLE_LINE[$target]:-} ]] && echo "- ${IDLE_LINE[$target]}"
    done
fi
exit 0
