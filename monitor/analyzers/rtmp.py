"""RTMP (Adobe's Real-Time Messaging Protocol, tcp/1935): whether a connection publishes a stream.

Cameras (Dahua, Xiongmai, some Hikvision models) can push their video to a live platform over RTMP: the camera
connects, then sends ``publish``. That is video leaving the site at whatever bitrate (``stream.egress``), and
what this analyzer reads. Layout (Adobe RTMP specification 1.0, 2012): a handshake (C0/S0: the version, 3
plain or 6 encrypted RTMPE; C1/S1 and C2/S2: 1536 bytes each), then messages cut into chunks. A chunk is a
basic header (format and chunk stream id, 1-3 bytes), a message header (11, 7, 3 or 0 bytes by format: time,
length, type, stream id), an extended time (4 bytes, when the time field is 0xFFFFFF) and at most the chunk
size of the message's bytes (128 until a Set Chunk Size message, type 1). Commands are type 20 (AMF0) or 17
(AMF3, an AMF0 body after one byte): a name, a transaction id, a command object (``connect``'s ``app`` and
``tcUrl``) and arguments (``publish``'s stream name).

Only commands are kept (at most 4 kB a message); audio and video are skipped unbuffered. The stream name of a
publish is a platform's secret stream key: it is never kept, and neither is the query of a ``tcUrl``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.analyzers.reader import ByteReader
from monitor.events import StreamRequest
from monitor.protocol import Context, ProtocolSpec, flow_state, stop_inspecting

if TYPE_CHECKING:
    from monitor.flows import Flow

__all__ = ["RtmpCommand", "RtmpStreamParser", "looks_like", "parse_command"]

PROTOCOL: Final = "rtmp"
HANDSHAKE: Final = 1 + 1536 + 1536  # C0 C1 C2 (client) or S0 S1 S2 (server)
PLAIN, ENCRYPTED = 3, 6
SET_CHUNK_SIZE: Final = 1
COMMAND_AMF3: Final = 17
COMMAND_AMF0: Final = 20
MAX_COMMAND: Final = 4096  # bytes of a command message kept; a longer one is skipped
MAX_CHUNK_STREAMS: Final = 64  # chunk streams followed per direction; more is not RTMP as clients send it
MAX_COLLECTING: Final = 4  # commands collected at once (interleaved on several chunk streams) per direction
MAX_CHUNK_SIZE: Final = 0xFFFFFF  # the spec allows 2^31 - 1; no peer sends chunks near 16 MiB
_HEADER_SIZES: Final = (11, 7, 3, 0)  # message header bytes by chunk format
_MAX_AMF_VALUES: Final = 64


@dataclass(frozen=True, slots=True)
class RtmpCommand:
    """A command message: its name and the string fields camwatch reads (never a stream name)."""

    name: str
    app: str | None = None
    """``connect``'s application (``live2``)."""
    tc_url: str | None = None
    """``connect``'s target URL without its query (``rtmp://a.rtmp.youtube.com/live2``)."""


class _Amf(ByteReader):
    __slots__ = ()
    protocol = PROTOCOL

    def string(self, long: bool = False) -> str:
        return self.take(self.uint(4 if long else 2, "string length"), "string").decode("utf-8", "replace")

    def value(self, depth: int = 0) -> object:
        """One AMF0 value: strings, numbers, booleans and nulls as Python values, objects as dicts (one
        level is read; nested ones are skipped)."""
        marker = self.uint(1, "type marker")
        if marker == 0x00:
            return struct.unpack(">d", self.take(8, "number"))[0]
        if marker == 0x01:
            return self.uint(1, "boolean") != 0
        if marker == 0x02:
            return self.string()
        if marker == 0x0C:
            return self.string(long=True)
        if marker in (0x05, 0x06):
            return None
        if marker in (0x03, 0x08):  # object, ECMA array (a count first, then the same pairs)
            if marker == 0x08:
                self.take(4, "array count")
            if depth > 2:
                raise AnalyzerError(PROTOCOL, "AMF objects nested too deep")
            fields: dict[str, object] = {}
            for _ in range(_MAX_AMF_VALUES):
                key = self.string()
                if not key and self.data[self.pos : self.pos + 1] == b"\x09":
                    self.pos += 1
                    return fields
                fields[key] = self.value(depth + 1)
            raise AnalyzerError(PROTOCOL, f"an AMF object with more than {_MAX_AMF_VALUES} fields")
        raise AnalyzerError(PROTOCOL, f"AMF0 type {marker:#04x} not read")


