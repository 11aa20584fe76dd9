"""asyncpg through pgweir over TLS: each sslmode asyncpg knows, and direct TLS
(`direct_tls=True`: a ClientHello first, as PostgreSQL 17's sslnegotiation=direct).

Environment as psycopg_tls.py. Exits non-zero on the first failure.
"""

import asyncio
import os
import ssl

import asyncpg

CA = os.environ["PGWEIR_TLS_CA"]
HOST, PORT = os.environ["PGHOST"], os.environ["PGPORT"]
USER, PASSWORD, DB = os.environ["PGUSER"], os.environ["PGPASSWORD"], os.environ["PGDATABASE"]


def encrypted(conn):
    return conn._transport.get_extra_info("ssl_object") is not None


async def check(conn, label, want):
    got = await conn.fetchval("SELECT 40 + $1::int", 2)
    assert got == 42, f"{label}: {got}"
    # Prepared statements and a transaction over the same connection.
    stmt = await conn.prepare("SELECT $1::int * 2")
    assert await stmt.fetchval(21) == 42
    async with conn.transaction():
        assert await conn.fetchval("SELECT 1") == 1
    assert encrypted(conn) == want, f"{label}: encrypted={encrypted(conn)}"
    await conn.close()
    print(f"ok {label} tls={want}")


async def main():
    for mode, want in [
        ("disable", False),
        ("prefer", True),
        ("require", True),
        ("verify-ca", True),
        ("verify-full", True),
    ]:
        dsn = f"postgresql://{USER}:{PASSWORD}@{HOST}:{PORT}/{DB}?sslmode={mode}&sslrootcert={CA}"
        await check(await asyncpg.connect(dsn), f"sslmode={mode}", want)

    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["postgresql"])
    conn = await asyncpg.connect(
        host=HOST, port=int(PORT), user=USER, password=PASSWORD, database=DB,
        ssl=ctx, direct_tls=True,
    )
    await check(conn, "direct_tls", True)


asyncio.run(main())
