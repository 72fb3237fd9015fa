"""Replay throughput of `camwatch replay` against peers, measured in the same run, on two captures.

    .venv/bin/python benchmarks/replay.py [--packets 1000000] [--runs 5] [--capture site|short-flows|both]
    .venv/bin/python benchmarks/replay.py --smoke      # CI: everything once on 20,000 packets, not timed

For each capture (`site`: 50 long RTP flows, camwatch's best case, by `benchmarks/gen_site.py`;
`short-flows`: about 180,000 flows of 5-6 packets per million, the worst case, by
`benchmarks/gen_short_flows.py`):

1. Generates (or reuses) the capture.
2. Checks correctness first: camwatch's flow records and the dpkt peer's flow table must agree
   (flow count, packets, bytes, and every flow's per-direction counts); it stops loudly if not.
   These two runs also bring the capture into the page cache, so timed runs do not hit the disk.
3. Times whole processes (spawn to exit: interpreter start, imports, reading, output), each tool
   `--runs` times, round-robin so that machine noise hits every tool alike; the median is kept.
   Peak RSS is the child's own `ru_maxrss` from `os.wait4`.

Prints a Markdown table on stdout (progress goes to stderr) and writes the same as JSON to
`benchmarks/out/replay.json`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "out"
PEERS = HERE / "peers"
BIN = Path(sys.executable).parent  # the venv's bin/: camwatch's console script lives next to python

# One flow, comparable between camwatch's JSON records and the dpkt peer's:
# (proto, vlan outer, vlan inner, src ip, src port, src packets, src bytes, dst ..., duration µs).
FlowSig = tuple[int, int, int, str, int, int, int, str, int, int, int, int]


@dataclass
class Run:
    """One whole-process measurement."""

    wall_s: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Tool:
    name: str
    argv: list[str]
    packets: int  # packets the tool handles (the scapy peer: a subset)
    note: str = ""
    reference: bool = False  # not a flow-table tool: a floor or a ceiling for context
    runs: list[Run] = field(default_factory=list)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(argv: list[str]) -> Run:
    """Run `argv` to completion; wall clock from spawn to reap, and the child's own peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        # wait4 rather than getrusage(RUSAGE_CHILDREN): the latter's ru_maxrss is the maximum over
        # all children reaped so far, so a small process after a big one would report the big one.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting
        out.seek(0)
        err.seek(0)
        return Run(wall, usage.ru_maxrss, proc.returncode, out.read().decode(), err.read().decode())


def checked(tool: str, run: Run) -> Run:
    if run.returncode != 0:
        raise SystemExit(
            f"replay.py: {tool} exited with {run.returncode}\nstdout: {run.stdout}\nstderr: {run.stderr}"
        )
    return run


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "dpkt": version("dpkt"),
        "scapy": version("scapy"),
        "camwatch": version("camwatch"),
        "platform": platform.platform(),
    }


# --- correctness -------------------------------------------------------------------------------

_CW_PACKETS = re.compile(r"camwatch: ([\d,]+) packets \(([\d,]+) bytes")
_CW_FLOWS = re.compile(r"camwatch: ([\d,]+) flows")
_CW_RATE = re.compile(r"\) in ([\d.]+) s \(([\d,]+) packets/s\)")


def camwatch_summary(stderr: str) -> dict[str, Any]:
    """Packets, bytes and flows from camwatch's stderr summary (and its own in-process time)."""
    p, f, r = _CW_PACKETS.search(stderr), _CW_FLOWS.search(stderr), _CW_RATE.search(stderr)
    if not (p and f and r):
        raise SystemExit(f"replay.py: cannot parse camwatch's summary:\n{stderr}")

    def num(text: str) -> int:
        return int(text.replace(",", ""))

    return {
        "packets": num(p[1]),
        "bytes": num(p[2]),
        "flows": num(f[1]),
        "engine_s": float(r[1]),
    }


