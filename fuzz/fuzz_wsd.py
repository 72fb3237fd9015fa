"""Fuzz the WS-Discovery analyzer (and the shared hardened XML entry point): only AnalyzerError may escape
``parse``; ``looks_like`` and the scope properties never raise. Seeds: the hand-built envelopes.

Run: ``python -m fuzz.fuzz_wsd [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, wsd

NAME = "wsd"
_FIXTURES = Path(__file__).parents[1] / "tests" / "data" / "fixtures" / "wsd"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    wsd.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = wsd.parse(data)
        for item in msg.items:
            _ = (item.name, item.hardware, item.model, item.manufacturer, item.mac, item.firmware)
            _ = (item.location, item.type_names)


def seeds() -> list[bytes]:
    """The hand-built envelopes."""
    return [p.read_bytes() for p in sorted(_FIXTURES.glob("*.xml"))]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
