"""Fuzz the BitTorrent analyzer: only AnalyzerError may escape ``KrpcMessage.parse``; the cheap checks never
raise. Seeds: the DHT messages of the corpus and a few of each kind.

Run: ``python -m fuzz.fuzz_bittorrent [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import sys

from monitor.analyzers import AnalyzerError, bittorrent

NAME = "bittorrent"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    bittorrent.KrpcMessage.looks_like(data)
    bittorrent.utp_type(data)
    bittorrent.handshake_looks_like(data)
    try:
        msg = bittorrent.KrpcMessage.parse(data)
    except AnalyzerError:
        return
    if msg.kind not in ("query", "response", "error"):
        raise AssertionError(f"unknown kind {msg.kind!r}")


def seeds() -> list[bytes]:
    """The DHT messages of the corpus, and one query, response and error."""
    from tests.monitor.analyzers.payloads import udp_payloads
    from tests.truth.paths import PCAPS

    node = bytes(range(20))
    out = [
        p.payload
        for pcap in sorted(PCAPS.rglob("*.pcap*"))
        for p in udp_payloads(pcap)
        if p.payload[:1] == b"d"
    ]
    out += [
        b"d1:ad2:id20:" + node + b"e1:q4:ping1:t2:aa1:y1:qe",
        b"d1:rd2:id20:" + node + b"5:nodes0:e1:t2:aa1:y1:re",
        b"d1:eli201e5:Errore1:t2:aa1:y1:ee",
    ]
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
