"""Fuzz the DTLS and SRTP analyzers: only AnalyzerError may escape ``dtls.parse`` and the SRTP/SRTCP parsers;
``looks_like``, ``looks_like_srtp``, ``looks_like_srtcp`` and ``demux`` never raise.

Run: ``python -m fuzz.fuzz_dtls [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``); not
part of pytest. Seeds: hand-built records of every kind the parser reads, and the DTLS, SRTP and SRTCP
payloads of our own aiortc capture (``tests/data/fixtures/webrtc/liveview.pcap``).
"""

from __future__ import annotations

import contextlib
import struct
import sys
from pathlib import Path

from monitor.analyzers import AnalyzerError, dtls, srtp

NAME = "dtls"
_CAPTURE = Path(__file__).parents[1] / "tests" / "data" / "fixtures" / "webrtc" / "liveview.pcap"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    dtls.looks_like(data)
    srtp.demux(data)
    srtp.looks_like_srtp(data)
    srtp.looks_like_srtcp(data)
    with contextlib.suppress(AnalyzerError):
        d = dtls.parse(data)
        _ = (d.handshake, d.client_hello, d.server_hello, d.certificate, [r.content_name for r in d.records])
        for m in d.messages:
            if isinstance(m, dtls.ClientHello):
                _ = m.srtp_profile_names
            elif isinstance(m, dtls.ServerHello):
                _ = m.srtp_profile_name
    for profile in (None, *srtp.PROFILES):
        with contextlib.suppress(AnalyzerError):
            srtp.SrtpPacket.parse(data, profile)
        with contextlib.suppress(AnalyzerError):
            srtp.SrtcpPacket.parse(data, profile)


def _record(content_type: int, body: bytes, epoch: int = 0) -> bytes:
    return struct.pack("!BHH", content_type, 0xFEFD, epoch) + bytes(6) + struct.pack("!H", len(body)) + body


def _handshake(msg_type: int, body: bytes) -> bytes:
    size = len(body).to_bytes(3, "big")
    return bytes([msg_type]) + size + b"\x00\x00" + b"\x00\x00\x00" + size + body


def seeds() -> list[bytes]:
    use_srtp = b"\x00\x0e\x00\x07\x00\x04\x00\x01\x00\x07\x00"
    versions = b"\x00\x2b\x00\x05\x04\xfe\xfc\xfe\xfd"
    exts = use_srtp + versions
    hello = (
        b"\xfe\xfd" + bytes(32) + b"\x00\x02ab\x00\x02\xc0\x2b\x01\x00" + struct.pack("!H", len(exts)) + exts
    )
    server = (
        b"\xfe\xfd" + bytes(32) + b"\x00\xc0\x2b\x00" + b"\x00\x09" + b"\x00\x0e\x00\x05\x00\x02\x00\x07\x00"
    )
    out = [
        _record(22, _handshake(1, hello)),
        _record(22, _handshake(2, server)) + _record(20, b"\x01") + _record(22, b"finished", epoch=1),
        _record(22, _handshake(3, b"\xfe\xff\x04abcd")),
        _record(21, b"\x02\x28"),
        bytes([0x2E, 0x12, 0x34, 0x00, 0x03]) + b"abc" + bytes([0x21, 0x07]) + b"rest",
        struct.pack("!BBHII", 0x90, 96, 1, 3000, 0xC0FFEE) + b"\xbe\xde\x00\x01\x10\x2a\x00\x00" + bytes(40),
        struct.pack("!BBHI", 0x80, 200, 6, 0xC0FFEE) + bytes(24) + b"\x80\x00\x00\x01" + bytes(10),
    ]
    try:
        from tests.monitor.analyzers.payloads import udp_payloads

        payloads = [p.payload for p in udp_payloads(_CAPTURE)]
        out += [p for p in payloads if 20 <= p[0] <= 63]
        out += [p for p in payloads if p[0] >= 128][:20]
    except (ImportError, OSError):
        pass
    return out


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
