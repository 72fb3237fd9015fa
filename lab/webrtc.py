"""Camera "cloud live view" over WebRTC for the lab: the camera offers, a cloud peer answers and receives.

Cloud live view of consumer cameras (EZVIZ, Imou, ...) works this way: the camera is the offerer and the ICE
controlling agent; it gathers a server-reflexive candidate from a STUN server outside the site, sends its
offer to the cloud's signalling service, and streams video to the cloud peer over ICE (STUN checks), DTLS and
SRTP (RFC 8825 and its companions). This module is the lab's version of both ends:

- :func:`start_live_view` and :class:`PatternTrack`: the camera side (aiortc offerer, send only);
- :class:`LiveViewServer`: the cloud side, with a minimal HTTP/1.1 signalling endpoint over asyncio streams
  (``POST /offer`` takes ``{"sdp", "type"}`` JSON and returns the answer; ``GET /status`` reports the
  sessions and frames received) and an aiortc answerer per peer that decodes and counts video frames;
- :class:`StunServer`: a minimal RFC 5389 Binding server, built on camwatch's own STUN parser and builder.

Everything here is asyncio; aiortc gathers candidates on every local interface, which is what the lab's
network namespaces want.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

from lab.httpmini import encode_response
from lab.udp import DatagramServer
from lab.video import PatternGenerator, VideoSpec
from monitor.analyzers import AnalyzerError, stun

__all__ = [
    "LiveViewError",
    "LiveViewServer",
    "LiveViewSession",
    "PatternTrack",
    "PeerStatus",
    "StunServer",
    "start_live_view",
]

log = logging.getLogger(__name__)

VIDEO_CLOCK: Final = 90_000  # RTP clock rate of every video codec (RFC 3551)
MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BODY_BYTES: Final = 64 * 1024  # an SDP offer is a few kB
REQUEST_TIMEOUT: Final = 5.0  # a client that trickles its request (slowloris) is cut off
MAX_HTTP_CLIENTS: Final = 32
CONNECT_TIMEOUT: Final = 30.0  # a peer that never connects is closed so it frees its slot
HISTORY: Final = 64  # finished sessions kept for /status
SOFTWARE: Final = b"camwatch-lab"


class LiveViewError(Exception):
    """Signalling failed or the peer connection did not come up."""


def _configuration(stun_server: str | None) -> RTCConfiguration:
    # An explicit empty list: with None, aiortc falls back to a public Google STUN server.
    servers = [RTCIceServer(urls=f"stun:{stun_server}")] if stun_server else []
    return RTCConfiguration(iceServers=servers)


class PatternTrack(VideoStreamTrack):
    """Video frames from :class:`lab.video.PatternGenerator`, paced at ``spec.fps``.

    ``pattern`` is asked before every frame, so a camera can switch to "frozen", "black" or "covered" live.
    """

    kind = "video"

    def __init__(self, spec: VideoSpec, pattern: Callable[[], str] = lambda: "normal") -> None:
        super().__init__()
        self.spec = spec
        self._pattern = pattern
        self._generator = PatternGenerator(spec)
        self._index = 0
        self._started = False
        self._time_base = Fraction(1, VIDEO_CLOCK)

    async def recv(self) -> av.VideoFrame:
        """The next frame, no earlier than its due time."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if not self._started:
            self._start, self._started = loop.time(), True
        else:
            delay = self._start + self._index / self.spec.fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        rgb = self._generator.frame(self._index, self._pattern())
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self._index * VIDEO_CLOCK // self.spec.fps
        frame.time_base = self._time_base
        self._index += 1
        return frame


def _prefer_h264(transceiver: RTCRtpTransceiver) -> None:
    # Cameras encode H.264; aiortc would pick VP8 first. Keep VP8 as a fallback for the answerer.
    codecs = RTCRtpSender.getCapabilities("video").codecs
    order = {"video/H264": 0, "video/rtx": 1, "video/VP8": 2}
    transceiver.setCodecPreferences(sorted(codecs, key=lambda c: order.get(c.mimeType, 3)))


class LiveViewSession:
    """The camera's side of one live view: an aiortc peer connection sending a :class:`PatternTrack`."""

    def __init__(self, pc: RTCPeerConnection, track: PatternTrack) -> None:
        self.pc = pc
        self.track = track
        self._changed = asyncio.Event()

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            log.debug("live view connection state %s", pc.connectionState)
            self._changed.set()

    @property
    def state(self) -> str:
        """The peer connection state: new, connecting, connected, failed or closed."""
        return str(self.pc.connectionState)

    @property
    def ice_state(self) -> str:
        """The ICE connection state (checking, completed, failed, ...)."""
        return str(self.pc.iceConnectionState)

    @property
    def connected(self) -> bool:
        """True while media can flow."""
        return self.state == "connected"

    async def wait_connected(self) -> None:
        """Return once connected; raise LiveViewError when the connection fails or closes first."""
        while not self.connected:
            if self.state in ("failed", "closed"):
                raise LiveViewError(f"live view connection {self.state} (ICE {self.ice_state})")
            self._changed.clear()
            await self._changed.wait()

    async def close(self) -> None:
        """Stop the video and close the peer connection (idempotent)."""
        self.track.stop()
        await self.pc.close()


