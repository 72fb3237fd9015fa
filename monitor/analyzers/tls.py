"""TLS handshake metadata: ClientHello (SNI, ALPN, versions), ServerHello, and the server certificate's names.

What camwatch needs from TLS is who a device talks to (the SNI of its ClientHello) and what a device is
(a Hikvision recorder serves a default self-signed certificate with ``O=HIKVISION``). The certificate is
in clear only up to TLS 1.2; in TLS 1.3 it travels encrypted and only the hellos are readable.

Layers: :func:`parse_records` splits TLS records; :func:`parse_handshakes` splits handshake messages;
:class:`ClientHello`, :class:`ServerHello` and :class:`CertificateInfo` parse one message body each;
:class:`TlsStreamParser` follows one direction of a connection, reassembling handshake messages that
span records and segments. The DER walker reads just enough of an X.509 certificate to find the
subject and issuer names; it checks every length against its container and trusts nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.analyzers.reader import ByteReader
from monitor.events import TlsServerName
from monitor.protocol import Context, ProtocolSpec, flow_state
from monitor.vendors.fingerprints import CERT_VENDORS, vendor_from

if TYPE_CHECKING:
    from monitor.flows import Flow

__all__ = [
    "CertificateInfo",
    "ClientHello",
    "DistinguishedName",
    "HandshakeMessage",
    "ServerHello",
    "TlsAlert",
    "TlsMessage",
    "TlsRecord",
    "TlsStreamParser",
    "is_grease",
    "looks_like",
    "parse",
    "parse_handshakes",
    "parse_records",
    "version_name",
]

PROTOCOL: Final = "tls"

CONTENT_CHANGE_CIPHER_SPEC: Final = 20
CONTENT_ALERT: Final = 21
CONTENT_HANDSHAKE: Final = 22
CONTENT_APPLICATION_DATA: Final = 23
CONTENT_HEARTBEAT: Final = 24
_CONTENT_TYPES: Final = frozenset({20, 21, 22, 23, 24})

HS_CLIENT_HELLO: Final = 1
HS_SERVER_HELLO: Final = 2
HS_CERTIFICATE: Final = 11

EXT_SERVER_NAME: Final = 0
EXT_ALPN: Final = 16
EXT_SUPPORTED_VERSIONS: Final = 43

RECORD_HEADER: Final = 5
# RFC 8446 5.2: a TLSCiphertext fragment is at most 2^14 + 256 bytes; TLS 1.2 allowed 2^14 + 2048.
MAX_RECORD: Final = 16384 + 2048
# Handshake messages (a certificate chain, a ClientHello with post-quantum key shares) can span
# several records; beyond this size the stream parser gives up on the message.
MAX_HANDSHAKE: Final = 65536

# HelloRetryRequest is a ServerHello with this fixed random (RFC 8446 4.1.3).
_HRR_RANDOM: Final = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

_VERSION_NAMES: Final = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}


def version_name(version: int) -> str:
    """``0x0303`` -> ``"TLS 1.2"``, ``0x7f12`` -> ``"TLS 1.3 draft 18"``; unknown values as hex."""
    if version >> 8 == 0x7F:
        return f"TLS 1.3 draft {version & 0xFF}"
    return _VERSION_NAMES.get(version, f"0x{version:04x}")


def _is_early_draft(version: int) -> bool:
    # TLS 1.3 drafts before 22 had a ServerHello without session_id and compression_method.
    return version >> 8 == 0x7F and (version & 0xFF) < 22


def is_grease(value: int) -> bool:
    """RFC 8701 GREASE values (0x0A0A, 0x1A1A, ... 0xFAFA), which TLS and DTLS peers offer to be ignored."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


class _Reader(ByteReader):
    """Bounds-checked big-endian reads over ``data[pos:end]``; every overrun is an AnalyzerError."""

    __slots__ = ()
    protocol = PROTOCOL


@dataclass(frozen=True, slots=True)
class TlsRecord:
    """One record: content type, record-layer version and its fragment (still encrypted or not)."""

    content_type: int
    version: int
    fragment: bytes


@dataclass(frozen=True, slots=True)
class TlsAlert:
    """An alert record read in clear (level 1 warning, 2 fatal; RFC 8446 6 descriptions)."""

    level: int
    description: int


