"""Xiongmai's telnet enabler (tcp/9530) and debug console (tcp/9527), from Yarmak's 2020 disclosure and its
public client (the messages and their length byte)."""

from __future__ import annotations

import pytest

from lab import attacks
from monitor.analyzers import AnalyzerError
from monitor.analyzers.logins import CHALLENGE, SUCCESS
from monitor.analyzers.xmdebug import enabler_message, handle_console, handle_enabler, looks_like_enabler
from monitor.events import AppRequest, AppResponse
from tests.monitor.analyzers.recording import make_flow, run


def test_old_firmware_opens_at_once() -> None:
    flow = make_flow("198.51.100.9", 40000, "10.0.0.42", 9530)
    ctx = run(
        handle_enabler,
        flow,
        [(True, attacks.enabler_message("OpenTelnet:OpenOnce")), (False, attacks.enabler_message("Open:OK"))],
        "xm-telnetctl",
    )
    (req,) = ctx.of(AppRequest)
    (resp,) = ctx.of(AppResponse)
    assert isinstance(req, AppRequest) and req.method == "OpenTelnet" and req.target == "OpenTelnet:OpenOnce"
    assert isinstance(resp, AppResponse) and resp.request is req and resp.auth == SUCCESS


def test_challenge_steps_keep_no_ciphertext() -> None:
    flow = make_flow("198.51.100.9", 40001, "10.0.0.42", 9530)
    steps = [
        (True, attacks.enabler_message("OpenTelnet:OpenOnce")),
        (False, attacks.enabler_message("randNum:12345678")),
        (True, b"\x19randNum:" + bytes(range(200, 216))),
        (False, attacks.enabler_message("verify:OK")),
    ]
    ctx = run(handle_enabler, flow, steps, "xm-telnetctl")
    answers = [e.auth for e in ctx.of(AppResponse)]  # type: ignore[attr-defined]
    assert answers == [CHALLENGE, CHALLENGE]
    assert [e.target for e in ctx.of(AppRequest)] == ["OpenTelnet:OpenOnce", "randNum:..."]  # type: ignore[attr-defined]


def test_messages_without_length_byte_and_garbage() -> None:
    assert enabler_message(b"OpenTelnet:OpenOnce") == ("OpenTelnet", "OpenTelnet:OpenOnce")
    assert looks_like_enabler(b"OpenTelnet:OpenOnce") and looks_like_enabler(
        attacks.enabler_message("OpenTelnet:x")
    )
    with pytest.raises(AnalyzerError):
        enabler_message(b"GET / HTTP/1.1")


def test_console_reports_input_but_never_its_text() -> None:
    flow = make_flow("198.51.100.9", 40002, "10.0.0.42", 9527)
    ctx = run(
        handle_console,
        flow,
        [(True, b"admin\r\n"), (False, b"\r\nLogin: "), (True, b"secret\r\n")],
        "xm-console",
    )
    (req,) = ctx.of(AppRequest)
    (resp,) = ctx.of(AppResponse)
    assert isinstance(req, AppRequest) and req.target == "" and req.body == b""
    assert isinstance(resp, AppResponse) and resp.body == b"Login:"
    assert "admin" not in repr(ctx.events) and "secret" not in repr(ctx.events)
    assert flow.inspect_left == 0