def parse_command(payload: bytes) -> RtmpCommand:
    """The AMF0 command at the start of ``payload`` (a type-20 message's body, or its first ``MAX_COMMAND``
    bytes). Its name is what matters: a value after it that cannot be read (an AMF3 object, a type this
    reader does not know, the end of a cut body) loses only ``app`` and ``tcUrl``."""
    amf = _Amf(payload, "RTMP command")
    name = amf.value()
    if not isinstance(name, str) or not name:
        raise AnalyzerError(PROTOCOL, "a command without a name")
    app = tc_url = None
    try:
        if amf.left():
            amf.value()  # the transaction id
        command_object = amf.value() if amf.left() else None
    except AnalyzerError:
        command_object = None
    if isinstance(command_object, dict):
        app_value, url_value = command_object.get("app"), command_object.get("tcUrl")
        app = app_value if isinstance(app_value, str) else None
        tc_url = url_value.split("?", 1)[0] if isinstance(url_value, str) else None
    return RtmpCommand(name, app, tc_url)


def looks_like(payload: bytes) -> bool:
    """The client's first segment: C0 (version 3 or 6) and at least most of C1 (a segment of the MSS)."""
    return len(payload) >= 1024 and payload[0] in (PLAIN, ENCRYPTED)


class _ChunkStream:
    __slots__ = ("body", "csid", "extended", "length", "remaining", "type")

    def __init__(self, csid: int) -> None:
        self.csid = csid
        self.length = 0
        self.type = 0
        self.remaining = 0  # bytes of the current message still to come
        self.extended = False  # its chunks carry an extended time
        self.body: bytearray | None = None  # the start of a command (or control message) being collected


_HANDSHAKE: Final = 0
_CHUNKS: Final = 1
_PAYLOAD: Final = 2  # a chunk's payload: collected (its start) or skipped as it comes
_DONE: Final = 3  # encrypted, or lost: nothing more is read
ABORT: Final = 2  # a protocol control message: the named chunk stream's message is dropped
_KEPT_TYPES: Final = frozenset({SET_CHUNK_SIZE, ABORT, COMMAND_AMF0, COMMAND_AMF3})
AUDIO, VIDEO = 8, 9


