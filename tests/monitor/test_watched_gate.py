"""Only flows with a watched device on a side keep evidence and report HTTP requests and answers
(``AppRequest``/``AppResponse``): the rules that read them are about watched devices, and the HTTP of the
rest of a busy network is most of what the analyzers see."""

from __future__ import annotations

from lab import synth
from monitor.events import AppRequest, AppResponse
from monitor.evidence import ring_of
from monitor.policy import SitePolicy
from tests.enginerun import run_frames

NS = 1_000_000_000
SYN, ACK, PSH = 0x02, 0x10, 0x08
LAPTOP = ("02:00:00:00:00:77", "192.0.2.77")
PRINTER = ("02:00:00:00:00:78", "192.0.2.78")
CAMERA = ("44:19:b6:00:00:01", "192.0.2.11")  # a Hikvision OUI, outside any monitored network
REQUEST = b"GET /ISAPI/System/deviceInfo HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46MTIzNDU=\r\n\r\n"
ANSWER = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"


def exchange(t: int, client: tuple[str, str], server: tuple[str, str], sport: int) -> list[tuple[int, bytes]]:
    c, s = client, server
    return [
        (t, synth.tcp4_frame(c[0], s[0], c[1], s[1], sport, 80, flags=SYN, seq=0)),
        (t + 1000, synth.tcp4_frame(s[0], c[0], s[1], c[1], 80, sport, flags=SYN | ACK, seq=0, ack=1)),
        (
            t + 2000,
            synth.tcp4_frame(c[0], s[0], c[1], s[1], sport, 80, REQUEST, flags=PSH | ACK, seq=1, ack=1),
        ),
        (
            t + 3000,
            synth.tcp4_frame(s[0], c[0], s[1], c[1], 80, sport, ANSWER, flags=PSH | ACK, seq=1, ack=94),
        ),
    ]


def test_only_flows_with_a_watched_device_report_requests_and_keep_evidence() -> None:
    frames = [*exchange(1 * NS, LAPTOP, PRINTER, 40001), *exchange(2 * NS, LAPTOP, CAMERA, 40002)]
    policy = SitePolicy.from_yaml("site: s\nmonitored: {vendors: [hikvision]}\n")
    engine, flows, _ = run_frames(frames, policy=policy)  # one batch: its events are still there
    requests = [e for e in engine.analysis.events if isinstance(e, AppRequest | AppResponse)]
    assert {(type(e).__name__, e.flow.dst[0]) for e in requests} == {
        ("AppRequest", CAMERA[1]),
        ("AppResponse", CAMERA[1]),
    }
    by_server = {f.dst[0]: f for f in flows}
    assert ring_of(by_server[CAMERA[1]]) is not None
    assert ring_of(by_server[PRINTER[1]]) is None
    assert by_server[PRINTER[1]].protocol == by_server[CAMERA[1]].protocol == "http"  # both still read
