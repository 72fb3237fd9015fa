"""STUN/TURN analyzer: hand-built messages (RFC 5389/8489 test-vector layout), real captures, malformed input.

Golden: on every UDP flow nDPI labels STUN (nDPI's `stun_signal.pcapng`, nfstream's `stun_facebook.pcapng`)
and on Arkime's `turn.pcap` (STUN over TCP to a Cloudflare TURN server), our analyzer recognises STUN, and
its heuristic does not fire on the flows nDPI labels as anything else.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, stun
from tests.monitor.analyzers.payloads import tcp_streams, udp_payloads
from tests.truth.arkime import read_arkime_test
from tests.truth.ndpi import read_ndpi_out
from tests.truth.nfstream import read_nfstream_csv
from tests.truth.paths import ndpi_pairs, pcap, truth

COOKIE = struct.pack("!I", stun.MAGIC_COOKIE)
TID = bytes(range(1, 13))


def attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def message(msg_type: int, *attrs: bytes, tid: bytes = TID, cookie: bytes = COOKIE) -> bytes:
    body = b"".join(attrs)
    return struct.pack("!HH", msg_type, len(body)) + cookie + tid + body


def xor_v4(ip: str, port: int) -> bytes:
    raw = bytes(int(x) for x in ip.split("."))
    return (
        b"\x00\x01"
        + struct.pack("!H", port ^ 0x2112)
        + bytes(a ^ b for a, b in zip(raw, COOKIE, strict=True))
    )


def with_fingerprint(msg: bytes) -> bytes:
    # The length field must count the FINGERPRINT attribute before the CRC is computed.
    grown = msg[:2] + struct.pack("!H", len(msg) - 20 + 8) + msg[4:]
    crc = (zlib.crc32(grown) ^ 0x5354554E) & 0xFFFFFFFF
    return grown + attr(0x8028, struct.pack("!I", crc))


# --- hand-built messages --------------------------------------------------------------------------------


def test_binding_request_and_response() -> None:
    req = stun.StunMessage.parse(message(0x0001, attr(0x8022, b"camwatch test")))
    assert (req.method_name, req.message_class, req.type_name) == ("Binding", "request", "Binding Request")
    assert req.transaction_id == TID and not req.classic and req.software == "camwatch test"
    assert not req.is_turn

    res = stun.StunMessage.parse(message(0x0101, attr(0x0020, xor_v4("192.0.2.1", 32853))))
    assert res.type_name == "Binding Response"
    assert res.xor_mapped_address == stun.StunAddress("192.0.2.1", 32853)
    assert res.public_address == res.xor_mapped_address and str(res.public_address) == "192.0.2.1:32853"


def test_rfc5769_ipv6_xor_mapped_address() -> None:
    # RFC 5769 2.2: 2001:db8:1234:5678:11:2233:4455:6677 port 32853, XORed with cookie + transaction id.
    tid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    ip = bytes.fromhex("20010db8123456780011223344556677")
    key = COOKIE + tid
    value = (
        b"\x00\x02" + struct.pack("!H", 32853 ^ 0x2112) + bytes(a ^ b for a, b in zip(ip, key, strict=True))
    )
    msg = stun.StunMessage.parse(message(0x0101, attr(0x0020, value), tid=tid))
    assert msg.xor_mapped_address == stun.StunAddress("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert msg.xor_mapped_address.family == 6


def test_turn_allocate_error_and_success() -> None:
    err = stun.StunMessage.parse(
        message(
            0x0113,
            attr(0x0009, b"\x00\x00\x04\x01Unauthorized"),
            attr(0x0014, b"turn.example.org"),
            attr(0x0015, b"0123456789abcdef"),
        )
    )
    assert err.type_name == "Allocate Error" and err.is_turn
    assert (err.error_code, err.error_reason, err.realm, err.nonce_length) == (
        401,
        "Unauthorized",
        "turn.example.org",
        16,
    )
    ok = stun.StunMessage.parse(
        message(
            0x0103,
            attr(0x0016, xor_v4("198.51.100.9", 50000)),
            attr(0x0020, xor_v4("203.0.113.4", 40000)),
            attr(0x000D, struct.pack("!I", 600)),
            attr(0x0008, bytes(20)),
        )
    )
    assert ok.type_name == "Allocate Response"
    assert ok.xor_relayed_address == stun.StunAddress("198.51.100.9", 50000)
    assert ok.lifetime == 600 and ok.message_integrity


def test_turn_permission_channel_send_data() -> None:
    perm = stun.StunMessage.parse(
        message(0x0008, attr(0x0012, xor_v4("192.0.2.7", 1000)), attr(0x0012, xor_v4("192.0.2.8", 2000)))
    )
    assert perm.method_name == "CreatePermission"
    assert [str(a) for a in perm.xor_peer_addresses] == ["192.0.2.7:1000", "192.0.2.8:2000"]
    bind = stun.StunMessage.parse(message(0x0009, attr(0x000C, b"\x40\x01\x00\x00")))
    assert (bind.method_name, bind.channel_number) == ("ChannelBind", 0x4001)
    send = stun.StunMessage.parse(
        message(0x0016, attr(0x0013, b"hello"), attr(0x0012, xor_v4("192.0.2.9", 9)))
    )
    assert (send.type_name, send.data_length) == ("Send Indication", 5)
    data = stun.StunMessage.parse(message(0x0017, attr(0x0013, b"")))
    assert data.type_name == "Data Indication" and data.message_class == "indication"
    alloc = stun.StunMessage.parse(message(0x0003, attr(0x0019, b"\x11\x00\x00\x00"), attr(0x0006, b"user")))
    assert (alloc.requested_transport, alloc.username, alloc.username_length) == (17, "user", 4)


def test_username_is_capped_not_rejected() -> None:
    msg = stun.StunMessage.parse(message(0x0001, attr(0x0006, b"u" * 500)))
    assert msg.username == "u" * 128 and msg.username_length == 500


def test_fingerprint() -> None:
    good = with_fingerprint(message(0x0001, attr(0x8022, b"x")))
    assert stun.StunMessage.parse(good).fingerprint_ok is True
    bad = good[:-1] + bytes([good[-1] ^ 1])
    assert stun.StunMessage.parse(bad).fingerprint_ok is False
    assert stun.StunMessage.parse(message(0x0001)).fingerprint_ok is None


def test_classic_rfc3489() -> None:
    tid16 = bytes(range(16))
    mapped = b"\x00\x01" + struct.pack("!H", 3478) + bytes([192, 0, 2, 1])
    changed = b"\x00\x01" + struct.pack("!H", 3479) + bytes([192, 0, 2, 2])
    raw = struct.pack("!HH", 0x0101, 24) + tid16 + attr(0x0001, mapped) + attr(0x0005, changed)
    msg = stun.StunMessage.parse(raw)
    assert msg.classic and msg.transaction_id == tid16 and msg.type_name == "Binding Response"
    assert msg.mapped_address == stun.StunAddress("192.0.2.1", 3478)
    assert msg.other_address == stun.StunAddress("192.0.2.2", 3479)
    assert stun.looks_like(raw)
    # Without the cookie only the six RFC 3489 message types are taken as STUN.
    assert not stun.looks_like(struct.pack("!HH", 0x0003, 0) + tid16)


def test_method_and_class_bits() -> None:
    # 0x0113 = Allocate (0x003) error; 0x0017 = Data (0x007) indication; 0x0109 = ChannelBind success.
    for msg_type, method, klass in [(0x0113, 3, "error"), (0x0017, 7, "indication"), (0x0109, 9, "success")]:
        msg = stun.StunMessage.parse(message(msg_type))
        assert (msg.method, msg.message_class) == (method, klass)
    assert stun.StunMessage.parse(message(0x3EEF)).method_name == "0xfff"


def test_channel_data() -> None:
    cd = stun.parse(b"\x40\x01\x00\x05hello")
    assert cd == stun.ChannelData(0x4001, 5, 0)
    assert stun.ChannelData.parse(b"\x40\x01\x00\x05hello\x00\x00\x00", stream=True).padding == 3
    assert stun.looks_like_channel_data(b"\x40\x01\x00\x05hello")
    assert not stun.looks_like_channel_data(b"\x40\x01\x00\x09hello")
    with pytest.raises(AnalyzerError, match="past"):
        stun.ChannelData.parse(b"\x40\x01\x00\x09hello")
    with pytest.raises(AnalyzerError, match="after ChannelData"):
        stun.ChannelData.parse(b"\x40\x01\x00\x05hello\x00", stream=True)


def test_split_stream() -> None:
    a = message(0x0001)
    b = message(0x0101, attr(0x0020, xor_v4("192.0.2.1", 1)))
    cd = b"\x40\x02\x00\x03abc\x00"
    msgs, used = stun.split_stream(a + cd + b + b[:7])
    assert used == len(a) + len(cd) + len(b)
    assert [type(m).__name__ for m in msgs] == ["StunMessage", "ChannelData", "StunMessage"]
    with pytest.raises(AnalyzerError, match="neither"):
        stun.split_stream(b"\x80" * 8)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\x01\x00", "shorter"),
        (message(0x0001, attr(0x8022, b"abcd"))[:-1], "length field"),
        (message(0xC001), "top two bits"),
        (struct.pack("!HH", 1, 2) + COOKIE + TID + b"\x00\x00", "multiple of 4"),
        (message(0x0001) + b"\x00\x06\x00\x08ab", "length field"),
        (message(0x0001, b"\x00\x06\x00\x10abcd"), "runs past"),
        (message(0x0001, b"\x00\x06", cookie=b"abcd"), "stray"),
        (message(0x0101, attr(0x0020, b"\x00\x03\x00\x01\x01\x02\x03\x04")), "unknown family"),
        (message(0x0101, attr(0x0020, b"\x00\x01\x00\x01\x01\x02")), "needs 8 bytes"),
        (message(0x0111, attr(0x0009, b"\x00\x00")), "ERROR-CODE"),
        (message(0x0003, attr(0x000D, b"\x00\x00")), "4 bytes"),
        (b"\xc0\x00\x00\x00", "neither"),
        (b"", "empty"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_malformed(raw: bytes, reason: str) -> None:
    parse = stun.StunMessage.parse if reason == "top two bits" else stun.parse
    with pytest.raises(AnalyzerError, match=reason):
        parse(raw)


def test_looks_like_rejects_other_protocols() -> None:
    dns_query = bytes.fromhex("1a2b01000001000000000000076578616d706c6503636f6d0000010001")
    dtls_hello = bytes.fromhex("16fefd0000000000000000002d010000210000000000000021fefd") + bytes(32)
    quic_initial = bytes.fromhex("c3000000010800112233445566778800") + bytes(1180)
    ntp_client = bytes.fromhex("e30006ec") + bytes(44)
    rtp = bytes.fromhex("8008000100000064deadbeef") + bytes(160)
    for payload in (dns_query, dtls_hello, quic_initial, ntp_client, rtp, b"", b"\x00" * 19):
        assert not stun.looks_like(payload)
    # A 5389 message with a bad attribute chain is refused too.
    assert not stun.looks_like(message(0x0001, b"\x00\x06\x00\x05abcd"))


# --- property tests: malformed input raises only AnalyzerError; looks_like never raises -------------------


SAMPLES = [
    message(0x0001, attr(0x8022, b"camwatch")),
    with_fingerprint(
        message(0x0103, attr(0x0016, xor_v4("198.51.100.9", 5)), attr(0x0020, xor_v4("1.2.3.4", 5)))
    ),
    message(0x0113, attr(0x0009, b"\x00\x00\x04\x01Unauthorized"), attr(0x0014, b"realm")),
    b"\x40\x01\x00\x05hello",
]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    stun.looks_like(data)
    stun.looks_like_channel_data(data)
    with contextlib.suppress(AnalyzerError):
        stun.parse(data)
    with contextlib.suppress(AnalyzerError):
        stun.split_stream(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(0, 200), st.integers(0, 255), st.integers(0, 200))
def test_truncated_and_mutated(sample: bytes, cut: int, value: int, where: int) -> None:
    for data in (
        sample[:cut],
        sample[: where % len(sample)] + bytes([value]) + sample[where % len(sample) + 1 :],
    ):
        stun.looks_like(data)
        with contextlib.suppress(AnalyzerError):
            stun.parse(data)


# --- golden: real captures ------------------------------------------------------------------------------

FlowKey = frozenset[tuple[str, int]]


@dataclass
class CorpusFlow:
    """One UDP flow of an nDPI-labelled capture with its payloads."""

    capture: str
    label: str  # nDPI's master protocol, else its app
    payloads: list[bytes]


def ndpi_udp_flows() -> list[CorpusFlow]:
    """Every UDP flow of the nDPI captures that have a truth file, with nDPI's label and our payloads."""
    flows: list[CorpusFlow] = []
    for cap, out in ndpi_pairs():
        labels = {f.key()[2]: f.protocol for f in read_ndpi_out(out).flows if f.l4 == "UDP"}
        by_key: dict[FlowKey, list[bytes]] = defaultdict(list)
        for p in udp_payloads(cap):
            by_key[frozenset({(p.src, p.sport), (p.dst, p.dport)})].append(p.payload)
        for key, payloads in by_key.items():
            if key in labels and payloads:
                flows.append(CorpusFlow(cap.name, labels[key], payloads))
    return flows


