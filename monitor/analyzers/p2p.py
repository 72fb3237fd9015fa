"""Vendor P2P / phone-home protocols of CCTV devices: EZVIZ XML "STUN", Dahua Easy4IP (DHGET) and PTCP,
CS2 Network PPPP.

Each protocol has a frozen dataclass with ``parse(data)`` (raises only :class:`AnalyzerError`),
``looks_like(payload)`` (never raises) and ``summary()``, which gives the common :class:`P2pMessage` the
``p2p.nat_traversal`` detector reports. :func:`identify` tries them all on one datagram and never raises.

What is known about each, and from where, is in each class's docstring; the public sources are
reverse-engineering notes and tools, not vendor specifications, so fields marked tentative may be wrong.
Credentials seen on the wire (Dahua's WSSE digest and nonce, ``DevAuth``, relay tokens) are never kept.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.events import P2pSignal
from monitor.protocol import Context, Handler, ProtocolSpec

if TYPE_CHECKING:
    from monitor.flows import Flow

__all__ = [
    "CS2_PPPP_PORTS",
    "DAHUA_P2P_PORTS",
    "EZVIZ_XML_PORTS",
    "PPPP_MESSAGE_TYPES",
    "Cs2PpppMessage",
    "DahuaP2pMessage",
    "DahuaPtcpPacket",
    "EzvizXmlMessage",
    "P2pMessage",
    "identify",
]

PROTOCOL: Final = "p2p"
_TEXT_CAP: Final = 128


def _fail(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


@dataclass(frozen=True, slots=True)
class P2pMessage:
    """What a vendor P2P message says, in one shape for every protocol.

    ``protocol`` names the signature (``ezviz_xml``, ``dahua_dhget``, ``dahua_ptcp``, ``cs2_pppp``), the same
    name the cloud catalogue uses (``p2p.<protocol>``); ``kind`` is the message kind within it; ``serial``
    is the device serial / DID when the message carries one; ``detail`` holds short printable strings.
    """

    vendor: str
    protocol: str
    kind: str
    serial: str | None
    detail: dict[str, str] = field(default_factory=dict, hash=False)


def _printable(raw: bytes, cap: int = _TEXT_CAP) -> str:
    """Text for a report: decoded, control characters replaced, capped."""
    text = raw[: cap * 4].decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else "\ufffd" for c in text)[:cap]


# --- EZVIZ / Hikvision XML "STUN" ---------------------------------------------------------------------------

EZVIZ_XML_PORTS: Final = frozenset({6002, 6003, 31007})
_XML_NAME: Final = r"[A-Za-z_][\w.\-]{0,63}"
_XML_PROLOG: Final = re.compile(rb"\s*(?:<\?xml[^>]{0,256}\?>\s*)?(?:<!--.{0,1024}?-->\s*)*", re.S)
_XML_ROOT: Final = re.compile(rb"<(" + _XML_NAME.encode() + rb")(?=[\s/>])")
_XML_LEAF: Final = re.compile(rb"<(" + _XML_NAME.encode() + rb")(?:\s[^<>]{0,256})?>([^<>]{0,256})</\1\s*>")
_XML_ATTR: Final = re.compile(rb"(" + _XML_NAME.encode() + rb")\s*=\s*\"([^\"<>]{0,128})\"")
# Element or attribute names that hold a device serial in Hikvision/EZVIZ XML (SADP uses DeviceSN;
# EZVIZ APIs use deviceSerial/subSerial). Compared case-insensitively.
_SERIAL_NAMES: Final = frozenset(
    {
        "serial",
        "serialno",
        "serialnumber",
        "devserial",
        "deviceserial",
        "subserial",
        "sn",
        "devsn",
        "devicesn",
    }
)
_SERIAL_VALUE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{3,63}")
_MAX_XML_ELEMENTS: Final = 16
_MAX_XML: Final = 65535


@dataclass(frozen=True, slots=True)
class EzvizXmlMessage:
    """EZVIZ / Hik-Connect "XML STUN" on UDP 6002, 6003 and 31007.

    Known (Sean Blanchfield, "Deep Dive into the EZVIZ DB1 Doorbell with Home Assistant", 2022,
    seanblanchfield.com/ezviz-db1-doorbell-deepdive-homeassistant; camwatch docs/design.md §7): during
    P2P set-up the device sends "simple XML requests" over UDP to servers on ports 31007, 6002 and 6003
    (31007 usually on the MQTT server's address), and they reply with "short XML responses" holding the
    device's public IP address and port; requests are repeated many times. No public description of the
    element names was found, so this parser only recognises an XML document in a datagram: the root element
    name, up to 16 leaf elements (name, text, each capped) and a serial when an element or attribute with a
    serial-like name (``Serial``, ``DevSerial``, ``SubSerial``, ``SN``, ...) holds an identifier-like value.
    Use it on those ports: on other ports any XML would match.
    """

    root: str
    serial: str | None
    elements: tuple[tuple[str, str], ...]
    declaration: bool  # starts with <?xml ...?>

    @classmethod
    def parse(cls, data: bytes) -> EzvizXmlMessage:
        """Parse an XML datagram; raise AnalyzerError unless it is one root element, closed."""
        if len(data) > _MAX_XML:
            raise _fail(f"{len(data)}-byte XML datagram is larger than a UDP payload")
        body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        prolog = _XML_PROLOG.match(body)
        start = prolog.end() if prolog is not None else 0
        m = _XML_ROOT.match(body, start)
        if m is None:
            raise _fail("not an XML document: no root element")
        root = m.group(1)
        tail = body.rstrip(b" \t\r\n\x00")
        gt = tail.find(b">", m.end())
        # Closed by its end tag, or a lone self-closing root (<Ping/>) that ends the datagram.
        closed = re.search(rb"</" + re.escape(root) + rb"\s*>\Z", tail) is not None or (
            gt == len(tail) - 1 and tail[gt - 1 : gt] == b"/"
        )
        if not closed:
            raise _fail(f"root element <{root.decode('ascii')}> is not closed at the end of the datagram")
        elements: list[tuple[str, str]] = []
        serial: str | None = None
        for leaf in _XML_LEAF.finditer(body, m.end()):
            name = leaf.group(1).decode("ascii")
            text = _printable(leaf.group(2).strip(), 64)
            if len(elements) < _MAX_XML_ELEMENTS:
                elements.append((name, text))
            if serial is None and name.lower() in _SERIAL_NAMES and _SERIAL_VALUE.fullmatch(text):
                serial = text
        if serial is None:
            for attr in _XML_ATTR.finditer(body):
                value = attr.group(2).decode("ascii", errors="replace")
                if attr.group(1).decode("ascii").lower() in _SERIAL_NAMES and _SERIAL_VALUE.fullmatch(value):
                    serial = value
                    break
        return cls(root.decode("ascii"), serial, tuple(elements), b"<?xml" in body[:start])

    @staticmethod
    def looks_like(payload: bytes) -> bool:
        """An XML document: optional declaration, one root element closed at the end. Never raises."""
        head = payload.lstrip(b"\xef\xbb\xbf \t\r\n")[:5]
        if not head.startswith(b"<") or len(payload) > _MAX_XML:
            return False
        try:
            EzvizXmlMessage.parse(payload)
        except AnalyzerError:
            return False
        return True

    def summary(self) -> P2pMessage:
        """The common record: vendor ezviz, protocol ezviz_xml, kind = the root element."""
        detail = {"root": self.root}
        for name, text in self.elements[:8]:
            detail.setdefault(f"xml.{name}", text)
        return P2pMessage("ezviz", "ezviz_xml", self.root, self.serial, detail)


# --- Dahua / Imou Easy4IP: DHGET/DHPOST over UDP ------------------------------------------------------------

DAHUA_P2P_PORTS: Final = frozenset({8800})
_DH_METHODS: Final = (b"DHGET", b"DHPOST", b"NFGET", b"NFPOST")
_DH_REQUEST: Final = re.compile(rb"(DHGET|DHPOST|NFGET|NFPOST) (/[\x21-\x7e]{0,512}) (HTTP/1\.[01])\r?\n")
_DH_STATUS: Final = re.compile(rb"(HTTP/1\.[01]) ([1-5][0-9][0-9])(?: ([\x20-\x7e]{0,128}))?\r?\n")
_DH_HEADER: Final = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z\-]{1,64})[ \t]*:[ \t]*([\x20-\x7e\x80-\xff]{0,1024}?)\r?\n"
)
# Path templates seen in Dahua P2P clients: khoanguyen-3fc/dh-p2p (src/dh.rs) and pabloromeo/dh-p2p
# (REVERSE_ENGINEERING.md). {SN} is the device serial; a token segment is dropped.
_SN: Final = r"([A-Za-z0-9][A-Za-z0-9_\-]{4,63})"
_DH_SERIAL_PATHS: Final = (
    re.compile(rf"/online/p2psrv/{_SN}"),
    re.compile(rf"/probe/device/{_SN}"),
    re.compile(rf"/info/device/{_SN}"),
    re.compile(rf"/device/{_SN}/[a-z\-]+"),
)
_DH_BODY_KEYS: Final = tuple(
    (key, re.compile(rf"<{key}>([^<>]{{1,128}})</{key}>"))
    for key in ("Dev", "US", "Address", "Agent", "PubAddr", "LocalAddr", "version")
)
_MAX_DH_HEADERS: Final = 64
_DH_HEADERS_KEPT: Final = {"cseq": "cseq", "x-version": "x_version", "x-toutype": "x_toutype"}
_MAX_DH: Final = 65535


def _dh_kind(path: str, serial: str | None) -> str:
    """``/online/p2psrv/SN`` -> ``online.p2psrv``; ``/device/SN/p2p-channel`` -> ``device.p2p-channel``;
    ``/relay/start/TOKEN`` -> ``relay.start`` (the token is dropped, not kept)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p and p != serial]
    if parts[:2] == ["relay", "start"]:
        parts = parts[:2]
    return ".".join(parts[:3]) or "root"


