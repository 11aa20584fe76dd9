"""psycopg 3 through pgweir, in its default settings (auto-prepare after 5 runs of
a query, so named server-side statements), with psycopg_pool and pipeline mode.

Run: DATABASE_URL=postgres://... python psycopg_suite.py  (exit 0 = all passed).
PGWEIR_POOL_MODE=transaction also asserts that work really moved between
server connections (it cannot in session mode or straight to PostgreSQL).
"""

import os
import sys
import threading
import time

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

URL = os.environ["DATABASE_URL"]
SHARED = os.environ.get("PGWEIR_POOL_MODE") == "transaction"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(kind, fn):
    try:
        fn()
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


def schema():
    with psycopg.connect(URL, autocommit=True) as c:
        c.execute("DROP SCHEMA IF EXISTS psy CASCADE")
        c.execute("CREATE SCHEMA psy")
        c.execute("CREATE TABLE psy.items (id int PRIMARY KEY, owner int NOT NULL, label text)")
        c.execute("CREATE TABLE psy.marker (v text)")
        c.execute("INSERT INTO psy.marker VALUES ('from psy')")


def transactions():
    with psycopg.connect(URL) as c:
        check(c.prepare_threshold == 5, "psycopg default prepare_threshold is 5")
        with c.transaction():
            c.execute("INSERT INTO psy.items VALUES (1, 0, 'kept')")
        try:
            with c.transaction():
                c.execute("INSERT INTO psy.items VALUES (2, 0, 'rolled back')")
                raise RuntimeError("roll it back")
        except RuntimeError:
            pass
        c.execute("INSERT INTO psy.items VALUES (3, 0, 'explicit commit')")
        c.commit()
        c.execute("INSERT INTO psy.items VALUES (4, 0, 'explicit rollback')")
        c.rollback()
        ids = [r[0] for r in c.execute("SELECT id FROM psy.items ORDER BY id")]
        check(ids == [1, 3], f"committed rows only, got {ids}")
        c.rollback()


