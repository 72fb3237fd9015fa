"""RTP and RTCP (RFC 3550): fixed headers, compound RTCP packets and a cheap per-direction stream tracker.

camwatch reads RTP only to say *that* a flow carries media, *which* stream it is (SSRC, payload type)
and roughly how healthy it is (sequence gaps). Payloads are never looked at. RTCP gives the identities
of a session: the SSRCs and the SDES CNAME (often ``user@host`` or a device id).

``looks_like_rtp`` / ``looks_like_rtcp`` recognise the protocols on ports nobody announced (RTP ports are
negotiated in SDP, which camwatch may not have seen). A single RTP datagram has little structure, so the RTP
heuristic is the weaker one: it rules out STUN, DTLS, QUIC and most NTP by the version bits, refuses the
payload types RFC 3551 leaves unassigned (35-95, which includes 72-76, where RTCP packet types 200-204 land
when read as marker + payload type) and the DNS/NetBIOS header shape (small counts where RTP has timestamp and
SSRC), but other datagrams whose first bits happen to be ``10`` (an NTP packet with leap indicator 2, say)
can pass. Confirm a media flow with :class:`RtpStreamTracker` (same SSRC, sequence numbers advancing) rather
than with one packet. The RTCP heuristic checks the length chain of the whole compound packet and is strict.
SRTP keeps the RTP header in clear, so it is recognised as RTP; SRTCP encrypts everything after the first
8 bytes and appends a trailer, so its length chain does not add up and it is not recognised as RTCP.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.events import MediaSeen
from monitor.protocol import Context, ProtocolSpec, flow_state

if TYPE_CHECKING:
    from monitor.flows import Flow

__all__ = [
    "RTCP_PACKET_TYPES",
    "RtcpCompound",
    "RtcpPacket",
    "RtcpReportBlock",
    "RtcpSenderInfo",
    "RtpHeader",
    "RtpStreamStats",
    "RtpStreamTracker",
    "looks_like_rtcp",
    "looks_like_rtp",
]

RTP: Final = "rtp"
RTCP: Final = "rtcp"

RTP_VERSION: Final = 2
_FIXED: Final = 12

# RFC 3551 table 4/5 static payload types that are assigned, plus the dynamic range 96-127. 1 and 2 were
# withdrawn, 19-24, 27, 29, 30 are reserved or unassigned, 35-95 unassigned (72-76 reserved for RTCP).
_STATIC_PT: Final = frozenset(
    {0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 25, 26, 28, 31, 32, 33, 34}
)
_VALID_PT: Final = frozenset(_STATIC_PT | set(range(96, 128)))

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
RTCP_APP: Final = 204
RTCP_PACKET_TYPES: Final = {
    192: "FIR",  # RFC 2032 (historic)
    193: "NACK",  # RFC 2032 (historic)
    194: "SMPTETC",
    195: "IJ",
    RTCP_SR: "SR",
    RTCP_RR: "RR",
    RTCP_SDES: "SDES",
    RTCP_BYE: "BYE",
    RTCP_APP: "APP",
    205: "RTPFB",
    206: "PSFB",
    207: "XR",
    208: "AVB",
    209: "RSI",
    210: "TOKEN",
    211: "IDMS",
    212: "RGRS",
    213: "SNM",
}
# A compound packet starts with SR or RR (RFC 3550 6.1); reduced-size RTCP (RFC 5506) may start with
# feedback (RTPFB/PSFB) or XR, which WebRTC stacks do.
_RTCP_FIRST: Final = frozenset({RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE, RTCP_APP, 205, 206, 207})
_SDES_CNAME: Final = 1
_MAX_RTCP_PACKETS: Final = 64  # a compound packet in one datagram; more is not a real sender
_MAX_SDES_CHUNKS: Final = 31  # the SC field is 5 bits

_HDR: Final = struct.Struct("!BBHII")
_U32: Final = struct.Struct("!I")
_RTCP_HDR: Final = struct.Struct("!BBH")
_SENDER_INFO: Final = struct.Struct("!QIII")
_REPORT: Final = struct.Struct("!IIIIII")


def _fail(reason: str) -> AnalyzerError:
    return AnalyzerError(RTP, reason)


def _fail_rtcp(reason: str) -> AnalyzerError:
    return AnalyzerError(RTCP, reason)


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """An RTP fixed header with its CSRC list and header extension (RFC 3550 5.1, 5.3.1)."""

    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension_profile: int | None  # the 16-bit "defined by profile" field, e.g. 0xBEDE (RFC 8285)
    extension_length: int  # bytes of extension data after its 4-byte header
    header_length: int  # offset of the payload
    payload_length: int  # payload bytes, padding excluded
    padding_length: int

    @property
    def version(self) -> int:
        """Always 2: other versions do not parse."""
        return RTP_VERSION

    @classmethod
    def parse(cls, data: bytes) -> RtpHeader:
        """Parse the header of one RTP packet; raise AnalyzerError if it is not a consistent RTP v2 header."""
        if len(data) < _FIXED:
            raise _fail(f"{len(data)} bytes, shorter than the 12-byte fixed header")
        b0, b1, seq, ts, ssrc = _HDR.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise _fail(f"version {b0 >> 6}, expected 2")
        cc = b0 & 0x0F
        off = _FIXED + 4 * cc
        if off > len(data):
            raise _fail(f"CSRC count {cc} needs {off} bytes, packet has {len(data)}")
        csrcs = struct.unpack_from(f"!{cc}I", data, _FIXED) if cc else ()
        profile: int | None = None
        ext_len = 0
        if b0 & 0x10:
            if off + 4 > len(data):
                raise _fail("extension bit set but no room for the extension header")
            profile, words = struct.unpack_from("!HH", data, off)
            ext_len = 4 * words
            off += 4 + ext_len
            if off > len(data):
                raise _fail(f"header extension of {ext_len} bytes runs past the packet end")
        pad = 0
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0 or off + pad > len(data):
                raise _fail(f"padding count {pad} is not within the {len(data) - off} bytes after the header")
        return cls(
            padding=bool(b0 & 0x20),
            extension=bool(b0 & 0x10),
            csrc_count=cc,
            marker=bool(b1 & 0x80),
            payload_type=b1 & 0x7F,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrcs=tuple(csrcs),
            extension_profile=profile,
            extension_length=ext_len,
            header_length=off,
            payload_length=len(data) - off - pad,
            padding_length=pad,
        )


def looks_like_rtp(payload: bytes) -> bool:
    """Cheap check that ``payload`` is one RTP packet: version 2, an assigned or dynamic payload type,
    a CSRC list, extension and padding that fit, at least one payload byte. Never raises."""
    n = len(payload)
    if n < _FIXED + 1:
        return False
    b0 = payload[0]
    if b0 >> 6 != RTP_VERSION or (payload[1] & 0x7F) not in _VALID_PT:
        return False
    if (
        not (payload[4] | payload[6] | payload[8] | payload[10])
        and max(payload[5], payload[7], payload[9], payload[11]) < 16
    ):
        # DNS/NBNS/mDNS shape: four small 16-bit counts where RTP has its timestamp and SSRC. Real RTP
        # matches only with an SSRC like 0x000N000M in its first seconds from timestamp 0.
        return False
    off = _FIXED + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if off + 4 > n:
            return False
        off += 4 + 4 * ((payload[off + 2] << 8) | payload[off + 3])
    pad = payload[-1] if b0 & 0x20 else 0
    if b0 & 0x20 and pad == 0:
        return False
    return off + pad < n


@dataclass(frozen=True, slots=True)
class RtcpSenderInfo:
    """The sender information block of an SR."""

    ntp_timestamp: int  # 64-bit NTP format
    rtp_timestamp: int
    packet_count: int
    octet_count: int


@dataclass(frozen=True, slots=True)
class RtcpReportBlock:
    """One reception report block (SR/RR): what the reporter saw of source ``ssrc``."""

    ssrc: int
    fraction_lost: int  # out of 256
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended highest sequence number received
    jitter: int
    last_sr: int
    delay_since_last_sr: int


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of a compound RTCP datagram. Fields not used by its type are empty."""

    packet_type: int
    count: int  # RC, SC or the APP/feedback subtype (FMT)
    length: int  # bytes, header included
    padding: bool
    ssrc: int | None  # sender SSRC; first chunk SSRC for SDES; first SSRC for BYE
    sender_info: RtcpSenderInfo | None = None
    report_blocks: tuple[RtcpReportBlock, ...] = ()
    cnames: tuple[tuple[int, str], ...] = ()  # SDES: (SSRC/CSRC, CNAME)
    bye_ssrcs: tuple[int, ...] = ()
    bye_reason: str | None = None
    app_name: str | None = None

    @property
    def name(self) -> str:
        """Short type name (SR, RR, SDES, BYE, APP, RTPFB, ...) or the number."""
        return RTCP_PACKET_TYPES.get(self.packet_type, str(self.packet_type))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _report_blocks(data: bytes, off: int, count: int, end: int) -> tuple[RtcpReportBlock, ...]:
    if off + 24 * count > end:
        raise _fail_rtcp(f"{count} report blocks need {24 * count} bytes, {end - off} left in the packet")
    blocks = []
    for i in range(count):
        ssrc, lost_word, high, jitter, lsr, dlsr = _REPORT.unpack_from(data, off + 24 * i)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(RtcpReportBlock(ssrc, lost_word >> 24, cumulative, high, jitter, lsr, dlsr))
    return tuple(blocks)


