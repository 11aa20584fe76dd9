#!/usr/bin/env python3
"""Priority and dedup loads for benches/scenarios.sh (issue 11).

  priority  --low clients and --critical clients loop --sql for --run-s seconds, back
            to back, each on its own connection (opened up front; simple query
            protocol, asyncpg). With --tag the clients send `pgweir.priority` (low /
            critical) as a startup parameter; without it (PgBouncer) they are all alike
            and only the grouping differs. Prints p50/p99 latency per class, queries
            per class, how many clients of each class completed at least one query,
            and errors.
  dedup     --clients clients (psycopg 3, simple query protocol: a statement without
            parameters is sent as a Query) connect, wait for each other, then send the
            same slow read at the same moment; --rounds times, a second apart. The
            server-side executions are counted by a sequence that the read's function
            advances (read directly from PostgreSQL on --pg-port before and after
            each round). Prints executions per round and whether every client got the
            full, correct answer.
"""
import argparse
import asyncio
import json
import math
import sys
import time

now = time.monotonic


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))]


def ms(x):
    return None if x is None else round(x * 1000, 1)


# --- priority ------------------------------------------------------------------------
async def prio_client(a, conn, cls, stop, records, done):
    while not stop.is_set():
        t0 = now()
        try:
            await conn.execute(a.sql)
            records.append((cls, t0, now(), True))
            done.add(id(conn))
        except Exception as e:  # noqa: BLE001 - an error is a result
            records.append((cls, t0, now(), type(e).__name__))
            await asyncio.sleep(0.05)


async def priority(a):
    import asyncpg

    async def connect(cls):
        settings = {"pgweir.priority": cls} if a.tag else {}
        return await asyncpg.connect(host=a.host, port=a.port, user=a.user, password=a.password,
                                     database=a.database, ssl=False, statement_cache_size=0,
                                     timeout=60, server_settings=settings)

    classes = ["low"] * a.low + ["critical"] * a.critical
    conns = []
    # Logins in small batches: 220 SCRAM logins at once would time out on 2 CPUs.
    for i in range(0, len(classes), 20):
        conns += await asyncio.gather(*(connect(c) for c in classes[i:i + 20]))
    stop = asyncio.Event()
    records = []
    done = {c: set() for c in ("low", "critical")}
    tasks = [asyncio.create_task(prio_client(a, conn, cls, stop, records, done[cls]))
             for conn, cls in zip(conns, classes)]
    await asyncio.sleep(a.run_s)
    stop.set()
    # Queries in flight finish (the pool serves them); bounded by the client timeout.
    await asyncio.wait(tasks, timeout=a.drain_s)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*(c.close(timeout=5) for c in conns), return_exceptions=True)
    out = {"tagged": a.tag, "run_s": a.run_s}
    for cls, n in (("critical", a.critical), ("low", a.low)):
        ok = [r[2] - r[1] for r in records if r[0] == cls and r[3] is True]
        errors = {}
        for r in records:
            if r[0] == cls and r[3] is not True:
                errors[r[3]] = errors.get(r[3], 0) + 1
        out[cls] = {
            "clients": n,
            "clients_done": len(done[cls]),
            "queries": len(ok),
            "p50_ms": ms(pct(ok, 50)),
            "p99_ms": ms(pct(ok, 99)),
            "max_ms": ms(max(ok) if ok else None),
            "errors": errors,
        }
    return out


# --- dedup ---------------------------------------------------------------------------
async def dedup(a):
    import psycopg

    async def connect(port):
        return await psycopg.AsyncConnection.connect(host=a.host, port=port, user=a.user, password=a.password,
                                                     dbname=a.database, sslmode="disable", autocommit=True,
                                                     connect_timeout=60)

    async def executions(direct):
        async with direct.cursor() as cur:
            await cur.execute("SELECT last_value FROM pg_catalog.pg_sequences WHERE sequencename = 'dedup_runs'")
            return (await cur.fetchone())[0] or 0

    direct = await connect(a.pg_port)
    conns = []
    for i in range(0, a.clients, 20):
        conns += await asyncio.gather(*(connect(a.port) for _ in range(min(20, a.clients - i))))
    want = [tuple(r) for r in json.loads(a.expect)]

    async def one(conn, go):
        await go.wait()
        t0 = now()
        try:
            async with conn.cursor() as cur:
                await cur.execute(a.sql)
                rows = [tuple(r) for r in await cur.fetchall()]
            return (now() - t0, rows == want, None)
        except Exception as e:  # noqa: BLE001
            return (now() - t0, False, type(e).__name__)

    rounds = []
    for _ in range(a.rounds):
        before = await executions(direct)
        go = asyncio.Event()
        tasks = [asyncio.create_task(one(c, go)) for c in conns]
        await asyncio.sleep(0.2)  # every client is parked on the event
        go.set()
        res = await asyncio.wait_for(asyncio.gather(*tasks), timeout=a.timeout_s)
        after = await executions(direct)
        lat = [r[0] for r in res]
        errors = {}
        for r in res:
            if r[2]:
                errors[r[2]] = errors.get(r[2], 0) + 1
        rounds.append({
            "executions": after - before,
            "correct": sum(1 for r in res if r[1]),
            "p50_ms": ms(pct(lat, 50)),
            "max_ms": ms(max(lat)),
            "errors": errors,
        })
        await asyncio.sleep(1)
    for c in conns:
        await c.close()
    await direct.close()
    return {"clients": a.clients, "rounds": rounds}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["priority", "dedup"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pg-port", type=int, default=0)
    p.add_argument("--user", default="bench")
    p.add_argument("--password", default="bench")
    p.add_argument("--database", default="bench")
    p.add_argument("--sql", required=True)
    p.add_argument("--tag", action="store_true", help="send pgweir.priority as a startup parameter")
    p.add_argument("--low", type=int, default=200)
    p.add_argument("--critical", type=int, default=20)
    p.add_argument("--run-s", type=float, default=20.0)
    p.add_argument("--drain-s", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--expect", default="[]", help="the rows every dedup client must get, as JSON")
    p.add_argument("--timeout-s", type=float, default=120.0)
    a = p.parse_args()
    run = priority if a.kind == "priority" else dedup
    json.dump(asyncio.run(run(a)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
