"""RTSP analyzer: the corpus's one RTSP packet (nDPI), hand-built Dahua/Xiongmai sessions, malformed input.

The public corpus holds a single RTSP message (nDPI `rtsp_setup_http.pcapng`: a SETUP from VLC); the
camera sessions (Dahua DESCRIBE/401/200 with SDP and interleaved RTP, Xiongmai `H264DVR`) are
hand-built fixtures, see `tests/data/fixtures/rtsp/README.md`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError
from monitor.analyzers.rtsp import (
    InterleavedFrame,
    RtspRequest,
    RtspResponse,
    RtspStreamParser,
    Sdp,
    Transport,
    looks_like,
    parse,
    parse_transport,
)
from tests.monitor.analyzers.payloads import tcp_payloads
from tests.truth.ndpi import read_ndpi_out
from tests.truth.paths import pcap, truth

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "rtsp"

Item = RtspRequest | RtspResponse | InterleavedFrame


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _feed(data: bytes, size: int) -> tuple[list[Item], RtspStreamParser]:
    parser = RtspStreamParser()
    out: list[Item] = []
    for i in range(0, max(len(data), 1), size):
        out.extend(parser.feed(data[i : i + size]))
    return out, parser


# --- golden: nDPI rtsp_setup_http -----------------------------------------------------------------


def test_ndpi_rtsp_setup() -> None:
    result = read_ndpi_out(truth("ndpi/rtsp_setup_http.pcapng.out"))
    flow = next(f for f in result.flows if f.protocol == "RTSP")
    segments = [
        s
        for s in tcp_payloads(pcap("ndpi/rtsp_setup_http.pcapng"))
        if (s.src, s.sport, s.dst, s.dport) == (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port)
        and s.payload
    ]
    assert len(segments) == 1 and looks_like(segments[0].payload)
    msg = parse(segments[0].payload)
    assert isinstance(msg, RtspRequest)
    assert (msg.method, msg.url, msg.version, msg.cseq) == (
        "SETUP",
        "rtsp://172.28.4.26:8554/trackID=88",
        "RTSP/1.0",
        4,
    )
    assert msg.user_agent == flow.attrs["User-Agent"]
    assert msg.transports == (
        Transport(
            "RTP/AVP", "UDP", "unicast", None, None, (50220, 50221), None, None, None, None, None, None
        ),
    )
    agree = int(msg.user_agent == flow.attrs["User-Agent"]) + int(
        flow.attrs["PLAIN TEXT"] == msg.method + " rtsp"
    )
    print("\nnDPI rtsp_setup_http.pcapng vs camwatch rtsp")
    print(f"  {'check':<30} {'checked':>8} {'agree':>8}")
    print(f"  {'User-Agent, PLAIN TEXT':<30} {2:>8} {agree:>8}")
    assert agree == 2


# --- hand-built: Dahua session ---------------------------------------------------------------------


def _expect_dahua_server(items: list[Item]) -> None:
    msgs = [m for m in items if isinstance(m, RtspResponse)]
    frames = [m for m in items if isinstance(m, InterleavedFrame)]
    assert [m.cseq for m in msgs] == [2, 3, 4, 5, 6, 7]
    assert [m.status for m in msgs] == [200, 401, 200, 200, 200, 200]
    assert {m.server for m in msgs} == {"Dahua Rtsp Server"}
    assert msgs[1].realm == "Login to 2b8c87b7ecbc1c2c89f8b4da109a4f78"
    describe = msgs[2]
    assert describe.content_base == "rtsp://10.20.0.12:554/cam/realmonitor?channel=1&subtype=0/"
    sdp = describe.sdp
    assert isinstance(sdp, Sdp)
    assert (sdp.session_name, sdp.connection, sdp.control, sdp.origin_address) == (
        "Media Server",
        "0.0.0.0",
        "*",
        "0.0.0.0",
    )
    video, audio = sdp.media
    assert (video.media, video.port, video.protocol, video.payload_types) == ("video", 0, "RTP/AVP", (96,))
    assert video.rtpmap == ((96, "H264", 90000, None),) and video.codec(96) == "H264"
    assert video.control == "trackID=0" and video.framerate == 25.0 and video.direction == "recvonly"
    assert video.fmtp[0][0] == "96" and "profile-level-id=4D4028" in video.fmtp[0][1]
    assert (audio.media, audio.codec(8), audio.rtpmap[0][2]) == ("audio", "PCMA", 8000)
    setup = msgs[3]
    assert (setup.session, setup.session_timeout) == ("1234567890", 60)
    (transport,) = setup.transports
    assert (
        transport.interleaved == (0, 1)
        and transport.lower_transport == "TCP"
        and transport.ssrc == 0x7D3A1C22
    )
    assert [f.channel for f in frames] == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert [f.length for f in frames if f.channel == 0] == [1400, 1400, 900, 60] * 2


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 13, 100, 536, 1448, 100000])
def test_dahua_server_any_segmentation(size: int) -> None:
    items, parser = _feed(_fixture("dahua_server.rtsp"), size)
    _expect_dahua_server(items)
    assert parser.error is None and parser.bad_messages == 0 and parser.buffered == 0
    assert parser.frames == 9 and parser.frames_by_channel == {0: 8, 1: 1}


def test_dahua_client() -> None:
    items, parser = _feed(_fixture("dahua_client.rtsp"), 61)
    requests = [m for m in items if isinstance(m, RtspRequest)]
    assert [r.method for r in requests] == [
        "OPTIONS",
        "DESCRIBE",
        "DESCRIBE",
        "SETUP",
        "PLAY",
        "GET_PARAMETER",
    ]
    assert [r.authorization_scheme for r in requests] == [None, None, "Digest", "Digest", "Digest", None]
    assert requests[3].transports[0].interleaved == (0, 1)
    assert requests[4].session == "1234567890"
    assert [f for f in items if isinstance(f, InterleavedFrame)] == [InterleavedFrame(1, 32)]
    assert all("response=" not in repr(r) and "username" not in repr(r) for r in requests)
    assert {r.user_agent for r in requests} == {"LibVLC/3.0.16 (LIVE555 Streaming Media v2016.11.28)"}
    assert parser.error is None


def test_describe_response_parse_and_partial_body() -> None:
    server = _fixture("dahua_server.rtsp")
    # Skip the first two responses to reach the 200 with the SDP.
    start = server.index(b"RTSP/1.0 200 OK\r\nCSeq: 4")
    msg = parse(server[start:])
    assert isinstance(msg, RtspResponse) and msg.sdp is not None and len(msg.sdp.media) == 2
    cut = start + msg.head_length + 10
    partial = parse(server[start:cut])
    assert isinstance(partial, RtspResponse) and partial.sdp is None and partial.complete


def test_xiongmai_banner_and_url_password() -> None:
    msg = parse(_fixture("xiongmai_h264dvr_options.rtsp"))
    assert isinstance(msg, RtspResponse) and msg.server == "H264DVR 1.0" and msg.cseq == 1
    req = parse(_fixture("xiongmai_describe_request.rtsp"))
    assert isinstance(req, RtspRequest)
    assert req.url == "rtsp://10.20.0.13:554/user=admin&password=***&channel=1&stream=0.sdp?real_stream"
    assert "tlJwpbo6" not in repr(req)


# --- behaviour -------------------------------------------------------------------------------------------


def test_url_userinfo_removed() -> None:
    msg = parse(
        b"DESCRIBE rtsp://admin:12345@10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 2\r\n\r\n"
    )
    assert isinstance(msg, RtspRequest) and msg.url == "rtsp://10.0.0.5:554/Streaming/Channels/101"


@pytest.mark.parametrize(
    ("written", "address", "name"),
    [
        ("[2A02:26F0:1:2::99]", "2a02:26f0:1:2::99", None),  # RFC 7826 brackets, upper case
        ("2a02:26f0:0001:0002:0000:0000:0000:0099", "2a02:26f0:1:2::99", None),
        ("[fe80::1%eth0]", "fe80::1", None),  # a zone says nothing about where the video goes
        ("::ffff:198.51.100.20", "198.51.100.20", None),  # IPv4-mapped: the IPv4 address
        ("NVR.Example.com", None, "nvr.example.com"),  # RFC 2326 allows a host name
        ("[2a02::zz]", None, None),
        ("a b", None, None),
    ],
)
def test_transport_destination_is_an_address_a_name_or_neither(
    written: str, address: str | None, name: str | None
) -> None:
    (t,) = parse_transport(f"RTP/AVP;unicast;destination={written};source={written};client_port=5000-5001")
    assert (t.destination, t.destination_name, t.source) == (address, name, address)


def test_transport_variants() -> None:
    (multicast,) = parse_transport(
        'RTP/AVP;multicast;destination=239.1.2.3;port=5000-5001;ttl=16;mode="PLAY"'
    )
    assert (multicast.cast, multicast.destination, multicast.port, multicast.ttl, multicast.mode) == (
        "multicast",
        "239.1.2.3",
        (5000, 5001),
        16,
        "PLAY",
    )
    udp, tcp = parse_transport(
        "RTP/AVP/UDP;unicast;client_port=8000-8001;server_port=9000-9001;source=10.0.0.5,RTP/AVP/TCP;interleaved=2"
    )
    assert udp.client_port == (8000, 8001) and udp.server_port == (9000, 9001) and udp.source == "10.0.0.5"
    assert tcp.interleaved == (2, 3) and tcp.cast is None
    for bad in (
        "RTP",
        "RTP/AVP;client_port=99999",
        "RTP/AVP;ssrc=XYZ",
        "RTP/AVP;interleaved=300",
        "RTP/AVP;ttl=999",
    ):
        with pytest.raises(AnalyzerError):
            parse_transport(bad)


def test_bad_field_drops_one_message_only() -> None:
    bad = b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nTransport: RTP/AVP;client_port=70000\r\n\r\n"
    good = b"RTSP/1.0 200 OK\r\nCSeq: 6\r\n\r\n"
    items, parser = _feed(bad + good, 10)
    assert [m.cseq for m in items if isinstance(m, RtspResponse)] == [6]
    assert parser.bad_messages == 1 and parser.last_message_error is not None and parser.error is None


def test_garbage_is_skipped_up_to_the_next_message() -> None:
    parser = RtspStreamParser()
    assert parser.feed(b"\x00\x01binary") == [] and parser.failed and parser.error is not None
    # A capture met inside an interleaved frame: the answer written right after the frame's bytes is read.
    (answer,) = parser.feed(b"\x17\x88rest of a frame" + b"RTSP/1.0 200 OK\r\nCSeq: 4\r\n\r\n")
    assert isinstance(answer, RtspResponse) and answer.cseq == 4 and not parser.failed
    assert parser.resyncs == 1 and parser.ignored_bytes > 0
    # A request line cut by the segment's end while resynchronising is found whole in the next one.
    parser.feed(b"\x00junk")
    parser.feed(b"zz GET_PARAMETER rtsp://10.0.0.5/s RTSP/1.0\r\nCSe")
    (keepalive,) = parser.feed(b"q: 9\r\nSession: 77\r\n\r\n")
    assert isinstance(keepalive, RtspRequest) and keepalive.session == "77"


def test_stream_bounded_on_endless_head() -> None:
    parser = RtspStreamParser(max_buffer=1024)
    parser.feed(b"OPTIONS * RTSP/1.0\r\n")
    for _ in range(50):
        parser.feed(b"X-Filler: " + b"a" * 100 + b"\r\n")
        assert parser.buffered <= 1024
    assert parser.failed


def test_big_body_is_skipped_not_buffered() -> None:
    body = b"v=0\r\n" + b"a=x:" + b"y" * 40000 + b"\r\n"
    data = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    parser = RtspStreamParser()
    items = parser.feed(data)
    for i in range(0, len(body), 1000):
        items += parser.feed(body[i : i + 1000])
        assert parser.buffered <= parser.max_buffer
    assert len(items) == 1 and isinstance(items[0], RtspResponse) and items[0].sdp is None


@pytest.mark.parametrize(
    "sdp",
    [
        b"m=video 0 RTP/AVP 96\r\n",  # no v=
        b"v=0\r\nm=video\r\n",
        b"v=0\r\nm=video 70000 RTP/AVP 96\r\n",
        b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264\r\n",
        b"v=0\r\nm=video 0 RTP/AVP 96\r\na=framerate:fast\r\n",
        b"v=0\r\nc=IN IP4\r\n",
        b"v=0\r\nbad line\r\n",
    ],
)
def test_sdp_malformed(sdp: bytes) -> None:
    with pytest.raises(AnalyzerError):
        Sdp.parse(sdp)


def test_sdp_multicast_connection_and_static_payload() -> None:
    sdp = Sdp.parse(b"v=0\ns=x\na=tool:LIVE555\nm=video 5000/2 RTP/AVP 26\nc=IN IP4 239.0.0.1/127\n")
    (media,) = sdp.media
    assert media.connection == "239.0.0.1" and media.port_count == 2 and media.codec(26) == "JPEG"
    assert sdp.tool == "LIVE555"


def test_looks_like() -> None:
    assert looks_like(b"RTSP/1.0 200 OK\r\n") and looks_like(b"DESCRIBE rtsp://h/ RTSP/1.0\r\n")
    assert looks_like(b"OPTIONS * RTSP/1.0\r\nCSeq: 1")
    # RTSP/2.0 (RFC 7826) and a method in another case (lenient servers take it) are RTSP too.
    assert looks_like(b"DESCRIBE rtsp://h/ RTSP/2.0\r\n") and looks_like(b"RTSP/2.0 200 OK\r\n")
    assert looks_like(b"describe rtsp://h/ RTSP/1.0\r\n")
    assert not looks_like(b"GET / HTTP/1.1\r\n") and not looks_like(b"DESCRIBE rtsp://h/ RTSP/3.0\r\n")
    assert not looks_like(b"$\x00\x00\x10") and not looks_like(b"")


# --- malformed input: only AnalyzerError ----------------------------------------------------------------

_SAMPLES = [p.read_bytes() for p in sorted(FIXTURES.glob("*.rtsp"))]


def _parse_quietly(data: bytes) -> None:
    with contextlib.suppress(AnalyzerError):
        parse(data)


@pytest.mark.parametrize("index", range(len(_SAMPLES)))
def test_truncation_at_every_length(index: int) -> None:
    data = _SAMPLES[index][:3000]
    for cut in range(len(data) + 1):
        _parse_quietly(data[:cut])


@given(st.binary(max_size=600))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    _parse_quietly(data)
    _parse_quietly(b"RTSP/1.0 200 OK\r\n" + data)
    looks_like(data)
    with contextlib.suppress(AnalyzerError):
        Sdp.parse(b"v=0\r\n" + data)
    with contextlib.suppress(AnalyzerError):
        parse_transport(data.decode("latin-1"))


@given(st.sampled_from(_SAMPLES), st.integers(0, 10**6), st.binary(min_size=1, max_size=6))
@settings(max_examples=1000, deadline=None)
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, junk: bytes) -> None:
    where %= len(data) + 1
    mutated = data[:where] + junk + data[where + len(junk) :]
    _parse_quietly(mutated)
    _feed(mutated, 97)


@given(st.lists(st.binary(max_size=3000), max_size=40))
@settings(max_examples=200, deadline=None)
def test_stream_bounded_on_garbage(chunks: list[bytes]) -> None:
    parser = RtspStreamParser(max_buffer=2048)
    for chunk in chunks:
        parser.feed(chunk)
        assert parser.buffered <= 2048


@given(st.sampled_from(_SAMPLES), st.lists(st.integers(1, 500), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_stream_segmentation_does_not_matter(data: bytes, sizes: list[int]) -> None:
    whole, _ = _feed(data, len(data))
    parser = RtspStreamParser()
    got: list[Item] = []
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        got.extend(parser.feed(data[pos : pos + size]))
        pos += size
        i += 1
    assert got == whole
