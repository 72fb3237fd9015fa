"""Evidence rings (monitor/evidence.py): what is kept, within which bounds, and what an alert takes with it.

Credentials are blanked byte for byte in what an alert carries; the tests look for the secrets in every
frame of the evidence, and check that lengths (hence TCP sequence numbers) are unchanged.
"""

from __future__ import annotations

import base64

from lab import attacks, personas, synth
from monitor.alerts import Alert
from monitor.engine import Engine
from monitor.evidence import (
    FIRST_PACKETS,
    PACKET_OVERHEAD,
    RECENT_PACKETS,
    EvidenceRecorder,
    combine,
    recorded,
    redact,
    snapshot,
    tcp_seq,
)
from monitor.flows import Flow
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.protocol import FlowApp
from tests.enginerun import vendors
from tests.monitor.analyzers.recording import make_flow

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
HIK = "44:19:b6:00:00:01"
PC = "02:00:00:00:00:09"


def _flow_with(recorder: EvidenceRecorder, frames: list[tuple[int, bytes, bool]]) -> Flow:
    flow = make_flow("10.0.0.9", 40000, "10.0.0.64", 80)
    flow.app = FlowApp()
    for ts, frame, from_src in frames:
        recorder.record(flow.app, ts, frame, from_src, len(frame), 1)
    return flow


def _tcp(payload: bytes, from_client: bool = True, seq: int = 1) -> bytes:
    if from_client:
        return synth.tcp4_frame(PC, HIK, "10.0.0.9", "10.0.0.64", 40000, 80, payload, seq=seq)
    return synth.tcp4_frame(HIK, PC, "10.0.0.64", "10.0.0.9", 80, 40000, payload, seq=seq)


def test_a_ring_keeps_the_first_packets_and_the_most_recent() -> None:
    rec = EvidenceRecorder()
    n = FIRST_PACKETS + RECENT_PACKETS + 10
    flow = _flow_with(rec, [(T0 + i, _tcp(bytes([i])), True) for i in range(n)])
    kept = [p[0] - T0 for p in recorded(flow)]
    assert kept == [*range(FIRST_PACKETS), *range(n - RECENT_PACKETS, n)]
    assert rec.stats.packets == n


def test_snapshot_stops_at_the_alert_and_marks_the_trigger() -> None:
    rec = EvidenceRecorder()
    flow = _flow_with(rec, [(T0 + i * NS, _tcp(b"x" * i), True) for i in range(1, 6)])
    evidence = snapshot(flow, T0 + 3 * NS)
    assert evidence is not None and [p.ts_ns for p in evidence.packets] == [T0 + NS, T0 + 2 * NS, T0 + 3 * NS]
    assert "raised on" in evidence.packets[-1].note and "first packets" in evidence.packets[0].note
    assert snapshot(flow, T0) is None
    assert snapshot(make_flow("10.0.0.1", 1, "10.0.0.2", 2), T0) is None  # nothing recorded


def test_bounds_in_bytes_and_rings_forget_the_oldest() -> None:
    rec = EvidenceRecorder(max_bytes=64 * 1024, max_rings=100)
    frame = _tcp(b"y" * 1000)
    flows = [_flow_with(rec, [(T0 + i, frame, True)] * 3) for i in range(200)]
    assert rec.stats.bytes <= 64 * 1024 and rec.rings <= 100
    assert rec.stats.forgotten == 200 - rec.rings
    assert recorded(flows[0]) == [] and len(recorded(flows[-1])) == 3
    # A forgotten flow that goes on starts a ring again.
    rec.record(flows[0].app, T0 + 10**6, frame, True, len(frame), 1)  # type: ignore[arg-type]
    assert len(recorded(flows[0])) == 1
    # A flood of distinct flows: the bound holds whatever their number.
    for i in range(5000):
        _flow_with(rec, [(T0 + i, frame, True)])
    assert rec.stats.bytes <= 64 * 1024 + len(frame) + PACKET_OVERHEAD


def test_frames_are_cut_to_the_snap_length() -> None:
    rec = EvidenceRecorder()
    flow = _flow_with(rec, [(T0, _tcp(b"z" * 5000), True)])
    ((_, frame, _, wirelen, _),) = recorded(flow)
    assert len(frame) == 2048 and wirelen > 5000


def test_credentials_are_blanked_byte_for_byte() -> None:
    secret = "S3cret-pw"
    basic = attacks.basic_auth("admin", secret)
    request = attacks.http_request(
        "POST",
        f"/cgi-bin/login?user=admin&password={secret}",
        "cam",
        authorization=basic,
        body=f'{{"userName":"admin","password":"{secret}"}}'.encode(),
        extra=f"Cookie: session={secret}\r\n",
    )
    soap = f'<wsse:Password Type="#PasswordText">{secret}</wsse:Password>'.encode()
    url = f"DESCRIBE rtsp://admin:{secret}@10.0.0.64/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode()
    token = base64.b64encode(f"admin:{secret}".encode()).decode()
    isapi = attacks.http_request("GET", f"/ISAPI/System/deviceInfo?auth={token}", "cam")
    items = [(T0 + i, _tcp(p), True, len(_tcp(p)), 1) for i, p in enumerate((request, soap, url, isapi))]
    flow = make_flow("10.0.0.9", 40000, "10.0.0.64", 80)
    frames = redact(items, flow)
    encoded = base64.b64encode(f"admin:{secret}".encode())
    for before, after in zip(items, frames, strict=True):
        assert len(after) == len(before[1])
        assert secret.encode() not in after and encoded not in after
    assert (
        b"Authorization: ****" in frames[0] and b"POST /cgi-bin/login?user=admin&password=****" in frames[0]
    )
    assert b"GET /ISAPI/System/deviceInfo?auth=****" in frames[3]


