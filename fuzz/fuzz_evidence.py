"""Fuzz the evidence redaction: on any frame, ``redact`` never raises, never changes a length, and what it
blanks stays blanked; the pcapng writer takes whatever it is given within its size bound.

Run: ``python -m fuzz.fuzz_evidence [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import sys

from lab import attacks, synth
from monitor.evidence import Evidence, Packet, redact, tcp_seq

NAME = "evidence"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    from agents.sinks.evidence import pcapng_evidence
    from tests.monitor.analyzers.recording import make_flow

    flow = make_flow("10.0.0.9", 40000, "10.0.0.64", 80)
    linktype = (1, 101, 113, 276, 0, 999)[data[0] % 6] if data else 1
    items = [(1, data, True, len(data), linktype), (2, data[::-1], False, len(data), linktype)]
    for label in (None, "telnet"):
        flow.protocol = label
        frames = redact(items, flow)
        if [len(f) for f in frames] != [len(data), len(data)]:
            raise AssertionError("redaction changed a length")
    tcp_seq(data, linktype)
    evidence = Evidence(tuple(Packet(i, f, len(f), linktype, "n") for i, f in enumerate(frames)))
    if len(pcapng_evidence(evidence, "c", 4096)) > 4096 + 2 * len(data) + 1024:
        raise AssertionError("pcapng over its bound")


def seeds() -> list[bytes]:
    request = attacks.http_request(
        "GET", "/?password=x", "cam", authorization=attacks.basic_auth("admin", "pw")
    )
    return [
        synth.tcp4_frame(
            "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.9", "10.0.0.64", 40000, 80, request
        ),
        synth.tcp4_frame(
            "02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.9", "10.0.0.64", 40000, 23, b"root\r\n"
        ),
        attacks.mirai_syn("02:00:00:00:00:01", "02:00:00:00:00:02", "10.0.0.9", "203.0.113.1", 1),
    ]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