def agreement_table(rows: list[tuple[str, int, int, int, int]], title: str) -> str:
    """Format (label, flows, flows recognised, packets, packets recognised) as a table."""
    lines = [title, f"{'nDPI label':<14}{'flows':>7}{'hit':>6}{'packets':>9}{'hit':>7}"]
    lines += [f"{label:<14}{f:>7}{fh:>6}{p:>9}{ph:>7}" for label, f, fh, p, ph in rows]
    return "\n".join(lines)


def test_golden_ndpi_stun_flows() -> None:
    flows = ndpi_udp_flows()
    stun_flows = [f for f in flows if f.label == "STUN"]
    assert len(stun_flows) == 21  # stun_signal.pcapng (its ICMP flows aside)
    by_label: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for f in flows:
        hits = sum(1 for p in f.payloads if stun.looks_like(p))
        row = by_label[f.label]
        row[0] += 1
        row[1] += hits > 0
        row[2] += len(f.payloads)
        row[3] += hits
    rows = [(label, v[0], v[1], v[2], v[3]) for label, v in sorted(by_label.items())]
    print("\n" + agreement_table(rows, "STUN heuristic (looks_like) against nDPI, UDP flows"))
    # Every STUN flow is recognised; nothing else is.
    assert by_label["STUN"][1] == by_label["STUN"][0]
    false_positive = {label: v[1] for label, v in by_label.items() if label != "STUN" and v[1]}
    assert not false_positive, false_positive
    # Every packet our heuristic accepts parses, with the TURN methods Signal uses.
    seen = {stun.StunMessage.parse(p).type_name for f in stun_flows for p in f.payloads if stun.looks_like(p)}
    assert {"Binding Request", "Binding Response", "Allocate Request", "Allocate Error"} <= seen
    assert {"CreatePermission Request", "Refresh Response", "Send Indication", "Data Indication"} <= seen