def camwatch_flows(path: Path) -> Counter[FlowSig]:
    sigs: Counter[FlowSig] = Counter()
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            src, dst, net = rec["source"], rec["destination"], rec["network"]
            vo = int(net["vlan"]["id"]) if "vlan" in net else -1
            vi = int(net["inner"]["vlan"]["id"]) if "inner" in net else -1
            sigs[(
                int(net["iana_number"]), vo, vi,
                src["ip"], src.get("port", 0), src["packets"], src["bytes"],
                dst["ip"], dst.get("port", 0), dst["packets"], dst["bytes"],
                rec["event"]["duration"] // 1000,
            )] += 1  # fmt: skip
    return sigs


def dpkt_flows(path: Path) -> Counter[FlowSig]:
    sigs: Counter[FlowSig] = Counter()
    with path.open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            (s_ip, s_port, s_pk, s_by), (d_ip, d_port, d_pk, d_by) = rec["src"], rec["dst"]
            # dpkt's timestamps are float seconds of µs captures: round the duration to µs.
            dur_us = round((rec["end"] - rec["start"]) * 1e6)
            sigs[
                (rec["proto"], *rec["vlan"], s_ip, s_port, s_pk, s_by, d_ip, d_port, d_pk, d_by, dur_us)
            ] += 1
    return sigs


def compare_flow_files(cw: dict[str, Any], dp: dict[str, Any], cw_path: Path, dp_path: Path) -> list[str]:
    """What differs between camwatch's flow records and the dpkt peer's (empty: they agree)."""
    cw_sigs, dp_sigs = camwatch_flows(cw_path), dpkt_flows(dp_path)
    problems = []
    for what, a, b in (
        ("flows", cw["flows"], dp["flows"]),
        ("packets", cw["packets"], dp["packets"]),
        ("bytes", cw["bytes"], dp["bytes"]),
        ("flow records", sum(cw_sigs.values()), dp["flows"]),
        ("packets in flow records", sum(s[5] + s[9] for s in cw_sigs.elements()), dp["flow_packets"]),
        ("bytes in flow records", sum(s[6] + s[10] for s in cw_sigs.elements()), dp["flow_bytes"]),
    ):
        if a != b:
            problems.append(f"{what}: camwatch {a:,} != dpkt peer {b:,}")
    only_cw, only_dp = cw_sigs - dp_sigs, dp_sigs - cw_sigs
    if only_cw or only_dp:
        problems.append(
            f"{sum(only_cw.values())} flow(s) only in camwatch, {sum(only_dp.values())} only in dpkt"
        )
        problems += [f"  camwatch only: {s}" for s in list(only_cw)[:5]]
        problems += [f"  dpkt only:     {s}" for s in list(only_dp)[:5]]
    return problems


