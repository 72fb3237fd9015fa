"""Fuzz the Hikvision SADP analyzer: only AnalyzerError may escape ``parse``; ``looks_like`` never raises.
Seeds: the hand-built probe, reply and update command.

Run: ``python -m fuzz.fuzz_sadp [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, sadp

NAME = "sadp"
_FIXTURES = Path(__file__).parents[1] / "tests" / "data" / "fixtures" / "sadp"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    sadp.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = sadp.parse(data)
        _ = (msg.is_reply, msg.carries_password, msg.field("MAC"))


def seeds() -> list[bytes]:
    """The hand-built SADP messages."""
    return [p.read_bytes() for p in sorted(_FIXTURES.glob("*.xml"))]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