def _sdes(data: bytes, off: int, count: int, end: int) -> tuple[int | None, tuple[tuple[int, str], ...]]:
    first: int | None = None
    cnames: list[tuple[int, str]] = []
    for _ in range(count):
        if off + 4 > end:
            raise _fail_rtcp("SDES chunk without room for its SSRC")
        (ssrc,) = _U32.unpack_from(data, off)
        first = ssrc if first is None else first
        off += 4
        while True:
            if off >= end:
                raise _fail_rtcp("SDES chunk runs past the packet end without its null terminator")
            item = data[off]
            if item == 0:
                # The item list ends with a null octet, then padding to the next 32-bit boundary.
                off = (off + 4) & ~3
                break
            if off + 2 > end or off + 2 + data[off + 1] > end:
                raise _fail_rtcp(f"SDES item {item} runs past the packet end")
            size = data[off + 1]
            if item == _SDES_CNAME:
                cnames.append((ssrc, _text(data[off + 2 : off + 2 + size])))
            off += 2 + size
    return first, tuple(cnames)


def _bye(data: bytes, off: int, count: int, end: int) -> tuple[tuple[int, ...], str | None]:
    if off + 4 * count > end:
        raise _fail_rtcp(f"BYE with {count} SSRCs needs {4 * count} bytes, {end - off} left")
    ssrcs = struct.unpack_from(f"!{count}I", data, off)
    off += 4 * count
    reason: str | None = None
    if off < end:
        size = data[off]
        if off + 1 + size > end:
            raise _fail_rtcp("BYE reason runs past the packet end")
        reason = _text(data[off + 1 : off + 1 + size])
    return tuple(ssrcs), reason