def verify(camwatch: list[str], dpkt_argv: list[str], expected_packets: int, out_dir: Path) -> dict[str, Any]:
    """camwatch and the dpkt peer must build the same flow table; raise SystemExit if not."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cw_path, dp_path = out_dir / "verify-camwatch-flows.jsonl", out_dir / "verify-dpkt-flows.jsonl"
    log("verify: camwatch with --flows ...")
    cw_run = checked("camwatch", measure([*camwatch, "--flows", str(cw_path), "--alerts", os.devnull]))
    log("verify: dpkt peer with --flows-out ...")
    dp_run = checked("dpkt peer", measure([*dpkt_argv, "--flows-out", str(dp_path)]))
    cw = camwatch_summary(cw_run.stderr)
    dp = json.loads(dp_run.stdout)
    # The flow files are compared in a child process: reading them makes a process big (a few hundred MiB
    # for the short-flow capture), and a child inherits its parent's peak RSS at spawn in ru_maxrss, so a
    # big benchmark process would show as the floor of every later tool's peak RSS.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        problems = pool.submit(compare_flow_files, cw, dp, cw_path, dp_path).result()
    if cw["packets"] != expected_packets:
        problems.append(f"packets: camwatch read {cw['packets']:,}, the capture has {expected_packets:,}")
    if dp["maybe_truncated"]:
        problems.append(f"the dpkt peer saw {dp['maybe_truncated']:,} frames as long as the snap length")
    if problems:
        raise SystemExit("replay.py: camwatch and the dpkt peer disagree:\n" + "\n".join(problems))
    totals = f"{cw['flows']:,} flows, {cw['packets']:,} packets, {cw['bytes']:,} bytes"
    log(f"verify: OK: {totals}; every flow's counts are equal")
    cw_path.unlink()
    dp_path.unlink()
    return {"flows": cw["flows"], "packets": cw["packets"], "bytes": cw["bytes"], "per_flow_match": True}


# --- report ------------------------------------------------------------------------------------


def summarise(tools: list[Tool], base: Tool) -> list[dict[str, Any]]:
    rows = []
    base_pps = base.packets / statistics.median(r.wall_s for r in base.runs)
    for t in tools:
        walls = [r.wall_s for r in t.runs]
        med = statistics.median(walls)
        pps = t.packets / med if t.packets else None
        rows.append({
            "tool": t.name,
            "argv": t.argv,
            "note": t.note,
            "reference": t.reference,
            "packets": t.packets,
            "median_s": round(med, 3),
            "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3),
            "packets_per_s": round(pps) if pps else None,
            "peak_rss_mib": round(max(r.maxrss_kib for r in t.runs) / 1024, 1),
            "vs_dpkt_loop": round(pps / base_pps, 2) if pps else None,
            "runs_s": [round(w, 3) for w in walls],
            "runs_rss_kib": [r.maxrss_kib for r in t.runs],
        })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| tool | packets | median s | packets/s | peak RSS MiB | vs dpkt loop | min–max s |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        pps = f"{r['packets_per_s']:,}" if r["packets_per_s"] else "—"
        ratio = f"{r['vs_dpkt_loop']:.2f}x" if r["vs_dpkt_loop"] else "—"
        packets = f"{r['packets']:,}" if r["packets"] else "—"
        lines.append(
            f"| {r['tool']} | {packets} | {r['median_s']:.2f} | {pps} | {r['peak_rss_mib']:.0f} | {ratio} "
            f"| {r['min_s']:.2f}–{r['max_s']:.2f} |"
        )
    return "\n".join(lines)


# The captures: (generator script, file name prefix, what it is).
CAPTURES = {
    "site": (
        "gen_site.py",
        "site",
        "camwatch's best case: 50 cameras' long RTP flows plus the scenario's control traffic",
    ),
    "short-flows": (
        "gen_short_flows.py",
        "short-flows",
        "the worst case: nothing but short flows (DNS, NTP, short HTTP connections, pings)",
    ),
}
SMOKE_PACKETS = 20_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="camwatch replay throughput against peers")
    p.add_argument(
        "--packets", type=int, default=None, help="packets in each generated capture (default 1000000)"
    )
    p.add_argument(
        "--runs", type=int, default=None, help="timed runs per tool; the median is reported (default 5)"
    )
    p.add_argument(
        "--capture",
        choices=[*CAPTURES, "both"],
        default="both",
        help="which capture: site (50 long RTP flows), short-flows (~180,000 short flows), both (default)",
    )
    p.add_argument(
        "--scapy-limit", type=int, default=None, help="packets the scapy peer decodes (default 50000)"
    )
    p.add_argument(
        "--out-dir", type=Path, default=OUT_DIR, help="captures and scratch files (default benchmarks/out)"
    )
    p.add_argument("--json", type=Path, default=None, help="JSON output (default OUT_DIR/replay.json)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"check that everything runs (CI): {SMOKE_PACKETS:,} packets, 1 run; not a measurement",
    )
    p.add_argument(
        "--camwatch",
        type=Path,
        metavar="CAMWATCH",
        help="the camwatch console script to measure (default: the one beside this interpreter)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="CAMWATCH",
        help="another camwatch console script (an older checkout's .venv/bin/camwatch), timed in the same "
        "rounds as a peer: its ratio to this camwatch and to the dpkt loop",
    )
    args = p.parse_args(argv)
    if args.baseline is not None and not args.baseline.is_file():
        p.error(f"--baseline {args.baseline}: no such file (give another checkout's .venv/bin/camwatch)")
    packets = args.packets or (SMOKE_PACKETS if args.smoke else 1_000_000)
    runs = args.runs or (1 if args.smoke else 5)
    scapy_limit = args.scapy_limit or (1_000 if args.smoke else 50_000)
    if runs < 1 or packets < 1 or scapy_limit < 1:
        p.error("--runs, --packets and --scapy-limit must be >= 1")
    json_path = args.json or args.out_dir / "replay.json"

    camwatch_bin = args.camwatch or BIN / "camwatch"
    if args.camwatch is not None and not camwatch_bin.is_file():
        p.error(f"--camwatch {camwatch_bin}: no such file")
    if not camwatch_bin.exists():
        found = shutil.which("camwatch")
        if found is None:
            raise SystemExit("replay.py: no camwatch console script next to the interpreter or on PATH")
        camwatch_bin = Path(found)

    info = machine()
    load_before = os.getloadavg()
    kinds = list(CAPTURES) if args.capture == "both" else [args.capture]
    sections: dict[str, dict[str, Any]] = {}
    texts = []
    for kind in kinds:
        section, text = bench_capture(
            kind, packets, runs, scapy_limit, args.out_dir, camwatch_bin, args.baseline
        )
        sections[kind] = section
        texts.append(text)
    load_after = os.getloadavg()
    head = (
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, numpy {info['numpy']}, "
        f"dpkt {info['dpkt']}, scapy {info['scapy']}, camwatch {info['camwatch']}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after\n"
        f"Whole-process wall time (spawn to exit), median of {runs} runs, tools interleaved."
    )
    ratios = ", ".join(f"{kind} {sections[kind]['camwatch_vs_dpkt_loop']:.2f}x" for kind in kinds)
    tail = f"\n\ncamwatch replay --flows vs the dpkt loop: {ratios}"
    if args.baseline is not None:
        tail += "\ncamwatch replay --flows vs the baseline (time ratio, < 1 is faster): " + ", ".join(
            f"{kind} {sections[kind]['camwatch_vs_baseline']:.3f}" for kind in kinds
        )
    print(head + "\n\n" + "\n\n".join(texts) + tail)

    json_path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {**info, "loadavg_before": load_before, "loadavg_after": load_after},
        "runs": runs,
        "smoke": args.smoke,
        "timing": "whole process wall clock, spawn to exit; median of runs; peak RSS from os.wait4",
        "captures": sections,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    log(f"wrote {json_path}")
    return 0


def bench_capture(
    kind: str,
    packets: int,
    runs: int,
    scapy_limit: int,
    out_dir: Path,
    camwatch_bin: Path,
    baseline_bin: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """Generate (or reuse) one capture, verify, time every tool on it; its JSON section and its text."""
    py = sys.executable
    script, prefix, what = CAPTURES[kind]
    pcap = out_dir / f"{prefix}-{packets}.pcap"
    gen = checked(script, measure([py, str(HERE / script), str(pcap), "--packets", str(packets)]))
    log(gen.stdout.strip())
    capture = json.loads(pcap.with_name(pcap.name + ".json").read_text(encoding="utf-8"))
    n = capture["packets"]

    replay = [str(camwatch_bin), "replay", str(pcap)]
    dpkt_argv = [py, str(PEERS / "dpkt_flows.py"), str(pcap)]
    verification = verify(replay, dpkt_argv, n, out_dir)

    scapy_n = min(scapy_limit, n)
    cw_flows = Tool(
        "camwatch replay --flows /dev/null", [*replay, "--flows", os.devnull, "--alerts", os.devnull], n
    )
    cw_plain = Tool("camwatch replay (no --flows)", [*replay, "--alerts", os.devnull], n)
    dpkt_loop = Tool("dpkt loop (flow table)", dpkt_argv, n)
    scapy = Tool(
        f"scapy decode (first {scapy_n:,} packets only)",
        [py, str(PEERS / "scapy_decode.py"), str(pcap), "--limit", str(scapy_n)],
        scapy_n,
        f"subset: the first {scapy_n:,} packets; its fixed import cost weighs more on a short run",
    )
    tools = [
        cw_flows,
        dpkt_loop,
        cw_plain,
        Tool("struct record walk", [py, str(PEERS / "struct_walk.py"), str(pcap)], n,
             "reads records only, no decoding: the floor of a per-packet Python loop", reference=True),
        scapy,
        Tool("startup only: camwatch --version", [str(camwatch_bin), "--version"], 0,
             "interpreter start and camwatch's imports, no packets", reference=True),
    ]  # fmt: skip
    baseline = None
    if baseline_bin is not None:
        baseline = Tool(
            "baseline camwatch replay --flows /dev/null",
            [str(baseline_bin), "replay", str(pcap), "--flows", os.devnull, "--alerts", os.devnull],
            n,
            f"the same command with {baseline_bin}",
        )
        tools.insert(1, baseline)
    notes = []
    tcpdump = shutil.which("tcpdump")
    if tcpdump:
        tools.insert(4, Tool("tcpdump -n -r (to /dev/null)", [tcpdump, "-n", "-r", str(pcap)], n,
                             "C reference: decodes and prints every packet", reference=True))  # fmt: skip
    else:
        notes.append("tcpdump is not installed: its reference row is skipped")

    for i in range(runs):
        # Alternate the order each round so that no tool always runs right after the same one.
        order = tools if i % 2 == 0 else tools[::-1]
        for t in order:
            run = checked(t.name, measure(t.argv))
            if t is cw_flows or t is cw_plain or t is baseline:
                summary = camwatch_summary(run.stderr)
                if summary["packets"] != n:
                    raise SystemExit(
                        f"replay.py: {t.name} read {summary['packets']:,} packets, expected {n:,}"
                    )
            t.runs.append(run)
            log(f"{kind} run {i + 1}/{runs}: {t.name}: {run.wall_s:.2f} s, {run.maxrss_kib / 1024:.0f} MiB")

    rows = summarise(tools, dpkt_loop)
    engine_s = statistics.median(camwatch_summary(r.stderr)["engine_s"] for r in cw_flows.runs)
    notes.append(
        f"camwatch's own in-process figure (--flows /dev/null; excludes interpreter start and imports): "
        f"median {engine_s:.2f} s, {n / engine_s:,.0f} packets/s"
    )
    scapy_loop = statistics.median(json.loads(r.stdout)["loop_seconds"] for r in scapy.runs)
    scapy_wall = statistics.median(r.wall_s for r in scapy.runs)
    notes.append(
        f"scapy decoded only the first {scapy_n:,} packets (a subset); its loop alone ran at "
        f"{scapy_n / scapy_loop:,.0f} packets/s (whole process: {scapy_n / scapy_wall:,.0f})"
    )
    vs_baseline = None
    if baseline is not None:
        vs_baseline = statistics.median(r.wall_s for r in cw_flows.runs) / statistics.median(
            r.wall_s for r in baseline.runs
        )
        notes.append(f"this camwatch took {vs_baseline:.3f}x the baseline's time (median against median)")
    table = markdown(rows)
    text = (
        f"Capture `{kind}` ({what}): {pcap.name}, {n:,} packets, {capture['frame_bytes']:,} frame bytes, "
        f"{capture['capture_seconds']:.1f} s of traffic, {verification['flows']:,} flows "
        f"(camwatch and the dpkt loop agree on every flow)\n\n"
        + table
        + "\n\n"
        + "\n".join(f"- {note}" for note in notes)
    )
    section = {
        "capture": {"kind": kind, "what": what, "path": str(pcap), **capture},
        "verification": verification,
        "results": rows,
        "camwatch_vs_dpkt_loop": rows[0]["vs_dpkt_loop"],
        "camwatch_vs_baseline": vs_baseline,
        "notes": notes,
        "markdown": table,
    }
    return section, text


if __name__ == "__main__":
    sys.exit(main())
