"""The lab camera's RTSP server against real clients: PyAV (FFmpeg's RTSP demuxer) and raw sockets.

The server runs on its own event loop in a thread, as in the lab, so the clients here can be plain
blocking code. Every stream read is bounded by PyAV's timeouts or socket timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.h264 import DEFAULT_MTU, RtpPacket, SenderReport, depacketize, packetize, sdes_cname
from lab.rtsp_messages import RtspRequest, TransportSpec
from lab.rtsp_server import MAX_SESSIONS, RtspCameraServer, SessionInfo
from lab.video import VideoSpec

# Small and fast: the tests run in real time, so a higher frame rate and a short GOP save seconds.
SPEC = VideoSpec(width=320, height=180, fps=30, gop=15, bitrate=500_000)
T = TypeVar("T")


class Camera:
    """An RtspCameraServer on its own loop in a thread."""

    def __init__(self, server: RtspCameraServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rtsp-test-loop", daemon=True)

    def __enter__(self) -> Camera:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the server's loop (the server is not thread-safe) and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def sessions(self) -> list[SessionInfo]:
        return self.call(lambda: self.server.sessions)

    def wait_sessions(self, predicate: Callable[[list[SessionInfo]], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.sessions()):
            if time.monotonic() > deadline:
                raise AssertionError(f"sessions never matched: {self.sessions()}")
            time.sleep(0.05)

    def set_pattern(self, pattern: str) -> None:
        self.call(lambda: self.server.set_pattern(pattern))


@pytest.fixture
def camera() -> Iterator[Camera]:
    with Camera(RtspCameraServer(SPEC, host="127.0.0.1", port=0, server_banner="Dahua Rtsp Server")) as cam:
        yield cam


def open_stream(url: str, transport: str) -> Any:
    # (open, read) timeouts: a server bug fails the test instead of hanging CI.
    return av.open(url, options={"rtsp_transport": transport}, timeout=(5.0, 3.0))


def decode_frames(container: Any, count: int) -> list[av.VideoFrame]:
    frames: list[av.VideoFrame] = []
    for frame in container.decode(video=0):
        frames.append(frame)
        if len(frames) >= count:
            break
    return frames


def gray(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="gray").astype(np.float32)


def check_stream(url: str, transport: str) -> None:
    with open_stream(url, transport) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (SPEC.width, SPEC.height)
        assert stream.average_rate == SPEC.fps
        frames = decode_frames(container, 2 * SPEC.gop + 3)
        assert len(frames) == 2 * SPEC.gop + 3
        assert frames[0].key_frame  # a new viewer starts on an IDR
        # RTP timestamps (90 kHz) say frame rate and keyframe interval, independent of arrival jitter.
        # (FFmpeg leaves the very first frame without a pts.)
        timed = [(float(f.pts * stream.time_base), f.key_frame) for f in frames if f.pts is not None]
        assert len(timed) >= len(frames) - 1
        steps = np.diff([t for t, _ in timed])
        assert np.median(steps) == pytest.approx(1 / SPEC.fps, abs=1e-3)
        keys = [round(t * SPEC.fps) for t, key in timed if key]
        assert len(keys) >= 2
        assert set(np.diff(keys)) == {SPEC.gop}


def test_pyav_over_tcp_gets_the_spec(camera: Camera) -> None:
    check_stream(camera.server.url(), "tcp")
    camera.wait_sessions(lambda s: not s)  # the client left; so did its session


def test_tcp_and_udp_viewers_at_once(camera: Camera) -> None:
    url = camera.server.url()
    results: dict[str, BaseException | None] = {}

    def view(transport: str) -> None:
        try:
            check_stream(url, transport)
            results[transport] = None
        except BaseException as exc:
            results[transport] = exc

    threads = [threading.Thread(target=view, args=(t,)) for t in ("tcp", "udp")]
    for thread in threads:
        thread.start()
    camera.wait_sessions(lambda s: sorted(i.transport for i in s if i.state == "playing") == ["tcp", "udp"])
    for thread in threads:
        thread.join(20)
    for transport in ("tcp", "udp"):
        if results.get(transport) is not None:
            raise AssertionError(f"{transport} viewer failed") from results[transport]
        assert transport in results
    camera.wait_sessions(lambda s: not s)


def change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_patterns_switch_while_playing(camera: Camera) -> None:
    def after_switch(
        container: Any, pattern: str, test: Callable[[list[np.ndarray]], bool]
    ) -> list[np.ndarray]:
        # The client decodes a second or so behind live (FFmpeg probes the stream when it opens), so wait
        # for the switch, bounded, then demand that it holds for the following frames.
        camera.set_pattern(pattern)
        window: list[np.ndarray] = []
        for _ in range(3 * SPEC.fps):
            window = [*window[-1:], *(gray(f) for f in decode_frames(container, 1))]
            if test(window):
                following = window + [gray(f) for f in decode_frames(container, 4)]
                assert all(test(following[i : i + 2]) for i in range(len(following) - 1)), pattern
                return following
        raise AssertionError(f"pattern {pattern!r} never showed")

    def black(w: list[np.ndarray]) -> bool:
        return all(f.mean() < 20 for f in w)

    def frozen(w: list[np.ndarray]) -> bool:
        return len(w) == 2 and change(*w) < 1.5 and all(f.std() > 20 for f in w)  # a real picture, stuck

    def covered(w: list[np.ndarray]) -> bool:
        return all(35 < f.mean() < 75 and f.std() < 8 for f in w)

    def moving(w: list[np.ndarray]) -> bool:
        return len(w) == 2 and change(*w) > 3 and all(f.std() > 20 for f in w)

    with open_stream(camera.server.url(), "tcp") as container:
        normal = [gray(f) for f in decode_frames(container, 4)]
        assert all(moving(normal[i : i + 2]) for i in range(3))
        after_switch(container, "black", black)
        after_switch(container, "frozen", frozen)
        after_switch(container, "covered", covered)
        after_switch(container, "normal", moving)
    assert camera.server.pattern == "normal"


def test_set_pattern_refuses_unknown_names(camera: Camera) -> None:
    with pytest.raises(ValueError, match="unknown pattern 'snow'"):
        camera.server.set_pattern("snow")
    assert camera.server.pattern == "normal"
    with pytest.raises(ValueError, match="pattern"):
        RtspCameraServer(SPEC, pattern="plaid")


# -- raw RTSP


class RtspClient:
    """A blocking RTSP client on a socket, for what PyAV will not send."""

    def __init__(self, port: int, receive_buffer: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:  # before connecting: the window scale is agreed in the handshake
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(3)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def request(
        self, method: str, uri: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.response()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next RTSP response, skipping interleaved packets."""
        while True:
            while self.buffer[:1] == b"$":
                self.interleaved()
            if b"\r\n\r\n" in self.buffer:
                break
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def interleaved(self) -> tuple[int, bytes]:
        """The next interleaved (channel, packet)."""
        while len(self.buffer) < 4:
            self._fill()
        assert self.buffer[:1] == b"$", self.buffer[:40]
        length = int.from_bytes(self.buffer[2:4], "big")
        while len(self.buffer) < 4 + length:
            self._fill()
        channel, packet = self.buffer[1], self.buffer[4 : 4 + length]
        self.buffer = self.buffer[4 + length :]
        return channel, packet

    def raw(self, data: bytes) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(data)
        return self.response()