@dataclass(frozen=True, slots=True)
class HandshakeMessage:
    """A handshake message whose type camwatch does not parse further."""

    msg_type: int
    length: int


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A ClientHello; ``versions`` is the supported_versions list without GREASE, ``server_name`` the SNI."""

    legacy_version: int
    session_id_length: int
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    server_name: str | None
    alpn: tuple[str, ...]
    versions: tuple[int, ...]
    sslv2: bool = False  # sent in an SSL 2.0-compatible record

    @property
    def max_version(self) -> int:
        """Highest version offered: from supported_versions when present, else the legacy field."""
        return max(self.versions) if self.versions else self.legacy_version

    @classmethod
    def parse(cls, body: bytes) -> ClientHello:
        """Parse a ClientHello body (the handshake message without its 4-byte header)."""
        r = _Reader(body, "ClientHello")
        legacy_version = r.uint(2, "legacy_version")
        r.take(32, "random")
        session_id = r.vector(1, "session_id")
        if session_id.left() > 32:
            raise AnalyzerError(PROTOCOL, f"ClientHello: session_id of {session_id.left()} bytes (max 32)")
        suites_r = r.vector(2, "cipher_suites")
        if suites_r.left() % 2:
            raise AnalyzerError(PROTOCOL, "ClientHello: odd cipher_suites length")
        suites = tuple(suites_r.uint(2, "cipher suite") for _ in range(suites_r.left() // 2))
        r.vector(1, "compression_methods")
        server_name: str | None = None
        alpn: tuple[str, ...] = ()
        versions: tuple[int, ...] = ()
        ext_types: list[int] = []
        if r.left():  # extensions are optional in SSL 3.0 / TLS 1.0 hellos
            exts = r.vector(2, "extensions")
            while exts.left():
                ext_type = exts.uint(2, "extension type")
                ext = exts.vector(2, f"extension {ext_type}")
                ext_types.append(ext_type)
                if ext_type == EXT_SERVER_NAME and ext.left():
                    server_name = _server_name(ext)
                elif ext_type == EXT_ALPN:
                    alpn = _alpn(ext)
                elif ext_type == EXT_SUPPORTED_VERSIONS:
                    vr = ext.vector(1, "supported_versions")
                    if vr.left() % 2:
                        raise AnalyzerError(PROTOCOL, "ClientHello: odd supported_versions length")
                    offered = (vr.uint(2, "version") for _ in range(vr.left() // 2))
                    versions = tuple(v for v in offered if not is_grease(v))
            if r.left():
                raise AnalyzerError(PROTOCOL, f"ClientHello: {r.left()} bytes after the extensions")
        return cls(
            legacy_version=legacy_version,
            session_id_length=session_id.end - session_id.pos,
            cipher_suites=suites,
            extensions=tuple(ext_types),
            server_name=server_name,
            alpn=alpn,
            versions=versions,
        )


def _server_name(ext: _Reader) -> str | None:
    """The host_name entry of a server_name extension (RFC 6066 3)."""
    names = ext.vector(2, "server_name_list")
    host: str | None = None
    while names.left():
        name_type = names.uint(1, "name_type")
        name = names.vector(2, "host_name")
        raw = name.take(name.left(), "host_name")
        if name_type == 0 and host is None:
            if not raw:
                raise AnalyzerError(PROTOCOL, "ClientHello: empty server name")
            # A host name is ASCII (A-labels); anything else is kept readable but escaped. Names compare in
            # lower case and without a final dot (RFC 6066 3 allows none; some clients send one), as the
            # DNS names and the policy's name rules are: "LiteDev.EzvizLife.COM." is litedev.ezvizlife.com.
            host = raw.decode("ascii", "backslashreplace").lower().rstrip(".") or None
            if host is None:
                raise AnalyzerError(PROTOCOL, "ClientHello: server name of dots only")
    return host


def _alpn(ext: _Reader) -> tuple[str, ...]:
    protos = ext.vector(2, "protocol_name_list")
    out: list[str] = []
    while protos.left():
        name = protos.vector(1, "protocol_name")
        if not name.left():
            raise AnalyzerError(PROTOCOL, "empty ALPN protocol name")
        out.append(name.take(name.left(), "protocol_name").decode("ascii", "backslashreplace"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A ServerHello; ``version`` is the negotiated one (supported_versions when present)."""

    legacy_version: int
    version: int
    cipher_suite: int
    extensions: tuple[int, ...]
    alpn: str | None
    hello_retry: bool

    @classmethod
    def parse(cls, body: bytes) -> ServerHello:
        """Parse a ServerHello body (the handshake message without its 4-byte header)."""
        r = _Reader(body, "ServerHello")
        legacy_version = r.uint(2, "legacy_version")
        random = r.take(32, "random")
        draft = _is_early_draft(legacy_version)
        if not draft:
            session_id = r.vector(1, "session_id")
            if session_id.left() > 32:
                raise AnalyzerError(
                    PROTOCOL, f"ServerHello: session_id of {session_id.left()} bytes (max 32)"
                )
        cipher_suite = r.uint(2, "cipher_suite")
        if not draft:
            r.uint(1, "compression_method")
        version = legacy_version
        alpn: str | None = None
        ext_types: list[int] = []
        if r.left():
            exts = r.vector(2, "extensions")
            while exts.left():
                ext_type = exts.uint(2, "extension type")
                ext = exts.vector(2, f"extension {ext_type}")
                ext_types.append(ext_type)
                if ext_type == EXT_SUPPORTED_VERSIONS:
                    version = ext.uint(2, "selected_version")
                elif ext_type == EXT_ALPN:
                    names = _alpn(ext)
                    if len(names) != 1:
                        raise AnalyzerError(PROTOCOL, f"ServerHello: {len(names)} ALPN protocols (must be 1)")
                    alpn = names[0]
            if r.left():
                raise AnalyzerError(PROTOCOL, f"ServerHello: {r.left()} bytes after the extensions")
        return cls(
            legacy_version=legacy_version,
            version=version,
            cipher_suite=cipher_suite,
            extensions=tuple(ext_types),
            alpn=alpn,
            hello_retry=random == _HRR_RANDOM,
        )