async def start_live_view(
    *,
    signaling_url: str,
    spec: VideoSpec,
    stun_server: str | None = None,
    pattern: Callable[[], str] = lambda: "normal",
    timeout: float = 10.0,
) -> LiveViewSession:
    """Offer to the cloud by HTTP POST ``{sdp, type}`` JSON to ``signaling_url``, apply the answer and wait
    until connected (within ``timeout`` seconds, signalling included); the video then streams until the
    returned session is closed. Raise :class:`LiveViewError` when signalling or connection fails."""
    pc = RTCPeerConnection(_configuration(stun_server))
    track = PatternTrack(spec, pattern)
    session = LiveViewSession(pc, track)
    try:
        async with asyncio.timeout(timeout):
            transceiver = pc.addTransceiver(track, direction="sendonly")
            _prefer_h264(transceiver)
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription
            answer = await _post_json(signaling_url, {"sdp": offer.sdp, "type": offer.type})
            sdp, kind = answer.get("sdp"), answer.get("type")
            if not isinstance(sdp, str) or kind != "answer":
                raise LiveViewError(f"signalling answer from {signaling_url} is not an SDP answer")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            await session.wait_connected()
    except TimeoutError:
        await session.close()
        raise LiveViewError(
            f"live view to {signaling_url} not connected within {timeout:g} s (state {session.state}, "
            f"ICE {session.ice_state})"
        ) from None
    except (OSError, ValueError) as exc:
        await session.close()
        raise LiveViewError(f"live view to {signaling_url}: {exc}") from exc
    except BaseException:
        await session.close()
        raise
    log.info("live view to %s connected", signaling_url)
    return session


async def _post_json(url: str, payload: dict[str, str]) -> dict[str, object]:
    """A one-shot HTTP/1.1 POST of JSON; returns the JSON object answered with status 200."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LiveViewError(f"signalling URL {url!r} is not http(s)://host[:port]/path")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    body = json.dumps(payload).encode()
    head = (
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    context = ssl.create_default_context() if tls else None
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
    try:
        writer.write(head + body)
        await writer.drain()
        raw = await reader.read(MAX_HEADER_BYTES + MAX_BODY_BYTES + 1)
        while len(raw) <= MAX_HEADER_BYTES + MAX_BODY_BYTES and (chunk := await reader.read(65536)):
            raw += chunk
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    header, sep, content = raw.partition(b"\r\n\r\n")
    status = header.split(b"\r\n", 1)[0].split(b" ", 2)
    if not sep or len(status) < 2 or not status[0].startswith(b"HTTP/1."):
        raise LiveViewError(f"signalling at {url} did not answer HTTP")
    if status[1] != b"200":
        reason = content[:200].decode("utf-8", "replace")
        raise LiveViewError(f"signalling at {url} answered {status[1].decode('ascii', 'replace')}: {reason}")
    try:
        answer = json.loads(content)
    except ValueError as exc:
        raise LiveViewError(f"signalling at {url} answered a body that is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise LiveViewError(f"signalling at {url} answered JSON that is not an object")
    return answer


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One cloud-side session as ``GET /status`` reports it."""

    id: int
    remote: str  # the signalling client's address
    state: str  # the peer connection state
    frames_received: int
    codec: str | None  # e.g. "video/H264", once negotiated

    def as_json(self) -> dict[str, object]:
        """The ``GET /status`` form."""
        return {
            "id": self.id,
            "remote": self.remote,
            "state": self.state,
            "frames_received": self.frames_received,
            "codec": self.codec,
        }


class _Peer:
    """Server-side state of one peer connection."""

    def __init__(self, ident: int, remote: str, pc: RTCPeerConnection) -> None:
        self.id = ident
        self.remote = remote
        self.pc = pc
        self.frames = 0
        self.codec: str | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.final_state: str | None = None
        self.finished: asyncio.Event | None = None

    def status(self) -> PeerStatus:
        state = self.final_state or str(self.pc.connectionState)
        return PeerStatus(self.id, self.remote, state, self.frames, self.codec)


