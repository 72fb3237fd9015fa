"""Fuzz RTSP tunnelled in HTTP: ``tunnel_head`` never raises; the base64 stream never
raises, decodes the same whatever the segmentation, and holds fewer than 4 characters; HTTP and the tunnel
reader, fed both connections of a session cut into pieces as the analysis offers them, raise nothing but
AnalyzerError.

Run: ``python -m fuzz.fuzz_rtsp_tunnel [runs]`` (also driven by ``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import base64
import contextlib
import sys

from lab import payloads
from monitor.analyzers import AnalyzerError, http, rtsp_tunnel
from tests.monitor.analyzers.recording import RecordingContext, make_flow
from tests.monitor.analyzers.test_rtsp_tunnel import dispatch

NAME = "rtsp_tunnel"
_PATH = "/Streaming/Channels/101"


def _decoded(data: bytes, cut: int) -> bytes:
    stream = rtsp_tunnel.Base64Stream()
    out = stream.feed(data[:cut]) + stream.feed(data[cut:])
    if len(stream._held) >= 4:
        raise AssertionError("the base64 stream holds a whole quantum")
    return out


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    http.tunnel_head(data)
    if _decoded(data, len(data)) != _decoded(data, len(data) // 2):
        raise AssertionError("base64 decoded differently when cut")
    # The input as the POST's body and as the GET's answer, in pieces of a size taken from its first byte.
    ctx = RecordingContext()
    step = 1 + (data[0] if data else 0) % 64
    get_flow = make_flow("10.0.0.9", 40000, "10.0.0.5", 80)
    post_flow = make_flow("10.0.0.9", 40001, "10.0.0.5", 80)
    turns = [
        (get_flow, True, payloads.rtsp_tunnel_get(_PATH, "c")),
        (get_flow, False, payloads.rtsp_tunnel_ok("x")),
        (post_flow, True, payloads.rtsp_tunnel_post(_PATH, "c")),
    ]
    turns += [(post_flow, True, data[i : i + step]) for i in range(0, len(data), step)]
    turns += [(get_flow, False, data[i : i + step]) for i in range(0, len(data), step)]
    for flow, from_src, piece in turns:
        with contextlib.suppress(AnalyzerError):
            dispatch(ctx, flow, from_src, piece)


def seeds() -> list[bytes]:
    """Base64 requests (whole, cut, with line ends), answers with interleaved frames, the opening heads."""
    describe = payloads.rtsp_request("DESCRIBE", f"rtsp://10.0.0.5{_PATH}", 1, "Accept: application/sdp\r\n")
    sdp = "Content-Type: application/sdp\r\n"
    answer = payloads.rtsp_response(1, "Hikvision-Webs", sdp, payloads.SDP_H264)
    return [
        base64.b64encode(describe),
        base64.b64encode(describe) + base64.b64encode(b"PLAY x RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
        base64.encodebytes(describe),
        answer + b"$\x00\x00\x04abcd" + answer,
        payloads.rtsp_tunnel_get(_PATH, "c"),
        payloads.rtsp_tunnel_post(_PATH, "c") + base64.b64encode(describe),
    ]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