@dataclass(frozen=True, slots=True)
class DahuaP2pMessage:
    """Dahua / Imou Easy4IP P2P signalling: HTTP-like requests over UDP 8800 (``www.easy4ipcloud.com``).

    Known (khoanguyen-3fc/dh-p2p, README and src/dh.rs; pabloromeo/dh-p2p, REVERSE_ENGINEERING.md;
    docs/design.md §7): requests are ``DHGET``/``DHPOST`` (newer apps ``NFGET``/``NFPOST``)
    ``<path> HTTP/1.1`` with
    ``CSeq``, ``Authorization: WSSE profile="UsernameToken"`` and ``X-WSSE`` headers and an optional XML
    ``<body>``; answers are ``HTTP/1.1 <code> <reason>`` with an XML body. Paths: ``/probe/p2psrv``,
    ``/online/p2psrv/{SN}``, ``/online/relay``, ``/probe/device/{SN}``, ``/info/device/{SN}``,
    ``/device/{SN}/p2p-channel`` (and ``relay-``, ``local-``, ``tcprelay-channel``), ``/relay/agent``,
    ``/relay/start/{token}``. Kept: method, path (token removed), status, CSeq and version headers, the
    serial, and the address-like body elements (``US``, ``Address``, ``Agent``, ``PubAddr``, ``LocalAddr``,
    ``Dev``). Not kept: the WSSE digest, nonce and username, ``DevAuth``, tokens.
    """

    method: str | None  # None for a response
    path: str | None
    version: str
    status: int | None  # None for a request
    reason: str | None
    headers: tuple[tuple[str, str], ...]  # the kept headers, lower-case names
    serial: str | None
    body_length: int
    body: tuple[tuple[str, str], ...]  # kept body elements

    @classmethod
    def parse(cls, data: bytes) -> DahuaP2pMessage:
        """Parse one request or response; raise AnalyzerError when the start line or headers are malformed."""
        if len(data) > _MAX_DH:
            raise _fail(f"{len(data)}-byte Dahua P2P message is larger than a UDP payload")
        req = _DH_REQUEST.match(data)
        method = path = reason = None
        status: int | None = None
        if req is not None:
            method, path, version = (g.decode("ascii") for g in req.groups())
            off = req.end()
        else:
            res = _DH_STATUS.match(data)
            if res is None:
                raise _fail("no DHGET/DHPOST/NFGET/NFPOST request line or HTTP status line")
            version, status = res.group(1).decode("ascii"), int(res.group(2))
            reason = res.group(3).decode("ascii") if res.group(3) is not None else ""
            off = res.end()
        headers: list[tuple[str, str]] = []
        content_length: int | None = None
        for _ in range(_MAX_DH_HEADERS + 1):
            if data.startswith(b"\r\n", off) or data.startswith(b"\n", off):
                off += 2 if data[off] == 0x0D else 1
                break
            h = _DH_HEADER.match(data, off)
            if h is None:
                if off >= len(data):
                    break  # headers without the blank line: a truncated answer, keep what is there
                raise _fail(f"malformed header line at offset {off}")
            name = h.group(1).decode("ascii").lower()
            if name == "content-length":
                value = h.group(2).strip()
                if not value.isdigit() or len(value) > 7:
                    raise _fail(f"bad Content-Length {_printable(value, 16)!r}")
                content_length = int(value)
            elif name in _DH_HEADERS_KEPT and len(headers) < 8:
                headers.append((name, _printable(h.group(2).strip(), 64)))
            off = h.end()
        else:
            raise _fail(f"more than {_MAX_DH_HEADERS} header lines")
        body = data[off:]
        if content_length is not None and content_length > len(body):
            raise _fail(f"Content-Length {content_length} but {len(body)} body bytes")
        serial: str | None = None
        if path is not None:
            for pattern in _DH_SERIAL_PATHS:
                sm = pattern.match(path)
                if sm is not None:
                    serial = sm.group(1)
                    break
        kept: list[tuple[str, str]] = []
        if body:
            text = body.decode("utf-8", errors="replace")
            for key, pattern in _DH_BODY_KEYS:
                bm = pattern.search(text)
                if bm is not None:
                    kept.append((key, _printable(bm.group(1).strip().encode(), 128)))
            if serial is None:
                serial = next((v for k, v in kept if k == "Dev" and _SERIAL_VALUE.fullmatch(v)), None)
        if path is not None and path.startswith("/relay/start/"):
            path = "/relay/start/{token}"
        return cls(method, path, version, status, reason, tuple(headers), serial, len(body), tuple(kept))

    @staticmethod
    def looks_like(payload: bytes) -> bool:
        """A ``DHGET``/``DHPOST``/``NFGET``/``NFPOST`` request line. Responses look like any HTTP response and
        are only parsed on port 8800. Never raises."""
        return payload.startswith(_DH_METHODS) and _DH_REQUEST.match(payload) is not None

    def summary(self) -> P2pMessage:
        """The common record: vendor dahua, protocol dahua_dhget, kind from the path, or ``response``."""
        detail: dict[str, str] = dict(self.headers)
        if self.method is not None and self.path is not None:
            detail["method"], detail["path"] = self.method, self.path
            kind = _dh_kind(self.path, self.serial)
        else:
            detail["status"] = str(self.status)
            kind = "response"
        detail.update((f"body.{k}", v) for k, v in self.body)
        return P2pMessage("dahua", "dahua_dhget", kind, self.serial, detail)