class _HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class LiveViewServer:
    """The cloud side: HTTP/1.1 signalling on ``host:port`` (``POST /offer`` -> answer JSON; ``GET /status``
    -> JSON of sessions and frames received) and an aiortc answerer per peer that receives and counts video
    frames. At most ``max_peers`` peers at a time (503 beyond); bad requests get 400 and never crash it.
    ``port=0`` picks a free port (see :attr:`port`)."""

    def __init__(
        self, host: str = "0.0.0.0", port: int = 8080, *, stun_server: str | None = None, max_peers: int = 8
    ) -> None:
        if max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, got {max_peers}")
        self.host = host
        self._port = port
        self.stun_server = stun_server
        self.max_peers = max_peers
        self._server: asyncio.Server | None = None
        self._peers: dict[int, _Peer] = {}
        self._history: deque[PeerStatus] = deque(maxlen=HISTORY)
        self._ids = itertools.count(1)
        self._clients = asyncio.Semaphore(MAX_HTTP_CLIENTS)
        self._finished_frames = 0

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when constructed with 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def frames_received(self) -> int:
        """Video frames decoded from every peer since start."""
        return self._finished_frames + sum(p.frames for p in self._peers.values())

    @property
    def sessions(self) -> tuple[PeerStatus, ...]:
        """Finished sessions (the last 64) then the live ones."""
        return (*self._history, *(p.status() for p in self._peers.values()))

    async def start(self) -> None:
        """Listen for signalling."""
        self._server = await asyncio.start_server(self._serve, self.host, self._port, limit=MAX_HEADER_BYTES)
        log.info("live view signalling on %s:%d", self.host, self.port)

    async def close(self) -> None:
        """Stop listening and close every peer."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await asyncio.gather(*(self._finish(p) for p in list(self._peers.values())))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- HTTP -------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        if self._clients.locked():
            writer.close()
            return
        async with self._clients:
            try:
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        method, path, body = await _read_request(reader)
                    status, answer = await self._route(method, path, body, remote)
                except _HttpError as exc:
                    status, answer = exc.status, {"error": exc.reason}
                except TimeoutError:
                    status, answer = 408, {"error": f"request not complete within {REQUEST_TIMEOUT:g} s"}
                except Exception:
                    log.exception("live view signalling request from %s failed", remote)
                    status, answer = 500, {"error": "internal error"}
                if status != 200:
                    log.info("live view signalling from %s: %d %s", remote, status, answer.get("error"))
                await _respond(writer, status, answer)
            except (ConnectionError, OSError):
                pass  # the client went away; nothing to tell it
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    async def _route(self, method: str, path: str, body: bytes, remote: str) -> tuple[int, dict[str, object]]:
        path = path.split("?", 1)[0]
        if path == "/status":
            if method != "GET":
                raise _HttpError(405, f"{method} /status: only GET")
            return 200, {
                "frames_received": self.frames_received,
                "sessions": [s.as_json() for s in self.sessions],
            }
        if path == "/offer":
            if method != "POST":
                raise _HttpError(405, f"{method} /offer: only POST")
            return 200, await self._answer(_offer_sdp(body), remote)
        raise _HttpError(404, f"no resource {path[:100]!r} (use POST /offer or GET /status)")

    # -- WebRTC -----------------------------------------------------------------------------------------

    async def _answer(self, sdp: str, remote: str) -> dict[str, object]:
        if len(self._peers) >= self.max_peers:
            raise _HttpError(503, f"already {len(self._peers)} peers (max_peers {self.max_peers})")
        pc = RTCPeerConnection(_configuration(self.stun_server))
        peer = _Peer(next(self._ids), remote, pc)
        self._peers[peer.id] = peer

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self._spawn(peer, self._count_frames(peer, track))

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            log.debug("live view peer %d: %s", peer.id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                self._spawn(peer, self._finish(peer))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            # aiortc raises ValueError, InvalidStateError, KeyError, ... on offers it cannot take.
            await self._finish(peer, record=False)
            raise _HttpError(400, f"offer rejected: {type(exc).__name__}: {str(exc)[:200]}") from None
        answer = pc.localDescription
        peer.codec = _first_video_codec(answer.sdp)
        self._spawn(peer, self._connect_deadline(peer))
        log.info("live view peer %d from %s: answered with %s", peer.id, remote, peer.codec)
        return {"sdp": answer.sdp, "type": answer.type}

    def _spawn(self, peer: _Peer, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)

    async def _count_frames(self, peer: _Peer, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                peer.frames += 1

    async def _connect_deadline(self, peer: _Peer) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT)
        if peer.pc.connectionState not in ("connected", "closed"):
            log.info("live view peer %d not connected after %g s: closing", peer.id, CONNECT_TIMEOUT)
            await self._finish(peer)

    async def _finish(self, peer: _Peer, *, record: bool = True) -> None:
        if peer.finished is not None:  # already closing (state change, deadline and server close race)
            await peer.finished.wait()
            return
        peer.finished = asyncio.Event()
        try:
            await peer.pc.close()
        finally:
            me = asyncio.current_task()
            for task in list(peer.tasks):
                if task is not me:
                    task.cancel()
            # Only now does it leave the live set, so that sessions never misses it.
            peer.final_state = str(peer.pc.connectionState)
            self._finished_frames += peer.frames
            if record:  # a rejected offer never was a session
                self._history.append(peer.status())
            del self._peers[peer.id]
            peer.finished.set()
        log.info("live view peer %d closed after %d frames", peer.id, peer.frames)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    """Method, target and body of one HTTP/1.1 request (Content-Length bodies only)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _HttpError(431, f"request header over {MAX_HEADER_BYTES} bytes") from None
    except asyncio.IncompleteReadError:
        raise _HttpError(400, "connection closed inside the request header") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    request = lines[0].split(" ")
    if len(request) != 3 or not request[2].startswith("HTTP/1."):
        raise _HttpError(400, f"malformed request line {lines[0][:100]!r}")
    method, target, _ = request
    length: int | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _HttpError(400, f"malformed header line {line[:100]!r}")
        name = name.strip().lower()
        if name == "content-length":
            if not value.strip().isdigit():
                raise _HttpError(400, f"Content-Length {value.strip()[:40]!r} is not a number")
            length = int(value)
        elif name == "transfer-encoding":
            raise _HttpError(400, "chunked bodies are not supported: send Content-Length")
    if method == "POST" and length is None:
        raise _HttpError(411, "POST without Content-Length")
    if length is not None and length > MAX_BODY_BYTES:
        raise _HttpError(413, f"body of {length} bytes, the limit is {MAX_BODY_BYTES}")
    try:
        body = await reader.readexactly(length or 0)
    except asyncio.IncompleteReadError as exc:
        raise _HttpError(400, f"body ends after {len(exc.partial)} of {length} bytes") from None
    return method, target, body