def _rtcp_packet(data: bytes, off: int, end: int, padding: bool) -> RtcpPacket:
    b0, pt, _ = _RTCP_HDR.unpack_from(data, off)
    count = b0 & 0x1F
    body = off + 4
    length = end - off
    if pt == RTCP_SDES:
        first, cnames = _sdes(data, body, count, end)
        return RtcpPacket(pt, count, length, padding, first, cnames=cnames)
    if pt == RTCP_BYE:
        ssrcs, reason = _bye(data, body, count, end)
        return RtcpPacket(
            pt, count, length, padding, ssrcs[0] if ssrcs else None, bye_ssrcs=ssrcs, bye_reason=reason
        )
    if body + 4 > end:
        raise _fail_rtcp(f"{RTCP_PACKET_TYPES.get(pt, pt)} packet without room for the sender SSRC")
    (ssrc,) = _U32.unpack_from(data, body)
    if pt == RTCP_SR:
        if body + 24 > end:
            raise _fail_rtcp("SR without room for the sender information")
        info = RtcpSenderInfo(*_SENDER_INFO.unpack_from(data, body + 4))
        return RtcpPacket(pt, count, length, padding, ssrc, info, _report_blocks(data, body + 24, count, end))
    if pt == RTCP_RR:
        return RtcpPacket(pt, count, length, padding, ssrc, None, _report_blocks(data, body + 4, count, end))
    if pt == RTCP_APP:
        if body + 8 > end:
            raise _fail_rtcp("APP without room for its name")
        return RtcpPacket(
            pt, count, length, padding, ssrc, app_name=data[body + 4 : body + 8].decode("latin-1")
        )
    return RtcpPacket(pt, count, length, padding, ssrc)


