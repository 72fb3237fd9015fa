"""UPnP SOAP analyzer. No capture of a UPnP control request exists in the corpus: the requests are
hand-built (tests/data/fixtures/upnp, see its README) from the UPnP Device Architecture and the IGD
service definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, upnp
from tests.monitor.analyzers.payloads import only_analyzer_errors

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "upnp"
ADD = (FIXTURES / "add_port_mapping.bin").read_bytes()
DELETE = (FIXTURES / "delete_port_mapping_chunked.bin").read_bytes()

ENVELOPE = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    "<s:Body>{}</s:Body></s:Envelope>"
)


def _request(body: str | bytes, soap_action: str | None, method: str = "POST", extra: str = "") -> bytes:
    raw = body.encode() if isinstance(body, str) else body
    head = f"{method} /ctl HTTP/1.1\r\nHOST: 192.168.1.1:5000\r\nContent-Length: {len(raw)}\r\n{extra}"
    if soap_action is not None:
        head += f"SOAPAction: {soap_action}\r\n"
    return (head + "\r\n").encode() + raw


def test_add_port_mapping() -> None:
    req = upnp.parse(ADD)
    assert (req.method, req.path, req.host) == ("POST", "/ctl/IPConn", "192.168.1.1:5000")
    assert req.service_type == "urn:schemas-upnp-org:service:WANIPConnection:1"
    assert req.action == "AddPortMapping" and req.is_port_mapping
    assert (req.external_port, req.internal_port, req.internal_client) == (8000, 8000, "192.168.1.64")
    assert (req.protocol, req.description, req.remote_host) == ("TCP", "HIKVISION 8000", "")
    assert (req.lease_duration, req.enabled) == (0, True)
    assert req.user_agent is not None and "Portable SDK" in req.user_agent
    assert upnp.looks_like(ADD)


def test_delete_port_mapping_chunked() -> None:
    req = upnp.parse(DELETE)
    assert req.action == "DeletePortMapping" and req.is_port_mapping
    assert req.service_type == "urn:schemas-upnp-org:service:WANPPPConnection:1"
    assert (req.external_port, req.protocol, req.internal_client) == (554, "UDP", None)


def test_m_post_and_action_from_body() -> None:
    body = ENVELOPE.format(
        '<u:GetExternalIPAddress xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"/>'
    )
    mpost = _request(
        body,
        None,
        method="M-POST",
        extra='MAN: "http://schemas.xmlsoap.org/soap/envelope/"; ns=01\r\n'
        '01-SOAPACTION: "urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"\r\n',
    )
    req = upnp.parse(mpost)
    assert req.method == "M-POST" and req.action == "GetExternalIPAddress" and not req.is_port_mapping
    bare = upnp.parse(_request(body, '"urn:schemas-upnp-org:service:WANIPConnection:1"'))
    assert bare.action == "GetExternalIPAddress" and bare.arguments == ()


def test_odd_argument_values() -> None:
    body = ENVELOPE.format(
        '<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
        "<NewExternalPort>70000</NewExternalPort><NewInternalPort>８０</NewInternalPort>"
        "<NewEnabled>maybe</NewEnabled><NewLeaseDuration>-1</NewLeaseDuration></u:AddPortMapping>"
    )
    req = upnp.parse(_request(body, '"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"'))
    assert (req.external_port, req.internal_port, req.enabled, req.lease_duration) == (None, None, None, None)
    assert req.argument("NewExternalPort") == "70000"


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    "<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body><a>&lol2;</a></s:Body></s:Envelope>"
)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (ADD.replace(b"POST", b"GET", 1), "not POST"),
        (ADD.replace(b"SOAPACTION", b"X-ACTION"), "no SOAPACTION"),
        (ADD[:-10], "bytes"),
        (ADD.split(b"\r\n\r\n")[0], "incomplete"),
        (ADD.replace(b"Content-Length: ", b"Content-Length: x"), "bad Content-Length"),
        (DELETE.replace(b"\r\n64\r\n", b"\r\nzz\r\n"), "bad chunk size"),
        (DELETE[:-20], "chunk"),
        (_request(BILLION_LAUGHS, '"x#AddPortMapping"'), "DOCTYPE"),
        (_request(ENVELOPE.format(""), '"x#AddPortMapping"'), "without an action"),
        (_request("<Envelope><Body><a>" * 100, '"x#A"'), "malformed XML"),
        (_request("<a>" * 100 + "</a>" * 100, '"x#A"'), "deeper"),
        (_request("<notsoap/>", '"x#A"'), "not a SOAP Envelope"),
        (_request(ENVELOPE.format("<a>\xe9</a>").encode("latin-1"), '"x#A"'), "not UTF-8"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        upnp.parse(data)


def test_every_truncation_raises_only_analyzer_error() -> None:
    for data in (ADD, DELETE):
        for n in range(len(data)):
            only_analyzer_errors(upnp.parse, data[:n])
            assert isinstance(upnp.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([ADD, DELETE]), st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, patch: bytes) -> None:
    pos = where % len(data)
    only_analyzer_errors(upnp.parse, data[:pos] + patch + data[pos + len(patch) :])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    only_analyzer_errors(upnp.parse, data)
    only_analyzer_errors(upnp.parse, b"POST / HTTP/1.1\r\nSOAPACTION: x#y\r\n\r\n" + data)
    assert isinstance(upnp.looks_like(data), bool)
