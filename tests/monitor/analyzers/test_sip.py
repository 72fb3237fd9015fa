"""SIP, read for GB/T 28181: the messages of real VoIP captures against Zeek's and nDPI's view of them, and
the GB/T 28181 requests (20-digit codes, MANSCDP) told apart from other SIP."""

from __future__ import annotations

import pytest

from lab import payloads, synth
from monitor.analyzers import AnalyzerError, sip
from tests.enginerun import run_engine, run_frames
from tests.monitor.analyzers.payloads import udp_payloads
from tests.monitor.rules.traffic import GW, HIK, NS, T0
from tests.truth.ndpi import read_ndpi_out
from tests.truth.paths import pcap, truth
from tests.truth.zeek import read_zeek_log

DEVICE = "34020000001320000001"  # type 132: a network camera
PLATFORM = "34020000002000000001"  # type 200: the central SIP server


# --- golden: real captures ------------------------------------------------------------------------------


def test_golden_zeek_sip_requests_and_answers() -> None:
    # Zeek's sip.log has a row per transaction: its method, request URI, User-Agent and final status.
    log = read_zeek_log(truth("zeek/sip/wireshark.pcap/scripts.base.protocols.sip.wireshark/sip.log"))
    messages = [sip.parse(p.payload) for p in udp_payloads(pcap("zeek/sip/wireshark.pcap"), 5060)]
    requests = {(m.method, m.uri, m.user_agent) for m in messages if m.method is not None}
    expected = {(r["method"], r["uri"], r["user_agent"]) for r in log.rows}
    # An ACK to a refused INVITE belongs to the INVITE's transaction: Zeek logs it with that one.
    assert {r for r in requests if r[0] != "ACK"} == {r for r in expected if r[0] != "ACK"}
    assert expected <= requests and len(requests) == 8
    statuses = {m.status for m in messages if m.status is not None}
    assert {int(str(r["status_code"])) for r in log.rows if r["status_code"] is not None} <= statuses
    # A VoIP phone's SIP is not GB/T 28181, though its numbers are digits.
    assert not any(m.gb28181 for m in messages)


def test_golden_ndpi_sip_flows_are_labelled_sip() -> None:
    result = read_ndpi_out(truth("ndpi/sip.pcap.out"))
    expected = {
        frozenset({(f.src_ip, f.src_port), (f.dst_ip, f.dst_port)}) for f in result.flows if f.app == "SIP"
    }
    _, flows, alerts = run_engine(pcap("ndpi/sip.pcap"))
    labelled = {frozenset({f.src, f.dst}) for f in flows if f.protocol == "sip"}
    assert labelled == expected and len(expected) == 2
    assert not [a for a in alerts if a["rule"]["id"] == "platform.registration"]  # type: ignore[index]


# --- GB/T 28181 -------------------------------------------------------------------------------------------


def test_a_gb28181_register_names_the_device_and_the_platform() -> None:
    msg = sip.parse(payloads.gb28181_register(DEVICE, PLATFORM, "10.20.0.11"))
    assert (msg.method, msg.from_user, msg.uri_user, msg.user_agent) == (
        "REGISTER",
        DEVICE,
        PLATFORM,
        "IP Camera",
    )
    assert (
        msg.gb28181
        and sip.gb_type(msg.from_user) == "network camera"
        and sip.gb_type(PLATFORM) == ("central SIP server")
    )


def test_a_keepalive_with_compact_headers_is_gb28181_by_its_manscdp_body() -> None:
    msg = sip.parse(payloads.gb28181_keepalive(DEVICE, PLATFORM, "10.20.0.11"))
    assert msg.method == "MESSAGE" and msg.content_type == "Application/MANSCDP+xml"
    assert (msg.from_user, msg.to_user) == (DEVICE, PLATFORM) and msg.gb28181


