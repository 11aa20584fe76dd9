#!/usr/bin/env bash
# Resilience scenarios (issue 10): how pgweir and PgBouncer behave when PostgreSQL
# goes away, turns into a black hole, is overloaded, or answers with a flood of
# errors. Both poolers run the same scenarios in one run, against one throwaway
# PostgreSQL; each (scenario, pooler) cell gets a freshly started pooler with the
# same settings: transaction mode, POOL_SIZE server connections,
# query_wait_timeout = QUERY_WAIT_TIMEOUT, SCRAM logins for clients.
#
# The load comes from benches/scenarios/load.py (asyncpg, one asyncio process).
# Every client has its own connection to the pooler, opened before the scenario
# starts, and loops over one statement (simple query protocol); each query is
# recorded as (start, end, "ok" or the SQLSTATE of the error). A client whose
# connection is closed opens a new one (counted as a reconnect); after an error a
# client waits ERROR_PAUSE_MS before its next query, after a success THINK_MS.
#
#   outage     OUTAGE_CLIENTS clients loop `SELECT 1`; after BASELINE_SECONDS,
#              `pg_ctl stop -m fast`; OUTAGE_SECONDS later, `pg_ctl start -w`.
#   blackhole  the same, but the pooler reaches PostgreSQL through a TCP forwarder
#              (scenarios/fwd.py) that is switched to "black hole" for
#              OUTAGE_SECONDS: it closes the forwarded connections
#              (BLACKHOLE_EXISTING=close; "pause" freezes them instead) and accepts
#              new ones without ever answering (those still open when the black
#              hole ends go on to PostgreSQL, as when a partition heals). Both
#              poolers get server_connect_timeout = BLACKHOLE_CONNECT_TIMEOUT (2 s).
#   shed       SHED_CLIENTS (500) clients loop `SELECT pg_sleep(0.05)` for
#              SHED_SECONDS against POOL_SIZE (10) server connections; pgweir gets
#              `max_queue = 50` (SHED_PGWEIR_TOML), so it should shed with 53300
#              instead of queueing everyone. Queries in flight at the end may
#              finish within query_wait_timeout + 2 s.
#   flood      FLOOD_CLIENTS (50) clients insert a duplicate primary key in a loop
#              (23505 every time, no pause) for FLOOD_SECONDS while
#              FLOOD_SELECT_CLIENTS (10) clients loop `SELECT 1`; afterwards pgweir's
#              admin console is asked `SHOW BREAKERS` (the state column; "n/a" if
#              the command fails). A unique violation is the application's error,
#              not the server's: a breaker must not open on it.
#   step       (issue 12) STEP_BEFORE (5) clients loop `SELECT pg_sleep(0.01)` for
#              STEP_BEFORE_SECONDS, then STEP_AFTER (60) for STEP_SECONDS, against
#              PostgreSQL directly, pgweir sizing itself (min_pool_size 2,
#              max_pool_size STEP_BUDGET = 64), pgweir with fixed pools of 20 and 40,
#              and PgBouncer's fixed 20 (scenarios/step.py). Its own table: throughput
#              after the step and as a share of direct connections', convergence time
#              (first second after the step at >= 90% of direct's throughput), peak
#              server connections (pgweir, from SHOW POOLS every 250 ms), the p99 wait
#              pgweir reported (self-sizing) and client-side p50/p99 query latency.
#   priority   (issue 11) PRIO_LOW (200) clients tagged low and PRIO_CRITICAL (20)
#              tagged critical (startup parameter `pgweir.priority`; PgBouncer gets the
#              same load untagged) loop PRIO_SQL (`SELECT pg_sleep(0.02)`) back to back
#              for PRIO_SECONDS (20) against PRIO_POOL_SIZE (4) server connections
#              (scenarios/prio.py, asyncpg). Its own table: p50/p99 latency per class,
#              critical p99 as a share of low's (the issue asks <= 10 %), and how many
#              low clients completed at least one query (no starvation).
#   dedup      (issue 11) DEDUP_CLIENTS (100) clients (psycopg 3, simple protocol) send
#              the same read at the same moment, DEDUP_ROUNDS (3) times: a function
#              that advances a sequence, sleeps DEDUP_SLEEP (0.2 s) and returns
#              DEDUP_ROWS rows. pgweir has `dedup = true` and the function
#              in `dedup_functions`; PgBouncer has POOL_SIZE servers. Its own table:
#              server executions per round (the sequence's advance, read straight from
#              PostgreSQL) and how many clients got the full, correct result.
#
# How to read the table (one row per figure, one column per pooler):
#   - "queries sent while down" are those started from the stop command (or the
#     switch to black hole) until the restart; those that got an answer only after
#     the restart count as "ok". "error latency" is how long such a query took to
#     get its error: small = fails fast, close to query_wait_timeout = the pooler
#     queued the query and gave up only at the wait timeout.
#   - "hangs" are queries without any answer within HANG_SECONDS (5 s), counted
#     over the whole run (client-side bound on every query: QUERY_TIMEOUT_SECONDS).
#   - "recovery" is when 95% of the clients have had a success again, in seconds
#     after `pg_ctl start -w` returned (for the black hole: after the forwarder
#     switched back), and after the server first accepted a login (a probe that
#     connects straight to PostgreSQL, or through the forwarder, every 20 ms).
#     Negative = clients succeeded before pg_ctl noticed the server was up. A
#     pooler that waits server_login_retry (15 s by default in both) after a
#     failed connect shows it here. "not within N s" = fewer than 95% recovered
#     within RECOVER_SECONDS.
#   - shed: "53300 latency" is how long a shed client waited for its refusal; "max
#     latency" is the longest any query took (compare with query_wait_timeout).
#   - flood: SELECT 1 latency before and during the flood; the breaker state.
#   - black hole: "server connections the pooler opened into the black hole" are
#     the connections the forwarder held unanswered (in parentheses: those still
#     held when it ended, i.e. attempts the pooler had not given up on).
#   - errors are given as SQLSTATE×count (a FATAL error that closes the client's
#     connection counts under its own SQLSTATE); client-side outcomes are
#     "client-timeout" and "conn:ExceptionName" (no SQLSTATE). Below the table, up
#     to 5 distinct messages per outcome, with counts.
#   - "pooler CPU" is the pooler process's utime + stime over the whole cell,
#     client logins included: a pooler that closes clients on errors pays a SCRAM
#     login for every reconnect.
#
# Usage:
#   benches/scenarios.sh [--quick] [--only outage,blackhole,shed,flood,step,priority,dedup]
#   SCENARIO_LEGACY=1 benches/scenarios.sh      # binary without max_queue & co.
# Output: the markdown table (and the messages) on stdout, progress on stderr.
#
# Knobs (environment):
#   PGWEIR_BIN=target/release/pgweir   pgweir binary (not built here)
#   POOLERS="pgweir pgbouncer"         which poolers to run
#   SCENARIO_LEGACY=1                  leave out the keys the current binary rejects
#                                      (the shed scenario's max_queue)
#   PGWEIR_EXTRA_TOML=                 extra top-level pgweir.toml lines for every
#                                      scenario, e.g. $'breaker_failures = 5\nmode = "..."'
#   PGWEIR_DB_EXTRA_TOML=              extra lines inside [databases.bench]
#   SHED_PGWEIR_TOML="max_queue = 50"  the shed scenario's pgweir lines (top level)
#   PGBOUNCER_EXTRA_INI=               extra [pgbouncer] lines for every scenario
#   POOL_SIZE=10  QUERY_WAIT_TIMEOUT=10 (s, both poolers)
#   SERVER_LOGIN_RETRY=                seconds, both poolers (default: theirs, 15 s)
#   BLACKHOLE_CONNECT_TIMEOUT=2  BLACKHOLE_EXISTING=close|pause
#   OUTAGE_CLIENTS=50  BASELINE_SECONDS=2  OUTAGE_SECONDS=8  RECOVER_SECONDS=25
#   SHED_CLIENTS=500  SHED_SECONDS=5  SHED_SQL="SELECT pg_sleep(0.05)"
#   FLOOD_CLIENTS=50  FLOOD_SELECT_CLIENTS=10  FLOOD_SECONDS=3
#   THINK_MS=10  ERROR_PAUSE_MS=100  HANG_SECONDS=5  QUERY_TIMEOUT_SECONDS=30
#   STEP_BEFORE=5  STEP_AFTER=60  STEP_BEFORE_SECONDS=5  STEP_SECONDS=15  STEP_BUDGET=64
#   PRIO_LOW=200  PRIO_CRITICAL=20  PRIO_SECONDS=20  PRIO_POOL_SIZE=4
#   PRIO_SQL="SELECT pg_sleep(0.02)"
#   DEDUP_CLIENTS=100  DEDUP_ROUNDS=3  DEDUP_SLEEP=0.2  DEDUP_ROWS=100
#   RESULTS_DIR=                       also copy the JSON summaries, every query's
#                                      record (*.records.jsonl: [kind, client, "q" or
#                                      "c", start, end, outcome], seconds from the
#                                      start of load.py), configs and logs there
#   KEEP_WORK=1                        keep the temp dir (the same files)
#   PG_BIN=                            PostgreSQL 15+ bin dir
# --quick: BASELINE_SECONDS=1 OUTAGE_SECONDS=4 RECOVER_SECONDS=20 SHED_SECONDS=3
#          FLOOD_SECONDS=2 (explicit knobs still win).
#
# Runs as root (PostgreSQL and PgBouncer then run as user postgres) or as an
# ordinary user; needs PostgreSQL 15+, pgbouncer (installed with apt-get when
# missing) and the asyncpg venv from tests/drivers/setup.sh python (run here).
# Everything it starts is stopped by PID; everything listens on 127.0.0.1 on
# ports picked at run time. A full run takes about 2 minutes on 2 CPUs (--quick:
# about 1.5); every cell also has a hard deadline (its durations + 1.5-2.5 min).
set -euo pipefail