def test_a_header_cut_by_a_segment_boundary_is_blanked_on() -> None:
    basic = attacks.basic_auth("admin", "S3cret-pw").encode()
    head = b"GET / HTTP/1.1\r\nHost: cam\r\nAuthorization: " + basic[:9]
    rest = basic[9:] + b"\r\nAccept: */*\r\n\r\n"
    items = [(T0, _tcp(head), True, 0, 1), (T0 + 1, _tcp(rest, seq=1 + len(head)), True, 0, 1)]
    frames = redact(items, make_flow("10.0.0.9", 40000, "10.0.0.64", 80))
    joined = frames[0] + frames[1]
    assert basic[9:] not in joined and basic[:9] not in joined and b"Accept: */*" in frames[1]


def test_what_a_client_types_on_telnet_is_blanked_and_the_server_kept() -> None:
    flow = make_flow("10.0.0.9", 40000, "10.0.0.42", 23)
    flow.protocol = "telnet"
    client = synth.tcp4_frame(PC, HIK, "10.0.0.9", "10.0.0.42", 40000, 23, b"root\r\nxc3511\r\n")
    server = synth.tcp4_frame(HIK, PC, "10.0.0.42", "10.0.0.9", 23, 40000, b"login: ")
    frames = redact([(T0, server, False, 0, 1), (T0 + 1, client, True, 0, 1)], flow)
    assert b"login: " in frames[0] and b"xc3511" not in frames[1] and b"root" not in frames[1]


def test_mirai_syn_is_read() -> None:
    syn = attacks.mirai_syn(HIK, PC, "10.0.0.42", "203.0.113.77", 41000)
    assert tcp_seq(syn, 1) == (0xCB00714D, 0xCB00714D)
    tagged = attacks.mirai_syn(HIK, PC, "10.0.0.42", "203.0.113.77", 41000)
    tagged = tagged[:12] + b"\x81\x00\x00\x0a" + tagged[12:]  # one 802.1Q tag
    assert tcp_seq(tagged, 1) == (0xCB00714D, 0xCB00714D)
    assert tcp_seq(synth.udp4_frame(HIK, PC, "10.0.0.42", "10.0.0.1", 1, 53, b"q"), 1) is None
    assert tcp_seq(b"\x00" * 10, 1) is None and tcp_seq(syn, 999) is None
    assert tcp_seq(syn[14:], 101) == (0xCB00714D, 0xCB00714D)  # raw IP


def test_combine_orders_and_caps() -> None:
    rec = EvidenceRecorder()
    a = _flow_with(rec, [(T0 + 2, _tcp(b"a"), True)])
    b = _flow_with(rec, [(T0 + 1, _tcp(b"b"), True)])
    both = combine([snapshot(a, T0 + 5), None, snapshot(b, T0 + 5)])
    assert both is not None and both.flows == 2 and [p.ts_ns for p in both.packets] == [T0 + 1, T0 + 2]
    assert combine([None]) is None


def engine_alerts(frames: list[tuple[int, bytes]]) -> tuple[Engine, list[Alert]]:
    """The engine's alert objects (with their evidence) for these frames."""
    engine = Engine(SitePolicy.default(), vendors())
    parser = CaptureParser("frames", 65536)
    out: list[Alert] = []
    for batch in [*parser.feed(pcap_bytes(frames)), *parser.flush()]:
        out += engine.feed(batch).alerts
    out += engine.finish().alerts
    return engine, out


def test_high_alerts_carry_their_packets_without_the_password() -> None:
    """Through the engine: an unauthorized RTSP pull (an existing high rule) carries its flow's packets."""
    auth = f"Authorization: {attacks.basic_auth('admin', 'S3cret-pw')}\r\n"
    url = "rtsp://10.0.0.64/Streaming/Channels/101"
    turns = [(personas.rtsp_request("DESCRIBE", url, 1, auth), personas.rtsp_response(1, "Hik"))]
    frames = personas.tcp_exchange(T0, PC, HIK, "198.51.100.7", "10.0.0.64", 40000, 554, turns)
    engine, alerts = engine_alerts(frames)
    (alert,) = [a for a in alerts if a.rule.id == "stream.unauthorized_client"]
    assert alert.evidence is not None and len(alert.evidence.packets) >= 3  # SYN, SYN-ACK, the request
    assert all(b"S3cret" not in p.frame for p in alert.evidence.packets)
    assert any(b"DESCRIBE" in p.frame for p in alert.evidence.packets)
    assert "file" not in alert.to_record()  # the agent's evidence sink names the file
    # Lower alerts carry none (device.new).
    assert [a.rule.id for a in alerts if a.evidence is None] == ["device.new"]
    assert engine.analysis.evidence.stats.packets > 0
