#!/usr/bin/env python3
"""The step load's table for benches/scenarios.sh: step_report.py RESULTS_DIR BUDGET BEFORE AFTER."""
import json
import os
import sys

d, budget, before, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
cells = ["direct", "pgweir-auto", "pgweir-20", "pgweir-40", "pgbouncer-20"]
res = {}
for c in cells:
    try:
        res[c] = json.load(open(os.path.join(d, f"step-{c}.json")))
    except Exception:  # noqa: BLE001 - a cell that did not run
        pass
base = res.get("direct", {}).get("tps_settled")
print(f"\n### Step load: {before} -> {after} clients of `SELECT pg_sleep(0.01)`\n")
print("| | tps after the step | tps settled (after 5 s) | share of direct | convergence (>= 90% of direct) "
      "| peak servers | pgweir p99 wait, ms (settled: median, max) | client p50 / p99, ms | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for c in cells:
    r = res.get(c)
    if r is None:
        continue
    share = f"{100 * r['tps_settled'] / base:.0f} %" if base else "-"
    conv = "-"
    if base:
        conv = "never"
        for i, n in enumerate(r["timeline"]):
            if n >= 0.9 * base:
                conv = f"{i + 1} s"
                break
    samples = [s for s in r.get("pgweir", []) if "error" not in s]
    peak = max((s["servers"] for s in samples), default=None)
    if peak is None:
        peak = {"direct": str(after), "pgbouncer-20": "20 (fixed)"}.get(c, "-")
    elif c == "pgweir-auto":
        peak = f"{peak} (budget {budget}{', OVER' if peak > budget else ''})"
    waits = [s["p99_wait_ms"] for s in samples if s.get("p99_wait_ms") is not None and s["t"] >= 5]
    wait = f"{sorted(waits)[len(waits) // 2]:.1f}, {max(waits):.1f}" if waits else "-"
    errs = ", ".join(f"{k}x{v}" for k, v in r["errors"].items()) or "0"
    print(f"| {c} | {r['tps']} | {r['tps_settled']} | {share} | {conv} | {peak} | {wait} "
          f"| {r['p50_ms']} / {r['p99_ms']} | {errs} |")
