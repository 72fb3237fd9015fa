"""Telnet: the server's first data (negotiation, banner) is reported; what the client types is never read."""

from __future__ import annotations

import pytest

from monitor.analyzers import AnalyzerError
from monitor.analyzers.telnet import banner, handle_telnet, looks_like, strip_commands
from monitor.events import TelnetSession
from tests.monitor.analyzers.recording import RecordingContext, make_flow, run

NEGOTIATION = bytes([0xFF, 0xFD, 0x01, 0xFF, 0xFD, 0x1F, 0xFF, 0xFB, 0x01, 0xFF, 0xFB, 0x03])


def test_server_banner_is_reported_once_and_the_flow_let_go() -> None:
    flow = make_flow("10.0.0.9", 40000, "10.0.0.42", 23)
    ctx = run(
        handle_telnet, flow, [(False, NEGOTIATION + b"\r\n(none) login: "), (True, b"root\r\n")], "telnet"
    )
    (event,) = ctx.of(TelnetSession)
    assert isinstance(event, TelnetSession) and not event.from_src and event.banner == "(none) login:"
    assert flow.inspect_left == 0 and flow.app is not None and flow.app.done


def test_client_input_is_not_read() -> None:
    flow = make_flow("10.0.0.9", 40001, "10.0.0.42", 23)
    ctx = RecordingContext()
    assert handle_telnet(ctx, flow, True, b"root\r\n", 0)
    assert ctx.events == []


def test_commands_and_subnegotiation_are_stripped() -> None:
    data = b"\xff\xfa\x18\x01\xff\xf0Hi\xff\xff\x00there\xff\xf1"
    assert strip_commands(data) == b"Hi\xff\x00there"
    assert banner(data) == "Hi there"
    assert looks_like(NEGOTIATION) and not looks_like(b"SSH-2.0-x") and not looks_like(b"\xff")


def test_not_telnet_elsewhere() -> None:
    flow = make_flow("10.0.0.9", 40002, "10.0.0.42", 8023)
    with pytest.raises(AnalyzerError):
        handle_telnet(RecordingContext(), flow, False, b"HTTP/1.1 200 OK\r\n", 0)
    with pytest.raises(AnalyzerError):
        handle_telnet(RecordingContext(), flow, True, b"hello", 0)
    ctx = RecordingContext()
    assert handle_telnet(ctx, flow, False, NEGOTIATION, 0) and len(ctx.events) == 1
