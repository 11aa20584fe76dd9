"""asyncpg through pgweir, in its default settings: every query goes through its
statement cache (named server-side statements, prepared once per connection and
bound again in later transactions), a Pool, and COPY.

Run: DATABASE_URL=postgres://... python asyncpg_suite.py  (exit 0 = all passed).
PGWEIR_POOL_MODE=transaction also asserts that work really moved between
server connections (it cannot in session mode or straight to PostgreSQL).
"""

import asyncio
import io
import os
import sys
import time

import asyncpg

URL = os.environ["DATABASE_URL"]
SHARED = os.environ.get("PGWEIR_POOL_MODE") == "transaction"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def expect_error(kind, coro):
    try:
        await coro
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


async def schema():
    c = await asyncpg.connect(URL)
    try:
        await c.execute("""
            DROP SCHEMA IF EXISTS apg CASCADE;
            CREATE SCHEMA apg;
            CREATE TABLE apg.items (id int PRIMARY KEY, owner int NOT NULL, label text);
            CREATE TABLE apg.marker (v text);
            INSERT INTO apg.marker VALUES ('from apg');
        """)
    finally:
        await c.close()


async def transactions():
    c = await asyncpg.connect(URL)
    try:
        async with c.transaction():
            await c.execute("INSERT INTO apg.items VALUES ($1, 0, 'kept')", 1)
        try:
            async with c.transaction():
                await c.execute("INSERT INTO apg.items VALUES ($1, 0, 'rolled back')", 2)
                raise RuntimeError("roll it back")
        except RuntimeError:
            pass
        tx = c.transaction()
        await tx.start()
        await c.execute("INSERT INTO apg.items VALUES ($1, 0, 'explicit rollback')", 3)
        await tx.rollback()
        async with c.transaction():  # a savepoint rolled back inside a kept transaction
            await c.execute("INSERT INTO apg.items VALUES ($1, 0, 'outer')", 4)
            try:
                async with c.transaction():
                    await c.execute("INSERT INTO apg.items VALUES ($1, 0, 'inner')", 5)
                    raise RuntimeError("back to the savepoint")
            except RuntimeError:
                pass
        ids = [r["id"] for r in await c.fetch("SELECT id FROM apg.items ORDER BY id")]
        check(ids == [1, 4], f"committed rows only, got {ids}")
    finally:
        await c.close()


