"""Stream probe cost: camwatch's probe against a one-process PyAV loop on the same lab camera.

    .venv/bin/python benchmarks/probe.py                       # 5 runs each, 4 s probes, 640x360@15
    .venv/bin/python benchmarks/probe.py --runs 3 --width 1280 --height 720 --fps 25
    .venv/bin/python benchmarks/probe.py --smoke               # CI: one short probe each, not a measurement

camwatch's probe (`agents.probe.scheduler.run_probe`) runs two child processes per probe: PyAV opens the
RTSP stream, decodes for ``--duration`` seconds and samples frames; OpenCV then judges them (frozen, black,
covered) and writes a snapshot. The peer is the obvious alternative: one child process that opens the same
stream with PyAV, decodes for the same time and computes the same kind of image statistics with numpy as it
goes (mean luma, frame difference). Both watch one `lab.rtsp_server.RtspCameraServer` served from
this process over loopback; runs alternate between the two (the order flips every round).

Reported per tool: wall time of one probe (open to verdict), CPU of its child processes (user + system,
from getrusage of the children), and that CPU relative to the peer. Prints a Markdown table and writes the
runs as JSON to ``benchmarks/out/probe.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.config import AgentConfig  # noqa: E402
from agents.probe.scheduler import run_probe  # noqa: E402
from lab.rtsp_server import RtspCameraServer  # noqa: E402
from lab.video import VideoSpec  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "probe.json"

# The peer: decode for a while, keep per-frame luma statistics, report what it saw.
PEER = r"""
import json, sys, time
import av, numpy as np
url, duration = sys.argv[1], float(sys.argv[2])
opened = time.monotonic()
with av.open(url, options={"rtsp_transport": "tcp", "analyzeduration": "1000000"}, timeout=(5, 5)) as c:
    stream = c.streams.video[0]
    frames, diffs, lumas, prev, start = 0, [], [], None, None
    for frame in c.decode(stream):
        now = time.monotonic()
        start = start or now
        gray = frame.to_ndarray(format="gray").astype(np.int16)
        lumas.append(float(gray.mean()))
        if prev is not None:
            diffs.append(float(np.abs(gray - prev).mean()))
        prev = gray
        frames += 1
        if now - start >= duration:
            break
print(json.dumps({"frames": frames, "fps": frames / max(time.monotonic() - start, 1e-9),
                  "mean_luma": sum(lumas) / len(lumas), "mean_difference": sum(diffs) / max(len(diffs), 1),
                  "width": stream.codec_context.width, "height": stream.codec_context.height}))
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CameraThread:
    """The lab camera served from a background event loop."""

    def __init__(self, spec: VideoSpec) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = RtspCameraServer(spec, host="127.0.0.1", port=0)
        self.thread = threading.Thread(target=self.loop.run_forever, name="camera", daemon=True)

    def __enter__(self) -> CameraThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def camwatch_probe(url: str, duration: float) -> dict[str, Any]:
    text = (
        f"site: bench\ncapture:\n  interfaces: [lo]\nrun_as_user: null\nstate_dir: {tempfile.gettempdir()}\n"
        f"stream_probe:\n  duration: {duration:g}s\n  timeout: {duration + 20:g}s\n"
        f"  cameras:\n    - name: bench\n      url: {url}\n"
    )
    config = AgentConfig.from_yaml(text, "bench.yaml", base_dir=Path(tempfile.gettempdir()))
    probe = config.stream_probe
    assert probe is not None
    with tempfile.TemporaryDirectory() as work:
        result = asyncio.run(run_probe(probe.cameras[0], url, probe, Path(work), snapshot=True))
    if not result.up or result.image is None:
        raise SystemExit(f"camwatch probe failed: {result.capture.error or result.image_error}")
    return {"frames": result.capture.frames, "fps": result.capture.fps, "problem": result.image.problem}


def peer_probe(url: str, duration: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", PEER, url, str(duration)],
        capture_output=True,
        text=True,
        timeout=duration + 30,
    )
    if proc.returncode != 0:
        raise SystemExit(f"peer failed: {proc.stderr.strip()[-500:]}")
    return dict(json.loads(proc.stdout))


def timed(run: Callable[[str, float], dict[str, Any]], url: str, duration: float) -> dict[str, Any]:
    cpu0, t0 = children_cpu(), time.monotonic()
    report = run(url, duration)
    return {"wall_s": time.monotonic() - t0, "cpu_s": children_cpu() - cpu0, "report": report}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument(
        "--smoke", action="store_true", help="check that it runs (CI): 1 run of 1 s probes at 320x180@10"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.duration, args.width, args.height, args.fps = 1, 1.0, 320, 180, 10
    spec = VideoSpec(width=args.width, height=args.height, fps=args.fps, gop=2 * args.fps)
    tools: dict[str, Callable[[str, float], dict[str, Any]]] = {
        "camwatch probe (PyAV child + OpenCV child)": camwatch_probe,
        "peer: one PyAV child decoding with numpy stats": peer_probe,
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in tools}
    with CameraThread(spec) as camera:
        url = camera.server.url("127.0.0.1")
        for i in range(args.runs):
            order = list(tools.items()) if i % 2 == 0 else list(reversed(tools.items()))
            for name, run in order:
                r = timed(run, url, args.duration)
                runs[name].append(r)
                sys.stderr.write(f"run {i + 1}/{args.runs}: {name}: {r['wall_s']:.2f} s wall, "
                                 f"{r['cpu_s']:.2f} s CPU, {r['report']}\n")  # fmt: skip
    peer_cpu = statistics.median(r["cpu_s"] for r in runs[list(tools)[1]])
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; camera "
        f"{spec.width}x{spec.height}@{spec.fps} H.264 over RTSP/TCP on loopback; {args.duration:g} s watched "
        f"per probe; median of {args.runs} runs, tools interleaved.",
        "",
        "| tool | wall s per probe | child CPU s per probe | CPU vs peer | frames decoded |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        cpu = statistics.median(r["cpu_s"] for r in rs)
        lines.append(
            f"| {name} | {statistics.median(r['wall_s'] for r in rs):.2f} | {cpu:.2f} | "
            f"{cpu / peer_cpu:.2f}x | {statistics.median(r['report']['frames'] for r in rs):.0f} |"
        )
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"spec": vars(args) | {"json": str(args.json)}, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
