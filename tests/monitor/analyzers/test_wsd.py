"""WS-Discovery analyzer. No public capture of an ONVIF Probe/ProbeMatch exists in the corpus (no nDPI
upnp/wsd capture either): the envelopes are hand-built (tests/data/fixtures/wsd, see its README) from the
WS-Discovery schema and the ONVIF scope conventions. Also covers the hardened XML entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, wsd
from tests.monitor.analyzers.payloads import only_analyzer_errors

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "wsd"


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_probe() -> None:
    msg = wsd.parse(_fixture("probe.xml"))
    assert msg.action == "Probe"
    assert msg.message_id == "uuid:5b8e2f0a-3c71-4d9e-a6b4-9f1c2d3e4a5b" and msg.relates_to is None
    assert msg.to == "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
    assert msg.types == ("dn:NetworkVideoTransmitter",) and msg.scopes == ()
    assert msg.first is not None and msg.first.address is None


def test_hikvision_probe_matches() -> None:
    msg = wsd.parse(_fixture("probematches_hikvision.xml"))
    assert msg.action == "ProbeMatches" and len(msg.items) == 1
    assert msg.relates_to == "uuid:5b8e2f0a-3c71-4d9e-a6b4-9f1c2d3e4a5b"
    item = msg.items[0]
    assert item.address == "urn:uuid:3fa1c2d4-0000-4000-8000-4447cc000001"
    assert item.type_names == ("NetworkVideoTransmitter", "Device")
    assert (item.name, item.hardware, item.model) == (
        "HIKVISION DS-2CD2143G2-I",
        "DS-2CD2143G2-I",
        "DS-2CD2143G2-I",
    )
    assert item.mac == "44:47:cc:00:00:01" and item.manufacturer is None
    assert item.location == ("city/hangzhou",)
    assert item.scope_values("Profile") == ("Streaming", "G", "T")
    assert item.xaddrs[0] == "http://192.168.1.64/onvif/device_service" and len(item.xaddrs) == 2
    assert item.metadata_version == 10
    assert msg.name == item.name and msg.model == item.model and msg.hardware == item.hardware


def test_dahua_hello() -> None:
    msg = wsd.parse(_fixture("hello_dahua.xml"))
    assert msg.action == "Hello" and msg.relates_to is None
    assert (msg.name, msg.hardware, msg.manufacturer) == ("Dahua", "IPC-HFW2431S-S-S2", None)
    assert msg.xaddrs == ("http://192.168.1.108/onvif/device_service",)
    assert msg.items[0].scope_values("extension") == ("unique_identifier/1",)


def test_ws_dd_1_1_with_two_matches_and_a_manufacturer_scope() -> None:
    msg = wsd.parse(_fixture("probematches_wsdd11.xml"))
    assert msg.action == "ProbeMatches" and len(msg.items) == 2
    assert [i.name for i in msg.items] == ["Camera A", "Camera B"]
    assert [i.manufacturer for i in msg.items] == ["Acme", None]
    assert msg.manufacturer == "Acme" and msg.items[1].metadata_version is None


def test_action_from_body_and_bye() -> None:
    bye = (
        b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" '
        b'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
        b'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><e:Body><d:Bye><a:EndpointReference>'
        b"<a:Address>urn:uuid:1</a:Address></a:EndpointReference></d:Bye></e:Body></e:Envelope>\x00"
    )
    msg = wsd.parse(bye)
    assert msg.action == "Bye" and msg.message_id is None and msg.items[0].address == "urn:uuid:1"
    assert wsd.looks_like(bye)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.xml")))
def test_looks_like_fixtures(name: str) -> None:
    assert wsd.looks_like(_fixture(name))


ENV = '<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope">{}</e:Envelope>'


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<Probe/>", "not a SOAP Envelope"),
        (ENV.format("<e:Header/>").encode(), "without a Body"),
        (ENV.format("<e:Body/>").encode(), "empty Body"),
        (b'<!DOCTYPE e [<!ENTITY x "y">]>' + ENV.format("<e:Body>&x;</e:Body>").encode(), "DOCTYPE"),
        (b'<!DOCTYPE e SYSTEM "file:///etc/passwd">' + ENV.format("<e:Body/>").encode(), "DOCTYPE"),
        (ENV.format("<e:Body>" + "<a>" * 70 + "</a>" * 70 + "</e:Body>").encode(), "deeper"),
        (b"<Envelope>" + b" " * (64 * 1024) + b"</Envelope>", "exceeds"),
        (b"\xff\xfe<\x00E\x00", "not UTF-8"),
        (ENV.format("<e:Body><x:Probe/></e:Body>").encode(), "malformed XML"),  # unbound prefix
        (b"", "malformed XML"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        wsd.parse(data)


SAMPLES = [_fixture(p.name) for p in sorted(FIXTURES.glob("*.xml"))]


def test_every_truncation_raises_only_analyzer_error() -> None:
    for data in SAMPLES:
        for n in range(len(data)):
            only_analyzer_errors(wsd.parse, data[:n])
            assert isinstance(wsd.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, patch: bytes) -> None:
    pos = where % len(data)
    only_analyzer_errors(wsd.parse, data[:pos] + patch + data[pos + len(patch) :])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    only_analyzer_errors(wsd.parse, data)
    assert isinstance(wsd.looks_like(data), bool)


def test_evidence_leaves_out_what_the_device_did_not_say() -> None:
    # A Hikvision ProbeMatch names a model (hardware scope) but no manufacturer: the inventory's evidence,
    # shown in reports and exports, says what was said and nothing else (no "manufacturer=None").
    from lab.synth import udp4_frame
    from tests.enginerun import run_frames

    frame = udp4_frame(
        "44:47:cc:00:00:01", "01:00:5e:7f:ff:fa", "192.168.1.64", "239.255.255.250", 3702, 3702,
        _fixture("probematches_hikvision.xml"),
    )  # fmt: skip
    engine, _, _ = run_frames([(1_767_225_600 * 10**9, frame)])
    dev = engine.inventory.get(0x4447CC000001)
    assert dev is not None
    wsd_details = [e["detail"] for e in dev.to_record()["evidence"] if e["kind"] == "wsd"]
    assert wsd_details == ["model=DS-2CD2143G2-I"]
