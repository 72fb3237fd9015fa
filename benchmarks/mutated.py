"""The engine under millions of mutated packets: no uncaught exception, resident memory flat after warm-up.

    .venv/bin/python benchmarks/mutated.py [--packets 10000000] [--batch 1024] [--seed 1]
    .venv/bin/python benchmarks/mutated.py --smoke      # CI: 20,000 packets, checks itself, not a measurement

The frames are those the engine fuzzer starts from (`fuzz.fuzz_engine.seeds`: every corpus capture's first
200 packets and the lab personas' traffic), mutated with the fuzz harness's byte-level mutator
(`fuzz.common.Mutator`: bit flips, interesting bytes, inserted, deleted, duplicated and spliced ranges,
truncation, tokens, 16-bit fields set to extremes); one packet in ten goes in unmutated, so real flows,
devices and rules keep being exercised next to the garbage. They are fed in batches as a capture source
hands them over (link types as in the corpus), on the demo site (`examples/site-policy.yaml`) with the
agent's default bounds, one engine for the whole run, capture time advancing 20 µs a packet (flows time out
and are evicted as on a busy link).

An exception out of `Engine.feed` (or `finish`) is counted, with its type and where it was raised (the run
goes on); an analyzer failure the engine caught (`analysis.stats.internal_errors`) is counted too: both must
be 0. Resident memory (/proc/self/statm) is sampled every `--sample-every` packets; the report gives it at
1, 5 and 10 million (or the run's own milestones) and the growth between the first sample after warm-up
(the first 10 %) and the end.

Prints a Markdown summary and writes JSON to `benchmarks/out/mutated.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402  (path above)

from fuzz.common import Mutator, quiet_corpus_warnings, rss_kib  # noqa: E402
from fuzz.fuzz_engine import seeds  # noqa: E402
from monitor.engine import Engine  # noqa: E402
from monitor.pcapfile import PacketBatch  # noqa: E402
from monitor.policy import SitePolicy  # noqa: E402
from monitor.vendors.oui import VendorTable  # noqa: E402

LINKTYPES = (1, 1, 1, 1, 113, 276, 101, 0)  # the fuzzer's prefix byte -> link type
START_NS = 1_764_000_000_000_000_000
STEP_NS = 20_000


def batch_of(frames: list[bytes], first_ts: int) -> PacketBatch:
    """Frames (with the fuzzer's link-type prefix byte) as one batch."""
    lts = np.fromiter(
        (LINKTYPES[f[0] % len(LINKTYPES)] if f else 1 for f in frames), dtype=np.uint16, count=len(frames)
    )
    bodies = [f[1:] for f in frames]
    lengths = np.fromiter((len(b) for b in bodies), dtype=np.int64, count=len(bodies))
    offsets = np.zeros(len(bodies), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return PacketBatch(
        data=np.frombuffer(b"".join(bodies), dtype=np.uint8),
        offsets=offsets,
        caplen=lengths,
        wirelen=lengths.copy(),
        ts_ns=first_ts + STEP_NS * np.arange(len(bodies), dtype=np.int64),
        linktype=lts,
    )


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{type(exc).__name__} at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def run(packets: int, batch: int, seed: int, sample_every: int) -> dict[str, Any]:
    quiet_corpus_warnings()
    pool = seeds()
    policy_path = HERE.parent / "examples" / "site-policy.yaml"
    policy = SitePolicy.from_yaml(policy_path.read_bytes(), source=str(policy_path))
    engine = Engine(policy, VendorTable.load())
    rng = random.Random(seed)
    mutator = Mutator(pool, rng)
    uncaught: Counter[str] = Counter()
    samples: list[tuple[int, int]] = [(0, rss_kib())]
    done = 0
    alerts = 0
    next_sample = sample_every
    start = time.perf_counter()
    while done < packets:
        n = min(batch, packets - done)
        frames = [rng.choice(pool) if rng.random() < 0.1 else mutator.next_input() for _ in range(n)]
        try:
            alerts += len(engine.feed(batch_of(frames, START_NS + done * STEP_NS)).alerts)
        except Exception as exc:  # what this run looks for: anything out of the engine is a bug
            uncaught[_where(exc)] += 1
        done += n
        if done >= next_sample:
            samples.append((done, rss_kib()))
            next_sample += sample_every
            print(f"{done:,} packets, RSS {samples[-1][1] // 1024} MiB", file=sys.stderr, flush=True)
    try:
        alerts += len(engine.finish().alerts)
    except Exception as exc:
        uncaught[_where(exc)] += 1
    elapsed = time.perf_counter() - start
    samples.append((done, rss_kib()))
    warm = next((s for s in samples if s[0] >= packets // 10), samples[-1])
    milestones = {
        f"{m:,}": next((kib for n, kib in samples if n >= m), None)
        for m in (1_000_000, 5_000_000, 10_000_000)
        if m <= packets
    }
    return {
        "packets": done,
        "batch": batch,
        "seed": seed,
        "seeds": len(pool),
        "seconds": round(elapsed, 1),
        "packets_per_second": round(done / elapsed),
        "uncaught_exceptions": sum(uncaught.values()),
        "uncaught_by_place": dict(uncaught),
        "analyzer_internal_errors": engine.analysis.stats.internal_errors,
        "analyzer_parse_errors": engine.analysis.stats.parse_errors,
        "alerts": alerts,
        "flows_created": engine.flows.stats.created,
        "flows_evicted": engine.flows.stats.evicted,
        "devices": len(engine.inventory),
        "devices_evicted": engine.inventory.evicted,
        "rss_kib": samples,
        "rss_kib_at": milestones,
        "rss_after_warmup_kib": warm[1],
        "rss_end_kib": samples[-1][1],
        "growth_after_warmup_bytes_per_packet": round(
            (samples[-1][1] - warm[1]) * 1024 / max(1, samples[-1][0] - warm[0]), 2
        ),
        "python": platform.python_version(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sample-every", type=int, default=None, help="packets between RSS samples")
    ap.add_argument("--smoke", action="store_true", help="20,000 packets: CI's check that this runs")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out")
    args = ap.parse_args()
    packets = 20_000 if args.smoke else args.packets
    every = args.sample_every or max(args.batch, min(500_000, packets // 20))
    report = run(packets, args.batch, args.seed, every)
    report["smoke"] = args.smoke
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "mutated.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("| packets | uncaught | analyzer internal errors | packets/s | RSS after warm-up | RSS at end |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {report['packets']:,} | {report['uncaught_exceptions']} | {report['analyzer_internal_errors']} "
        f"| {report['packets_per_second']:,} | {report['rss_after_warmup_kib'] / 1024:.0f} MiB "
        f"| {report['rss_end_kib'] / 1024:.0f} MiB |"
    )
    for at, kib in report["rss_kib_at"].items():
        print(f"RSS at {at} packets: {kib / 1024:.0f} MiB" if kib else f"RSS at {at}: not sampled")
    for place, count in report["uncaught_by_place"].items():
        print(f"uncaught: {place} x{count}")
    return 1 if report["uncaught_exceptions"] or report["analyzer_internal_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
