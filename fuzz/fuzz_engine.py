"""Fuzz the whole engine: mutated frames (from the corpus and the lab personas) fed to `Engine.feed`.

Nothing may escape the engine, and no analyzer may fail inside it (the engine counts such failures in
``analysis.stats.internal_errors`` instead of crashing; here that count must stay zero). One engine
is kept across inputs, so flow, inventory and analyzer state build up as in a long capture.

Run: ``python -m fuzz.fuzz_engine [runs] [--engine atheris|mutate]``.
"""

from __future__ import annotations

import sys

import numpy as np

from monitor.engine import Engine, EngineConfig
from monitor.flows import FlowConfig
from monitor.pcapfile import PacketBatch
from monitor.policy import SitePolicy
from monitor.vendors.oui import VendorTable

NAME = "engine"
_ENGINE: Engine | None = None
_CLOCK = [1_700_000_000_000_000_000]


def _engine() -> Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Engine(
            SitePolicy.default(), VendorTable.load(), EngineConfig(flows=FlowConfig(max_flows=5000))
        )
    return _ENGINE


def parse(data: bytes) -> None:
    """Feed one frame (the first byte picks the link type) as a one-packet batch."""
    engine = _engine()
    linktypes = (1, 1, 1, 1, 113, 276, 101, 0)
    lt = linktypes[data[0] % len(linktypes)] if data else 1
    frame = data[1:]
    _CLOCK[0] += 1_000_000
    batch = PacketBatch(
        data=np.frombuffer(frame, dtype=np.uint8),
        offsets=np.zeros(1, dtype=np.int64),
        caplen=np.array([len(frame)], dtype=np.int64),
        wirelen=np.array([len(frame)], dtype=np.int64),
        ts_ns=np.array([_CLOCK[0]], dtype=np.int64),
        linktype=np.array([lt], dtype=np.uint16),
    )
    before = engine.analysis.stats.internal_errors
    engine.feed(batch)
    if engine.analysis.stats.internal_errors != before:
        raise AssertionError("an analyzer failed inside the engine (see the log)")


def seeds() -> list[bytes]:
    """Every frame of the corpus (first 200 of each capture), of the lab's persona traffic, and of the video
    sessions the rules' tests build: RTSP tunnelled in HTTP, an RTSP push, an RTMP publish."""
    from lab import scenario
    from monitor.pcapfile import CaptureParser
    from tests.monitor.rules import test_rtsp_tunnel_rules, test_stream_push
    from tests.monitor.rules.traffic import ATTACKER
    from tests.truth.paths import PCAPS

    out: list[bytes] = []
    for pcap in sorted(p for p in PCAPS.rglob("*") if p.is_file()):
        parser = CaptureParser(str(pcap))
        try:
            batches = parser.feed(pcap.read_bytes()) + parser.flush()
        except Exception:  # a truncated corpus file: its complete packets are enough here
            continue
        for b in batches:
            lt = int(b.linktype[0]) if len(b) else 1
            prefix = {1: 0, 113: 4, 276: 5, 101: 6, 0: 7}.get(lt)
            if prefix is None:
                continue
            out += [bytes([prefix]) + b.packet(i) for i in range(min(len(b), 200))]
    out += [b"\x00" + frame for _, frame in scenario.persona_events(scenario.demo_shape())]
    sessions = [
        *test_rtsp_tunnel_rules.tunnel(ATTACKER, pieces=3),
        *test_stream_push.push(test_stream_push.MEDIA_SERVER),
        *test_stream_push.rtmp_publish(test_stream_push.MEDIA_SERVER),
    ]
    out += [b"\x00" + frame for _, frame in sessions]
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
