"""Fuzz the STUN/TURN analyzer: only AnalyzerError may escape ``parse``/``split_stream``, the ``looks_like``
checks never raise.

Run: ``python -m fuzz.fuzz_stun [runs] [--engine atheris|mutate]`` (also driven by
``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import zlib
from pathlib import Path

from monitor.analyzers import AnalyzerError, stun, webrtc

NAME = "stun"
_CORPUS = Path(__file__).parents[1] / "tests" / "data" / "corpus" / "pcaps"
_COOKIE = struct.pack("!I", stun.MAGIC_COOKIE)


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    stun.looks_like(data)
    stun.looks_like_channel_data(data)
    webrtc.looks_like_stun_tcp(data)  # STUN over TCP, plain or RFC 4571-framed: never raises
    with contextlib.suppress(AnalyzerError):
        msg = stun.parse(data)
        if isinstance(msg, stun.StunMessage):
            _ = (msg.type_name, msg.is_turn, msg.public_address, str(msg.public_address))
    with contextlib.suppress(AnalyzerError):
        stun.ChannelData.parse(data, stream=True)
    with contextlib.suppress(AnalyzerError):
        _, used = stun.split_stream(data)
        if not 0 <= used <= len(data):
            raise AssertionError(f"split_stream consumed {used} of {len(data)} bytes")


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def _msg(msg_type: int, *attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return struct.pack("!HH", msg_type, len(body)) + _COOKIE + bytes(range(12)) + body


def seeds() -> list[bytes]:
    """Hand-built messages covering every decoded attribute, plus the STUN payloads of the corpus."""
    xor4 = b"\x00\x01\x21\x13" + bytes(a ^ b for a, b in zip(b"\xc0\x00\x02\x01", _COOKIE, strict=True))
    xor6 = b"\x00\x02\x21\x13" + bytes(16)
    full = _msg(
        0x0113,
        _attr(0x0020, xor4),
        _attr(0x8020, xor6),
        _attr(0x0012, xor4),
        _attr(0x0016, xor4),
        _attr(0x0001, b"\x00\x01\x00\x50\x01\x02\x03\x04"),
        _attr(0x802B, b"\x00\x01\x00\x50\x01\x02\x03\x04"),
        _attr(0x802C, b"\x00\x01\x00\x50\x01\x02\x03\x04"),
        _attr(0x8022, b"software"),
        _attr(0x0006, b"user"),
        _attr(0x0014, b"realm"),
        _attr(0x0015, b"nonce"),
        _attr(0x000D, b"\x00\x00\x02\x58"),
        _attr(0x0009, b"\x00\x00\x04\x01Unauthorized"),
        _attr(0x000C, b"\x40\x00\x00\x00"),
        _attr(0x0019, b"\x11\x00\x00\x00"),
        _attr(0x0013, b"data"),
        _attr(0x0008, bytes(20)),
    )
    grown = full[:2] + struct.pack("!H", len(full) - 20 + 8) + full[4:]
    with_fp = grown + _attr(0x8028, struct.pack("!I", (zlib.crc32(grown) ^ 0x5354554E) & 0xFFFFFFFF))
    classic = struct.pack("!HH", 0x0101, 12) + bytes(16) + _attr(0x0001, b"\x00\x01\x0d\x96\xc0\x00\x02\x01")
    out = [
        full,
        with_fp,
        classic,
        b"\x40\x01\x00\x05hello\x00\x00\x00",
        with_fp + b"\x40\x01\x00\x01x\x00\x00\x00",
    ]
    try:
        from tests.monitor.analyzers.payloads import tcp_streams, udp_payloads

        for rel in ("ndpi/stun_signal.pcapng", "nfstream/stun_facebook.pcapng"):
            out += [
                p.payload
                for p in udp_payloads(_CORPUS / rel)
                if stun.looks_like(p.payload) or p.payload[:1] == b"\x40"
            ][:40]
        out += list(tcp_streams(_CORPUS / "arkime" / "turn.pcap").values())
    except (ImportError, OSError):
        pass
    return out


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
