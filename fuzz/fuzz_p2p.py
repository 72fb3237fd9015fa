"""Fuzz the vendor P2P analyzers (EZVIZ XML, Dahua DHGET and PTCP, CS2 PPPP): only AnalyzerError may escape a
parser, ``looks_like``/``identify`` never raise, and a PPPP, PTCP or EZVIZ ``looks_like`` accepting a payload
means its parser accepts it too.

Run: ``python -m fuzz.fuzz_p2p [runs] [--engine atheris|mutate]`` (also driven by
``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, p2p

NAME = "p2p"
_FIXTURES = Path(__file__).parents[1] / "tests" / "data" / "fixtures"
_CLASSES = (p2p.EzvizXmlMessage, p2p.DahuaP2pMessage, p2p.DahuaPtcpPacket, p2p.Cs2PpppMessage)
# looks_like of these is defined as "parse succeeds", so a disagreement is a bug.
_STRICT = (p2p.EzvizXmlMessage, p2p.DahuaPtcpPacket, p2p.Cs2PpppMessage)


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    for cls in _CLASSES:
        looks = cls.looks_like(data)
        try:
            cls.parse(data).summary()
        except AnalyzerError:
            if looks and cls in _STRICT:
                raise AssertionError(f"{cls.__name__}.looks_like accepted what parse refuses") from None
    for port in (None, 6002, 8800, 32100):
        p2p.identify(data, port, 50000)


def seeds() -> list[bytes]:
    """The hand-built fixtures of every vendor protocol."""
    return sorted(
        path.read_bytes()
        for sub in ("ezviz_xml", "dahua_p2p", "cs2_pppp")
        for path in (_FIXTURES / sub).iterdir()
        if path.suffix in (".bin", ".xml")
    )


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