# --- DER -------------------------------------------------------------------------------------------

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OID: Final = 0x06
_INTEGER: Final = 0x02
_CONTEXT_0: Final = 0xA0

# Attribute types of a Name that camwatch reports by their short names (RFC 4514 2.3).
_ATTRIBUTE_NAMES: Final = {
    bytes.fromhex("550403"): "CN",
    bytes.fromhex("550405"): "serialNumber",
    bytes.fromhex("550406"): "C",
    bytes.fromhex("550407"): "L",
    bytes.fromhex("550408"): "ST",
    bytes.fromhex("55040a"): "O",
    bytes.fromhex("55040b"): "OU",
    bytes.fromhex("2a864886f70d010901"): "emailAddress",
    bytes.fromhex("0992268993f22c640119"): "DC",
    bytes.fromhex("0992268993f22c640101"): "UID",
}
# DirectoryString and friends: tag -> codec.
_STRING_CODECS: Final = {
    0x0C: "utf-8",  # UTF8String
    0x13: "latin-1",  # PrintableString
    0x14: "latin-1",  # TeletexString (T.61; latin-1 is the usual approximation)
    0x16: "latin-1",  # IA5String
    0x1A: "latin-1",  # VisibleString
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}
_MAX_NAME_ATTRIBUTES: Final = 256  # attributes per Name; certificates have a handful


def _der_item(data: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER item at ``pos``; the item must end by ``end``."""
    if end - pos < 2:
        raise AnalyzerError(PROTOCOL, f"DER {what}: truncated header at offset {pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise AnalyzerError(PROTOCOL, f"DER {what}: multi-byte tag at offset {pos}")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise AnalyzerError(PROTOCOL, f"DER {what}: indefinite length")
    else:
        count = first & 0x7F
        if count > 4:
            raise AnalyzerError(PROTOCOL, f"DER {what}: length of {count} bytes")
        if end - pos < count:
            raise AnalyzerError(PROTOCOL, f"DER {what}: truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise AnalyzerError(PROTOCOL, f"DER {what}: non-minimal length encoding")
        pos += count
    if length > end - pos:
        raise AnalyzerError(PROTOCOL, f"DER {what}: length {length} exceeds the {end - pos} bytes left")
    return tag, pos, pos + length


def _der_expect(data: bytes, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    got, start, stop = _der_item(data, pos, end, what)
    if got != tag:
        raise AnalyzerError(PROTOCOL, f"DER {what}: tag 0x{got:02x}, expected 0x{tag:02x}")
    return start, stop


def _oid_text(oid: bytes) -> str:
    """Dotted form of an OID's content octets (for attribute types without a short name)."""
    if not oid or oid[-1] & 0x80:
        raise AnalyzerError(PROTOCOL, "DER: malformed OID")
    arcs: list[int] = []
    value = 0
    for byte in oid:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


@dataclass(frozen=True, slots=True)
class DistinguishedName:
    """An X.501 Name as (attribute, value) pairs in certificate order; attributes by short name or OID."""

    attributes: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """First value of the attribute ``name`` (``"CN"``, ``"O"``, ``"OU"``, ...)."""
        return next((v for k, v in self.attributes if k == name), None)

    @property
    def common_name(self) -> str | None:
        return self.get("CN")

    @property
    def organization(self) -> str | None:
        return self.get("O")

    @property
    def organizational_unit(self) -> str | None:
        return self.get("OU")

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.attributes)

    @classmethod
    def parse(cls, der: bytes) -> DistinguishedName:
        """Parse a DER-encoded Name (``SEQUENCE OF SET OF AttributeTypeAndValue``)."""
        start, stop = _der_expect(der, 0, len(der), _SEQUENCE, "Name")
        if stop != len(der):
            raise AnalyzerError(PROTOCOL, "DER Name: trailing bytes")
        return _name(der, start, stop)


