"""SRTP/SRTCP framing and RFC 7983 demultiplexing.

Real parts: packets protected by libsrtp (``pylibsrtp``, the SRTP library aiortc uses) with every DTLS-SRTP
profile it implements, and the SRTP/SRTCP packets of our own aiortc capture
(``tests/data/fixtures/webrtc/liveview.pcap``, profile SRTP_AEAD_AES_256_GCM).
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, srtp
from tests.monitor.analyzers.payloads import udp_payloads

CAPTURE = Path(__file__).parents[2] / "data" / "fixtures" / "webrtc" / "liveview.pcap"
KEY_LENGTHS = {1: 30, 2: 30, 7: 28, 8: 44}  # master key + salt (RFC 3711, RFC 7714)
SSRC = 0x0C0FFEE0


def session(profile: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=os.urandom(KEY_LENGTHS[profile]),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile,
    )
    return pylibsrtp.Session(policy)


def rtp_packet(seq: int, payload: bytes, *, extension: bool = True, marker: bool = False) -> bytes:
    # A one-byte header extension (RFC 8285, profile 0xBEDE), as WebRTC stacks send.
    ext = b"\xbe\xde\x00\x01\x10\x2a\x00\x00" if extension else b""
    b0 = 0x90 if extension else 0x80
    return (
        struct.pack("!BBHII", b0, 96 | (0x80 if marker else 0), seq, 90_000 + seq * 3000, SSRC)
        + ext
        + payload
    )


@pytest.mark.parametrize("profile", sorted(KEY_LENGTHS))
def test_libsrtp_packets_parse_with_their_profile(profile: int) -> None:
    s = session(profile)
    prof = srtp.PROFILES[profile]
    for seq, size in ((1, 1), (2, 200), (3, 1100)):
        plain = rtp_packet(seq, os.urandom(size), marker=seq == 3)
        protected = s.protect(plain)
        assert srtp.demux(protected) == "rtp" and srtp.looks_like_srtp(protected)
        packet = srtp.SrtpPacket.parse(protected, profile)
        assert (packet.sequence, packet.ssrc, packet.payload_type, packet.marker) == (seq, SSRC, 96, seq == 3)
        assert packet.header_length == 20
        # The tag sizes of RFC 5764 4.1.2 / RFC 7714: what libsrtp appended is what the profile says.
        assert packet.tag_length == len(protected) - len(plain) == prof.srtp_tag + prof.aead_tag
        assert packet.encrypted_length == size + prof.aead_tag
    for index in (1, 2, 3):
        report = struct.pack("!BBHI", 0x80, 200, 6, SSRC) + os.urandom(20)  # SR, no report blocks
        protected = s.protect_rtcp(report)
        assert srtp.demux(protected) == "rtcp" and srtp.looks_like_srtcp(protected)
        packet = srtp.SrtcpPacket.parse(protected, profile)
        assert (packet.packet_type, packet.ssrc, packet.first_length, packet.count) == (200, SSRC, 28, 0)
        assert packet.encrypted and packet.index == index  # libsrtp numbers SRTCP packets from 1
        assert len(protected) - len(report) == 4 + packet.tag_length


def test_default_profile_is_aes128_cm_hmac_sha1_80() -> None:
    protected = session(1).protect(rtp_packet(9, b"x" * 50, extension=False))
    assert srtp.SrtpPacket.parse(protected).tag_length == 10
    assert srtp.SrtpPacket.parse(protected).encrypted_length == 50


def test_golden_aiortc_capture() -> None:
    """The camera's video and both peers' reports in our capture frame as AEAD_AES_256_GCM SRTP/SRTCP."""
    media = [p.payload for p in udp_payloads(CAPTURE) if 128 <= p.payload[0] <= 191]
    kinds = [srtp.demux(p) for p in media]
    assert kinds.count("rtp") > 20 and kinds.count("rtcp") >= 3
    video = [srtp.SrtpPacket.parse(p, 0x0008) for p, k in zip(media, kinds, strict=True) if k == "rtp"]
    assert len({v.ssrc for v in video}) == 1
    assert all(v.header_length > 12 for v in video)  # aiortc adds header extensions
    sequences = [v.sequence for v in video]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    reports = [srtp.SrtcpPacket.parse(p, 0x0008) for p, k in zip(media, kinds, strict=True) if k == "rtcp"]
    assert {r.packet_type for r in reports} >= {200, 201}  # the camera's SR, the cloud's RR
    assert all(r.encrypted for r in reports)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"\x00", "stun"),
        (b"\x03", "stun"),
        (b"\x04", None),
        (b"\x10", "zrtp"),
        (b"\x13", "zrtp"),
        (b"\x14", "dtls"),
        (b"\x3f", "dtls"),
        (b"\x40", "turn-channel"),
        (b"\x4f", "turn-channel"),
        (b"\x50", "quic"),
        (b"\x7f", "quic"),
        (b"\x80\x60", "rtp"),
        (b"\xbf\xe0", "rtp"),
        (b"\x80\xc8", "rtcp"),
        (b"\x81\xdf", "rtcp"),
        (b"\xc0", "quic"),
        (b"\xff", "quic"),
    ],
)
def test_rfc7983_demux(first: bytes, expected: str | None) -> None:
    assert srtp.demux(first + bytes(20)) == expected


def test_demux_of_nothing() -> None:
    assert srtp.demux(b"") is None


MALFORMED = [
    (srtp.SrtpPacket.parse, b"\x80\x60\x00", "shorter than the 12-byte"),
    (srtp.SrtpPacket.parse, b"\x40" + bytes(30), "version 1"),
    (srtp.SrtpPacket.parse, b"\x80\x48" + bytes(30), "collides with RTCP"),
    (srtp.SrtpPacket.parse, b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x09" + bytes(8), "runs past"),
    (srtp.SrtpPacket.parse, b"\x8f\x60" + bytes(40), "runs past"),
    (srtp.SrtpPacket.parse, b"\x80\x60" + bytes(15), "needs at least 10"),
    (srtp.SrtcpPacket.parse, b"\x80\xc8\x00\x06" + bytes(10), "shorter than header"),
    (srtp.SrtcpPacket.parse, b"\x00\xc8\x00\x01" + bytes(30), "version 0"),
    (srtp.SrtcpPacket.parse, b"\x80\x60\x00\x01" + bytes(30), "not RTCP"),
    (srtp.SrtcpPacket.parse, b"\x80\xc8\x00\x06" + bytes(30), "runs into"),
]


@pytest.mark.parametrize(("parse", "raw", "reason"), MALFORMED, ids=[r for _, _, r in MALFORMED])
def test_malformed(parse: object, raw: bytes, reason: str) -> None:
    assert callable(parse)
    with pytest.raises(AnalyzerError, match=reason) as info:
        parse(raw)
    assert info.value.protocol == "srtp"


def test_unknown_profile_is_named() -> None:
    with pytest.raises(AnalyzerError, match="unknown protection profile 0x0003"):
        srtp.SrtpPacket.parse(rtp_packet(1, bytes(40)), 0x0003)


def test_looks_like_rejects_other_protocols() -> None:
    stun_binding = bytes.fromhex("000100002112a442") + bytes(12)
    dtls_hello = bytes.fromhex("16fefd0000000000000000002d01") + bytes(40)
    rtcp_in_clear_too_short = b"\x80\xc8\x00\x06" + bytes(24)  # no room for the SRTCP index
    for payload in (stun_binding, dtls_hello, b"", b"\x80"):
        assert not srtp.looks_like_srtp(payload) and not srtp.looks_like_srtcp(payload)
    assert not srtp.looks_like_srtcp(rtcp_in_clear_too_short)
    assert not srtp.looks_like_srtp(b"\x80\xc8" + bytes(30))  # RTCP packet type, not RTP


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([None, *sorted(srtp.PROFILES)]))
def test_random_bytes(data: bytes, profile: int | None) -> None:
    srtp.demux(data)
    srtp.looks_like_srtp(data)
    srtp.looks_like_srtcp(data)
    with contextlib.suppress(AnalyzerError):
        srtp.SrtpPacket.parse(data, profile)
    with contextlib.suppress(AnalyzerError):
        srtp.SrtcpPacket.parse(data, profile)