@dataclass(frozen=True, slots=True)
class RtcpCompound:
    """A compound RTCP datagram: one or more packets laid end to end (RFC 3550 6.1)."""

    packets: tuple[RtcpPacket, ...]

    @classmethod
    def parse(cls, data: bytes) -> RtcpCompound:
        """Parse every packet; raise AnalyzerError unless their lengths add up to the datagram exactly."""
        if len(data) < 4:
            raise _fail_rtcp(f"{len(data)} bytes, shorter than an RTCP header")
        packets: list[RtcpPacket] = []
        off = 0
        while off < len(data):
            if len(packets) == _MAX_RTCP_PACKETS:
                raise _fail_rtcp(f"more than {_MAX_RTCP_PACKETS} packets in one compound datagram")
            if off + 4 > len(data):
                raise _fail_rtcp(f"{len(data) - off} trailing bytes after packet {len(packets)}")
            b0, pt, words = _RTCP_HDR.unpack_from(data, off)
            if b0 >> 6 != RTP_VERSION:
                raise _fail_rtcp(f"packet {len(packets)}: version {b0 >> 6}, expected 2")
            if not packets and pt not in _RTCP_FIRST:
                raise _fail_rtcp(f"first packet type {pt} is not SR, RR, SDES, BYE, APP or feedback")
            if pt not in RTCP_PACKET_TYPES:
                raise _fail_rtcp(f"packet {len(packets)}: type {pt} is not an RTCP packet type")
            end = off + 4 * (words + 1)
            if end > len(data):
                raise _fail_rtcp(
                    f"packet {len(packets)} claims {4 * (words + 1)} bytes, {len(data) - off} left"
                )
            padding = bool(b0 & 0x20)
            if padding:
                # Only the last packet of a compound may be padded; the count is its last octet.
                pad = data[end - 1]
                if end != len(data) or pad == 0 or pad > end - off - 4:
                    raise _fail_rtcp(f"packet {len(packets)}: bad padding (count {pad})")
                packets.append(_rtcp_packet(data, off, end - pad, True))
            else:
                packets.append(_rtcp_packet(data, off, end, False))
            off = end
        return cls(tuple(packets))

    @property
    def ssrcs(self) -> tuple[int, ...]:
        """Sender SSRCs of the packets, in order, without repeats."""
        return tuple(dict.fromkeys(p.ssrc for p in self.packets if p.ssrc is not None))

    @property
    def cnames(self) -> dict[int, str]:
        """SDES CNAME per SSRC/CSRC."""
        return {ssrc: name for p in self.packets for ssrc, name in p.cnames}


