"""Fuzz the DHCP analyzer: only AnalyzerError may escape ``parse``; ``looks_like`` never raises.
Seeds: every DHCP payload of the corpus.

Run: ``python -m fuzz.fuzz_dhcp [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys

from monitor.analyzers import AnalyzerError, dhcp

NAME = "dhcp"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    looks = dhcp.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = dhcp.parse(data)
        _ = (msg.mac, msg.option(53))
        if not looks:
            raise AssertionError("parse accepted what looks_like refuses")


def seeds() -> list[bytes]:
    """The DHCP payloads of the corpus."""
    from tests.monitor.analyzers.payloads import udp_payloads
    from tests.truth.paths import PCAPS

    out = [p.payload for pcap in sorted(PCAPS.rglob("*.pcap*")) for p in udp_payloads(pcap, 67)]
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
