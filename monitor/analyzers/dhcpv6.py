"""DHCPv6 (RFC 8415): the addresses a server leases, and the client they are for.

A message is a type, a 3-byte transaction id and options (code, length, value). Relay messages (12, 13)
carry hop count, link and peer addresses, and the relayed message in a Relay Message option (9), which is
read in turn (at most 8 levels, the protocol's own hop limit is 8 hops by default). Read: the client
identifier (option 1, its DUID: a DUID-LLT or DUID-LL holds the client's link-layer address), the
addresses of IA_NA and IA_TA (options 3, 4, with IA Address options 5 inside) and their valid lifetimes.
A server's Reply leasing an address to a client whose DUID names an Ethernet MAC is that client's claim
to the address.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.devices import is_unicast_mac
from monitor.events import AddressClaim
from monitor.protocol import Context, ProtocolSpec

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "dhcpv6"
MESSAGE_TYPES: Final = {
    1: "solicit",
    2: "advertise",
    3: "request",
    4: "confirm",
    5: "renew",
    6: "rebind",
    7: "reply",
    8: "release",
    9: "decline",
    10: "reconfigure",
    11: "information-request",
    12: "relay-forw",
    13: "relay-repl",
}
RELAY_FORW: Final = 12
RELAY_REPL: Final = 13
OPT_CLIENTID: Final = 1
OPT_IA_NA: Final = 3
OPT_IA_TA: Final = 4
OPT_IAADDR: Final = 5
OPT_RELAY_MSG: Final = 9
_MAX_RELAY_DEPTH: Final = 8


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


@dataclass(frozen=True, slots=True)
class Dhcpv6Message:
    """One DHCPv6 message (the innermost one of a relay chain, with ``relayed`` set)."""

    msg_type: int
    transaction_id: int
    client_duid: bytes | None
    addresses: tuple[tuple[str, int], ...]  # (address, valid lifetime in seconds) of IA_NA / IA_TA
    relayed: bool

    @property
    def name(self) -> str:
        return MESSAGE_TYPES.get(self.msg_type, f"type{self.msg_type}")

    @property
    def client_mac(self) -> int | None:
        """The client's MAC from a DUID-LLT (type 1) or DUID-LL (type 3) of hardware type 1 (Ethernet)."""
        duid = self.client_duid
        if duid is None or len(duid) < 4:
            return None
        duid_type, hw_type = struct.unpack_from("!HH", duid)
        lladdr = duid[8:] if duid_type == 1 else duid[4:] if duid_type == 3 else b""
        if hw_type != 1 or len(lladdr) != 6:
            return None
        return int.from_bytes(lladdr, "big")

    @classmethod
    def parse(cls, data: bytes) -> Dhcpv6Message:
        """Parse one message (a UDP payload); raises AnalyzerError when it is malformed."""
        return parse(data)


def _options(data: bytes, pos: int, end: int, what: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while pos < end:
        if pos + 4 > end:
            raise _error(f"{what}: option header cut short ({end - pos} bytes left)")
        code, length = struct.unpack_from("!HH", data, pos)
        if pos + 4 + length > end:
            raise _error(f"{what}: option {code} of {length} bytes runs past the end")
        out.append((code, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def _ia_addresses(code: int, value: bytes) -> list[tuple[str, int]]:
    fixed = 12 if code == OPT_IA_NA else 4
    if len(value) < fixed:
        raise _error(f"IA option {code} of {len(value)} bytes, shorter than its {fixed}-byte header")
    out: list[tuple[str, int]] = []
    for sub, body in _options(value, fixed, len(value), f"IA option {code}"):
        if sub == OPT_IAADDR:
            if len(body) < 24:
                raise _error(f"IA Address option of {len(body)} bytes, shorter than 24")
            valid = struct.unpack_from("!I", body, 20)[0]
            out.append((str(ipaddress.IPv6Address(body[:16])), valid))
    return out


def parse(data: bytes) -> Dhcpv6Message:
    """Parse one DHCPv6 message, following relay messages to the one they carry."""
    relayed = False
    for _ in range(_MAX_RELAY_DEPTH + 1):
        if len(data) < 4:
            raise _error(f"{len(data)} bytes: shorter than a message header")
        msg_type = data[0]
        if msg_type not in MESSAGE_TYPES:
            raise _error(f"message type {msg_type} is not a DHCPv6 message type (1-13)")
        if msg_type in (RELAY_FORW, RELAY_REPL):
            if len(data) < 34:
                raise _error(f"relay message of {len(data)} bytes, shorter than its 34-byte header")
            inner = [v for c, v in _options(data, 34, len(data), "relay message") if c == OPT_RELAY_MSG]
            if not inner:
                raise _error("relay message without a Relay Message option")
            data, relayed = inner[0], True
            continue
        duid: bytes | None = None
        addresses: list[tuple[str, int]] = []
        for code, value in _options(data, 4, len(data), MESSAGE_TYPES[msg_type]):
            if code == OPT_CLIENTID and duid is None:
                duid = value
            elif code in (OPT_IA_NA, OPT_IA_TA):
                addresses.extend(_ia_addresses(code, value))
        return Dhcpv6Message(msg_type, int.from_bytes(data[1:4], "big"), duid, tuple(addresses), relayed)
    raise _error(f"relay messages nested deeper than {_MAX_RELAY_DEPTH}")


# ------------------------------------------------------------------------------ protocol binding

REPLY: Final = 7


def handle_dhcpv6(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    msg = parse(payload)
    mac = msg.client_mac
    if not msg.relayed:
        # Sent to the client on its own link: the frame's receiver is the interface that has the lease. The
        # DUID's link-layer address may be another interface's (RFC 8415 11.2: any of the client's).
        receiver = flow.dst_mac if from_src else flow.src_mac
        if is_unicast_mac(receiver):
            mac = receiver
    if msg.msg_type == REPLY and mac:
        for address, valid in msg.addresses:
            if valid:
                ctx.emit(AddressClaim(ts, mac, address, PROTOCOL))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL, handler=handle_dhcpv6, udp_ports=(546, 547), control=True, emits=(AddressClaim,)
    ),
)
