"""SSDP (UPnP Device Architecture 1.1/2.0, HTTP over UDP 1900): M-SEARCH, NOTIFY and search responses.

Only the start line and headers are read (header names are case-insensitive; CRLF or bare LF line ends).
`is_igd_search` flags the messages that matter to camwatch: a search for, or an announcement of, an
Internet Gateway Device or its WAN connection services, which is how a camera finds the router it asks
for port mappings (see `monitor.analyzers.upnp`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.analyzers import AnalyzerError
from monitor.events import IgdSearch
from monitor.protocol import Context, ProtocolSpec
from monitor.vendors.fingerprints import SERVER_VENDORS, vendor_from

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL = "ssdp"

MAX_BYTES = 16 * 1024
_MAX_HEADERS = 64

KIND_SEARCH = "search"
KIND_NOTIFY = "notify"
KIND_RESPONSE = "response"

# UPnP IGD device and service types (any version) a client looks for before mapping ports.
_IGD_RE = re.compile(
    r"^urn:schemas-upnp-org:(?:device:(?:InternetGatewayDevice|WANDevice|WANConnectionDevice)"
    r"|service:(?:WANIPConnection|WANPPPConnection|WANIPv6FirewallControl|WANCommonInterfaceConfig))"
    r":\d+$",
    re.IGNORECASE,
)


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def is_igd_type(value: str | None) -> bool:
    """True for an IGD device type or a WAN connection service type URN."""
    return value is not None and _IGD_RE.match(value.strip()) is not None


@dataclass(frozen=True, slots=True)
class SsdpMessage:
    """One SSDP datagram. Header values are None when absent; `headers` keeps all of them in order."""

    kind: str  # "search", "notify" or "response"
    st: str | None
    man: str | None
    mx: int | None
    nt: str | None
    nts: str | None
    usn: str | None
    location: str | None
    server: str | None
    user_agent: str | None
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value)

    @property
    def is_igd_search(self) -> bool:
        """The ST (search/response) or NT (notify) names an Internet Gateway Device or WAN service."""
        return is_igd_type(self.st) or is_igd_type(self.nt)

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive), None when absent."""
        want = name.lower()
        for k, v in self.headers:
            if k == want:
                return v
        return None

    @classmethod
    def parse(cls, data: bytes) -> SsdpMessage:
        """Parse one SSDP datagram; raises AnalyzerError when it is not SSDP."""
        return parse(data)


def _start_kind(line: str) -> str:
    parts = line.split()
    if len(parts) >= 3 and parts[1] == "*" and parts[2].upper().startswith("HTTP/1."):
        method = parts[0].upper()
        if method == "M-SEARCH":
            return KIND_SEARCH
        if method == "NOTIFY":
            return KIND_NOTIFY
    if len(parts) >= 2 and parts[0].upper().startswith("HTTP/1.") and parts[1] == "200":
        return KIND_RESPONSE
    raise _error(f"start line {line[:60]!r} is not M-SEARCH, NOTIFY or an HTTP 200 response")


def parse_headers(lines: list[str], protocol: str) -> tuple[tuple[str, str], ...]:
    """Header lines up to the first empty one, as (lower-case name, stripped value)."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        if not line.strip():
            break
        name, sep, value = line.partition(":")
        # A header name is a token: no inner whitespace ("ST ssdp:all" lacks its colon, it is not "ST ssdp").
        if not sep or not name.strip() or len(name.split()) != 1:
            raise AnalyzerError(protocol, f"malformed header line {line[:60]!r}")
        headers.append((name.strip().lower(), value.strip()))
        if len(headers) > _MAX_HEADERS:
            raise AnalyzerError(protocol, f"more than {_MAX_HEADERS} headers")
    return tuple(headers)


def parse(data: bytes) -> SsdpMessage:
    """Parse an SSDP datagram (start line and headers; any body is ignored)."""
    if len(data) > MAX_BYTES:
        raise _error(f"datagram of {len(data)} bytes exceeds {MAX_BYTES}")
    text = data.decode("utf-8", errors="backslashreplace")
    lines = text.replace("\r\n", "\n").split("\n")
    kind = _start_kind(lines[0])
    headers = parse_headers(lines[1:], PROTOCOL)
    values: dict[str, str] = {}
    for k, v in headers:
        values.setdefault(k, v)
    mx_text = values.get("mx")
    mx = int(mx_text) if mx_text and mx_text.isascii() and mx_text.isdigit() and len(mx_text) <= 6 else None
    msg = SsdpMessage(
        kind=kind,
        st=values.get("st"),
        man=values.get("man"),
        mx=mx,
        nt=values.get("nt"),
        nts=values.get("nts"),
        usn=values.get("usn"),
        location=values.get("location"),
        server=values.get("server"),
        user_agent=values.get("user-agent"),
        headers=headers,
    )
    if kind == KIND_SEARCH and msg.st is None:
        raise _error("M-SEARCH without an ST header")
    if kind == KIND_NOTIFY and msg.nt is None and msg.nts is None:
        raise _error("NOTIFY without NT or NTS")
    if kind == KIND_RESPONSE and msg.st is None and msg.usn is None:
        raise _error("HTTP 200 without ST or USN: not an SSDP search response")
    return msg


_STARTS = (b"M-SEARCH * HTTP/1.1", b"NOTIFY * HTTP/1.1", b"HTTP/1.1 200")


def looks_like(payload: bytes) -> bool:
    """Cheap check: an SSDP start line and an ST, NT or USN header."""
    head = payload[:1024]
    if not any(head[: len(s)].upper() == s for s in _STARTS):
        return False
    low = head.lower()
    return any(h in low for h in (b"\nst:", b"\nnt:", b"\nusn:"))


# ------------------------------------------------------------------------------ protocol binding


def handle_ssdp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = parse(payload)
    if msg.kind == "search" and msg.is_igd_search:
        ctx.emit(IgdSearch(ts, flow, from_src, msg.st))
    vendor = vendor_from(msg.server, SERVER_VENDORS)
    if msg.server and vendor:
        ctx.fact(flow, from_src, "ssdp_server", msg.server, vendor=vendor, protocol="ssdp")
    return True


PROTOCOLS = (
    ProtocolSpec(
        name="ssdp",
        handler=handle_ssdp,
        udp_ports=(1900,),
        sniff=looks_like,
        udp_guess=90,
        control=True,
        emits=(IgdSearch,),
    ),
)
