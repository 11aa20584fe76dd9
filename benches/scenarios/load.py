#!/usr/bin/env python3
"""Load generator for benches/scenarios.sh (asyncpg, one process, one event loop).

    load.py SCENARIO --port POOLER_PORT [options]     SCENARIO: outage|blackhole|shed|flood

Every client has its own connection to the pooler and loops over one statement,
sent with the simple query protocol (conn.execute without arguments), which both
PgBouncer and pgweir pass through in transaction mode. Every query is recorded in
memory as (start, end, outcome), outcome being "ok", the SQLSTATE of the error, or
a client-side kind ("client-timeout", "conn:ExceptionName"); connection attempts
are recorded the same way. A client whose connection was closed opens a new one
(a reconnect) before its next query. After an error a client pauses
--error-pause-ms before its next query (as an application's retry would), after a
success --think-ms.

outage / blackhole: --clients connect, --baseline-s of normal load, then
--down-cmd (pg_ctl stop -m fast, or the forwarder switched to black hole), --down-s,
then --up-cmd (pg_ctl start -w, or back to forward) while a probe connects straight
to --probe-port every 20 ms to see when the server accepts logins again; the run
ends once every client has had a success after the restart, or --recover-s after
--up-cmd returned.

shed: --clients connect first (all of them), then loop for --run-s; the queries in
flight at the end get up to --drain-s to finish.

flood: --clients run the statement (SELECT 1) alone for --baseline-s, then
--flood-clients also loop --flood-sql (a duplicate key, 23505 every time, no pause)
for --run-s.

Bounds: every query is given up to --query-timeout-s (then "client-timeout" and
its connection is dropped), every connect --connect-timeout-s, each client keeps
at most --max-records records, and the whole run stops at its deadline; queries
still unanswered then are recorded as "pending". Prints one JSON summary on stdout.
"""
import argparse
import asyncio
import json
import math
import os
import re
import sys
import time

import asyncpg

now = time.monotonic


