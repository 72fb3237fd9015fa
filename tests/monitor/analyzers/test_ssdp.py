"""SSDP analyzer: the corpus's SSDP datagram (suricata-verify sip-ssdp-pm, a MiniUPnPd NOTIFY), hand-built
IGD searches and responses (tests/data/fixtures/ssdp, see its README), `looks_like` over every UDP payload of
the corpus, and malformed input. No nDPI truth file in the corpus labels a flow SSDP."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, ssdp
from tests.monitor.analyzers.payloads import only_analyzer_errors, print_table, udp_payloads
from tests.truth.paths import PCAPS

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "ssdp"


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_corpus_notify() -> None:
    [p] = udp_payloads(PCAPS / "suricata-verify" / "sip-ssdp-pm" / "ssdp.pcap", 1900)
    msg = ssdp.parse(p.payload)
    assert msg.kind == "notify"
    assert msg.nt == "upnp:rootdevice" and msg.nts == "ssdp:alive"
    assert msg.location == "http://192.168.1.1:7406/rootDesc.xml"  # header name in odd case: "lOCATION"
    assert msg.usn == "uuid:04645c3d-e6b4-4eea-bd35-5c320c12969f::upnp:rootdevice"
    assert msg.server is not None and "MiniUPnPd/1.6" in msg.server
    assert msg.header("01-nls") == "1" and msg.header("CONFIGID.UPNP.ORG") == "1337"
    assert not msg.is_igd_search
    assert ssdp.looks_like(p.payload)


def test_looks_like_over_the_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    """Only the SSDP datagram of the whole corpus looks like SSDP (no false positive on other UDP)."""
    hits: list[tuple[str, int]] = []
    total = 0
    for pcap in sorted(p for p in PCAPS.rglob("*") if p.is_file()):
        for p in udp_payloads(pcap):
            total += 1
            if ssdp.looks_like(p.payload):
                hits.append((pcap.name, p.dport))
    print_table(
        capsys, "SSDP looks_like over corpus UDP", ("UDP payloads", "looks like SSDP"), [(total, hits)]
    )
    assert hits == [("ssdp.pcap", 1900)]


@pytest.mark.parametrize(
    ("name", "kind", "igd"),
    [
        ("msearch_igd.bin", "search", True),
        ("msearch_wanip.bin", "search", True),
        ("notify_camera.bin", "notify", False),
        ("response_igd.bin", "response", True),
    ],
)
def test_fixtures(name: str, kind: str, igd: bool) -> None:
    msg = ssdp.parse(_fixture(name))
    assert msg.kind == kind and msg.is_igd_search is igd
    assert ssdp.looks_like(_fixture(name))


def test_search_fields() -> None:
    msg = ssdp.parse(_fixture("msearch_igd.bin"))
    assert msg.st == "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
    assert msg.man == '"ssdp:discover"' and msg.mx == 3


@pytest.mark.parametrize(
    ("st_value", "igd"),
    [
        ("urn:schemas-upnp-org:device:InternetGatewayDevice:2", True),
        ("urn:schemas-upnp-org:service:WANPPPConnection:1", True),
        ("urn:schemas-upnp-org:device:WANConnectionDevice:1", True),
        ("ssdp:all", False),
        ("upnp:rootdevice", False),
        ("urn:schemas-upnp-org:device:MediaRenderer:1", False),
        ("urn:schemas-upnp-org:service:WANIPConnection:", False),
    ],
)
def test_is_igd_search(st_value: str, igd: bool) -> None:
    data = (
        f'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nST: {st_value}\r\n\r\n'
    )
    assert ssdp.parse(data.encode()).is_igd_search is igd


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "start line"),
        (b"HTTP/1.1 404 Not Found\r\nST: x\r\n\r\n", "start line"),
        (b'M-SEARCH * HTTP/1.1\r\nMAN: "ssdp:discover"\r\n\r\n', "without an ST"),
        (b"NOTIFY * HTTP/1.1\r\nHOST: x\r\n\r\n", "without NT"),
        (b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", "not an SSDP search response"),
        (b"M-SEARCH * HTTP/1.1\r\nST ssdp:all\r\n\r\n", "malformed header"),
        (b"M-SEARCH * HTTP/1.1\r\n" + b"X: y\r\n" * 70, "more than"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        ssdp.parse(data)


SAMPLES = [_fixture(p.name) for p in sorted(FIXTURES.glob("*.bin"))]


def test_every_truncation_raises_only_analyzer_error() -> None:
    for data in SAMPLES:
        for n in range(len(data)):
            only_analyzer_errors(ssdp.parse, data[:n])
            assert isinstance(ssdp.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"M-SEARCH * HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n"]))
def test_random_bytes_raise_only_analyzer_error(data: bytes, prefix: bytes) -> None:
    only_analyzer_errors(ssdp.parse, prefix + data)
    assert isinstance(ssdp.looks_like(prefix + data), bool)
