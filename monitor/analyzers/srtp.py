"""SRTP and SRTCP (RFC 3711, AEAD RFC 7714) framing, and RFC 7983/9443 demultiplexing of a WebRTC 5-tuple.

A WebRTC flow carries, on one UDP 5-tuple, STUN (ICE checks and consent), DTLS (the key exchange) and
then SRTP media and SRTCP reports; RFC 7983 (updated by RFC 9443) tells them apart by the first byte:
0-3 STUN, 16-19 ZRTP, 20-63 DTLS, 64-79 TURN ChannelData, 80-127 and 192-255 QUIC, 128-191 RTP/RTCP;
RTP and RTCP sharing a port are told apart by the second byte (RFC 5761 4: 192-223 is RTCP).

SRTP keeps the RTP header in clear and appends an authentication tag (10 bytes for the ``_80`` profiles,
4 for ``_32``, none separate for AEAD, whose 16-byte tag is part of the ciphertext). SRTCP keeps the first
8 bytes of the compound packet in clear (version, count, packet type, length, sender SSRC) and appends the
E flag with the 31-bit SRTCP index, then the tag (10 bytes for every HMAC profile, RFC 5764 4.1.2; AEAD:
index last). Keys are out of reach: nothing here decrypts. The RTP padding count sits inside the
encrypted payload, so it is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from monitor.analyzers import AnalyzerError

__all__ = [
    "PROFILES",
    "SrtcpPacket",
    "SrtpPacket",
    "SrtpProfile",
    "demux",
    "looks_like_srtcp",
    "looks_like_srtp",
]

PROTOCOL: Final = "srtp"
RTP_VERSION: Final = 2
_FIXED: Final = 12
_SRTCP_HEADER: Final = 8


@dataclass(frozen=True, slots=True)
class SrtpProfile:
    """A DTLS-SRTP protection profile's framing: the tags appended to SRTP and SRTCP packets."""

    id: int
    name: str
    srtp_tag: int  # bytes after the SRTP payload (0 for AEAD: the tag is inside the ciphertext)
    srtcp_tag: int  # bytes after the SRTCP index
    aead_tag: int  # bytes of AEAD tag inside the ciphertext (RFC 7714), else 0


# RFC 5764 4.1.2 and RFC 7714 14.2.
PROFILES: Final = {
    p.id: p
    for p in (
        SrtpProfile(0x0001, "SRTP_AES128_CM_HMAC_SHA1_80", 10, 10, 0),
        SrtpProfile(0x0002, "SRTP_AES128_CM_HMAC_SHA1_32", 4, 10, 0),
        SrtpProfile(0x0005, "SRTP_NULL_HMAC_SHA1_80", 10, 10, 0),
        SrtpProfile(0x0006, "SRTP_NULL_HMAC_SHA1_32", 4, 10, 0),
        SrtpProfile(0x0007, "SRTP_AEAD_AES_128_GCM", 0, 0, 16),
        SrtpProfile(0x0008, "SRTP_AEAD_AES_256_GCM", 0, 0, 16),
    )
}
_DEFAULT: Final = PROFILES[0x0001]  # mandatory to implement in WebRTC (RFC 8827 6.5)


