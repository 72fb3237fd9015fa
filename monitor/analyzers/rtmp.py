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
from monitor.protocol import Context, ProtocolSpec, flow_state

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
    """The AMF0 command at the start of ``payload`` (a type-20 message's body)."""
    amf = _Amf(payload, "RTMP command")
    name = amf.value()
    if not isinstance(name, str) or not name:
        raise AnalyzerError(PROTOCOL, "a command without a name")
    app = tc_url = None
    if amf.left():
        amf.value()  # the transaction id
    if amf.left():
        command_object = amf.value()
        if isinstance(command_object, dict):
            app_value, url_value = command_object.get("app"), command_object.get("tcUrl")
            app = app_value if isinstance(app_value, str) else None
            tc_url = url_value.split("?", 1)[0] if isinstance(url_value, str) else None
    return RtmpCommand(name, app, tc_url)


def looks_like(payload: bytes) -> bool:
    """The client's first segment: C0 (version 3 or 6) and at least most of C1 (a segment of the MSS)."""
    return len(payload) >= 1024 and payload[0] in (PLAIN, ENCRYPTED)


class _ChunkStream:
    __slots__ = ("body", "extended", "length", "remaining", "type")

    def __init__(self) -> None:
        self.length = 0
        self.type = 0
        self.remaining = 0  # bytes of the current message still to come
        self.extended = False  # its chunks carry an extended time
        self.body: bytearray | None = None  # a command (or Set Chunk Size) being collected


_HANDSHAKE: Final = 0
_CHUNKS: Final = 1
_SKIP: Final = 2  # a chunk's payload that is not kept
_DONE: Final = 3  # encrypted, or lost: nothing more is read


class RtmpStreamParser:
    """Follows one direction of an RTMP connection and returns its commands as they complete.

    Sans-I/O: feed the direction's TCP payloads in order. Never raises: input that cannot be RTMP stops it
    (``error``). Holds at most a chunk and ``MAX_COLLECTING`` command messages of ``MAX_COMMAND`` bytes."""

    __slots__ = ("_buf", "_chunk_size", "_collecting", "_left", "_state", "_streams", "commands", "error")

    def __init__(self) -> None:
        self._buf = b""
        self._state = _HANDSHAKE
        self._left = HANDSHAKE  # bytes of the handshake, or of a skipped chunk payload, still to come
        self._chunk_size = 128
        self._streams: dict[int, _ChunkStream] = {}
        self._collecting = 0  # chunk streams whose command is being collected (MAX_COLLECTING)
        self.commands = 0
        self.error: AnalyzerError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held: a chunk not yet whole, and the commands being collected."""
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
            elif state == _SKIP:
                take = min(self._left, n - pos)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _CHUNKS
            else:
                end = self._chunk(data, pos, out)
                if end < 0:
                    return pos
                pos = end
        return pos

    def _chunk(self, data: bytes, pos: int, out: list[RtmpCommand]) -> int:
        """Read the chunk at ``pos``: its headers, and its payload if whole (a skipped payload may run on);
        return where it ends, or -1 when its headers are not all here yet."""
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
        if stream is None and fmt != 0:
            raise AnalyzerError(PROTOCOL, f"chunk stream {csid} continued before it started")
        # fmt 3 carries an extended time when the stream's last header did (the time field is not repeated).
        time_field_full = data[at : at + 3] == b"\xff\xff\xff"
        extended = stream.extended if stream is not None and fmt == 3 else time_field_full
        if fmt <= 1:
            if stream is not None and stream.remaining:
                raise AnalyzerError(PROTOCOL, f"chunk stream {csid}: a new message before the last one ended")
            length, type_id = int.from_bytes(data[at + 3 : at + 6], "big"), data[at + 6]
        else:
            assert stream is not None
            length, type_id = stream.length, stream.type
        at += size + (4 if extended else 0)
        if n - at < 0:
            return -1
        starting = stream is None or not stream.remaining
        remaining = length if starting else stream.remaining  # type: ignore[union-attr]
        if starting:
            kept = (
                type_id in (SET_CHUNK_SIZE, COMMAND_AMF0, COMMAND_AMF3)
                and length <= MAX_COMMAND
                and self._collecting < MAX_COLLECTING
            )
        else:
            kept = stream.body is not None  # type: ignore[union-attr]
        take = min(self._chunk_size, remaining)
        if kept and n - at < take:
            return -1  # a command's chunk is read whole (at most the chunk size, bounded by MAX_COMMAND)
        # The chunk's headers are all here (and a kept chunk's payload): its stream is updated.
        if stream is None:
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise AnalyzerError(PROTOCOL, f"more than {MAX_CHUNK_STREAMS} chunk streams")
            stream = self._streams[csid] = _ChunkStream()
        stream.length, stream.type, stream.extended = length, type_id, extended
        if starting:
            stream.body = bytearray() if kept else None
            self._collecting += kept
        stream.remaining = remaining - take
        if stream.body is None:
            # Audio, video, data: skipped as they come, never buffered.
            here = min(take, n - at)
            if here < take:
                self._state, self._left = _SKIP, take - here
            return at + here
        stream.body += data[at : at + take]
        if not stream.remaining:
            self._message(stream, out)
        return at + take

    def _message(self, stream: _ChunkStream, out: list[RtmpCommand]) -> None:
        body, stream.body = bytes(stream.body or b""), None
        self._collecting -= 1
        if stream.type == SET_CHUNK_SIZE:
            if len(body) < 4:
                raise AnalyzerError(PROTOCOL, "a Set Chunk Size message shorter than 4 bytes")
            size = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            if not 1 <= size <= MAX_CHUNK_SIZE:
                raise AnalyzerError(PROTOCOL, f"chunk size {size}")
            self._chunk_size = size
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
    if flow.protocol is None and payload[:1] not in (b"\x03", b"\x06"):
        raise AnalyzerError(PROTOCOL, "not an RTMP handshake")
    parser = flow_state(flow, (PROTOCOL, from_src), RtmpStreamParser, _parser)
    if from_src != flow.opener_is_src:
        parser.feed(payload)  # the server's answers: read so its framing is followed, nothing reported
        return True
    for command in parser.feed(payload):
        conn = flow_state(flow, PROTOCOL, _Connection)
        if command.name == "connect":
            server = (flow.dst if from_src else flow.src)[0]
            conn.tc_url = command.tc_url or f"rtmp://{server}/{command.app or ''}"
        elif command.name == "publish":
            # The stream name (a platform's secret key) is left out.
            target = conn.tc_url or f"rtmp://{(flow.dst if from_src else flow.src)[0]}"
            ctx.emit(StreamRequest(ts, flow, from_src, "publish", target, True))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_rtmp,
        tcp_ports=(1935,),
        sniff=looks_like,
        tcp_guess=60,
        # The handshake (3 kB each way), connect, createStream and publish come in the first packets; the
        # media after them is not read.
        after_label=48,
        emits=(StreamRequest,),
    ),
)
