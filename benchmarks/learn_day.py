"""``camwatch learn`` over a day of a 50-camera site: time and memory, beside ``camwatch replay`` of the same
capture in the same run (the engine alone: what learning adds is the difference).

    .venv/bin/python benchmarks/learn_day.py                  # 50 cameras, 24 h, video at 1 packet/s each
    .venv/bin/python benchmarks/learn_day.py --hours 6 --video-pps 0
    .venv/bin/python benchmarks/learn_day.py --smoke          # CI: 10 cameras, 1 h, no video

The capture is ``lab.sitelife.site_life``: 40 Hikvision and 10 Dahua cameras living their normal day (NTP
and the cloud VMS by name, syslog by address, the recorder pulling RTSP), the vendor phone-home of two cameras
and a scan 20 minutes in, plus RTP video from every camera to the recorder at ``--video-pps`` (real cameras
send about 400 packets/s each; a day of that is hundreds of gigabytes: the engine's cost for video is what
``replay.py`` measures, here it is thinned so a day fits on disk). It is written once to ``--out-dir``
(reused while its parameters match, as gen_site.py does).

Each tool runs ``--runs`` times, alternating: wall time from spawn to exit and the child's peak RSS
(``wait4``). Prints a Markdown table; JSON in ``OUT_DIR/learn_day.json`` with the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import sitelife
from lab.sitelife import LifeShape, site_life
from monitor.pcapwrite import PcapWriter

GENERATOR_VERSION = 1
CHUNK = 4096


def shape_of(args: argparse.Namespace) -> LifeShape:
    hik = round(args.cameras * 0.8)
    return LifeShape(
        hik_cameras=hik,
        dahua_cameras=args.cameras - hik,
        seconds=args.hours * 3600.0,
        scan=True,
        video_pps=args.video_pps,
    )


def capture(out_dir: Path, shape: LifeShape) -> tuple[Path, dict[str, Any]]:
    params = {
        "generator": "lab.sitelife.site_life",
        "version": GENERATOR_VERSION,
        **dataclasses.asdict(shape),
    }
    cameras = shape.hik_cameras + shape.dahua_cameras
    name = f"sitelife-{cameras}cam-{shape.seconds / 3600:g}h-{shape.video_pps:g}pps"
    path = out_dir / f"{name}.pcap"
    sidecar = out_dir / f"{name}.pcap.json"
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta.get("params") == params and meta.get("file_bytes") == path.stat().st_size:
            return path, meta
    except (OSError, ValueError):
        pass
    started = time.perf_counter()
    writer = PcapWriter(1)
    tmp = path.with_name(path.name + ".part")
    packets = 0
    with tmp.open("wb") as f:
        f.write(writer.header())
        frames = site_life(shape)
        while chunk := list(islice(frames, CHUNK)):
            packets += len(chunk)
            f.write(b"".join(writer.record(ts, frame) for ts, frame in chunk))
    os.replace(tmp, path)
    meta = {
        "params": params,
        "packets": packets,
        "file_bytes": path.stat().st_size,
        "generated_s": time.perf_counter() - started,
    }
    sidecar.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path, meta


def measure(argv: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code != 0:
        raise SystemExit(f"learn_day.py: {argv[1:3]} exited with {code}\n{stdout}\n{stderr}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "stdout": stdout, "stderr": stderr}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="camwatch learn over a day of a camera site")
    p.add_argument("--cameras", type=int, default=50)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument(
        "--video-pps", type=float, default=1.0, help="RTP packets per second per camera (default 1)"
    )
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "out")
    p.add_argument("--smoke", action="store_true", help="10 cameras, 1 h, no video, 1 run")
    args = p.parse_args(argv)
    if args.smoke:
        args.cameras, args.hours, args.video_pps, args.runs = 10, 1.0, 0.0, 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    pcap, meta = capture(args.out_dir, shape_of(args))
    base = args.out_dir / "sitelife-base.yaml"
    base.write_text(sitelife.LIFE_POLICY, encoding="utf-8")
    camwatch = [sys.executable, "-m", "agents.cli"]
    learned = args.out_dir / "sitelife-learned.yaml"
    tools = {
        "camwatch learn (--mud)": [
            *camwatch,
            "learn",
            str(pcap),
            "--policy",
            str(base),
            "--out",
            str(learned),
            "--mud",
            str(args.out_dir / "sitelife-mud"),
        ],
        "camwatch replay (the engine alone)": [
            *camwatch,
            "replay",
            str(pcap),
            "--policy",
            str(base),
            "--alerts",
            os.devnull,
        ],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in tools}
    for run in range(args.runs):
        order = list(tools.items())
        for name, cmd in order if run % 2 == 0 else reversed(order):
            runs[name].append(measure(cmd))
            print(f"{name}: run {run + 1}: {runs[name][-1]['wall_s']:.1f} s", file=sys.stderr)
    rows = []
    for name, results in runs.items():
        walls = sorted(r["wall_s"] for r in results)
        rows.append(
            {
                "tool": name,
                "median_s": walls[len(walls) // 2],
                "min_s": walls[0],
                "max_s": walls[-1],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
                "packets_per_s": meta["packets"] / walls[len(walls) // 2],
            }
        )
    report_lines = [line for line in runs["camwatch learn (--mud)"][-1]["stdout"].splitlines() if line]
    print(
        f"capture: {pcap.name}: {meta['packets']:,} packets, {meta['file_bytes'] / 2**20:,.0f} MiB, "
        f"{args.cameras} cameras, {args.hours:g} h, video {args.video_pps:g} packets/s per camera\n"
    )
    print("| tool | median s | min-max s | packets/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['tool']} | {row['median_s']:.1f} | {row['min_s']:.1f}-{row['max_s']:.1f} | "
            f"{row['packets_per_s']:,.0f} | {row['peak_rss_mib']:,.0f} |"
        )
    print("\n" + "\n".join(report_lines[:4]))
    report = {
        "smoke": args.smoke,
        "capture": {"file": str(pcap), **meta},
        "runs": args.runs,
        "results": rows,
        "learn_report": report_lines,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    (args.out_dir / "learn_day.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
