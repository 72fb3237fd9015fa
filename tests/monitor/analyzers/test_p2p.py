"""Vendor P2P analyzers: EZVIZ XML "STUN", Dahua DHGET and PTCP, CS2 PPPP.

No public capture of any of these protocols was found, so the positive cases are the hand-built fixtures in
`tests/data/fixtures/{ezviz_xml,dahua_p2p,cs2_pppp}/` (each directory's README says which public description
it follows). The real captures of the corpus serve as negatives: none of their UDP or TCP payloads may be
taken for a vendor P2P message.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, p2p
from tests.monitor.analyzers.payloads import tcp_payloads, udp_payloads
from tests.truth.paths import PCAPS

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures"


def fixture(rel: str) -> bytes:
    return (FIXTURES / rel).read_bytes()


def pppp(msg_type: int, payload: bytes = b"") -> bytes:
    return bytes([0xF1, msg_type]) + struct.pack("!H", len(payload)) + payload


DID = b"ABCD\x00\x00\x00\x00" + struct.pack("!I", 123456) + b"EFGHI\x00\x00\x00"

# --- EZVIZ XML -------------------------------------------------------------------------------------------


def test_ezviz_request_fixture() -> None:
    msg = p2p.EzvizXmlMessage.parse(fixture("ezviz_xml/request_31007.xml"))
    assert (msg.root, msg.serial, msg.declaration) == ("Request", "Q00000001", True)
    assert ("LocalIP", "192.168.1.64") in msg.elements
    summary = p2p.identify(fixture("ezviz_xml/request_31007.xml"), 40112, 31007)
    assert summary is not None
    assert (summary.vendor, summary.protocol, summary.kind, summary.serial) == (
        "ezviz",
        "ezviz_xml",
        "Request",
        "Q00000001",
    )


def test_ezviz_response_and_attribute_serial() -> None:
    res = p2p.EzvizXmlMessage.parse(fixture("ezviz_xml/response_6002.xml"))
    assert res.root == "Response" and res.serial is None
    assert dict(res.elements) == {"Result": "0", "NatIP": "203.0.113.7", "NatPort": "40112"}
    ping = p2p.EzvizXmlMessage.parse(fixture("ezviz_xml/attribute_serial_6003.xml"))
    assert (ping.root, ping.serial, ping.declaration) == ("Ping", "Q00000002", False)


def test_ezviz_only_on_its_ports() -> None:
    xml = fixture("ezviz_xml/response_6002.xml")
    assert p2p.identify(xml, 6002, 50000) is not None
    assert p2p.identify(xml, 1900, 50000) is None  # XML elsewhere (SSDP, WS-Discovery) is not EZVIZ


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"hello", "no root element"),
        (b"<?xml version='1.0'?>", "no root element"),
        (b"<Request><a>1</a>", "not closed"),
        (b"<Request><a>1</a></Other>", "not closed"),
        (b"<Request/><More/>", "not closed"),
        (b"<" + b"a" * 70000 + b"/>", "larger"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_ezviz_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        p2p.EzvizXmlMessage.parse(raw)
    assert not p2p.EzvizXmlMessage.looks_like(raw)


def test_ezviz_serial_must_look_like_an_identifier() -> None:
    msg = p2p.EzvizXmlMessage.parse(b"<R><Serial>not a serial!</Serial><sn>AB</sn></R>")
    assert msg.serial is None


# --- Dahua DHGET / PTCP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "serial"),
    [
        ("dhget_probe_p2psrv.bin", "probe.p2psrv", None),
        ("dhget_online_p2psrv.bin", "online.p2psrv", "ABC0123456789XY"),
        ("dhget_online_relay.bin", "online.relay", None),
        ("dhpost_p2p_channel.bin", "device.p2p-channel", "ABC0123456789XY"),
    ],
)
def test_dahua_requests(name: str, kind: str, serial: str | None) -> None:
    raw = fixture(f"dahua_p2p/{name}")
    assert p2p.DahuaP2pMessage.looks_like(raw)
    summary = p2p.identify(raw, 50000, 8800)
    assert summary is not None
    assert (summary.vendor, summary.protocol, summary.kind, summary.serial) == (
        "dahua",
        "dahua_dhget",
        kind,
        serial,
    )
    # The WSSE credentials are never kept.
    flat = repr(p2p.DahuaP2pMessage.parse(raw)) + repr(summary)
    assert "PasswordDigest" not in flat and "AAAAAAAA" not in flat and "1234567890" not in flat
    assert "example" not in flat


def test_dahua_post_body_and_response() -> None:
    post = p2p.DahuaP2pMessage.parse(fixture("dahua_p2p/dhpost_p2p_channel.bin"))
    assert post.method == "DHPOST" and dict(post.body) == {"LocalAddr": "127.0.0.1:50000", "version": "5.0.0"}
    assert dict(post.headers) == {"cseq": "5"}
    raw = fixture("dahua_p2p/response_online_p2psrv.bin")
    assert not p2p.DahuaP2pMessage.looks_like(raw)  # answers look like any HTTP response ...
    res = p2p.DahuaP2pMessage.parse(raw)
    assert (res.status, res.reason, dict(res.body)) == (200, "OK", {"US": "198.51.100.10:8800"})
    summary = p2p.identify(raw, 8800, 50000)  # ... so they are only taken on port 8800
    assert (
        summary is not None
        and summary.kind == "response"
        and summary.detail["body.US"] == "198.51.100.10:8800"
    )
    assert p2p.identify(raw, 80, 50000) is None


def test_dahua_nfget_and_relay_token_dropped() -> None:
    msg = p2p.DahuaP2pMessage.parse(
        b"NFPOST /relay/start/SECRETTOKEN42 HTTP/1.1\r\nCSeq: 9\r\n\r\n<body><Client>:0</Client></body>"
    )
    assert msg.path == "/relay/start/{token}" and "SECRETTOKEN42" not in repr(msg.summary())
    assert msg.summary().kind == "relay.start"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "no DHGET"),
        (b"DHGET /probe/p2psrv HTTP/1.1\r\nno colon here\r\n\r\n", "malformed header"),
        (b"DHGET /x HTTP/1.1\r\nContent-Length: 99\r\n\r\nabc", "Content-Length 99"),
        (b"DHGET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"DHGET /x HTTP/1.1\r\n" + b"A: b\r\n" * 65 + b"\r\n", "more than 64"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_dahua_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        p2p.DahuaP2pMessage.parse(raw)


def test_dahua_ptcp() -> None:
    cmd = p2p.DahuaPtcpPacket.parse(fixture("dahua_p2p/ptcp_command.bin"))
    assert (cmd.body_kind, cmd.command, cmd.pid) == ("command", 0x00, 0xFFFF)
    pay = p2p.DahuaPtcpPacket.parse(fixture("dahua_p2p/ptcp_payload.bin"))
    assert (pay.body_kind, pay.realm, pay.data_length, pay.sent) == ("payload", 0xABCD, 47, 4)
    empty = p2p.DahuaPtcpPacket.parse(fixture("dahua_p2p/ptcp_empty.bin"))
    assert empty.body_kind == "empty" and empty.recv == 60
    summary = p2p.identify(fixture("dahua_p2p/ptcp_payload.bin"), 1, 2)
    assert summary is not None and (summary.protocol, summary.kind) == ("dahua_ptcp", "ptcp.payload")
    bad = fixture("dahua_p2p/ptcp_payload.bin")[:-1]
    with pytest.raises(AnalyzerError, match="does not match"):
        p2p.DahuaPtcpPacket.parse(bad)
    assert not p2p.DahuaPtcpPacket.looks_like(bad) and p2p.identify(bad) is None
    for raw, reason in [
        (b"PTCP" + bytes(10), "shorter"),
        (b"XTCP" + bytes(20), "magic"),
        (b"PTCP" + bytes(22), "command"),
    ]:
        with pytest.raises(AnalyzerError, match=reason):
            p2p.DahuaPtcpPacket.parse(raw)


# --- CS2 PPPP --------------------------------------------------------------------------------------------


def test_pppp_type_table() -> None:
    names = p2p.PPPP_MESSAGE_TYPES
    expected = {
        0x00: "HELLO",
        0x01: "HELLO_ACK",
        0x20: "P2P_REQ",
        0x41: "PUNCH_PKT",
        0x42: "P2P_RDY",
        0xD0: "DRW",
    }
    assert (
        {k: names[k] for k in expected} == expected and names[0xE0] == "ALIVE" and names[0x30] == "LAN_SEARCH"
    )


@pytest.mark.parametrize(
    ("name", "kind", "serial", "extra"),
    [
        ("hello_32100.bin", "hello", None, {}),
        ("hello_ack_32100.bin", "hello_ack", None, {"wan_address": "203.0.113.7:40112"}),
        ("lan_search_32108.bin", "lan_search", None, {}),
        ("punch_pkt.bin", "punch_pkt", "ABCD-123456-EFGHI", {}),
        ("p2p_rdy.bin", "p2p_rdy", "ABCD-123456-EFGHI", {}),
        ("punch_to.bin", "punch_to", None, {"punch_to": "198.51.100.23:61000"}),
        ("p2p_req.bin", "p2p_req", "ABCD-123456-EFGHI", {"local_address": "192.168.1.50:50000"}),
        ("drw.bin", "drw", None, {"channel": "0", "index": "7"}),
        ("alive.bin", "alive", None, {}),
    ],
)
def test_pppp_fixtures(name: str, kind: str, serial: str | None, extra: dict[str, str]) -> None:
    raw = fixture(f"cs2_pppp/{name}")
    assert p2p.Cs2PpppMessage.looks_like(raw)
    summary = p2p.identify(raw, 50000, 32100)
    assert summary is not None
    assert (summary.vendor, summary.protocol, summary.kind, summary.serial) == (
        "cs2",
        "cs2_pppp",
        kind,
        serial,
    )
    assert extra.items() <= summary.detail.items()


def test_pppp_did_variants() -> None:
    ex = p2p.Cs2PpppMessage.parse(pppp(0x41, DID + b"\x01\x02\x03\x00"))  # PUNCH_PKT_EX: DID + version
    assert ex.did == "ABCD-123456-EFGHI"
    relay_pkt = p2p.Cs2PpppMessage.parse(pppp(0x83, b"\xaa\xbb\xcc\xdd" + DID + bytes(4)))
    assert relay_pkt.did == "ABCD-123456-EFGHI" and relay_pkt.type_name == "RLY_PKT"
    assert p2p.Cs2PpppMessage.parse(pppp(0x87, DID)).did == "ABCD-123456-EFGHI"  # request form only
    assert p2p.Cs2PpppMessage.parse(pppp(0x87, bytes(4) + bytes(16))).did is None
    assert p2p.Cs2PpppMessage.parse(pppp(0x41, b"abcd\x00" + bytes(15))).did is None  # not a DID prefix
    assert p2p.Cs2PpppMessage.parse(pppp(0x77)).type_name == "0x77"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"\xf1\x00\x00", "shorter"), (b"\xf2\x00\x00\x00", "0xF1"), (pppp(0x41, DID)[:-1], "length field")],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_pppp_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        p2p.Cs2PpppMessage.parse(raw)
    assert not p2p.Cs2PpppMessage.looks_like(raw)


def test_pppp_looks_like_needs_known_type() -> None:
    assert not p2p.Cs2PpppMessage.looks_like(pppp(0x77))


# --- negatives on real captures -------------------------------------------------------------------------


def test_corpus_has_no_vendor_p2p() -> None:
    """No payload of the third-party captures (DNS, DHCP, STUN, RTP, SIP, TLS, HTTP, MQTT, ...) is taken for a
    vendor P2P message, whatever port it is on, and every looks_like agrees with identify."""
    checked = 0
    for path in sorted(p for p in PCAPS.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng")):
        packets = [(p.sport, p.dport, p.payload) for p in udp_payloads(path)]
        packets += [(p.sport, p.dport, p.payload) for p in tcp_payloads(path)]
        for sport, dport, data in packets:
            if not data:
                continue
            checked += 1
            assert p2p.identify(data, sport, dport) is None, (path.name, sport, dport, data[:32])
            assert not p2p.Cs2PpppMessage.looks_like(data)
            assert not p2p.DahuaP2pMessage.looks_like(data)
            assert not p2p.DahuaPtcpPacket.looks_like(data)
    print(f"\n{checked} corpus payloads, none taken for vendor P2P")
    assert checked > 5000


# --- property tests -------------------------------------------------------------------------------------

PARSERS = (
    p2p.EzvizXmlMessage.parse,
    p2p.DahuaP2pMessage.parse,
    p2p.DahuaPtcpPacket.parse,
    p2p.Cs2PpppMessage.parse,
)
LOOKS = (
    p2p.EzvizXmlMessage.looks_like,
    p2p.DahuaP2pMessage.looks_like,
    p2p.DahuaPtcpPacket.looks_like,
    p2p.Cs2PpppMessage.looks_like,
)
SAMPLES = sorted(
    p.read_bytes()
    for d in ("ezviz_xml", "dahua_p2p", "cs2_pppp")
    for p in (FIXTURES / d).iterdir()
    if p.suffix in (".bin", ".xml")
)


def exercise(data: bytes) -> None:
    for looks in LOOKS:
        looks(data)
    for parse in PARSERS:
        with contextlib.suppress(AnalyzerError):
            parse(data)
    for port in (None, 8800, 31007, 32100):
        p2p.identify(data, port, port)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    exercise(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 400), st.integers(0, 255), st.integers(0, 400))
def test_truncated_and_mutated(sample: bytes, cut: int, value: int, where: int) -> None:
    at = where % len(sample)
    exercise(sample[:cut])
    exercise(sample[:at] + bytes([value]) + sample[at + 1 :])


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"\xf1", b"PTCP", b"DHGET /", b"<R>", b"HTTP/1.1 200 OK\r\n"]), st.binary(max_size=200)
)
def test_prefixed_random(prefix: bytes, tail: bytes) -> None:
    exercise(prefix + tail)