@contextlib.contextmanager
def rtsp(camera: Camera, receive_buffer: int = 0) -> Iterator[RtspClient]:
    client = RtspClient(camera.server.port, receive_buffer)
    try:
        yield client
    finally:
        client.close()


def test_describe_announces_the_stream(camera: Camera) -> None:
    url = camera.server.url()
    with rtsp(camera) as c:
        status, headers, _ = c.request("OPTIONS", "*")
        assert status == 200
        assert headers["server"] == "Dahua Rtsp Server"  # the persona's banner, for attribution
        assert {"DESCRIBE", "SETUP", "PLAY", "TEARDOWN", "GET_PARAMETER"} <= set(
            headers["public"].split(", ")
        )
        status, headers, body = c.request("DESCRIBE", url, {"Accept": "application/sdp"})
    assert status == 200
    assert headers["content-type"] == "application/sdp"
    assert headers["content-base"] == url + "/"
    sdp = body.decode()
    assert "m=video 0 RTP/AVP 96\r\n" in sdp
    assert "a=rtpmap:96 H264/90000\r\n" in sdp
    assert f"a=framerate:{SPEC.fps}\r\n" in sdp
    assert "a=control:trackID=0\r\n" in sdp
    fmtp = next(line for line in sdp.split("\r\n") if line.startswith("a=fmtp:96 "))
    params = dict(p.split("=", 1) for p in fmtp.removeprefix("a=fmtp:96 ").split(";"))
    assert params["packetization-mode"] == "1"
    sps, pps = (base64.b64decode(p) for p in params["sprop-parameter-sets"].split(","))
    assert sps[0] & 0x1F == 7 and pps[0] & 0x1F == 8
    assert params["profile-level-id"] == sps[1:4].hex()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"DESCRIBE rtsp://x/stream1 RTSP/1.0\r\n\r\n", 400),  # no CSeq
        (b"FLY rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", 501),
        (b"RECORD rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", 405),
        (b"DESCRIBE rtsp://x/stream1 RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
        (b"DESCRIBE rtsp://x/stream1 HTTP/1.1\r\nCSeq: 1\r\n\r\n", 400),
        (b"DESCRIBE rtsp://x/other RTSP/1.0\r\nCSeq: 1\r\n\r\n", 404),
        (b"DESCRIBE rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\nno colon here\r\n\r\n", 400),
        (b"DESCRIBE rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -4\r\n\r\n", 400),
        (b"DESCRIBE rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\nRequire: play.basic\r\n\r\n", 551),
        (
            b"SETUP rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n",
            459,
        ),
        (
            b"SETUP rtsp://x/stream1/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;multicast\r\n\r\n",
            461,
        ),
        (b"SETUP rtsp://x/stream1/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/SAVP;unicast\r\n\r\n", 461),
        (b"SETUP rtsp://x/stream1/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;unicast\r\n\r\n", 461),
        (b"SETUP rtsp://x/stream1/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n\r\n", 461),
        (b"PLAY rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\nSession: 1234\r\n\r\n", 454),
        (b"PLAY rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", 454),
        (b"TEARDOWN rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\nSession: 1234\r\n\r\n", 454),
        (b"GET_PARAMETER rtsp://x/stream1 RTSP/1.0\r\nCSeq: 1\r\nSession: nope\r\n\r\n", 454),
        (b"\xff\xfe\xfd\r\n\r\n", 400),
    ],
)
def test_bad_requests_get_the_right_status(camera: Camera, request_bytes: bytes, status: int) -> None:
    with rtsp(camera) as c:
        got, _headers, body = c.raw(request_bytes)
        assert got == status, body
        # The connection is still good for the next request.
        assert c.request("OPTIONS", "*")[0] == 200


