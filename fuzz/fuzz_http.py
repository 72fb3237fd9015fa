"""Fuzz the HTTP analyzer: only AnalyzerError may escape ``parse``; ``looks_like`` and the stream parser
never raise and the stream parser stays within its buffer bound.

Run: ``python -m fuzz.fuzz_http [runs]`` (also driven by ``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from fuzz.common import feed_in_pieces
from monitor.analyzers import AnalyzerError, http

NAME = "http"
_ROOT = Path(__file__).parents[1]
_FIXTURES = _ROOT / "tests" / "data" / "fixtures" / "http"
_MAX_BUFFER = 1024


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    http.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = http.parse(data)
        if isinstance(msg, http.HttpResponse):
            _ = msg.realm
        if msg.complete and msg.head_length > len(data):
            raise AssertionError("head_length beyond the input")
    http.parse_challenges(data.decode("latin-1"))
    http.redact_url(data.decode("latin-1"))
    # The stream parser never raises, whatever the segmentation (taken from the first byte).
    parser = http.HttpStreamParser(max_buffer=_MAX_BUFFER)
    if data[:1] == b"\x00":
        parser.expect_no_body()
    feed_in_pieces(parser, data, _MAX_BUFFER, "HttpStreamParser")


def seeds() -> list[bytes]:
    """The hand-built fixtures and the client/server streams of the corpus's HTTP captures."""
    out = [p.read_bytes() for p in sorted(_FIXTURES.glob("*.http"))]
    out.append(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=1\r\nWiki\r\n0\r\nT: 1\r\n\r\n"
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    )
    try:
        from tests.monitor.analyzers.payloads import tcp_streams

        pcaps = _ROOT / "tests" / "data" / "corpus" / "pcaps"
        for rel in (
            "zeek/http/get.pcap",
            "zeek/wikipedia.pcap",
            "ndpi/http_auth.pcap",
            "ndpi/conncheck.pcap",
        ):
            out += [v[:4096] for v in tcp_streams(pcaps / rel, 80).values() if http.looks_like(v)]
    except (ImportError, OSError):
        pass
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
