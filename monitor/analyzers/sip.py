"""SIP (RFC 3261), read for one thing: a camera registering to a GB/T 28181 video platform.

GB/T 28181 ("public security video surveillance networking": the Chinese national standard every Hikvision,
Dahua, Uniview and Tiandy camera and recorder implements, under "Platform Access") is SIP: the device sends
``REGISTER`` to the platform's SIP server (udp/5060 by default), then a ``MESSAGE`` keep-alive every minute
whose body is MANSCDP XML (``Content-Type: Application/MANSCDP+xml``, ``<CmdType>Keepalive</CmdType>``); the
platform sends ``INVITE`` for live video, and the device then streams it (RTP carrying MPEG-PS) to the
platform's media server. Devices and platforms are named by 20-digit codes (GB/T 28181-2016 Annex D, coding
rule A): an 8-digit centre code (province, city, district, unit), a 2-digit industry code, a 3-digit type code
(111 DVR, 118 NVR, 131 camera, 132 network camera, 200 the central SIP server...), a network digit and a
6-digit serial. A SIP request between two such codes, or carrying MANSCDP, is GB/T 28181; other SIP (a VoIP
phone, a door station's intercom) is labelled ``sip`` and not reported.

Only the start line and a few headers of each message are read (compact forms too: ``f``, ``t``, ``c``); a
flow is read until its first GB/T 28181 request or ``MAX_MESSAGES`` messages, then left alone. Sources:
RFC 3261 §7 and §20, and the 20-digit layout as public GB/T 28181 platforms (Monibuca, wvp-GB28181, SRS)
use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.events import PlatformRegistration
from monitor.protocol import Context, ProtocolSpec, read_message, report_first_per_side

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "sip"
GB28181: Final = "gb28181"
SIP_PORTS: Final = (5060,)
#: Packets read per flow before it is left alone (a registration comes first).
MAX_MESSAGES: Final = 8
MAX_HEAD: Final = 4096
METHODS: Final = frozenset(
    {
        b"REGISTER", b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"MESSAGE", b"SUBSCRIBE", b"NOTIFY",
        b"INFO", b"PRACK", b"UPDATE", b"REFER", b"PUBLISH",
    }
)  # fmt: skip
_STATUS_TOKEN: Final = b"SIP/2.0"
# RFC 3261 §7.3.3 compact header names.
_COMPACT: Final = {"f": "from", "t": "to", "c": "content-type", "i": "call-id", "m": "contact", "v": "via"}
# Request-Line (RFC 3261 §25.1): one space between the parts; some stacks send two, or end lines in LF only.
_REQUEST_RE: Final = re.compile(rb"([A-Z]{3,9}) +(sips?:[^ \r\n]{1,256}) +SIP/2\.0\r?\n", re.IGNORECASE)
_STATUS_RE: Final = re.compile(rb"SIP/2\.0 +([1-6][0-9][0-9])[ \r\n]")
# The user part of a sip: URI (the scheme is case-insensitive): <sip:34020000001320000001@3402000000>.
_USER_RE: Final = re.compile(r"sips?:([^@;>\s]{1,64})@", re.IGNORECASE)
_GB_CODE_RE: Final = re.compile(r"[0-9]{20}")
# The request URI's user, else its host: sip:3402000000@10.0.0.1:5060 or sip:3402000000.
_URI_TARGET_RE: Final = re.compile(r"sips?:(?:([0-9]{10})@|([0-9]{10})(?=$|[:;]))", re.IGNORECASE)
#: GB/T 28181 type codes (the 11th to 13th digits) camwatch names in its messages.
GB_TYPES: Final = {
    "111": "DVR",
    "118": "NVR",
    "131": "camera",
    "132": "network camera",
    "200": "central SIP server",
}


def _gb_code(user: str | None) -> str | None:
    return user if user and _GB_CODE_RE.fullmatch(user) else None


@dataclass(frozen=True, slots=True)
class SipMessage:
    """The start line and the headers camwatch reads of one SIP message."""

    method: str | None  # None for a response
    status: int | None  # None for a request
    uri: str | None
    from_user: str | None
    to_user: str | None
    content_type: str | None
    user_agent: str | None

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        """Parse the head of one SIP message; raises AnalyzerError when it is not SIP."""
        return parse(data)

    @property
    def uri_user(self) -> str | None:
        """The user part of the request URI (the platform's code in a GB/T 28181 REGISTER)."""
        found = _USER_RE.search(self.uri or "")
        return found.group(1) if found else None

    @property
    def peer_code(self) -> str | None:
        """The 20-digit code of whom the request is for: the request URI's user, else the To header's (a
        REGISTER to ``sip:3402000000`` names only the domain, and its To is the registering device)."""
        return _gb_code(self.uri_user) or _gb_code(self.to_user)

    @property
    def gb28181(self) -> bool:
        """A GB/T 28181 request: MANSCDP in its body, or from one 20-digit code to another."""
        if self.method is None:
            return False
        if self.content_type is not None and "manscdp" in self.content_type.lower():
            return True
        sender = _gb_code(self.from_user)
        if sender is None:
            return False
        # A REGISTER names the registering device in From and To: the platform's code is the URI's, or the URI
        # names the GB/T 28181 domain, which is the device code's first ten digits (``sip:3402000000``). One
        # code alone (a VoIP account of 20 digits registering to a provider's domain) is not enough.
        peer = _gb_code(self.uri_user)
        if peer is not None:
            return peer != sender
        target = _URI_TARGET_RE.match(self.uri or "")
        return target is not None and (target.group(1) or target.group(2)) == sender[:10]


def parse(data: bytes) -> SipMessage:
    """Parse the start line and headers of one SIP message (leading CRLFs, RFC 3261 §7.5 keep-alives,
    skipped)."""
    data = data.lstrip(b"\r\n")
    head, sep, _ = data[:MAX_HEAD].replace(b"\r\n", b"\n").partition(b"\n\n")
    if not sep and len(data) > MAX_HEAD:
        raise AnalyzerError(PROTOCOL, f"no end of the headers in the first {MAX_HEAD} bytes")
    method = uri = None
    status = None
    request = _REQUEST_RE.match(head + b"\n")
    if request is not None:
        token = request.group(1).upper()
        if token not in METHODS:
            raise AnalyzerError(PROTOCOL, f"unknown method {request.group(1).decode()!r}")
        method, uri = token.decode(), request.group(2).decode("ascii", "replace")
    else:
        response = _STATUS_RE.match(head + b"\n")
        if response is None:
            raise AnalyzerError(PROTOCOL, "neither a request line nor a SIP/2.0 status line")
        status = int(response.group(1))
    headers: dict[str, str] = {}
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.decode("utf-8", "replace").partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), value.strip())

    def user(header: str) -> str | None:
        found = _USER_RE.search(headers.get(header, ""))
        return found.group(1) if found else None

    return SipMessage(
        method=method,
        status=status,
        uri=uri,
        from_user=user("from"),
        to_user=user("to"),
        content_type=headers.get("content-type"),
        user_agent=headers.get("user-agent"),
    )


