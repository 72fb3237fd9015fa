"""Content before ports: a protocol whose content is unambiguous is recognised on any port, the usual
port of another protocol included (RTSP on 8554, 9000 and 80; SSDP off 1900; STUN over TCP, plain and
RFC 4571-framed; RTP over TCP, RFC 4571; DNS off 53; TLS off 443)."""

from __future__ import annotations

import struct

import pytest

from lab import payloads, synth
from lab.personas import tcp_exchange
from monitor.analyzers import stun
from tests.enginerun import run_frames

T0 = 1_767_225_600 * 10**9
CAM, PEER = "44:19:b6:00:00:01", "00:11:32:00:00:02"
BINDING = stun.build(1, "request", bytes(range(12)))
RTP = struct.pack("!BBHII", 0x80, 96, 1, 1000, 0x1234) + bytes(100)
SSDP_REPLY = (
    b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\nUSN: uuid:x\r\n"
    b"LOCATION: http://10.0.0.5/\r\n\r\n"
)
SSDP_NOTIFY = (
    b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
    b"USN: uuid:x\r\n\r\n"
)
TLS_HELLO = bytes.fromhex("160301002a0100002603") + bytes([3]) + bytes(32) + bytes.fromhex("0000021301010000")


def udp(sport: int, dport: int, data: bytes) -> list[tuple[int, bytes]]:
    return [(T0, synth.udp4_frame(CAM, PEER, "10.0.0.5", "10.0.0.9", sport, dport, data))]


def tcp(dport: int, request: bytes, response: bytes = b"") -> list[tuple[int, bytes]]:
    return tcp_exchange(T0, CAM, PEER, "10.0.0.5", "10.0.0.9", 40000, dport, [(request, response)])


def rtsp(dport: int) -> list[tuple[int, bytes]]:
    return tcp(
        dport, payloads.rtsp_request("OPTIONS", "rtsp://10.0.0.9/", 1), payloads.rtsp_response(1, "cam")
    )


CASES = {
    "rtsp on 8554": (rtsp(8554), "rtsp"),
    "rtsp on 9000": (rtsp(9000), "rtsp"),
    "rtsp on http's port": (rtsp(80), "rtsp"),
    "http on 9000": (tcp(9000, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"), "http"),
    "ssdp search off 1900": (udp(50000, 1901, payloads.igd_search()), "ssdp"),
    "ssdp reply to a searcher": (udp(1900, 50001, SSDP_REPLY), "ssdp"),
    "ssdp notify off 1900": (udp(50002, 5000, SSDP_NOTIFY), "ssdp"),
    "stun over tcp on tls's port": (tcp(443, BINDING), "stun"),
    "stun over tcp": (tcp(5000, BINDING), "stun"),
    "stun over tcp, rfc 4571": (tcp(5001, struct.pack("!H", len(BINDING)) + BINDING), "stun"),
    "rtp over tcp, rfc 4571": (tcp(5002, struct.pack("!H", len(RTP)) + RTP), "rtp"),
    "dns off 53": (udp(50003, 5300, payloads.dns_query(1, "cam.example.com")), "dns"),
    "tls off 443": (tcp(9443, TLS_HELLO), "tls"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recognised_by_content(case: str) -> None:
    frames, label = CASES[case]
    _, flows, _ = run_frames(frames)
    assert [f.protocol for f in flows] == [label]


def test_plain_tcp_data_is_not_taken_for_media() -> None:
    # A length prefix alone is not RFC 4571 RTP: the framed packet must look like RTP.
    _, flows, _ = run_frames(tcp(5003, struct.pack("!H", 100) + bytes(100)))
    assert [f.protocol for f in flows] == [None]