# --- Dahua PTCP ("PhonyTCP", TCP-like streams in UDP) -------------------------------------------------------

_PTCP: Final = struct.Struct("!4sIIIII")
_PTCP_MAGIC: Final = b"PTCP"


@dataclass(frozen=True, slots=True)
class DahuaPtcpPacket:
    """Dahua PTCP ("PhonyTCP"): TCP-like streams carried in UDP after Easy4IP hole punching or via a relay.

    Layout from khoanguyen-3fc/dh-p2p (src/ptcp.rs, reverse engineered; Dahua publishes nothing): the magic
    ``PTCP``, then five big-endian 32-bit fields named there sent, recv, pid, lmid and rmid (byte counters
    and packet/local/remote ids; meanings tentative), then a body: empty (a bare ack), a payload (first
    byte 0x10, a 32-bit word whose low 16 bits are the data length, a 32-bit realm (the tunnelled
    connection), 32 zero bits, the data) or a command (any other first byte; 0x00030100 is a keep-alive).
    """

    sent: int
    recv: int
    pid: int
    lmid: int
    rmid: int
    body_kind: str  # "empty", "payload" or "command"
    realm: int | None
    data_length: int
    command: int | None  # first byte of a command body

    @classmethod
    def parse(cls, data: bytes) -> DahuaPtcpPacket:
        """Parse one PTCP datagram; raise AnalyzerError if the magic or the body framing is wrong."""
        if len(data) < _PTCP.size:
            raise _fail(f"{len(data)} bytes, shorter than the 24-byte PTCP header")
        magic, sent, recv, pid, lmid, rmid = _PTCP.unpack_from(data)
        if magic != _PTCP_MAGIC:
            raise _fail("no PTCP magic")
        body = data[_PTCP.size :]
        if not body:
            return cls(sent, recv, pid, lmid, rmid, "empty", None, 0, None)
        if body[0] == 0x10:
            if len(body) < 12:
                raise _fail(f"PTCP payload body of {len(body)} bytes, shorter than its 12-byte header")
            word, realm, zero = struct.unpack_from("!III", body)
            if word & 0x00FF0000 or zero != 0 or (word & 0xFFFF) != len(body) - 12:
                raise _fail(f"PTCP payload header 0x{word:08x} does not match {len(body) - 12} data bytes")
            return cls(sent, recv, pid, lmid, rmid, "payload", realm, len(body) - 12, None)
        if len(body) < 4:
            raise _fail(f"PTCP command body of {len(body)} bytes")
        return cls(sent, recv, pid, lmid, rmid, "command", None, len(body), body[0])

    @staticmethod
    def looks_like(payload: bytes) -> bool:
        """The PTCP magic and a consistent body. Never raises."""
        if not payload.startswith(_PTCP_MAGIC):
            return False
        try:
            DahuaPtcpPacket.parse(payload)
        except AnalyzerError:
            return False
        return True

    def summary(self) -> P2pMessage:
        """The common record: vendor dahua, protocol dahua_ptcp, kind ``ptcp.<body kind>``."""
        detail = {"body": self.body_kind, "data_length": str(self.data_length)}
        if self.realm is not None:
            detail["realm"] = f"0x{self.realm:08x}"
        if self.command is not None:
            detail["command"] = f"0x{self.command:02x}"
        return P2pMessage("dahua", "dahua_ptcp", f"ptcp.{self.body_kind}", None, detail)