def errors_and_recovery():
    with psycopg.connect(URL, autocommit=True) as c:
        q = "SELECT 10 / %s::int"
        for i in range(1, 8):  # prepared from the 6th run on
            check(c.execute(q, (i,)).fetchone()[0] == 10 // i, "division result")
        expect_error(errors.DivisionByZero, lambda: c.execute(q, (0,)))
        check(c.execute(q, (2,)).fetchone()[0] == 5, "prepared statement after an error")
        if not SHARED:  # the statement is on this connection's server, under psycopg's name
            n = c.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
            check(n >= 1, "psycopg prepared the statement server-side")
        expect_error(errors.UndefinedTable, lambda: c.execute("SELECT * FROM psy.nope"))
        check(c.execute("SELECT 1").fetchone()[0] == 1, "connection works after an error")

        c.autocommit = False
        with c.transaction():
            c.execute("INSERT INTO psy.items VALUES (10, 0, 'before the error')")
        try:
            with c.transaction():
                c.execute("INSERT INTO psy.items VALUES (11, 0, 'lost')")
                c.execute("SELECT 1 / 0")
        except errors.DivisionByZero:
            pass
        check(c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, "rolled back")
        ids = [r[0] for r in c.execute("SELECT id FROM psy.items WHERE id >= 10")]
        check(ids == [10], f"the failed transaction left nothing, got {ids}")
        c.rollback()


def prepared_across_transactions():
    """Several workers from a small pool run the same statements in many short
    transactions; the results must match each worker's own inputs."""
    pids = {}
    failures = []
    with ConnectionPool(URL, min_size=4, max_size=4, open=True) as pool:

        def worker(w):
            seen = set()
            try:
                for i in range(25):
                    with pool.connection() as c:
                        with c.transaction():
                            row = c.execute(
                                "SELECT %s::int * 1000 + %s::int, pg_backend_pid()", (w, i)
                            ).fetchone()
                            check(row[0] == w * 1000 + i, f"worker {w} got {row[0]}")
                            seen.add(row[1])
                            c.execute("INSERT INTO psy.items VALUES (%s, %s, %s)",
                                      (100_000 + w * 1000 + i, w, f"w{w}"))
                            c.execute("SELECT pg_sleep(0.002)")
                    with pool.connection() as c:
                        n = c.execute("SELECT count(*) FROM psy.items WHERE owner = %s",
                                      (w,)).fetchone()[0]
                        check(n == i + 1, f"worker {w} sees {n} own rows, expected {i + 1}")
                pids[w] = seen
            except Exception as e:  # reported by the main thread
                failures.append(f"worker {w}: {e!r}")

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(1, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    check(not failures, "; ".join(failures))
    all_pids = set().union(*pids.values())
    print(f"  workers ran on {len(all_pids)} server connections")
    if SHARED:
        check(len(all_pids) >= 2, "transaction mode spreads work over server connections")
        check(any(len(s) >= 2 for s in pids.values()), "a client's statements moved servers")


def copy():
    with psycopg.connect(URL) as c:
        with c.cursor() as cur:
            with cur.copy("COPY psy.items (id, owner, label) FROM STDIN") as cp:
                for i in range(500):
                    cp.write_row((200_000 + i, 99, f"copied {i}"))
            c.commit()
            rows = []
            with cur.copy("COPY (SELECT id, label FROM psy.items WHERE owner = 99 "
                          "ORDER BY id) TO STDOUT") as cp:
                for row in cp.rows():
                    rows.append(row)
            check(len(rows) == 500 and rows[7] == ("200007", "copied 7"), f"copy out {rows[:2]}")
            # A failing COPY, then the connection goes on.
            try:
                with cur.copy("COPY psy.items (id, owner, label) FROM STDIN") as cp:
                    cp.write_row((200_000, 99, "duplicate key"))
            except errors.UniqueViolation:
                pass
            c.rollback()
            check(c.execute("SELECT count(*) FROM psy.items WHERE owner = 99").fetchone()[0]
                  == 500, "the failed COPY added nothing")
            c.rollback()


def pipeline():
    with psycopg.connect(URL, autocommit=True) as c:
        for round_ in range(3):
            with c.pipeline():
                curs = [c.execute("SELECT %s::int + %s::int", (round_, i)) for i in range(10)]
            check([cur.fetchone()[0] for cur in curs] == [round_ + i for i in range(10)],
                  "pipelined results in order")
        # Without a Sync between them, pipelined statements are one implicit
        # transaction: the error undoes what came before it since the last Sync.
        try:
            with c.pipeline() as p:
                c.execute("INSERT INTO psy.items VALUES (300000, 0, 'synced')")
                p.sync()
                c.execute("INSERT INTO psy.items VALUES (300001, 0, 'undone')")
                c.execute("SELECT 1 / 0")
                c.execute("INSERT INTO psy.items VALUES (300002, 0, 'skipped')")
        except errors.DivisionByZero:
            pass
        ids = [r[0] for r in c.execute("SELECT id FROM psy.items WHERE id >= 300000")]
        check(ids == [300000], f"pipeline error undoes back to the last Sync, got {ids}")


def session_settings():
    """SET outside a transaction stays in effect in later transactions, and
    another client at the same time does not see it."""
    a = psycopg.connect(URL, autocommit=True)
    b = psycopg.connect(URL, autocommit=True)
    try:
        b_zone = b.execute("SHOW TimeZone").fetchone()[0]
        a.execute("SET TimeZone = 'Asia/Tokyo'")
        a.execute("SET application_name = 'psycopg-suite'")
        a.execute("SET search_path = psy, public")
        a.execute("SET statement_timeout = '7s'")
        for _ in range(8):
            with a.transaction(), b.transaction():
                got = a.execute("SELECT current_setting('TimeZone'), "
                                "current_setting('application_name'), "
                                "current_setting('statement_timeout'), v FROM marker").fetchone()
                check(got == ("Asia/Tokyo", "psycopg-suite", "7s", "from psy"),
                      f"client A settings {got}")
                got = b.execute("SELECT current_setting('TimeZone'), "
                                "current_setting('application_name'), "
                                "current_setting('statement_timeout')").fetchone()
                check(got == (b_zone, "", "0"), f"client B sees only its own settings {got}")
            time.sleep(0.01)
        check(a.info.parameter_status("TimeZone") == "Asia/Tokyo", "ParameterStatus TimeZone")
        a.execute("RESET TimeZone")
        with a.transaction():
            zone = a.execute("SHOW TimeZone").fetchone()[0]
            check(zone == b_zone, f"RESET gives back the default, got {zone}")
    finally:
        a.close()
        b.close()


def main():
    started = time.monotonic()
    failed = []
    for step in (schema, transactions, errors_and_recovery, prepared_across_transactions,
                 copy, pipeline, session_settings):
        t = time.monotonic()
        try:
            step()
        except Exception as e:  # report every step, then fail
            print(f"FAIL {step.__name__}: {type(e).__name__}: {e}")
            failed.append(step.__name__)
            continue
        print(f"ok {step.__name__} ({time.monotonic() - t:.2f} s)")
    if failed:
        print(f"psycopg suite FAILED: {', '.join(failed)}")
        sys.exit(1)
    print(f"psycopg suite passed in {time.monotonic() - started:.2f} s")


if __name__ == "__main__":
    main()
