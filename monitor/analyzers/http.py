"""HTTP/1.x message heads: request line, status line and the few header fields camwatch reads.

Cameras and recorders give themselves away in HTTP: the ``Server`` field (``App-webs/``,
``Hikvision-Webs``, ``DNVRS-Webs``, ``uc-httpd``) and the realm of a ``WWW-Authenticate`` challenge
(``Hikvision``, ``DH_<MAC>``) name the firmware; ``Host``, ``User-Agent`` and ``SOAPAction`` tell where a
device goes and what it asks for (UPnP ``AddPortMapping``).

:func:`parse` reads the head at the start of one TCP segment, complete or not;
:class:`HttpStreamParser` follows one direction of a connection segment by segment, skipping bodies.
The generic pieces (:class:`Headers`, :func:`split_head`, :func:`parse_challenges`, the start-line and
header-value helpers) are shared with the RTSP analyzer, whose messages have the same syntax.

Credentials are never kept: ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie``
values are dropped (only the authorization scheme survives) and password parameters of request
targets are masked (:func:`redact_url`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple

from monitor.analyzers import AnalyzerError, upnp
from monitor.analyzers.logins import (
    FAILURE,
    SUCCESS,
    Login,
    from_authorization,
    from_ws_security,
    http_outcome,
    rpc_login,
    rpc_outcome,
    soap_fault_is_auth,
)
from monitor.analyzers.targets import normal_path
from monitor.events import AppRequest, AppResponse, MediaSeen, PortMapping
from monitor.protocol import Context, ProtocolSpec, flow_state, offer_skip
from monitor.vendors.fingerprints import REALM_VENDORS, SERVER_VENDORS, vendor_from

if TYPE_CHECKING:
    from monitor.flows import Flow

__all__ = [
    "MAX_HEAD",
    "TCP_PORTS",
    "Challenge",
    "Headers",
    "HttpRequest",
    "HttpResponse",
    "HttpStreamParser",
    "MessageHead",
    "TunnelHead",
    "authorization_scheme",
    "challenges_of",
    "first_realm",
    "looks_like",
    "parse",
    "parse_challenges",
    "parse_content_length",
    "parse_from_head",
    "parse_request_line",
    "parse_status_line",
    "redact_url",
    "request_seq",
    "safe_headers",
    "split_head",
    "take_handed",
    "tunnel_head",
]

PROTOCOL: Final = "http"
MAX_HEAD: Final = 16384  # bytes of a head kept at most (the stream parser's buffer bound)
MAX_FIELDS: Final = 128  # header fields per message; more is garbage or an attack
_MAX_CHUNK_LINE: Final = 1024

# Header fields whose values are credentials or session secrets.
SENSITIVE_FIELDS: Final = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

_METHODS: Final = (
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"TRACE",
    b"CONNECT",
    # UPnP/GENA over TCP (event subscriptions, notifications): cameras use them.
    b"SUBSCRIBE",
    b"UNSUBSCRIBE",
    b"NOTIFY",
    b"M-SEARCH",
)
_LOOKS_LIKE_REQUEST: Final = tuple(m + b" " for m in _METHODS)
_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION_RE: Final = re.compile(r"([A-Z]+)/([0-9])\.([0-9])")
_STATUS_RE: Final = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: (.*))?")
_TOKEN68_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_CTL_RE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Kept past MAX_FIELDS in a lenient head: they say where the message ends.
_FRAMING_FIELDS: Final = frozenset({"content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Headers:
    """Header fields in wire order with names as sent; lookups ignore case."""

    fields: tuple[tuple[str, str], ...] = ()
    names: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """The fields' names lowercased, in the same order (:func:`split_head` gives them; made when not)."""

    def __post_init__(self) -> None:
        # Lookups search the lowercased names in C (a message has a handful of fields): lowercasing every
        # name at every lookup, or building a dict per message, cost more than the lookups themselves.
        if len(self.names) != len(self.fields):
            object.__setattr__(self, "names", tuple(name.lower() for name, _ in self.fields))

    def get(self, name: str) -> str | None:
        """Value of the first field called ``name``, or None."""
        key = name.lower()
        names = self.names
        if key not in names:
            return None
        return self.fields[names.index(key)][1]

    def get_all(self, name: str) -> tuple[str, ...]:
        """Values of every field called ``name``, in order."""
        key = name.lower()
        names = self.names
        if key not in names:
            return ()
        return tuple(value for lowered, (_, value) in zip(names, self.fields, strict=True) if lowered == key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.names

    def __len__(self) -> int:
        return len(self.fields)

    def has_any(self, lowered: frozenset[str]) -> bool:
        """Whether any field is called one of the (lowercase) names."""
        return not lowered.isdisjoint(self.names)


@dataclass(frozen=True, slots=True)
class MessageHead:
    """A start line and the header fields after it.

    ``length`` counts the bytes taken: the whole head with its blank line when ``complete``, else the
    complete lines read so far. Sensitive values are still here; callers drop them.
    """

    start_line: bytes
    headers: Headers
    length: int
    complete: bool


@dataclass(frozen=True, slots=True)
class Challenge:
    """One authentication challenge of a ``WWW-Authenticate`` field (scheme as sent, params lowercased)."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        """The ``realm`` parameter, if any."""
        for name, value in self.params:
            if name == "realm":
                return value
        return None


def _line_end(data: bytes, start: int, limit: int) -> int:
    """Index of the LF ending the line that starts at ``start`` (searching below ``limit``), or -1."""
    return data.find(b"\n", start, limit)


def split_head(
    data: bytes, protocol: str = PROTOCOL, max_head: int = MAX_HEAD, *, lenient: bool = False
) -> MessageHead:
    """Split the head at the start of ``data`` into its start line and header fields.

    Lines end in CRLF or a bare LF (embedded servers send both). Only the first ``max_head`` bytes
    are read; a head that does not end there comes back with ``complete=False``. Raises
    :class:`AnalyzerError` when the start line is incomplete or a field line is malformed; with
    ``lenient`` a malformed field line is left out instead (as a lenient embedded server ignores it),
    control characters are taken out of values, and past ``MAX_FIELDS`` only the framing fields are kept.
    """
    limit = min(len(data), max_head)
    eol = _line_end(data, 0, limit)
    if eol < 0:
        if len(data) >= max_head:
            raise AnalyzerError(protocol, f"start line longer than {max_head} bytes")
        raise AnalyzerError(protocol, "incomplete start line")
    start_line = data[:eol].removesuffix(b"\r")
    if not start_line:
        raise AnalyzerError(protocol, "empty start line")
    fields: list[tuple[str, str]] = []
    names: list[str] = []
    pos = eol + 1
    while True:
        eol = _line_end(data, pos, limit)
        if eol < 0:
            return MessageHead(start_line, Headers(tuple(fields), tuple(names)), pos, False)
        line = data[pos:eol].removesuffix(b"\r")
        pos = eol + 1
        if not line:
            return MessageHead(start_line, Headers(tuple(fields), tuple(names)), pos, True)
        if line[0] in b" \t":
            # obs-fold: a continuation of the previous field's value (RFC 9112 5.2).
            if not fields:
                if lenient:
                    continue
                raise AnalyzerError(protocol, "continuation line before any header field")
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip().decode('latin-1')}".strip())
            continue
        name_b, colon, value_b = line.partition(b":")
        name_b = name_b.rstrip(b" \t")  # RFC 9112 forbids the space, but some cameras send "CSeq : 1"
        if not colon or _TOKEN_RE.fullmatch(name_b) is None:
            if lenient:
                continue
            if not colon:
                raise AnalyzerError(protocol, f"header line without a colon at byte {pos - len(line) - 1}")
            raise AnalyzerError(protocol, f"invalid header field name {name_b[:40]!r}")
        value_b = value_b.strip(b" \t")
        if _CTL_RE.search(value_b) is not None:
            if not lenient:
                raise AnalyzerError(protocol, f"control character in the value of {name_b[:40]!r}")
            value_b = _CTL_RE.sub(b"", value_b)
        name = name_b.decode("ascii")
        lowered = name.lower()
        if len(fields) >= MAX_FIELDS:
            if not lenient:
                raise AnalyzerError(protocol, f"more than {MAX_FIELDS} header fields")
            if lowered not in _FRAMING_FIELDS:
                continue
        fields.append((name, value_b.decode("latin-1")))
        names.append(lowered)


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    """A run of characters up to a separator (lenient: anything but space, comma, '=' and quote)."""
    end = pos
    while end < len(text) and text[end] not in ' \t,="':
        end += 1
    return text[pos:end], end


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted-string starting at the opening quote; an unterminated one runs to the end."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\" and pos + 1 < len(text):
            pos += 1
            ch = text[pos]
        out.append(ch)
        pos += 1
    return "".join(out), pos


def _read_param(text: str, pos: int) -> tuple[str, str, int] | None:
    """``name = value`` at ``pos`` (after spaces), or None when what is there is not a parameter."""
    name, after = _read_token(text, _skip_spaces(text, pos))
    eq = _skip_spaces(text, after)
    if not name or eq >= len(text) or text[eq] != "=":
        return None
    vpos = _skip_spaces(text, eq + 1)
    if vpos < len(text) and text[vpos] == '"':
        value, end = _read_quoted(text, vpos)
    else:
        value, end = _read_token(text, vpos)
    # Tolerate junk up to the next comma (e.g. a trailing ';' seen on some DVRs).
    comma = text.find(",", end)
    return name.lower(), value, len(text) if comma < 0 else comma


def parse_challenges(value: str) -> tuple[Challenge, ...]:
    """The challenges of one ``WWW-Authenticate`` value (RFC 9110 11.6.1); lenient, never raises.

    ``Basic realm="x", Digest realm="y", nonce="z"`` gives two challenges.
    """
    challenges: list[Challenge] = []
    pos = 0
    n = len(value)
    while pos < n:
        while pos < n and value[pos] in " \t,":
            pos += 1
        scheme, pos = _read_token(value, pos)
        if not scheme:
            # Not a token where a scheme must start: skip to the next comma.
            comma = value.find(",", pos + 1)
            pos = n if comma < 0 else comma
            continue
        params: list[tuple[str, str]] = []
        token68: str | None = None
        after_scheme = _skip_spaces(value, pos)
        comma = value.find(",", after_scheme)
        if _TOKEN68_RE.fullmatch(value[after_scheme : n if comma < 0 else comma].rstrip(" \t")):
            first = None  # "NTLM TlRM...==": a token68 whose padding looks like "name="
        else:
            first = _read_param(value, after_scheme)
        if first is None and after_scheme < n and value[after_scheme] not in ",":
            # token68 (e.g. "Negotiate YII..."): up to the next comma.
            comma = value.find(",", after_scheme)
            end = n if comma < 0 else comma
            token68 = value[after_scheme:end].strip() or None
            pos = end
        while first is not None:
            name, pvalue, pos = first
            params.append((name, pvalue))
            # After a comma comes another parameter of this challenge or the next challenge's scheme.
            nxt = pos + 1 if pos < n else n
            while nxt < n and value[nxt] in " \t,":
                nxt += 1
            first = _read_param(value, nxt) if nxt < n else None
            if first is None:
                pos = nxt
        challenges.append(Challenge(scheme, tuple(params), token68))
    return tuple(challenges)


_URL_USERINFO_RE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@]*@")
# Password parameters in a path or query: Xiongmai puts "user=admin&password=..." in RTSP paths and some
# CGI APIs take "?password=" in HTTP. ("auth=" stays: CVE-2017-7921's fixed token is a detection feature.)
_URL_PASSWORD_RE: Final = re.compile(r"(?i)((?:^|[/?&;])(?:password|passwd|pwd|pass)=)[^&;/?#\s]*")


def redact_url(url: str) -> str:
    """``rtsp://admin:pw@h/user=admin&password=pw&ch=1`` -> ``rtsp://h/user=admin&password=***&ch=1``."""
    if "@" not in url and "=" not in url:
        return url  # neither pattern can match: most targets, at no regex cost
    url = _URL_USERINFO_RE.sub(r"\1", url, count=1)
    return _URL_PASSWORD_RE.sub(r"\1***", url)


def parse_content_length(text: str, protocol: str) -> int:
    """One stripped ``Content-Length`` value: ASCII digits, at most 15 of them (no sign, no list)."""
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise AnalyzerError(protocol, f"invalid Content-Length {text[:20]!r}")
    return int(text)


def _content_length(headers: Headers, protocol: str) -> int | None:
    values = headers.get_all("content-length")
    if not values:
        return None
    # Repeated fields (or "10, 10") are allowed when they agree (RFC 9110 8.6).
    parts = {p.strip() for v in values for p in v.split(",")}
    if len(parts) != 1:
        raise AnalyzerError(protocol, f"conflicting Content-Length values {sorted(parts)[:4]}")
    return parse_content_length(parts.pop(), protocol)


def _is_chunked(headers: Headers) -> bool:
    codings = [c.strip().lower() for v in headers.get_all("transfer-encoding") for c in v.split(",")]
    return bool(codings) and codings[-1] == "chunked"


def authorization_scheme(value: str | None) -> str | None:
    """The scheme of an ``Authorization`` value: ``Digest username=...`` -> ``Digest`` (no credentials)."""
    if value is None:
        return None
    scheme = value.strip().split(" ", 1)[0]
    return scheme or None


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def challenges_of(headers: Headers) -> tuple[Challenge, ...]:
    """The challenges of every ``WWW-Authenticate`` field, in order."""
    values = headers.get_all("www-authenticate")
    if not values:
        return ()
    return tuple(c for v in values for c in parse_challenges(v))


def first_realm(challenges: tuple[Challenge, ...]) -> str | None:
    """The realm of the first challenge that has one."""
    return next((c.realm for c in challenges if c.realm is not None), None)


def safe_headers(headers: Headers) -> Headers:
    """``headers`` without the fields whose values are credentials."""
    if not headers.has_any(SENSITIVE_FIELDS):
        return headers  # the usual message: nothing to drop, no copy
    return Headers(tuple((n, v) for n, v in headers.fields if n.lower() not in SENSITIVE_FIELDS))


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP/1.x request head. ``complete`` is False when the segment ended inside the head."""

    method: str
    target: str
    version: str
    headers: Headers
    host: str | None
    user_agent: str | None
    soap_action: str | None
    content_length: int | None
    chunked: bool
    authorization_scheme: str | None
    head_length: int
    complete: bool
    login: Login | None = None
    """The credentials the request carried, reduced (monitor/analyzers/logins.py): never the password."""
    content_type: str | None = None
    body: bytes = field(default=b"", repr=False)
    """The start of the body, when the stream parser keeps bodies (``keep_body``)."""

    @classmethod
    def parse(cls, data: bytes) -> HttpRequest:
        """Parse the request head at the start of ``data``."""
        return cls.from_head(split_head(data, PROTOCOL))

    @classmethod
    def from_head(cls, head: MessageHead) -> HttpRequest:
        """Build a request from a split head (raises :class:`AnalyzerError` on a bad request line)."""
        method, target, version = parse_request_line(head.start_line, PROTOCOL, "HTTP")
        h = head.headers
        return cls(
            method=method,
            target=redact_url(target),
            version=version,
            headers=safe_headers(h),
            host=h.get("host"),
            user_agent=h.get("user-agent"),
            soap_action=_unquote(h.get("soapaction")),
            content_length=_content_length(h, PROTOCOL),
            chunked=_is_chunked(h),
            authorization_scheme=authorization_scheme(h.get("authorization")),
            head_length=head.length,
            complete=head.complete,
            login=from_authorization(h.get("authorization")),
            content_type=h.get("content-type"),
        )


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP/1.x response head; ``challenges`` come from every ``WWW-Authenticate`` field."""

    version: str
    status: int
    reason: str
    headers: Headers
    server: str | None
    challenges: tuple[Challenge, ...]
    content_length: int | None
    chunked: bool
    head_length: int
    complete: bool
    content_type: str | None = None
    body: bytes = field(default=b"", repr=False)
    """The start of the body, when the stream parser keeps bodies (``keep_body``)."""

    @property
    def realm(self) -> str | None:
        """The realm of the first challenge that has one."""
        return first_realm(self.challenges)

    @property
    def stale(self) -> bool:
        """A Digest challenge saying the client's nonce went stale (a new nonce, not a refusal)."""
        return any(v.lower() == "true" for c in self.challenges for n, v in c.params if n == "stale")

    @classmethod
    def parse(cls, data: bytes) -> HttpResponse:
        """Parse the response head at the start of ``data``."""
        return cls.from_head(split_head(data, PROTOCOL))

    @classmethod
    def from_head(cls, head: MessageHead) -> HttpResponse:
        """Build a response from a split head (raises :class:`AnalyzerError` on a bad status line)."""
        version, status, reason = parse_status_line(head.start_line, PROTOCOL, b"HTTP")
        h = head.headers
        return cls(
            version=version,
            status=status,
            reason=reason,
            headers=safe_headers(h),
            server=h.get("server"),
            challenges=challenges_of(h),
            content_length=_content_length(h, PROTOCOL),
            chunked=_is_chunked(h),
            head_length=head.length,
            complete=head.complete,
            content_type=h.get("content-type"),
        )


def parse_request_line(line: bytes, protocol: str, proto_name: str) -> tuple[str, str, str]:
    """(method, target, version) of ``METHOD SP target SP NAME/d.d``; the target may hold spaces."""
    method_b, sp, rest = line.partition(b" ")
    target_b, sp2, version_b = rest.rpartition(b" ")
    if not sp or not sp2 or not target_b.strip(b" "):
        raise AnalyzerError(protocol, f"not a request line: {line[:60]!r}")
    if _TOKEN_RE.fullmatch(method_b) is None:
        raise AnalyzerError(protocol, f"invalid method {method_b[:20]!r}")
    version = version_b.decode("latin-1")
    m = _VERSION_RE.fullmatch(version)
    if m is None or m.group(1) != proto_name:
        raise AnalyzerError(protocol, f"invalid protocol version {version_b[:20]!r}")
    if _CTL_RE.search(target_b) is not None:
        raise AnalyzerError(protocol, "control character in the request target")
    return method_b.decode("ascii"), target_b.strip(b" ").decode("latin-1"), version


def parse_status_line(line: bytes, protocol: str, proto_name: bytes) -> tuple[str, int, str]:
    """(version, status, reason) of ``NAME/d.d SP ddd [SP reason]``."""
    if not line.startswith(proto_name + b"/"):
        raise AnalyzerError(protocol, f"not a status line: {line[:60]!r}")
    m = _STATUS_RE.fullmatch(b"HTTP" + line[len(proto_name) :])
    if m is None:
        raise AnalyzerError(protocol, f"invalid status line: {line[:60]!r}")
    reason = (m.group(4) or b"").strip()
    if _CTL_RE.search(reason) is not None:
        raise AnalyzerError(protocol, "control character in the reason phrase")
    version = f"{proto_name.decode('ascii')}/{m.group(1).decode()}.{m.group(2).decode()}"
    return version, int(m.group(3)), reason.decode("latin-1")


def parse(data: bytes) -> HttpRequest | HttpResponse:
    """The request or response head at the start of one segment (``complete`` says if it ended)."""
    return parse_from_head(split_head(data, PROTOCOL))


def parse_from_head(head: MessageHead) -> HttpRequest | HttpResponse:
    """A request or response from a split head."""
    if head.start_line.startswith(b"HTTP/"):
        return HttpResponse.from_head(head)
    return HttpRequest.from_head(head)


#: Where HTTP is expected: tried first on these ports (then by content anywhere).
TCP_PORTS: Final = (80, 8080, 8000, 8666, 49152)

#: The label of an RTSP session tunnelled in HTTP (``rtsp_tunnel.py``: it reads the connection as HTTP first).
RTSP_TUNNEL_LABEL: Final = "rtsp-http"
# An RTSP session tunnelled in HTTP (Apple's QuickTime tunnelling, which live555, VLC, FFmpeg and camera
# web servers implement) is two connections: a GET whose answer carries the RTSP answers and the interleaved
# media, and a POST whose body carries the requests in base64 (both typed application/x-rtsp-tunnelled),
# paired by their x-sessioncookie header.
_SESSION_COOKIE_RE: Final = re.compile(rb"(?i)\nx-sessioncookie[ \t]*:")


@dataclass(frozen=True, slots=True)
class TunnelHead:
    """The request that opens one half of an RTSP session tunnelled in HTTP."""

    method: str
    """``GET`` (the answers' half) or ``POST`` (the requests' half)."""
    cookie: str
    """The ``x-sessioncookie`` value, the same in both halves."""
    length: int
    """Bytes of the head, leading empty lines included: the tunnel starts after them."""


def tunnel_head(data: bytes) -> TunnelHead | None:
    """The GET or POST with an ``x-sessioncookie`` at the start of ``data``, its head complete; else None.
    The cookie is what servers go by (live555 opens a tunnel half for any GET or POST that has one,
    whatever its ``Accept`` or ``Content-Type``). Cheap on anything else: one search of ``MAX_HEAD`` bytes."""
    if _SESSION_COOKIE_RE.search(data, 0, MAX_HEAD) is None:
        return None
    start = _skip_empty_lines(data)
    try:
        head = split_head(data[start:], PROTOCOL, MAX_HEAD, lenient=True)
        method, _, _ = parse_request_line(head.start_line, PROTOCOL, "HTTP")
    except AnalyzerError:
        return None
    cookie = head.headers.get("x-sessioncookie")
    if not head.complete or not cookie:
        return None
    method = method.upper()
    if method not in ("GET", "POST"):
        return None
    return TunnelHead(method, cookie, start + head.length)


def _skip_empty_lines(data: bytes) -> int:
    """Where ``data`` starts past the empty lines before it (RFC 9112 2.2: a server ignores them)."""
    m = _EMPTY_LINES_RE.match(data, 0, MAX_HEAD)
    return m.end() if m is not None else 0


def _may_start(data: bytes) -> bool:
    """Whether ``data`` is the beginning of what :func:`looks_like` accepts (a method, ``HTTP/1.``) that
    does not say yet whether it is one: cut in tiny pieces, or a request line RTSP shares cut before its
    version."""
    data = data[_skip_empty_lines(data) :]
    if b"\n" in data:
        return False
    if len(data) < 16 and any(
        start.startswith(data) or data.startswith(start) for start in (*_LOOKS_LIKE_REQUEST, b"HTTP/1.")
    ):
        return True
    return data.startswith(_SHARED_WITH_RTSP) and len(data) < MAX_HEAD


def looks_like(payload: bytes) -> bool:
    """True when ``payload`` starts with a request line of a usual method or an ``HTTP/1.x`` status line,
    after any empty lines (RFC 9112 2.2).

    A complete request line must end in ``HTTP/1.0`` or ``HTTP/1.1``: RTSP shares the methods (OPTIONS,
    GET...) and is recognised by its own version on any port, HTTP's included. A request line cut before
    its end is claimed on its method, unless RTSP has that method too."""
    if payload.startswith(_LINE_ENDS):
        payload = payload[_skip_empty_lines(payload) :]  # (the usual payload starts at once: no copy)
    if payload.startswith(b"HTTP/1.") and len(payload) >= 9:
        return payload[7:8].isdigit() and payload[8:9] == b" "
    if not payload.startswith(_LOOKS_LIKE_REQUEST):
        # A method in another case ("put"): servers such as GoAhead upper-case it, so an exploit may be sent
        # that way. Only a whole request line with its HTTP version says so.
        if not payload[:8].upper().startswith(_LOOKS_LIKE_REQUEST):
            return False
        eol = payload.find(b"\n", 0, MAX_HEAD)
        return eol >= 0 and payload[:eol].rstrip(b"\r").endswith((b" HTTP/1.1", b" HTTP/1.0"))
    eol = payload.find(b"\n", 0, MAX_HEAD)
    if eol < 0:
        # A request line longer than this segment: its method says enough, unless RTSP has it too (an
        # RTSP request cut before "RTSP/1.0" on its own port must not be labelled http).
        return not payload.startswith(_SHARED_WITH_RTSP)
    return payload[:eol].rstrip(b"\r").endswith((b" HTTP/1.1", b" HTTP/1.0"))


def _request_line_at(data: bytes, pos: int, eol: int) -> bool:
    """Whether the line ``data[pos:eol]`` is an HTTP request line (any method token, as servers take)."""
    if _REQUEST_LINE_RE.match(data, pos, eol + 1) is None:
        return False  # most lines of a body: no exception raised and caught
    try:
        parse_request_line(data[pos:eol].removesuffix(b"\r"), PROTOCOL, "HTTP")
    except AnalyzerError:
        return False
    return True


def _valid_start_line(line: bytes) -> bool:
    try:
        if line.startswith(b"HTTP/"):
            parse_status_line(line, PROTOCOL, b"HTTP")
        else:
            parse_request_line(line, PROTOCOL, "HTTP")
    except AnalyzerError:
        return False
    return True


def _lenient_head(data: bytes, max_head: int) -> MessageHead | None:
    """The head at the start of ``data`` read as a lenient server reads it (bad field lines left out,
    the smallest valid ``Content-Length``), or None when its start line is not one."""
    eol = data.find(b"\n", 0, max_head)
    if eol < 0 or not _valid_start_line(data[:eol].removesuffix(b"\r")):
        return None
    head = split_head(data, PROTOCOL, max_head, lenient=True)
    h = head.headers
    if "content-length" not in h.names:
        return head
    # Conflicting or malformed lengths: the smallest valid one, so that more of what follows is read as
    # the next message (a request hidden there is seen; garbage is dropped line by line).
    lengths = [
        int(p)
        for v in h.get_all("content-length")
        for p in (q.strip() for q in v.split(","))
        if p.isascii() and p.isdigit() and len(p) <= 15
    ]
    kept = [(n, v) for n, v in h.fields if n.lower() != "content-length"]
    if lengths:
        kept.append(("Content-Length", str(min(lengths))))
    return MessageHead(head.start_line, Headers(tuple(kept)), head.length, head.complete)


def _dechunk(raw: bytes) -> bytes | None:
    """The data of the chunks at the start of ``raw`` (the last one may be cut), or None when ``raw``
    does not start with a chunk."""
    out = bytearray()
    pos = 0
    n = len(raw)
    while pos < n:
        eol = raw.find(b"\n", pos, pos + _MAX_CHUNK_LINE)
        size_text = raw[pos:eol].split(b";", 1)[0].strip() if eol >= 0 else b""
        if not size_text or len(size_text) > 15 or _HEX_RE.fullmatch(size_text) is None:
            break
        size = int(size_text, 16)
        if size == 0:
            return bytes(out)
        out += raw[eol + 1 : eol + 1 + size]
        pos = eol + 1 + size + 2
    return bytes(out) if pos else None


# Stream parser states.
_HEAD: Final = 0
_BODY: Final = 1  # fixed-length body: skip `_remaining` bytes
_CHUNK_SIZE: Final = 2
_CHUNK_DATA: Final = 3  # chunk data plus its CRLF: skip `_remaining` bytes
_TRAILERS: Final = 4
_OPAQUE: Final = 5  # the rest of the connection is not HTTP messages (body until close, upgrade, tunnel)
_SKIP_LINE: Final = 6  # dropping a line too long to start a message, up to its end
_SCAN: Final = 7  # a body servers may not read (see _request_framing): `_remaining` bytes, read by lines

_EMPTY_LINES_RE: Final = re.compile(rb"[\r\n]+")
_LINE_ENDS: Final = (b"\r", b"\n")
_HEX_RE: Final = re.compile(rb"[0-9A-Fa-f]+")
# What a start line can begin with: a token (a method) then a space, or "HTTP/d.d" then a space. A line
# whose start does not match cannot become a message however it ends, so it is dropped at once.
_START_CHARS: Final = rb"!#$%&'*+\-./0-9A-Z^_`a-z|~"
_START_PREFIX_RE: Final = re.compile(rb"[" + _START_CHARS + rb"]*(?: |\r?\Z)")
# Whole lines that may be start lines: a superset of what parse_request_line and parse_status_line take
# (so a line these do not match would be dropped by the slow path too), found in C past garbage.
_TOKEN_CHARS: Final = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_REQUEST_LINE: Final = rb"[" + _TOKEN_CHARS + rb"]+ [^\r\n]* HTTP/[0-9]\.[0-9]\r?\n"
_REQUEST_LINE_RE: Final = re.compile(_REQUEST_LINE)
_NEXT_REQUEST_LINE_RE: Final = re.compile(rb"(?m)^" + _REQUEST_LINE)
_NEXT_START_LINE_RE: Final = re.compile(
    rb"(?m)^(?:" + _REQUEST_LINE + rb"|HTTP/[0-9]\.[0-9] [0-9]{3}(?: [^\n]*)?\r?\n)"
)
# Requests whose body servers commonly do not read (many embedded servers read Content-Length only for
# POST and PUT): a body there may be the next request (a "CL.0" desync).
_BODYLESS_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
# RTSP's methods that HTTP's sniffer knows too (rtsp.py imports this module, so they are listed here;
# tests check them against rtsp._METHODS).
_SHARED_WITH_RTSP: Final = (b"OPTIONS ",)
#: Requests whose methods the answering side keeps, in order, to frame the answers (pipelining depth).
MAX_ASKED: Final = 32


class HttpStreamParser:
    """Follows one direction of an HTTP/1.x connection and returns each message head as it completes.

    Sans-I/O: feed it the direction's TCP payloads in order. Bodies are skipped (``Content-Length`` and
    chunked framing are followed); at most ``max_buffer`` bytes of an unfinished head or chunk line are
    kept. A response without a length runs to the end of the connection, and so does anything after a
    ``101`` or a ``2xx`` to CONNECT: the parser then only counts bytes. Answers are framed by the request
    they answer (RFC 9112 6.3: no body to HEAD, 1xx, 204, 304) when the requests' parser has this one as
    its :attr:`peer` (or the caller calls :meth:`expect_answer`).

    Malformed input never stops it: a head with bad field lines is read as a lenient server reads it
    (those lines left out) and returned; a line that cannot start a message is dropped, and so is what
    follows until one can. A request whose body some servers read and others do not (both
    ``Transfer-Encoding`` and ``Content-Length``, a body to GET, a malformed head) has its body read line
    by line: a request line there is taken as the next request. ``error`` keeps the last such problem,
    ``bad_messages`` counts them, ``ignored_bytes`` the bytes dropped.

    With ``keep_body`` the start of each body (that many bytes at most, chunks decoded) comes with its
    message (``body``): a message with a body is then returned once that much of it arrived or the body
    ended, a response without a length at once with what the same segment holds of it.
    """

    # One per direction of every HTTP connection: slots keep each at a third of a dict-backed object.
    __slots__ = (
        "_asked", "_body", "_buf", "_dechunk", "_held", "_line_start", "_remaining", "_state",
        "bad_messages", "body_bytes", "error", "handed", "ignored_bytes", "keep_body", "max_buffer",
        "messages", "peer",
    )  # fmt: skip

    def __init__(self, max_buffer: int = MAX_HEAD, keep_body: int = 0) -> None:
        if max_buffer < 64:
            raise ValueError("max_buffer must be >= 64")
        if keep_body < 0:
            raise ValueError("keep_body must be >= 0")
        self.max_buffer = max_buffer
        self.keep_body = keep_body
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self._line_start = False
        # The methods of the requests this direction answers, oldest first (made on the first one).
        self._asked: list[str] | None = None
        self.peer: HttpStreamParser | None = None
        """The other direction's parser, told the method of each request this one reads."""
        self.handed: bytes | None = None
        """What was held of a head left, with the segment at hand, to the RTSP tunnel reader."""
        # The message whose body start is being collected, and what was collected (keep_body only).
        self._held: HttpRequest | HttpResponse | None = None
        self._body = bytearray()
        self._dechunk = False  # the held body is raw chunked framing, to decode when released
        self.error: AnalyzerError | None = None
        self.messages = 0
        self.bad_messages = 0
        self.body_bytes = 0
        self.ignored_bytes = 0

    @property
    def opaque(self) -> bool:
        """True once the rest of the stream is not parsed (body until close, upgrade, tunnel)."""
        return self._state == _OPAQUE

    @property
    def buffered(self) -> int:
        """Bytes held for the next segment (never more than ``max_buffer`` plus ``keep_body``)."""
        return len(self._buf) + len(self._body)

    @property
    def skippable(self) -> int:
        """Body bytes still to come that need not be read (the start the message keeps is already
        collected): what :meth:`skip_body` may be given. 0 outside a body."""
        if self._held is not None or self._buf:
            return 0
        if self._state == _BODY:
            return self._remaining
        if self._state == _CHUNK_DATA:
            return self._remaining - 2  # the chunk's CRLF is read: the next size line follows it
        return 0

    def skip_body(self, nbytes: int) -> None:
        """The next ``nbytes`` of the stream (at most :attr:`skippable`) were skipped without being read."""
        if not 0 < nbytes <= self.skippable:
            raise ValueError(f"cannot skip {nbytes} bytes here")
        self._remaining -= nbytes
        self.body_bytes += nbytes

    @property
    def pending(self) -> bytes:
        """The start of a head held for the next segment."""
        return self._buf

    @property
    def between_messages(self) -> bool:
        """What comes next starts a message (no body, no held message or skipped line in the way)."""
        return self._state == _HEAD and self._held is None

    def drop_pending(self) -> None:
        """Forget the start of a head held for the next segment (it was not continued as one)."""
        if self._state == _HEAD:
            self._buf = b""

    def expect_answer(self, method: str) -> None:
        """A request was sent the other way: its answer comes in this direction, in request order."""
        asked = self._asked
        if asked is None:
            asked = self._asked = []
        elif len(asked) >= MAX_ASKED:
            del asked[0]  # answers were not seen (or never sent): the oldest is forgotten
        asked.append(method.upper())  # GoAhead and others take methods in any case

    def expect_no_body(self) -> None:
        """The next response answers a HEAD request: it has no body whatever its length says."""
        self.expect_answer("HEAD")

    def feed(self, segment: bytes) -> list[HttpRequest | HttpResponse]:
        """Take the next payload of this direction; return the message heads it completed. Never raises."""
        if self._state == _OPAQUE:
            self.ignored_bytes += len(segment)
            return []
        data = self._buf + segment if self._buf else segment
        self._buf = b""
        out: list[HttpRequest | HttpResponse] = []
        try:
            pos = self._run(data, out)
        except AnalyzerError as exc:  # not expected (each state resynchronises): drop what is held
            self._release(out)
            self._bad(exc)
            self._state = _SKIP_LINE
            self.ignored_bytes += len(data)
            return out
        rest = len(data) - pos
        if rest > self.max_buffer:  # not expected (each state waits for less): drop the line
            self._release(out)
            self._bad(AnalyzerError(PROTOCOL, f"line longer than {self.max_buffer} bytes"))
            self._state = _SKIP_LINE
            self.ignored_bytes += rest
        elif rest:
            self._buf = data[pos:]
        return out

    def _bad(self, exc: AnalyzerError) -> None:
        self.error = exc.detached()  # no frames: they held the batch, and this parser in a cycle
        self.bad_messages += 1

    def _collect(self, data: bytes, start: int, count: int, out: list[HttpRequest | HttpResponse]) -> None:
        """Body bytes ``data[start:start + count]`` of the held message; release it once it has enough."""
        want = self.keep_body - len(self._body)
        if want > 0 and count > 0:
            self._body += data[start : start + min(count, want)]
        if len(self._body) >= self.keep_body:
            self._release(out)

    def _release(self, out: list[HttpRequest | HttpResponse]) -> None:
        held = self._held
        if held is not None:
            body = bytes(self._body)
            if self._dechunk:
                # Both lengths were sent: a server that follows Transfer-Encoding (RFC 9112 6.1) reads the
                # chunks' data, which the matchers must see joined.
                self._dechunk = False
                decoded = _dechunk(body)
                body = body if decoded is None else decoded
            # The held head is this parser's alone until released: its body is set in place, which costs
            # a tenth of dataclasses.replace on every answer with a body.
            object.__setattr__(held, "body", body)
            out.append(held)
            self._held = None
            self._body = bytearray()

    def _run(self, data: bytes, out: list[HttpRequest | HttpResponse]) -> int:
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state in (_BODY, _CHUNK_DATA):
                take = min(self._remaining, n - pos)
                if self._held is not None:
                    # Chunk data is followed by its CRLF, which is not body.
                    data_left = self._remaining - 2 if state == _CHUNK_DATA else self._remaining
                    self._collect(data, pos, min(take, max(data_left, 0)), out)
                pos += take
                self._remaining -= take
                self.body_bytes += take
                if self._remaining == 0:
                    if state == _BODY:
                        self._state = _HEAD
                        self._release(out)
                    else:
                        self._state = _CHUNK_SIZE
            elif state == _HEAD:
                if data[pos] in b"\r\n":
                    # Empty lines before a message (after a POST body, before a request line) are to be
                    # ignored (RFC 9112 2.2): skipped as one run.
                    m = _EMPTY_LINES_RE.match(data, pos)
                    pos = m.end() if m is not None else pos + 1
                    continue
                end = self._head(data, pos, out)
                if end < 0:
                    return pos  # the head continues in the next segment
                pos = end
                if self._state == _OPAQUE and self._held is not None:
                    # A body without a length: what this segment holds of it is all that will come.
                    self._collect(data, pos, n - pos, out)
                    self._release(out)
            elif state == _SCAN:
                end = self._scan(data, pos, out)
                if end < 0:
                    return pos
                pos = end
            elif state in (_CHUNK_SIZE, _TRAILERS):
                bound = min(_MAX_CHUNK_LINE, self.max_buffer)
                eol = data.find(b"\n", pos, pos + bound)
                if eol < 0 and n - pos < bound:
                    return pos
                line = data[pos:eol] if eol >= 0 else b""
                if state == _TRAILERS:
                    if eol < 0:
                        self._resync(out, "trailer line too long")
                        continue
                    if not line.removesuffix(b"\r"):
                        self._state = _HEAD
                    pos = eol + 1
                    continue
                size_text = line.split(b";", 1)[0].strip()
                if not size_text or len(size_text) > 15 or _HEX_RE.fullmatch(size_text) is None:
                    # Not a chunk: the message ends here, and what follows is read as the next one (a
                    # server that took Content-Length, or none, reads a request there).
                    self._resync(out, f"invalid chunk size {size_text[:20]!r}")
                    continue
                pos = eol + 1
                size = int(size_text, 16)
                if size == 0:
                    self._state = _TRAILERS
                    self._release(out)
                else:
                    self._state = _CHUNK_DATA
                    self._remaining = size + 2  # the data and its CRLF
            elif state == _SKIP_LINE:
                eol = data.find(b"\n", pos)
                if eol < 0:
                    self.ignored_bytes += n - pos
                    return n
                self.ignored_bytes += eol + 1 - pos
                pos = eol + 1
                self._state = _HEAD
            else:  # _OPAQUE reached inside this segment
                self.ignored_bytes += n - pos
                return n
        return pos

    def _resync(self, out: list[HttpRequest | HttpResponse], reason: str) -> None:
        """The body's framing broke: the message ends here and the next head is looked for at this byte."""
        self._bad(AnalyzerError(PROTOCOL, reason))
        self._release(out)
        self._state = _HEAD

    def _head(self, data: bytes, pos: int, out: list[HttpRequest | HttpResponse]) -> int:
        """Read the head at ``pos`` (not an empty line); return where it ends, or -1 to wait for more."""
        n = len(data)
        limit = self.max_buffer
        eol = data.find(b"\n", pos, pos + limit)
        if eol < 0:
            if n - pos < limit and _START_PREFIX_RE.match(data, pos) is not None:
                return -1  # the start line continues in the next segment
            # Longer than a head may be, or no start line can begin so: dropped to its end.
            self._bad(AnalyzerError(PROTOCOL, f"not a start line: {data[pos : pos + 40]!r}"))
            self._state = _SKIP_LINE
            return pos
        lenient = False
        msg: HttpRequest | HttpResponse | None = None
        try:
            head = split_head(data[pos:], PROTOCOL, limit)
            if not head.complete:
                if n - pos < limit:
                    return -1
                raise AnalyzerError(PROTOCOL, f"header block longer than {limit} bytes")
            msg = parse_from_head(head)
        except AnalyzerError as exc:
            salvaged = _lenient_head(data[pos:], limit)
            if salvaged is not None and salvaged.complete:
                with contextlib.suppress(AnalyzerError):  # the start line and the length were checked
                    msg = parse_from_head(salvaged)
                    head = salvaged
            elif salvaged is not None and n - pos < limit:
                return -1  # a field line is bad, but the head goes on in the next segment
            if msg is None:
                self._bad(exc)
                # Not a message (a start line that is not one, a head longer than max_buffer): this line
                # is dropped and so is what follows up to a line that may start one, so a request after
                # garbage is still read. Whole lines are dropped at once; a last line cut by the segment's
                # end is looked at by itself (it may be a start line).
                m = _NEXT_START_LINE_RE.search(data, eol + 1)
                end = m.start() if m is not None else data.rfind(b"\n", eol) + 1
                self.ignored_bytes += end - pos
                return end
            # The message as a lenient server reads it: a later request is not lost to one bad line, and
            # the message itself is matched.
            self._bad(AnalyzerError(PROTOCOL, f"{exc.reason} (read leniently)"))
            lenient = True
        self.messages += 1
        if self.peer is not None and isinstance(msg, HttpRequest):
            self.peer.expect_answer(msg.method)
        body = self._framing(msg, lenient)
        if body and self.keep_body:
            self._held = msg  # returned with the start of its body
            self._body = bytearray()
        else:
            out.append(msg)
        return pos + head.length

    def _scan(self, data: bytes, pos: int, out: list[HttpRequest | HttpResponse]) -> int:
        """Read a body that may hide the next request, up to the next line that could start one; return
        where reading stopped, or -1 to wait for the rest of a line."""
        n = len(data)
        body_end = pos + self._remaining
        if self._line_start:
            eol = data.find(b"\n", pos, pos + self.max_buffer)
            if eol < 0:
                if n - pos < self.max_buffer and _START_PREFIX_RE.match(data, pos) is not None:
                    # A line that may be a request line: decided when it is whole. A line running past
                    # the body leaves the body whole, so a message whose body is all here goes now.
                    if self._held is not None and body_end <= n:
                        self._collect(data, pos, self._remaining, out)
                        self._release(out)
                    return -1
            elif _request_line_at(data, pos, eol):
                # A server that does not read this body reads a request here: so does the parser.
                self._bad(AnalyzerError(PROTOCOL, "a request line in a body servers may not read"))
                if self._held is not None and eol >= body_end:
                    self._collect(data, pos, self._remaining, out)  # as when the line came in pieces
                self._release(out)
                self._state = _HEAD
                return pos
        # Read on to the next line start in the body where a whole request line stands; without one, to
        # the last line start here (that line may be a request line cut by the segment's end).
        limit = min(n, body_end)
        nl = data.find(b"\n", pos, limit)
        if nl < 0:
            stop = limit
            self._line_start = False
        else:
            m = _NEXT_REQUEST_LINE_RE.search(data, nl + 1)
            stop = m.start() if m is not None and m.start() < body_end else data.rfind(b"\n", nl, limit) + 1
            self._line_start = True
        take = stop - pos
        if self._held is not None:
            self._collect(data, pos, take, out)
        self._remaining -= take
        self.body_bytes += take
        if self._remaining == 0:
            self._state = _HEAD
            self._release(out)
        return stop

    def _framing(self, msg: HttpRequest | HttpResponse, lenient: bool) -> bool:
        """Set the state for what follows the head; True when a body follows."""
        if isinstance(msg, HttpRequest):
            return self._request_framing(msg, lenient)
        status = msg.status
        if status < 200 and status != 101:
            return False  # an interim response: the final one follows, answering the same request
        asked = self._asked.pop(0) if self._asked else None
        if status == 101:
            self._state = _OPAQUE
            return False
        if asked == "HEAD" or status in (204, 304):
            return False  # RFC 9112 6.3: no body, whatever Content-Length says (RFC 9110 9.3.2)
        if asked == "CONNECT" and status < 300:
            self._state = _OPAQUE  # a tunnel
            return False
        if msg.chunked:
            self._state = _CHUNK_SIZE
            return True
        if msg.content_length:
            self._state = _BODY
            self._remaining = msg.content_length
            return True
        if msg.content_length is None:
            self._state = _OPAQUE  # no framing: the body runs until the connection closes
            return True
        return False

    def _request_framing(self, msg: HttpRequest, lenient: bool) -> bool:
        length = msg.content_length
        coded = msg.chunked or "transfer-encoding" in msg.headers.names
        if not coded:
            if not length:
                return False  # the usual request: no body
            if lenient:
                return self._start_scan(length)
            if msg.method.upper() in _BODYLESS_METHODS:
                self._start_scan(length)
                return False  # such a body means nothing to the matchers: the request goes at once
            self._state = _BODY
            self._remaining = length
            return True
        if length is None:
            if msg.chunked or any("chunked" in v.lower() for v in msg.headers.get_all("transfer-encoding")):
                # Chunked (or a coding list naming it, as a server searching for "chunked" reads it); a
                # size line that is not one ends the message and is read as a head.
                self._state = _CHUNK_SIZE
                return True
            return False  # a coding without chunked: RFC 9112 6.3 makes it an error; read what follows
        # Both lengths (RFC 9112 6.1: Transfer-Encoding wins, or the request is refused). Embedded servers
        # often read only Content-Length: the body is read by it, line by line, so that a request after
        # the chunks (for a server that follows Transfer-Encoding) is read as the next request; its chunks
        # are decoded for the matchers.
        if not length:
            return False
        self._dechunk = self.keep_body > 0
        return self._start_scan(length)

    def _start_scan(self, length: int) -> bool:
        self._state = _SCAN
        self._remaining = length
        self._line_start = True
        return True


# ------------------------------------------------------------------------------ protocol binding

#: Bytes of each request body the binding keeps for the exploit and login matchers (a SOAP header with its
#: WS-Security token, a JSON login, an injected command), and of each answer (a JSON result, a SOAP fault,
#: command output): an answer is held until that much of its body came, so less is asked of it.
KEEP_BODY: Final = 4096
KEEP_ANSWER: Final = 1024
#: Requests of one connection waiting for their answers (pipelining); more are paired with nothing.
MAX_PENDING: Final = 16
#: Packets more the analyzers read of a connection after each login attempt or refusal (up to
#: ``MAX_EXTENSIONS`` times), so password guessing on one kept-alive connection is seen past the first
#: packets of the flow. Added to the budget, never set: the packets read do not depend on batch sizes.
LOGIN_EXTRA_PACKETS: Final = 6
MAX_EXTENSIONS: Final = 64
#: A request body longer than this past what is kept (an upload: a firmware image) is skipped by the flow
#: table on a connection whose requests are all read (ProtocolSpec.requests): only the next head is shown.
SKIP_BODY: Final = 16384


class _Waiting(NamedTuple):
    """A request waiting for its answer: its AppRequest's fields but the flow."""

    ts_ns: int
    from_src: bool
    method: str
    target: str
    seq: int
    login: Login | None
    params: tuple[tuple[str, str], ...]
    body: bytes

    def request(self, flow: Flow) -> AppRequest:
        """The AppRequest that was reported (equal to it) for the answer to name."""
        return AppRequest(
            self.ts_ns, flow, self.from_src, PROTOCOL, self.method, self.target, self.seq, self.login,
            self.params, self.body,
        )  # fmt: skip


class _Exchanges:
    """Per connection: the requests waiting for their answers, the request count, budget extensions."""

    __slots__ = ("extensions", "pending", "seq")

    def __init__(self) -> None:
        # A list, not a deque(maxlen=...): a deque takes 600 bytes before its first item, and every HTTP
        # flow of a watched device has one (with 16 at most, popping the first is as cheap). Without the
        # flow: this state hangs off the flow, and requests naming it would make a reference cycle per
        # connection left with unanswered requests (answers not seen, or never sent), which only the
        # cycle collector frees (tests/monitor/test_no_cycles.py).
        self.pending: list[_Waiting] = []
        self.seq = 0
        self.extensions = 0

    def extend(self, flow: Flow) -> None:
        if self.extensions < MAX_EXTENSIONS and flow.inspect_left >= 0:
            self.extensions += 1
            flow.inspect_left += LOGIN_EXTRA_PACKETS


_VIDEO_TYPE_RE: Final = re.compile(r"(?i)\s*(?:multipart/x-mixed-replace|video/)")


class _VideoSeen:
    __slots__ = ("reported",)

    def __init__(self) -> None:
        self.reported = False


def _client_parser() -> HttpStreamParser:
    return HttpStreamParser(keep_body=KEEP_BODY)


def _server_parser() -> HttpStreamParser:
    return HttpStreamParser(keep_body=KEEP_ANSWER)


def _request_event(msg: HttpRequest, flow: Flow, from_src: bool, ts: int, seq: int) -> AppRequest:
    """The request as the rules read it: its login (header, WS-Security token or Dahua JSON login)."""
    login = msg.login
    params: tuple[tuple[str, str], ...] = ()
    body = msg.body
    if body:
        if b"UsernameToken" in body and login is None:
            login = from_ws_security(body)
        elif msg.method.upper() == "POST" and (
            # The Dahua JSON-RPC login, routed as the server routes it (an absolute-form target, any
            # spelling of the path: targets.py), or named in the body ("method" may follow long params:
            # JSON member order is free, RFC 8259 4). rpc_login reads only a login.
            b'login"' in body or normal_path(msg.target).lower() == "/rpc2_login"
        ):
            rpc = rpc_login(body)
            if rpc is not None:
                params, rpc_user = rpc
                login = login or rpc_user
    return AppRequest(ts, flow, from_src, PROTOCOL, msg.method, msg.target, seq, login, params, body)


def _outcome(request: AppRequest | None, msg: HttpResponse) -> str | None:
    """What the answer says about the request's login."""
    login = request.login if request is not None else None
    if request is not None and request.param("method") is not None and msg.status == 200:
        return rpc_outcome(msg.body)
    if login is not None and login.scheme == "WS-UsernameToken" and msg.status not in (401, 407):
        if soap_fault_is_auth(msg.body):
            return FAILURE
        return SUCCESS if msg.status == 200 else None
    return http_outcome(login, msg.status, msg.stale)


def _port_mapping(msg: HttpRequest, flow: Flow, from_src: bool, ts: int) -> PortMapping:
    """The port mapping a UPnP request asks for, with its ports when the body was read: the mapping of
    telnet a malware makes is not the vendor's mapping of its SDK port."""
    assert msg.soap_action is not None
    action = _soap_action_name(msg.soap_action)
    soap = upnp.mapping_arguments(msg.body) if msg.body else None
    if soap is None:
        return PortMapping(ts, flow, from_src, action)
    return PortMapping(
        ts, flow, from_src, action, soap.external_port, soap.protocol, soap.internal_client,
        soap.internal_port,
    )  # fmt: skip


def _soap_action_name(soap_action: str) -> str:
    """``"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"`` -> ``AddPortMapping``."""
    return soap_action.strip().strip('"').rsplit("#", 1)[-1]


def request_seq(flow: Flow) -> int:
    """The next number of the connection's requests (``AppRequest.seq``), taken: the RTSP requests tunnelled
    in an HTTP connection are numbered with its HTTP requests, so no two share a number."""
    exchanges = flow_state(flow, PROTOCOL, _Exchanges)
    seq = exchanges.seq
    exchanges.seq += 1
    return seq


def take_handed(flow: Flow, from_src: bool) -> bytes | None:
    """What HTTP held of the head it handed over, with the segment at hand, to the RTSP tunnel reader (``b""``
    when the head is all in that segment); None when it handed nothing over. Taken once."""
    app = flow.app
    parser = app.states.get((PROTOCOL, from_src)) if app is not None else None
    if not isinstance(parser, HttpStreamParser):
        return None
    handed, parser.handed = parser.handed, None
    return handed


def handle_http(
    ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int, *, tunnels: bool = False
) -> bool:
    """The HTTP binding. A connection is handed over to ``rtsp_tunnel.py`` at the request that opens half of
    an RTSP tunnel (that reader reads it as HTTP through this handler, with ``tunnels``)."""
    client = from_src == flow.opener_is_src
    watched = ctx.watched(flow)
    parser = flow_state(
        flow,
        (PROTOCOL, from_src),
        HttpStreamParser,
        (_client_parser if client else _server_parser) if watched else HttpStreamParser,
    )
    if client and parser.peer is None:
        # An answer's framing depends on what it answers (no body to HEAD, a tunnel after CONNECT): the
        # server's parser is told each request's method as the client's parser reads it.
        parser.peer = flow_state(
            flow, (PROTOCOL, not from_src), HttpStreamParser, _server_parser if watched else HttpStreamParser
        )
    if not tunnels and (flow.protocol is None or (client and parser.between_messages)):
        held = parser.pending
        if tunnel_head(held + payload if held else payload) is not None:
            # The connection's first request, or a later one on a kept-alive connection (live555 reads on
            # after an HTTP request): the rest is the tunnel reader's. It gets exactly what was held of the
            # head (nothing of this segment is fed here), and reads the connection as HTTP through this one.
            parser.handed = held
            ctx.handover(flow, RTSP_TUNNEL_LABEL, from_src, payload, ts)
            return True
    if flow.protocol is None and not looks_like(payload):
        held = parser.pending
        start = held + payload if held else payload
        if not held or not looks_like(start):
            if parser.messages or parser.opaque or not _may_start(start):
                parser.drop_pending()  # a start that did not go on as one: the next segment starts afresh
                raise AnalyzerError(PROTOCOL, "not an HTTP message start")
            # A message start cut in tiny segments ("G", "ET", " /"), or an OPTIONS line before its
            # version: kept until it says what it is.
            parser.feed(payload)
            return False
        # The start held so far and this segment make a message start: read on below.
    # Requests and answers as events (logins, exploit shapes) only where a watched device is on the flow:
    # the rules that read them are about watched devices, and the rest of a busy network's HTTP is most
    # of what the analyzers see.
    exchanges = flow_state(flow, PROTOCOL, _Exchanges) if watched else None
    for msg in parser.feed(payload):
        if isinstance(msg, HttpRequest):
            if msg.soap_action and _soap_action_name(msg.soap_action) in upnp.PORT_MAPPING_ACTIONS:
                # Add, AddAny, Delete: not the reads (Get...PortMappingEntry), which change nothing.
                ctx.emit(_port_mapping(msg, flow, from_src, ts))
            if exchanges is None:
                continue
            request = _request_event(msg, flow, from_src, ts, exchanges.seq)
            exchanges.seq += 1
            if len(exchanges.pending) >= MAX_PENDING:
                del exchanges.pending[0]  # the oldest unanswered request pairs with nothing
            exchanges.pending.append(
                _Waiting(ts, from_src, request.method, request.target, request.seq, request.login,
                         request.params, request.body)
            )  # fmt: skip
            ctx.emit(request)
            if request.login is not None:
                exchanges.extend(flow)
            continue
        if msg.server:
            vendor = vendor_from(msg.server, SERVER_VENDORS)
            ctx.fact(flow, from_src, "http_server", msg.server, vendor=vendor, protocol=PROTOCOL)
        for ch in msg.challenges:
            realm_vendor = vendor_from(ch.realm, REALM_VENDORS)
            if ch.realm and realm_vendor:
                ctx.fact(flow, from_src, "realm", ch.realm, vendor=realm_vendor, protocol=PROTOCOL)
        if 200 <= msg.status < 300 and _VIDEO_TYPE_RE.match(msg.headers.get("content-type") or ""):
            # Video over HTTP (MJPEG as multipart/x-mixed-replace, a video file or stream): the camera's video
            # goes to this client (stream_egress.py judges where), once per connection.
            seen = flow_state(flow, (PROTOCOL, "video"), _VideoSeen)
            if not seen.reported:
                seen.reported = True
                ctx.emit(MediaSeen(ts, flow, from_src, PROTOCOL))
        if msg.status < 200 or exchanges is None:
            continue  # an interim answer: the final one answers the request
        pending = exchanges.pending
        # Answers come in request order (RFC 9112 9.3.2); one from the requests' own side pairs with nothing.
        asked = pending.pop(0).request(flow) if pending and pending[0].from_src != from_src else None
        auth = _outcome(asked, msg)
        ctx.emit(AppResponse(ts, flow, from_src, PROTOCOL, msg.status, asked, auth, msg.body))
        if auth == FAILURE or msg.status == 401:
            exchanges.extend(flow)
    if client and exchanges is not None and parser.skippable > SKIP_BODY:
        # The client's requests are all read (request mode): the bulk of an upload's body need not be.
        offer_skip(flow, from_src, parser.skippable, parser.skip_body)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_http,
        tcp_ports=TCP_PORTS,
        sniff=looks_like,
        tcp_guess=10,
        requests=True,
        emits=(PortMapping, AppRequest, AppResponse, MediaSeen),
    ),
)
