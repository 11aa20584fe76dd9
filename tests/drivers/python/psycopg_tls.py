"""psycopg 3 through pgweir over TLS: every sslmode, and channel_binding=require.

Environment: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE for the proxy (which runs
with client_tls_sslmode = prefer), PGWEIR_TLS_CA for its CA certificate. Exits non-zero
on the first failure.
"""

import os
import sys

import psycopg

CA = os.environ["PGWEIR_TLS_CA"]

CASES = [
    # (sslmode, extra settings, encrypted?)
    ("disable", {}, False),
    ("allow", {}, False),  # libpq tries plaintext first, which a `prefer` proxy accepts
    ("prefer", {}, True),
    ("require", {}, True),
    ("verify-ca", {}, True),
    ("verify-full", {}, True),
    ("require", {"channel_binding": "require"}, True),
    ("verify-full", {"channel_binding": "require"}, True),
]

for sslmode, extra, encrypted in CASES:
    label = f"sslmode={sslmode} {extra}"
    with psycopg.connect(sslmode=sslmode, sslrootcert=CA, **extra) as conn:
        got = conn.execute("SELECT 40 + %s", (2,)).fetchone()[0]
        assert got == 42, f"{label}: {got}"
        # A transaction and a prepared statement over the same TLS connection.
        with conn.transaction():
            conn.execute("SELECT 1", prepare=True)
            conn.execute("SELECT 1", prepare=True)
        in_use = conn.pgconn.ssl_in_use
        assert in_use == encrypted, f"{label}: ssl_in_use={in_use}"
    print(f"ok {label} tls={encrypted}")

try:
    psycopg.connect(sslmode="disable", channel_binding="require")
except psycopg.OperationalError as e:
    assert "channel binding" in str(e), str(e)
    print("ok channel_binding=require refused without TLS")
else:
    sys.exit("channel_binding=require without TLS must fail")
