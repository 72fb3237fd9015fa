"""RTP for H.264: the payload format of RFC 6184 (single NAL unit and FU-A, packetization-mode 1), and the
RTP header and RTCP sender report of RFC 3550 that carry it."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

RTP_VERSION = 2
DEFAULT_MTU = 1400  # RTP payload budget: fits a 1500-byte Ethernet frame with IP/UDP/RTP headers to spare
NAL_FU_A = 28
RTCP_SR = 200
RTCP_SDES = 202
CLOCK_RATE = 90_000
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

_RTP_HEADER = struct.Struct("!BBHII")
_RTCP_SR = struct.Struct("!BBHIIIIII")


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """An RTP packet without CSRCs or header extensions (what a camera sends)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    marker: bool = False
    payload: bytes = b""

    def serialize(self) -> bytes:
        return (
            _RTP_HEADER.pack(
                RTP_VERSION << 6,
                (int(self.marker) << 7) | (self.payload_type & 0x7F),
                self.sequence_number & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
            + self.payload
        )

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse an RTP packet; CSRCs, extension and padding are skipped."""
        if len(data) < _RTP_HEADER.size:
            raise ValueError(f"RTP packet too short: {len(data)} bytes, need at least {_RTP_HEADER.size}")
        first, second, seq, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise ValueError(f"RTP version {first >> 6}, expected {RTP_VERSION}")
        offset = _RTP_HEADER.size + 4 * (first & 0x0F)
        if first & 0x10:
            if len(data) < offset + 4:
                raise ValueError("RTP header extension truncated")
            (words,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * words
        end = len(data)
        if first & 0x20:
            if end == 0 or data[-1] == 0 or data[-1] > end - offset:
                raise ValueError("RTP padding length is invalid")
            end -= data[-1]
        if offset > end:
            raise ValueError(f"RTP header ({offset} bytes) longer than the packet ({len(data)} bytes)")
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            marker=bool(second & 0x80),
            payload=bytes(data[offset:end]),
        )


def packetize(nals: Iterable[bytes], mtu: int = DEFAULT_MTU) -> list[bytes]:
    """RTP payloads for one access unit: a NAL unit that fits goes alone, a larger one in FU-A fragments.

    The caller sets the marker bit on the last payload (the end of the access unit).
    """
    if mtu < 3:
        raise ValueError(f"MTU must leave room for FU-A headers (>= 3 bytes), got {mtu}")
    payloads: list[bytes] = []
    for nal in nals:
        if not nal:
            continue
        if len(nal) <= mtu:
            payloads.append(nal)
            continue
        header = nal[0]
        indicator = bytes([(header & 0xE0) | NAL_FU_A])  # F and NRI of the NAL unit, type 28
        kind = header & 0x1F
        body = nal[1:]
        chunk = mtu - 2
        for start in range(0, len(body), chunk):
            fu_header = kind
            if start == 0:
                fu_header |= 0x80  # S
            if start + chunk >= len(body):
                fu_header |= 0x40  # E
            payloads.append(indicator + bytes([fu_header]) + body[start : start + chunk])
    return payloads


def depacketize(payloads: Iterable[bytes]) -> list[bytes]:
    """NAL units back from the RTP payloads of one access unit (single NAL and FU-A)."""
    nals: list[bytes] = []
    partial: bytearray | None = None
    for payload in payloads:
        if not payload:
            raise ValueError("empty H.264 RTP payload")
        kind = payload[0] & 0x1F
        if kind != NAL_FU_A:
            if 1 <= kind <= 23:
                nals.append(bytes(payload))
                continue
            raise ValueError(f"H.264 RTP payload type {kind} not supported (expected 1-23 or 28)")
        if len(payload) < 2:
            raise ValueError("FU-A payload without FU header")
        start, end = payload[1] & 0x80, payload[1] & 0x40
        if start:
            partial = bytearray([(payload[0] & 0xE0) | (payload[1] & 0x1F)])
        elif partial is None:
            raise ValueError("FU-A fragment without a start fragment")
        partial += payload[2:]
        if end:
            nals.append(bytes(partial))
            partial = None
    if partial is not None:
        raise ValueError("FU-A fragments end without an end fragment")
    return nals


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) for a Unix time."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class SenderReport:
    """An RTCP sender report without report blocks (the camera receives nothing)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int

    def serialize(self) -> bytes:
        return _RTCP_SR.pack(
            (RTP_VERSION << 6),
            RTCP_SR,
            (_RTCP_SR.size // 4) - 1,
            self.ssrc & 0xFFFFFFFF,
            self.ntp_timestamp >> 32,
            self.ntp_timestamp & 0xFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )

    @classmethod
    def parse(cls, data: bytes) -> SenderReport:
        """Parse the first RTCP packet of a compound packet, which must be a sender report."""
        if len(data) < _RTCP_SR.size:
            raise ValueError(f"RTCP sender report too short: {len(data)} bytes, need {_RTCP_SR.size}")
        first, kind, length, ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = _RTCP_SR.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise ValueError(f"RTCP version {first >> 6}, expected {RTP_VERSION}")
        if kind != RTCP_SR:
            raise ValueError(f"RTCP packet type {kind}, expected {RTCP_SR} (sender report)")
        if (length + 1) * 4 > len(data):
            raise ValueError(f"RTCP length field says {(length + 1) * 4} bytes, packet has {len(data)}")
        return cls(ssrc, (ntp_hi << 32) | ntp_lo, rtp_ts, packets, octets)


def sdes_cname(ssrc: int, cname: str) -> bytes:
    """An RTCP SDES packet with one CNAME item: RFC 3550 wants one in every compound RTCP packet."""
    text = cname.encode("utf-8")[:255]
    item = struct.pack("!IBB", ssrc & 0xFFFFFFFF, 1, len(text)) + text + b"\x00"  # CNAME, then END
    item += b"\x00" * (-len(item) % 4)
    return struct.pack("!BBH", (RTP_VERSION << 6) | 1, RTCP_SDES, len(item) // 4) + item