LIB_NAME=scenarios
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO/benches/scenarios
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; }
QUICK=0
ONLY="outage,blackhole,shed,flood,step,priority,dedup"
while (($#)); do
    case $1 in
        --quick) QUICK=1 ;;
        --only) ONLY=${2:?--only needs a list}; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        -h | --help) usage; exit 0 ;;
        *) usage; die "unknown argument '$1'" ;;
    esac
    shift
done
SCENARIOS=$(tr ',' ' ' <<<"$ONLY")
for s in $SCENARIOS; do has "$s" "outage blackhole shed flood step priority dedup" || die "--only: unknown scenario '$s'"; done
[[ -n ${SCENARIOS// /} ]] || die "--only: no scenario"

if ((QUICK)); then
    : "${BASELINE_SECONDS:=1}" "${OUTAGE_SECONDS:=4}" "${RECOVER_SECONDS:=20}" "${SHED_SECONDS:=3}" "${FLOOD_SECONDS:=2}"
fi
POOLERS=${POOLERS:-"pgweir pgbouncer"}
PGWEIR_BIN=${PGWEIR_BIN:-$REPO/target/release/pgweir}
SCENARIO_LEGACY=${SCENARIO_LEGACY:-0}
PGWEIR_EXTRA_TOML=${PGWEIR_EXTRA_TOML:-}
PGWEIR_DB_EXTRA_TOML=${PGWEIR_DB_EXTRA_TOML:-}
SHED_PGWEIR_TOML=${SHED_PGWEIR_TOML-"max_queue = 50"}
PGBOUNCER_EXTRA_INI=${PGBOUNCER_EXTRA_INI:-}
POOL_SIZE=${POOL_SIZE:-10}
QUERY_WAIT_TIMEOUT=${QUERY_WAIT_TIMEOUT:-10}
SERVER_LOGIN_RETRY=${SERVER_LOGIN_RETRY:-}
BLACKHOLE_CONNECT_TIMEOUT=${BLACKHOLE_CONNECT_TIMEOUT:-2}
BLACKHOLE_EXISTING=${BLACKHOLE_EXISTING:-close}
OUTAGE_CLIENTS=${OUTAGE_CLIENTS:-50}
BASELINE_SECONDS=${BASELINE_SECONDS:-2}
OUTAGE_SECONDS=${OUTAGE_SECONDS:-8}
RECOVER_SECONDS=${RECOVER_SECONDS:-25}
SHED_CLIENTS=${SHED_CLIENTS:-500}
SHED_SECONDS=${SHED_SECONDS:-5}
SHED_SQL=${SHED_SQL:-"SELECT pg_sleep(0.05)"}
FLOOD_CLIENTS=${FLOOD_CLIENTS:-50}
FLOOD_SELECT_CLIENTS=${FLOOD_SELECT_CLIENTS:-10}
FLOOD_SECONDS=${FLOOD_SECONDS:-3}
THINK_MS=${THINK_MS:-10}
ERROR_PAUSE_MS=${ERROR_PAUSE_MS:-100}
HANG_SECONDS=${HANG_SECONDS:-5}
QUERY_TIMEOUT_SECONDS=${QUERY_TIMEOUT_SECONDS:-30}
RESULTS_DIR=${RESULTS_DIR:-}
STEP_BEFORE=${STEP_BEFORE:-5}
STEP_AFTER=${STEP_AFTER:-60}
STEP_BEFORE_SECONDS=${STEP_BEFORE_SECONDS:-5}
STEP_SECONDS=${STEP_SECONDS:-15}
STEP_BUDGET=${STEP_BUDGET:-64}
PRIO_LOW=${PRIO_LOW:-200}
PRIO_CRITICAL=${PRIO_CRITICAL:-20}
PRIO_SECONDS=${PRIO_SECONDS:-20}
PRIO_POOL_SIZE=${PRIO_POOL_SIZE:-4}
PRIO_SQL=${PRIO_SQL:-"SELECT pg_sleep(0.02)"}
DEDUP_CLIENTS=${DEDUP_CLIENTS:-100}
DEDUP_ROUNDS=${DEDUP_ROUNDS:-3}
DEDUP_SLEEP=${DEDUP_SLEEP:-0.2}
DEDUP_ROWS=${DEDUP_ROWS:-100}

for knob in POOL_SIZE QUERY_WAIT_TIMEOUT BLACKHOLE_CONNECT_TIMEOUT OUTAGE_CLIENTS SHED_CLIENTS FLOOD_CLIENTS \
    FLOOD_SELECT_CLIENTS STEP_BEFORE STEP_AFTER STEP_BEFORE_SECONDS STEP_SECONDS STEP_BUDGET PRIO_LOW PRIO_CRITICAL \
    PRIO_SECONDS PRIO_POOL_SIZE DEDUP_CLIENTS DEDUP_ROUNDS DEDUP_ROWS; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || die "$knob must be a positive whole number, not '${!knob}'"
done
for knob in BASELINE_SECONDS OUTAGE_SECONDS RECOVER_SECONDS SHED_SECONDS FLOOD_SECONDS THINK_MS ERROR_PAUSE_MS \
    HANG_SECONDS QUERY_TIMEOUT_SECONDS DEDUP_SLEEP; do
    [[ ${!knob} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$knob must be a number, not '${!knob}'"
done
[[ -z $SERVER_LOGIN_RETRY || $SERVER_LOGIN_RETRY =~ ^[0-9]+$ ]] || die "SERVER_LOGIN_RETRY must be whole seconds"
has "$BLACKHOLE_EXISTING" "close pause" || die "BLACKHOLE_EXISTING must be close or pause"
for p in $POOLERS; do has "$p" "pgweir pgbouncer" || die "POOLERS: unknown pooler '$p'"; done
[[ $SCENARIO_LEGACY == 1 ]] && SHED_PGWEIR_TOML=""

# --- tools -----------------------------------------------------------------
lib_find_tools
if has pgweir "$POOLERS"; then
    [[ -x $PGWEIR_BIN ]] || die "pgweir binary '$PGWEIR_BIN' not found: cargo build --release -p pgweir, or set PGWEIR_BIN"
fi
has pgbouncer "$POOLERS" && lib_install_pgbouncer
log "setting up the asyncpg venv (tests/drivers/setup.sh python)"
"$REPO/tests/drivers/setup.sh" python >&2
PY=$REPO/target/drivers/venv/bin/python
"$PY" -c 'import asyncpg' 2>/dev/null || die "$PY has no asyncpg"
# 500 clients need sockets in the load generator and in the pooler.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

MAX_CONN=200
lib_make_workdir
mkdir -p "$WORK/results"
lib_start_postgres
log "PostgreSQL on port $PG_PORT"
psql_super -d postgres -c "SET password_encryption = 'scram-sha-256'" -c "CREATE ROLE bench LOGIN PASSWORD 'bench'"
psql_super -d postgres -c "CREATE DATABASE bench OWNER bench"
psql_super -d bench -c "CREATE TABLE dup (id int PRIMARY KEY)" -c "INSERT INTO dup VALUES (1)" -c "ALTER TABLE dup OWNER TO bench"
# The dedup scenario's read: every execution advances the sequence, so its advance over
# a round is the number of times the server ran the read.
psql_super -d bench -c "CREATE SEQUENCE dedup_runs" -c "ALTER SEQUENCE dedup_runs OWNER TO bench" \
    -c "CREATE FUNCTION dedup_read() RETURNS TABLE (v int, g int) LANGUAGE plpgsql AS \$\$BEGIN PERFORM nextval('dedup_runs'); PERFORM pg_sleep($DEDUP_SLEEP); RETURN QUERY SELECT 42, s FROM generate_series(1, $DEDUP_ROWS) s; END\$\$" \
    -c "ALTER FUNCTION dedup_read() OWNER TO bench"
printf -v PG_STOP_CMD '%q ' "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop
printf -v PG_START_CMD '%q ' "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 start

ensure_pg() {
    pg_running && return 0
    log "PostgreSQL is not up after the scenario: starting it"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 start >/dev/null 2>&1 ||
        die "PostgreSQL did not start again: $(tail -n 5 "$WORK/postgres.log")"
}

# --- the black-hole forwarder ------------------------------------------------
FWD_PORT= FWD_CTL=
if has blackhole "$SCENARIOS"; then
    free_port FWD_PORT
    free_port FWD_CTL
    "$PY" "$HERE/fwd.py" serve --listen "$FWD_PORT" --upstream "$PG_PORT" --control "$FWD_CTL" \
        --existing "$BLACKHOLE_EXISTING" >"$WORK/fwd.log" 2>&1 &
    FWD_PID=$!
    KILL_PIDS+=("$FWD_PID")
    wait_port "$FWD_CTL" "$FWD_PID" 10 || die "the forwarder did not start: $(cat "$WORK/fwd.log")"
fi
fwd_cmd() { printf '%q ' "$PY" "$HERE/fwd.py" ctl "$FWD_CTL" "$1"; }

# --- poolers -----------------------------------------------------------------
# start_pooler POOLER SCENARIO UPSTREAM_PORT CONNECT_TIMEOUT EXTRA_PGWEIR_LINES:
# sets POOLER_PID, POOLER_PORT, POOLER_LOG; returns 1 (START_ERROR set) if it did not start.
start_pooler() {
    local pooler=$1 scen=$2 up=$3 cto=$4 extra=$5 conf
    free_port POOLER_PORT
    POOLER_LOG=$WORK/$scen-$pooler.log
    START_ERROR=
    if [[ $pooler == pgweir ]]; then
        conf=$WORK/$scen-pgweir.toml
        {
            echo "listen = \"127.0.0.1:$POOLER_PORT\""
            echo 'http_listen = ""'
            echo 'pool_mode = "transaction"'
            echo "default_pool_size = $POOL_SIZE"
            echo 'auth_type = "scram-sha-256"'
            echo 'admin_users = ["bench"]'
            echo "server_connect_timeout = \"${cto}s\""
            [[ -n $SERVER_LOGIN_RETRY ]] && echo "server_login_retry = \"${SERVER_LOGIN_RETRY}s\""
            echo "query_wait_timeout = \"${QUERY_WAIT_TIMEOUT}s\""
            echo 'log_connections = false'
            echo 'log_disconnections = false'
            echo 'stats_period = "0"'
            [[ -n $PGWEIR_EXTRA_TOML ]] && printf '%s\n' "$PGWEIR_EXTRA_TOML"
            [[ -n $extra ]] && printf '%s\n' "$extra"
            echo
            echo '[databases.bench]'
            echo 'host = "127.0.0.1"'
            echo "port = $up"
            [[ -n $PGWEIR_DB_EXTRA_TOML ]] && printf '%s\n' "$PGWEIR_DB_EXTRA_TOML"
            echo
            echo '[users.bench]'
            echo 'password = "bench"'
        } >"$conf"
        # Our PGWEIR_* knobs are not pgweir's: keep its environment overrides out.
        local unset_env=() v
        for v in $(compgen -e | grep '^PGWEIR_' || true); do unset_env+=(-u "$v"); done
        env "${unset_env[@]}" RUST_LOG="${RUST_LOG:-warn}" "$PGWEIR_BIN" --config "$conf" >"$POOLER_LOG" 2>&1 &
        POOLER_PID=$!
    else
        conf=$WORK/$scen-pgbouncer.ini
        printf '"bench" "bench"\n' >"$WORK/userlist.txt"
        {
            echo '[databases]'
            echo "bench = host=127.0.0.1 port=$up dbname=bench"
            echo
            echo '[pgbouncer]'
            echo 'listen_addr = 127.0.0.1'
            echo "listen_port = $POOLER_PORT"
            echo 'listen_backlog = 1024'
            echo 'unix_socket_dir ='
            echo 'auth_type = scram-sha-256'
            echo "auth_file = $WORK/userlist.txt"
            echo 'admin_users = bench'
            echo 'pool_mode = transaction'
            echo "default_pool_size = $POOL_SIZE"
            echo 'max_client_conn = 2000'
            echo "server_connect_timeout = $cto"
            [[ -n $SERVER_LOGIN_RETRY ]] && echo "server_login_retry = $SERVER_LOGIN_RETRY"
            echo "query_wait_timeout = $QUERY_WAIT_TIMEOUT"
            echo 'ignore_startup_parameters = extra_float_digits'
            echo "logfile = $POOLER_LOG"
            echo 'log_connections = 0'
            echo 'log_disconnections = 0'
            echo 'stats_period = 3600'
            [[ -n $PGBOUNCER_EXTRA_INI ]] && printf '%s\n' "$PGBOUNCER_EXTRA_INI"
        } >"$conf"
        ((IS_ROOT)) && chown postgres: "$conf" "$WORK/userlist.txt"
        # In the foreground (no -d): setpriv execs pgbouncer, so $! is its PID.
        "${AS_PG[@]}" pgbouncer "$conf" >"$WORK/$scen-pgbouncer.out" 2>&1 &
        POOLER_PID=$!
    fi
    KILL_PIDS+=("$POOLER_PID")
    if ! wait_port "$POOLER_PORT" "$POOLER_PID" 30; then
        START_ERROR=$(cat "$POOLER_LOG" "$WORK/$scen-pgbouncer.out" 2>/dev/null | tail -n 3 | tr '\n' ' ' | cut -c1-300)
        stop_pid "$POOLER_PID"
        return 1
    fi
}
proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

# --- scenarios ---------------------------------------------------------------
# run_cell SCENARIO POOLER: one fresh pooler, one load.py run, one JSON file.
run_cell() {
    local scen=$1 pooler=$2 up=$PG_PORT cto=15 extra="" out=$WORK/results/$scen-$pooler.json
    local args=() deadline t0 t1 rc=0
    case $scen in
        outage)
            args=(outage --clients "$OUTAGE_CLIENTS" --baseline-s "$BASELINE_SECONDS" --down-s "$OUTAGE_SECONDS"
                --recover-s "$RECOVER_SECONDS" --down-cmd "$PG_STOP_CMD" --up-cmd "$PG_START_CMD"
                --probe-port "$PG_PORT")
            deadline=$(awk -v a="$BASELINE_SECONDS" -v b="$OUTAGE_SECONDS" -v c="$RECOVER_SECONDS" 'BEGIN { print int(a + b + c + 150) }')
            ;;
        blackhole)
            up=$FWD_PORT
            cto=$BLACKHOLE_CONNECT_TIMEOUT
            args=(blackhole --clients "$OUTAGE_CLIENTS" --baseline-s "$BASELINE_SECONDS" --down-s "$OUTAGE_SECONDS"
                --recover-s "$RECOVER_SECONDS" --down-cmd "$(fwd_cmd blackhole)" --up-cmd "$(fwd_cmd forward)"
                --probe-port "$FWD_PORT" --stats-cmd "$(fwd_cmd stats)")
            deadline=$(awk -v a="$BASELINE_SECONDS" -v b="$OUTAGE_SECONDS" -v c="$RECOVER_SECONDS" 'BEGIN { print int(a + b + c + 90) }')
            ;;
        shed)
            [[ $pooler == pgweir ]] && extra=$SHED_PGWEIR_TOML
            args=(shed --clients "$SHED_CLIENTS" --sql "$SHED_SQL" --run-s "$SHED_SECONDS"
                --drain-s "$((QUERY_WAIT_TIMEOUT + 2))")
            deadline=$(awk -v a="$SHED_SECONDS" -v q="$QUERY_WAIT_TIMEOUT" 'BEGIN { print int(a + q + 120) }')
            ;;
        flood)
            args=(flood --clients "$FLOOD_SELECT_CLIENTS" --flood-clients "$FLOOD_CLIENTS" --run-s "$FLOOD_SECONDS"
                --baseline-s 1)
            deadline=$(awk -v a="$FLOOD_SECONDS" 'BEGIN { print int(a + 90) }')
            ;;
    esac
    if [[ $scen == blackhole ]]; then
        "$PY" "$HERE/fwd.py" ctl "$FWD_CTL" forward >/dev/null || die "the forwarder does not answer"
    fi
    if ! start_pooler "$pooler" "$scen" "$up" "$cto" "$extra"; then
        log "!! $pooler did not start for $scen: $START_ERROR"
        "$PY" -c 'import json, sys; json.dump({"error": "did not start: " + sys.argv[1]}, sys.stdout)' \
            "$START_ERROR" >"$out"
        return 0
    fi
    t0=$(proc_ticks "$POOLER_PID")
    local wall0=$SECONDS
    timeout -k 5 "$deadline" "$PY" "$HERE/load.py" "${args[@]}" --label "$pooler" --port "$POOLER_PORT" \
        --think-ms "$THINK_MS" --error-pause-ms "$ERROR_PAUSE_MS" --hang-s "$HANG_SECONDS" \
        --query-timeout-s "$QUERY_TIMEOUT_SECONDS" --deadline-s "$((deadline - 10))" \
        --records "$WORK/results/$scen-$pooler.records.jsonl" \
        >"$out.tmp" 2>"$WORK/results/$scen-$pooler.stderr" &
    # In the background so that a signal to this script is handled at once (the
    # EXIT trap then stops load.py too, by PID).
    local lpid=$!
    KILL_PIDS+=("$lpid")
    wait "$lpid" || rc=$?
    stop_pid "$lpid"
    t1=$(proc_ticks "$POOLER_PID")
    local alive=1
    kill -0 "$POOLER_PID" 2>/dev/null || alive=0
    # pgweir's breakers, while the pooler still runs (flood: the figure; else for the log).
    local breakers=$WORK/results/$scen-$pooler.breakers
    if [[ $pooler == pgweir && $scen == flood ]]; then
        PGPASSWORD=bench timeout 10 "$PG_BIN/psql" -X --csv -h 127.0.0.1 -p "$POOLER_PORT" -U bench -d pgweir \
            -c 'SHOW BREAKERS' >"$breakers" 2>"$breakers.err" || : >"$breakers"
    fi
    stop_pid "$POOLER_PID"
    "$PY" - "$out.tmp" "$out" "$rc" "$((t1 - t0))" "$CLK_TCK" "$alive" "$((SECONDS - wall0))" \
        "$WORK/results/$scen-$pooler.stderr" <<'EOF'
import json, sys
src, dst, rc, ticks, hz, alive, wall, errf = sys.argv[1:]
try:
    res = json.load(open(src))
except Exception:
    tail = open(errf, errors="replace").read()[-300:]
    res = {"error": f"load.py exited {rc} without a summary: {tail}"}
res["pooler_cpu_s"] = round(int(ticks) / int(hz), 2)
res["pooler_alive_after"] = alive == "1"
res["wall_s"] = int(wall)
json.dump(res, open(dst, "w"), indent=1)
EOF
    rm -f "$out.tmp"
    [[ $scen == outage ]] && ensure_pg
    log "   done in $((SECONDS - wall0)) s (load.py exit $rc)"
}

# --- the step load (issue 12) ---------------------------------------------------
# run_step CELL: one fresh pooler (or none: direct), one step.py run, one JSON file.
run_step() {
    local cell=$1 port=$PG_PORT admin=0 out=$WORK/results/step-$cell.json
    case $cell in
        direct) ;;
        pgweir-auto)
            POOL_SIZE=20 start_pooler pgweir "step-$cell" "$PG_PORT" 15 \
                $'min_pool_size = 2\nmax_pool_size = '"$STEP_BUDGET" || { log "!! $cell: $START_ERROR"; return 0; }
            port=$POOLER_PORT admin=$POOLER_PORT ;;
        pgweir-20 | pgweir-40)
            POOL_SIZE=${cell#pgweir-} start_pooler pgweir "step-$cell" "$PG_PORT" 15 "" ||
                { log "!! $cell: $START_ERROR"; return 0; }
            port=$POOLER_PORT admin=$POOLER_PORT ;;
        pgbouncer-20)
            POOL_SIZE=20 start_pooler pgbouncer "step-$cell" "$PG_PORT" 15 "" ||
                { log "!! $cell: $START_ERROR"; return 0; }
            port=$POOLER_PORT ;;
    esac
    timeout -k 5 "$((STEP_BEFORE_SECONDS + STEP_SECONDS + 120))" "$PY" "$HERE/step.py" --port "$port" \
        --admin-port "$admin" --before "$STEP_BEFORE" --after "$STEP_AFTER" \
        --before-s "$STEP_BEFORE_SECONDS" --run-s "$STEP_SECONDS" >"$out" 2>"$WORK/results/step-$cell.stderr" ||
        log "!! step.py failed for $cell: $(tail -n 3 "$WORK/results/step-$cell.stderr")"
    [[ $cell == direct ]] || stop_pid "$POOLER_PID"
}

