#!/usr/bin/env python3
"""Turns the JSON summaries of benches/scenarios/load.py into the markdown table
that benches/scenarios.sh prints (one row per figure, one column per pooler)."""
import argparse
import csv
import io
import json
import os

SQLSTATES = {
    "08P01": "protocol violation (PgBouncer's own errors)",
    "08006": "connection failure",
    "08003": "connection does not exist (closed under the client)",
    "08001": "cannot connect",
    "53300": "too many connections (shed)",
    "57014": "query canceled (wait timeout)",
    "57P01": "admin shutdown",
    "57P03": "cannot connect now (breaker open)",
    "23505": "unique violation",
}


def fmt_num(v, f="{:.0f}"):
    return "n/a" if v is None else f.format(v)


def pair(a, b, f="{:.1f}"):
    if a is None and b is None:
        return "n/a"
    return f"{fmt_num(a, f)} / {fmt_num(b, f)}"


def outcomes(d, limit=4):
    if not d:
        return "none"
    items = list(d.items())
    s = ", ".join(f"{k}×{v}" for k, v in items[:limit])
    if len(items) > limit:
        s += f", +{sum(v for _, v in items[limit:])} other"
    return s


def load(results, scen, pooler):
    try:
        with open(os.path.join(results, f"{scen}-{pooler}.json")) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"no result ({e.__class__.__name__})"}


def breaker_state(results, pooler):
    if pooler != "pgweir":
        return "–"
    path = os.path.join(results, f"flood-{pooler}.breakers")
    try:
        text = open(path).read()
    except OSError:
        return "n/a"
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "state" not in rows[0]:
        return "n/a"
    return ", ".join(r["state"] for r in rows)


def outage_rows(r, n_clients, what):
    """(figure, value) rows for the outage and black-hole scenarios."""
    if "error" in r and "during_down" not in r:
        return None
    dd, rec, tl, con = r["during_down"], r["recovery"], r["timeline_s"], r["connections"]
    fail = "not within {:.0f} s ({}/{} recovered)".format(rec["recover_window_s"], rec["recovered"], r["clients"])
    outage = what == "pg_ctl stop"
    rows = [
        ("baseline SELECT 1 p50 / p99 (ms)", pair(r["baseline"]["p50_ms"], r["baseline"]["p99_ms"], "{:.2f}")),
        (f"{what} took (s)", f"{tl['down_cmd_took']:.2f} (rc {r['down_cmd']['rc']})"),
        ("queries in flight at the stop: outcomes", outcomes(r["inflight_at_stop"]["outcomes"]) if r["inflight_at_stop"]["n"] else "none"),
        ("queries sent while down (from the stop on): answered with an error", f"{dd['errors']} of {dd['queries']} (ok: {dd['ok']})"),
        ("… their error latency p50 / p99 (ms)", pair(dd["error_p50_ms"], dd["error_p99_ms"])),
        ("… errors by SQLSTATE", outcomes(dd["errors_by_outcome"])),
        ("first error after the stop began (ms)", fmt_num(dd["first_error_after_stop_ms"])),
        (f"hangs: no answer within {r['hang_threshold_s']:.0f} s (started while down)", f"{r['hangs']} ({r['hangs_started_while_down']})"),
        ("recovery: 95% of clients ok again, s after the restart returned (pg_ctl start -w / switch back)",
         fail if rec["t95_after_up_returned_s"] is None else f"{rec['t95_after_up_returned_s']:.2f}"),
        ("… s after the server accepted a login",
         fail if rec["t95_after_server_ready_s"] is None else f"{rec['t95_after_server_ready_s']:.2f}"),
        ("… first client ok, s after the restart returned", fmt_num(rec["first_ok_after_up_returned_s"], "{:.2f}")),
        ("… pg_ctl start took / PostgreSQL accepted a login after (s)",
         f"{tl['up_cmd_took']:.2f} / {fmt_num(tl['server_ready_after_up_start'], '{:.2f}')}")
        if outage else
        ("… a login through the forwarder worked again after (s)", fmt_num(tl["server_ready_after_up_start"], "{:.2f}")),
        ("clients recovered", f"{rec['recovered']}/{r['clients']}"),
        ("client connections closed by the pooler / reconnects / failed connects",
         f"{con['clients_dropped']} / {con['reconnects']} / {con['failed_connects']}"
         + (f" ({outcomes(con['failed_connects_by_outcome'], 2)})" if con["failed_connects"] else "")),
        ("all errors by outcome (whole run)", outcomes(r["errors_by_outcome"])),
    ]
    if not outage:
        rows = [x for x in rows if not x[0].endswith(" took (s)")]
    fw = r.get("forwarder")
    if isinstance(fw, dict) and "blackholed" in fw:
        rows.append(("server connections the pooler opened into the black hole (still open when it ended)",
                     f"{fw['blackholed']} ({fw.get('healed', 'n/a')})"))
    return rows


