"""Fuzz the Dahua DHIP analyzer: only AnalyzerError may escape ``parse``; ``looks_like`` never raises.
Seeds: the hand-built search and reply.

Run: ``python -m fuzz.fuzz_dhip [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, dhip

NAME = "dhip"
_FIXTURES = Path(__file__).parents[1] / "tests" / "data" / "fixtures" / "dhip"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    dhip.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = dhip.parse(data)
        _ = (msg.is_search, msg.is_reply)


def seeds() -> list[bytes]:
    """The hand-built DHIP datagrams."""
    return [p.read_bytes() for p in sorted(_FIXTURES.glob("*.bin"))]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