# step_report: the step load's table (markdown) from the cells' JSON files.
step_report() {
    "$PY" "$HERE/step_report.py" "$WORK/results" "$STEP_BUDGET" "$STEP_BEFORE" "$STEP_AFTER"
}

# --- priority and dedup (issue 11) ---------------------------------------------
# run_prio SCENARIO POOLER: one fresh pooler, one prio.py run, one JSON file.
run_prio() {
    local scen=$1 pooler=$2 out=$WORK/results/$1-$2.json args=() extra="" size=$POOL_SIZE t0 t1 rc=0
    case $scen in
        priority)
            size=$PRIO_POOL_SIZE
            args=(priority --sql "$PRIO_SQL" --low "$PRIO_LOW" --critical "$PRIO_CRITICAL" --run-s "$PRIO_SECONDS"
                --drain-s "$((QUERY_WAIT_TIMEOUT + 5))")
            [[ $pooler == pgweir ]] && args+=(--tag)
            ;;
        dedup)
            [[ $pooler == pgweir ]] && extra=$'dedup = true\ndedup_functions = ["dedup_read"]'
            args=(dedup --sql "SELECT v, g FROM dedup_read()"
                --expect "$("$PY" -c "import json; print(json.dumps([[42, g] for g in range(1, $DEDUP_ROWS + 1)]))")"
                --clients "$DEDUP_CLIENTS" --rounds "$DEDUP_ROUNDS" --pg-port "$PG_PORT")
            ;;
    esac
    POOL_SIZE=$size start_pooler "$pooler" "$scen" "$PG_PORT" 15 "$extra" || {
        log "!! $pooler did not start for $scen: $START_ERROR"
        "$PY" -c 'import json, sys; json.dump({"error": "did not start: " + sys.argv[1]}, sys.stdout)' \
            "$START_ERROR" >"$out"
        return 0
    }
    t0=$(proc_ticks "$POOLER_PID")
    timeout -k 5 "$((PRIO_SECONDS + QUERY_WAIT_TIMEOUT + 180))" "$PY" "$HERE/prio.py" "${args[@]}" \
        --port "$POOLER_PORT" >"$out.tmp" 2>"$WORK/results/$scen-$pooler.stderr" || rc=$?
    t1=$(proc_ticks "$POOLER_PID")
    stop_pid "$POOLER_PID"
    "$PY" - "$out.tmp" "$out" "$rc" "$((t1 - t0))" "$CLK_TCK" "$WORK/results/$scen-$pooler.stderr" <<'EOF'
