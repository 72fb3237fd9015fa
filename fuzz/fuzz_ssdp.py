"""Fuzz the SSDP analyzer: only AnalyzerError may escape ``parse``; ``looks_like`` never raises.
Seeds: the corpus's SSDP datagram and the hand-built fixtures.

Run: ``python -m fuzz.fuzz_ssdp [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, ssdp

NAME = "ssdp"
_FIXTURES = Path(__file__).parents[1] / "tests" / "data" / "fixtures" / "ssdp"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    ssdp.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = ssdp.parse(data)
        _ = (msg.is_igd_search, msg.header("st"))


def seeds() -> list[bytes]:
    """Fixtures and the corpus's SSDP payloads."""
    from tests.monitor.analyzers.payloads import udp_payloads
    from tests.truth.paths import PCAPS

    out = [p.read_bytes() for p in sorted(_FIXTURES.glob("*.bin"))]
    out += [p.payload for pcap in sorted(PCAPS.rglob("*.pcap*")) for p in udp_payloads(pcap, 1900)]
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
