"""RTSP tunnelled in HTTP: a video pull through the camera's web port.

Apple's QuickTime tunnelling, which live555, VLC, FFmpeg and camera web servers implement, carries one RTSP
session in two HTTP connections from the same client, paired by their ``x-sessioncookie`` header: a GET
(``Accept: application/x-rtsp-tunnelled``) whose answer never ends and carries the RTSP answers and the
interleaved media, and a POST (``Content-Type: application/x-rtsp-tunnelled``) whose body carries the RTSP
requests, each base64-encoded. Read as HTTP alone, a pull of video over port 80 says nothing; read here,
its requests and answers are reported as RTSP's (``rtsp.report``): who pulled which stream, with which
login, and what the camera answered.

Each connection is still read as HTTP (``http.handle_http``: its heads, the bodies the exploit matchers
read), so a request dressed as a tunnel hides nothing. HTTP hands a connection over at the request that
opens a tunnel half (its ``x-sessioncookie``), the connection's first or a later one on a kept-alive
connection (``Context.handover``).
"""

from __future__ import annotations

import binascii
import re
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError, http
from monitor.analyzers.rtsp import Answer, Requests, RtspStreamParser, control_parser, report
from monitor.events import AppRequest, AppResponse, MediaSeen, PortMapping, StreamRequest, StreamTransport
from monitor.protocol import Context, ProtocolSpec, flow_state, peek_state

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = http.RTSP_TUNNEL_LABEL
MAX_EARLY: Final = 16  # answers read before their requests, per session

_NOT_BASE64_RE: Final = re.compile(rb"[^A-Za-z0-9+/=]")
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# Any other byte reads as "A" (0), as live555's decoder reads it: the server decodes on, and so does this.
_AS_SERVERS_READ: Final = bytes(b if b in _BASE64 else ord("A") for b in range(256))


