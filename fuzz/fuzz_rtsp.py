"""Fuzz the RTSP analyzer: only AnalyzerError may escape ``parse``, ``Sdp.parse`` and ``parse_transport``;
``looks_like`` and the stream parser never raise and the stream parser stays bounded.

Run: ``python -m fuzz.fuzz_rtsp [runs]`` (also driven by ``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from fuzz.common import feed_in_pieces
from monitor.analyzers import AnalyzerError, rtsp

NAME = "rtsp"
_ROOT = Path(__file__).parents[1]
_FIXTURES = _ROOT / "tests" / "data" / "fixtures" / "rtsp"
_MAX_BUFFER = 1024


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    rtsp.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = rtsp.parse(data)
        if isinstance(msg, rtsp.RtspResponse):
            _ = msg.realm
            if msg.sdp is not None:
                _ = [(m.payload_types, [m.codec(pt) for pt in m.payload_types]) for m in msg.sdp.media]
    with contextlib.suppress(AnalyzerError):
        rtsp.Sdp.parse(data)
    with contextlib.suppress(AnalyzerError):
        rtsp.parse_transport(data.decode("latin-1"))
    feed_in_pieces(rtsp.RtspStreamParser(max_buffer=_MAX_BUFFER), data, _MAX_BUFFER, "RtspStreamParser")


def seeds() -> list[bytes]:
    """The hand-built Dahua/Xiongmai sessions (and pieces of them), the corpus's SETUP, SDP and transports."""
    out = [p.read_bytes() for p in sorted(_FIXTURES.glob("*.rtsp"))]
    server = (_FIXTURES / "dahua_server.rtsp").read_bytes()
    start = server.find(b"RTSP/1.0 200 OK\r\nCSeq: 4")
    if start >= 0:
        out.append(server[start : start + 1200])
        sdp_at = server.find(b"v=0", start)
        out.append(server[sdp_at : server.find(b"RTSP/1.0", sdp_at)])
    out += [
        b'RTP/AVP;multicast;destination=239.1.2.3;port=5000-5001;ttl=16;ssrc=1A2B3C4D;mode="PLAY"',
        b"RTP/AVP/TCP;unicast;interleaved=0-1,RTP/AVP;unicast;client_port=8000-8001;server_port=9000-9001",
        b"$\x00\x00\x04abcd$\x01\x00\x00RTSP/1.0 200 OK\r\nCSeq: 9\r\n\r\n",
    ]
    try:
        from tests.monitor.analyzers.payloads import tcp_streams

        pcaps = _ROOT / "tests" / "data" / "corpus" / "pcaps"
        out += [v for v in tcp_streams(pcaps / "ndpi" / "rtsp_setup_http.pcapng").values() if v]
    except (ImportError, OSError):
        pass
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
