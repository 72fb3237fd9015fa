"""Fuzz the MQTT analyzer: only AnalyzerError may escape ``parse`` (every protocol level); ``looks_like``
and the stream parser never raise and the stream parser stays bounded.

Run: ``python -m fuzz.fuzz_mqtt [runs]`` (also driven by ``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from fuzz.common import feed_in_pieces
from monitor.analyzers import AnalyzerError, mqtt

NAME = "mqtt"
_ROOT = Path(__file__).parents[1]
_FIXTURES = _ROOT / "tests" / "data" / "fixtures" / "mqtt"
_MAX_BUFFER = 256


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    mqtt.looks_like(data)
    for level in (0, 3, 4, 5):
        with contextlib.suppress(AnalyzerError):
            msg = mqtt.parse(data, level)
            if isinstance(msg, mqtt.MqttConnect):
                _ = (msg.version, msg.has_username)
            elif isinstance(msg, mqtt.MqttPacket):
                _ = msg.name
    parser = mqtt.MqttStreamParser(max_buffer=_MAX_BUFFER, protocol_level=5 if data[-1:] == b"\x05" else 0)
    # Bound: the buffer limit plus a fixed header (type byte and up to 4 length bytes) not yet dropped.
    feed_in_pieces(parser, data, _MAX_BUFFER + 5, "MqttStreamParser")


def _packet(first: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


def _s(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def seeds() -> list[bytes]:
    """The EZVIZ fixtures, MQTT 5 packets with properties, and the MQTT streams of the corpus."""
    out = [p.read_bytes() for p in sorted(_FIXTURES.glob("*.bin"))]
    out += [
        _packet(
            0x10,
            _s(b"MQTT")
            + bytes([5, 0xEE])
            + b"\x00\x3c\x05\x11\x00\x00\x0e\x10"
            + _s(b"cam")
            + b"\x00"
            + _s(b"will/t")
            + _s(b"off")
            + _s(b"SERIAL")
            + _s(b"pw"),
        ),
        _packet(0x32, _s(b"a/b") + b"\x00\x07\x02\x01\x01payload"),
        _packet(0x82, b"\x00\x08\x00" + _s(b"cmd/#") + b"\x01"),
        _packet(0xA2, b"\x00\x09" + _s(b"cmd/#")),
        _packet(0x20, b"\x01\x00\x03\x21\x00\x0a"),
    ]
    try:
        from tests.monitor.analyzers.payloads import tcp_streams

        pcaps = _ROOT / "tests" / "data" / "corpus" / "pcaps"
        for rel in ("zeek/mqtt.pcap", "arkime/mqtt_big.pcap", "suricata-verify/mqtt311-pub-qos1/input.pcap"):
            out += [v[:4096] for v in tcp_streams(pcaps / rel).values() if v]
    except (ImportError, OSError):
        pass
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