# --- CS2 Network PPPP ---------------------------------------------------------------------------------------

CS2_PPPP_PORTS: Final = frozenset({32100, 32108})
PPPP_MAGIC: Final = 0xF1
# Message types: pmarrapese/iot p2p/dissector/pppp.fdesc (2020), re-ws.pl "PPPP API: what I know" (2018),
# the Wireshark Lua dissector derived from them, and W. Palant's "An overview of the PPPP protocol for IoT
# cameras" (palant.info, 2025). Where a value has two names (0x41 PUNCH_PKT / PUNCH_PKT_EX) the table
# keeps the first; 0xF9 REPORT_SESSION_READY is from the Lua dissector.
PPPP_MESSAGE_TYPES: Final = {
    0x00: "HELLO",
    0x01: "HELLO_ACK",
    0x02: "HELLO_TO",
    0x03: "HELLO_TO_ACK",
    0x08: "QUERY_DID",
    0x09: "QUERY_DID_ACK",
    0x10: "DEV_LGN",
    0x11: "DEV_LGN_ACK",
    0x12: "DEV_LGN_CRC",
    0x13: "DEV_LGN_ACK_CRC",
    0x14: "DEV_LGN_KEY",
    0x15: "DEV_LGN_ACK_KEY",
    0x16: "DEV_LGN_DSK",
    0x18: "DEV_ONLINE_REQ",
    0x19: "DEV_ONLINE_REQ_ACK",
    0x20: "P2P_REQ",
    0x21: "P2P_REQ_ACK",
    0x26: "P2P_REQ_DSK",
    0x30: "LAN_SEARCH",
    0x31: "LAN_NOTIFY",
    0x32: "LAN_NOTIFY_ACK",
    0x40: "PUNCH_TO",
    0x41: "PUNCH_PKT",
    0x42: "P2P_RDY",
    0x43: "P2P_RDY_ACK",
    0x60: "RS_LGN",
    0x61: "RS_LGN_ACK",
    0x62: "RS_LGN1",
    0x63: "RS_LGN1_ACK",
    0x67: "LIST_REQ1",
    0x68: "LIST_REQ",
    0x69: "LIST_REQ_ACK",
    0x6A: "LIST_REQ_DSK",
    0x70: "RLY_HELLO",
    0x71: "RLY_HELLO_ACK",
    0x72: "RLY_PORT",
    0x73: "RLY_PORT_ACK",
    0x74: "RLY_PORT_KEY",
    0x75: "RLY_PORT_ACK_KEY",
    0x78: "RLY_BYTE_COUNT",
    0x80: "RLY_REQ",
    0x81: "RLY_REQ_ACK",
    0x82: "RLY_TO",
    0x83: "RLY_PKT",
    0x84: "RLY_RDY",
    0x85: "RLY_TO_ACK",
    0x87: "RLY_SERVER_REQ",
    0x90: "SDEV_RUN",
    0x91: "SDEV_LGN",
    0x92: "SDEV_LGN_CRC",
    0x93: "SDEV_LGN_KEY",
    0x94: "SDEV_REPORT",
    0xA0: "CONNECT_REPORT",
    0xA1: "REPORT_REQ",
    0xA2: "REPORT",
    0xD0: "DRW",
    0xD1: "DRW_ACK",
    0xD8: "PSR",
    0xE0: "ALIVE",
    0xE1: "ALIVE_ACK",
    0xF0: "CLOSE",
    0xF4: "MGM_DUMP_LOGIN_DID",
    0xF5: "MGM_DUMP_LOGIN_DID_DETAIL",
    0xF6: "MGM_DUMP_LOGIN_DID_1",
    0xF7: "MGM_LOG_CONTROL",
    0xF8: "MGM_REMOTE_MANAGEMENT",
    0xF9: "REPORT_SESSION_READY",
}
# Offset of the 20-byte device id in the payload of the types that carry one (pppp.fdesc).
_PPPP_DID_AT: Final = {
    t: 0 for t in (0x10, 0x14, 0x18, 0x20, 0x31, 0x32, 0x41, 0x42, 0x60, 0x62, 0x67, 0x74, 0x80, 0x84, 0xF6)
} | {0x83: 4, 0x85: 4}
# Types whose payload is a device id only when exactly 20 bytes long (the ack of the same value differs).
_PPPP_DID_IF_20: Final = frozenset({0x87, 0x91})
# Offset of a 16-byte sockaddr in the payload: HELLO_ACK (our public address), PUNCH_TO (where to punch),
# P2P_REQ (the requester's local address, after the DID), DEV_LGN (after DID, NAT type and API version).
_PPPP_ADDR_AT: Final = {0x01: ("wan_address", 0), 0x40: ("punch_to", 0), 0x20: ("local_address", 20)} | {
    0x10: ("local_address", 24)
}
_DID_PREFIX: Final = re.compile(rb"[A-Z0-9]{1,8}")
_DID_CHECK: Final = re.compile(rb"[A-Za-z0-9]{1,8}")