def _first_token(payload: bytes) -> bytes:
    return payload.lstrip(b"\r\n")[:12].split(b" ", 1)[0]


def looks_like(payload: bytes) -> bool:
    """A request line ending in ``SIP/2.0`` or a ``SIP/2.0`` status line."""
    token = _first_token(payload)
    if token == _STATUS_TOKEN:
        return True
    return token.upper() in METHODS and b" SIP/2.0" in payload[:300]


def could_start(data: bytes) -> bool:
    """What a TCP stream has sent so far may still be the start of a SIP message (a start line cut by a small
    segment): its first token is, or begins, a method or ``SIP/2.0``."""
    token = _first_token(data)
    if b" " in data.lstrip(b"\r\n")[: len(token) + 1]:
        return token == _STATUS_TOKEN or token.upper() in METHODS
    return any(m.startswith(token.upper()) for m in (*METHODS, _STATUS_TOKEN))


def gb_type(code: str | None) -> str | None:
    """What a 20-digit GB/T 28181 code names (its type digits), when camwatch knows the type."""
    return GB_TYPES.get(code[10:13]) if code and _GB_CODE_RE.fullmatch(code) else None


# ------------------------------------------------------------------------------ protocol binding


def _whole(data: bytes) -> bool:
    return b"\r\n\r\n" in data or b"\n\n" in data.lstrip(b"\r\n")


def handle_sip(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    data = read_message(
        flow, PROTOCOL, from_src, payload, looks_like=looks_like, starts=could_start, whole=_whole,
        limit=MAX_HEAD, budget=MAX_MESSAGES,
    )  # fmt: skip
    if data is None:
        return True
    msg = parse(data)
    event = None
    if msg.gb28181:
        event = PlatformRegistration(
            ts, flow, from_src, GB28181, msg.method or "", msg.from_user, msg.peer_code, None, msg.user_agent,
            None,
        )  # fmt: skip
    report_first_per_side(ctx, flow, PROTOCOL, from_src, event, MAX_MESSAGES)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_sip,
        udp_ports=SIP_PORTS,
        tcp_ports=SIP_PORTS,
        sniff=looks_like,
        udp_guess=140,
        tcp_guess=170,
        control=True,
        emits=(PlatformRegistration,),
    ),
)
