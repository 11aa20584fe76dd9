# Shell functions shared by the benchmark scripts under benches/ (sourced, not run).
# Same conventions as benches/e2e.sh, which keeps its own copies for now: a
# throwaway PostgreSQL 15+ in a temp dir, servers run as user postgres when we are
# root (setpriv), free ports picked at run time on 127.0.0.1, and everything that
# was started is stopped by PID on exit.
#
# The sourcing script sets LIB_NAME (used in messages), then calls, in order:
#   lib_find_tools      PG_BIN, as_pg, IS_ROOT (needs PG_BIN from the environment or "")
#   lib_make_workdir    WORK (temp dir, owned by postgres when root), the EXIT trap
#   lib_start_postgres  PGDATA, PG_PORT, PM_PID, PG_VERSION (MAX_CONN must be set)
# and registers its own background processes with `KILL_PIDS+=("$pid")`.

log() { printf '%s\n' "$*" >&2; }
die() {
    log "${LIB_NAME:-bench}: $*"
    exit 1
}
has() { [[ " $2 " == *" $1 "* ]]; }

# lib_pgweir_bins ARGS...: sets BINS to the pgweir binaries a script was given (default:
# the release build), each checked to be executable.
lib_pgweir_bins() {
    BINS=("$@")
    ((${#BINS[@]})) || BINS=("$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/pgweir")
    local b
    for b in "${BINS[@]}"; do [[ -x $b ]] || die "no pgweir binary at $b (cargo build --release -p pgweir)"; done
}

# --- tools -----------------------------------------------------------------
lib_find_tools() {
    IS_ROOT=0
    [[ $(id -u) -eq 0 ]] && IS_ROOT=1
    if [[ -z ${PG_BIN:-} ]]; then
        local pg_ctl dir major
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
    local tool
    for tool in initdb pg_ctl postgres psql; do
        [[ -x ${PG_BIN:-}/$tool ]] || die "PostgreSQL 15+ not found (PG_BIN='${PG_BIN:-}'): apt-get install postgresql-15"
    done
    for tool in timeout awk; do command -v "$tool" >/dev/null || die "$tool is required"; done
    if ((IS_ROOT)); then
        command -v setpriv >/dev/null || die "setpriv (util-linux) is required to run servers as postgres"
        getent passwd postgres >/dev/null || die "no postgres user: install postgresql-15"
        # PostgreSQL and PgBouncer refuse to run as root.
        AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    else
        AS_PG=()
    fi
}
as_pg() { "${AS_PG[@]}" "$@"; }

# lib_install_pgbouncer: apt-get install pgbouncer when it is missing.
lib_install_pgbouncer() {
    command -v pgbouncer >/dev/null && return 0
    log "installing pgbouncer"
    local sudo=()
    ((IS_ROOT)) || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >&2
}

# --- work dir and cleanup: everything started here is stopped by PID --------
KILL_PIDS=()
PG_STARTED=0
lib_cleanup() {
    local rc=$? pid i alive
    set +e
    trap - EXIT INT TERM
    for pid in "${KILL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "${KILL_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${KILL_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    if ((PG_STARTED)); then
        # The postmaster may have been restarted (new PID): stop whatever runs on PGDATA.
        local pm
        pm=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)
        (cd "$WORK" && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop) >/dev/null 2>&1 ||
            { [[ -n $pm ]] && kill -KILL "$pm" 2>/dev/null; }
    fi
    if [[ -n ${KEEP_WORK:-} ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
lib_make_workdir() {
    WORK=$(mktemp -d "/tmp/pgweir-${LIB_NAME:-bench}.XXXXXX")
    PGDATA=$WORK/pg
    trap lib_cleanup EXIT
    trap 'exit 130' INT TERM
    if ((IS_ROOT)); then chown postgres: "$WORK"; fi
    cd "$WORK" # servers running as postgres need a cwd they can read
}

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
# stop_pid PID [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 5); reaps it
# and takes it off KILL_PIDS (its number may be reused by another process later).
stop_pid() {
    local pid=$1 i p keep=()
    if kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < ${2:-5} * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for p in "${KILL_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    KILL_PIDS=("${keep[@]}")
}

# --- PostgreSQL ------------------------------------------------------------
# lib_start_postgres: initdb into $PGDATA and start it on a free port; durability
# off. The user postgres logs in without a password over the socket in $WORK and
# over TCP; everyone else needs SCRAM over TCP. Sets PG_PORT, PM_PID, PG_VERSION.
lib_start_postgres() {
    log "initdb into $PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --no-locale -N --no-instructions \
        >"$WORK/initdb.log" 2>&1 || die "initdb failed: $(cat "$WORK/initdb.log")"
    cat >"$PGDATA/pg_hba.conf" <<EOF
local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
EOF
    local attempt
    PG_PORT=
    for attempt in 1 2 3 4 5; do
        free_port PG_PORT
        cat >"$PGDATA/bench.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
max_connections = ${MAX_CONN:-300}
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
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
}
# psql_super ARGS...: psql as postgres over the socket in $WORK.
psql_super() { timeout "${PSQL_TIMEOUT:-120}" "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres "$@"; }
# bench_psql PORT ARGS...: psql as user bench to database bench on 127.0.0.1:PORT (a
# proxy, or PostgreSQL itself), quiet, stopping at the first error.
bench_psql() {
    PGPASSWORD=bench timeout "${PSQL_TIMEOUT:-120}" "$PG_BIN/psql" -q -X -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$1" -U bench bench "${@:2}"
}
# pg_running: the postmaster of $PGDATA is up and accepts connections.
pg_running() { PSQL_TIMEOUT=10 psql_super -d postgres -c 'SELECT 1' >/dev/null 2>&1; }

# lib_pgweir_toml AUTH POOL MAX_CLIENTS [LINE ...]: writes $WORK/pgweir.toml, the
# counterpart of lib_pgbouncer_ini: database bench on $PG_PORT (as user bench),
# listening on 127.0.0.1:$PORT with no HTTP listener, clients checked against
# $WORK/userlist.txt with AUTH; each LINE follows as a top-level setting.
lib_pgweir_toml() {
    local auth=$1 pool=$2 max_clients=$3
    shift 3
    {
        printf '%s\n' "listen = \"127.0.0.1:$PORT\"" 'http_listen = ""' "auth_type = \"$auth\"" \
            "auth_file = \"$WORK/userlist.txt\"" "default_pool_size = $pool" \
            "max_client_conn = $max_clients" "$@"
        printf '[databases.bench]\nhost = "127.0.0.1"\nport = %s\nuser = "bench"\npassword = "bench"\n' "$PG_PORT"
    } >"$WORK/pgweir.toml"
}

# lib_pgbouncer_ini AUTH POOL MAX_CLIENTS [SETTING = VALUE ...]: writes
# $WORK/pgbouncer.ini for database bench on $PG_PORT, listening on 127.0.0.1:$PORT in
# transaction mode, clients checked against $WORK/userlist.txt with AUTH; extra
# [pgbouncer] settings follow, one per argument.
lib_pgbouncer_ini() {
    local auth=$1 pool=$2 max_clients=$3
    shift 3
    {
        printf '[databases]\nbench = host=127.0.0.1 port=%s dbname=bench\n[pgbouncer]\n' "$PG_PORT"
        printf '%s\n' "listen_addr = 127.0.0.1" "listen_port = $PORT" "unix_socket_dir =" \
            "auth_type = $auth" "auth_file = $WORK/userlist.txt" "pool_mode = transaction" \
            "default_pool_size = $pool" "max_client_conn = $max_clients" \
            "logfile = $WORK/pgbouncer.log" "pidfile = $WORK/pgbouncer.pid" "$@"
    } >"$WORK/pgbouncer.ini"
}

# lib_run_pgbouncer: starts PgBouncer on $WORK/pgbouncer.ini (as postgres when root)
# and waits for $PORT; sets PID.
lib_run_pgbouncer() {
    ((IS_ROOT)) && chown postgres: "$WORK/pgbouncer.ini"
    rm -f "$WORK/pgbouncer.pid"
    as_pg pgbouncer -d "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 || die "pgbouncer failed: $(cat "$WORK/pgbouncer.out")"
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $WORK/pgbouncer.pid ]] && break
        sleep 0.1
    done
    PID=$(cat "$WORK/pgbouncer.pid")
    KILL_PIDS+=("$PID")
    wait_port "$PORT" "$PID" 30 || die "pgbouncer did not start"
}
