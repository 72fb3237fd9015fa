"""A lab camera's RTSP 1.0 server (RFC 2326): one live H.264 stream over RTP/UDP or RTP interleaved in TCP.

Frames are generated and encoded in real time only while at least one session plays, in a worker thread
so the event loop never waits for libx264, and each encoded access unit is packetized once and fanned out
to every playing session with that session's own SSRC, sequence numbers and timestamp offset.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import logging
import math
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal, cast
from urllib.parse import urlsplit

from lab.h264 import CLOCK_RATE, RtpPacket, SenderReport, ntp_timestamp, packetize, sdes_cname
from lab.rtsp_messages import RtspRequest, TransportSpec
from lab.video import PATTERNS, EncodedFrame, H264Encoder, PatternGenerator, VideoSpec

logger = logging.getLogger(__name__)

PAYLOAD_TYPE = 96
TRACK = "trackID=0"
METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER")
MAX_HEAD_BYTES = 8192  # request line + headers; a real client's requests are a few hundred bytes
MAX_BODY_BYTES = 65536
SENDER_REPORT_INTERVAL = 5.0
MAX_SESSIONS = 32  # a camera serves a handful of viewers; a SETUP flood gets 453, not unbounded state
# Bytes queued for one TCP client (in our buffer, and as much again in the kernel's) before its frames
# are dropped: at least two seconds of video, so a stalled viewer costs bounded memory, never watches
# minutes-old video from an autotuned 4 MB socket buffer, and never delays the others.
MIN_SEND_BUFFER = 64 * 1024

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    451: "Parameter Not Understood",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "RTSP Version Not Supported",
    551: "Option not supported",
}


_Reply = tuple[int, list[tuple[str, str]], bytes]  # status, extra headers, body


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What `RtspCameraServer.sessions` reports about one session."""

    session_id: str
    client: tuple[str, int]  # the RTSP client's address
    transport: Literal["udp", "tcp"]
    state: Literal["ready", "playing"]
    packets_sent: int
    octets_sent: int
    frames_dropped: int


class _Connection:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("0.0.0.0", 0)
        self.peer: tuple[str, int] = (str(peer[0]), int(peer[1]))
        self.local: tuple[str, int] = (str(local[0]), int(local[1]))


class _Session:
    def __init__(self, conn: _Connection, transport: TransportSpec, now: float) -> None:
        self.id = secrets.token_hex(8).upper()
        self.conn = conn
        self.transport = transport
        self.state: Literal["ready", "playing"] = "ready"
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.rtptime_start = secrets.randbits(32)
        self.ts_offset: int | None = None  # fixed when the first frame goes out, so RTP-Info is exact
        self.need_keyframe = True
        self.packets_sent = 0
        self.octets_sent = 0
        self.frames_dropped = 0
        self.last_activity = now
        self.last_report = -math.inf
        self.last_rtp_timestamp = 0

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.id,
            self.conn.peer,
            self.transport.protocol,
            self.state,
            self.packets_sent,
            self.octets_sent,
            self.frames_dropped,
        )