async def errors_and_recovery():
    c = await asyncpg.connect(URL)
    try:
        q = "SELECT 10 / $1::int"
        for i in range(1, 6):
            check(await c.fetchval(q, i) == 10 // i, "division result")
        await expect_error(asyncpg.DivisionByZeroError, c.fetchval(q, 0))
        check(await c.fetchval(q, 2) == 5, "cached statement after an error")
        await expect_error(asyncpg.UndefinedTableError, c.fetch("SELECT * FROM apg.nope"))
        check(await c.fetchval("SELECT 1") == 1, "connection works after an error")
        stmt = await c.prepare("SELECT $1::int + 1")
        for i in range(5):
            async with c.transaction():
                check(await stmt.fetchval(i) == i + 1, "explicitly prepared statement")

        async with c.transaction():
            await c.execute("INSERT INTO apg.items VALUES (10, 0, 'before the error')")
        try:
            async with c.transaction():
                await c.execute("INSERT INTO apg.items VALUES (11, 0, 'lost')")
                await c.execute("SELECT 1 / 0")
        except asyncpg.DivisionByZeroError:
            pass
        check(not c.is_in_transaction(), "rolled back")
        ids = [r["id"] for r in await c.fetch("SELECT id FROM apg.items WHERE id >= 10")]
        check(ids == [10], f"the failed transaction left nothing, got {ids}")
    finally:
        await c.close()


async def prepared_across_transactions():
    """Tasks sharing a small Pool run the same cached statements in many short
    transactions; the results must match each task's own inputs."""
    pids = {}
    async with asyncpg.create_pool(URL, min_size=4, max_size=4) as pool:

        async def worker(w):
            seen = set()
            for i in range(25):
                async with pool.acquire() as c:
                    async with c.transaction():
                        row = await c.fetchrow(
                            "SELECT $1::int * 1000 + $2::int AS v, pg_backend_pid() AS pid", w, i)
                        check(row["v"] == w * 1000 + i, f"task {w} got {row['v']}")
                        seen.add(row["pid"])
                        await c.execute("INSERT INTO apg.items VALUES ($1, $2, $3)",
                                        100_000 + w * 1000 + i, w, f"w{w}")
                        await c.execute("SELECT pg_sleep(0.002)")
                n = await pool.fetchval("SELECT count(*) FROM apg.items WHERE owner = $1", w)
                check(n == i + 1, f"task {w} sees {n} own rows, expected {i + 1}")
            pids[w] = seen

        await asyncio.gather(*(worker(w) for w in range(1, 7)))
    all_pids = set().union(*pids.values())
    print(f"  tasks ran on {len(all_pids)} server connections")
    if SHARED:
        check(len(all_pids) >= 2, "transaction mode spreads work over server connections")
        check(any(len(s) >= 2 for s in pids.values()), "a client's statements moved servers")


async def temp_tables_leave_the_pool_free():
    """Long-lived pooled connections that each created an ON COMMIT DROP temp table
    hold no server afterwards: a fresh connection still answers in under a second
    (pgweir's pool is smaller than this Pool, so one pin per connection would starve it)."""
    async with asyncpg.create_pool(URL, min_size=4, max_size=4) as pool:
        conns = [await pool.acquire() for _ in range(4)]
        for c in conns:
            async with c.transaction():
                await c.execute("CREATE TEMP TABLE scratch (v int) ON COMMIT DROP")
                await c.execute("INSERT INTO scratch VALUES (1)")
        other = await asyncpg.connect(URL)
        try:
            t = time.monotonic()
            check(await other.fetchval("SELECT 1") == 1, "answer")
            took = time.monotonic() - t
            check(took < 1.0, f"a fresh client waited {took:.2f} s for a server")
        finally:
            await other.close()
        for c in conns:
            await pool.release(c)


async def copy():
    c = await asyncpg.connect(URL)
    try:
        records = [(200_000 + i, 99, f"copied {i}") for i in range(500)]
        await c.copy_records_to_table("items", schema_name="apg", records=records,
                                      columns=["id", "owner", "label"])
        csv = "".join(f"{300_000 + i},98,csv {i}\n" for i in range(100)).encode()
        await c.copy_to_table("items", schema_name="apg", source=io.BytesIO(csv),
                              columns=["id", "owner", "label"], format="csv")
        out = io.BytesIO()
        await c.copy_from_query("SELECT id, label FROM apg.items WHERE owner IN (98, 99) "
                                "ORDER BY id", output=out, format="csv")
        lines = out.getvalue().decode().splitlines()
        check(len(lines) == 600 and lines[7] == "200007,copied 7" and lines[599] == "300099,csv 99",
              f"copy out: {len(lines)} lines")
        await expect_error(asyncpg.UniqueViolationError, c.copy_records_to_table(
            "items", schema_name="apg", records=[(200_000, 99, "dup")]))
        n = await c.fetchval("SELECT count(*) FROM apg.items WHERE owner IN (98, 99)")
        check(n == 600, f"the failed COPY added nothing, got {n}")
    finally:
        await c.close()


async def session_settings():
    """SET outside a transaction stays in effect in later transactions; another
    client (with its own startup settings) does not see it."""
    a = await asyncpg.connect(URL)
    b = await asyncpg.connect(URL, server_settings={"application_name": "apg-b"})
    try:
        b_zone = await b.fetchval("SHOW TimeZone")
        await a.execute("SET TimeZone = 'Asia/Tokyo'")
        await a.execute("SET application_name = 'asyncpg-suite'")
        await a.execute("SET search_path = apg, public")
        await a.execute("SET statement_timeout = '7s'")
        q = ("SELECT current_setting('TimeZone'), current_setting('application_name'), "
             "current_setting('statement_timeout')")
        for _ in range(8):
            async with a.transaction(), b.transaction():
                got = tuple(await a.fetchrow(q + ", (SELECT v FROM marker)"))
                check(got == ("Asia/Tokyo", "asyncpg-suite", "7s", "from apg"),
                      f"client A settings {got}")
                got = tuple(await b.fetchrow(q))
                check(got == (b_zone, "apg-b", "0"), f"client B sees only its own settings {got}")
            await asyncio.sleep(0.01)
        await a.execute("RESET ALL")
        async with a.transaction():
            got = tuple(await a.fetchrow(q))
            check(got == (b_zone, "", "0"), f"RESET ALL gives back the defaults, got {got}")
    finally:
        await a.close()
        await b.close()


async def main():
    started = time.monotonic()
    failed = []
    for step in (schema, transactions, errors_and_recovery, prepared_across_transactions,
                 temp_tables_leave_the_pool_free, copy, session_settings):
        t = time.monotonic()
        try:
            await asyncio.wait_for(step(), 30)
        except Exception as e:  # report every step, then fail
            print(f"FAIL {step.__name__}: {type(e).__name__}: {e}")
            failed.append(step.__name__)
            continue
        print(f"ok {step.__name__} ({time.monotonic() - t:.2f} s)")
    if failed:
        print(f"asyncpg suite FAILED: {', '.join(failed)}")
        sys.exit(1)
    print(f"asyncpg suite passed in {time.monotonic() - started:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