def test_golden_ndpi_mapped_addresses() -> None:
    # nDPI prints the mapped and relayed addresses it decoded; ours must include them.
    truth_flows = [f for f in read_ndpi_out(truth("ndpi/stun_signal.pcapng.out")).flows if f.l4 == "UDP"]
    payloads = udp_payloads(pcap("ndpi/stun_signal.pcapng"))
    for tf in truth_flows:
        key = {(tf.src_ip, tf.src_port), (tf.dst_ip, tf.dst_port)}
        msgs = [
            stun.StunMessage.parse(p.payload)
            for p in payloads
            if {(p.src, p.sport), (p.dst, p.dport)} == key and stun.looks_like(p.payload)
        ]
        mapped = {str(m.public_address) for m in msgs if m.public_address is not None}
        relayed = {str(m.xor_relayed_address) for m in msgs if m.xor_relayed_address is not None}
        if "Mapped IP/Port" in tf.attrs:
            assert tf.attrs["Mapped IP/Port"] in mapped, (tf.index, mapped)
        if "Relayed IP/Port" in tf.attrs:
            assert tf.attrs["Relayed IP/Port"] in relayed, (tf.index, relayed)


def test_golden_nfstream_facebook_turn() -> None:
    rows = read_nfstream_csv(truth("nfstream/stun_facebook.pcapng.csv"))
    assert [r.application_name for r in rows] == ["STUN.FacebookVoip"]
    payloads = [p.payload for p in udp_payloads(pcap("nfstream/stun_facebook.pcapng"))]
    assert len(payloads) == rows[0].bidirectional_packets == 75
    kinds: dict[str, int] = defaultdict(int)
    for p in payloads:
        msg = stun.parse(p)  # every datagram is STUN or ChannelData
        kinds[type(msg).__name__] += 1
        assert stun.looks_like(p) == isinstance(msg, stun.StunMessage)
    assert kinds == {"StunMessage": 57, "ChannelData": 18}
    channels = {m.channel for m in map(stun.parse, payloads) if isinstance(m, stun.ChannelData)}
    bound = {
        m.channel_number
        for m in map(stun.parse, payloads)
        if isinstance(m, stun.StunMessage) and m.method_name == "ChannelBind" and m.message_class == "request"
    }
    assert channels == bound  # ChannelData only on the channel the client bound