class _UdpPort(asyncio.DatagramProtocol):
    """The server's RTP or RTCP port: sends media, and takes anything a client sends as a sign of life."""

    def __init__(self, server: RtspCameraServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport (CPython 3.11).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._server._touch_udp(str(addr[0]), int(addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a vanished viewer; the session times out on its own.
        logger.debug("RTP/RTCP socket error: %s", exc)


class RtspCameraServer:
    """asyncio RTSP 1.0 server for one H.264 stream, as a lab camera serves it (see the module docstring)."""

    def __init__(
        self,
        spec: VideoSpec,
        *,
        host: str = "0.0.0.0",
        port: int = 554,
        path: str = "/stream1",
        server_banner: str = "camwatch-lab camera",
        pattern: str = "normal",
        session_timeout: float = 60.0,
        send_buffer_limit: int | None = None,
    ) -> None:
        if not path.startswith("/") or any(c in path for c in " ?#\r\n"):
            raise ValueError(f"path must start with '/' and contain no spaces, '?' or '#', got {path!r}")
        if any(c in server_banner for c in "\r\n") or not server_banner.isprintable():
            raise ValueError(f"server_banner must be one printable line, got {server_banner!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {port}")
        if send_buffer_limit is not None and send_buffer_limit < 1024:
            raise ValueError(f"send_buffer_limit must be at least 1024 bytes, got {send_buffer_limit}")
        if not session_timeout > 0:
            raise ValueError(f"session_timeout must be positive, got {session_timeout}")
        self._spec = spec
        self._host = host
        self._requested_port = port
        self._path = path.rstrip("/") or "/"
        self._banner = server_banner
        self._pattern = _valid_pattern(pattern)
        self._timeout = session_timeout
        self._send_limit = (
            max(MIN_SEND_BUFFER, spec.bitrate // 4) if send_buffer_limit is None else send_buffer_limit
        )
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._rtp: _UdpPort | None = None
        self._rtcp: _UdpPort | None = None
        self._server_ports = (0, 0)
        self._encoder: H264Encoder | None = None
        self._generator = PatternGenerator(spec)
        self._executor: ThreadPoolExecutor | None = None
        self._frame_task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._force_keyframe = False
        self._next_index = 0
        self._t0 = 0.0  # loop time of frame 0
        self._wall0 = 0.0  # wall-clock time of frame 0, for RTCP sender reports
        self._closing = False

    # -- lifecycle

    async def start(self) -> None:
        """Open the RTSP port and the RTP/RTCP port pair; the encoder is ready for DESCRIBE."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._encoder = H264Encoder(self._spec)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camwatch-lab-encoder")
        self._t0 = loop.time()
        self._wall0 = time.time()
        try:
            await self._open_udp_pair()
            self._server = await asyncio.start_server(
                self._handle, self._host, self._requested_port, limit=MAX_HEAD_BYTES
            )
        except BaseException:
            await self.close()  # a taken port must not leave the UDP pair or the thread behind
            raise
        self._reaper = asyncio.create_task(self._reap(), name="rtsp-session-reaper")
        logger.info("RTSP camera listening on %s (RTP %d-%d)", self.url(), *self._server_ports)

    async def close(self) -> None:
        """Stop serving: end every session and connection, the encoder thread and the UDP ports."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in (self._frame_task, self._reaper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sessions.clear()
        for conn in list(self._connections):
            conn.writer.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        for port in (self._rtp, self._rtcp):
            if port is not None and port.transport is not None:
                port.transport.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def __aenter__(self) -> RtspCameraServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open_udp_pair(self) -> None:
        # RTP on an even port, RTCP on the next (RFC 3550 11): the OS picks, we retry until a pair fits.
        loop = asyncio.get_running_loop()
        for _ in range(50):
            rtp_transport, rtp = await loop.create_datagram_endpoint(
                lambda: _UdpPort(self), local_addr=(self._host, 0)
            )
            rtp_port = int(rtp_transport.get_extra_info("sockname")[1])
            if rtp_port % 2 == 0 and rtp_port < 65535:
                try:
                    _, rtcp = await loop.create_datagram_endpoint(
                        lambda: _UdpPort(self), local_addr=(self._host, rtp_port + 1)
                    )
                except OSError:
                    pass
                else:
                    self._rtp, self._rtcp = rtp, rtcp
                    self._server_ports = (rtp_port, rtp_port + 1)
                    return
            rtp_transport.close()
        raise OSError("could not bind an even/odd UDP port pair for RTP/RTCP")

    # -- public state

    @property
    def port(self) -> int:
        """The RTSP port (the one the OS picked when constructed with port=0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, host: str | None = None) -> str:
        """rtsp://host:port/path (host defaults to the bound address, 127.0.0.1 for a wildcard)."""
        if host is None:
            host = "127.0.0.1" if self._host in ("0.0.0.0", "", "::") else self._host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"rtsp://{host}:{self.port}{self._path}"

    @property
    def pattern(self) -> str:
        return self._pattern

    def set_pattern(self, pattern: str) -> None:
        """Switch the test pattern (one of `PATTERNS`); takes effect with the next frame."""
        self._pattern = _valid_pattern(pattern)

    @property
    def sessions(self) -> list[SessionInfo]:
        return [s.info() for s in self._sessions.values()]

    @property
    def server_ports(self) -> tuple[int, int]:
        """The RTP and RTCP ports media is sent from."""
        return self._server_ports

    # -- RTSP connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = _Connection(writer)
        self._connections.add(conn)
        logger.debug("RTSP connection from %s:%d", *conn.peer)
        try:
            await self._serve(conn, reader)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            logger.exception("RTSP connection from %s:%d failed", *conn.peer)
        finally:
            self._connections.discard(conn)
            for session in [s for s in self._sessions.values() if s.conn is conn]:
                self._remove(session, "connection closed")
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        while not self._closing:
            try:
                first = await asyncio.wait_for(reader.readexactly(1), self._timeout)
            except TimeoutError:
                if any(s.conn is conn for s in self._sessions.values()):
                    continue  # UDP sessions may keep alive by RTCP alone
                return
            # Once a message has begun, the rest must follow within the timeout: a client that stops
            # half-way (or a '$' frame announcing bytes that never come) must not hold the connection.
            if first == b"$":  # interleaved RTCP from the client (receiver reports): a sign of life
                header = await asyncio.wait_for(reader.readexactly(3), self._timeout)
                await asyncio.wait_for(reader.readexactly(int.from_bytes(header[1:3], "big")), self._timeout)
                self._touch_connection(conn)
                continue
            if first in (b"\r", b"\n"):
                continue  # stray line ends between requests
            try:
                head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
            except asyncio.LimitOverrunError:
                self._reply(conn, 400, None, [], b"", note=f"request head longer than {MAX_HEAD_BYTES} bytes")
                return
            try:
                request = RtspRequest.parse(head)
            except ValueError as exc:
                logger.debug("bad RTSP request from %s:%d: %s", *conn.peer, exc)
                self._reply(conn, 400, None, [], b"", note=str(exc))
                continue
            length = request.content_length
            if length > MAX_BODY_BYTES:
                self._reply(conn, 413, request.header("CSeq"), [], b"")
                return
            if length:
                body = await asyncio.wait_for(reader.readexactly(length), self._timeout)
                request = replace(request, body=body)
            self._dispatch(conn, request)

    def _dispatch(self, conn: _Connection, request: RtspRequest) -> None:
        cseq = request.header("CSeq")
        if cseq is None:
            self._reply(conn, 400, None, [], b"", note="missing CSeq header")
            return
        if request.version != "RTSP/1.0":
            self._reply(conn, 505, cseq, [], b"")
            return
        if request.header("Require") is not None:
            self._reply(
                conn, 551, cseq, [("Unsupported", _header_safe(request.header("Require") or ""))], b""
            )
            return
        handler = {
            "OPTIONS": self._options,
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "PAUSE": self._pause,
            "TEARDOWN": self._teardown,
            "GET_PARAMETER": self._parameter,
            "SET_PARAMETER": self._parameter,
        }.get(request.method)
        if handler is None:
            if request.method in ("ANNOUNCE", "RECORD", "REDIRECT"):
                self._reply(conn, 405, cseq, [("Allow", ", ".join(METHODS))], b"")
            else:
                self._reply(conn, 501, cseq, [("Public", ", ".join(METHODS))], b"")
            return
        try:
            status, headers, body = handler(conn, request)
        except Exception:
            logger.exception("RTSP %s from %s:%d failed", request.method, *conn.peer)
            status, headers, body = 500, [], b""
        self._reply(conn, status, cseq, headers, body)

    def _reply(
        self,
        conn: _Connection,
        status: int,
        cseq: str | None,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        note: str = "",
    ) -> None:
        lines = [f"RTSP/1.0 {status} {REASONS.get(status, 'Error')}"]
        if cseq is not None:
            lines.append(f"CSeq: {_header_safe(cseq)}")
        lines.append(f"Server: {self._banner}")
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        lines.extend(f"{key}: {value}" for key, value in headers)
        if note:
            # Says what was wrong, for a person debugging a client; not part of RTSP.
            body = (note.replace("\r", " ").replace("\n", " ") + "\r\n").encode()
            lines.append("Content-Type: text/plain")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        if not conn.writer.is_closing():
            conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    # -- methods; each returns (status, extra headers, body)

    def _options(self, conn: _Connection, request: RtspRequest) -> _Reply:
        self._find_session(request)  # refreshes the session when one is named
        return 200, [("Public", ", ".join(METHODS))], b""

    def _describe(self, conn: _Connection, request: RtspRequest) -> _Reply:
        if self._target(request.uri) != "aggregate":
            return 404, [], b""
        base = request.uri.split("?")[0].rstrip("/") + "/"
        sdp = self._sdp(conn).encode()
        return 200, [("Content-Base", base), ("Content-Type", "application/sdp")], sdp

    def _setup(self, conn: _Connection, request: RtspRequest) -> _Reply:
        target = self._target(request.uri)
        if target is None:
            return 404, [], b""
        if target == "aggregate":
            return 459, [], b""
        session: _Session | None = None
        if request.header("Session") is not None:
            session = self._find_session(request)
            if session is None:
                return 454, [], b""
            if session.state == "playing":
                return 455, [("Allow", "PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER")], b""
        transport = self._choose_transport(request.header("Transport") or "")
        if transport is None:
            return 461, [], b""
        if transport.protocol == "tcp" and transport.interleaved is None:
            transport = replace(transport, interleaved=(0, 1))
        if transport.protocol == "tcp":
            self._bound_socket_buffer(conn)
        if session is None and len(self._sessions) >= MAX_SESSIONS:
            return 453, [], b""
        if session is None:
            session = _Session(conn, transport, self._now())
            self._sessions[session.id] = session
            logger.info("RTSP session %s for %s:%d over %s", session.id, *conn.peer, transport.protocol)
        else:
            session.transport = transport
        if transport.protocol == "tcp":
            assert transport.interleaved is not None
            spec = "RTP/AVP/TCP;unicast;interleaved={}-{}".format(*transport.interleaved)
        else:
            assert transport.client_port is not None
            spec = "RTP/AVP;unicast;client_port={}-{};server_port={}-{}".format(
                *transport.client_port, *self._server_ports
            )
        return 200, [("Transport", f"{spec};ssrc={session.ssrc:08X}"), self._session_header(session)], b""

    def _play(self, conn: _Connection, request: RtspRequest) -> _Reply:
        session = self._find_session(request)
        if session is None:
            return 454, [], b""
        if self._target(request.uri) is None:
            return 404, [], b""
        if session.ts_offset is None:
            rtptime = session.rtptime_start
        else:  # resuming after PAUSE: the next frame's timestamp, as near as the clock tells
            rtptime = (self._ts90k(self._upcoming_index()) + session.ts_offset) & 0xFFFFFFFF
        if session.state != "playing":
            session.state = "playing"
            session.need_keyframe = True
            self._force_keyframe = True  # a new viewer should not wait a whole GOP for a picture
            if self._frame_task is None or self._frame_task.done():
                self._frame_task = asyncio.create_task(self._produce_frames(), name="rtsp-camera-frames")
        base = request.uri.split("?")[0].rstrip("/")
        track_url = base if base.endswith(TRACK) else f"{base}/{TRACK}"
        return (
            200,
            [
                self._session_header(session),
                ("Range", "npt=0.000-"),
                ("RTP-Info", f"url={track_url};seq={session.seq};rtptime={rtptime}"),
            ],
            b"",
        )

    def _pause(self, conn: _Connection, request: RtspRequest) -> _Reply:
        session = self._find_session(request)
        if session is None:
            return 454, [], b""
        session.state = "ready"
        return 200, [self._session_header(session)], b""

    def _teardown(self, conn: _Connection, request: RtspRequest) -> _Reply:
        session = self._find_session(request)
        if session is None:
            return 454, [], b""
        self._remove(session, "TEARDOWN")
        return 200, [], b""

    def _parameter(self, conn: _Connection, request: RtspRequest) -> _Reply:
        # Keep-alive. The camera has no parameters to get or set; naming one is an error.
        headers: list[tuple[str, str]] = []
        if request.header("Session") is not None:
            session = self._find_session(request)
            if session is None:
                return 454, [], b""
            headers.append(self._session_header(session))
        if request.body.strip():
            return 451, headers, b""
        return 200, headers, b""

    # -- helpers for the methods

    def _target(self, uri: str) -> Literal["aggregate", "track"] | None:
        if uri == "*":
            return None
        try:
            path = urlsplit(uri).path if "://" in uri else uri.split("?")[0]
        except ValueError:
            return None
        path = path.rstrip("/")
        if path == self._path.rstrip("/"):
            return "aggregate"
        if path == f"{self._path.rstrip('/')}/{TRACK}":
            return "track"
        return None

    def _find_session(self, request: RtspRequest) -> _Session | None:
        value = request.header("Session")
        if value is None:
            return None
        session = self._sessions.get(value.split(";")[0].strip())
        if session is not None:
            session.last_activity = self._now()
        return session

    def _session_header(self, session: _Session) -> tuple[str, str]:
        return "Session", f"{session.id};timeout={max(1, int(self._timeout))}"

    def _choose_transport(self, value: str) -> TransportSpec | None:
        # The client lists transports in order of preference; take the first one we can serve.
        for option in value.split(","):
            try:
                spec = TransportSpec.parse(option)
            except ValueError as exc:
                logger.debug("transport %r refused: %s", option, exc)
                continue
            if spec.unicast and (spec.protocol == "tcp" or spec.client_port is not None):
                return spec
        return None

    def _bound_socket_buffer(self, conn: _Connection) -> None:
        sock = conn.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # Linux doubles the value for its own bookkeeping
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(2048, self._send_limit // 2))

    def _sdp(self, conn: _Connection) -> str:
        assert self._encoder is not None
        sps, pps = self._encoder.sps, self._encoder.pps
        family = "IP6" if ":" in conn.local[0] else "IP4"
        sprop = ",".join(base64.b64encode(nal).decode() for nal in (sps, pps))
        lines = [
            "v=0",
            f"o=- {int(self._wall0)} 1 IN {family} {conn.local[0]}",
            f"s={self._banner}",
            f"c=IN {family} {'::' if family == 'IP6' else '0.0.0.0'}",
            "t=0 0",
            "a=control:*",
            "a=range:npt=0-",
            f"m=video 0 RTP/AVP {PAYLOAD_TYPE}",
            f"a=rtpmap:{PAYLOAD_TYPE} H264/{CLOCK_RATE}",
            f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={sps[1:4].hex()};"
            f"sprop-parameter-sets={sprop}",
            f"a=framesize:{PAYLOAD_TYPE} {self._spec.width}-{self._spec.height}",
            f"a=framerate:{self._spec.fps}",
            f"a=control:{TRACK}",
        ]
        return "\r\n".join(lines) + "\r\n"

    # -- sessions

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _touch_connection(self, conn: _Connection) -> None:
        now = self._now()
        for session in self._sessions.values():
            if session.conn is conn:
                session.last_activity = now

    def _touch_udp(self, host: str, port: int) -> None:
        now = self._now()
        for session in self._sessions.values():
            ports = session.transport.client_port
            if ports is not None and session.conn.peer[0] == host and port in ports:
                session.last_activity = now

    def _remove(self, session: _Session, reason: str) -> None:
        if self._sessions.pop(session.id, None) is not None:
            logger.info(
                "RTSP session %s of %s:%d ended (%s): %d packets sent",
                session.id,
                *session.conn.peer,
                reason,
                session.packets_sent,
            )

    async def _reap(self) -> None:
        interval = min(5.0, self._timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = self._now()
            for session in [s for s in self._sessions.values() if now - s.last_activity > self._timeout]:
                self._remove(session, "timed out")
                if session.transport.protocol == "tcp":
                    session.conn.writer.close()  # the interleaved viewer is gone; so is its connection

    # -- media

    def _ts90k(self, index: int) -> int:
        return index * CLOCK_RATE // self._spec.fps

    def _upcoming_index(self) -> int:
        # Frames are due at t0 + n/fps; after a stall the next one is the current slot, not the missed ones.
        return max(self._next_index, math.floor((self._now() - self._t0) * self._spec.fps))

    async def _produce_frames(self) -> None:
        loop = asyncio.get_running_loop()
        while any(s.state == "playing" for s in self._sessions.values()):
            index = self._upcoming_index()
            delay = self._t0 + index / self._spec.fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            force, self._force_keyframe = self._force_keyframe, False
            try:
                frame = await loop.run_in_executor(self._executor, self._encode, index, self._pattern, force)
            except Exception:
                logger.exception("encoding frame %d failed", index)
                frame = None
            self._next_index = index + 1
            if frame is not None:
                self._fan_out(frame)

    def _encode(self, index: int, pattern: str, force: bool) -> EncodedFrame:
        # Runs in the worker thread: the generator and the encoder are only ever touched here.
        assert self._encoder is not None
        if force:
            self._encoder.force_keyframe()
        return self._encoder.encode(self._generator.frame(index, pattern), index)

    def _fan_out(self, frame: EncodedFrame) -> None:
        if not frame.nals:
            return
        payloads = packetize(frame.nals)
        ts90k = self._ts90k(frame.index)
        now = self._now()
        for session in list(self._sessions.values()):
            if session.state != "playing":
                continue
            if session.need_keyframe:
                if not frame.keyframe:
                    if session.ts_offset is not None:  # not a new viewer: one that fell behind
                        session.frames_dropped += 1
                    continue
                session.need_keyframe = False
            if session.ts_offset is None:
                session.ts_offset = session.rtptime_start - ts90k
            timestamp = (ts90k + session.ts_offset) & 0xFFFFFFFF
            last = len(payloads) - 1
            packets = [
                RtpPacket(
                    PAYLOAD_TYPE, (session.seq + i) & 0xFFFF, timestamp, session.ssrc, i == last, payload
                ).serialize()
                for i, payload in enumerate(payloads)
            ]
            if not self._send(session, packets, rtcp=False):
                # The viewer cannot keep up: skip to the next keyframe rather than queue without bound.
                session.frames_dropped += 1
                session.need_keyframe = True
                continue
            session.seq = (session.seq + len(packets)) & 0xFFFF
            session.packets_sent += len(packets)
            session.octets_sent += sum(len(p) for p in payloads)
            session.last_rtp_timestamp = timestamp
            if now - session.last_report >= SENDER_REPORT_INTERVAL:
                session.last_report = now
                self._send_report(session, frame.index, timestamp)

    def _send_report(self, session: _Session, index: int, timestamp: int) -> None:
        report = SenderReport(
            ssrc=session.ssrc,
            ntp_timestamp=ntp_timestamp(self._wall0 + index / self._spec.fps),
            rtp_timestamp=timestamp,
            packet_count=session.packets_sent,
            octet_count=session.octets_sent,
        ).serialize()
        self._send(session, [report + sdes_cname(session.ssrc, f"camera@{session.conn.local[0]}")], rtcp=True)

    def _send(self, session: _Session, packets: list[bytes], *, rtcp: bool) -> bool:
        """Send RTP (or RTCP) packets to the session's client; False when its buffer is full."""
        if session.transport.protocol == "tcp":
            writer = session.conn.writer
            if writer.is_closing() or writer.transport.get_write_buffer_size() > self._send_limit:
                return False
            assert session.transport.interleaved is not None
            channel = session.transport.interleaved[1 if rtcp else 0]
            writer.write(b"".join(b"$" + bytes([channel]) + len(p).to_bytes(2, "big") + p for p in packets))
            return True
        port = self._rtcp if rtcp else self._rtp
        if port is None or port.transport is None or port.transport.is_closing():
            return False
        if _queued_bytes(port.transport) > self._send_limit:
            return False
        assert session.transport.client_port is not None
        address = (session.conn.peer[0], session.transport.client_port[1 if rtcp else 0])
        for packet in packets:
            port.transport.sendto(packet, address)
        return True


def _valid_pattern(pattern: str) -> str:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    return pattern


def _queued_bytes(transport: asyncio.BaseTransport) -> int:
    # asyncio's datagram transports buffer when the socket would block, but typeshed does not say so.
    size = getattr(transport, "get_write_buffer_size", None)
    return int(size()) if callable(size) else 0


def _header_safe(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")[:64]
