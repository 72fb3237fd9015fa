"""STUN (RFC 5389/8489, classic RFC 3489) and TURN (RFC 5766/8656) messages, and TURN ChannelData framing.

camwatch reads STUN to see NAT traversal leave a site: who asks a server for its public address (Binding),
who allocates a relay (TURN Allocate), which peers a relay is opened to (CreatePermission, ChannelBind,
Send/Data indications), and what the server answered (XOR-MAPPED-ADDRESS, XOR-RELAYED-ADDRESS).

Wire format (RFC 8489 5): a 20-byte header, type (2 bytes, top two bits zero), length (2 bytes, the bytes
after the header, a multiple of 4), magic cookie 0x2112A442, 96-bit transaction id; then TLV attributes
padded to 4 bytes. RFC 3489 messages have no cookie: those 4 bytes start a 128-bit transaction id. The
type packs a 12-bit method and a 2-bit class (request, indication, success, error).

What is kept: the addresses (XOR ones decoded), SOFTWARE, USERNAME, REALM and the ERROR-CODE reason (texts
capped at 128 characters; none of them is secret in STUN), the NONCE's length only (it is an opaque server
token), LIFETIME, CHANNEL-NUMBER, REQUESTED-TRANSPORT, the size of DATA, whether MESSAGE-INTEGRITY and
FINGERPRINT are present and whether the fingerprint is right. Integrity (HMAC) is not checked: camwatch has
no credentials.

TURN ChannelData (RFC 8656 12.4): channel number 0x4000-0x4FFF (RFC 5766 allowed up to 0x7FFF; both are
accepted), 2-byte length, data; padded to 4 bytes over TCP, optionally over UDP. Over TCP, messages follow
each other with no other framing: :func:`split_stream` cuts a byte stream into them.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from monitor.alerts import endpoint
from monitor.analyzers import AnalyzerError

__all__ = [
    "MAGIC_COOKIE",
    "METHODS",
    "ChannelData",
    "StunAddress",
    "StunMessage",
    "address_value",
    "build",
    "looks_like",
    "looks_like_channel_data",
    "looks_like_stun",
    "parse",
    "split_stream",
]

PROTOCOL: Final = "stun"
MAGIC_COOKIE: Final = 0x2112A442
HEADER_LEN: Final = 20
_COOKIE_BYTES: Final = MAGIC_COOKIE.to_bytes(4, "big")
_FINGERPRINT_XOR: Final = 0x5354554E
TEXT_CAP: Final = 128  # RFC 8489: SOFTWARE, REALM and reason phrases are under 128 characters
_MAX_ATTRS_KEPT: Final = 32

CLASS_REQUEST: Final = "request"
CLASS_INDICATION: Final = "indication"
CLASS_SUCCESS: Final = "success"
CLASS_ERROR: Final = "error"
_CLASSES: Final = (CLASS_REQUEST, CLASS_INDICATION, CLASS_SUCCESS, CLASS_ERROR)
_CLASS_WORDS: Final = {
    CLASS_REQUEST: "Request",
    CLASS_INDICATION: "Indication",
    CLASS_SUCCESS: "Response",
    CLASS_ERROR: "Error",
}

METHOD_BINDING: Final = 0x001
METHODS: Final = {
    0x001: "Binding",
    0x002: "SharedSecret",  # RFC 3489 only
    0x003: "Allocate",
    0x004: "Refresh",
    0x006: "Send",
    0x007: "Data",
    0x008: "CreatePermission",
    0x009: "ChannelBind",
    0x00A: "Connect",  # RFC 6062 (TURN over TCP)
    0x00B: "ConnectionBind",
    0x00C: "ConnectionAttempt",
}
_TURN_METHODS: Final = frozenset(range(0x003, 0x00D))
# RFC 3489 message types: Binding and Shared Secret request/response/error.
_CLASSIC_TYPES: Final = frozenset({0x0001, 0x0101, 0x0111, 0x0002, 0x0102, 0x0112})

# Attribute types (RFC 3489, 5389, 8489, 5766, 8656, 5780, 8445).
A_MAPPED_ADDRESS: Final = 0x0001
A_SOURCE_ADDRESS: Final = 0x0004  # RFC 3489, replaced by RESPONSE-ORIGIN
A_CHANGED_ADDRESS: Final = 0x0005  # RFC 3489, replaced by OTHER-ADDRESS
A_USERNAME: Final = 0x0006
A_MESSAGE_INTEGRITY: Final = 0x0008
A_ERROR_CODE: Final = 0x0009
A_CHANNEL_NUMBER: Final = 0x000C
A_LIFETIME: Final = 0x000D
A_XOR_PEER_ADDRESS: Final = 0x0012
A_DATA: Final = 0x0013
A_REALM: Final = 0x0014
A_NONCE: Final = 0x0015
A_XOR_RELAYED_ADDRESS: Final = 0x0016
A_REQUESTED_TRANSPORT: Final = 0x0019
A_MESSAGE_INTEGRITY_SHA256: Final = 0x001C
A_XOR_MAPPED_ADDRESS: Final = 0x0020
A_XOR_MAPPED_ADDRESS_OLD: Final = 0x8020  # pre-RFC 5389 drafts; still sent by old stacks
A_SOFTWARE: Final = 0x8022
A_FINGERPRINT: Final = 0x8028
A_RESPONSE_ORIGIN: Final = 0x802B
A_OTHER_ADDRESS: Final = 0x802C

_U16: Final = struct.Struct("!H")
_HDR: Final = struct.Struct("!HHI")
_ATTR: Final = struct.Struct("!HH")


def _fail(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


@dataclass(frozen=True, slots=True)
class StunAddress:
    """An address attribute's value (XOR ones already decoded)."""

    ip: str
    port: int

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.ip else 4

    def __str__(self) -> str:
        return endpoint(self.ip, self.port)