def pct(values, p):
    """Nearest-rank percentile of a list (None when empty)."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))
    return v[k]


def ms(x):
    return None if x is None else round(x * 1000.0, 2)


def outcome_of(exc):
    # asyncpg reports an ErrorResponse followed by the connection closing (a FATAL
    # error) as 08003 "connection was closed in the middle of operation", the
    # server's (here: the pooler's) error being its __cause__: report that one.
    cause = exc.__cause__
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError) and getattr(cause, "sqlstate", None):
        return cause.sqlstate
    state = getattr(exc, "sqlstate", None)
    if state:
        return state
    return "conn:" + type(exc).__name__


class Run:
    def __init__(self, args):
        self.args = args
        self.stop = asyncio.Event()
        self.messages = {}  # outcome -> {message: count}
        self.clients = []  # every Client, for --records

    def note(self, outcome, exc):
        """Counts each outcome's messages: the first 5 distinct ones, the rest as "(other)"."""
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        text = text.replace("connection was closed in the middle of operation: ", "")
        text = re.sub(r"\b[0-9]+\.[0-9]+(?=m?s\b)", "N.N", text)  # "next attempt in 14.9487s"
        if isinstance(exc, asyncpg.ConnectionDoesNotExistError) and getattr(exc.__cause__, "severity", None):
            text = f"{exc.__cause__.severity}, then closed: {text}"
        seen = self.messages.setdefault(outcome, {})
        if text not in seen and len(seen) >= 5:
            text = "(other)"
        seen[text] = seen.get(text, 0) + 1

    async def nap(self, seconds):
        """Sleeps, but wakes up when the run stops."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass


class Client:
    def __init__(self, run, idx, sql, kind, pause_ok, pause_err):
        self.run = run
        self.idx = idx
        self.sql = sql
        self.kind = kind
        self.pause_ok = pause_ok
        self.pause_err = pause_err
        self.conn = None
        self.queries = []  # (start, end, outcome); end None = pending
        self.connects = []  # (start, end, outcome)
        self.pending = None
        self.lost = 0  # connections found closed by the other side
        run.clients.append(self)

    def rec(self, lst, start, end, outcome):
        if len(lst) < self.run.args.max_records:
            lst.append((start, end, outcome))

    async def connect(self):
        a = self.run.args
        t0 = now()
        try:
            self.conn = await asyncpg.connect(
                host=a.host,
                port=a.port,
                user=a.user,
                password=a.password,
                database=a.database,
                ssl=False,
                statement_cache_size=0,
                timeout=a.connect_timeout_s,
            )
            self.rec(self.connects, t0, now(), "ok")
            return True
        except Exception as e:  # noqa: BLE001 - every failure is a result here
            out = "client-timeout" if isinstance(e, asyncio.TimeoutError) else outcome_of(e)
            self.run.note("connect " + out, e)
            self.rec(self.connects, t0, now(), out)
            self.conn = None
            return False

    def drop_conn(self):
        if self.conn is not None:
            try:
                self.conn.terminate()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None

    def stopped(self):
        return self.run.stop.is_set()

    async def loop(self):
        a = self.run.args
        try:
            while not self.stopped():
                if self.conn is None or self.conn.is_closed():
                    if self.conn is not None:
                        self.lost += 1
                        self.drop_conn()
                    if not await self.connect():
                        await self.run.nap(a.connect_retry_ms / 1000.0)
                        continue
                t0 = now()
                self.pending = t0
                try:
                    await asyncio.wait_for(self.conn.execute(self.sql), a.query_timeout_s)
                    out = "ok"
                except asyncio.TimeoutError as e:
                    out = "client-timeout"
                    self.run.note(out, e)
                    self.drop_conn()
                except Exception as e:  # noqa: BLE001
                    out = outcome_of(e)
                    self.run.note(out, e)
                    if out.startswith("conn:"):
                        # Not an error from the other side (asyncpg's own state, a
                        # socket error): the connection may be unusable, start afresh.
                        self.drop_conn()
                self.pending = None
                self.rec(self.queries, t0, now(), out)
                if out == "ok":
                    if self.pause_ok > 0:
                        await self.run.nap(self.pause_ok)
                    else:
                        await asyncio.sleep(0)
                else:
                    if self.pause_err > 0:
                        await self.run.nap(self.pause_err)
                    else:
                        await asyncio.sleep(0)
        except asyncio.CancelledError:
            if self.pending is not None:
                self.rec(self.queries, self.pending, None, "pending")
                self.pending = None
            raise


async def connect_all(run, clients, limit=50):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            for _ in range(3):
                if await c.connect():
                    return True
                await asyncio.sleep(0.2)
            return False

    ok = await asyncio.gather(*(one(c) for c in clients))
    return sum(ok)


async def finish(run, tasks, drain_s):
    """Stops the clients: lets queries in flight finish for drain_s, then cancels."""
    run.stop.set()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=drain_s)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def close_all(clients):
    for c in clients:
        c.drop_conn()


async def run_cmd(cmd):
    """Runs a shell command; returns (start, end, exit status, output tail). A command
    that prints "at=T" (T: time.monotonic(), comparable across processes on Linux)
    gives the moment it acted: that is then both start and end (fwd.py ctl does)."""
    t0 = now()
    p = await asyncio.create_subprocess_shell(
        cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await p.communicate()
    t1 = now()
    text = out.decode(errors="replace")
    m = re.search(r"\bat=([0-9]+(?:\.[0-9]+)?)", text)
    if m and t0 <= float(m.group(1)) <= t1:
        t0 = t1 = float(m.group(1))
    return t0, t1, p.returncode, text[-400:]


async def probe(run, port, result):
    """Connects straight to the server every 20 ms until a login succeeds."""
    a = run.args
    while not run.stop.is_set():
        try:
            c = await asyncpg.connect(
                host=a.host, port=port, user=a.user, password=a.password, database=a.database, ssl=False, timeout=1.0
            )
            result["ready"] = now()
            await c.close()
            return
        except Exception:  # noqa: BLE001
            result["attempts"] = result.get("attempts", 0) + 1
        await asyncio.sleep(0.02)


def tally(queries):
    out = {}
    for _, _, o in queries:
        if o != "ok":
            out[o] = out.get(o, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def latency_summary(qs):
    lat = [e - s for s, e, _ in qs if e is not None]
    return {"n": len(lat), "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)), "max_ms": ms(max(lat) if lat else None)}


def conn_summary(clients):
    attempts = [r for c in clients for r in c.connects]
    ok = sum(1 for r in attempts if r[2] == "ok")
    return {
        "initial": len(clients),
        "reconnects": max(0, ok - len(clients)),
        "failed_connects": sum(1 for r in attempts if r[2] != "ok"),
        "failed_connects_by_outcome": tally(attempts),
        "clients_dropped": sum(c.lost for c in clients),
        "max_records_hit": any(len(c.queries) >= c.run.args.max_records for c in clients),
    }


async def outage(run):
    a = run.args
    clients = [Client(run, i, a.sql, "select", a.think_ms / 1000.0, a.error_pause_ms / 1000.0) for i in range(a.clients)]
    t_begin = now()
    connected = await connect_all(run, clients)
    if connected < len(clients):
        close_all(clients)
        return {"error": f"only {connected} of {len(clients)} clients connected before the outage", "messages": run.messages}
    tasks = [asyncio.create_task(c.loop()) for c in clients]
    await asyncio.sleep(a.baseline_s)
    d0, d1, d_rc, d_out = await run_cmd(a.down_cmd)
    await asyncio.sleep(a.down_s)
    probe_res = {}
    probe_task = asyncio.create_task(probe(run, a.probe_port, probe_res))
    u0, u1, u_rc, u_out = await run_cmd(a.up_cmd)
    # Until every client has had a success after the restart, or --recover-s.
    deadline = u1 + a.recover_s
    while now() < deadline:
        if all(any(o == "ok" and e is not None and e > u0 for _, e, o in c.queries) for c in clients):
            break
        await asyncio.sleep(0.05)
    t_end = now()
    await finish(run, tasks + [probe_task], a.drain_s)
    t_fin = now()
    close_all(clients)
    t_pg = probe_res.get("ready")

    allq = [q for c in clients for q in c.queries]
    # Queries sent while the server was down (from the stop command on, before the start).
    during = [q for q in allq if d0 <= q[0] < u0]
    errs = [q for q in during if q[2] not in ("ok", "pending") and q[1] is not None]
    err_lat = [e - s for s, e, _ in errs]
    hang = a.hang_s
    hangs = [q for q in allq if (q[1] is None and t_fin - q[0] > hang) or (q[1] is not None and q[1] - q[0] > hang)]
    hangs_during = [q for q in hangs if d0 <= q[0] < u1]
    # In flight when the stop began.
    inflight = [q for q in allq if q[0] < d0 and (q[1] is None or q[1] > d0)]
    first_ok = []
    for c in clients:
        t = min((e for s, e, o in c.queries if o == "ok" and e is not None and e > u0), default=None)
        if t is not None:
            first_ok.append(t)
    first_ok.sort()
    need = math.ceil(0.95 * len(clients))
    t95 = first_ok[need - 1] if len(first_ok) >= need else None
    first_err = min((q[1] for q in allq if q[0] >= d0 and q[2] not in ("ok", "pending") and q[1] is not None), default=None)
    base = [q for q in allq if q[0] < d0 and q[2] == "ok"]
    return {
        "clients": len(clients),
        "timeline_s": {
            "down_cmd_start": round(d0 - t_begin, 3),
            "down_cmd_took": round(d1 - d0, 3),
            "up_cmd_start": round(u0 - t_begin, 3),
            "up_cmd_took": round(u1 - u0, 3),
            "server_ready_after_up_start": None if t_pg is None else round(t_pg - u0, 3),
            "end": round(t_end - t_begin, 3),
        },
        "down_cmd": {"rc": d_rc, "out": d_out.strip()[-200:]},
        "up_cmd": {"rc": u_rc, "out": u_out.strip()[-200:]},
        "probe_attempts": probe_res.get("attempts", 0),
        "baseline": latency_summary(base),
        "inflight_at_stop": {"n": len(inflight), "outcomes": tally(inflight), "ok": sum(1 for q in inflight if q[2] == "ok")},
        "during_down": {
            "queries": len(during),
            "errors": len(errs),
            "ok": sum(1 for q in during if q[2] == "ok"),
            "error_p50_ms": ms(pct(err_lat, 50)),
            "error_p99_ms": ms(pct(err_lat, 99)),
            "errors_by_outcome": tally(errs),
            "first_error_after_stop_ms": None if first_err is None else ms(first_err - d0),
        },
        "hangs": len(hangs),
        "hangs_started_while_down": len(hangs_during),
        "hang_threshold_s": hang,
        "recovery": {
            "recovered": len(first_ok),
            "need": need,
            "t95_after_up_returned_s": None if t95 is None else round(t95 - u1, 3),
            "t95_after_server_ready_s": None if (t95 is None or t_pg is None) else round(t95 - t_pg, 3),
            "first_ok_after_up_returned_s": None if not first_ok else round(first_ok[0] - u1, 3),
            "recover_window_s": a.recover_s,
        },
        "errors_by_outcome": tally(allq),
        "connections": conn_summary(clients),
        "messages": run.messages,
    }


async def shed(run):
    a = run.args
    clients = [Client(run, i, a.sql, "shed", a.think_ms / 1000.0, a.error_pause_ms / 1000.0) for i in range(a.clients)]
    connected = await connect_all(run, clients)
    if connected < len(clients):
        close_all(clients)
        return {"error": f"only {connected} of {len(clients)} clients connected", "messages": run.messages}
    t0 = now()
    tasks = [asyncio.create_task(c.loop()) for c in clients]
    await asyncio.sleep(a.run_s)
    t_stop = now()
    await finish(run, tasks, a.drain_s)
    t_end = now()
    close_all(clients)
    allq = [q for c in clients for q in c.queries]
    ok = [q for q in allq if q[2] == "ok"]
    shed_q = [q for q in allq if q[2] == "53300" and q[1] is not None]
    answered = [q for q in allq if q[1] is not None]
    pending = [q for q in allq if q[1] is None]
    max_any = max((e - s for s, e, _ in answered), default=None)
    max_pending = max((t_end - s for s, _, _ in pending), default=None)
    ok_lat = [e - s for s, e, _ in ok]
    return {
        "clients": len(clients),
        "run_s": round(t_stop - t0, 3),
        "drain_s": round(t_end - t_stop, 3),
        "ok": len(ok),
        "ok_per_s": round(len(ok) / max(1e-9, t_end - t0), 1),
        "ok_p50_ms": ms(pct(ok_lat, 50)),
        "ok_p99_ms": ms(pct(ok_lat, 99)),
        "ok_max_ms": ms(max(ok_lat) if ok_lat else None),
        "errors_by_outcome": tally(allq),
        "shed": len(shed_q),
        "shed_p50_ms": ms(pct([e - s for s, e, _ in shed_q], 50)),
        "shed_p99_ms": ms(pct([e - s for s, e, _ in shed_q], 99)),
        "max_latency_ms": ms(max_any),
        "pending_at_end": len(pending),
        "max_pending_ms": ms(max_pending),
        "connections": conn_summary(clients),
        "messages": run.messages,
    }


async def flood(run):
    a = run.args
    selects = [Client(run, i, a.sql, "select", a.think_ms / 1000.0, a.error_pause_ms / 1000.0) for i in range(a.clients)]
    flooders = [Client(run, i, a.flood_sql, "flood", 0.0, 0.0) for i in range(a.flood_clients)]
    connected = await connect_all(run, selects + flooders)
    if connected < len(selects) + len(flooders):
        close_all(selects + flooders)
        return {"error": f"only {connected} of {len(selects) + len(flooders)} clients connected", "messages": run.messages}
    t0 = now()
    tasks = [asyncio.create_task(c.loop()) for c in selects]
    await asyncio.sleep(a.baseline_s)
    f0 = now()
    tasks += [asyncio.create_task(c.loop()) for c in flooders]
    await asyncio.sleep(a.run_s)
    f1 = now()
    await finish(run, tasks, a.drain_s)
    close_all(selects + flooders)
    sq = [q for c in selects for q in c.queries]
    fq = [q for c in flooders for q in c.queries]
    before = [q for q in sq if q[0] < f0 and q[2] == "ok"]
    during = [q for q in sq if f0 <= q[0] < f1 and q[2] == "ok"]
    return {
        "select_clients": len(selects),
        "flood_clients": len(flooders),
        "flood_s": round(f1 - f0, 3),
        "select_before": latency_summary(before),
        "select_during": latency_summary(during),
        "select_errors_by_outcome": tally(sq),
        "flood_statements": len(fq),
        "flood_per_s": round(len(fq) / max(1e-9, f1 - f0), 1),
        "flood_by_outcome": dict(sorted({o: sum(1 for q in fq if q[2] == o) for o in {q[2] for q in fq}}.items())),
        "connections": conn_summary(selects + flooders),
        "messages": run.messages,
    }


def dump_records(path, run):
    """All records, one JSON line per query or connect, times relative to the start."""
    t0 = run.t0
    with open(path, "w") as f:
        for c in run.clients:
            for kind, lst in (("q", c.queries), ("c", c.connects)):
                for s, e, o in lst:
                    f.write(json.dumps([c.kind, c.idx, kind, round(s - t0, 4), None if e is None else round(e - t0, 4), o]) + "\n")


async def main_async(args):
    run = Run(args)
    run.t0 = now()
    fn = {"outage": outage, "blackhole": outage, "shed": shed, "flood": flood}[args.scenario]
    # Hard bound on the whole run, whatever happens.
    try:
        res = await asyncio.wait_for(fn(run), args.deadline_s)
    except asyncio.TimeoutError:
        res = {"error": f"the run passed its deadline of {args.deadline_s} s"}
    res["scenario"] = args.scenario
    res["label"] = args.label
    if args.records:
        dump_records(args.records, run)
    if args.stats_cmd:
        _, _, rc, out = await run_cmd(args.stats_cmd)
        try:
            res["forwarder"] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            res["forwarder"] = {"rc": rc, "out": out[-200:]}
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["outage", "blackhole", "shed", "flood"])
    p.add_argument("--label", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="bench")
    p.add_argument("--password", default=os.environ.get("PGPASSWORD", "bench"))
    p.add_argument("--database", default="bench")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--sql", default="SELECT 1")
    p.add_argument("--think-ms", type=float, default=10.0)
    p.add_argument("--error-pause-ms", type=float, default=100.0)
    p.add_argument("--connect-retry-ms", type=float, default=100.0)
    p.add_argument("--connect-timeout-s", type=float, default=10.0)
    p.add_argument("--query-timeout-s", type=float, default=30.0)
    p.add_argument("--hang-s", type=float, default=5.0)
    p.add_argument("--max-records", type=int, default=200000)
    p.add_argument("--baseline-s", type=float, default=2.0)
    p.add_argument("--down-s", type=float, default=8.0)
    p.add_argument("--recover-s", type=float, default=25.0)
    p.add_argument("--drain-s", type=float, default=2.0)
    p.add_argument("--run-s", type=float, default=5.0)
    p.add_argument("--down-cmd", default="")
    p.add_argument("--up-cmd", default="")
    p.add_argument("--probe-port", type=int, default=0)
    p.add_argument("--stats-cmd", default="")
    p.add_argument("--flood-clients", type=int, default=50)
    p.add_argument("--flood-sql", default="INSERT INTO dup VALUES (1)")
    p.add_argument("--deadline-s", type=float, default=120.0)
    p.add_argument("--records", default="", help="write every record here (JSON lines)")
    args = p.parse_args()
    if args.scenario in ("outage", "blackhole") and not (args.down_cmd and args.up_cmd and args.probe_port):
        p.error("outage/blackhole need --down-cmd, --up-cmd and --probe-port")
    res = asyncio.run(main_async(args))
    json.dump(res, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
