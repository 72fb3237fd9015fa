"""Fuzz the NetBIOS name service analyzer: only AnalyzerError may escape ``parse``; ``looks_like`` never
raises. Seeds: every udp/137 payload of the corpus.

Run: ``python -m fuzz.fuzz_netbios [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import sys

from monitor.analyzers import AnalyzerError, netbios

NAME = "netbios"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    looks = netbios.looks_like(data)
    try:
        msg = netbios.NbnsMessage.parse(data)
    except AnalyzerError:
        if looks:
            raise AssertionError("looks_like accepted what parse refuses") from None
        return
    _ = msg.names


def seeds() -> list[bytes]:
    """The NetBIOS name service payloads of the corpus."""
    from tests.monitor.analyzers.payloads import udp_payloads
    from tests.truth.paths import PCAPS

    out = [p.payload for pcap in sorted(PCAPS.rglob("*.pcap*")) for p in udp_payloads(pcap, 137)]
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