def test_setup_while_playing_is_455_and_parameters_are_451(camera: Camera) -> None:
    track = camera.server.url() + "/trackID=0"
    with rtsp(camera) as c:
        status, headers, _ = c.request("SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        assert status == 200
        session = headers["session"].split(";")[0]
        assert headers["session"].endswith(";timeout=60")
        assert c.request("PLAY", camera.server.url(), {"Session": session})[0] == 200
        status, _, _ = c.request(
            "SETUP", track, {"Session": session, "Transport": "RTP/AVP/TCP;interleaved=2-3"}
        )
        assert status == 455
        head = f"SET_PARAMETER * RTSP/1.0\r\nCSeq: 9\r\nSession: {session}\r\nContent-Length: 9\r\n\r\n"
        c.sock.sendall(head.encode() + b"foo: bar\n")
        assert c.response()[0] == 451
        assert c.request("GET_PARAMETER", camera.server.url(), {"Session": session})[0] == 200
        assert c.request("PAUSE", camera.server.url(), {"Session": session})[0] == 200
        camera.wait_sessions(lambda s: [i.state for i in s] == ["ready"])
        assert c.request("TEARDOWN", camera.server.url(), {"Session": session})[0] == 200
        assert camera.sessions() == []


def test_garbage_does_not_kill_the_server(camera: Camera) -> None:
    rng = np.random.default_rng(6)
    for size in (1, 100, 5000, 20000):
        with rtsp(camera) as c, contextlib.suppress(OSError):
            c.sock.sendall(rng.integers(0, 256, size, dtype=np.uint8).tobytes() + b"\r\n\r\n")
            with contextlib.suppress(ConnectionError, TimeoutError, ValueError, IndexError):
                c.response()
    with rtsp(camera) as c:
        c.sock.sendall(b"A" * 20000)  # a head that never ends: 400, then the server hangs up
        status, _, body = c.response()
        assert status == 400 and b"longer than" in body
        with pytest.raises(ConnectionError):
            c.response()
    with rtsp(camera) as c:
        c.sock.sendall(b"$\x01\x00\x04abcd")  # interleaved data before any session: skipped
        assert c.request("OPTIONS", "*")[0] == 200
    check_stream_briefly(camera)


def check_stream_briefly(camera: Camera) -> None:
    with rtsp(camera) as c:
        status, headers, _ = c.request(
            "SETUP", camera.server.url() + "/trackID=0", {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}
        )
        assert status == 200
        assert c.request("PLAY", camera.server.url(), {"Session": headers["session"].split(";")[0]})[0] == 200
        channel, _packet = c.interleaved()
        assert channel in (0, 1)


def test_interleaved_rtp_is_rfc6184(camera: Camera) -> None:
    url = camera.server.url()
    with rtsp(camera) as c:
        status, headers, _ = c.request(
            "SETUP", url + "/trackID=0", {"Transport": "RTP/AVP/TCP;interleaved=4-5"}
        )
        assert status == 200
        assert "interleaved=4-5" in headers["transport"]
        ssrc = int(headers["transport"].split("ssrc=")[1], 16)
        session = headers["session"].split(";")[0]
        status, headers, _ = c.request("PLAY", url, {"Session": session})
        assert status == 200
        info = dict(p.split("=", 1) for p in headers["rtp-info"].split(";"))
        assert info["url"] == url + "/trackID=0"

        packets: list[RtpPacket] = []
        reports: list[SenderReport] = []
        while sum(p.marker for p in packets) < SPEC.gop + 2:
            channel, data = c.interleaved()
            assert channel in (4, 5)
            if channel == 4:
                packets.append(RtpPacket.parse(data))
            else:
                reports.append(SenderReport.parse(data))
    assert all(p.ssrc == ssrc and p.payload_type == 96 for p in packets)
    assert packets[0].sequence_number == int(info["seq"])
    assert packets[0].timestamp == int(info["rtptime"])
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    assert all(len(p.payload) <= DEFAULT_MTU for p in packets)
    # Access units: the marker ends each; all its packets share a timestamp; timestamps step 90000/fps.
    units: list[list[RtpPacket]] = [[]]
    for p in packets:
        units[-1].append(p)
        if p.marker:
            units.append([])
    units = [u for u in units if u and u[-1].marker]
    stamps = []
    for unit in units:
        assert len({p.timestamp for p in unit}) == 1
        stamps.append(unit[0].timestamp)
        nals = depacketize(p.payload for p in unit)
        assert all(n[0] & 0x1F in (1, 5, 6, 7, 8) for n in nals)
    assert {(b - a) % 2**32 for a, b in itertools.pairwise(stamps)} == {90000 // SPEC.fps}
    first_nals = depacketize(p.payload for p in units[0])
    assert {5, 7, 8} <= {n[0] & 0x1F for n in first_nals}  # the first access unit is an IDR with SPS/PPS
    assert any(p.payload[0] & 0x1F == 28 for p in packets)  # an IDR does not fit 1400 bytes: FU-A
    assert reports and reports[0].ssrc == ssrc
    assert reports[0].rtp_timestamp == packets[0].timestamp
    camera.wait_sessions(lambda s: not s)  # the socket closed without TEARDOWN: the session is gone


def test_udp_rtp_and_rtcp_reach_the_client_ports(camera: Camera) -> None:
    url = camera.server.url()
    rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtcp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rtp_sock, rtcp_sock, rtsp(camera) as c:
        rtp_sock.bind(("127.0.0.1", 0))
        rtcp_sock.bind(("127.0.0.1", 0))
        rtp_sock.settimeout(3)
        rtcp_sock.settimeout(3)
        ports = rtp_sock.getsockname()[1], rtcp_sock.getsockname()[1]
        status, headers, _ = c.request(
            "SETUP", url + "/trackID=0", {"Transport": "RTP/AVP;unicast;client_port={}-{}".format(*ports)}
        )
        assert status == 200
        transport = dict(p.partition("=")[::2] for p in headers["transport"].split(";"))
        server_rtp, server_rtcp = (int(x) for x in transport["server_port"].split("-"))
        assert server_rtp % 2 == 0 and server_rtcp == server_rtp + 1
        session = headers["session"].split(";")[0]
        assert c.request("PLAY", url, {"Session": session})[0] == 200
        data, source = rtp_sock.recvfrom(65536)
        assert source[1] == server_rtp
        assert RtpPacket.parse(data).ssrc == int(transport["ssrc"], 16)
        report, source = rtcp_sock.recvfrom(65536)
        assert source[1] == server_rtcp
        assert SenderReport.parse(report).ssrc == int(transport["ssrc"], 16)
        camera.wait_sessions(lambda s: len(s) == 1 and s[0].packets_sent > 0 and s[0].transport == "udp")


def test_silent_sessions_time_out_and_keepalive_keeps_them() -> None:
    server = RtspCameraServer(SPEC, host="127.0.0.1", port=0, session_timeout=1.0)
    with Camera(server) as camera, rtsp(camera) as quiet, rtsp(camera) as chatty, rtsp(camera) as halfway:
        halfway.sock.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n")  # and never the empty line
        sessions = []
        for c in (quiet, chatty):
            status, headers, _ = c.request(
                "SETUP", server.url() + "/trackID=0", {"Transport": "RTP/AVP;unicast;client_port=9-10"}
            )
            assert status == 200 and headers["session"].endswith(";timeout=1")
            sessions.append(headers["session"].split(";")[0])
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert chatty.request("GET_PARAMETER", server.url(), {"Session": sessions[1]})[0] == 200
            time.sleep(0.3)
        assert [s.session_id for s in camera.sessions()] == [sessions[1]]
        with rtsp(camera) as late:
            assert late.request("PLAY", server.url(), {"Session": sessions[0]})[0] == 454
        with pytest.raises(ConnectionError):  # and its idle connection was closed
            quiet.request("OPTIONS", "*")
        with pytest.raises(ConnectionError):  # as was the one that stopped half-way through a request
            halfway.response()


def test_session_count_is_bounded(camera: Camera) -> None:
    track = camera.server.url() + "/trackID=0"
    with rtsp(camera) as c:
        statuses = [
            c.request("SETUP", track, {"Transport": "RTP/AVP/TCP;interleaved=0-1"})[0]
            for _ in range(MAX_SESSIONS + 1)
        ]
    assert statuses == [200] * MAX_SESSIONS + [453]


def test_a_taken_port_fails_start_cleanly(camera: Camera) -> None:
    async def start_second() -> None:
        await RtspCameraServer(SPEC, host="127.0.0.1", port=camera.server.port).start()

    with pytest.raises(OSError):
        asyncio.run(start_second())


def test_a_stalled_tcp_viewer_does_not_hold_up_the_others() -> None:
    server = RtspCameraServer(SPEC, host="127.0.0.1", port=0, send_buffer_limit=16 * 1024)
    with Camera(server) as camera, rtsp(camera, receive_buffer=2048) as stalled, rtsp(camera) as live:
        # A tiny receive window, and nobody reading: the server's queue for this client fills at once.
        track = server.url() + "/trackID=0"
        for c in (stalled, live):
            _status, headers, _ = c.request("SETUP", track, {"Transport": "RTP/AVP/TCP;interleaved=0-1"})
            assert c.request("PLAY", server.url(), {"Session": headers["session"].split(";")[0]})[0] == 200
        markers = 0
        while markers < 3 * SPEC.gop:  # two seconds of video, on time for the live viewer
            channel, data = live.interleaved()
            markers += channel == 0 and RtpPacket.parse(data).marker
        by_client = {s.client[1]: s for s in camera.sessions()}
        stalled_info = by_client[stalled.sock.getsockname()[1]]
        live_info = by_client[live.sock.getsockname()[1]]
        assert stalled_info.frames_dropped > 0
        assert live_info.frames_dropped == 0
        assert live_info.packets_sent > stalled_info.packets_sent


# -- parsers and packetization, without sockets


def test_request_parser() -> None:
    request = RtspRequest.parse(
        b"SETUP rtsp://cam/stream1/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;\r\n unicast\r\n\r\n"
    )
    assert (request.method, request.uri, request.version) == (
        "SETUP",
        "rtsp://cam/stream1/trackID=0",
        "RTSP/1.0",
    )
    assert request.header("cseq") == "3"
    assert request.header("transport") == "RTP/AVP; unicast"  # folded continuation line
    assert request.header("Session") is None
    for bad, message in [
        (b"", "empty"),
        (b"OPTIONS *\r\n", "request line"),
        (b"OPTIONS  * RTSP/1.0\r\n", "request line"),
        (b"OPT(IONS * RTSP/1.0\r\n", "token"),
        (b"OPTIONS * RTSP/one\r\n", "version"),
        (b"OPTIONS * RTSP/1.0\r\nCSeq 1\r\n", "Name: value"),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: ten\r\n", "Content-Length"),
        (b"OPTIONS * RTSP/1.0\r\nX: \xc3\x28\r\n", "UTF-8"),
        (b"DESCRIBE rtsp://cam/\rX:1 RTSP/1.0\r\n", "control"),
        (b"OPTIONS * RTSP/1.0\r\nX: a\x00b\r\n", "control"),
    ]:
        with pytest.raises(ValueError, match=message):
            RtspRequest.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_request_parser_takes_any_bytes(data: bytes) -> None:
    try:
        request = RtspRequest.parse(data)
    except ValueError:
        return
    assert request.method and request.version.startswith("RTSP/")
    assert request.content_length >= 0


def test_transport_parser() -> None:
    udp = TransportSpec.parse("RTP/AVP;unicast;client_port=5000-5001")
    assert (udp.protocol, udp.unicast, udp.client_port) == ("udp", True, (5000, 5001))
    assert TransportSpec.parse("RTP/AVP/UDP;unicast;client_port=6000").client_port == (6000, 6001)
    tcp = TransportSpec.parse("RTP/AVP/TCP;unicast;interleaved=2-3;mode=play")
    assert (tcp.protocol, tcp.interleaved) == ("tcp", (2, 3))
    assert not TransportSpec.parse("RTP/AVP;multicast;ttl=4").unicast
    for bad, message in [
        ("RTP/SAVP;unicast", "not supported"),
        ("RTP/AVP;client_port=abc", "client_port"),
        ("RTP/AVP;client_port=70000-70001", "outside"),
        ("RTP/AVP/TCP;interleaved=0-300", "outside"),
    ]:
        with pytest.raises(ValueError, match=message):
            TransportSpec.parse(bad)


def test_packetize_single_nal_and_fu_a() -> None:
    small = bytes([0x41]) + bytes(range(200))
    big = bytes([0x65]) + np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    payloads = packetize([small, big, b""], mtu=1400)
    assert payloads[0] == small
    fragments = payloads[1:]
    assert len(fragments) == 4  # 5000 bytes in 1398-byte pieces
    assert all(len(p) <= 1400 for p in fragments)
    assert all(p[0] == (0x65 & 0xE0) | 28 for p in fragments)  # NRI kept, type FU-A
    assert [p[1] & 0xC0 for p in fragments] == [0x80, 0, 0, 0x40]  # start ... end
    assert all(p[1] & 0x1F == 5 for p in fragments)
    assert depacketize(payloads) == [small, big]
    with pytest.raises(ValueError, match="start fragment"):
        depacketize(fragments[1:])
    with pytest.raises(ValueError, match="end fragment"):
        depacketize(fragments[:-1])


def test_rtp_and_rtcp_round_trip() -> None:
    packet = RtpPacket(96, 65535, 2**32 - 1, 0xDEADBEEF, marker=True, payload=b"\x65abc")
    assert RtpPacket.parse(packet.serialize()) == packet
    with pytest.raises(ValueError, match="too short"):
        RtpPacket.parse(b"\x80\x60")
    with pytest.raises(ValueError, match="version"):
        RtpPacket.parse(b"\x40" + bytes(11))
    report = SenderReport(0x1234, 0x0102030405060708, 90000, 10, 12000)
    compound = report.serialize() + sdes_cname(0x1234, "camera@10.0.0.2")
    assert SenderReport.parse(compound) == report
    assert len(compound) % 4 == 0
    with pytest.raises(ValueError, match="sender report"):
        SenderReport.parse(sdes_cname(1, "x") + bytes(28))
