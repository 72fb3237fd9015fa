"""NetBIOS name service (RFC 1001/1002, udp/137): the names Windows-style hosts register and ask for.

NBNS uses DNS's message format, but each name is one 32-letter label: the 16-byte NetBIOS name (15
characters padded with spaces, then a suffix byte naming the service: 0x00 workstation, 0x20 file
server, ...) in "first-level encoding", each half-byte as a letter A-P. Some recorders and NVR software
announce themselves this way. A name registration, refresh or positive answer is its sender telling its
own name: evidence for the inventory (``netbios``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.analyzers import dns as dns_wire
from monitor.events import DeviceFact
from monitor.protocol import Context, ProtocolSpec

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "netbios-ns"
PORT: Final = 137
OPCODES: Final = {0: "query", 5: "registration", 6: "release", 7: "wack", 8: "refresh", 9: "refresh"}
_LETTERS: Final = "abcdefghijklmnop"
_HEADER: Final = struct.Struct("!HHHHHH")


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


def decode_name(label: str) -> tuple[str, int]:
    """``(name, suffix)`` of a first-level encoded label (32 letters A-P, any case); the name's padding is
    stripped. Raises AnalyzerError for anything else."""
    low = label.split(".", 1)[0].lower()
    if len(low) != 32 or any(c not in _LETTERS for c in low):
        raise _error(f"{label[:40]!r} is not a first-level encoded NetBIOS name")
    raw = bytes(((ord(low[i]) - 97) << 4) | (ord(low[i + 1]) - 97) for i in range(0, 32, 2))
    return raw[:15].decode("latin-1").rstrip(" \x00"), raw[15]


@dataclass(frozen=True, slots=True)
class NbnsMessage:
    """One name service message: its operation and the NetBIOS names it carries, decoded."""

    opcode: str
    is_response: bool
    names: tuple[tuple[str, int], ...]  # (name, suffix) of the questions, then of the records

    @classmethod
    def parse(cls, data: bytes) -> NbnsMessage:
        """Parse one NBNS datagram; raises AnalyzerError when it is not one (or is malformed). Record data
        is skipped (NBNS gives DNS's type numbers other meanings: 0x21 is a node status, not SRV)."""
        if len(data) < _HEADER.size:
            raise _error(f"{len(data)} bytes: shorter than a name service header")
        _ident, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
        opcode = OPCODES.get((flags >> 11) & 0xF)
        if opcode is None:
            raise _error(f"opcode {(flags >> 11) & 0xF} is not a name service operation")
        if qd + an + ns + ar == 0 or qd + an + ns + ar > 64:
            raise _error(f"{qd + an + ns + ar} names: not a name service message")
        pos = _HEADER.size
        names: list[tuple[str, int]] = []
        for i in range(qd + an + ns + ar):
            label, pos = dns_wire.read_name(data, pos)
            names.append(decode_name(label))
            fixed = 4 if i < qd else 10  # type, class (and TTL, data length for a record)
            if pos + fixed > len(data):
                raise _error(f"name {i + 1} cut short")
            if i >= qd:
                pos += fixed + int.from_bytes(data[pos + 8 : pos + 10], "big")
                if pos > len(data):
                    raise _error(f"record {i + 1 - qd}: its data runs past the message")
            else:
                pos += fixed
        return cls(opcode, bool(flags & 0x8000), tuple(dict.fromkeys(names)))


def looks_like(payload: bytes) -> bool:
    """Cheap check: DNS-shaped with a first name that is a NetBIOS-encoded label. Never raises."""
    try:
        NbnsMessage.parse(payload)
    except AnalyzerError:
        return False
    return True


# ------------------------------------------------------------------------------ protocol binding


def handle_netbios(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = NbnsMessage.parse(payload)
    own = msg.opcode in ("registration", "refresh") or (msg.is_response and msg.opcode == "query")
    if own and msg.names:
        name, suffix = msg.names[0]
        ctx.fact(flow, from_src, "netbios", f"name={name} suffix={suffix:#04x}", protocol=PROTOCOL)
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_netbios,
        udp_ports=(PORT,),
        control=True,
        emits=(DeviceFact,),
    ),
)