class RtmpStreamParser:
    """Follows one direction of an RTMP connection and returns its commands as they complete.

    Sans-I/O: feed the direction's TCP payloads in order. Never raises: input that cannot be RTMP stops it
    (``error``). Chunk payloads are read as they come, never waited for; of each command the first
    ``MAX_COMMAND`` bytes are kept, for at most ``MAX_COLLECTING`` chunk streams at once (the oldest
    collection gives way). Read as lenient servers (nginx-rtmp) read it: a new message may replace an
    unfinished one, an Abort drops one, a Set Chunk Size that is not one is ignored. ``media`` says whether
    this direction sent audio or video."""

    __slots__ = (
        "_buf", "_chunk_size", "_collecting", "_current", "_left", "_state", "_streams", "commands", "error",
        "media",
    )  # fmt: skip

    def __init__(self) -> None:
        self._buf = b""
        self._state = _HANDSHAKE
        self._left = HANDSHAKE  # bytes of the handshake, or of the chunk payload being read, still to come
        self._chunk_size = 128
        self._streams: dict[int, _ChunkStream] = {}
        self._collecting: list[int] = []  # chunk streams whose command is being collected, oldest first
        self._current: _ChunkStream | None = None  # the stream whose chunk payload is being read
        self.commands = 0
        self.media = False
        self.error: AnalyzerError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: a chunk header not yet whole, and the commands being collected."""
        return len(self._buf) + sum(len(s.body) for s in self._streams.values() if s.body is not None)

    @property
    def encrypted(self) -> bool:
        return self._state == _DONE and self.error is None

    def feed(self, segment: bytes) -> list[RtmpCommand]:
        if self._state == _DONE:
            return []
        data = self._buf + segment if self._buf else segment
        self._buf = b""
        out: list[RtmpCommand] = []
        try:
            pos = self._run(data, out)
        except AnalyzerError as exc:
            self.error = exc.detached()
            self._state = _DONE
            self._streams.clear()
            self._current = None
            return out
        self._buf = data[pos:]
        return out

    def _run(self, data: bytes, out: list[RtmpCommand]) -> int:
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == _HANDSHAKE:
                if self._left == HANDSHAKE:
                    if data[pos] == ENCRYPTED:
                        self._state = _DONE  # RTMPE: nothing after the handshake can be read
                        return n
                    if data[pos] != PLAIN:
                        raise AnalyzerError(PROTOCOL, f"handshake version {data[pos]}, not 3 or 6")
                take = min(self._left, n - pos)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _CHUNKS
            elif state == _PAYLOAD:
                take = min(self._left, n - pos)
                stream = self._current
                if stream is not None and stream.body is not None and len(stream.body) < MAX_COMMAND:
                    stream.body += data[pos : pos + min(take, MAX_COMMAND - len(stream.body))]
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state, self._current = _CHUNKS, None
                    if stream is not None and not stream.remaining and stream.body is not None:
                        self._message(stream, out)
            else:
                end = self._chunk(data, pos)
                if end < 0:
                    return pos
                pos = end
        return pos

    def _chunk(self, data: bytes, pos: int) -> int:
        """Read the chunk headers at ``pos`` and start reading its payload; return where the headers end, or
        -1 when they are not all here yet."""
        n = len(data)
        first = data[pos]
        fmt, csid = first >> 6, first & 0x3F
        at = pos + 1
        if csid < 2:
            width = csid + 1  # 0: one more byte (64-319), 1: two (64-65599)
            if n - at < width:
                return -1
            csid = 64 + data[at] + (data[at + 1] << 8 if width == 2 else 0)
            at += width
        size = _HEADER_SIZES[fmt]
        if n - at < size:
            return -1
        stream = self._streams.get(csid)
        # fmt 3 carries an extended time when the stream's last header did (the time field is not repeated).
        time_field_full = data[at : at + 3] == b"\xff\xff\xff"
        extended = stream.extended if stream is not None and fmt == 3 else time_field_full
        if fmt <= 1:
            length, type_id = int.from_bytes(data[at + 3 : at + 6], "big"), data[at + 6]
        elif stream is not None:
            length, type_id = stream.length, stream.type
        else:
            length, type_id = 0, 0  # a stream continued before it started: nginx-rtmp starts it empty
        at += size + (4 if extended else 0)
        if n - at < 0:
            return -1
        # The chunk's headers are all here: its stream is updated.
        if stream is None:
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise AnalyzerError(PROTOCOL, f"more than {MAX_CHUNK_STREAMS} chunk streams")
            stream = self._streams[csid] = _ChunkStream(csid)
        if fmt <= 1 and stream.remaining:
            self._forget(stream)  # a new message before the last one ended: it replaces it
        stream.length, stream.type, stream.extended = length, type_id, extended
        if not stream.remaining:  # the chunk starts a message (fmt 2/3 repeat the last one's length and type)
            stream.remaining = length
            if type_id in (AUDIO, VIDEO):
                self.media = True
            if type_id in _KEPT_TYPES:
                if len(self._collecting) >= MAX_COLLECTING:
                    oldest = self._collecting[0]
                    self._forget(self._streams[oldest], keep_remaining=True)
                stream.body = bytearray()
                self._collecting.append(csid)
        take = min(self._chunk_size, stream.remaining)
        stream.remaining -= take
        if take:
            self._state, self._left, self._current = _PAYLOAD, take, stream
        elif stream.body is not None:
            self._message(stream, [])  # an empty message: nothing to read in it
        return at

    def _forget(self, stream: _ChunkStream, keep_remaining: bool = False) -> None:
        """Stop collecting (and, unless ``keep_remaining``, following) the stream's current message."""
        if stream.body is not None:
            stream.body = None
            self._collecting.remove(stream.csid)
        if not keep_remaining:
            stream.remaining = 0

    def _message(self, stream: _ChunkStream, out: list[RtmpCommand]) -> None:
        body = bytes(stream.body or b"")
        self._forget(stream)
        if stream.type == SET_CHUNK_SIZE:
            size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF if len(body) >= 4 else 0
            if 1 <= size <= MAX_CHUNK_SIZE:
                self._chunk_size = size
            return  # one that is not one is ignored, as nginx-rtmp ignores it
        if stream.type == ABORT:
            aborted = self._streams.get(int.from_bytes(body[:4], "big")) if len(body) >= 4 else None
            if aborted is not None:
                self._forget(aborted)
            return
        if stream.type == COMMAND_AMF3:
            body = body[1:]  # an AMF0 body after the AMF3 marker byte
        try:
            command = parse_command(body)
        except AnalyzerError:
            return  # one bad command loses itself: the chunk framing is intact
        self.commands += 1
        out.append(command)


