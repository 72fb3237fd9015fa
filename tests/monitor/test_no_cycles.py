"""The engine leaves no reference cycles per packet: what it allocates is freed by reference counting.

An analyzer that keeps the error that stopped it (or re-raises one it held in a local) with its traceback
holds the frames that hold the parser, the flow and the batch's events: a cycle per failing flow that only
the cycle collector frees. The agent runs that collector rarely (agents/cli.py ``_tune_gc``), so such
cycles piled up: a day of a 50-camera site grew replay's heap to 477 MiB instead of 55 MiB.
"""

from __future__ import annotations

import base64
import gc
import struct
from collections import Counter
from collections.abc import Iterator

import pytest

from lab import synth
from lab.sitelife import LIFE_POLICY
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.vendors.oui import VendorTable

NS = 1_000_000_000
CAM = ("44:19:b6:00:00:01", "10.20.0.11")
GW = ("02:00:00:00:00:01", "203.0.113.9")
SYN, ACK, PSH = 0x02, 0x10, 0x08


def tcp_session(t: int, sport: int, dport: int, payloads: list[bytes]) -> list[tuple[int, bytes]]:
    """A camera's TCP connection to the Internet: handshake, then each payload from the camera."""
    c, s = CAM, GW
    out = [
        (t, synth.tcp4_frame(c[0], s[0], c[1], s[1], sport, dport, flags=SYN, seq=99)),
        (t + 1000, synth.tcp4_frame(s[0], c[0], s[1], c[1], dport, sport, flags=SYN | ACK, seq=499, ack=100)),
        (t + 2000, synth.tcp4_frame(c[0], s[0], c[1], s[1], sport, dport, flags=ACK, seq=100, ack=500)),
    ]
    seq = 100
    for k, payload in enumerate(payloads):
        frame = synth.tcp4_frame(
            c[0], s[0], c[1], s[1], sport, dport, payload, flags=PSH | ACK, seq=seq, ack=500
        )
        out.append((t + 3000 + k * 1000, frame))
        seq += len(payload)
    return out


def bad_tls() -> bytes:
    """A handshake record whose ClientHello ends inside its random: the parser stops with an error."""
    body = b"\x03\x03" + bytes(10)
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello


def failing_flows() -> Iterator[tuple[int, bytes]]:
    """Flows each of the stream analyzers labels and then fails on, many times over."""
    for n in range(40):
        t = (n + 1) * NS
        yield from tcp_session(t, 40000 + n, 443, [bad_tls()])
        yield from tcp_session(
            t + NS // 4, 41000 + n, 80, [b"GET / HTTP/1.1\r\nHost: x\r\n", b"no colon\r\n\r\n"]
        )
        yield from tcp_session(
            t + NS // 2, 42000 + n, 554, [b"OPTIONS * RTSP/1.0\r\nCSeq: x\r\nno colon\r\n\r\n"]
        )
        connect = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x03cam"
        mqtt = [bytes([0x10, len(connect)]) + connect, b"\x00\x00"]  # then a reserved packet type
        yield from tcp_session(t + 3 * NS // 4, 43000 + n, 1883, mqtt)
        # Vendor P2P ports with what no P2P parser takes: every parser raises, the last error is re-raised.
        yield (t + NS // 8, synth.udp4_frame(CAM[0], GW[0], CAM[1], GW[1], 44000 + n, 6002, b"\x00" * 40))
        yield (t + NS // 8 + 1, synth.udp4_frame(CAM[0], GW[0], CAM[1], GW[1], 44500 + n, 8800, b"\xff" * 40))


def cyclic_garbage(frames: list[tuple[int, bytes]]) -> Counter[str]:
    engine = Engine(SitePolicy.from_yaml(LIFE_POLICY), VendorTable.load(), EngineConfig())
    parser = CaptureParser("frames", 64)
    batches = [*parser.feed(pcap_bytes(sorted(frames))), *parser.flush()]
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for batch in batches:
            engine.feed(batch)
        engine.finish()
        del batch, batches
        gc.collect()
        found = Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()
    return found


@pytest.mark.parametrize("copies", [1, 3])
def test_failing_analyzers_leave_no_cycles(copies: int) -> None:
    once = list(failing_flows())
    frames = [(t + k * 100 * NS, f) for k in range(copies) for t, f in once]  # more flows, same kinds
    found = cyclic_garbage(frames)
    assert found["frame"] == 0 and found["traceback"] == 0 and found["Flow"] == 0, found.most_common(8)


def unanswered_rtsp() -> Iterator[tuple[int, bytes]]:
    """RTSP requests whose answers never come, on tcp/554 and tunnelled in HTTP (both halves)."""
    describe = b"DESCRIBE rtsp://203.0.113.9/s RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    for n in range(40):
        t = (n + 1) * NS
        yield from tcp_session(t, 40000 + n, 554, [describe])
        cookie = f"x-sessioncookie: c{n}\r\n".encode()
        yield from tcp_session(t + NS // 4, 41000 + n, 80, [b"GET /s HTTP/1.0\r\n" + cookie + b"\r\n"])
        post = b"POST /s HTTP/1.0\r\n" + cookie + b"Content-Length: 32767\r\n\r\n"
        yield from tcp_session(t + NS // 2, 42000 + n, 80, [post + base64.b64encode(describe)])


def test_unanswered_requests_leave_no_cycles() -> None:
    found = cyclic_garbage(list(unanswered_rtsp()))
    assert found["Flow"] == 0 and found["AppRequest"] == 0, found.most_common(8)