def test_golden_arkime_turn_over_tcp() -> None:
    (session,) = read_arkime_test(truth("arkime/turn.test"))
    expect = session["stun"]
    msgs: list[stun.StunMessage] = []
    for data in tcp_streams(pcap("arkime/turn.pcap")).values():
        got, used = stun.split_stream(data)
        assert used == len(data)
        msgs += [m for m in got if isinstance(m, stun.StunMessage)]
    assert sorted({m.type_name for m in msgs}) == sorted(expect["type"])
    assert {m.realm for m in msgs if m.realm} == set(expect["realm"])
    assert {m.username for m in msgs if m.username} == set(expect["username"])
    assert {m.error_code for m in msgs if m.error_code} == set(expect["error"])
    mapped = {m.xor_mapped_address for m in msgs if m.xor_mapped_address}
    assert {(a.ip, a.port) for a in mapped} == set(
        zip(expect["xorMappedIp"], expect["xorMappedPort"], strict=True)
    )


def test_real_payloads_survive_truncation() -> None:
    """Every real STUN payload cut anywhere raises AnalyzerError or parses: nothing else."""
    payloads = [p.payload for p in udp_payloads(Path(pcap("nfstream/stun_facebook.pcapng")))]
    for data in payloads:
        for cut in range(0, len(data), 3):
            with contextlib.suppress(AnalyzerError):
                stun.parse(data[:cut])
