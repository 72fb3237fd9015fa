"""Telnet (RFC 854): is a server answering, and what does its banner say? What the client types is not read.

A telnet server speaks first: option negotiation (``IAC WILL/DO ...``, RFC 855) and a banner or login
prompt. camwatch reports the first server data of a connection (:class:`~monitor.events.TelnetSession`)
with the printable text of it, and stops reading the connection: its only use is ``device.telnet``, a
watched device that accepts or opens telnet (on a camera, the aftermath of Xiongmai's port-9530 enabler
or of a Mirai-family infection). Client data is never parsed (it carries the account and password).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.events import TelnetSession
from monitor.protocol import Context, ProtocolSpec, stop_inspecting

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "telnet"
IAC: Final = 0xFF
SB: Final = 0xFA
SE: Final = 0xF0
# WILL, WONT, DO, DONT take one option byte.
_OPTION_COMMANDS: Final = frozenset({0xFB, 0xFC, 0xFD, 0xFE})
MAX_BANNER: Final = 80
_UNPRINTABLE_RE: Final = re.compile(rb"[^\x20-\x7e]+")


def strip_commands(data: bytes) -> bytes:
    """``data`` without telnet commands (IAC sequences and subnegotiations); ``IAC IAC`` is a 0xFF byte."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b != IAC:
            out.append(b)
            i += 1
            continue
        if i + 1 >= n:
            break
        cmd = data[i + 1]
        if cmd == IAC:
            out.append(IAC)
            i += 2
        elif cmd in _OPTION_COMMANDS:
            i += 3
        elif cmd == SB:
            end = data.find(bytes((IAC, SE)), i + 2)
            i = n if end < 0 else end + 2
        else:
            i += 2
    return bytes(out)


def banner(data: bytes) -> str:
    """The printable text of server data: commands removed, runs of other bytes as one space."""
    text = _UNPRINTABLE_RE.sub(b" ", strip_commands(data)).strip()
    return text[:MAX_BANNER].decode("ascii")


def looks_like(payload: bytes) -> bool:
    """Option negotiation first: ``IAC`` followed by WILL/WONT/DO/DONT or a subnegotiation."""
    return len(payload) >= 3 and payload[0] == IAC and (payload[1] in _OPTION_COMMANDS or payload[1] == SB)


TELNET_PORTS: Final = (23, 2323)


def handle_telnet(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    opener_is_src = flow.opener_is_src
    server = from_src != opener_is_src
    on_port = (flow.dst if opener_is_src else flow.src)[1] in TELNET_PORTS
    if not server:
        # What the client types (the account, the password) is never read.
        if flow.protocol is None and not on_port:
            raise AnalyzerError(PROTOCOL, "client data on a port that is not telnet's")
        return True
    if flow.protocol is None and not on_port and not looks_like(payload):
        raise AnalyzerError(PROTOCOL, "no option negotiation")
    ctx.emit(TelnetSession(ts, flow, from_src, banner(payload)))
    stop_inspecting(flow)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_telnet,
        tcp_ports=TELNET_PORTS,
        sniff=looks_like,
        tcp_guess=140,
        emits=(TelnetSession,),
    ),
)
