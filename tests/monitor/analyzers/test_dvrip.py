"""Dahua tcp/37777 (DHIP and DVRIP JSON framing): logins read, passwords not kept, anything else skipped.

No public capture of tcp/37777 was found; frames are built from the layout public clients describe
(mcw0/DahuaConsole ``net.py``) and the logins from the CVE-2021-33044/33045 disclosure (lab/attacks.py).
"""

from __future__ import annotations

import struct

import pytest

from lab import attacks
from monitor.analyzers import AnalyzerError
from monitor.analyzers.dvrip import DvripStreamParser, Frame, handle_dvrip, looks_like
from monitor.analyzers.logins import CHALLENGE, SUCCESS
from monitor.events import AppRequest, AppResponse
from tests.monitor.analyzers.recording import make_flow, run


def _dvrip_json(body: bytes, request_id: int = 7, session: int = 0) -> bytes:
    return (
        struct.pack("<4sIIIIIII", b"\xf6\x00\x00\x00", len(body), request_id, 0, len(body), 0, session, 0)
        + body
    )


def test_dhip_login_bypass_and_its_answer() -> None:
    login = attacks.rpc_login_body("admin", client_type="NetKeyboard", password="Not Used")
    answer = b'{"id":1,"params":{"keepAliveInterval":60},"result":true,"session":1234}'
    flow = make_flow("198.51.100.9", 40000, "10.0.0.65", 37777)
    ctx = run(
        handle_dvrip, flow, [(True, attacks.dhip_login(login)), (False, attacks.dhip_login(answer))], "dvrip"
    )
    (req,) = ctx.of(AppRequest)
    (resp,) = ctx.of(AppResponse)
    assert isinstance(req, AppRequest) and isinstance(resp, AppResponse)
    assert req.protocol == "dvrip" and req.method == "global.login" and req.target == "dhip"
    assert req.param("clientType") == "NetKeyboard" and "Not Used" not in repr(req)
    assert resp.request is req and resp.auth == SUCCESS and resp.status is None


def test_dvrip_json_framing_split_anywhere() -> None:
    login = attacks.rpc_login_body("admin", login_type="Loopback", client_type="Local", ipAddr="127.0.0.1")
    answer = b'{"error":{"code":268632079},"params":{"random":"1","realm":"x"},"result":false}'
    data = _dvrip_json(login)
    flow = make_flow("10.0.0.9", 40001, "10.0.0.65", 37777)
    pieces = [(True, data[:5]), (True, data[5:40]), (True, data[40:]), (False, _dvrip_json(answer))]
    ctx = run(handle_dvrip, flow, pieces, "dvrip")
    (req,) = ctx.of(AppRequest)
    (resp,) = ctx.of(AppResponse)
    assert isinstance(req, AppRequest) and req.target == "dvrip-json" and req.param("loginType") == "Loopback"
    assert isinstance(resp, AppResponse) and resp.auth == CHALLENGE


def test_binary_commands_and_other_calls_are_skipped() -> None:
    binary = b"\xa0\x00\x00\x00" + struct.pack("<I", 5) + bytes(24) + b"12345"
    other = attacks.dhip_login(b'{"method":"magicBox.getDeviceType","params":null,"id":3}')
    parser = DvripStreamParser()
    frames = parser.feed(binary + other)
    assert [f.kind for f in frames] == ["dhip"]
    flow = make_flow("10.0.0.9", 40002, "10.0.0.65", 37777)
    assert run(handle_dvrip, flow, [(True, binary + other)], "dvrip").events == []


def test_garbage_stops_the_parser_without_raising() -> None:
    parser = DvripStreamParser()
    assert parser.feed(b"GET / HTTP/1.1\r\n" + bytes(40)) == []
    assert parser.failed and parser.feed(b"more") == [] and parser.ignored_bytes > 0
    with pytest.raises(AnalyzerError):
        Frame.header(b"\x00" * 32)
    assert not looks_like(b"\x20\x00\x00\x00XXXX" + bytes(24)) and looks_like(attacks.dhip_login(b"{}"))


def test_unlabelled_flows_need_a_frame() -> None:
    flow = make_flow("10.0.0.9", 40003, "10.0.0.65", 37777)
    with pytest.raises(AnalyzerError):
        handle_dvrip(
            run(handle_dvrip, flow, [], "dvrip"), make_flow("10.0.0.9", 1, "10.0.0.65", 2), True, b"hello", 0
        )