def _fail(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def _profile(profile: int | None) -> SrtpProfile:
    if profile is None:
        return _DEFAULT
    found = PROFILES.get(profile)
    if found is None:
        raise _fail(f"unknown protection profile 0x{profile:04x}")
    return found


def demux(payload: bytes) -> str | None:
    """What a packet on a multiplexed WebRTC 5-tuple is, by its first bytes (RFC 7983, 9443, 5761):
    ``stun``, ``zrtp``, ``dtls``, ``turn-channel``, ``quic``, ``rtp``, ``rtcp``, or None (unassigned)."""
    if not payload:
        return None
    b0 = payload[0]
    if b0 <= 3:
        return "stun"
    if 16 <= b0 <= 19:
        return "zrtp"
    if 20 <= b0 <= 63:
        return "dtls"
    if 64 <= b0 <= 79:
        return "turn-channel"
    if 128 <= b0 <= 191:
        return "rtcp" if len(payload) > 1 and 192 <= payload[1] <= 223 else "rtp"
    if b0 >= 80:
        return "quic"
    return None


def _rtp_header_length(payload: bytes) -> int:
    """Offset of the payload after the fixed header, CSRCs and extension; raise if they do not fit."""
    n = len(payload)
    if n < _FIXED:
        raise _fail(f"{n} bytes, shorter than the 12-byte RTP header")
    b0 = payload[0]
    if b0 >> 6 != RTP_VERSION:
        raise _fail(f"RTP version {b0 >> 6}, expected 2")
    if 64 <= payload[1] & 0x7F <= 95:
        # RFC 5761 4: with RTCP on the same port these payload types would read as RTCP packet types.
        raise _fail(f"payload type {payload[1] & 0x7F} collides with RTCP (RFC 5761)")
    off = _FIXED + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if off + 4 > n:
            raise _fail("extension bit set but no room for the extension header")
        off += 4 + 4 * ((payload[off + 2] << 8) | payload[off + 3])
    if off > n:
        raise _fail(f"RTP header of {off} bytes runs past the {n}-byte packet")
    return off


@dataclass(frozen=True, slots=True)
class SrtpPacket:
    """An SRTP packet: the clear RTP header fields camwatch uses, and the sizes of the protected parts."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    header_length: int
    encrypted_length: int  # the protected payload, AEAD tag included, SRTP tag excluded
    tag_length: int

    @classmethod
    def parse(cls, data: bytes, profile: int | None = None) -> SrtpPacket:
        """Parse an SRTP packet protected with ``profile`` (a DTLS-SRTP profile id; None: the WebRTC
        default, AES128_CM_HMAC_SHA1_80). Raise AnalyzerError if it cannot be one."""
        prof = _profile(profile)
        off = _rtp_header_length(data)
        encrypted = len(data) - off - prof.srtp_tag
        if encrypted < prof.aead_tag:
            raise _fail(
                f"{len(data) - off} bytes after the {off}-byte header, {prof.name} needs at least "
                f"{prof.srtp_tag + prof.aead_tag} for its tag"
            )
        return cls(
            marker=bool(data[1] & 0x80),
            payload_type=data[1] & 0x7F,
            sequence=(data[2] << 8) | data[3],
            timestamp=int.from_bytes(data[4:8], "big"),
            ssrc=int.from_bytes(data[8:12], "big"),
            header_length=off,
            encrypted_length=encrypted,
            tag_length=prof.srtp_tag + prof.aead_tag,
        )


@dataclass(frozen=True, slots=True)
class SrtcpPacket:
    """An SRTCP packet: its clear first 8 bytes and trailer (RFC 3711 3.4)."""

    packet_type: int  # of the first RTCP packet of the compound (200 SR, 201 RR, 205/206 feedback...)
    count: int
    ssrc: int  # the sender SSRC
    first_length: int  # bytes of the first RTCP packet, from its length field
    encrypted: bool  # the E flag
    index: int  # 31-bit SRTCP index
    tag_length: int

    @classmethod
    def parse(cls, data: bytes, profile: int | None = None) -> SrtcpPacket:
        """Parse an SRTCP packet protected with ``profile`` (None: AES128_CM_HMAC_SHA1_80); no MKI."""
        prof = _profile(profile)
        n = len(data)
        trailer = 4 + prof.srtcp_tag
        if n < _SRTCP_HEADER + trailer + prof.aead_tag:
            raise _fail(f"SRTCP of {n} bytes: shorter than header, index and {prof.name} tag")
        b0 = data[0]
        if b0 >> 6 != RTP_VERSION:
            raise _fail(f"RTCP version {b0 >> 6}, expected 2")
        packet_type = data[1]
        if not 192 <= packet_type <= 223:
            raise _fail(f"packet type {packet_type} is not RTCP (192-223)")
        first = 4 * (((data[2] << 8) | data[3]) + 1)
        if first > n - trailer:
            raise _fail(f"first RTCP packet of {first} bytes runs into the {trailer}-byte SRTCP trailer")
        word = int.from_bytes(data[n - trailer : n - trailer + 4], "big")
        return cls(
            packet_type=packet_type,
            count=b0 & 0x1F,
            ssrc=int.from_bytes(data[4:8], "big"),
            first_length=first,
            encrypted=bool(word >> 31),
            index=word & 0x7FFFFFFF,
            tag_length=prof.srtcp_tag + prof.aead_tag,
        )


def looks_like_srtp(payload: bytes) -> bool:
    """Version 2, a payload type that is not RTCP's, a header that fits with room for a tag. Weak alone:
    meaningful on a flow already known to be DTLS-SRTP. Never raises."""
    try:
        off = _rtp_header_length(payload)
    except AnalyzerError:
        return False
    return len(payload) - off >= 4


def looks_like_srtcp(payload: bytes) -> bool:
    """Version 2, an RTCP packet type (200-213), a first packet that leaves room for index and tag (the
    shortest: AEAD). Never raises."""
    n = len(payload)
    if n < _SRTCP_HEADER + 4 or payload[0] >> 6 != RTP_VERSION or not 200 <= payload[1] <= 213:
        return False
    return 4 * (((payload[2] << 8) | payload[3]) + 1) <= n - 4
