"""BitTorrent: DHT messages (KRPC, bencoded), uTP on a labelled flow, the peer handshake; real libtorrent
traffic from nDPI's capture, and malformed input that must be refused with a reason."""

from __future__ import annotations

import pytest

from monitor.analyzers import AnalyzerError
from monitor.analyzers.bittorrent import (
    KrpcMessage,
    handle_bittorrent,
    handshake_looks_like,
    utp_type,
)
from monitor.events import BitTorrentMessage
from tests.monitor.analyzers.payloads import udp_payloads
from tests.monitor.analyzers.recording import RecordingContext, make_flow, run
from tests.truth.paths import PCAPS

CAPTURE = PCAPS / "ndpi" / "bittorrent_utp.pcap"
NODE = bytes(range(20))


def _query(method: bytes = b"find_node", node: bytes = NODE) -> bytes:
    name = str(len(method)).encode() + b":" + method
    node_id = b"2:id" + str(len(node)).encode() + b":" + node
    return b"d1:ad" + node_id + b"6:target20:" + NODE + b"e1:q" + name + b"1:t2:aa1:y1:qe"


def test_the_real_dht_queries_of_a_libtorrent_peer() -> None:
    dht = [p for p in udp_payloads(CAPTURE) if p.payload[:1] == b"d"]
    assert len(dht) == 3 and all(p.sport == 64969 for p in dht)  # what nDPI's capture holds
    for p in dht:
        assert KrpcMessage.looks_like(p.payload)
        assert KrpcMessage.parse(p.payload) == KrpcMessage("query", "get_peers")


def test_queries_responses_and_errors() -> None:
    assert KrpcMessage.parse(_query()) == KrpcMessage("query", "find_node")
    assert KrpcMessage.parse(_query(b"mozi_config")) == KrpcMessage("query", "other")
    response = b"d1:rd2:id20:" + NODE + b"5:nodes0:e1:t2:aa1:y1:re"
    assert KrpcMessage.parse(response) == KrpcMessage("response", None)
    error = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee"
    assert KrpcMessage.parse(error) == KrpcMessage("error", None)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"d1:t2:aa1:y1:q", "cut short"),
        (b"d1:t2:aa1:y1:xe", "no transaction id or message type"),
        (b"l1:ae", "not a bencoded dictionary"),
        (_query() + b"junk", "bytes after the dictionary"),
        (_query(node=NODE[:19]), "20-byte node id"),
        (b"d1:t2:aa1:y1:q1:q4:pinge", "without its method or arguments"),
        (b"d1:t99:aa1:y1:qe", "runs past the end"),
        (b"d" * 40 + b"e" * 40, "nested deeper"),
        (b"di1e1:ae", "not a string"),
        (b"d1:ti1x1:y1:qe", "integer"),
        (b"d1:t" + b"l" * 3 + b"e" * 3 + b"1:y1:q" + b"1:al" + b"i1e" * 5000 + b"ee", "more than 4096"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        KrpcMessage.parse(data)


def test_utp_and_the_handshake() -> None:
    assert utp_type(b"\x41\x00" + bytes(18)) == "syn" and utp_type(b"\x21\x00" + bytes(18)) == "state"
    assert utp_type(b"\x02\x00" + bytes(18)) is None  # version 2
    assert utp_type(b"\x51\x00" + bytes(18)) is None  # type 5
    assert utp_type(b"\x01\x00" + bytes(10)) is None  # shorter than the header
    assert handshake_looks_like(b"\x13BitTorrent protocol" + bytes(8)) and not handshake_looks_like(
        b"\x13Bit"
    )


def test_the_handler_reports_what_each_side_sends() -> None:
    flow = make_flow("10.20.0.11", 40000, "203.0.113.9", 6881, proto=17)
    syn, state = b"\x41\x00\x53\x02" + bytes(16), b"\x21\x00\x53\x02" + bytes(16)
    data = b"\x01\x00\x53\x03" + bytes(16) + b"\x13BitTorrent protocol" + bytes(8)
    segments = [(True, _query()), (False, syn), (True, state), (False, data), (False, b"\x00" * 40)]
    ctx = run(handle_bittorrent, flow, segments, "bittorrent")
    events = ctx.of(BitTorrentMessage)
    # A SYN is not credited (TURN ChannelData on channel 0x4100 has its shape); a STATE answering it and DATA
    # carrying the peer handshake are.
    assert [(e.from_src, e.what) for e in events] == [  # type: ignore[attr-defined]
        (True, "DHT query (find_node)"),
        (True, "uTP state"),
        (False, "uTP data"),
    ]


def test_a_reply_of_utp_shape_is_not_credited_to_a_side_that_never_spoke_bittorrent() -> None:
    # An outsider's DHT ping labels the flow; the camera's STUN success (0x0101...) or TURN ChannelData on
    # channel 0x4100 has uTP's shape but answers no SYN: not the camera's BitTorrent. Nor anything on TCP.
    for proto in (17, 6):
        flow = make_flow("203.0.113.9", 6881, "10.20.0.11", 3478, proto=proto)
        stun_ok = b"\x01\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)
        ctx = run(
            handle_bittorrent,
            flow,
            [(True, _query(b"ping")), (False, stun_ok), (False, b"\x21\x00" + bytes(18))],
            "bittorrent",
        )
        assert [e.from_src for e in ctx.of(BitTorrentMessage)] == [True], proto  # type: ignore[attr-defined]


def test_a_first_packet_must_be_a_dht_message_or_the_handshake() -> None:
    # uTP's 20-byte header says too little to label a flow by (four bytes it could share with any binary
    # protocol): read only on a flow a DHT message labelled.
    flow = make_flow("10.20.0.11", 40000, "203.0.113.9", 6881, proto=17)
    ctx = RecordingContext()
    with pytest.raises(AnalyzerError, match="no DHT message"):
        handle_bittorrent(ctx, flow, True, b"\x21\x00" + bytes(18), 0)
    assert handle_bittorrent(ctx, flow, True, b"\x13BitTorrent protocol" + bytes(48), 0)
    assert [e.what for e in ctx.of(BitTorrentMessage)] == ["peer handshake"]  # type: ignore[attr-defined]
