"""Sessions met in the middle (running before capture started): recognised by what they carry, and
opened by the side on the service port."""

from __future__ import annotations

import struct

import pytest

from lab import mirror, payloads
from lab.mirror import Host, Mirror
from tests.enginerun import run_frames

CAM = Host("cam", "44:19:b6:00:10:11", "10.10.0.11", 10)
SERVER = Host("server", "", "203.0.113.30", None)
PUBLISH = bytes([0x30]) + bytes([2 + 9 + 4]) + struct.pack("!H", 9) + b"cam/alarm" + b"ping"
TLS_DATA = mirror.tls_application_data(300)
HTTP_TAIL = b"o" * 40 + b"\r\n"  # the end of a body whose head was before the capture
RTSP_KEEPALIVE = payloads.rtsp_request("GET_PARAMETER", "rtsp://10.10.0.11/Streaming/Channels/101", 9)


@pytest.mark.parametrize(
    ("port", "turns", "label"),
    [
        (443, [(b"", TLS_DATA), (mirror.tls_application_data(90), TLS_DATA)], "tls"),
        (8883, [(b"", TLS_DATA)], "tls"),
        (31006, [(bytes([0xC0, 0]), bytes([0xD0, 0])), (PUBLISH, b"")], "mqtt"),
        (8000, [(HTTP_TAIL, b""), (b"GET /ISAPI/System/status HTTP/1.1\r\nHost: x\r\n\r\n", b"")], "http"),
        (554, [(RTSP_KEEPALIVE, payloads.rtsp_response(9, "cam"))], "rtsp"),
    ],
)
def test_session_running_before_the_capture(port: int, turns: list[tuple[bytes, bytes]], label: str) -> None:
    m = Mirror(duplicated=frozenset())
    m.tcp_session(mirror.T0, CAM, SERVER, 41000, port, turns, opening_seen=False)
    _, flows, _ = run_frames(sorted(m.frames, key=lambda f: f[0]))
    (flow,) = flows
    assert flow.protocol == label
    assert flow.opener_is_src == (flow.src[0] == CAM.ip)  # the camera, on the ephemeral port, opened it