def _name(data: bytes, pos: int, end: int) -> DistinguishedName:
    attrs: list[tuple[str, str]] = []
    while pos < end:
        set_start, set_end = _der_expect(data, pos, end, _SET, "RDN")
        pos = set_end
        atv_pos = set_start
        while atv_pos < set_end:
            seq_start, seq_end = _der_expect(data, atv_pos, set_end, _SEQUENCE, "AttributeTypeAndValue")
            atv_pos = seq_end
            oid_start, oid_end = _der_expect(data, seq_start, seq_end, _OID, "attribute type")
            tag, v_start, v_end = _der_item(data, oid_end, seq_end, "attribute value")
            if v_end != seq_end:
                raise AnalyzerError(PROTOCOL, "DER AttributeTypeAndValue: trailing bytes")
            oid = data[oid_start:oid_end]
            name = _ATTRIBUTE_NAMES.get(oid) or _oid_text(oid)
            codec = _STRING_CODECS.get(tag)
            raw = data[v_start:v_end]
            value = raw.decode(codec, "replace") if codec is not None else "#" + raw.hex()
            if len(attrs) >= _MAX_NAME_ATTRIBUTES:
                raise AnalyzerError(PROTOCOL, "DER Name: too many attributes")
            attrs.append((name, value))
    return DistinguishedName(tuple(attrs))


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """Names of the first (end-entity) certificate of a TLS ≤ 1.2 Certificate message."""

    subject: DistinguishedName
    issuer: DistinguishedName
    serial: str
    chain_length: int
    der_length: int

    @property
    def self_signed(self) -> bool:
        """Subject equals issuer (what a camera's factory certificate usually is)."""
        return self.subject == self.issuer

    @classmethod
    def parse(cls, body: bytes) -> CertificateInfo:
        """Parse a TLS 1.0-1.2 Certificate message body (``certificate_list<0..2^24-1>``)."""
        r = _Reader(body, "Certificate")
        certs = r.vector(3, "certificate_list")
        if r.left():
            raise AnalyzerError(PROTOCOL, f"Certificate: {r.left()} bytes after the list")
        if not certs.left():
            raise AnalyzerError(PROTOCOL, "Certificate: empty certificate list")
        first = certs.vector(3, "certificate")
        count = 1
        while certs.left():
            certs.vector(3, "certificate")
            count += 1
        der = first.take(first.left(), "certificate")
        info = cls.from_der(der)
        return cls(info.subject, info.issuer, info.serial, count, info.der_length)

    @classmethod
    def from_der(cls, der: bytes) -> CertificateInfo:
        """Subject, issuer and serial number of a DER X.509 certificate (RFC 5280 4.1)."""
        c_start, c_end = _der_expect(der, 0, len(der), _SEQUENCE, "Certificate")
        if c_end != len(der):
            raise AnalyzerError(PROTOCOL, "DER Certificate: trailing bytes")
        t_start, t_end = _der_expect(der, c_start, c_end, _SEQUENCE, "TBSCertificate")
        tag, start, stop = _der_item(der, t_start, t_end, "TBSCertificate field")
        if tag == _CONTEXT_0:  # [0] EXPLICIT version
            tag, start, stop = _der_item(der, stop, t_end, "serialNumber")
        if tag != _INTEGER:
            raise AnalyzerError(PROTOCOL, f"DER serialNumber: tag 0x{tag:02x}")
        serial = der[start:stop].hex()
        _, stop = _der_expect(der, stop, t_end, _SEQUENCE, "signature")
        i_start, i_end = _der_expect(der, stop, t_end, _SEQUENCE, "issuer")
        _, stop = _der_expect(der, i_end, t_end, _SEQUENCE, "validity")
        s_start, s_end = _der_expect(der, stop, t_end, _SEQUENCE, "subject")
        return cls(
            subject=_name(der, s_start, s_end),
            issuer=_name(der, i_start, i_end),
            serial=serial,
            chain_length=1,
            der_length=len(der),
        )


