"""Dahua's device port, tcp/37777: DHIP and DVRIP framing around JSON-RPC calls (the login among them).

Dahua devices speak two framings on their SDK port (and DHIP also on their web ports), each a 32-byte
little-endian header followed by a JSON body, as described by public client implementations:

- **DHIP**: ``20 00 00 00 'DHIP'``, then session id (4), request id (4), body length (4), 0 (4), body
  length again (4), 0 (4) (the header of UDP discovery, ``monitor/analyzers/dhip.py``);
- **DVRIP JSON**: ``f6 00 00 00``, then body length (4), request id (4), 0 (4), body length again (4),
  0 (4), session id (4), 0 (4);
- older **DVRIP binary** commands (first byte ``a0``, ``a1``, ``b0``... the 3DES login, media) carry
  their extension length at bytes 4..8; they are skipped here.

camwatch reads the JSON-RPC logins (``global.login``) of either framing: the parameters CVE-2021-33044
(``clientType: NetKeyboard``) and CVE-2021-33045 (``loginType: Loopback``) abuse, and whether the device
said ``"result": true``. Passwords are never kept (``monitor/analyzers/logins.py``).

Sources for the layout: mcw0/DahuaConsole (``net.py``: both headers), the DHIP discovery analyzer's
sources, and bashis's disclosure of CVE-2021-33044/33045 (Full Disclosure, October 2021).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.analyzers.logins import rpc_login, rpc_outcome
from monitor.events import AppRequest, AppResponse
from monitor.protocol import Context, ProtocolSpec, flow_state, offer_skip

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "dvrip"
MAX_PENDING: Final = 16  # login calls of a connection waiting for their answers (the oldest forgotten)
HEADER_LEN: Final = 32
MAX_BODY: Final = 64 * 1024  # a JSON call is small; a bigger body is skipped, not buffered
# A skipped frame longer than this (a firmware upgrade's payload) is skipped by the flow table too, on a
# connection whose requests are all read (ProtocolSpec.requests).
SKIP_FRAME: Final = 16384
DHIP_MAGIC: Final = b"DHIP"
DVRIP_JSON: Final = 0xF6
# First bytes of the binary DVRIP commands and answers (login, realm, discovery, media...).
_BINARY_COMMANDS: Final = frozenset({0xA0, 0xA1, 0xA3, 0xA4, 0xA5, 0xA8, 0xB0, 0xB1, 0xB3, 0xB4, 0xF1, 0xF4})
_U32: Final = struct.Struct("<I")

KIND_DHIP: Final = "dhip"
KIND_JSON: Final = "dvrip-json"
KIND_BINARY: Final = "dvrip-binary"


@dataclass(frozen=True, slots=True)
class Frame:
    """One framed message: its kind, request id, and body (the JSON text for the JSON kinds)."""

    kind: str
    request_id: int
    body: bytes

    @classmethod
    def header(cls, data: bytes) -> tuple[str, int, int]:
        """(kind, request id, body length) of the header at the start of ``data`` (32 bytes or more)."""
        if len(data) < HEADER_LEN:
            raise AnalyzerError(PROTOCOL, f"{len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
        if data[4:8] == DHIP_MAGIC:
            if _U32.unpack_from(data, 0)[0] != HEADER_LEN:
                raise AnalyzerError(PROTOCOL, "DHIP header size is not 32")
            return KIND_DHIP, _U32.unpack_from(data, 12)[0], _U32.unpack_from(data, 16)[0]
        first = data[0]
        if first == DVRIP_JSON and data[1:4] == b"\x00\x00\x00":
            return KIND_JSON, _U32.unpack_from(data, 8)[0], _U32.unpack_from(data, 4)[0]
        if first in _BINARY_COMMANDS:
            return KIND_BINARY, 0, _U32.unpack_from(data, 4)[0]
        raise AnalyzerError(PROTOCOL, f"not a DHIP or DVRIP header (first bytes {data[:8].hex()})")


def looks_like(payload: bytes) -> bool:
    """DHIP's magic after a 32-byte header size, or a DVRIP JSON header (never raises)."""
    if len(payload) < HEADER_LEN:
        return False
    if payload[:8] == b"\x20\x00\x00\x00" + DHIP_MAGIC:
        return True
    return payload[:4] == b"\xf6\x00\x00\x00" and payload[4:8] == payload[16:20]


