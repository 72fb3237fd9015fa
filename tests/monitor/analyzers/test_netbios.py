"""NetBIOS name service: names decoded from real captures (nDPI's netbios.pcap) and hand-built messages."""

from __future__ import annotations

import struct

import pytest

from monitor.analyzers import AnalyzerError, netbios
from monitor.records import flow_record
from tests.enginerun import run_engine
from tests.monitor.analyzers.payloads import only_analyzer_errors, udp_payloads
from tests.truth.paths import PCAPS

CAPTURE = PCAPS / "ndpi" / "netbios.pcap"


def encode(name: str, suffix: int = 0x20) -> bytes:
    raw = name.encode().ljust(15)[:15] + bytes([suffix])
    return bytes(32) + b"".join(bytes([65 + (b >> 4), 65 + (b & 15)]) for b in raw)


def registration(name: str) -> bytes:
    label = encode(name)[32:]
    question = bytes([32]) + label + b"\x00" + struct.pack("!HH", 0x20, 1)
    additional = b"\xc0\x0c" + struct.pack("!HHIH", 0x20, 1, 300000, 6) + b"\x00\x00" + bytes([10, 20, 0, 5])
    return struct.pack("!HHHHHH", 0x1234, 0x2910, 1, 0, 0, 1) + question + additional


def test_first_level_encoding() -> None:
    label = encode("NVR-01", 0x00)[32:].decode()
    assert netbios.decode_name(label) == ("NVR-01", 0x00)
    with pytest.raises(AnalyzerError, match="not a first-level encoded"):
        netbios.decode_name("cam1.example.com")


def test_registration_names_its_sender() -> None:
    msg = netbios.NbnsMessage.parse(registration("RECORDER"))
    assert (msg.opcode, msg.is_response, msg.names) == ("registration", False, (("RECORDER", 0x20),))
    assert netbios.looks_like(registration("RECORDER"))


def test_the_corpus_capture() -> None:
    payloads = [p.payload for p in udp_payloads(CAPTURE, 137)]
    assert payloads
    names = {name for p in payloads for name, _ in netbios.NbnsMessage.parse(p).names}
    assert names  # every NBNS datagram of the capture parses and names someone
    _, flows, _ = run_engine(CAPTURE)
    labelled = [flow_record(f) for f in flows if 137 in (f.src[1], f.dst[1])]
    assert labelled and all(r["network"].get("protocol") == "netbios-ns" for r in labelled)


def test_truncations_raise_only_analyzer_errors() -> None:
    data = registration("RECORDER")
    for n in range(len(data)):
        only_analyzer_errors(netbios.NbnsMessage.parse, data[:n])


def test_not_dns_and_not_netbios_apart() -> None:
    from monitor.analyzers import dns

    reg = registration("RECORDER")
    assert netbios.looks_like(reg) and not dns.looks_like(reg)
    query = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x03cam\x07example\x03com\x00\x00\x01\x00\x01"
    assert dns.looks_like(query) and not netbios.looks_like(query)
