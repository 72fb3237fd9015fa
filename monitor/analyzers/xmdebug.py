"""Xiongmai/HiSilicon service ports: the telnet enabler (tcp/9530) and the debug console (tcp/9527).

Xiongmai firmware for HiSilicon-based recorders and cameras listens on tcp/9530 (``macGuarder`` /
``dvrHelper``) for a command that starts a telnet daemon with a fixed root password, and older firmware
has a debug console on tcp/9527. Neither has a legitimate use on a site network.

The enabler's messages are short ASCII strings, each sent with a leading length byte by the public
client: ``OpenTelnet:OpenOnce`` (old firmware answers ``Open:OK`` at once; newer firmware answers
``randNum:<seed>`` and wants ``randNum:<encrypted seed>``, ``verify:OK``, then ``CMD:<encrypted
Telnet:OpenOnce>`` before ``Open:OK``). Sources: Vladislav Yarmak's disclosure (habr.com, "Full
disclosure: 0day vulnerability (backdoor) in firmware for Xiongmai-based DVRs, NVRs and IP cameras",
February 2020) and its client (github.com/Snawoot/hisilicon-dvr-telnet).

Each client message is an :class:`~monitor.events.AppRequest` (``method`` the command word, ``target``
the printable command), each answer an :class:`~monitor.events.AppResponse` (``auth`` ``success`` for
``Open:OK``, ``challenge`` for ``randNum``). On the debug console only the fact of client input is
reported (what is typed there may be a password), and the first lines the device prints.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.analyzers.logins import CHALLENGE, FAILURE, SUCCESS
from monitor.events import AppRequest, AppResponse
from monitor.protocol import Context, ProtocolSpec, flow_state, stop_inspecting

if TYPE_CHECKING:
    from monitor.flows import Flow

ENABLER: Final = "xm-telnetctl"
CONSOLE: Final = "xm-console"
ENABLER_PORT: Final = 9530
CONSOLE_PORT: Final = 9527
MAX_PENDING: Final = 8  # requests of a connection waiting for their answers (the oldest forgotten)
MAX_TEXT: Final = 64
_WORD_RE: Final = re.compile(rb"([A-Za-z]{3,16}):")
_UNPRINTABLE_RE: Final = re.compile(rb"[^\x20-\x7e]+")
_KNOWN_WORDS: Final = frozenset({b"OpenTelnet", b"Telnet", b"randNum", b"CMD", b"verify", b"Open"})


def printable(data: bytes, limit: int = MAX_TEXT) -> str:
    """Printable ASCII of ``data``, other runs as one space."""
    return _UNPRINTABLE_RE.sub(b" ", data).strip()[:limit].decode("ascii")


def enabler_message(payload: bytes) -> tuple[str, str]:
    """(command word, printable text) of one enabler message, with or without its length byte; the
    encrypted part of ``randNum:``/``CMD:`` messages is left out of the text."""
    # The public client's length byte counts itself, the text and its NUL; firmware that skips it exists.
    body = payload[1:] if payload and not 0x41 <= payload[0] <= 0x7A else payload
    m = _WORD_RE.match(body)
    if m is None or m.group(1) not in _KNOWN_WORDS:
        raise AnalyzerError(ENABLER, f"not a telnet-enabler message: {payload[:16]!r}")
    word = m.group(1).decode("ascii")
    rest = body[m.end() :].rstrip(b"\x00")
    # OpenTelnet:OpenOnce and the answers are text; the challenge steps carry ciphertext.
    text = f"{word}:{printable(rest)}" if (rest.isascii() and rest.isalnum()) or not rest else f"{word}:..."
    return word, text


def looks_like_enabler(payload: bytes) -> bool:
    """``OpenTelnet:`` at the start (after an optional length byte)."""
    return payload[:11] == b"OpenTelnet:" or (payload[1:12] == b"OpenTelnet:" and payload[0] < 0x41)


class _Exchange:
    __slots__ = ("answered", "asked", "pending", "seq")

    def __init__(self) -> None:
        self.pending: list[AppRequest] = []  # not a deque: an empty one is 624 bytes
        self.seq = 0
        self.asked = False
        self.answered = False


def handle_enabler(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    word, text = enabler_message(payload)
    ex = flow_state(flow, ENABLER, _Exchange)
    if from_src == flow.opener_is_src:
        request = AppRequest(ts, flow, from_src, ENABLER, word, text, ex.seq)
        ex.seq += 1
        ex.pending.append(request)
        del ex.pending[:-MAX_PENDING]
        ctx.emit(request)
        return True
    asked = ex.pending.pop(0) if ex.pending else None
    if word == "Open":
        auth: str | None = SUCCESS if text.startswith("Open:OK") else FAILURE
    elif word == "randNum":
        auth = CHALLENGE
    elif word == "verify":
        auth = CHALLENGE if text.startswith("verify:OK") else FAILURE
    else:
        auth = None
    ctx.emit(AppResponse(ts, flow, from_src, ENABLER, None, asked, auth, text.encode("ascii")))
    return True


def handle_console(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    on_port = (flow.dst if flow.opener_is_src else flow.src)[1] == CONSOLE_PORT
    if flow.protocol is None and not on_port:
        raise AnalyzerError(CONSOLE, "not on the debug console port")
    ex = flow_state(flow, CONSOLE, _Exchange)
    if from_src == flow.opener_is_src:
        if not ex.asked:
            ex.asked = True
            # Only the fact of input: what is typed on a console may be a password.
            request = AppRequest(ts, flow, from_src, CONSOLE, "input", "", ex.seq)
            ex.seq += 1
            ex.pending.append(request)
            ctx.emit(request)
    elif not ex.answered:
        ex.answered = True
        asked = ex.pending.pop(0) if ex.pending else None
        text = printable(payload).encode("ascii")
        ctx.emit(AppResponse(ts, flow, from_src, CONSOLE, None, asked, None, text))
    if ex.asked and ex.answered:
        stop_inspecting(flow)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=ENABLER,
        handler=handle_enabler,
        tcp_ports=(ENABLER_PORT,),
        sniff=looks_like_enabler,
        tcp_guess=150,
        control=True,
        emits=(AppRequest, AppResponse),
    ),
    ProtocolSpec(
        name=CONSOLE,
        handler=handle_console,
        tcp_ports=(CONSOLE_PORT,),
        emits=(AppRequest, AppResponse),
    ),
)
