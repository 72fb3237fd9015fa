"""RTSP/1.0 control messages and the SDP of DESCRIBE answers: who pulls which stream, and where RTP goes.

camwatch reads RTSP for three things: the client and URL of DESCRIBE/SETUP/PLAY (``stream.*`` rules),
the RTP/RTCP endpoints a SETUP negotiates (``Transport``: ports, interleaved channels, multicast
destination) so that the video flows that follow are attributed to the session, and the identity of the
server (``Server: Dahua Rtsp Server``, ``H264DVR``, the realm of a 401 challenge).

:func:`parse` reads the message at the start of one segment; :class:`RtspStreamParser` follows one
direction of a connection, skipping interleaved RTP/RTCP frames (``$`` + channel + 16-bit length).
Credentials are never kept: ``Authorization`` values are reduced to their scheme, user information is
removed from URLs and password parameters in them (Xiongmai's ``/user=admin&password=...``) are masked.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

from monitor.analyzers import AnalyzerError
from monitor.analyzers.http import (
    Challenge,
    Headers,
    MessageHead,
    authorization_scheme,
    challenges_of,
    first_realm,
    parse_content_length,
    parse_request_line,
    parse_status_line,
    redact_url,
    safe_headers,
    split_head,
)
from monitor.analyzers.logins import Login, from_authorization, http_outcome
from monitor.events import AppRequest, AppResponse, StreamRequest, StreamTransport
from monitor.protocol import Context, ProtocolSpec, flow_state
from monitor.vendors.fingerprints import REALM_VENDORS, SERVER_VENDORS, vendor_from

if TYPE_CHECKING:
    from monitor.flows import Flow

__all__ = [
    "MAX_BODY",
    "InterleavedFrame",
    "RtspRequest",
    "RtspResponse",
    "RtspStreamParser",
    "Sdp",
    "SdpMedia",
    "Transport",
    "looks_like",
    "parse",
    "parse_transport",
]

PROTOCOL: Final = "rtsp"
MAX_HEAD: Final = 16384
MAX_BODY: Final = 16384  # an SDP is a few hundred bytes; bigger bodies are skipped, not parsed
MAX_SDP_MEDIA: Final = 64
MAX_PENDING: Final = 16  # requests of a connection waiting for their answers (the oldest forgotten)
_MAX_TRANSPORTS: Final = 16

_METHODS: Final = (
    b"OPTIONS",
    b"DESCRIBE",
    b"SETUP",
    b"PLAY",
    b"PAUSE",
    b"TEARDOWN",
    b"GET_PARAMETER",
    b"SET_PARAMETER",
    b"ANNOUNCE",
    b"RECORD",
    b"REDIRECT",
    b"PLAY_NOTIFY",  # RTSP/2.0 (RFC 7826)
)
_VERSIONS: Final = (b"RTSP/1.0", b"RTSP/2.0")
# Where a message may start again after input the parser could not follow (a capture met mid-stream, inside
# an interleaved frame; junk): a request line of a known method, or a status line, wherever it is (a server
# writes an answer right after a frame, without a line end before it).
_RESYNC_RE: Final = re.compile(
    rb"(?i)(?:" + b"|".join(_METHODS) + rb") [^\r\n]{1,2048}? RTSP/[12]\.0\r?\n"
    rb"|RTSP/[12]\.0 [1-5][0-9]{2}[ \r\n]"
)
_RESYNC_KEEP: Final = 2100  # bytes kept between segments while resynchronising: a start line cut in two
_PORT_RANGE_RE: Final = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
_CHANNEL_RANGE_RE: Final = re.compile(r"([0-9]{1,3})(?:-([0-9]{1,3}))?")
_TOKEN_PREFIX_RE: Final = re.compile(rb"[!#%&'*+\-.^_`|~0-9A-Za-z]*")
_SSRC_RE: Final = re.compile(r"[0-9A-Fa-f]{1,8}")
_NAME_RE: Final = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?")


@dataclass(frozen=True, slots=True)
class Transport:
    """One transport specification of a ``Transport`` field (RFC 2326 12.39)."""

    protocol: str  # "RTP/AVP", "RTP/AVP/TCP", "RTP/AVP/UDP", ...
    lower_transport: str  # "UDP" or "TCP"
    cast: str | None  # "unicast", "multicast" or None when unsaid
    destination: str | None  # an IP address (canonical text); None when unsaid or a name
    source: str | None  # the same
    client_port: tuple[int, int] | None
    server_port: tuple[int, int] | None
    port: tuple[int, int] | None  # multicast port pair
    interleaved: tuple[int, int] | None
    ssrc: int | None
    ttl: int | None
    mode: str | None
    destination_name: str | None = None  # a host name given as destination (RFC 2326 allows one)

    @property
    def records(self) -> bool:
        """The session sends media to the server (``mode=record``, RFC 2326 12.39; ``receive`` in older
        clients; quoted in RFC 7826), not from it."""
        mode = (self.mode or "").strip('"').lower()
        return mode in ("record", "receive")


def _address(value: str | None) -> tuple[str | None, str | None]:
    """A Transport ``destination`` or ``source`` as (IP address, host name): the address in canonical text
    (RFC 7826 writes IPv6 in brackets; an IPv4-mapped one is the IPv4 address; a zone is dropped), else the
    value as a name when it is one, else neither."""
    if not value:
        return None, None
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None, (value.lower() if _NAME_RE.fullmatch(value) else None)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), None


def _range(value: str, what: str, regex: re.Pattern[str], top: int) -> tuple[int, int]:
    m = regex.fullmatch(value.strip())
    if m is None:
        raise AnalyzerError(PROTOCOL, f"Transport: invalid {what} {value[:30]!r}")
    low = int(m.group(1))
    high = int(m.group(2)) if m.group(2) is not None else low + 1
    if low > top or high > top:
        raise AnalyzerError(PROTOCOL, f"Transport: {what} {value[:30]!r} out of range")
    return low, high


def _ports(fields: dict[str, str | None], name: str) -> tuple[int, int] | None:
    text = fields.get(name)
    return _range(text, name, _PORT_RANGE_RE, 65535) if text else None


def parse_transport(value: str) -> tuple[Transport, ...]:
    """The comma-separated transport specifications of a ``Transport`` field value."""
    out: list[Transport] = []
    for spec in value.split(","):
        spec = spec.strip()
        if not spec:
            continue
        if len(out) >= _MAX_TRANSPORTS:
            raise AnalyzerError(PROTOCOL, f"Transport: more than {_MAX_TRANSPORTS} specifications")
        parts = [p.strip() for p in spec.split(";")]
        protocol = parts[0].upper()
        names = protocol.split("/")
        if len(names) < 2 or not all(names) or len(names) > 3:
            raise AnalyzerError(PROTOCOL, f"Transport: invalid protocol {parts[0][:30]!r}")
        lower = names[2] if len(names) == 3 else "UDP"
        fields: dict[str, str | None] = {}
        for part in parts[1:]:
            if not part:
                continue
            key, eq, val = part.partition("=")
            fields.setdefault(key.strip().lower(), val.strip().strip('"') if eq else None)
        cast = "multicast" if "multicast" in fields else "unicast" if "unicast" in fields else None

        ssrc_text = fields.get("ssrc")
        ssrc: int | None = None
        if ssrc_text:
            if _SSRC_RE.fullmatch(ssrc_text) is None:
                raise AnalyzerError(PROTOCOL, f"Transport: invalid ssrc {ssrc_text[:20]!r}")
            ssrc = int(ssrc_text, 16)
        ttl_text = fields.get("ttl")
        if ttl_text and (not ttl_text.isascii() or not ttl_text.isdigit() or int(ttl_text) > 255):
            raise AnalyzerError(PROTOCOL, f"Transport: invalid ttl {ttl_text[:20]!r}")
        interleaved_text = fields.get("interleaved")
        destination, destination_name = _address(fields.get("destination"))
        out.append(
            Transport(
                protocol=protocol,
                lower_transport=lower,
                cast=cast,
                destination=destination,
                source=_address(fields.get("source"))[0],
                client_port=_ports(fields, "client_port"),
                server_port=_ports(fields, "server_port"),
                port=_ports(fields, "port"),
                interleaved=(
                    _range(interleaved_text, "interleaved", _CHANNEL_RANGE_RE, 255)
                    if interleaved_text
                    else None
                ),
                ssrc=ssrc,
                ttl=int(ttl_text) if ttl_text else None,
                mode=fields.get("mode") or None,
                destination_name=destination_name,
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SdpMedia:
    """One ``m=`` section: media type, port, protocol, formats and the attributes camwatch reads."""

    media: str
    port: int
    port_count: int
    protocol: str
    formats: tuple[str, ...]
    rtpmap: tuple[tuple[int, str, int, int | None], ...]  # (payload type, codec, clock rate, channels)
    fmtp: tuple[tuple[str, str], ...]  # (format, parameters)
    control: str | None
    framerate: float | None
    connection: str | None  # the c= address of this section (without /ttl)
    direction: str | None  # sendonly / recvonly / sendrecv / inactive

    @property
    def payload_types(self) -> tuple[int, ...]:
        """Numeric formats (RTP payload types) of an RTP media section."""
        return tuple(int(f) for f in self.formats if f.isascii() and f.isdigit() and int(f) < 128)

    def codec(self, payload_type: int) -> str | None:
        """Codec name of a payload type from ``a=rtpmap`` (dynamic types) or its static assignment."""
        for pt, name, _, _ in self.rtpmap:
            if pt == payload_type:
                return name
        return _STATIC_PAYLOADS.get(payload_type)


# RFC 3551 static payload types that cameras use without an rtpmap line.
_STATIC_PAYLOADS: Final = {0: "PCMU", 8: "PCMA", 9: "G722", 14: "MPA", 26: "JPEG", 32: "MPV", 33: "MP2T"}


@dataclass(frozen=True, slots=True)
class Sdp:
    """A session description (RFC 8866): session-level fields and the media sections."""

    origin_address: str | None
    session_name: str | None
    connection: str | None
    control: str | None
    tool: str | None
    media: tuple[SdpMedia, ...]

    @classmethod
    def parse(cls, body: bytes) -> Sdp:
        """Parse an SDP body; lines ``x=value``, unknown lines ignored, malformed ones rejected."""
        return _parse_sdp(body)


class _MediaBuilder:
    __slots__ = ("connection", "control", "direction", "fmtp", "formats", "framerate", "head", "rtpmap")

    def __init__(self, head: tuple[str, int, int, str]) -> None:
        self.head = head
        self.formats: tuple[str, ...] = ()
        self.rtpmap: list[tuple[int, str, int, int | None]] = []
        self.fmtp: list[tuple[str, str]] = []
        self.control: str | None = None
        self.framerate: float | None = None
        self.connection: str | None = None
        self.direction: str | None = None

    def build(self) -> SdpMedia:
        media, port, count, proto = self.head
        return SdpMedia(
            media,
            port,
            count,
            proto,
            self.formats,
            tuple(self.rtpmap),
            tuple(self.fmtp),
            self.control,
            self.framerate,
            self.connection,
            self.direction,
        )


def _sdp_connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise AnalyzerError(PROTOCOL, f"SDP: invalid c= line {value[:40]!r}")
    return parts[2].split("/", 1)[0]


def _sdp_media(value: str) -> tuple[tuple[str, int, int, str], tuple[str, ...]]:
    parts = value.split()
    if len(parts) < 3:
        raise AnalyzerError(PROTOCOL, f"SDP: invalid m= line {value[:40]!r}")
    port_text, _, count_text = parts[1].partition("/")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise AnalyzerError(PROTOCOL, f"SDP: invalid media port {parts[1][:20]!r}")
    if count_text and (not count_text.isascii() or not count_text.isdigit() or len(count_text) > 5):
        raise AnalyzerError(PROTOCOL, f"SDP: invalid port count {parts[1][:20]!r}")
    count = int(count_text) if count_text else 1
    return (parts[0], int(port_text), count, parts[2]), tuple(parts[3:])


def _sdp_rtpmap(value: str) -> tuple[int, str, int, int | None]:
    pt_text, _, encoding = value.partition(" ")
    pieces = encoding.strip().split("/")
    if (
        not pt_text.isascii()
        or not pt_text.isdigit()
        or int(pt_text) > 127
        or len(pieces) not in (2, 3)
        or not pieces[0]
        or not pieces[1].isascii()
        or not pieces[1].isdigit()
        or len(pieces[1]) > 10
    ):
        raise AnalyzerError(PROTOCOL, f"SDP: invalid rtpmap {value[:40]!r}")
    channels: int | None = None
    if len(pieces) == 3:
        if not pieces[2].isascii() or not pieces[2].isdigit() or len(pieces[2]) > 3:
            raise AnalyzerError(PROTOCOL, f"SDP: invalid rtpmap channels {value[:40]!r}")
        channels = int(pieces[2])
    return int(pt_text), pieces[0], int(pieces[1]), channels


def _parse_sdp(body: bytes) -> Sdp:
    text = body.decode("utf-8", "replace")
    origin: str | None = None
    name: str | None = None
    connection: str | None = None
    control: str | None = None
    tool: str | None = None
    media: list[SdpMedia] = []
    current: _MediaBuilder | None = None
    seen_version = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise AnalyzerError(PROTOCOL, f"SDP: invalid line {line[:40]!r}")
        kind, value = line[0], line[2:].strip()
        if not seen_version:
            if kind != "v":
                raise AnalyzerError(PROTOCOL, "SDP: does not start with v=")
            seen_version = True
            continue
        if kind == "m":
            if current is not None:
                media.append(current.build())
            if len(media) >= MAX_SDP_MEDIA:
                raise AnalyzerError(PROTOCOL, f"SDP: more than {MAX_SDP_MEDIA} media sections")
            head, formats = _sdp_media(value)
            current = _MediaBuilder(head)
            current.formats = formats
        elif kind == "c":
            if current is None:
                connection = _sdp_connection(value)
            else:
                current.connection = _sdp_connection(value)
        elif kind == "o" and current is None:
            parts = value.split()
            origin = parts[5] if len(parts) == 6 else None
        elif kind == "s" and current is None:
            name = value
        elif kind == "a":
            attr, _, avalue = value.partition(":")
            attr = attr.strip().lower()
            if current is None:
                if attr == "control":
                    control = avalue.strip()
                elif attr == "tool":
                    tool = avalue.strip()
                continue
            if attr == "rtpmap":
                current.rtpmap.append(_sdp_rtpmap(avalue.strip()))
            elif attr == "fmtp":
                fmt, _, params = avalue.strip().partition(" ")
                current.fmtp.append((fmt, params.strip()))
            elif attr == "control":
                current.control = avalue.strip()
            elif attr == "framerate":
                try:
                    current.framerate = float(avalue.strip())
                except ValueError:
                    raise AnalyzerError(PROTOCOL, f"SDP: invalid framerate {avalue[:20]!r}") from None
            elif attr in ("sendonly", "recvonly", "sendrecv", "inactive"):
                current.direction = attr
    if not seen_version:
        raise AnalyzerError(PROTOCOL, "SDP: empty")
    if current is not None:
        media.append(current.build())
    return Sdp(origin, name, connection, control, tool, tuple(media))


def _cseq(headers: Headers) -> int | None:
    text = headers.get("cseq")
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise AnalyzerError(PROTOCOL, f"invalid CSeq {text[:20]!r}")
    return int(text)


def _session(headers: Headers) -> tuple[str | None, int | None]:
    """(session id, timeout) of a ``Session: id;timeout=60`` field."""
    text = headers.get("session")
    if text is None:
        return None, None
    ident, _, params = text.partition(";")
    timeout: int | None = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        value = value.strip()
        if key.strip().lower() == "timeout" and value.isascii() and value.isdigit() and len(value) <= 9:
            timeout = int(value)
    return ident.strip() or None, timeout


def _content_length(headers: Headers) -> int | None:
    # Unlike HTTP (RFC 9110 8.6), RFC 2326 has no list form: the first field counts and "10, 10" is invalid.
    text = headers.get("content-length")
    if text is None:
        return None
    return parse_content_length(text.strip(), PROTOCOL)


def _transports(headers: Headers) -> tuple[Transport, ...]:
    return tuple(t for v in headers.get_all("transport") for t in parse_transport(v))


def _body_sdp(headers: Headers, body: bytes | None) -> Sdp | None:
    if body is None or not body:
        return None
    ctype = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/sdp":
        return None
    return _parse_sdp(body)


@dataclass(frozen=True, slots=True)
class RtspRequest:
    """An RTSP request; ``url`` is redacted (:func:`redact_url`), the authorization is kept as its scheme."""

    method: str
    url: str
    version: str
    headers: Headers
    cseq: int | None
    session: str | None
    transports: tuple[Transport, ...]
    user_agent: str | None
    authorization_scheme: str | None
    content_length: int | None
    head_length: int
    complete: bool
    login: Login | None = None
    """The credentials the request carried, reduced (monitor/analyzers/logins.py): never the password."""

    @property
    def pushes(self) -> bool:
        """The client sends media to the server: ANNOUNCE, RECORD, or a SETUP with ``mode=record``."""
        method = self.method.upper()
        return method in ("ANNOUNCE", "RECORD") or (
            method == "SETUP" and any(t.records for t in self.transports)
        )

    @classmethod
    def parse(cls, data: bytes) -> RtspRequest:
        """Parse the request head at the start of ``data``."""
        return cls.from_head(split_head(data, PROTOCOL, MAX_HEAD))

    @classmethod
    def from_head(cls, head: MessageHead) -> RtspRequest:
        """Build a request from a split head."""
        method, url, version = parse_request_line(head.start_line, PROTOCOL, "RTSP")
        h = head.headers
        return cls(
            method=method,
            url=redact_url(url),
            version=version,
            headers=safe_headers(h),
            cseq=_cseq(h),
            session=_session(h)[0],
            transports=_transports(h),
            user_agent=h.get("user-agent"),
            authorization_scheme=authorization_scheme(h.get("authorization")),
            content_length=_content_length(h),
            head_length=head.length,
            complete=head.complete,
            login=from_authorization(h.get("authorization")),
        )


@dataclass(frozen=True, slots=True)
class RtspResponse:
    """An RTSP response with the SDP of its body when the body was complete and ``application/sdp``."""

    version: str
    status: int
    reason: str
    headers: Headers
    cseq: int | None
    server: str | None
    challenges: tuple[Challenge, ...]
    session: str | None
    session_timeout: int | None
    transports: tuple[Transport, ...]
    content_base: str | None
    content_type: str | None
    content_length: int | None
    sdp: Sdp | None
    head_length: int
    complete: bool

    @property
    def realm(self) -> str | None:
        """The realm of the first challenge that has one."""
        return first_realm(self.challenges)

    @classmethod
    def parse(cls, data: bytes) -> RtspResponse:
        """Parse the response at the start of ``data`` (and its SDP body when it is all there)."""
        head = split_head(data, PROTOCOL, MAX_HEAD)
        return cls.from_head(head, _body_of(head, data))

    @classmethod
    def from_head(cls, head: MessageHead, body: bytes | None = None) -> RtspResponse:
        """Build a response from a split head and its complete body (None when not available)."""
        version, status, reason = parse_status_line(head.start_line, PROTOCOL, b"RTSP")
        h = head.headers
        session, timeout = _session(h)
        base = h.get("content-base")
        return cls(
            version=version,
            status=status,
            reason=reason,
            headers=safe_headers(h),
            cseq=_cseq(h),
            server=h.get("server"),
            challenges=challenges_of(h),
            session=session,
            session_timeout=timeout,
            transports=_transports(h),
            content_base=redact_url(base) if base is not None else None,
            content_type=h.get("content-type"),
            content_length=_content_length(h),
            sdp=_body_sdp(h, body),
            head_length=head.length,
            complete=head.complete,
        )


def _body_of(head: MessageHead, data: bytes) -> bytes | None:
    if not head.complete:
        return None
    length = _content_length(head.headers)
    if not length or len(data) - head.length < length:
        return None
    return data[head.length : head.length + length]


@dataclass(frozen=True, slots=True)
class InterleavedFrame:
    """An RTP/RTCP packet carried inside the RTSP connection (RFC 2326 10.12): only its header is kept."""

    channel: int
    length: int


RtspMessage = RtspRequest | RtspResponse


def _from_head(head: MessageHead, body: bytes | None) -> RtspMessage:
    if head.start_line.startswith(b"RTSP/"):
        return RtspResponse.from_head(head, body)
    return RtspRequest.from_head(head)


def parse(data: bytes) -> RtspMessage:
    """The request or response at the start of one segment (a response's SDP when its body is there)."""
    head = split_head(data, PROTOCOL, MAX_HEAD)
    return _from_head(head, _body_of(head, data))


def looks_like(payload: bytes) -> bool:
    """True for an RTSP/1.0 or 2.0 status line, or a request line of an RTSP method (in any case: lenient
    servers take ``describe``) ending in that version."""
    if payload[:9] in (b"RTSP/1.0 ", b"RTSP/2.0 "):
        return True
    eol = payload.find(b"\n", 0, 2048)
    line = payload[: eol if eol >= 0 else min(len(payload), 2048)].rstrip(b"\r")
    method, sp, _ = line.partition(b" ")
    return bool(sp) and method.upper() in _METHODS and line[-9:-8] == b" " and line[-8:] in _VERSIONS


def may_start(data: bytes) -> bool:
    """``data`` (no whole line yet) may be the start of an RTSP message: a prefix of a method, a request
    line before its version, or a prefix of a status line."""
    if b"\n" in data:
        return False
    head = data[:9]
    if any(v.startswith(head) or head.startswith(v) for v in _VERSIONS):
        return True
    method, sp, _ = data.partition(b" ")
    upper = method.upper()
    return any(m.startswith(upper) for m in _METHODS) if not sp else upper in _METHODS


def interleaved_start(payload: bytes) -> bool:
    """A segment that starts with an interleaved frame header (``$``, channel, length) and holds that frame
    (or at least its start): an RTSP session met after its requests, streaming over its TCP connection."""
    return len(payload) >= 4 and payload[0] == 0x24 and int.from_bytes(payload[2:4], "big") > 0


_HEAD: Final = 0
_BODY: Final = 1
_FRAME: Final = 2  # skipping an interleaved frame's payload
_RESYNC: Final = 3  # looking for the next message start (after input that was neither message nor frame)


class RtspStreamParser:
    """Follows one direction of an RTSP connection: messages as they complete and interleaved frame headers.

    Sans-I/O: feed the direction's TCP payloads in order. Interleaved RTP/RTCP frames are skipped
    without buffering and reported as :class:`InterleavedFrame` (when ``report_frames``) and in the
    counters. At most ``max_buffer`` bytes of an unfinished head or SDP body are kept; a larger body is
    skipped unparsed. Input that is neither a message nor a frame (a connection met inside a frame, junk)
    is skipped up to the next request or status line (``error``, ``resyncs``), so a session met
    mid-stream is read from its next keep-alive; a field line that is not one (no colon, control
    characters) is left out as lenient servers do, and a well-framed message with a bad field value is
    dropped alone (``bad_messages``, ``last_message_error``).
    """

    def __init__(self, max_buffer: int = MAX_HEAD, *, report_frames: bool = True) -> None:
        if max_buffer < 64:
            raise ValueError("max_buffer must be >= 64")
        self.max_buffer = max_buffer
        self.report_frames = report_frames
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self._head: MessageHead | None = None
        self._body_parts: list[bytes] | None = None
        self.error: AnalyzerError | None = None
        self.messages = 0
        self.bad_messages = 0
        self.last_message_error: AnalyzerError | None = None
        self.frames = 0
        self.frame_bytes = 0
        self.frames_by_channel: dict[int, int] = {}
        self.ignored_bytes = 0
        self.resyncs = 0
        self._failed_at = 0  # where the item being read started (a resync looks from the byte after it)

    @property
    def failed(self) -> bool:
        """True while the parser skips input it cannot follow, looking for the next message start."""
        return self._state == _RESYNC

    @property
    def pending(self) -> bytes:
        """The start of a message held for the next segment."""
        return self._buf if self._state == _HEAD else b""

    def start_midstream(self) -> None:
        """The connection is met after its start, at a place that may not be a message or frame start: what
        comes is skipped up to the next request or status line."""
        self._state = _RESYNC

    @property
    def buffered(self) -> int:
        """Bytes held for later segments: a partial head or frame header, and a partial SDP body."""
        return len(self._buf) + sum(len(p) for p in self._body_parts or ())

    def feed(self, segment: bytes) -> list[RtspMessage | InterleavedFrame]:
        """Take the next payload of this direction; return what it completed. Never raises."""
        data = self._buf + segment if self._buf else segment
        self._buf = b""
        out: list[RtspMessage | InterleavedFrame] = []
        pos = 0
        while True:
            if self._state == _RESYNC:
                m = _RESYNC_RE.search(data, pos)
                if m is None:
                    # A start line may be cut by the segment's end: its last bytes are looked at again.
                    keep = max(pos, len(data) - min(_RESYNC_KEEP, self.max_buffer))
                    self.ignored_bytes += keep - pos
                    self._buf = data[keep:]
                    return out
                self.ignored_bytes += m.start() - pos
                pos = m.start()
                self._state = _HEAD
            try:
                pos = self._run(data, out, pos)
                break
            except AnalyzerError as exc:
                # Neither a message nor a frame here: skipped up to the next message start.
                self.error = exc.detached()  # no frames: they held the batch, and this parser in a cycle
                self.resyncs += 1
                self._state = _RESYNC
                self._head = None
                self._body_parts = None
                pos = self._failed_at + 1
        rest = len(data) - pos
        if rest > self.max_buffer:
            self.error = AnalyzerError(PROTOCOL, f"message head longer than {self.max_buffer} bytes")
            self.resyncs += 1
            self._state = _RESYNC
            self.ignored_bytes += rest
        elif rest:
            self._buf = data[pos:]
        return out

    def _run(self, data: bytes, out: list[RtspMessage | InterleavedFrame], pos: int) -> int:
        n = len(data)
        while pos < n:
            self._failed_at = pos
            if self._state == _FRAME:
                take = min(self._remaining, n - pos)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _HEAD
            elif self._state == _BODY:
                take = min(self._remaining, n - pos)
                if self._body_parts is not None:
                    self._body_parts.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._finish_body(out)
            elif data[pos] == 0x24:  # '$': an interleaved frame
                if n - pos < 4:
                    return pos
                channel = data[pos + 1]
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                pos += 4
                self.frames += 1
                self.frame_bytes += length
                self.frames_by_channel[channel] = self.frames_by_channel.get(channel, 0) + 1
                if self.report_frames:
                    out.append(InterleavedFrame(channel, length))
                if length:
                    self._state = _FRAME
                    self._remaining = length
            elif data[pos] in b"\r\n":
                pos += 1  # stray line ends between messages
            else:
                if data.find(b"\n", pos, pos + self.max_buffer) < 0:
                    if n - pos >= self.max_buffer:
                        raise AnalyzerError(PROTOCOL, f"start line longer than {self.max_buffer} bytes")
                    self._check_start(data[pos:])
                    return pos
                # A bad field line is left out, as lenient servers do (the message is read; http.py too).
                head = split_head(data[pos:], PROTOCOL, self.max_buffer, lenient=True)
                if not head.complete:
                    return pos
                pos += head.length
                # The start line and the length frame the stream: errors there are fatal (raised).
                if head.start_line.startswith(b"RTSP/"):
                    parse_status_line(head.start_line, PROTOCOL, b"RTSP")
                else:
                    parse_request_line(head.start_line, PROTOCOL, "RTSP")
                length = _content_length(head.headers) or 0
                if length:
                    self._head = head
                    self._state = _BODY
                    self._remaining = length
                    # Keep the body only when it can be an SDP we will parse.
                    self._body_parts = [] if length <= self.max_buffer else None
                else:
                    self._emit(head, None, out)
        return pos

    def _emit(self, head: MessageHead, body: bytes | None, out: list[RtspMessage | InterleavedFrame]) -> None:
        # A bad field (a Transport, a CSeq, the SDP) loses this message only: the framing is intact.
        try:
            out.append(_from_head(head, body))
        except AnalyzerError as exc:
            self.bad_messages += 1
            self.last_message_error = exc.detached()  # no frames: no batch held, no cycle
            return
        self.messages += 1

    def _check_start(self, partial: bytes) -> None:
        """Fail early when an unfinished first line cannot start a message (garbage is not buffered)."""
        first = partial[:32].split(b" ", 1)[0]
        if first[:5] == b"RTSP/"[: len(first[:5])]:
            return  # (a prefix of) a status line
        if _TOKEN_PREFIX_RE.fullmatch(first) is None:
            raise AnalyzerError(PROTOCOL, f"not an RTSP message nor an interleaved frame: {partial[:16]!r}")

    def _finish_body(self, out: list[RtspMessage | InterleavedFrame]) -> None:
        head = self._head
        parts = self._body_parts
        self._head = None
        self._body_parts = None
        self._state = _HEAD
        if head is None:
            return
        self._emit(head, b"".join(parts) if parts is not None else None, out)


# ------------------------------------------------------------------------------ protocol binding


def control_parser() -> RtspStreamParser:
    """A parser for the control messages: interleaved frames are skipped, not reported."""
    return RtspStreamParser(report_frames=False)


class Requests:
    """The requests of a connection waiting for their answers, and how many there were (for AppRequest)."""

    __slots__ = ("pending", "seq")

    def __init__(self) -> None:
        # A list, not a deque(maxlen=...): a deque takes 600 bytes before its first item, and every RTSP
        # connection (and every tunnelled session) has one (with 16 at most, popping the first is as cheap).
        self.pending: list[AppRequest] = []
        self.seq = 0

    def wait(self, request: AppRequest) -> None:
        """Keep a request for its answer (at most MAX_PENDING: the oldest is forgotten)."""
        pending = self.pending
        if len(pending) >= MAX_PENDING:
            del pending[0]
        pending.append(request)

    def number(self, flow: Flow) -> int:
        """The next request's ``seq`` on ``flow``."""
        seq = self.seq
        self.seq += 1
        return seq

    def answered(self, from_src: bool) -> AppRequest | None:
        """The request an answer sent by ``from_src``'s side answers: the oldest waiting, if the other side
        sent it."""
        pending = self.pending
        return pending.pop(0) if pending and pending[0].from_src != from_src else None

    def hold(self, answer: Answer) -> bool:
        """Keep an answer no request waits for, to pair with a request read later (True), or not (False)."""
        return False

    def release(self) -> list[tuple[Answer, AppRequest | None]]:
        """Answers held for requests read since, each with the request it answers (None: none can)."""
        return []


class Answer(NamedTuple):
    """An RTSP answer and where it was read."""

    flow: Flow
    from_src: bool
    message: RtspResponse
    ts: int


def _answer_event(answer: Answer, asked: AppRequest | None) -> AppResponse:
    """The answer as the rules read it: the request it answers, what it says about that request's login."""
    msg = answer.message
    stale = any(v.lower() == "true" for c in msg.challenges for n, v in c.params if n == "stale")
    auth = http_outcome(asked.login if asked is not None else None, msg.status, stale)
    return AppResponse(answer.ts, answer.flow, answer.from_src, PROTOCOL, msg.status, asked, auth)


def report(
    ctx: Context,
    flow: Flow,
    from_src: bool,
    messages: list[RtspMessage | InterleavedFrame],
    ts: int,
    requests: Requests,
) -> None:
    """Report what RTSP messages say: requests and answers (logins, pulls), transports, the server."""
    for msg in messages:
        if isinstance(msg, RtspResponse):
            # The answer's Transport first: a rule judging a SETUP by its answer has it when the answer comes.
            for t in msg.transports:
                ctx.emit(StreamTransport(ts, flow, from_src, t, False))
            # Logins and their answers, for the auth.* rules (a 401 before Digest succeeds is a challenge).
            asked = requests.answered(from_src)
            answer = Answer(flow, from_src, msg, ts)
            if asked is not None or not requests.hold(answer):
                ctx.emit(_answer_event(answer, asked))
            if msg.server:
                vendor = vendor_from(msg.server, SERVER_VENDORS)
                ctx.fact(flow, from_src, "rtsp_server", msg.server, vendor=vendor, protocol=PROTOCOL)
            realm = msg.realm
            realm_vendor = vendor_from(realm, REALM_VENDORS)
            if realm and realm_vendor:
                ctx.fact(flow, from_src, "realm", realm, vendor=realm_vendor, protocol=PROTOCOL)
        elif isinstance(msg, RtspRequest):
            seq = requests.number(flow)
            asked = AppRequest(ts, flow, from_src, PROTOCOL, msg.method, msg.url, seq, msg.login)
            requests.wait(asked)
            ctx.emit(asked)
            ctx.emit(StreamRequest(ts, flow, from_src, msg.method, msg.url, msg.pushes, msg.session))
            for t in msg.transports:
                ctx.emit(StreamTransport(ts, flow, from_src, t, True))
            for held, answered in requests.release():
                ctx.emit(_answer_event(held, answered))


def handle_rtsp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol is None and not looks_like(payload):
        app = flow.app
        held_parser = app.states.get((PROTOCOL, from_src)) if app is not None else None
        held = held_parser.pending if isinstance(held_parser, RtspStreamParser) else b""
        if held and looks_like(held + payload):
            pass  # a message start cut across segments, now whole: read on below
        elif may_start(held + payload):
            # A request line cut before its version ("DESCRIBE rtsp://..." then " RTSP/1.0"): kept until it
            # says what it is; the flow is claimed then.
            flow_state(flow, (PROTOCOL, from_src), RtspStreamParser, control_parser).feed(payload)
            return False
        elif not flow.opening_seen and interleaved_start(payload):
            # A session met after its requests (capture started, a mirror re-plumbed), streaming interleaved
            # over its connection: read from here, the next keep-alive request and answer found by resync.
            for side in (from_src, not from_src):
                flow_state(flow, (PROTOCOL, side), RtspStreamParser, control_parser).start_midstream()
        else:
            raise AnalyzerError(PROTOCOL, "not an RTSP message start")
    parser = flow_state(flow, (PROTOCOL, from_src), RtspStreamParser, control_parser)
    report(ctx, flow, from_src, parser.feed(payload), ts, flow_state(flow, PROTOCOL, Requests))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_rtsp,
        tcp_ports=(554, 8554),
        sniff=looks_like,
        tcp_guess=20,
        control=True,
        emits=(StreamRequest, StreamTransport, AppRequest, AppResponse),
    ),
)