def _first_video_codec(sdp: str) -> str | None:
    """``video/H264``-style name of the first payload type of the first video section, or None."""
    payload: str | None = None
    for line in sdp.splitlines():
        if line.startswith("m=video ") and payload is None:
            fields = line.split()
            payload = fields[3] if len(fields) > 3 else ""
        elif payload and line.startswith(f"a=rtpmap:{payload} "):
            return "video/" + line.split(" ", 1)[1].split("/", 1)[0]
    return None


def _offer_sdp(body: bytes) -> str:
    try:
        offer = json.loads(body)
    except ValueError as exc:
        raise _HttpError(400, f"body is not JSON: {exc}") from None
    if not isinstance(offer, dict):
        raise _HttpError(400, "body is not a JSON object with sdp and type")
    sdp, kind = offer.get("sdp"), offer.get("type")
    if kind != "offer":
        raise _HttpError(400, f"type must be 'offer', got {kind!r:.40}")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise _HttpError(400, "sdp must be an SDP text starting with v=0")
    return sdp


async def _respond(writer: asyncio.StreamWriter, status: int, payload: dict[str, object]) -> None:
    body = json.dumps(payload).encode()
    headers = (("Content-Type", "application/json"),)
    writer.write(encode_response(status, _REASONS.get(status, "Error"), headers, body))
    await writer.drain()


class StunServer(DatagramServer):
    """Minimal RFC 5389 STUN server: a Binding request gets a success response with XOR-MAPPED-ADDRESS (the
    request's source), SOFTWARE and FINGERPRINT; anything else is dropped. Async context manager."""

    def __init__(self, host: str = "0.0.0.0", port: int = 3478) -> None:
        super().__init__(port)
        self.host = host
        self.requests = 0  # Binding requests answered
        self.dropped = 0  # datagrams that were not a Binding request

    def answer(self, data: bytes, ip: str, port: int) -> bytes | None:
        """The response to one datagram from ``ip:port``, or None when it is not a Binding request."""
        try:
            msg = stun.parse(data)
        except AnalyzerError as exc:
            self.dropped += 1
            log.debug("STUN server: dropped datagram from %s:%d: %s", ip, port, exc)
            return None
        if not (
            isinstance(msg, stun.StunMessage)
            and not msg.classic
            and msg.method == stun.METHOD_BINDING
            and msg.message_class == stun.CLASS_REQUEST
        ):
            self.dropped += 1
            return None
        self.requests += 1
        tid = msg.transaction_id
        mapped = stun.address_value(stun.StunAddress(ip, port), tid)
        attrs = ((stun.A_XOR_MAPPED_ADDRESS, mapped), (stun.A_SOFTWARE, SOFTWARE))
        return stun.build(stun.METHOD_BINDING, stun.CLASS_SUCCESS, tid, attrs)

    async def start(self) -> None:
        """Bind the UDP socket."""
        await self._listen(
            "STUN server", lambda data, peer: self.answer(data, *peer), local_addr=(self.host, self._port)
        )
        log.info("STUN server on udp %s:%d", self.host, self.port)