def _method(msg_type: int) -> int:
    # M11..M7 are bits 13..9, M6..M4 bits 7..5, M3..M0 bits 3..0 (RFC 8489 5, figure 3).
    return ((msg_type & 0x3E00) >> 2) | ((msg_type & 0x00E0) >> 1) | (msg_type & 0x000F)


def _class(msg_type: int) -> str:
    return _CLASSES[((msg_type >> 7) & 0x2) | ((msg_type >> 4) & 0x1)]


def _address(value: bytes, xor: bytes | None, attr: int) -> StunAddress:
    """Decode a (XOR-)MAPPED-ADDRESS-style value; ``xor`` is cookie + transaction id for XOR attributes."""
    if len(value) < 4:
        raise _fail(f"address attribute 0x{attr:04x} of {len(value)} bytes")
    family = value[1]
    (port,) = _U16.unpack_from(value, 2)
    if family == 0x01:
        size = 4
    elif family == 0x02:
        size = 16
    else:
        raise _fail(f"address attribute 0x{attr:04x} with unknown family {family}")
    if len(value) != 4 + size:
        raise _fail(
            f"address attribute 0x{attr:04x}: family {family} needs {4 + size} bytes, has {len(value)}"
        )
    raw = value[4:]
    if xor is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor, strict=False))
    ip = str(ipaddress.IPv4Address(raw)) if size == 4 else str(ipaddress.IPv6Address(raw))
    return StunAddress(ip, port)


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")[:TEXT_CAP]


def _u32(value: bytes, attr: int) -> int:
    if len(value) != 4:
        raise _fail(f"attribute 0x{attr:04x} should be 4 bytes, has {len(value)}")
    return int.from_bytes(value, "big")


