"""Hikvision SADP analyzer. No public capture of SADP exists: the probe and the camera's ProbeMatch are
hand-built (tests/data/fixtures/sadp, see its README) from public reimplementations' descriptions of the
XML (MatrixEditor/hiktools, julienblitte/UniversalScanner, oldweipro/hik-dev)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, sadp
from tests.monitor.analyzers.payloads import only_analyzer_errors

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "sadp"
PROBE = (FIXTURES / "probe.xml").read_bytes()
MATCH = (FIXTURES / "probe_match.xml").read_bytes()
UPDATE = (FIXTURES / "update_with_password.xml").read_bytes()


def test_probe() -> None:
    msg = sadp.parse(PROBE)
    assert (msg.kind, msg.is_reply, msg.types) == ("Probe", False, "inquiry")
    assert msg.uuid == "7C2A5F9E-4B1D-4E8A-9C3F-2D6B8A1E5F40"
    assert msg.model is None and msg.mac is None
    assert sadp.looks_like(PROBE)


def test_probe_match_of_a_camera() -> None:
    msg = sadp.parse(MATCH)
    assert msg.is_reply and msg.types == "inquiry"
    assert (msg.model, msg.serial, msg.device_type) == (
        "DS-2CD2143G2-I",
        "DS-2CD2143G2-I20240101AAWRJ00000001",
        "142378",
    )
    assert msg.mac == 0x4447CC000001
    assert (msg.ipv4, msg.ipv6, msg.http_port, msg.command_port) == ("192.168.1.64", "::", 80, 8000)
    assert (msg.firmware, msg.dsp_version, msg.boot_time) == (
        "V5.7.3build 220112",
        "V7.3 build 220112",
        "2024-09-18 09:21:28",
    )
    assert (msg.activated, msg.dhcp) == (True, False)
    assert msg.field("salt") == "0" * 64 and msg.field("HCPlatformEnable") == "false"
    assert not msg.carries_password
    assert sadp.looks_like(MATCH)


def test_password_is_redacted() -> None:
    msg = sadp.parse(UPDATE)
    assert msg.types == "update" and msg.carries_password
    assert msg.field("Password") == sadp.REDACTED
    assert b"not-a-real-password" in UPDATE and "not-a-real-password" not in repr(msg)


def test_variants() -> None:
    lower = MATCH.replace(b"ProbeMatch>", b"Probematch>").replace(b"true", b"TRUE").replace(b"80<", b"99999<")
    msg = sadp.parse(lower)
    assert msg.kind == "ProbeMatch" and msg.activated is True and msg.http_port is None
    odd = sadp.parse(
        b"<ProbeMatch><MAC>zz</MAC><Activated>flase</Activated><HttpPort>\xc2\xb2</HttpPort></ProbeMatch>"
    )
    assert (odd.mac, odd.activated, odd.http_port, odd.uuid) == (None, None, None, None)
    assert sadp.mac_from_text("44:47:CC:00:00:01") == sadp.mac_from_text("4447cc000001") == 0x4447CC000001


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<?xml version='1.0'?><Hello/>", "neither Probe nor ProbeMatch"),
        (MATCH[:-5], "malformed XML"),
        (b'<!DOCTYPE p [<!ENTITY a "b">]><Probe>&a;</Probe>', "DOCTYPE"),
        (b"<Probe>" + b" " * 20000 + b"</Probe>", "exceeds"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        sadp.parse(data)


def test_looks_like_rejects_other_xml() -> None:
    assert not sadp.looks_like(b'<?xml version="1.0"?><Envelope/>')
    assert not sadp.looks_like(b"M-SEARCH * HTTP/1.1\r\n")
    assert not sadp.looks_like(b"")


def test_every_truncation_raises_only_analyzer_error() -> None:
    for data in (PROBE, MATCH, UPDATE):
        for n in range(len(data)):
            only_analyzer_errors(sadp.parse, data[:n])
            assert isinstance(sadp.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([PROBE, MATCH, UPDATE]), st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, patch: bytes) -> None:
    pos = where % len(data)
    only_analyzer_errors(sadp.parse, data[:pos] + patch + data[pos + len(patch) :])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    only_analyzer_errors(sadp.parse, data)
    only_analyzer_errors(sadp.parse, b"<ProbeMatch>" + data + b"</ProbeMatch>")
    assert isinstance(sadp.looks_like(data), bool)
