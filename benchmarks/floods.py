"""Floods at full size: every engine table within its bound, evictions counted, resident memory in budget.

    .venv/bin/python benchmarks/floods.py               # 1M flows, 100k MACs, 1M DNS names, 100k clients
    .venv/bin/python benchmarks/floods.py --scale 0.1   # a tenth of each
    .venv/bin/python benchmarks/floods.py --smoke       # CI: 2,000 of each, checks itself, not a measurement

Each flood (`lab/floods.py`) runs in its own process on the demo site (`examples/site-policy.yaml`) with the
agent's default bounds (`limits.max_flows` 200,000, `limits.max_devices` 50,000; the engine's fixed bounds,
docs/design.md §6), fed in batches of 4,096 as a capture source hands them over, then `finish()`. For each:
every table's size against its bound and what it evicted (`lab.floods.table_report`, the counts
`camwatch_table_evictions_total` exports), the peak and final resident memory of the process, and the peer
in the same run: the same process with the engine built and nothing fed (its baseline).

The budget (docs/design.md §6): resident memory at most RSS_BUDGET_MIB per flood at full size. The run
fails (exit 1) if a table is over its bound or a flood is over the budget.

Prints a Markdown table and writes JSON to `benchmarks/out/floods.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

RSS_BUDGET_MIB = 512  # docs/design.md §6


def _rss_kib() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * 4


def one(kind: str, n: int) -> dict[str, Any]:
    """Run one flood in this process (the child's side)."""
    from lab import floods
    from monitor.engine import Engine
    from monitor.policy import SitePolicy
    from monitor.vendors.oui import VendorTable

    policy_path = ROOT / "examples" / "site-policy.yaml"
    policy = SitePolicy.from_yaml(policy_path.read_bytes(), source=str(policy_path))
    engine = Engine(policy, VendorTable.load())
    baseline = _rss_kib()
    alerts = packets = 0
    start = time.perf_counter()
    for batch in floods.as_batches(floods.FLOODS[kind](n)):
        packets += len(batch)
        alerts += len(engine.feed(batch).alerts)
    during = _rss_kib()
    report = floods.table_report(engine)  # before finish(): the tables as the flood left them
    alerts += len(engine.finish().alerts)
    folded = sum(engine.gate.incidents.folded.values())  # raised, folded into their device's incident
    return {
        "flood": kind,
        "n": n,
        "packets": packets,
        "seconds": round(time.perf_counter() - start, 1),
        "alerts": alerts,
        "alerts_folded": folded,
        "tables": report,
        "evictions": engine.evictions(),
        "rss_baseline_kib": baseline,
        "rss_end_kib": during,
        "rss_peak_kib": max(during, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes")
    ap.add_argument("--only", choices=("flows", "macs", "dns", "rtsp", "tunnels"), action="append")
    ap.add_argument("--smoke", action="store_true", help="2,000 of each: CI's check that this runs")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child[0], int(args.child[1]))))
        return 0

    from lab.floods import FULL_SIZE

    results = []
    for kind in args.only or list(FULL_SIZE):
        n = 2000 if args.smoke else max(1, int(FULL_SIZE[kind] * args.scale))
        res = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(n)], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            print(f"{kind}: the flood failed\n{res.stderr}", file=sys.stderr)
            return 1
        results.append(json.loads(res.stdout.splitlines()[-1]))
    problems = []
    for r in results:
        for table, row in r["tables"].items():
            if row["bound"] is not None and row["size"] > row["bound"]:
                problems.append(f"{r['flood']}: {table} holds {row['size']:,} > its bound {row['bound']:,}")
        if not args.smoke and args.scale >= 1 and r["rss_peak_kib"] > RSS_BUDGET_MIB * 1024:
            problems.append(f"{r['flood']}: peak RSS {r['rss_peak_kib'] // 1024} MiB > {RSS_BUDGET_MIB} MiB")
    report = {
        "smoke": args.smoke,
        "scale": args.scale,
        "rss_budget_mib": RSS_BUDGET_MIB,
        "python": platform.python_version(),
        "results": results,
        "problems": problems,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "floods.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("| flood | n | packets | s | alerts | RSS baseline | RSS at end | peak RSS | tables at the bound |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        full = ", ".join(
            f"{t} {row['size']:,} (evicted {row['evicted']:,})"
            for t, row in r["tables"].items()
            if row["bound"] is not None and row["size"] >= row["bound"] and row["evicted"] is not None
        )
        print(
            f"| {r['flood']} | {r['n']:,} | {r['packets']:,} | {r['seconds']} | {r['alerts']:,} "
            f"| {r['rss_baseline_kib'] // 1024} MiB | {r['rss_end_kib'] // 1024} MiB "
            f"| {r['rss_peak_kib'] // 1024} MiB | {full or '-'} |"
        )
    for r in results:
        counted = {t: c for t, c in r["evictions"].items() if c}
        flows_evicted = r["tables"]["flows"]["evicted"]
        print(f"{r['flood']}: evictions {counted or 'none'}; flows evicted {flows_evicted:,}")
    for p in problems:
        print(f"PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