def _walk(data: bytes, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, value offset, value length) of each attribute in data[20:end]; raise if the TLVs do not fit."""
    off = HEADER_LEN
    while off < end:
        if off + 4 > end:
            raise _fail(f"{end - off} stray bytes after the last attribute")
        attr, size = _ATTR.unpack_from(data, off)
        if off + 4 + size > end:
            raise _fail(f"attribute 0x{attr:04x} of {size} bytes runs past the message end")
        yield attr, off + 4, size
        # Values are padded to a multiple of 4; some RFC 3489 stacks omit the padding of the last one.
        off = min(end, off + 4 + ((size + 3) & ~3))


@dataclass(frozen=True, slots=True)
class StunMessage:
    """One STUN/TURN message with the attributes camwatch uses."""

    msg_type: int
    method: int
    message_class: str  # "request", "indication", "success" or "error"
    transaction_id: bytes  # 12 bytes (RFC 5389), 16 for classic RFC 3489
    classic: bool  # no magic cookie: RFC 3489
    length: int  # bytes of attributes (the header's length field)
    attribute_types: tuple[int, ...]  # in order, the first 32
    mapped_address: StunAddress | None = None
    xor_mapped_address: StunAddress | None = None
    xor_peer_addresses: tuple[StunAddress, ...] = ()
    xor_relayed_address: StunAddress | None = None
    response_origin: StunAddress | None = None  # RESPONSE-ORIGIN or classic SOURCE-ADDRESS
    other_address: StunAddress | None = None  # OTHER-ADDRESS or classic CHANGED-ADDRESS
    software: str | None = None
    username: str | None = None  # capped at 128 characters; username_length has the real size
    username_length: int | None = None
    realm: str | None = None
    nonce_length: int | None = None
    lifetime: int | None = None
    error_code: int | None = None
    error_reason: str | None = None
    channel_number: int | None = None
    requested_transport: int | None = None  # IP protocol number: 17 UDP, 6 TCP
    data_length: int | None = None
    message_integrity: bool = False
    fingerprint_ok: bool | None = None  # None when there is no FINGERPRINT

    @property
    def method_name(self) -> str:
        """Binding, Allocate, Refresh, ... or ``0x...`` for an unknown method."""
        return METHODS.get(self.method, f"0x{self.method:03x}")

    @property
    def type_name(self) -> str:
        """E.g. ``Binding Request``, ``Allocate Error``, ``Data Indication``, ``Binding Response``."""
        return f"{self.method_name} {_CLASS_WORDS[self.message_class]}"

    @property
    def is_turn(self) -> bool:
        """True for TURN methods (Allocate, Refresh, Send, Data, CreatePermission, ChannelBind, RFC 6062)."""
        return self.method in _TURN_METHODS

    @property
    def public_address(self) -> StunAddress | None:
        """The reflexive address the server reports: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS."""
        return self.xor_mapped_address or self.mapped_address

    @classmethod
    def parse(cls, data: bytes) -> StunMessage:
        """Parse one STUN message that fills ``data`` exactly; raise AnalyzerError otherwise."""
        if len(data) < HEADER_LEN:
            raise _fail(f"{len(data)} bytes, shorter than the 20-byte header")
        msg_type, length, cookie = _HDR.unpack_from(data)
        if msg_type & 0xC000:
            raise _fail(f"message type 0x{msg_type:04x} has its top two bits set")
        if HEADER_LEN + length != len(data):
            raise _fail(
                f"length field says {length} bytes of attributes, datagram has {len(data) - HEADER_LEN}"
            )
        classic = cookie != MAGIC_COOKIE
        if not classic and length % 4:
            raise _fail(f"length {length} is not a multiple of 4")
        return cls._from_parts(data, msg_type, length, classic)

    @classmethod
    def _from_parts(cls, data: bytes, msg_type: int, length: int, classic: bool) -> StunMessage:
        xor = data[4:20]  # cookie + transaction id: the XOR key of every XOR-*-ADDRESS
        a = _Attrs()
        for attr, voff, size in _walk(data, HEADER_LEN + length):
            a.take(data, attr, voff, size, xor)
        return cls(
            msg_type=msg_type,
            method=_method(msg_type),
            message_class=_class(msg_type),
            transaction_id=bytes(data[4:20] if classic else data[8:20]),
            classic=classic,
            length=length,
            attribute_types=tuple(a.types),
            mapped_address=a.mapped,
            xor_mapped_address=a.xor_mapped,
            xor_peer_addresses=tuple(a.peers),
            xor_relayed_address=a.relayed,
            response_origin=a.origin,
            other_address=a.other,
            software=a.software,
            username=a.username,
            username_length=a.username_length,
            realm=a.realm,
            nonce_length=a.nonce_length,
            lifetime=a.lifetime,
            error_code=a.error_code,
            error_reason=a.error_reason,
            channel_number=a.channel,
            requested_transport=a.transport,
            data_length=a.data_length,
            message_integrity=a.integrity,
            fingerprint_ok=a.fingerprint_ok,
        )


class _Attrs:
    """Attribute values collected while walking a message (a mutable scratch pad for the parser)."""

    __slots__ = (
        "channel",
        "data_length",
        "error_code",
        "error_reason",
        "fingerprint_ok",
        "integrity",
        "lifetime",
        "mapped",
        "nonce_length",
        "origin",
        "other",
        "peers",
        "realm",
        "relayed",
        "software",
        "transport",
        "types",
        "username",
        "username_length",
        "xor_mapped",
    )

    def __init__(self) -> None:
        self.types: list[int] = []
        self.peers: list[StunAddress] = []
        self.mapped: StunAddress | None = None
        self.xor_mapped: StunAddress | None = None
        self.relayed: StunAddress | None = None
        self.origin: StunAddress | None = None
        self.other: StunAddress | None = None
        self.software: str | None = None
        self.username: str | None = None
        self.username_length: int | None = None
        self.realm: str | None = None
        self.nonce_length: int | None = None
        self.lifetime: int | None = None
        self.error_code: int | None = None
        self.error_reason: str | None = None
        self.channel: int | None = None
        self.transport: int | None = None
        self.data_length: int | None = None
        self.integrity = False
        self.fingerprint_ok: bool | None = None

    def take(self, data: bytes, attr: int, voff: int, size: int, xor: bytes) -> None:
        if len(self.types) < _MAX_ATTRS_KEPT:
            self.types.append(attr)
        value = data[voff : voff + size]
        if attr == A_MAPPED_ADDRESS:
            self.mapped = _address(value, None, attr)
        elif attr in (A_XOR_MAPPED_ADDRESS, A_XOR_MAPPED_ADDRESS_OLD):
            addr = _address(value, xor, attr)
            self.xor_mapped = self.xor_mapped or addr
        elif attr == A_XOR_PEER_ADDRESS:
            addr = _address(value, xor, attr)
            if len(self.peers) < _MAX_ATTRS_KEPT:
                self.peers.append(addr)
        elif attr == A_XOR_RELAYED_ADDRESS:
            addr = _address(value, xor, attr)
            self.relayed = self.relayed or addr
        elif attr in (A_RESPONSE_ORIGIN, A_SOURCE_ADDRESS):
            self.origin = _address(value, None, attr)
        elif attr in (A_OTHER_ADDRESS, A_CHANGED_ADDRESS):
            self.other = _address(value, None, attr)
        elif attr == A_SOFTWARE:
            self.software = _text(value)
        elif attr == A_USERNAME:
            self.username, self.username_length = _text(value), size
        elif attr == A_REALM:
            self.realm = _text(value)
        elif attr == A_NONCE:
            self.nonce_length = size
        elif attr == A_LIFETIME:
            self.lifetime = _u32(value, attr)
        elif attr == A_ERROR_CODE:
            if size < 4:
                raise _fail(f"ERROR-CODE of {size} bytes")
            self.error_code = (value[2] & 0x07) * 100 + value[3]
            self.error_reason = _text(value[4:])
        elif attr == A_CHANNEL_NUMBER:
            self.channel = _u32(value, attr) >> 16
        elif attr == A_REQUESTED_TRANSPORT:
            self.transport = _u32(value, attr) >> 24
        elif attr == A_DATA:
            self.data_length = size
        elif attr in (A_MESSAGE_INTEGRITY, A_MESSAGE_INTEGRITY_SHA256):
            self.integrity = True
        elif attr == A_FINGERPRINT:
            # CRC-32 of the message up to this attribute (length field as sent), XOR 0x5354554e.
            crc = zlib.crc32(data[: voff - 4]) ^ _FINGERPRINT_XOR
            self.fingerprint_ok = size == 4 and crc == int.from_bytes(value, "big")


@dataclass(frozen=True, slots=True)
class ChannelData:
    """A TURN ChannelData message: application data relayed on a bound channel."""

    channel: int
    length: int  # bytes of application data
    padding: int  # bytes after the data (0-3)

    @classmethod
    def parse(cls, data: bytes, *, stream: bool = False) -> ChannelData:
        """Parse a ChannelData message filling ``data``; with ``stream`` (TCP/TLS) padding must reach a
        multiple of 4, over UDP 0-3 padding bytes are tolerated. Raise AnalyzerError otherwise."""
        if len(data) < 4:
            raise _fail(f"ChannelData of {len(data)} bytes, shorter than its 4-byte header")
        channel, length = _ATTR.unpack_from(data)
        if not 0x4000 <= channel <= 0x7FFF:
            raise _fail(f"channel number 0x{channel:04x} outside 0x4000-0x7FFF")
        pad = len(data) - 4 - length
        if pad < 0:
            raise _fail(f"ChannelData length {length} runs past the {len(data) - 4} bytes present")
        if pad > 3 or (stream and (4 + length + pad) % 4):
            raise _fail(f"{pad} bytes after ChannelData of length {length}")
        return cls(channel, length, pad)


def parse(data: bytes) -> StunMessage | ChannelData:
    """Parse a STUN message or a ChannelData message (told apart by the first two bits)."""
    if not data:
        raise _fail("empty payload")
    top = data[0] >> 6
    if top == 0:
        return StunMessage.parse(data)
    if top == 1:
        return ChannelData.parse(data)
    raise _fail(f"first byte 0x{data[0]:02x} starts neither a STUN message nor ChannelData")


def address_value(address: StunAddress, transaction_id: bytes | None = None) -> bytes:
    """The value of an address attribute; XOR-encoded (XOR-MAPPED-ADDRESS style) when the 12-byte
    ``transaction_id`` is given, plain (MAPPED-ADDRESS style) otherwise."""
    raw = ipaddress.ip_address(address.ip).packed
    port = address.port
    if transaction_id is not None:
        if len(transaction_id) != 12:
            raise ValueError(f"transaction id of {len(transaction_id)} bytes, 12 needed")
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, _COOKIE_BYTES + transaction_id, strict=False))
    return struct.pack("!BBH", 0, 1 if len(raw) == 4 else 2, port) + raw


def build(
    method: int,
    message_class: str,
    transaction_id: bytes,
    attributes: tuple[tuple[int, bytes], ...] = (),
    *,
    fingerprint: bool = True,
) -> bytes:
    """Encode an RFC 8489 message (magic cookie, 12-byte ``transaction_id``), attributes padded to 4
    bytes, with a FINGERPRINT last unless ``fingerprint`` is False. MESSAGE-INTEGRITY is not computed
    (camwatch holds no credentials); the lab's STUN server and the tests use this."""
    if len(transaction_id) != 12:
        raise ValueError(f"transaction id of {len(transaction_id)} bytes, 12 needed")
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"method 0x{method:x} does not fit in 12 bits")
    if message_class not in _CLASSES:
        raise ValueError(f"message class {message_class!r} is not one of {', '.join(_CLASSES)}")
    cls_bits = _CLASSES.index(message_class)
    msg_type = (
        ((method & 0xF80) << 2) | ((method & 0x070) << 1) | (method & 0x00F)
        | ((cls_bits & 0x2) << 7) | ((cls_bits & 0x1) << 4)
    )  # fmt: skip
    body = b"".join(
        _ATTR.pack(kind, len(value)) + value + bytes(-len(value) % 4) for kind, value in attributes
    )
    if not fingerprint:
        return _HDR.pack(msg_type, len(body), MAGIC_COOKIE) + transaction_id + body
    # The CRC covers the header with the length that already counts the 8-byte FINGERPRINT.
    head = _HDR.pack(msg_type, len(body) + 8, MAGIC_COOKIE) + transaction_id + body
    crc = (zlib.crc32(head) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    return head + _ATTR.pack(A_FINGERPRINT, 4) + crc.to_bytes(4, "big")


def looks_like_stun(payload: bytes) -> bool:
    """Strict check that ``payload`` is one STUN message. RFC 5389/8489: top two bits zero, the magic cookie,
    a length that is a multiple of 4 and matches the datagram, attributes that tile it exactly. RFC 3489
    (no cookie): additionally one of the six classic message types. Never raises."""
    n = len(payload)
    if n < HEADER_LEN or payload[0] & 0xC0:
        return False
    length = (payload[2] << 8) | payload[3]
    if HEADER_LEN + length != n or length % 4:
        return False
    if payload[4:8] != _COOKIE_BYTES and ((payload[0] << 8) | payload[1]) not in _CLASSIC_TYPES:
        return False
    off = HEADER_LEN
    while off < n:
        if off + 4 > n:
            return False
        off += 4 + ((((payload[off + 2] << 8) | payload[off + 3]) + 3) & ~3)
    return off == n


def looks_like(payload: bytes) -> bool:
    """Same as :func:`looks_like_stun`. ChannelData is too thin to recognise out of context."""
    return looks_like_stun(payload)


def looks_like_channel_data(payload: bytes) -> bool:
    """Weak check for UDP ChannelData: a channel number in range and a length that leaves 0-3 bytes of
    padding. Only meaningful on a flow already known to be TURN (after a ChannelBind). Never raises."""
    n = len(payload)
    if n < 4 or not 0x40 <= payload[0] <= 0x7F:
        return False
    return 0 <= n - 4 - ((payload[2] << 8) | payload[3]) <= 3


def split_stream(buffer: bytes) -> tuple[list[StunMessage | ChannelData], int]:
    """Cut a TCP/TLS byte stream into STUN and ChannelData messages (RFC 8489 6.2.2, RFC 8656 12.5).

    Returns the messages and how many bytes they took; an incomplete message at the end is left for the
    caller to complete with more bytes. Raises AnalyzerError when the stream is neither.
    """
    out: list[StunMessage | ChannelData] = []
    off = 0
    while off + 4 <= len(buffer):
        top = buffer[off] >> 6
        (length,) = _U16.unpack_from(buffer, off + 2)
        if top == 0:
            size = HEADER_LEN + length
            if off + size > len(buffer):
                break
            out.append(StunMessage.parse(buffer[off : off + size]))
        elif top == 1:
            size = 4 + ((length + 3) & ~3)
            if off + size > len(buffer):
                break
            out.append(ChannelData.parse(buffer[off : off + size], stream=True))
        else:
            raise _fail(
                f"byte 0x{buffer[off]:02x} at stream offset {off} starts neither STUN nor ChannelData"
            )
        off += size
    return out, off