def shed_rows(r, qwt):
    if "error" in r and "ok" not in r:
        return None
    return [
        ("queries completed (ok) / per s", f"{r['ok']} / {r['ok_per_s']:.0f}"),
        ("ok latency p50 / p99 / max (ms)", f"{fmt_num(r['ok_p50_ms'])} / {fmt_num(r['ok_p99_ms'])} / {fmt_num(r['ok_max_ms'])}"),
        ("errors by SQLSTATE", outcomes(r["errors_by_outcome"])),
        ("shed (53300): count, latency p50 / p99 (ms)",
         "none" if not r["shed"] else f"{r['shed']}, {pair(r['shed_p50_ms'], r['shed_p99_ms'])}"),
        (f"max latency of any answered query (ms; query_wait_timeout {qwt} s)", fmt_num(r["max_latency_ms"])),
        ("unanswered at the end (longest wait, ms)",
         f"{r['pending_at_end']}" + (f" ({fmt_num(r['max_pending_ms'])})" if r["pending_at_end"] else "")),
        ("client connections closed by the pooler / reconnects",
         f"{r['connections']['clients_dropped']} / {r['connections']['reconnects']}"),
    ]


def flood_rows(r, results, pooler):
    if "error" in r and "select_during" not in r:
        return None
    b, d = r["select_before"], r["select_during"]
    return [
        ("SELECT 1 p50 / p99 (ms) before the flood", pair(b["p50_ms"], b["p99_ms"], "{:.2f}")),
        ("SELECT 1 p50 / p99 (ms) during the flood", pair(d["p50_ms"], d["p99_ms"], "{:.2f}")),
        ("SELECT 1: ok during the flood / errors", f"{d['n']} / {outcomes(r['select_errors_by_outcome'])}"),
        ("duplicate inserts: outcomes (per s)", f"{outcomes(r['flood_by_outcome'])} ({r['flood_per_s']:.0f}/s)"),
        ("breaker state after the flood (SHOW BREAKERS)", breaker_state(results, pooler)),
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--poolers", required=True)
    p.add_argument("--scenarios", required=True)
    p.add_argument("--header", default="")
    p.add_argument("--settings", default="")
    p.add_argument("--pgweir-shed-toml", default="")
    p.add_argument("--pgweir-extra-toml", default="")
    p.add_argument("--outage-s", default="")
    p.add_argument("--outage-clients", default="")
    p.add_argument("--blackhole-existing", default="close")
    p.add_argument("--shed", default="")
    p.add_argument("--qwt", default="?", help="query_wait_timeout, seconds")
    p.add_argument("--flood", default="")
    a = p.parse_args()
    poolers = a.poolers.split()
    scens = a.scenarios.split()

    print("## pgweir resilience scenarios (benches/scenarios.sh)")
    print()
    print(a.header + ".")
    print(a.settings + ".")
    if a.pgweir_extra_toml:
        print("pgweir extra config: `" + a.pgweir_extra_toml.replace("\n", "; ") + "`.")
    print()
    titles = {
        "outage": f"outage: {a.outage_clients} clients × SELECT 1, `pg_ctl stop -m fast`, {a.outage_s} s down, `pg_ctl start -w`",
        "blackhole": f"black hole: {a.outage_clients} clients × SELECT 1, upstream accepts and never answers for {a.outage_s} s"
        f" (existing server connections: {a.blackhole_existing})",
        "shed": f"shed: {a.shed}" + (f"; pgweir: `{a.pgweir_shed_toml}`" if a.pgweir_shed_toml else "; pgweir without max_queue"),
        "flood": f"flood: {a.flood}",
    }
    print("| scenario | figure | " + " | ".join(poolers) + " |")
    print("|---|---|" + "---:|" * len(poolers))
    messages = []
    for scen in scens:
        per = {}
        for pooler in poolers:
            r = load(a.results, scen, pooler)
            if scen in ("outage", "blackhole"):
                rows = outage_rows(r, a.outage_clients, "pg_ctl stop" if scen == "outage" else "switch to black hole")
            elif scen == "shed":
                rows = shed_rows(r, a.qwt)
            else:
                rows = flood_rows(r, a.results, pooler)
            if rows is None:
                rows = [("result", "failed: " + str(r.get("error", "?")).replace("|", "\\|")[:200])]
            if "pooler_cpu_s" in r:
                rows.append(("pooler CPU s (client logins included) / still running after",
                             f"{r['pooler_cpu_s']} / {'yes' if r.get('pooler_alive_after', True) else '**no** (crashed?)'}"))
            per[pooler] = rows
            for k, v in sorted(r.get("messages", {}).items()):
                if isinstance(v, dict):
                    for text, n in sorted(v.items(), key=lambda kv: -kv[1]):
                        messages.append((scen, pooler, k, f"{text} (×{n})"))
                else:
                    messages.append((scen, pooler, k, v))
        figures = []
        for pooler in poolers:
            for f, _ in per[pooler]:
                if f not in figures:
                    figures.append(f)
        first = True
        for f in figures:
            cells = []
            for pooler in poolers:
                d = dict(per[pooler])
                cells.append(str(d.get(f, "–")).replace("|", "\\|"))
            label = titles[scen] if first else ""
            first = False
            print(f"| {label} | {f} | " + " | ".join(cells) + " |")
    print()
    if messages:
        print("Messages seen per outcome (up to 5 distinct ones each, with counts):")
        print()
        for scen, pooler, k, v in messages:
            print(f"- {scen} / {pooler} / {k}: {v}")
        print()
    print("SQLSTATEs: " + "; ".join(f"{k} {v}" for k, v in SQLSTATES.items()) + ".")


if __name__ == "__main__":
    main()
