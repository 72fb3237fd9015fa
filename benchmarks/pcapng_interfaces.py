"""Parsing a pcapng file of many interfaces: camwatch's reader against dpkt's and scapy's, in the same run.

    .venv/bin/python benchmarks/pcapng_interfaces.py [--blocks 100000] [--runs 5]
    .venv/bin/python benchmarks/pcapng_interfaces.py --smoke     # CI: 2,000 blocks, once, not a measurement

The capture (issue 16, defect 4) interleaves an Interface Description Block before every Enhanced Packet
Block, alternating microsecond and nanosecond interfaces: a writer that describes each packet's interface
anew (some capture appliances and merge tools do), and the worst case for a reader that rebuilds its
interface list per block (it was quadratic: 100,000 blocks took 324 s).

Each reader parses the whole file in this process (the file is read once into memory and stays in the page
cache); the readers run round-robin, `--runs` times each, and the median is reported:

- camwatch: `monitor.pcapfile.CaptureParser` (numpy batches: offsets, lengths, timestamps, link types);
- dpkt: `dpkt.pcapng.Reader`, iterating (timestamp, bytes). It keeps the *first* interface only: later
  interface blocks are skipped, so the nanosecond interfaces' timestamps come out wrong (reported);
- scapy: `scapy.utils.RawPcapNgReader`, iterating (bytes, metadata): it keeps every interface (a list it
  appends to), as camwatch does.

Correctness first: every reader must see every packet, and camwatch's and scapy's timestamps and link types
must match the ones written. Also timed once: the whole `camwatch replay` process on the file.

Prints a Markdown table and writes JSON to `benchmarks/out/pcapng_interfaces.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from monitor.pcapfile import CaptureParser  # noqa: E402  (path above)
from monitor.pcapwrite import (  # noqa: E402
    OPT_IF_TSRESOL,
    PCAPNG_IDB,
    pcapng_block,
    pcapng_epb,
    pcapng_option,
    pcapng_shb,
)

START_S = 1_700_000_000
# A 60-byte Ethernet/IPv4/UDP frame: what is inside does not matter to a reader.
FRAME = bytes.fromhex(
    "4419b6000001" "001132000002" "0800" "4500002e00004000401100000a1400010a140002" "1f9013c4001a0000"
) + bytes(18)  # fmt: skip


OPT_IF_NAME = 2


def idb(linktype: int, exponent: int, name: str | None) -> bytes:
    """An interface block with if_tsresol and, when given, an if_name (which makes each block unique)."""
    opts = [pcapng_option(OPT_IF_TSRESOL, bytes([exponent]))]
    if name is not None:
        opts.append(pcapng_option(OPT_IF_NAME, name.encode()))
    body = struct.pack("<HHI", linktype, 0, 0) + b"".join(opts) + pcapng_option(0, b"")
    return pcapng_block(PCAPNG_IDB, body)


def write_capture(path: Path, blocks: int, named: bool = False) -> list[tuple[int, int]]:
    """`blocks` blocks: an IDB then an EPB on it, alternately µs and ns, each interface named if `named`;
    returns (ts_ns, linktype) per packet."""
    expected: list[tuple[int, int]] = []
    parts = [pcapng_shb()]
    for i in range(blocks // 2):
        exponent = 6 if i % 2 == 0 else 9
        linktype = 1
        parts.append(idb(linktype, exponent, f"mirror{i}" if named else None))
        ts_ns = (START_S + i) * 1_000_000_000 + (i % 1000) * 1000
        parts.append(pcapng_epb(i, ts_ns // 10 ** (9 - exponent), FRAME))
        expected.append((ts_ns, linktype))
    path.write_bytes(b"".join(parts))
    return expected


def read_camwatch(data: bytes) -> tuple[list[int], list[int]]:
    parser = CaptureParser("bench.pcapng")
    batches = parser.feed(data) + parser.flush()
    ts = [int(t) for b in batches for t in b.ts_ns]
    lt = [int(x) for b in batches for x in b.linktype]
    return ts, lt


def read_dpkt(data: bytes) -> tuple[list[int], list[int]]:
    import dpkt

    reader = dpkt.pcapng.Reader(io.BytesIO(data))
    ts = [round(t * 1e9) for t, _ in reader]
    return ts, [reader.datalink()] * len(ts)


def read_scapy(path: Path) -> tuple[list[int], list[int]]:
    from scapy.utils import RawPcapNgReader

    ts: list[int] = []
    lt: list[int] = []
    with RawPcapNgReader(str(path)) as reader:
        for _, meta in reader:
            raw = (meta.tshigh << 32) | meta.tslow
            ts.append(raw * 1_000_000_000 // meta.tsresol)
            lt.append(meta.linktype)
    return ts, lt


# What is timed: each reader's own output, as a program would use it (camwatch: numpy batches; the peers:
# a (timestamp, bytes) or (bytes, metadata) per packet), counted. The conversions above are for the checks.


def count_camwatch(data: bytes) -> int:
    parser = CaptureParser("bench.pcapng")
    return sum(len(b) for b in parser.feed(data) + parser.flush())


def count_dpkt(data: bytes) -> int:
    import dpkt

    return sum(1 for _ in dpkt.pcapng.Reader(io.BytesIO(data)))


def count_scapy(path: Path) -> int:
    from scapy.utils import RawPcapNgReader

    with RawPcapNgReader(str(path)) as reader:
        return sum(1 for _ in reader)


def measure(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def bench_capture(path: Path, expected: list[tuple[int, int]], blocks: int, runs: int) -> dict[str, Any]:
    """Check every reader on one capture, then time them round-robin; the capture's report section."""
    data = path.read_bytes()
    readers: dict[str, Callable[[], tuple[list[int], list[int]]]] = {
        "camwatch CaptureParser": lambda: read_camwatch(data),
        "dpkt pcapng.Reader": lambda: read_dpkt(data),
        "scapy RawPcapNgReader": lambda: read_scapy(path),
    }
    # Correctness first.
    checks: dict[str, dict[str, Any]] = {}
    want_ts = [t for t, _ in expected]
    want_lt = [lt for _, lt in expected]
    for name, fn in readers.items():
        ts, lt = fn()
        checks[name] = {
            "packets": len(ts),
            "timestamps_right": ts == want_ts,
            "linktypes_right": lt == want_lt,
        }
        if len(ts) != len(expected):
            raise SystemExit(f"{name} read {len(ts)} packets, not {len(expected)}")
    for name in ("camwatch CaptureParser", "scapy RawPcapNgReader"):
        if not (checks[name]["timestamps_right"] and checks[name]["linktypes_right"]):
            raise SystemExit(f"{name} read wrong timestamps or link types: {checks[name]}")

    timed: dict[str, Callable[[], int]] = {
        "camwatch CaptureParser": lambda: count_camwatch(data),
        "dpkt pcapng.Reader": lambda: count_dpkt(data),
        "scapy RawPcapNgReader": lambda: count_scapy(path),
    }
    times: dict[str, list[float]] = {name: [] for name in timed}
    order = list(timed)
    for r in range(runs):
        for name in order if r % 2 == 0 else reversed(order):
            seconds, n = measure(timed[name])
            if n != len(expected):
                raise SystemExit(f"{name} counted {n} packets, not {len(expected)}")
            times[name].append(seconds)
            print(f"{path.name} run {r + 1}: {name} {seconds:.3f} s", file=sys.stderr, flush=True)

    # The whole command, once: interpreter, imports, the engine over one-packet flows, the summary.
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "agents.cli", "replay", str(path), "--alerts", os.devnull],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
        check=False,
    )
    replay_s = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"camwatch replay failed: {res.stderr}")
    rows = []
    camwatch_median = statistics.median(times["camwatch CaptureParser"])
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({
            "reader": name,
            "median_s": med,
            "min_s": min(ts),
            "max_s": max(ts),
            "blocks_per_s": blocks / med if med else 0.0,
            "vs_camwatch": med / camwatch_median if camwatch_median else 0.0,
            **checks[name],
        })  # fmt: skip
    return {"file": path.name, "bytes": len(data), "results": rows, "camwatch_replay_process_s": replay_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--blocks", type=int, default=100_000, help="interface + packet blocks (default 100000)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per reader (default 5)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out")
    ap.add_argument("--smoke", action="store_true", help="2,000 blocks, one run: checks it works (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.blocks, args.runs = 2000, 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    captures: dict[str, dict[str, Any]] = {}
    for kind, named in (("repeated", False), ("named", True)):
        path = args.out_dir / f"interfaces-{kind}-{args.blocks}.pcapng"
        expected = write_capture(path, args.blocks, named)
        captures[kind] = bench_capture(path, expected, args.blocks, args.runs)
    packets = args.blocks // 2
    for kind, section in captures.items():
        what = ("the same two interface descriptions repeated" if kind == "repeated"
                else "every interface named (each block unique)")  # fmt: skip
        print(f"\n### pcapng, {args.blocks:,} blocks: {packets:,} interfaces ({what}), {packets:,} packets, "
              f"{section['bytes'] / 1e6:.1f} MB; {args.runs} runs\n")  # fmt: skip
        print("| reader | median s | min-max s | blocks/s | time vs camwatch | timestamps right |")
        print("|---|---:|---:|---:|---:|---|")
        for row in section["results"]:
            print(f"| {row['reader']} | {row['median_s']:.3f} | {row['min_s']:.3f}-{row['max_s']:.3f} | "
                  f"{row['blocks_per_s']:,.0f} | {row['vs_camwatch']:.2f}x | "
                  f"{'yes' if row['timestamps_right'] else 'no (first interface only)'} |")  # fmt: skip
        replay_s = section["camwatch_replay_process_s"]
        print(f"\n`camwatch replay` on the file, whole process once: {replay_s:.2f} s")
    load_after = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({cores} cores)")
    report = {
        "smoke": args.smoke,
        "blocks": args.blocks,
        "packets": packets,
        "runs": args.runs,
        "captures": captures,
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
    }
    (args.out_dir / "pcapng_interfaces.json").write_text(
        json.dumps(report, indent=1) + "\n", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
