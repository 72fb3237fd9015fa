"""DTLS (RFC 6347 DTLS 1.2, RFC 9147 DTLS 1.3): record layer and the clear handshake of one datagram.

camwatch reads DTLS to recognise WebRTC media leaving a site: a DTLS handshake on a flow that carried ICE
checks, negotiating ``use_srtp`` (RFC 5764), is DTLS-SRTP; the RTP-shaped packets that follow are SRTP.

Wire format. A datagram holds one or more records, back to back (RFC 6347 4.1.1)::

    type(1) version(2) epoch(2) sequence_number(6) length(2) fragment(length)

Types 20-24 as in TLS, 25 ``tls12_cid`` (RFC 9146), 26 ``ack`` (RFC 9147); versions 0xFEFF (DTLS 1.0) and
0xFEFD (DTLS 1.2, also every DTLS 1.3 plaintext record). DTLS 1.3 encrypted records use the unified header
(RFC 9147 4)::

    0 0 1 C S L E E   [connection id]  sequence (1 or 2 bytes)  [length (2)]  encrypted record

Epoch-0 handshake records hold handshake fragments (RFC 6347 4.2.2)::

    msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3) fragment

A message whose fragments are all in the datagram is parsed (OpenSSL splits a flight's Certificate across
records of one datagram; fragments spread over datagrams are only listed): ClientHello and ServerHello
(versions, suites, extensions, the ``use_srtp`` protection profiles and MKI), HelloVerifyRequest, and the
Certificate's subject and issuer (through the DER walker of :mod:`monitor.analyzers.tls`). Records of a later
epoch are encrypted and only counted. Records with a connection id (type 25, or the C bit) cannot be
delimited without the negotiated id length and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from monitor.analyzers import AnalyzerError, tls
from monitor.analyzers.reader import ByteReader

__all__ = [
    "CONTENT_TYPES",
    "SRTP_PROFILES",
    "VERSIONS",
    "ClientHello",
    "DtlsAlert",
    "DtlsDatagram",
    "DtlsMessage",
    "DtlsRecord",
    "HandshakeFragment",
    "HelloVerifyRequest",
    "ServerHello",
    "looks_like",
    "parse",
    "parse_records",
    "version_name",
]

PROTOCOL: Final = "dtls"

# DTLS shares TLS's content types, handshake types and extensions (RFC 6347 4.1: "the same as TLS").
CT_CHANGE_CIPHER_SPEC: Final = tls.CONTENT_CHANGE_CIPHER_SPEC
CT_ALERT: Final = tls.CONTENT_ALERT
CT_HANDSHAKE: Final = tls.CONTENT_HANDSHAKE
CT_APPLICATION_DATA: Final = tls.CONTENT_APPLICATION_DATA
CT_HEARTBEAT: Final = tls.CONTENT_HEARTBEAT
CT_TLS12_CID: Final = 25
CT_ACK: Final = 26
CONTENT_TYPES: Final = {
    CT_CHANGE_CIPHER_SPEC: "change_cipher_spec",
    CT_ALERT: "alert",
    CT_HANDSHAKE: "handshake",
    CT_APPLICATION_DATA: "application_data",
    CT_HEARTBEAT: "heartbeat",
    CT_TLS12_CID: "tls12_cid",
    CT_ACK: "ack",
}

DTLS_1_0: Final = 0xFEFF
DTLS_1_2: Final = 0xFEFD
DTLS_1_3: Final = 0xFEFC
VERSIONS: Final = {DTLS_1_0: "DTLS 1.0", DTLS_1_2: "DTLS 1.2", DTLS_1_3: "DTLS 1.3"}
_RECORD_VERSIONS: Final = frozenset({DTLS_1_0, DTLS_1_2})

HS_CLIENT_HELLO: Final = tls.HS_CLIENT_HELLO
HS_SERVER_HELLO: Final = tls.HS_SERVER_HELLO
HS_HELLO_VERIFY_REQUEST: Final = 3  # DTLS only
HS_CERTIFICATE: Final = tls.HS_CERTIFICATE

EXT_SUPPORTED_VERSIONS: Final = tls.EXT_SUPPORTED_VERSIONS
EXT_USE_SRTP: Final = 14

# RFC 5764 4.1.2 and RFC 7714 14.2 (the IANA "DTLS-SRTP Protection Profiles" registry).
SRTP_PROFILES: Final = {
    0x0001: "SRTP_AES128_CM_HMAC_SHA1_80",
    0x0002: "SRTP_AES128_CM_HMAC_SHA1_32",
    0x0005: "SRTP_NULL_HMAC_SHA1_80",
    0x0006: "SRTP_NULL_HMAC_SHA1_32",
    0x0007: "SRTP_AEAD_AES_128_GCM",
    0x0008: "SRTP_AEAD_AES_256_GCM",
}

RECORD_HEADER: Final = 13
HANDSHAKE_HEADER: Final = 12
# RFC 6347 4.1: a record is at most 2^14 bytes of plaintext plus 2048 of expansion.
MAX_RECORD: Final = 16384 + 2048
_UNIFIED_FIXED: Final = 0x20  # 001xxxxx
_MAX_RECORDS: Final = 64  # records in one datagram; more is not a real stack


class _Reader(ByteReader):
    __slots__ = ()
    protocol = PROTOCOL


def _fail(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def version_name(version: int) -> str:
    """``DTLS 1.2`` etc., or the hex value."""
    return VERSIONS.get(version, f"0x{version:04x}")


@dataclass(frozen=True, slots=True)
class DtlsRecord:
    """One record. ``version`` is None for a DTLS 1.3 unified-header record, whose ``epoch`` is then only
    the low two bits and whose ``sequence`` is the (encrypted) 8- or 16-bit field."""

    content_type: int  # 20-26; CT_APPLICATION_DATA for a unified-header record (its real type is inside)
    version: int | None
    epoch: int
    sequence: int
    fragment: bytes

    @property
    def unified(self) -> bool:
        """A DTLS 1.3 ciphertext record (RFC 9147 4)."""
        return self.version is None

    @property
    def encrypted(self) -> bool:
        """Epoch > 0: the fragment is ciphertext."""
        return self.version is None or self.epoch > 0

    @property
    def content_name(self) -> str:
        return CONTENT_TYPES.get(self.content_type, str(self.content_type))


@dataclass(frozen=True, slots=True)
class HandshakeFragment:
    """A handshake fragment header (RFC 6347 4.2.2); ``complete`` when it carries the whole message."""

    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    fragment_length: int

    @property
    def complete(self) -> bool:
        return self.fragment_offset == 0 and self.fragment_length == self.length


def _extensions(r: _Reader, what: str) -> list[tuple[int, _Reader]]:
    """The (type, value reader) pairs of an extensions block; repeated types are an error (RFC 8446 4.2)."""
    out: list[tuple[int, _Reader]] = []
    if not r.left():  # extensions are optional
        return out
    exts = r.vector(2, "extensions")
    seen: set[int] = set()
    while exts.left():
        ext_type = exts.uint(2, "extension type")
        value = exts.vector(2, f"extension {ext_type}")
        if ext_type in seen:
            raise _fail(f"{what}: extension {ext_type} appears twice")
        seen.add(ext_type)
        out.append((ext_type, value))
    if r.left():
        raise _fail(f"{what}: {r.left()} bytes after the extensions")
    return out


def _use_srtp(ext: _Reader, what: str) -> tuple[tuple[int, ...], int]:
    """``use_srtp`` (RFC 5764 4.1.1): the protection profiles and the MKI's length."""
    profiles = ext.vector(2, "SRTPProtectionProfiles")
    if not profiles.left() or profiles.left() % 2:
        raise _fail(
            f"{what}: use_srtp profile list of {profiles.left()} bytes (a non-empty list of 2-byte ids)"
        )
    ids = tuple(profiles.uint(2, "profile") for _ in range(profiles.left() // 2))
    mki = ext.vector(1, "srtp_mki")
    if ext.left():
        raise _fail(f"{what}: {ext.left()} bytes after use_srtp")
    return ids, mki.left()


def _dtls_version(version: int, what: str) -> int:
    if version >> 8 != 0xFE:
        raise _fail(f"{what}: version 0x{version:04x} is not a DTLS version")
    return version


@dataclass(frozen=True, slots=True)
class ClientHello:
    """A DTLS ClientHello; ``versions`` from supported_versions (DTLS 1.3), GREASE removed."""

    version: int  # client_version (legacy_version in DTLS 1.3)
    session_id_length: int
    cookie_length: int  # non-zero on the retry after a HelloVerifyRequest
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    srtp_profiles: tuple[int, ...]  # use_srtp offer, in the client's order
    srtp_mki_length: int | None  # None without use_srtp
    versions: tuple[int, ...]

    @classmethod
    def parse(cls, body: bytes) -> ClientHello:
        """Parse a complete ClientHello body (after the 12-byte DTLS handshake header)."""
        r = _Reader(body, "ClientHello")
        version = _dtls_version(r.uint(2, "client_version"), "ClientHello")
        r.take(32, "random")
        session_id = r.vector(1, "session_id")
        if session_id.left() > 32:
            raise _fail(f"ClientHello: session_id of {session_id.left()} bytes (max 32)")
        cookie = r.vector(1, "cookie")
        suites_r = r.vector(2, "cipher_suites")
        if not suites_r.left() or suites_r.left() % 2:
            raise _fail(
                f"ClientHello: cipher_suites of {suites_r.left()} bytes (a non-empty list of 2-byte ids)"
            )
        suites = tuple(suites_r.uint(2, "cipher suite") for _ in range(suites_r.left() // 2))
        compression = r.vector(1, "compression_methods")
        if not compression.left():
            raise _fail("ClientHello: no compression method (null is required)")
        profiles: tuple[int, ...] = ()
        mki: int | None = None
        versions: tuple[int, ...] = ()
        types: list[int] = []
        for ext_type, ext in _extensions(r, "ClientHello"):
            types.append(ext_type)
            if ext_type == EXT_USE_SRTP:
                profiles, mki = _use_srtp(ext, "ClientHello")
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                vr = ext.vector(1, "supported_versions")
                if not vr.left() or vr.left() % 2:
                    raise _fail(f"ClientHello: supported_versions of {vr.left()} bytes")
                offered = (vr.uint(2, "version") for _ in range(vr.left() // 2))
                versions = tuple(v for v in offered if not tls.is_grease(v))
        return cls(
            version=version,
            session_id_length=session_id.left(),
            cookie_length=cookie.left(),
            cipher_suites=suites,
            extensions=tuple(types),
            srtp_profiles=profiles,
            srtp_mki_length=mki,
            versions=versions,
        )

    @property
    def srtp_profile_names(self) -> tuple[str, ...]:
        return tuple(SRTP_PROFILES.get(p, f"0x{p:04x}") for p in self.srtp_profiles)


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A DTLS ServerHello; ``version`` is the negotiated one (supported_versions when present)."""

    legacy_version: int
    version: int
    cipher_suite: int
    extensions: tuple[int, ...]
    srtp_profile: int | None  # the one profile the server chose (RFC 5764 4.1.1)
    srtp_mki_length: int | None

    @classmethod
    def parse(cls, body: bytes) -> ServerHello:
        """Parse a complete ServerHello body."""
        r = _Reader(body, "ServerHello")
        legacy = _dtls_version(r.uint(2, "server_version"), "ServerHello")
        r.take(32, "random")
        session_id = r.vector(1, "session_id")
        if session_id.left() > 32:
            raise _fail(f"ServerHello: session_id of {session_id.left()} bytes (max 32)")
        suite = r.uint(2, "cipher_suite")
        r.uint(1, "compression_method")
        version = legacy
        profile: int | None = None
        mki: int | None = None
        types: list[int] = []
        for ext_type, ext in _extensions(r, "ServerHello"):
            types.append(ext_type)
            if ext_type == EXT_USE_SRTP:
                profiles, mki = _use_srtp(ext, "ServerHello")
                if len(profiles) != 1:
                    raise _fail(f"ServerHello: use_srtp with {len(profiles)} profiles (must choose one)")
                profile = profiles[0]
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                version = _dtls_version(ext.uint(2, "selected_version"), "ServerHello supported_versions")
                if ext.left():
                    raise _fail("ServerHello: bytes after selected_version")
        return cls(legacy, version, suite, tuple(types), profile, mki)

    @property
    def srtp_profile_name(self) -> str | None:
        if self.srtp_profile is None:
            return None
        return SRTP_PROFILES.get(self.srtp_profile, f"0x{self.srtp_profile:04x}")


@dataclass(frozen=True, slots=True)
class HelloVerifyRequest:
    """The server's stateless cookie exchange (RFC 6347 4.2.1)."""

    version: int
    cookie_length: int

    @classmethod
    def parse(cls, body: bytes) -> HelloVerifyRequest:
        r = _Reader(body, "HelloVerifyRequest")
        version = _dtls_version(r.uint(2, "server_version"), "HelloVerifyRequest")
        cookie = r.vector(1, "cookie")
        if r.left():
            raise _fail(f"HelloVerifyRequest: {r.left()} bytes after the cookie")
        return cls(version, cookie.left())


@dataclass(frozen=True, slots=True)
class DtlsAlert:
    """An alert in clear (epoch 0): level 1 warning, 2 fatal."""

    level: int
    description: int


DtlsMessage = ClientHello | ServerHello | HelloVerifyRequest | tls.CertificateInfo | DtlsAlert


def _certificate(body: bytes) -> tls.CertificateInfo:
    try:
        return tls.CertificateInfo.parse(body)
    except AnalyzerError as exc:  # the shared DER walker names TLS; this is DTLS
        raise _fail(f"Certificate: {exc.reason}") from None


def _message(msg_type: int, body: bytes) -> DtlsMessage | None:
    if msg_type == HS_CLIENT_HELLO:
        return ClientHello.parse(body)
    if msg_type == HS_SERVER_HELLO:
        return ServerHello.parse(body)
    if msg_type == HS_HELLO_VERIFY_REQUEST:
        return HelloVerifyRequest.parse(body)
    if msg_type == HS_CERTIFICATE:
        return _certificate(body)
    return None


def _unified(data: bytes, pos: int) -> tuple[DtlsRecord, int]:
    b0 = data[pos]
    if b0 & 0x10:
        raise _fail(f"unified-header record at offset {pos} carries a connection id of unknown length")
    seq_len = 2 if b0 & 0x08 else 1
    r = _Reader(data, "unified header", pos + 1)
    sequence = r.uint(seq_len, "sequence number")
    length = r.uint(2, "length") if b0 & 0x04 else r.left()  # without L the record fills the datagram
    if length > MAX_RECORD:
        raise _fail(f"record at offset {pos}: length {length} over {MAX_RECORD}")
    fragment = r.take(length, "encrypted record")
    return DtlsRecord(CT_APPLICATION_DATA, None, b0 & 0x03, sequence, fragment), r.pos


def parse_records(data: bytes) -> tuple[DtlsRecord, ...]:
    """The records of one datagram, which they must fill exactly."""
    if not data:
        raise _fail("empty datagram")
    records: list[DtlsRecord] = []
    pos = 0
    while pos < len(data):
        if len(records) >= _MAX_RECORDS:
            raise _fail(f"more than {_MAX_RECORDS} records in one datagram")
        b0 = data[pos]
        if b0 & 0xE0 == _UNIFIED_FIXED:
            record, pos = _unified(data, pos)
            records.append(record)
            continue
        if b0 == CT_TLS12_CID:
            raise _fail(f"tls12_cid record at offset {pos}: its connection id length was negotiated")
        if b0 not in CONTENT_TYPES:
            raise _fail(f"content type {b0} at offset {pos} is not a DTLS record")
        if len(data) - pos < RECORD_HEADER:
            raise _fail(f"record header at offset {pos} truncated ({len(data) - pos} of 13 bytes)")
        version = (data[pos + 1] << 8) | data[pos + 2]
        if version not in _RECORD_VERSIONS:
            raise _fail(f"record version 0x{version:04x} at offset {pos} (DTLS uses 0xfeff or 0xfefd)")
        epoch = (data[pos + 3] << 8) | data[pos + 4]
        sequence = int.from_bytes(data[pos + 5 : pos + 11], "big")
        length = (data[pos + 11] << 8) | data[pos + 12]
        if length > MAX_RECORD:
            raise _fail(f"record at offset {pos}: length {length} over {MAX_RECORD}")
        start = pos + RECORD_HEADER
        if start + length > len(data):
            raise _fail(
                f"record at offset {pos}: length {length} runs past the datagram ({len(data) - start} left)"
            )
        records.append(DtlsRecord(b0, version, epoch, sequence, data[start : start + length]))
        pos = start + length
    return tuple(records)


class _Pieces:
    """Fragments of handshake messages seen in one datagram, to join the ones it carries whole."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: dict[int, tuple[int, int, list[tuple[int, bytes]]]] = {}  # seq -> type, length, pieces

    def add(self, frag: HandshakeFragment, body: bytes) -> None:
        entry = self.parts.setdefault(frag.message_seq, (frag.msg_type, frag.length, []))
        if entry[:2] != (frag.msg_type, frag.length):
            raise _fail(
                f"handshake message {frag.message_seq}: fragments disagree on its type or length "
                f"({entry[0]}/{entry[1]} then {frag.msg_type}/{frag.length})"
            )
        entry[2].append((frag.fragment_offset, body))

    def messages(self) -> list[DtlsMessage]:
        """Messages whose fragments in this datagram cover them entirely (OpenSSL splits a flight's
        certificate across records of one datagram)."""
        out: list[DtlsMessage] = []
        for msg_type, length, pieces in self.parts.values():
            pieces.sort(key=lambda piece: piece[0])
            body = bytearray()
            for offset, chunk in pieces:
                if offset > len(body):
                    break  # a gap: the rest is in another datagram
                body += chunk[len(body) - offset :]
            if len(body) == length:
                msg = _message(msg_type, bytes(body))
                if msg is not None:
                    out.append(msg)
        return out


def _clear_record(
    record: DtlsRecord, fragments: list[HandshakeFragment], messages: list[DtlsMessage], pieces: _Pieces
) -> None:
    """Parse an epoch-0 record's content into ``fragments``, ``messages`` (alerts) and ``pieces``."""
    ct, data = record.content_type, record.fragment
    if ct == CT_ALERT:
        if len(data) != 2:
            raise _fail(f"clear alert of {len(data)} bytes (2 expected)")
        messages.append(DtlsAlert(data[0], data[1]))
    elif ct == CT_CHANGE_CIPHER_SPEC:
        if data != b"\x01":
            raise _fail(f"change_cipher_spec of {len(data)} bytes {data[:4].hex()} (expected 01)")
    elif ct == CT_HANDSHAKE:
        r = _Reader(data, "handshake record")
        while r.left():
            msg_type = r.uint(1, "msg_type")
            length = r.uint(3, "length")
            seq = r.uint(2, "message_seq")
            offset = r.uint(3, "fragment_offset")
            frag_len = r.uint(3, "fragment_length")
            if offset + frag_len > length:
                raise _fail(f"handshake fragment {offset}+{frag_len} beyond the message length {length}")
            frag = HandshakeFragment(msg_type, length, seq, offset, frag_len)
            fragments.append(frag)
            pieces.add(frag, r.take(frag_len, "handshake fragment"))


@dataclass(frozen=True, slots=True)
class DtlsDatagram:
    """Everything readable in one datagram: its records, the handshake fragments of epoch 0 and the parsed
    messages (hellos, HelloVerifyRequest, certificate names, clear alerts)."""

    records: tuple[DtlsRecord, ...]
    fragments: tuple[HandshakeFragment, ...]
    messages: tuple[DtlsMessage, ...]

    @classmethod
    def parse(cls, data: bytes) -> DtlsDatagram:
        """Parse one UDP payload; raise AnalyzerError unless it is well-formed DTLS."""
        records = parse_records(data)
        fragments: list[HandshakeFragment] = []
        messages: list[DtlsMessage] = []
        pieces = _Pieces()
        for record in records:
            if not record.encrypted:
                _clear_record(record, fragments, messages, pieces)
        messages += pieces.messages()
        return cls(records, tuple(fragments), tuple(messages))

    @property
    def handshake(self) -> bool:
        """The datagram carries handshake records (clear or encrypted)."""
        return any(r.content_type == CT_HANDSHAKE for r in self.records)

    @property
    def client_hello(self) -> ClientHello | None:
        return next((m for m in self.messages if isinstance(m, ClientHello)), None)

    @property
    def server_hello(self) -> ServerHello | None:
        return next((m for m in self.messages if isinstance(m, ServerHello)), None)

    @property
    def certificate(self) -> tls.CertificateInfo | None:
        return next((m for m in self.messages if isinstance(m, tls.CertificateInfo)), None)


def parse(data: bytes) -> DtlsDatagram:
    """Same as :meth:`DtlsDatagram.parse`."""
    return DtlsDatagram.parse(data)


def looks_like(payload: bytes) -> bool:
    """Cheap check that ``payload`` is a DTLS datagram: classic record headers (content type 20-24 or 26,
    version 0xfeff/0xfefd, length within bounds) that tile it exactly, the first of them a handshake,
    alert or change_cipher_spec record or a later-epoch record. Never raises."""
    n = len(payload)
    pos = 0
    count = 0
    if not n:
        return False
    while pos < n:
        if n - pos < RECORD_HEADER or count >= _MAX_RECORDS:
            return False
        ct = payload[pos]
        if ct not in CONTENT_TYPES or ct == CT_TLS12_CID:
            return False
        if payload[pos + 1] != 0xFE or payload[pos + 2] not in (0xFF, 0xFD):
            return False
        length = (payload[pos + 11] << 8) | payload[pos + 12]
        if length == 0 or length > MAX_RECORD:
            return False
        if count == 0 and ct in (CT_APPLICATION_DATA, CT_HEARTBEAT) and not (payload[3] | payload[4]):
            return False  # application data in epoch 0 does not exist
        pos += RECORD_HEADER + length
        count += 1
    return pos == n
