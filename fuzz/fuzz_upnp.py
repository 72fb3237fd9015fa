"""Fuzz the UPnP SOAP analyzer: only AnalyzerError may escape ``parse``; ``looks_like`` and the argument
properties never raise. Seeds: the hand-built requests (no capture in the corpus).

Run: ``python -m fuzz.fuzz_upnp [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, upnp

NAME = "upnp"
_FIXTURES = Path(__file__).parents[1] / "tests" / "data" / "fixtures" / "upnp"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    upnp.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        req = upnp.parse(data)
        _ = (req.external_port, req.internal_port, req.internal_client, req.protocol, req.description)
        _ = (req.remote_host, req.lease_duration, req.enabled, req.is_port_mapping)


def seeds() -> list[bytes]:
    """The hand-built SOAP requests."""
    return [p.read_bytes() for p in sorted(_FIXTURES.glob("*.bin"))]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