# --- records and handshake messages ------------------------------------------------------------------

TlsMessage = ClientHello | ServerHello | CertificateInfo | HandshakeMessage | TlsAlert


def _check_record_header(data: bytes, pos: int) -> tuple[int, int, int]:
    content_type = data[pos]
    major, minor = data[pos + 1], data[pos + 2]
    length = int.from_bytes(data[pos + 3 : pos + 5], "big")
    if content_type not in _CONTENT_TYPES:
        raise AnalyzerError(PROTOCOL, f"unknown record content type {content_type} at offset {pos}")
    if major != 3 or minor > 4:
        raise AnalyzerError(PROTOCOL, f"record version {major}.{minor} at offset {pos}")
    if length > MAX_RECORD:
        raise AnalyzerError(PROTOCOL, f"record length {length} over {MAX_RECORD} at offset {pos}")
    return content_type, (major << 8) | minor, length


def parse_records(data: bytes) -> tuple[list[TlsRecord], int]:
    """The complete records at the start of ``data`` and how many bytes they took.

    A trailing incomplete record is left unread; a bad record header raises :class:`AnalyzerError`.
    """
    records: list[TlsRecord] = []
    pos = 0
    while len(data) - pos >= RECORD_HEADER:
        content_type, version, length = _check_record_header(data, pos)
        if len(data) - pos - RECORD_HEADER < length:
            break
        start = pos + RECORD_HEADER
        records.append(TlsRecord(content_type, version, data[start : start + length]))
        pos = start + length
    return records, pos


def _sslv2_client_hello(data: bytes) -> tuple[ClientHello, int]:
    """The SSL 2.0-compatible ClientHello (RFC 5246 E.2) at the start of ``data``, and its length.

    Old stacks (OpenSSL 0.9.8, some DVR firmware) still open with one. Raises AnalyzerError when
    ``data`` is not a complete, well-formed one.
    """
    if len(data) < 3 or not data[0] & 0x80 or data[2] != HS_CLIENT_HELLO:
        raise AnalyzerError(PROTOCOL, "not a TLS record nor an SSLv2 ClientHello")
    length = ((data[0] & 0x7F) << 8) | data[1]
    if len(data) - 2 < length:
        raise AnalyzerError(PROTOCOL, f"SSLv2 ClientHello truncated ({len(data) - 2} of {length} bytes)")
    r = _Reader(data, "SSLv2 ClientHello", 3, 2 + length)
    version = r.uint(2, "version")
    if version >> 8 != 3:
        raise AnalyzerError(PROTOCOL, f"SSLv2 ClientHello for version 0x{version:04x}")
    specs_len = r.uint(2, "cipher_specs length")
    session_len = r.uint(2, "session_id length")
    challenge_len = r.uint(2, "challenge length")
    if specs_len % 3 or session_len not in (0, 16) or not 16 <= challenge_len <= 32:
        raise AnalyzerError(PROTOCOL, "SSLv2 ClientHello: bad field lengths")
    specs = r.take(specs_len, "cipher_specs")
    r.take(session_len, "session_id")
    r.take(challenge_len, "challenge")
    if r.left():
        raise AnalyzerError(PROTOCOL, f"SSLv2 ClientHello: {r.left()} trailing bytes")
    # 3-byte specs whose first byte is 0 are the TLS cipher suites; the others are SSL 2.0 ones.
    suites = tuple(
        int.from_bytes(specs[i + 1 : i + 3], "big") for i in range(0, specs_len, 3) if specs[i] == 0
    )
    hello = ClientHello(version, session_len, suites, (), None, (), (), sslv2=True)
    return hello, 2 + length


