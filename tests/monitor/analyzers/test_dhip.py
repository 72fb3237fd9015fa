"""Dahua DHIP analyzer. No public capture of DHIP discovery exists: the search and the reply are hand-built
(tests/data/fixtures/dhip, see its README) from the layout described by julienblitte/UniversalScanner
(Dahua2.cs) and rroller/dahua (discovery.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, dhip
from tests.monitor.analyzers.payloads import only_analyzer_errors

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "dhip"
SEARCH = (FIXTURES / "search.bin").read_bytes()
REPLY = (FIXTURES / "reply.bin").read_bytes()


def _frame(body: bytes, header_size: int = 32, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    header = struct.pack("<I4sIIQQ", header_size, b"DHIP", 7, 9, n, n)
    return header + bytes(max(0, header_size - 32)) + body


def test_search() -> None:
    msg = dhip.parse(SEARCH)
    assert msg.is_search and not msg.is_reply
    assert (msg.header_size, msg.session_id, msg.request_id) == (32, 0, 0)
    assert msg.body_length == len(SEARCH) - 32
    assert msg.device_type is None and msg.mac is None
    assert dhip.looks_like(SEARCH)


def test_reply_of_a_camera() -> None:
    msg = dhip.parse(REPLY)
    assert msg.is_reply and msg.method == "client.notifyDevInfo"
    assert (msg.device_type, msg.device_class, msg.serial) == (
        "IPC-HFW2431S-S-S2",
        "IPC",
        "7F0000PAZ00000002",
    )
    assert (msg.ipv4, msg.firmware, msg.vendor, msg.manufacturer) == (
        "192.168.1.108",
        "2.800.0000000.25.R",
        "Dahua",
        "Dahua",
    )
    assert msg.mac == 0x3CEF8C000002 and msg.http_port == 80
    assert dict(msg.device_info)["MachineName"] == "IPC-HFW2431S"
    assert REPLY.endswith(b"\n\x00")  # the terminator some firmware counts in the length


def test_variants() -> None:
    body = json.dumps(
        {
            "method": "client.notifyDevInfo",
            "params": {
                "deviceInfo": {
                    "Mac": "3C-EF-8C-00-00-03",
                    "IPv4Address": "10.0.0.5",
                    "HttpPort": "８０",
                    "Password": "secret",
                    "Init": True,
                    "Nested": {"a": 1},
                }
            },
        }
    ).encode()
    msg = dhip.parse(_frame(body, header_size=40))
    assert (msg.header_size, msg.session_id, msg.request_id) == (40, 7, 9)
    assert (msg.mac, msg.ipv4, msg.http_port) == (0x3CEF8C000003, "10.0.0.5", None)
    assert dict(msg.device_info) == {
        "Mac": "3C-EF-8C-00-00-03",
        "IPv4Address": "10.0.0.5",
        "HttpPort": "８０",
        "Init": "true",
    }
    empty = dhip.parse(_frame(b""))
    assert empty.method is None and not empty.is_reply


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (SEARCH[:31], "shorter"),
        (SEARCH[:4] + b"PIHD" + SEARCH[8:], "magic"),  # the byte-reversed magic of a known client bug
        (_frame(b"{}", header_size=16), "header size"),
        (_frame(b"{}", length=1 << 20), "exceeds"),
        (_frame(b"{}", length=3), "runs past"),
        (_frame(b"[1, 2]"), "not an object"),
        (_frame(b"{'a': 1}"), "not JSON"),
        (_frame(b"[" * 50000 + b"]" * 50000), "nested too deeply|exceeds"),
        (_frame(b'{"a": "\xff"}'), "not UTF-8"),
        (_frame(b'{"a": ' + b"9" * 5000 + b"}"), "not JSON"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        dhip.parse(data)


def test_deep_json_under_the_size_cap_is_refused() -> None:
    with pytest.raises(AnalyzerError, match="nested too deeply"):
        dhip.parse(_frame(b"[" * 30000 + b"]" * 30000))


def test_every_truncation_raises_only_analyzer_error() -> None:
    for data in (SEARCH, REPLY):
        for n in range(len(data)):
            only_analyzer_errors(dhip.parse, data[:n])
            assert isinstance(dhip.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([SEARCH, REPLY]), st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, patch: bytes) -> None:
    pos = where % len(data)
    only_analyzer_errors(dhip.parse, data[:pos] + patch + data[pos + len(patch) :])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    only_analyzer_errors(dhip.parse, data)
    only_analyzer_errors(dhip.parse, _frame(data))
    assert isinstance(dhip.looks_like(data), bool)
