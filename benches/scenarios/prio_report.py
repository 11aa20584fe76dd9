#!/usr/bin/env python3
"""The priority and dedup tables (markdown) of benches/scenarios.sh from the cells'
JSON files: RESULTS_DIR/{priority,dedup}-{pgweir,pgbouncer}.json.

Usage: prio_report.py RESULTS_DIR "POOLERS" "SCENARIOS" DESCRIPTION_PRIORITY DESCRIPTION_DEDUP
"""
import json
import os
import sys

NAMES = {"pgweir": "pgweir", "pgbouncer": "PgBouncer"}


def load(results, scen, pooler):
    try:
        return json.load(open(os.path.join(results, f"{scen}-{pooler}.json")))
    except Exception as e:  # noqa: BLE001 - a missing cell is reported, not fatal
        return {"error": f"no result ({type(e).__name__})"}


def errors(d):
    return ", ".join(f"{k}×{v}" for k, v in sorted(d.items())) or "none"


def table(rows, poolers, cells):
    out = ["| | " + " | ".join(NAMES[p] for p in poolers) + " |",
           "|---|" + "---:|" * len(poolers)]
    for label, f in rows:
        vals = []
        for p in poolers:
            c = cells[p]
            if "error" in c:
                vals.append(c["error"][:80])
                continue
            try:
                vals.append(f(c))
            except Exception:  # noqa: BLE001
                vals.append("–")
        out.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(out)


def priority(results, poolers, desc):
    cells = {p: load(results, "priority", p) for p in poolers}

    def ratio(c):
        return f"{100.0 * c['critical']['p99_ms'] / c['low']['p99_ms']:.1f} %"

    rows = [
        ("critical p50 / p99 latency (ms)", lambda c: f"{c['critical']['p50_ms']} / {c['critical']['p99_ms']}"),
        ("low p50 / p99 latency (ms)", lambda c: f"{c['low']['p50_ms']} / {c['low']['p99_ms']}"),
        ("critical p99 as a share of low's", ratio),
        ("queries: critical / low", lambda c: f"{c['critical']['queries']} / {c['low']['queries']}"),
        ("low clients that completed work",
         lambda c: f"{c['low']['clients_done']} of {c['low']['clients']}"),
        ("critical clients that completed work",
         lambda c: f"{c['critical']['clients_done']} of {c['critical']['clients']}"),
        ("longest query: critical / low (ms)", lambda c: f"{c['critical']['max_ms']} / {c['low']['max_ms']}"),
        ("errors", lambda c: errors({**c["critical"]["errors"], **c["low"]["errors"]})),
        ("pooler CPU (s)", lambda c: str(c["pooler_cpu_s"])),
    ]
    print(f"### Priority: {desc}\n")
    print(table(rows, poolers, cells))
    print()


def dedup(results, poolers, desc):
    cells = {p: load(results, "dedup", p) for p in poolers}
    rows = [
        ("server executions per round", lambda c: ", ".join(str(r["executions"]) for r in c["rounds"])),
        ("clients with the full, correct answer per round",
         lambda c: ", ".join(f"{r['correct']}/{c['clients']}" for r in c["rounds"])),
        ("client latency p50 / max per round (ms)",
         lambda c: ", ".join(f"{r['p50_ms']}/{r['max_ms']}" for r in c["rounds"])),
        ("errors", lambda c: errors({k: v for r in c["rounds"] for k, v in r["errors"].items()})),
        ("pooler CPU (s)", lambda c: str(c["pooler_cpu_s"])),
    ]
    print(f"### Dedup: {desc}\n")
    print(table(rows, poolers, cells))
    print()


def main():
    results, poolers, scenarios, desc_p, desc_d = sys.argv[1:6]
    poolers = poolers.split()
    scenarios = scenarios.split()
    if "priority" in scenarios:
        priority(results, poolers, desc_p)
    if "dedup" in scenarios:
        dedup(results, poolers, desc_d)


if __name__ == "__main__":
    main()