def _handshake_message(msg_type: int, body: bytes) -> TlsMessage:
    if msg_type == HS_CLIENT_HELLO:
        return ClientHello.parse(body)
    if msg_type == HS_SERVER_HELLO:
        return ServerHello.parse(body)
    if msg_type == HS_CERTIFICATE:
        return CertificateInfo.parse(body)
    return HandshakeMessage(msg_type, len(body))


def parse_handshakes(data: bytes) -> tuple[list[TlsMessage], int]:
    """The complete handshake messages at the start of ``data`` (joined record payloads); bytes taken."""
    out: list[TlsMessage] = []
    pos = 0
    while len(data) - pos >= 4:
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        if length > MAX_HANDSHAKE:
            raise AnalyzerError(PROTOCOL, f"handshake message of {length} bytes (max {MAX_HANDSHAKE})")
        if len(data) - pos - 4 < length:
            break
        out.append(_handshake_message(data[pos], data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out, pos


def parse(data: bytes) -> list[TlsMessage]:
    """The handshake messages and alerts in the records of one segment.

    Every record must be complete and every handshake message must end inside the segment's
    handshake records (use :class:`TlsStreamParser` for messages that span segments). Parsing stops at
    the first ChangeCipherSpec or application data record: what follows is encrypted.
    """
    if len(data) < RECORD_HEADER:
        raise AnalyzerError(PROTOCOL, f"{len(data)} bytes: shorter than a record header")
    stream = TlsStreamParser()
    out = stream.feed(data)
    if stream.error is not None:
        raise stream.error
    if stream.pending_record:
        raise AnalyzerError(PROTOCOL, f"record truncated ({stream.pending_record} bytes present)")
    if stream.pending_handshake:
        raise AnalyzerError(
            PROTOCOL, f"handshake message truncated ({stream.pending_handshake} bytes present)"
        )
    return out


def looks_like(payload: bytes) -> bool:
    """True for the start of a TLS connection: a handshake record header (type 22, version 3.0-3.4) with a
    plausible length and a ClientHello or ServerHello after it. Also true mid-connection (a capture that
    began after the handshake, a lone encrypted alert) for whole records of the TLS content types that
    fill the payload exactly: a framing check random bytes and text protocols almost never pass."""
    if len(payload) < 3 or payload[1] != 3 or payload[2] > 4:
        return False
    if payload[0] == CONTENT_HANDSHAKE and _handshake_start(payload):
        return True
    return _whole_records(payload)


def _handshake_start(payload: bytes) -> bool:
    if len(payload) >= RECORD_HEADER:
        length = int.from_bytes(payload[3:5], "big")
        if length == 0 or length > MAX_RECORD:
            return False
        if len(payload) > RECORD_HEADER and payload[5] not in (HS_CLIENT_HELLO, HS_SERVER_HELLO):
            return False
    return True


# Content types a mid-connection record may carry (heartbeat left out: no client sends it unprompted).
_MID_STREAM_TYPES: Final = frozenset(
    {CONTENT_CHANGE_CIPHER_SPEC, CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPLICATION_DATA}
)


def _whole_records(payload: bytes) -> bool:
    """One or more complete, non-empty records whose lengths add up to the payload exactly."""
    pos, n = 0, len(payload)
    while pos < n:
        if n - pos < RECORD_HEADER:
            return False
        if payload[pos] not in _MID_STREAM_TYPES or payload[pos + 1] != 3 or payload[pos + 2] > 4:
            return False
        length = int.from_bytes(payload[pos + 3 : pos + 5], "big")
        if length == 0 or length > MAX_RECORD:
            return False
        pos += RECORD_HEADER + length
    return pos == n


class TlsStreamParser:
    """Follows one direction of a TLS connection and returns handshake messages and clear alerts.

    Sans-I/O: feed the direction's TCP payloads in order. Records are reassembled across segments
    (at most one record header plus :data:`MAX_RECORD` bytes buffered) and handshake messages across
    records (at most ``max_handshake`` bytes). Parsing ends at ChangeCipherSpec or application data
    (the rest is encrypted) or at the first error (kept in ``error``); later input is only counted.
    """

    def __init__(self, max_handshake: int = MAX_HANDSHAKE) -> None:
        if max_handshake < 1024:
            raise ValueError("max_handshake must be >= 1024")
        self.max_handshake = max_handshake
        self._buf = b""
        self._handshake = b""
        self._done = False
        self.error: AnalyzerError | None = None
        self.encrypted = False
        self.records = 0
        self.ignored_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the next segment: a partial record and a partial handshake message."""
        return len(self._buf) + len(self._handshake)

    @property
    def pending_record(self) -> int:
        """Bytes of an incomplete record waiting for the next segment."""
        return len(self._buf)

    @property
    def pending_handshake(self) -> int:
        """Bytes of an incomplete handshake message waiting for the next records."""
        return len(self._handshake)

    @property
    def done(self) -> bool:
        """True once nothing more will be parsed (encryption started or an error)."""
        return self._done

    def feed(self, segment: bytes) -> list[TlsMessage]:
        """Take the next payload of this direction; return the messages it completed. Never raises."""
        if self._done:
            self.ignored_bytes += len(segment)
            return []
        data = self._buf + segment if self._buf else segment
        self._buf = b""
        out: list[TlsMessage] = []
        try:
            self._run(data, out)
        except AnalyzerError as exc:
            self.error = exc.detached()  # no frames: they held the batch, and this parser in a cycle
            self.ignored_bytes += len(data)
            self._stop()
        return out

    def _encrypted_from(self, rest: int) -> None:
        self.encrypted = True
        self.ignored_bytes += rest
        self._stop()

    def _stop(self) -> None:
        self._done = True
        self.ignored_bytes += len(self._buf)
        self._buf = b""
        self._handshake = b""

    def _run(self, data: bytes, out: list[TlsMessage]) -> None:
        pos = 0
        n = len(data)
        if not self.records and n and data[0] & 0x80:
            # A record's content type is 20-24: a first byte with the high bit set is an SSLv2 header.
            if n < 2 or n - 2 < ((data[0] & 0x7F) << 8 | data[1]):
                self._buf = data  # at most 2 + 0x7FFF bytes
                return
            hello, pos = _sslv2_client_hello(data)
            out.append(hello)
            self.records += 1
        while n - pos >= RECORD_HEADER:
            content_type, _, length = _check_record_header(data, pos)
            if n - pos - RECORD_HEADER < length:
                break
            fragment = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
            pos += RECORD_HEADER + length
            self.records += 1
            if content_type == CONTENT_HANDSHAKE:
                self._handshake += fragment
                messages, taken = parse_handshakes(self._handshake)
                out.extend(messages)
                self._handshake = self._handshake[taken:]
                if len(self._handshake) > self.max_handshake:
                    raise AnalyzerError(PROTOCOL, f"handshake message over {self.max_handshake} bytes")
            elif content_type == CONTENT_ALERT:
                if self._handshake:
                    raise AnalyzerError(PROTOCOL, "alert record inside a fragmented handshake message")
                if len(fragment) != 2:
                    # Longer alerts are encrypted: the capture missed the ChangeCipherSpec.
                    self._encrypted_from(n - pos)
                    return
                out.append(TlsAlert(fragment[0], fragment[1]))
            elif content_type in (CONTENT_CHANGE_CIPHER_SPEC, CONTENT_APPLICATION_DATA):
                self._encrypted_from(n - pos)
                return
        self._buf = data[pos:]


# ------------------------------------------------------------------------------ protocol binding

# An encrypted session: once labelled, a few more packets at most (the certificate, in TLS 1.2).
SESSION_PACKETS = 4


def handle_tls(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol is None and not looks_like(payload):
        raise AnalyzerError(PROTOCOL, "not a TLS record")
    parser = flow_state(flow, (PROTOCOL, from_src), TlsStreamParser)
    for msg in parser.feed(payload):
        if isinstance(msg, ClientHello) and msg.server_name:
            flow.server_name = msg.server_name
            ctx.emit(TlsServerName(ts, flow, from_src, msg.server_name))
        elif isinstance(msg, CertificateInfo):
            org = msg.subject.organization
            vendor = vendor_from(org, CERT_VENDORS)
            if vendor:
                ctx.fact(flow, from_src, "tls_cert", f"O={org}", vendor=vendor, protocol=PROTOCOL)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_tls,
        tcp_ports=(443, 8443, 8883),
        sniff=looks_like,
        tcp_guess=30,
        after_label=SESSION_PACKETS,
        emits=(TlsServerName,),
    ),
)