import json, sys
src, dst, rc, ticks, hz, errf = sys.argv[1:]
try:
    res = json.load(open(src))
except Exception:
    tail = open(errf, errors="replace").read()[-300:]
    res = {"error": f"prio.py exited {rc} without a summary: {tail}"}
res["pooler_cpu_s"] = round(int(ticks) / int(hz), 2)
json.dump(res, open(dst, "w"), indent=1)
EOF
    rm -f "$out.tmp"
    log "   done (prio.py exit $rc)"
}

START=$SECONDS
for scen in $SCENARIOS; do
    has "$scen" "step priority dedup" && continue
    for pooler in $POOLERS; do
        log "== $scen: $pooler"
        run_cell "$scen" "$pooler"
    done
done
if has step "$SCENARIOS"; then
    for cell in direct pgweir-auto pgweir-20 pgweir-40 pgbouncer-20; do
        [[ $cell == pgbouncer-20 ]] && ! has pgbouncer "$POOLERS" && continue
        [[ $cell == pgweir-* ]] && ! has pgweir "$POOLERS" && continue
        log "== step: $cell"
        run_step "$cell"
    done
fi
for scen in priority dedup; do
    has "$scen" "$SCENARIOS" || continue
    for pooler in $POOLERS; do
        log "== $scen: $pooler"
        run_prio "$scen" "$pooler"
    done
