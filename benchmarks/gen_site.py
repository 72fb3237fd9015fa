"""Write a generated camera-site capture for the replay benchmark.

    python benchmarks/gen_site.py OUT.pcap --packets 1000000

The traffic is `lab.scenario.site_packets(benchmark_shape(N))`: 50 cameras sending RTP video
to the recorder at 400 packets/s each, plus the scenario's control traffic (RTSP, DNS, NTP,
phone-home, office browsing). The file holds exactly N packets: the shape is stretched by a
second and the stream cut at N, because `benchmark_shape` gives only *about* N packets (video
starts half a second in).

Frames are streamed to disk; nothing holds the whole capture. A sidecar `OUT.pcap.json` records
the packet count and generator parameters; a later call with the same parameters reuses the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repository root holds the `agents` and `monitor` packages
# (they are also installed editable in the venv, this only matters for other interpreters).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.scenario import benchmark_shape, site_packets
from monitor.pcapwrite import PcapWriter

# Bump when the way the file is produced changes, so that cached captures are rebuilt.
GENERATOR_VERSION = 1
SNAPLEN = 262144
# Records are joined into chunks of this many before each write(): one syscall per ~1 MiB.
CHUNK = 1024


def parameters(packets: int) -> dict[str, Any]:
    """Everything that determines the file's content (the cache key)."""
    shape = benchmark_shape(packets)
    shape = dataclasses.replace(shape, seconds=shape.seconds + 1.0)
    return {
        "generator": "lab.scenario.site_packets",
        "generator_version": GENERATOR_VERSION,
        "packets": packets,
        "shape": dataclasses.asdict(shape),
        "linktype": 1,
        "snaplen": SNAPLEN,
    }


def sidecar_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def cached(out: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The sidecar of `out` if it matches `params` and the file still has the recorded size."""
    try:
        meta = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
        size = out.stat().st_size
    except (OSError, ValueError):
        return None
    if meta.get("params") != params or meta.get("file_bytes") != size:
        return None
    return dict(meta)


def generate(out: Path, packets: int) -> dict[str, Any]:
    """Write the capture (via a temporary name, so an interrupted run leaves no valid-looking file)."""
    shape = benchmark_shape(packets)
    shape = dataclasses.replace(shape, seconds=shape.seconds + 1.0)
    return write_capture(out, parameters(packets), site_packets(shape), packets, "the scenario")


def write_capture(
    out: Path, params: dict[str, Any], frames: Iterable[tuple[int, bytes]], packets: int, what: str
) -> dict[str, Any]:
    """Write the first `packets` (timestamp ns, frame) pairs of `frames` to `out` and its sidecar.

    Streamed in chunks through a temporary name, so an interrupted run leaves no valid-looking file.
    """
    writer = PcapWriter(1, snaplen=SNAPLEN)
    record = writer.record
    tmp = out.with_name(out.name + ".part")
    count = frame_bytes = 0
    first_ns = last_ns = 0
    with tmp.open("wb") as f:
        f.write(writer.header())
        stream = islice(frames, packets)
        while True:
            chunk = list(islice(stream, CHUNK))
            if not chunk:
                break
            if count == 0:
                first_ns = chunk[0][0]
            last_ns = chunk[-1][0]
            count += len(chunk)
            frame_bytes += sum(len(frame) for _, frame in chunk)
            f.write(b"".join([record(ts, frame) for ts, frame in chunk]))
    if count < packets:
        tmp.unlink()
        raise SystemExit(f"{Path(sys.argv[0]).name}: {what} produced only {count} packets, {packets} asked")
    os.replace(tmp, out)
    meta = {
        "params": params,
        "packets": count,
        "frame_bytes": frame_bytes,
        "file_bytes": out.stat().st_size,
        "capture_seconds": (last_ns - first_ns) / 1e9,
    }
    sidecar_path(out).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, metavar="OUT.pcap")
    p.add_argument("--packets", type=int, default=1_000_000, help="packets to write (default 1000000)")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching file exists")
    args = p.parse_args(argv)
    if args.packets < 1:
        p.error("--packets must be >= 1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta = None if args.force else cached(args.out, parameters(args.packets))
    verb = "reused"
    if meta is None:
        meta = generate(args.out, args.packets)
        verb = "wrote"
    print(
        f"gen_site: {verb} {args.out} ({meta['packets']:,} packets, {meta['file_bytes']:,} bytes, "
        f"{meta['capture_seconds']:.1f} s of traffic) in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