def looks_like_rtcp(payload: bytes) -> bool:
    """Cheap check that ``payload`` is a compound RTCP datagram: version 2 everywhere, a valid first packet
    type, packet lengths that add up to the datagram exactly, padding only on the last. Never raises."""
    n = len(payload)
    if n < 8 or n % 4:
        return False
    if payload[1] not in _RTCP_FIRST:
        return False
    off = 0
    packets = 0
    while off < n:
        if off + 4 > n or packets == _MAX_RTCP_PACKETS:
            return False
        b0, pt = payload[off], payload[off + 1]
        if b0 >> 6 != RTP_VERSION or pt not in RTCP_PACKET_TYPES:
            return False
        size = 4 * (((payload[off + 2] << 8) | payload[off + 3]) + 1)
        count = b0 & 0x1F
        # SR and RR carry a fixed part plus 24 bytes per report block.
        if (pt == RTCP_SR and size < 28 + 24 * count) or (pt == RTCP_RR and size < 8 + 24 * count):
            return False
        off += size
        packets += 1
        if b0 & 0x20 and off != n:
            return False
    return off == n


# RFC 3550 A.1: a jump forward of up to MAX_DROPOUT is loss; a step back of up to MAX_MISORDER is a late
# packet; anything else restarts the sequence (the sender restarted, or the sample skipped a long stretch).
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100


@dataclass(frozen=True, slots=True)
class RtpStreamStats:
    """A snapshot of one stream (one SSRC in one flow direction) as seen by :class:`RtpStreamTracker`."""

    ssrc: int
    payload_type: int  # the last one seen
    payload_types: tuple[int, ...]  # every payload type seen, in order (bounded)
    packets: int
    payload_bytes: int
    first_sequence: int
    last_sequence: int  # highest, in the RFC 3550 sense (wrap-aware)
    expected: int  # packets the sequence numbers span, summed over segments between restarts
    lost: int  # expected minus received (duplicates excluded); never negative
    gaps: int  # forward jumps of more than one
    late: int  # packets behind the highest sequence (reordered or duplicated)
    restarts: int  # jumps too large to be loss, where counting started again
    first_timestamp: int
    last_timestamp: int  # RTP timestamp of the in-order packet with the highest sequence
    first_seen_ns: int | None
    last_seen_ns: int | None


class _Stream:
    """Mutable per-SSRC state; kept small because the tracker sits on the hot path."""

    __slots__ = (
        "closed_expected",
        "duplicates",
        "first_seen",
        "first_seq",
        "first_ts",
        "gaps",
        "last_seen",
        "last_ts",
        "late",
        "max_ext",
        "packets",
        "payload_bytes",
        "payload_type",
        "payload_types",
        "restarts",
        "seg_base",
        "ssrc",
    )

    def __init__(self, hdr: RtpHeader, ts_ns: int | None) -> None:
        self.ssrc = hdr.ssrc
        self.payload_type = hdr.payload_type
        self.payload_types = [hdr.payload_type]
        self.packets = 1
        self.payload_bytes = hdr.payload_length
        self.first_seq = hdr.sequence
        self.max_ext = hdr.sequence  # extended (wrap-counting) highest sequence number
        self.seg_base = hdr.sequence
        self.closed_expected = 0
        self.duplicates = 0
        self.gaps = 0
        self.late = 0
        self.restarts = 0
        self.first_ts = self.last_ts = hdr.timestamp
        self.first_seen = self.last_seen = ts_ns

    def update(self, hdr: RtpHeader, ts_ns: int | None) -> None:
        self.packets += 1
        self.payload_bytes += hdr.payload_length
        if hdr.payload_type != self.payload_type:
            self.payload_type = hdr.payload_type
            if hdr.payload_type not in self.payload_types and len(self.payload_types) < 8:
                self.payload_types.append(hdr.payload_type)
        if ts_ns is not None:
            self.last_seen = ts_ns
            if self.first_seen is None:
                self.first_seen = ts_ns
        delta = (hdr.sequence - self.max_ext) & 0xFFFF
        if delta == 0:
            self.duplicates += 1
            self.late += 1
        elif delta < MAX_DROPOUT:
            if delta > 1:
                self.gaps += 1
            self.max_ext += delta
            self.last_ts = hdr.timestamp
        elif delta <= 0x10000 - MAX_MISORDER:
            # Too far to be loss: close the segment and count afresh from here.
            self.restarts += 1
            self.closed_expected += self.max_ext - self.seg_base + 1
            self.max_ext = self.seg_base = self.max_ext + delta
            self.last_ts = hdr.timestamp
        else:
            self.late += 1

    def snapshot(self) -> RtpStreamStats:
        expected = self.closed_expected + self.max_ext - self.seg_base + 1
        received = self.packets - self.duplicates
        return RtpStreamStats(
            ssrc=self.ssrc,
            payload_type=self.payload_type,
            payload_types=tuple(self.payload_types),
            packets=self.packets,
            payload_bytes=self.payload_bytes,
            first_sequence=self.first_seq,
            last_sequence=self.max_ext & 0xFFFF,
            expected=expected,
            lost=max(0, expected - received),
            gaps=self.gaps,
            late=self.late,
            restarts=self.restarts,
            first_timestamp=self.first_ts,
            last_timestamp=self.last_ts,
            first_seen_ns=self.first_seen,
            last_seen_ns=self.last_seen,
        )