class _Connection:
    """What the client's ``connect`` said, for its ``publish``."""

    __slots__ = ("tc_url",)

    def __init__(self) -> None:
        self.tc_url: str | None = None


def _parser() -> RtmpStreamParser:
    return RtmpStreamParser()


def handle_rtmp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    client = from_src == flow.opener_is_src
    if flow.protocol is None and (not client or payload[:1] not in (b"\x03", b"\x06")):
        # Claimed from the client's C0 only: a parser started on the server's S0, or in the client's C2,
        # would read the client's stream from the wrong place.
        raise AnalyzerError(PROTOCOL, "not an RTMP client's handshake")
    parser = flow_state(flow, (PROTOCOL, from_src), RtmpStreamParser, _parser)
    failed = parser.error is not None
    commands = parser.feed(payload)
    if client:
        for command in commands:
            name = command.name.lower()  # nginx-rtmp takes command names in any case
            conn = flow_state(flow, PROTOCOL, _Connection)
            if name == "connect":
                server = (flow.dst if from_src else flow.src)[0]
                conn.tc_url = command.tc_url or f"rtmp://{server}/{command.app or ''}"
            elif name == "publish":
                # The stream name (a platform's secret key) is left out.
                target = conn.tc_url or f"rtmp://{(flow.dst if from_src else flow.src)[0]}"
                ctx.emit(StreamRequest(ts, flow, from_src, "publish", target, True))
            if name in ("publish", "play"):
                stop_inspecting(flow)  # what the connection is for is known: its media is not read
                break
        if parser.media or parser.encrypted:
            stop_inspecting(flow)  # media already flowing (a publish not seen), or nothing to read
    if parser.error is not None and not failed:
        stop_inspecting(flow)
        raise AnalyzerError(PROTOCOL, f"the connection is lost to the parser: {parser.error.reason}")
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_rtmp,
        tcp_ports=(1935,),
        sniff=looks_like,
        # After RTP over TCP (70): an RFC 4571 frame of 768-1023 bytes starts with 0x03 too, and RTMP's C1
        # starts with a time, never an RTP header (version 2), so RTP's sniff passes RTMP by.
        tcp_guess=75,
        # Every packet until the client says what the connection is for (publish, play) or sends media,
        # however small its segments: then nothing more is read.
        control=True,
        emits=(StreamRequest,),
    ),
)