def _pppp_did(raw: bytes) -> str | None:
    """``PREFIX-NNNNNN-CHECK`` from the 20-byte binary DID (8-byte prefix, 32-bit serial, 8-byte check code,
    both strings NUL-padded), or None when it does not look like one."""
    prefix, check = raw[:8].rstrip(b"\x00"), raw[12:20].rstrip(b"\x00")
    if not _DID_PREFIX.fullmatch(prefix) or not _DID_CHECK.fullmatch(check):
        return None
    number = int.from_bytes(raw[8:12], "big")
    return f"{prefix.decode('ascii')}-{number:06d}-{check.decode('ascii')}"


def _pppp_sockaddr(raw: bytes) -> str | None:
    """PPPP's sockaddr: family 2 (big-endian), port and IPv4 address both little-endian, 8 zero bytes."""
    if raw[:2] not in (b"\x00\x02", b"\x02\x00"):
        return None
    port = int.from_bytes(raw[2:4], "little")
    ip = ".".join(str(b) for b in reversed(raw[4:8]))
    return f"{ip}:{port}"


@dataclass(frozen=True, slots=True)
class Cs2PpppMessage:
    """CS2 Network "PPPP" P2P (also iLnkP2P and other white-label stacks): UDP 32100 to the servers, 32108
    for LAN search and device sessions.

    Framing (re-ws.pl "PPPP API: what I know", 2018; pmarrapese/iot pppp.fdesc, 2020): magic 0xF1, message
    type (one byte, :data:`PPPP_MESSAGE_TYPES`), payload length (big-endian 16 bits), payload. A device id
    (DID) is 20 bytes: an 8-byte prefix, a big-endian 32-bit serial and an 8-byte check code, shown
    ``PREFIX-000123-CHECK``. Addresses are 16-byte sockaddrs with little-endian port and IPv4 address.
    DRW data messages carry ``0xD1``, a channel and a 16-bit index before the (application) data.
    Datagrams "encrypted" with a vendor key (first byte not 0xF1) are not recognised.
    """

    msg_type: int
    length: int
    did: str | None
    address: tuple[str, str] | None  # (role, "ip:port")
    channel: int | None  # DRW / DRW_ACK
    index: int | None  # DRW

    @property
    def type_name(self) -> str:
        """HELLO, PUNCH_PKT, DRW, ... or ``0x..`` for a type not in the table."""
        return PPPP_MESSAGE_TYPES.get(self.msg_type, f"0x{self.msg_type:02x}")

    @classmethod
    def parse(cls, data: bytes) -> Cs2PpppMessage:
        """Parse one PPPP datagram; raise AnalyzerError if the magic or the length is wrong."""
        if len(data) < 4:
            raise _fail(f"{len(data)} bytes, shorter than the 4-byte PPPP header")
        if data[0] != PPPP_MAGIC:
            raise _fail(f"first byte 0x{data[0]:02x}, PPPP starts with 0xF1")
        msg_type = data[1]
        length = (data[2] << 8) | data[3]
        if 4 + length != len(data):
            raise _fail(f"length field says {length} payload bytes, datagram has {len(data) - 4}")
        payload = data[4:]
        did: str | None = None
        at = _PPPP_DID_AT.get(msg_type)
        if at is None and msg_type in _PPPP_DID_IF_20 and length == 20:
            at = 0
        if at is not None and len(payload) >= at + 20:
            did = _pppp_did(payload[at : at + 20])
        address: tuple[str, str] | None = None
        where = _PPPP_ADDR_AT.get(msg_type)
        if where is not None and len(payload) >= where[1] + 16:
            addr = _pppp_sockaddr(payload[where[1] : where[1] + 16])
            address = (where[0], addr) if addr is not None else None
        channel = index = None
        if msg_type in (0xD0, 0xD1, 0xD8) and len(payload) >= 4 and payload[0] in (0xD1, 0xD2):
            channel = payload[1]
            if msg_type != 0xD1:
                index = (payload[2] << 8) | payload[3]
        return cls(msg_type, length, did, address, channel, index)

    @staticmethod
    def looks_like(payload: bytes) -> bool:
        """0xF1, a known message type and a length field that matches the datagram exactly. Never raises."""
        return (
            len(payload) >= 4
            and payload[0] == PPPP_MAGIC
            and payload[1] in PPPP_MESSAGE_TYPES
            and ((payload[2] << 8) | payload[3]) + 4 == len(payload)
        )

    def summary(self) -> P2pMessage:
        """The common record: vendor cs2, protocol cs2_pppp, kind = the message type name in lower case."""
        detail = {"type": self.type_name, "length": str(self.length)}
        if self.address is not None:
            detail[self.address[0]] = self.address[1]
        if self.channel is not None:
            detail["channel"] = str(self.channel)
        if self.index is not None:
            detail["index"] = str(self.index)
        return P2pMessage("cs2", "cs2_pppp", self.type_name.lower(), self.did, detail)


