"""RTMP (rtmp.py): the chunk stream and its commands, on nDPI's real RTMP capture and on built ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import payloads
from monitor.analyzers import AnalyzerError
from monitor.analyzers.rtmp import (
    MAX_CHUNK_STREAMS,
    MAX_COMMAND,
    RtmpCommand,
    RtmpStreamParser,
    handle_rtmp,
    looks_like,
    parse_command,
)
from monitor.events import StreamRequest
from tests.monitor.analyzers.payloads import tcp_streams
from tests.monitor.analyzers.recording import RecordingContext, make_flow

CAPTURE = Path(__file__).parents[2] / "data" / "corpus" / "pcaps" / "ndpi" / "rtmp.pcap"
# What each direction of the capture's three connections says, as Wireshark's RTMPT dissector reads it
# (the client's connect/createStream/play or _checkbw; the server's _result/onStatus/onBWDone).
EXPECTED = {
    ("192.168.43.1", 1177): ["connect", "createStream", "play"],
    ("192.168.43.128", 1935): ["_result", "_result", "onStatus"],
    ("10.140.80.204", 49757): ["connect", "createStream"],
    ("203.205.224.48", 1935): ["_result", "_result"],
    ("10.140.74.206", 59509): ["connect", "createStream", "_checkbw"],
    ("193.118.47.46", 6002): ["_result", "onBWDone", "_result"],
}
C2 = bytes(1536)


def _streams() -> dict[tuple[str, int], bytes]:
    out = {}
    for port in (1935, 6002):
        for (src, sport, _, _), data in tcp_streams(CAPTURE, port).items():
            out[(src, sport)] = data
    return out


@pytest.mark.parametrize("piece", [1, 7, 97, 1460, 1 << 20])
def test_the_corpus_connections_commands_in_any_segmentation(piece: int) -> None:
    streams = _streams()
    assert set(streams) == set(EXPECTED)
    for side, data in streams.items():
        parser = RtmpStreamParser()
        names = [c.name for i in range(0, len(data), piece) for c in parser.feed(data[i : i + piece])]
        assert names == EXPECTED[side], side
        assert parser.error is None


def test_connect_names_the_application_and_its_url_without_query() -> None:
    streams = _streams()
    parser = RtmpStreamParser()
    connect = parser.feed(streams[("10.140.80.204", 49757)])[0]
    assert connect == RtmpCommand("connect", "live", "rtmp://txlvb-me-rtmp.nonocdn.com:1935/live")
    body = payloads.amf0_command(
        "connect", 1, {"app": "live2", "tcUrl": "rtmp://x.example/live2?token=s3cret"}
    )
    assert parse_command(body).tc_url == "rtmp://x.example/live2"


def _client(*messages: bytes, version: int = 3) -> bytes:
    return payloads.rtmp_handshake(version) + C2 + b"".join(messages)


def test_publish_after_a_chunk_size_change_and_with_long_commands() -> None:
    long_object = {"app": "live2", "tcUrl": "rtmp://a.example/live2", "flashVer": "FMLE/3.0" + "x" * 300}
    stream = _client(
        payloads.rtmp_message(2, 1, (4096).to_bytes(4, "big")),  # Set Chunk Size: 4096 from now on
        payloads.rtmp_command("connect", 1, long_object, chunk_size=4096),  # one chunk of 350 bytes
        payloads.rtmp_message(4, 9, bytes(9000), chunk_size=4096),  # a video message: skipped
        payloads.rtmp_command("publish", 5, None, "secret-key", "live", chunk_size=4096),
    )
    parser = RtmpStreamParser()
    assert [c.name for c in parser.feed(stream)] == ["connect", "publish"] and parser.error is None
    # Without the Set Chunk Size, the 350-byte chunk is read as 128 bytes and a header in the middle of the
    # command: the parser follows the chunk size, or it loses the command.
    unset = RtmpStreamParser()
    assert unset.feed(_client(payloads.rtmp_command("connect", 1, long_object, chunk_size=4096))) == []


def test_an_extended_time_is_skipped_in_every_chunk_of_its_message() -> None:
    body = payloads.amf0_command("publish", 5, None, "k", "live")
    assert len(body) < 128
    big = body + bytes(200)  # two chunks
    header = bytes([0x03]) + b"\xff\xff\xff" + len(big).to_bytes(3, "big") + b"\x14" + bytes(4)
    time = (70000).to_bytes(4, "big")
    message = header + time + big[:128] + b"\xc3" + time + big[128:]
    parser = RtmpStreamParser()
    assert [c.name for c in parser.feed(_client(message))] == ["publish"] and parser.error is None


def test_encrypted_rtmpe_is_not_read_and_garbage_stops_the_parser() -> None:
    parser = RtmpStreamParser()
    assert parser.feed(_client(payloads.rtmp_command("publish", 5, None, "k"), version=6)) == []
    assert parser.encrypted
    bad = RtmpStreamParser()
    assert bad.feed(b"\x16\x03\x01" + bytes(3000)) == [] and bad.error is not None
    assert bad.feed(_client(payloads.rtmp_command("publish", 5, None, "k"))) == []


def test_bounds() -> None:
    # More chunk streams than a client uses is not RTMP: the parser stops (and holds nothing).
    many = b"".join(payloads.rtmp_message(10 + i, 8, b"a") for i in range(MAX_CHUNK_STREAMS + 1))
    parser = RtmpStreamParser()
    parser.feed(_client(many))
    assert parser.error is not None and "chunk streams" in str(parser.error)
    # A command longer than MAX_COMMAND keeps its first MAX_COMMAND bytes (its name); the next one is read.
    huge = payloads.rtmp_command("connect", 1, {"x": "y" * MAX_COMMAND})
    parser = RtmpStreamParser()
    assert [c.name for c in parser.feed(_client(huge, payloads.rtmp_command("publish", 2, None, "k")))] == [
        "connect",
        "publish",
    ]
    assert parser.error is None and parser.buffered == 0


def test_streams_are_read_as_lenient_servers_read_them() -> None:
    # As nginx-rtmp: a continuation on a stream not seen before starts it empty; a new message replaces an
    # unfinished one; an Abort drops one; a Set Chunk Size too short is ignored; a command name in any case.
    publish = payloads.rtmp_command("publish", 2, None, "k")
    cut = payloads.rtmp_command("connect", 1, {"app": "x" * 300})[:140]  # its second chunk never comes
    abort = payloads.rtmp_message(2, 2, (3).to_bytes(4, "big"))
    stream = _client(
        b"\xc5", cut, abort, payloads.rtmp_message(2, 1, b"\x00"), publish.replace(b"publish", b"PUBLISH")
    )
    parser = RtmpStreamParser()
    assert [c.name for c in parser.feed(stream)] == ["PUBLISH"] and parser.error is None
    # A new message on a stream whose last one is unfinished replaces it.
    parser = RtmpStreamParser()
    assert [c.name for c in parser.feed(_client(cut, publish))] == ["publish"]


def test_unfinished_commands_give_way_to_the_next() -> None:
    # Four commands left unfinished (their first chunk only) on four chunk streams fill the collections; a
    # fifth (the publish) is still collected: the oldest gives way.
    unfinished = [payloads.rtmp_command("x", 1, {"a": "b" * 300}, csid=10 + i)[:140] for i in range(4)]
    parser = RtmpStreamParser()
    assert [
        c.name for c in parser.feed(_client(*unfinished, payloads.rtmp_command("publish", 2, None, "k")))
    ] == ["publish"]


def test_sniff() -> None:
    assert looks_like(payloads.rtmp_handshake()[:1460])
    assert not looks_like(b"\x03" + bytes(100)) and not looks_like(b"\x16" + bytes(2000))


def test_the_handler_reports_a_publish_without_its_stream_key() -> None:
    ctx = RecordingContext()
    flow = make_flow("10.20.0.11", 40000, "203.0.113.9", 1935)
    flow.protocol = "rtmp"
    connect = payloads.rtmp_command(
        "connect", 1, {"app": "live2", "tcUrl": "rtmp://a.rtmp.example/live2?k=1"}
    )
    handle_rtmp(ctx, flow, True, payloads.rtmp_handshake(), 0)
    handle_rtmp(ctx, flow, False, payloads.rtmp_handshake() + C2, 1)
    handle_rtmp(ctx, flow, True, C2 + connect, 2)
    handle_rtmp(ctx, flow, True, payloads.rtmp_command("publish", 5, None, "s3cret-stream-key", "live"), 3)
    (request,) = ctx.of(StreamRequest)
    assert request == StreamRequest(3, flow, True, "publish", "rtmp://a.rtmp.example/live2", True)
    assert "s3cret" not in repr(ctx.events)


def test_the_handler_refuses_what_is_not_a_handshake() -> None:
    flow = make_flow("10.20.0.11", 40000, "203.0.113.9", 1935)
    with pytest.raises(AnalyzerError):
        handle_rtmp(RecordingContext(), flow, True, b"GET / HTTP/1.1\r\n\r\n", 0)
