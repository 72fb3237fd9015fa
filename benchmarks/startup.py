"""`camwatch replay` start-up: a one-packet capture, against peers that start the same way, in the same run.

    .venv/bin/python benchmarks/startup.py [--runs 21]
    .venv/bin/python benchmarks/startup.py --smoke    # CI: 2 runs each, checks that they run (no measurement)

Every command is a fresh process of the venv's interpreter (what a user waits for: interpreter start,
imports, the work, exit), run round-robin `--runs` times (the order reversed every other round, so the
machine's noise hits every command alike); the median and minimum wall-clock times are reported, and the
median CPU time (user + system, from `os.wait4`), which a busy shared machine inflates less than wall time:

- `python -c pass`: the interpreter alone (the venv's `site`, with its .pth files);
- `python -c "import numpy"`: the floor of any tool that decodes in numpy, as camwatch does;
- `dpkt, one packet`: `benchmarks/peers/dpkt_flows.py` on the same capture (a pure-Python peer that
  reads the packet and builds its flow table);
- `camwatch --version`: camwatch's own start-up (argument parsing), no engine;
- `camwatch replay` on the one-packet capture (the issue's target: at most 0.15 s), alerts to /dev/null.

The capture is one UDP packet of a watched camera to an address outside its allowlist (it raises two
alerts: the engine, the rules and the alert writer all run). Prints a Markdown table and writes JSON to
`benchmarks/out/startup.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 0.15
# Byte-compiled modules, as the setup leaves them: the untimed first run writes any missing .pyc (an
# environment with PYTHONDONTWRITEBYTECODE would compile every module at every start instead).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def one_packet_capture(path: Path) -> None:
    from lab import floods
    from monitor.pcapwrite import pcap_bytes

    path.write_bytes(pcap_bytes([next(floods.flows(1))]))


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one run of ``argv`` (which must succeed)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--smoke", action="store_true", help="2 runs each: CI's check that this runs")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out")
    args = ap.parse_args()
    runs = 2 if args.smoke else args.runs
    args.out_dir.mkdir(parents=True, exist_ok=True)
    pcap = args.out_dir / "one-packet.pcap"
    one_packet_capture(pcap)
    py = sys.executable
    camwatch = str(Path(py).with_name("camwatch"))
    commands = {
        "python -c pass": [py, "-c", "pass"],
        'python -c "import numpy"': [py, "-c", "import numpy"],
        "dpkt, one packet (peers/dpkt_flows.py)": [py, str(HERE / "peers" / "dpkt_flows.py"), str(pcap)],
        "camwatch --version": [camwatch, "--version"],
        "camwatch replay (one packet)": [camwatch, "replay", str(pcap), "--alerts", os.devnull],
    }
    for argv in commands.values():  # once untimed: byte-compiled modules and the files in the page cache
        timed(argv)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    load_before = os.getloadavg()
    for i in range(runs):
        order = list(commands) if i % 2 == 0 else list(reversed(commands))
        for name in order:
            times[name].append(timed(commands[name]))
    load_after = os.getloadavg()
    rows = []
    for name, samples in times.items():
        walls = [w for w, _ in samples]
        cpus = [c for _, c in samples]
        rows.append(
            {
                "command": name,
                "argv": commands[name],
                "median_s": round(statistics.median(walls), 4),
                "min_s": round(min(walls), 4),
                "median_cpu_s": round(statistics.median(cpus), 4),
                "runs": [round(w, 4) for w in walls],
            }
        )
    replay = rows[-1]
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "runs": runs,
        "target_s": TARGET_S,
        "replay_median_s": replay["median_s"],
        "meets_target": replay["median_s"] <= TARGET_S,
        "results": rows,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    (args.out_dir / "startup.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{runs} runs each, round-robin; load {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print("| command | median s | min s | median CPU s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['command']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['median_cpu_s']:.3f} |")
    verdict = "meets" if report["meets_target"] else "misses"
    median = replay["median_s"]
    print(f"camwatch replay, one packet: median {median:.3f} s, {verdict} the {TARGET_S} s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