class RtpStreamTracker:
    """Per flow direction: the RTP streams (SSRCs) seen, their payload types, packets and sequence gaps.

    Sans-I/O and cheap: one ``struct`` unpack and a few integer operations per packet. Even so, the engine
    does not feed it every video packet (a camera sends thousands a second); it feeds a *sample*, e.g. the
    first packets of a flow and short contiguous windows later. Figures are therefore those of the packets
    fed: ``packets`` is not the flow's packet count (the flow table has that), and ``lost``/``gaps`` are only
    meaningful within contiguous windows; a jump of more than ``MAX_DROPOUT`` between windows counts as a
    restart, not as loss. Feed a direction's packets in capture order.
    """

    __slots__ = ("_streams", "max_streams", "overflow", "packets", "rejected")

    def __init__(self, max_streams: int = 4) -> None:
        # One direction of a camera flow carries one or two SSRCs (video, audio); a cap keeps a flood of
        # random "SSRCs" (a flow that is not RTP at all) from growing the state.
        self.max_streams = max_streams
        self._streams: dict[int, _Stream] = {}
        self.packets = 0  # RTP packets accepted
        self.rejected = 0  # payloads that did not parse as RTP
        self.overflow = 0  # RTP packets of SSRCs beyond max_streams

    def feed(self, payload: bytes, ts_ns: int | None = None) -> RtpHeader | None:
        """Account one UDP payload; return its header, or None when it is not RTP. Never raises."""
        try:
            hdr = RtpHeader.parse(payload)
        except AnalyzerError:
            self.rejected += 1
            return None
        stream = self._streams.get(hdr.ssrc)
        if stream is None:
            if len(self._streams) >= self.max_streams:
                self.overflow += 1
                return hdr
            self._streams[hdr.ssrc] = _Stream(hdr, ts_ns)
        else:
            stream.update(hdr, ts_ns)
        self.packets += 1
        return hdr

    def streams(self) -> list[RtpStreamStats]:
        """Snapshots of every stream, in order of first appearance."""
        return [s.snapshot() for s in self._streams.values()]

    def stream(self, ssrc: int) -> RtpStreamStats | None:
        """Snapshot of one stream, or None."""
        s = self._streams.get(ssrc)
        return s.snapshot() if s is not None else None

    def confirmed(self, min_packets: int = 4) -> bool:
        """True when some stream has ``min_packets`` packets and advances mostly in order: the per-flow
        evidence that this direction carries RTP, much stronger than :func:`looks_like_rtp` on one packet."""
        for s in self._streams.values():
            if s.packets >= min_packets and s.late + s.restarts < s.packets // 2:
                return True
        return False