class Base64Stream:
    """Decodes base64 text that arrives in pieces, as a tunnelling server does: whitespace is ignored, each
    4-character quantum is decoded once complete, and padding may end one encoded message and another start
    after it (a client encodes each request by itself). A character base64 does not use reads as ``A``
    (``replaced`` counts them) and a quantum with impossible padding is dropped (``dropped``): what is not
    RTSP after that is the RTSP parser's to skip. Never raises."""

    __slots__ = ("_held", "dropped", "replaced")

    def __init__(self) -> None:
        self._held = b""  # fewer than 4 characters of a quantum
        self.replaced = 0
        self.dropped = 0

    def feed(self, text: bytes) -> bytes:
        text = text.translate(None, b" \t\r\n")
        if _NOT_BASE64_RE.search(text) is not None:
            self.replaced += len(_NOT_BASE64_RE.findall(text))
            text = text.translate(_AS_SERVERS_READ)
        data = self._held + text
        usable = len(data) - len(data) % 4
        self._held = data[usable:]
        out: list[bytes] = []
        pos = 0
        while pos < usable:
            pad = data.find(b"=", pos, usable)
            # A quantum with padding ends one encoded message: decoded up to it, then from the next quantum.
            end = usable if pad < 0 else pos + ((pad - pos) // 4 + 1) * 4
            try:
                out.append(binascii.a2b_base64(data[pos:end], strict_mode=True))
            except binascii.Error:
                # Padding where none can be ("Q===", "=AAA"): that quantum means nothing; the rest is read.
                good = (end - 4 - pos) // 4 * 4
                out.append(binascii.a2b_base64(data[pos : pos + good], strict_mode=True) if good else b"")
                self.dropped += 1
            pos = end
        return b"".join(out)


class Session(Requests):
    """The RTSP requests of one tunnelled session waiting for their answers: sent in the POST connection and
    answered in the GET one, so an answer pairs with the oldest request whatever the direction. An answer
    read before its request (the two connections' packets are not always read in capture order: a flow's
    first packets come before the rest of a batch) waits for it, 16 at most."""

    __slots__ = ("early",)

    def __init__(self) -> None:
        super().__init__()
        self.early: list[Answer] = []  # a list, as Requests.pending

    def number(self, flow: Flow) -> int:
        # Numbered with the HTTP requests of the connection that carries them (the POST is one).
        return http.request_seq(flow)

    def answered(self, from_src: bool) -> AppRequest | None:
        return self.pending.pop(0) if self.pending and not self.early else None

    def hold(self, answer: Answer) -> bool:
        early = self.early
        if len(early) >= MAX_EARLY:
            del early[0]
        early.append(answer)
        return True

    def release(self) -> list[tuple[Answer, AppRequest | None]]:
        out: list[tuple[Answer, AppRequest | None]] = []
        early, pending = self.early, self.pending
        while early and pending:
            if early[0].ts < pending[0].ts_ns:
                out.append((early.pop(0), None))  # sent before the oldest request: it answers none of them
            else:
                out.append((early.pop(0), pending.pop(0)))
        return out


class _Connection:
    """The request that opened the connection: its half of the tunnel, the cookie, who sent it."""

    __slots__ = ("client_is_src", "cookie", "method")

    def __init__(self) -> None:
        self.method = ""
        self.cookie = ""
        self.client_is_src = True


_HEAD: Final = 0  # waiting for the direction's first head (the opening request, or its answer)
_REQUESTS: Final = 1  # the POST's body: base64 RTSP requests
_ANSWERS: Final = 2  # the GET's answer: RTSP answers and interleaved frames
_OFF: Final = 3  # nothing (more) to read in this direction


class _Direction:
    """One direction of one of the tunnel's connections."""

    __slots__ = ("buf", "decoder", "parser", "session", "state")

    def __init__(self) -> None:
        self.state = _HEAD
        self.buf = b""
        self.decoder: Base64Stream | None = None  # the POST's requests are base64
        self.parser: RtspStreamParser | None = None
        self.session: Session | None = None  # shared with the session's other connection


def _open(flow: Flow, from_src: bool, side: _Direction, data: bytes) -> bytes | None:
    """Read the direction's first head from ``data`` (what the direction held before, and this payload):
    set the direction's state and return what follows the head, or None when the head is not complete."""
    skip = len(data) - len(data.lstrip(b"\r\n"))  # empty lines before a message are ignored (RFC 9112 2.2)
    try:
        head = http.split_head(data[skip:], http.PROTOCOL, http.MAX_HEAD, lenient=True)
        complete = head.complete
    except AnalyzerError:
        complete = False  # no whole start line yet
    if not complete:
        if len(data) < http.MAX_HEAD:
            side.buf = data
            return None
        side.buf, side.state = b"", _OFF
        raise AnalyzerError(PROTOCOL, f"no head in the first {http.MAX_HEAD} bytes")
    side.buf, side.state = b"", _OFF
    opened = http.tunnel_head(data)
    if opened is not None:
        opening = flow_state(flow, PROTOCOL, _Connection)
        opening.method, opening.cookie, opening.client_is_src = opened.method, opened.cookie, from_src
        if opened.method == "POST":
            side.state = _REQUESTS
            side.decoder = Base64Stream()
            side.parser = control_parser()
        return data[opened.length :]
    conn = peek_state(flow, PROTOCOL, _Connection)
    if conn is None or conn.client_is_src == from_src or conn.method != "GET":
        return b""  # not the answer to the GET: nothing of the tunnel in this direction
    try:
        _, status, _ = http.parse_status_line(head.start_line, http.PROTOCOL, b"HTTP")
    except AnalyzerError:
        return b""
    if 200 <= status < 300:
        side.state = _ANSWERS  # the answer's body is the RTSP answers and the media, not encoded
        side.parser = control_parser()
    return data[skip + head.length :]


def handle_rtsp_tunnel(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol != PROTOCOL:
        raise AnalyzerError(PROTOCOL, "reached only by HTTP's handover")
    side = flow_state(flow, (PROTOCOL, from_src), _Direction)
    handed = http.take_handed(flow, from_src) if side.state == _HEAD else None
    if handed is not None:
        side.buf = handed  # what HTTP held of the head when it handed the connection over
    # HTTP first, as on any web connection: the heads and bodies the exploit and login rules read.
    http.handle_http(ctx, flow, from_src, payload, ts, tunnels=True)
    data = payload
    if side.state == _HEAD:
        opened = _open(flow, from_src, side, side.buf + payload if side.buf else payload)
        if not opened:
            return True
        data = opened
    if side.state == _OFF or side.parser is None:
        return True
    session = side.session
    if session is None:
        conn = peek_state(flow, PROTOCOL, _Connection)
        if conn is None:
            return True
        client_ip = (flow.src if conn.client_is_src else flow.dst)[0]
        server_ip = (flow.dst if conn.client_is_src else flow.src)[0]
        session = side.session = ctx.shared((PROTOCOL, client_ip, server_ip, conn.cookie), Session)
    if side.decoder is not None:
        data = side.decoder.feed(data)
    report(ctx, flow, from_src, side.parser.feed(data), ts, session)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_rtsp_tunnel,
        # No ports or content guess of its own: HTTP hands a connection over at a tunnel's request.
        control=True,
        emits=(StreamRequest, StreamTransport, AppRequest, AppResponse, PortMapping, MediaSeen),
    ),
)