done
log "all scenarios done in $((SECONDS - START)) s"

if [[ -n $RESULTS_DIR ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$WORK"/results/* "$WORK"/*.log "$WORK"/*.toml "$WORK"/*.ini "$RESULTS_DIR"/ 2>/dev/null || true
fi

# --- report ------------------------------------------------------------------
if has step "$SCENARIOS"; then
    echo "Step load, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $PG_VERSION; $(command -v pgbouncer >/dev/null && pgbouncer --version 2>/dev/null | head -n 1); $("$PGWEIR_BIN" --version 2>/dev/null | head -n 1) (repo HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null))"
    step_report
fi
if has priority "$SCENARIOS" || has dedup "$SCENARIOS"; then
    echo "Priority and dedup, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); $PG_VERSION; $(command -v pgbouncer >/dev/null && pgbouncer --version 2>/dev/null | head -n 1); $("$PGWEIR_BIN" --version 2>/dev/null | head -n 1) (repo HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null))"
    echo
    "$PY" "$HERE/prio_report.py" "$WORK/results" "$POOLERS" "$SCENARIOS" \
        "$PRIO_LOW low + $PRIO_CRITICAL critical clients × \`$PRIO_SQL\` for $PRIO_SECONDS s, pool of $PRIO_POOL_SIZE, transaction mode (PgBouncer: the same clients, untagged)" \
        "$DEDUP_CLIENTS clients × the same $DEDUP_SLEEP s read ($DEDUP_ROWS rows) at once, $DEDUP_ROUNDS rounds; pgweir \`dedup = true\`, pool of $POOL_SIZE"
fi
SCENARIOS=$(tr ' ' '\n' <<<"$SCENARIOS" | grep -vxE 'step|priority|dedup' | tr '\n' ' ' || true)
[[ -n ${SCENARIOS// /} ]] || exit 0
pgweir_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
pgweir_ver=$("$PGWEIR_BIN" --version 2>/dev/null | head -n 1 || echo "pgweir ?")
bouncer_version=$(command -v pgbouncer >/dev/null && pgbouncer --version 2>/dev/null | head -n 1 || echo "-")
"$PY" "$HERE/report.py" --results "$WORK/results" --poolers "$POOLERS" --scenarios "$SCENARIOS" \
    --header "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs; $PG_VERSION; $bouncer_version; $pgweir_ver (repo HEAD $pgweir_rev; binary $PGWEIR_BIN)$([[ $SCENARIO_LEGACY == 1 ]] && echo '; SCENARIO_LEGACY=1')" \
    --settings "transaction mode, pool size $POOL_SIZE, query_wait_timeout ${QUERY_WAIT_TIMEOUT} s, server_login_retry ${SERVER_LOGIN_RETRY:-default (15)} s, server_connect_timeout 15 s (black hole: ${BLACKHOLE_CONNECT_TIMEOUT} s); clients pause ${ERROR_PAUSE_MS} ms after an error, ${THINK_MS} ms after a success; hang = no answer within ${HANG_SECONDS} s" \
    --pgweir-shed-toml "$SHED_PGWEIR_TOML" --pgweir-extra-toml "$PGWEIR_EXTRA_TOML" \
    --outage-s "$OUTAGE_SECONDS" --shed "$SHED_CLIENTS clients × \`$SHED_SQL\` for $SHED_SECONDS s" \
    --flood "$FLOOD_CLIENTS clients × duplicate key, $FLOOD_SELECT_CLIENTS clients × SELECT 1, $FLOOD_SECONDS s" \
    --outage-clients "$OUTAGE_CLIENTS" --blackhole-existing "$BLACKHOLE_EXISTING" --qwt "$QUERY_WAIT_TIMEOUT"