class DvripStreamParser:
    """Follows one direction of a connection and returns its frames; bodies above ``MAX_BODY`` are skipped.
    Never raises: after garbage it stops (``failed``) and only counts bytes."""

    def __init__(self) -> None:
        self._buf = b""
        self._skip = 0
        self.failed = False
        self.error: str | None = None
        self.ignored_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the next segment (at most a header and a ``MAX_BODY`` body)."""
        return len(self._buf)

    @property
    def skippable(self) -> int:
        """Bytes of a skipped frame still to come (a binary command's payload, a body above MAX_BODY)."""
        return self._skip

    def skip_body(self, nbytes: int) -> None:
        """The next ``nbytes`` (at most :attr:`skippable`) were skipped without being read."""
        if not 0 < nbytes <= self._skip:
            raise ValueError(f"cannot skip {nbytes} bytes here")
        self._skip -= nbytes

    def feed(self, segment: bytes) -> list[Frame]:
        """Take the next payload of this direction; return the frames it completed. Never raises."""
        if self.failed:
            self.ignored_bytes += len(segment)
            return []
        out: list[Frame] = []
        data = self._buf + segment if self._buf else segment
        self._buf = b""
        pos = 0
        n = len(data)
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                continue
            if n - pos < HEADER_LEN:
                break
            try:
                kind, request_id, length = Frame.header(data[pos : pos + HEADER_LEN])
            except AnalyzerError as exc:
                self.failed = True
                self.error = exc.reason
                self.ignored_bytes += n - pos
                return out
            if kind == KIND_BINARY or length > MAX_BODY:
                self._skip = length
                pos += HEADER_LEN
                continue
            if n - pos - HEADER_LEN < length:
                break  # the body continues in the next segment
            body = data[pos + HEADER_LEN : pos + HEADER_LEN + length]
            out.append(Frame(kind, request_id, body))
            pos += HEADER_LEN + length
        if pos < n:
            self._buf = data[pos:]
        return out


class _Logins:
    """Per connection: the login requests waiting for their answers, and the request count."""

    __slots__ = ("pending", "seq")

    def __init__(self) -> None:
        # A list, not a deque: an empty deque is 624 bytes, and every watched connection has one.
        self.pending: list[tuple[int, AppRequest]] = []
        self.seq = 0


def handle_dvrip(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol is None and not (
        looks_like(payload) or (payload[:1] and payload[0] in _BINARY_COMMANDS)
    ):
        raise AnalyzerError(PROTOCOL, "not a DHIP or DVRIP frame")
    parser = flow_state(flow, (PROTOCOL, from_src), DvripStreamParser)
    frames = parser.feed(payload)
    if not ctx.watched(flow):
        return True  # logins are read for the rules about watched devices only
    if parser.skippable > SKIP_FRAME and from_src == flow.opener_is_src:
        # The client's calls are all read (request mode): a big frame it sends need not be.
        offer_skip(flow, from_src, parser.skippable, parser.skip_body)
    logins = flow_state(flow, PROTOCOL, _Logins)
    for frame in frames:
        if not frame.body:
            continue
        # The side that opened the connection asks; the device answers.
        if from_src == flow.opener_is_src:
            rpc = rpc_login(frame.body)
            if rpc is None:
                continue
            params, login = rpc
            method = next((v for k, v in params if k == "method"), "login")
            request = AppRequest(ts, flow, from_src, PROTOCOL, method, frame.kind, logins.seq, login, params)
            logins.seq += 1
            logins.pending.append((frame.request_id, request))
            del logins.pending[:-MAX_PENDING]
            ctx.emit(request)
        elif logins.pending:
            outcome = rpc_outcome(frame.body)
            if outcome is None:
                continue
            match = next((r for rid, r in logins.pending if rid == frame.request_id), logins.pending[0][1])
            logins.pending = [p for p in logins.pending if p[1] is not match]
            ctx.emit(AppResponse(ts, flow, from_src, PROTOCOL, None, match, outcome, frame.body[:1024]))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_dvrip,
        tcp_ports=(37777,),
        sniff=looks_like,
        tcp_guess=130,
        requests=True,
        emits=(AppRequest, AppResponse),
    ),
)