def identify(payload: bytes, sport: int | None = None, dport: int | None = None) -> P2pMessage | None:
    """Recognise a vendor P2P datagram and summarise it; None when it is none of them. Never raises.

    PPPP, DHGET and PTCP are recognised on any port (their framing is distinctive); Dahua answers only
    on UDP 8800 and the EZVIZ XML only on 6002, 6003 and 31007, where a bare XML document or an HTTP-like
    answer is significant.
    """
    ports = {p for p in (sport, dport) if p is not None}
    try:
        if Cs2PpppMessage.looks_like(payload):
            return Cs2PpppMessage.parse(payload).summary()
        if DahuaP2pMessage.looks_like(payload) or (
            ports & DAHUA_P2P_PORTS and payload.startswith(b"HTTP/1.")
        ):
            return DahuaP2pMessage.parse(payload).summary()
        if payload.startswith(_PTCP_MAGIC):
            return DahuaPtcpPacket.parse(payload).summary()
        if ports & EZVIZ_XML_PORTS and EzvizXmlMessage.looks_like(payload):
            return EzvizXmlMessage.parse(payload).summary()
    except AnalyzerError:
        return None
    return None


# ------------------------------------------------------------------------------ protocol binding

# A message of one of these kinds, parsed from a payload; the first parser that accepts it wins.
_Parser = Callable[[bytes], "EzvizXmlMessage | DahuaP2pMessage | DahuaPtcpPacket | Cs2PpppMessage"]