@pytest.mark.parametrize("uri", ["sip:3402000000", "SIP:3402000000@203.0.113.7:5060", "sip:3402000000;lr"])
def test_a_register_to_the_gb28181_domain_is_gb28181(uri: str) -> None:
    # The domain is the device code's first ten digits (centre and industry codes).
    data = payloads.gb28181_register(DEVICE, PLATFORM, "10.20.0.11").replace(
        f"sip:{PLATFORM}@3402000000".encode(), uri.encode(), 1
    )
    msg = sip.parse(data)
    assert msg.peer_code == DEVICE and msg.gb28181


@pytest.mark.parametrize(
    "change",
    [
        (b"\r\n", b"\n"),  # LF-only line endings
        (b"REGISTER sip:", b"REGISTER  sip:"),  # two spaces
        (b"From: <sip:", b"fRoM: <SIP:"),  # header names and the scheme in any case
        (b"REGISTER", b"\r\n\r\nREGISTER"),  # a stream's keep-alive CRLFs before the message
    ],
    ids=["LF only", "two spaces", "case", "leading CRLF"],
)
def test_register_variants_real_stacks_send(change: tuple[bytes, bytes]) -> None:
    data = payloads.gb28181_register(DEVICE, PLATFORM, "10.20.0.11").replace(*change)
    assert sip.looks_like(data) and sip.parse(data).gb28181


ACCOUNT = "86102345678900000001"  # a VoIP provider's 20-digit account (a door station's line)


@pytest.mark.parametrize(
    "data",
    [
        payloads.sip_register("alice", "voip.example", "10.20.5.10"),
        payloads.sip_register("35104724", "voip.example", "10.20.5.10"),
        payloads.sip_register(ACCOUNT, "voip.example", "10.20.5.10"),
        payloads.sip_register(ACCOUNT, "voip.example", "10.20.5.10").replace(
            b"REGISTER sip:voip.example", f"REGISTER sip:{ACCOUNT}@voip.example".encode()
        ),
        payloads.gb28181_register(DEVICE, PLATFORM, "10.20.0.11").replace(
            b"REGISTER", b"SIP/2.0 200 OK\r\nX:", 1
        ),
    ],
    ids=[
        "a name",
        "a short number",
        "a 20-digit account to a domain",
        "a 20-digit account to itself",
        "an answer",
    ],
)
def test_other_sip_is_not_gb28181(data: bytes) -> None:
    assert not sip.parse(data).gb28181


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "neither a request line"),
        (b"FROB sip:a@b SIP/2.0\r\n\r\n", "unknown method 'FROB'"),
        (b"REGISTER sip:a@b SIP/2.0\r\n" + b"X: " + b"y" * 5000, "no end of the headers"),
        (b"\xff" * 40, "neither a request line"),
    ],
)
def test_what_is_not_sip_is_a_precise_error(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        sip.parse(data)


def test_looks_like() -> None:
    assert sip.looks_like(payloads.gb28181_register(DEVICE, PLATFORM, "10.20.0.11"))
    assert sip.looks_like(b"SIP/2.0 401 Unauthorized\r\n\r\n")
    assert not sip.looks_like(b"REGISTER me please")
    assert not sip.looks_like(b"RTSP/1.0 200 OK\r\n\r\n") and not sip.looks_like(b"")
    assert sip.gb_type("3402000000132000000") is None and sip.gb_type(None) is None


def test_a_long_sip_session_is_read_for_its_first_messages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # A phone's registration refreshes and OPTIONS pings for hours: 8 messages are read, then the flow is
    # left alone (a GB/T 28181 registration comes first).
    parsed: list[bytes] = []
    real = sip.parse

    def counting(data: bytes) -> sip.SipMessage:
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(sip, "parse", counting)
    options = b"OPTIONS sip:pbx.example SIP/2.0\r\nFrom: <sip:201@pbx.example>\r\nCSeq: 1 OPTIONS\r\n\r\n"
    frames = [
        (T0 + i * NS, synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, "203.0.113.9", 5060, 5060, options))
        for i in range(20)
    ]
    _, flows, _ = run_frames(frames)
    assert [f.protocol for f in flows] == ["sip"] and len(parsed) == sip.MAX_MESSAGES
