#!/usr/bin/env python3
"""Step load for benches/scenarios.sh (issue 12): --before clients loop --sql for
--before-s seconds, then --after clients (the first --before included) loop it for
--run-s seconds. Every client has its own connection, opened up front, and sends the
statement with the simple query protocol, back to back (no think time).

Prints one JSON object: transactions per second of the step phase, second by second
("timeline", from the step), the throughput over the whole step phase and over its
part after --settle-s, client-side latency p50/p99 of the step phase, errors, and,
with --admin-port, what pgweir's console said every 250 ms during the step
(SHOW SCALING: target and p99 wait; SHOW POOLS: open server connections).
"""
import argparse
import asyncio
import json
import math
import sys
import time

import asyncpg

now = time.monotonic


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))]


async def client(a, conn, stop, records, start_evt):
    await start_evt.wait()
    while not stop.is_set():
        t0 = now()
        try:
            await conn.execute(a.sql)
            records.append((t0, now(), True))
        except Exception as e:  # noqa: BLE001 - an error is a result
            records.append((t0, now(), type(e).__name__))
            await asyncio.sleep(0.05)


async def watch(a, t_step, stop, samples):
    """Polls pgweir's admin console: (seconds after the step, target, p99 wait ms, open servers)."""
    try:
        adm = await asyncpg.connect(host=a.host, port=a.admin_port, user=a.user, password=a.password,
                                    database="pgweir", ssl=False, statement_cache_size=0)
    except Exception as e:  # noqa: BLE001
        samples.append({"error": str(e)})
        return
    while not stop.is_set():
        try:
            scaling = await adm.fetch("SHOW SCALING")
            pools = await adm.fetch("SHOW POOLS")
            open_servers = sum(r["sv_active"] + r["sv_idle"] + r["sv_used"] + r["sv_tested"] + r["sv_login"]
                               for r in pools if r["database"] == a.database)
            row = next((r for r in scaling if r["database"] == a.database), None)
            samples.append({
                "t": round(now() - t_step, 2),
                "target": row["target"] if row else None,
                "p99_wait_ms": float(row["p99_wait_ms"]) if row else None,
                "servers": open_servers,
            })
        except Exception as e:  # noqa: BLE001
            samples.append({"error": str(e)})
        await asyncio.sleep(0.25)
    await adm.close()


async def main_async(a):
    conns = []
    for _ in range(a.after):
        conns.append(await asyncpg.connect(host=a.host, port=a.port, user=a.user, password=a.password,
                                           database=a.database, ssl=False, statement_cache_size=0, timeout=30))
    stop = asyncio.Event()
    records = []
    first, second = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(client(a, c, stop, records, first if i < a.before else second))
             for i, c in enumerate(conns)]
    first.set()
    await asyncio.sleep(a.before_s)
    t_step = now()
    second.set()
    samples = []
    watcher = asyncio.create_task(watch(a, t_step, stop, samples)) if a.admin_port else None
    await asyncio.sleep(a.run_s)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if watcher:
        await watcher
    for c in conns:
        await c.close()
    step = [r for r in records if r[0] >= t_step and r[1] <= t_step + a.run_s]
    ok = [r for r in step if r[2] is True]
    errors = {}
    for r in step:
        if r[2] is not True:
            errors[r[2]] = errors.get(r[2], 0) + 1
    secs = int(a.run_s)
    timeline = [0] * secs
    for r in ok:
        i = int(r[1] - t_step)
        if 0 <= i < secs:
            timeline[i] += 1
    settled = [r for r in ok if r[1] >= t_step + a.settle_s]
    lat = [r[1] - r[0] for r in ok]
    return {
        "timeline": timeline,
        "tps": round(len(ok) / a.run_s, 1),
        "tps_settled": round(len(settled) / max(0.001, a.run_s - a.settle_s), 1),
        "p50_ms": round(pct(lat, 50) * 1000, 2) if lat else None,
        "p99_ms": round(pct(lat, 99) * 1000, 2) if lat else None,
        "errors": errors,
        "pgweir": samples,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--user", default="bench")
    p.add_argument("--password", default="bench")
    p.add_argument("--database", default="bench")
    p.add_argument("--sql", default="SELECT pg_sleep(0.01)")
    p.add_argument("--before", type=int, default=5)
    p.add_argument("--after", type=int, default=60)
    p.add_argument("--before-s", type=float, default=5.0)
    p.add_argument("--run-s", type=float, default=15.0)
    p.add_argument("--settle-s", type=float, default=5.0)
    a = p.parse_args()
    json.dump(asyncio.run(main_async(a)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