def _handler(*parsers: _Parser) -> Handler:
    def handle(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
        error: AnalyzerError | None = None
        for parse in parsers:
            try:
                msg = parse(payload).summary()
            except AnalyzerError as exc:
                error = exc
                continue
            ctx.emit(P2pSignal(ts, flow, from_src, msg.protocol, msg.vendor, msg.kind, msg.serial))
            return True
        assert error is not None  # at least one parser
        try:
            raise error
        finally:
            error = None  # the frame must not hold the exception that holds the frame (a cycle per packet)

    return handle


def _dahua_looks_like(payload: bytes) -> bool:
    return DahuaP2pMessage.looks_like(payload) or DahuaPtcpPacket.looks_like(payload)


PROTOCOLS = (
    ProtocolSpec(
        name="pppp",
        handler=_handler(Cs2PpppMessage.parse),
        udp_ports=tuple(sorted(CS2_PPPP_PORTS)),
        sniff=Cs2PpppMessage.looks_like,
        udp_guess=60,
        control=True,
        emits=(P2pSignal,),
    ),
    ProtocolSpec(
        name="dahua-p2p",
        handler=_handler(DahuaP2pMessage.parse, DahuaPtcpPacket.parse),
        udp_ports=tuple(sorted(DAHUA_P2P_PORTS)),
        sniff=_dahua_looks_like,
        udp_guess=70,
        control=True,
        emits=(P2pSignal,),
    ),
    ProtocolSpec(
        name="ezviz-p2p",
        handler=_handler(EzvizXmlMessage.parse),
        udp_ports=tuple(sorted(EZVIZ_XML_PORTS)),
        sniff=EzvizXmlMessage.looks_like,
        udp_guess=80,
        control=True,
        emits=(P2pSignal,),
    ),
)