# ------------------------------------------------------------------------------ RFC 4571 framing


def framed(payload: bytes) -> list[bytes]:
    """The packets of a TCP segment framed as RFC 4571 says (each after a 2-byte length), if the lengths
    tile the segment exactly (a segment that starts mid-frame is not read); otherwise []."""
    out: list[bytes] = []
    pos, n = 0, len(payload)
    while pos + 2 <= n:
        size = (payload[pos] << 8) | payload[pos + 1]
        if size == 0 or pos + 2 + size > n:
            return []
        out.append(payload[pos + 2 : pos + 2 + size])
        pos += 2 + size
    return out if pos == n else []


def looks_like_rtp_framed(payload: bytes) -> bool:
    """RTP over TCP (RFC 4571: ICE-TCP, some cameras' media channels): framed packets, the first RTP."""
    packets = framed(payload)
    return bool(packets) and looks_like_rtp(packets[0])


def looks_like_rtcp_framed(payload: bytes) -> bool:
    """RTCP over TCP (RFC 4571)."""
    packets = framed(payload)
    return bool(packets) and looks_like_rtcp(packets[0])


# ------------------------------------------------------------------------------ protocol binding

# Media: once labelled, a few more packets at most (video costs only counters).
MEDIA_PACKETS = 4


def _first_packet(flow: Flow, payload: bytes) -> bytes:
    """The datagram, or over TCP the first RFC 4571-framed packet of the segment."""
    if flow.proto != 6:
        return payload
    packets = framed(payload)
    if not packets:
        raise _fail("TCP segment not framed as RFC 4571 says")
    return packets[0]


@dataclass(slots=True)
class _FirstRtp:
    """A UDP flow's first RTP-looking datagram, waiting for a second to confirm it (by content only)."""

    ssrc: int = -1
    sequence: int = 0


# How far the sequence number may advance from the first packet to the one that confirms it (losses,
# reordering by a few packets).
_CONFIRM_WINDOW = 64


def handle_rtp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    packet = _first_packet(flow, payload)
    header = RtpHeader.parse(packet)
    if not looks_like_rtp(packet):
        raise _fail("not a plausible RTP header")
    if flow.protocol is None and flow.proto != 6:
        # Recognised by content alone (no SETUP announced it, no RTP port): one datagram is not enough, as
        # one in ten random datagrams (encrypted P2P, QUIC-like) has an RTP-looking first byte and payload
        # type. A second with the same SSRC and a sequence number a little further on is (RFC 3550 A.1
        # probation, as receivers and Wireshark's heuristic do).
        first = flow_state(flow, "rtp-probation", _FirstRtp)
        if first.ssrc != header.ssrc or not 0 < (header.sequence - first.sequence) % 65536 <= _CONFIRM_WINDOW:
            first.ssrc, first.sequence = header.ssrc, header.sequence
            return False
    ctx.emit(MediaSeen(ts, flow, from_src, "rtp"))
    return True


def handle_rtcp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    RtcpCompound.parse(_first_packet(flow, payload))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name="rtcp",
        handler=handle_rtcp,
        sniff=looks_like_rtcp,
        tcp_sniff=looks_like_rtcp_framed,
        udp_guess=40,
        tcp_guess=60,
        after_label=MEDIA_PACKETS,
    ),
    ProtocolSpec(
        name="rtp",
        handler=handle_rtp,
        sniff=looks_like_rtp,
        tcp_sniff=looks_like_rtp_framed,
        udp_guess=50,
        tcp_guess=70,
        after_label=MEDIA_PACKETS,
        emits=(MediaSeen,),
    ),
)
