"""Fuzz the RTMP analyzer: only AnalyzerError may escape ``parse_command``; ``looks_like`` and the stream
parser never raise, and the stream parser holds at most a chunk and the commands it collects.

Run: ``python -m fuzz.fuzz_rtmp [runs]`` (also driven by ``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from fuzz.common import feed_in_pieces
from lab import payloads
from monitor.analyzers import AnalyzerError, rtmp

NAME = "rtmp"
_ROOT = Path(__file__).parents[1]
# A chunk header, a kept command's chunk, and the commands collected at once.
_MAX_BUFFER = 18 + rtmp.MAX_COMMAND + rtmp.MAX_COLLECTING * rtmp.MAX_COMMAND
_HANDSHAKE = payloads.rtmp_handshake() + bytes(1536)


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    rtmp.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        rtmp.parse_command(data)
    # The input after a handshake (the chunks are what is fuzzed), and by itself.
    feed_in_pieces(rtmp.RtmpStreamParser(), _HANDSHAKE + data, _MAX_BUFFER, "RtmpStreamParser")
    feed_in_pieces(rtmp.RtmpStreamParser(), data, _MAX_BUFFER, "RtmpStreamParser")


def seeds() -> list[bytes]:
    """Built commands and chunk sizes, and the chunks of the corpus's RTMP connections."""
    out = [
        payloads.rtmp_command("connect", 1, {"app": "live", "tcUrl": "rtmp://h/live"}),
        payloads.rtmp_message(2, 1, (4096).to_bytes(4, "big"))
        + payloads.rtmp_command("publish", 5, None, "k", "live", chunk_size=4096),
        payloads.rtmp_message(70, 9, bytes(600)) + payloads.rtmp_command("play", 3, None, "s"),
    ]
    try:
        from tests.monitor.analyzers.payloads import tcp_streams

        capture = _ROOT / "tests" / "data" / "corpus" / "pcaps" / "ndpi" / "rtmp.pcap"
        for port in (1935, 6002):
            out += [v[rtmp.HANDSHAKE : rtmp.HANDSHAKE + 4096] for v in tcp_streams(capture, port).values()]
    except (ImportError, OSError):
        pass
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
