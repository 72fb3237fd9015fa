"""Fuzz the RTP/RTCP analyzer: only AnalyzerError may escape a parser, ``looks_like_*`` never raise, and
``looks_like_rtp`` accepting a payload means ``RtpHeader.parse`` accepts it too.

Run: ``python -m fuzz.fuzz_rtp [runs] [--engine atheris|mutate]`` (also driven by
``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, rtp

NAME = "rtp"
_CORPUS = Path(__file__).parents[1] / "tests" / "data" / "corpus" / "pcaps"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    is_rtp = rtp.looks_like_rtp(data)
    rtp.looks_like_rtcp(data)
    rtp.looks_like_rtcp_framed(data)  # RFC 4571 over TCP: never raises
    if rtp.looks_like_rtp_framed(data):
        rtp.RtpHeader.parse(rtp.framed(data)[0])  # what the sniffer accepts, the parser reads
    try:
        rtp.RtpHeader.parse(data)
    except AnalyzerError:
        if is_rtp:
            raise AssertionError("looks_like_rtp accepted a payload RtpHeader.parse refuses") from None
    with contextlib.suppress(AnalyzerError):
        rtp.RtcpCompound.parse(data)
    tracker = rtp.RtpStreamTracker(max_streams=2)
    tracker.feed(data, 0)
    tracker.feed(data[:-1] if data else data, 1)
    for s in tracker.streams():
        if s.lost < 0 or s.expected < 1:
            raise AssertionError(f"tracker invariant broken: {s}")


def seeds() -> list[bytes]:
    """Hand-built RTP and RTCP packets plus the RTP/RTCP payloads of the corpus's SIP call."""
    pkt = struct.pack("!BBHII", 0xB1, 0x60, 1, 160, 0xCAFE) + struct.pack("!I", 7)
    pkt += struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\x00\x00" + b"payload" + b"\x00\x03"
    rr = struct.pack("!BBHI", 0x81, 201, 7, 1) + struct.pack("!IIIIII", 2, 3, 4, 5, 6, 7)
    sdes = struct.pack("!BBHI", 0x81, 202, 3, 1) + b"\x01\x04cnam\x00\x00"
    bye = struct.pack("!BBHI", 0xA1, 203, 3, 1) + b"\x02hi\x00\x00\x00\x04"
    app = struct.pack("!BBHI", 0x80, 204, 3, 1) + b"NAMEdata"
    out = [pkt, rr + sdes + bye, rr + app, struct.pack("!BBHI", 0x8F, 205, 2, 1) + bytes(4)]
    try:
        from tests.monitor.analyzers.payloads import udp_payloads

        out += [p.payload for p in udp_payloads(_CORPUS / "ndpi" / "sip.pcap") if p.sport in (30000, 30001)]
        out += [
            p.payload
            for p in udp_payloads(_CORPUS / "ndpi" / "stun_signal.pcapng")
            if p.payload[:1] in (b"\x80", b"\x90", b"\xb0")
        ][:20]
    except (ImportError, OSError):
        pass
    return out


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
