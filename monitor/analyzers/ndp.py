"""IPv6 Neighbor Discovery (RFC 4861): which MAC owns which IPv6 address, and who the routers are.

NDP travels in ICMPv6 (types 133-137); the handler gets the whole ICMPv6 message. Read: router
solicitations and advertisements, neighbour solicitations and advertisements (target address, the
router flag), redirects, and the link-layer address options (1 source, 2 target). A neighbour
advertisement claims its target for its link-layer address (the option, else the frame's sender); a
solicitation claims its sender's address for its source link-layer option (not from ``::``, duplicate
address detection); a router advertisement makes its sender a router.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from monitor.analyzers import AnalyzerError
from monitor.events import AddressClaim, RouterAdvert
from monitor.protocol import Context, ProtocolSpec

if TYPE_CHECKING:
    from monitor.flows import Flow

PROTOCOL: Final = "ndp"
ROUTER_SOLICITATION: Final = 133
ROUTER_ADVERTISEMENT: Final = 134
NEIGHBOR_SOLICITATION: Final = 135
NEIGHBOR_ADVERTISEMENT: Final = 136
REDIRECT: Final = 137
OPT_SOURCE_LL: Final = 1
OPT_TARGET_LL: Final = 2

NAMES: Final = {
    ROUTER_SOLICITATION: "router_solicitation",
    ROUTER_ADVERTISEMENT: "router_advertisement",
    NEIGHBOR_SOLICITATION: "neighbor_solicitation",
    NEIGHBOR_ADVERTISEMENT: "neighbor_advertisement",
    REDIRECT: "redirect",
}
# Bytes between the ICMPv6 header and the options (after type, code, checksum).
_BODY: Final = {
    ROUTER_SOLICITATION: 4,
    ROUTER_ADVERTISEMENT: 12,
    NEIGHBOR_SOLICITATION: 20,
    NEIGHBOR_ADVERTISEMENT: 20,
    REDIRECT: 36,
}


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


@dataclass(frozen=True, slots=True)
class NdpMessage:
    """One Neighbor Discovery message. ``target`` is the target address (NS, NA, redirect); ``router``
    and ``override`` the R and O flags of an NA; link-layer addresses are MACs as integers (6-byte options
    only)."""

    type: int
    target: str | None
    router: bool
    source_ll: int | None
    target_ll: int | None
    router_lifetime: int | None  # seconds, router advertisements only
    override: bool = False

    @property
    def name(self) -> str:
        return NAMES[self.type]

    @classmethod
    def parse(cls, data: bytes) -> NdpMessage:
        """Parse an ICMPv6 message that is NDP; raises AnalyzerError otherwise (or when malformed)."""
        if len(data) < 4:
            raise _error(f"{len(data)} bytes: shorter than an ICMPv6 header")
        mtype, code = data[0], data[1]
        if mtype not in _BODY:
            raise _error(f"ICMPv6 type {mtype} is not Neighbor Discovery (133-137)")
        if code != 0:
            raise _error(f"{NAMES[mtype]} with code {code} (must be 0)")
        start = 4 + _BODY[mtype]
        if len(data) < start:
            raise _error(f"{NAMES[mtype]} of {len(data)} bytes, shorter than its {start}-byte body")
        target = None
        if mtype in (NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT, REDIRECT):
            target = str(ipaddress.IPv6Address(data[8:24]))
        lifetime = struct.unpack_from("!H", data, 6)[0] if mtype == ROUTER_ADVERTISEMENT else None
        source_ll = target_ll = None
        for opt_type, value in _options(data, start, NAMES[mtype]):
            if len(value) != 6:
                continue  # a link-layer address of another kind than Ethernet
            if opt_type == OPT_SOURCE_LL and source_ll is None:
                source_ll = int.from_bytes(value, "big")
            elif opt_type == OPT_TARGET_LL and target_ll is None:
                target_ll = int.from_bytes(value, "big")
        router = mtype == NEIGHBOR_ADVERTISEMENT and bool(data[4] & 0x80)
        override = mtype == NEIGHBOR_ADVERTISEMENT and bool(data[4] & 0x20)
        return cls(mtype, target, router, source_ll, target_ll, lifetime, override)


def _options(data: bytes, pos: int, what: str) -> list[tuple[int, bytes]]:
    """The options from ``pos``: (type, value after type and length). A link-layer address option's value
    is the address followed by padding; the padding is cut for 8-byte options (Ethernet)."""
    out: list[tuple[int, bytes]] = []
    end = len(data)
    while pos < end:
        if pos + 2 > end:
            raise _error(f"{what}: option cut before its length")
        opt_type, units = data[pos], data[pos + 1]
        if units == 0:
            raise _error(f"{what}: option {opt_type} has length 0")
        size = units * 8
        if pos + size > end:
            raise _error(f"{what}: option {opt_type} of {size} bytes runs past the message")
        value = data[pos + 2 : pos + size]
        out.append(
            (opt_type, value[:6] if units == 1 and opt_type in (OPT_SOURCE_LL, OPT_TARGET_LL) else value)
        )
        pos += size
    return out


def looks_like(payload: bytes) -> bool:
    """Cheap check: an ICMPv6 Neighbor Discovery type with code 0 and its body. Never raises."""
    return (
        len(payload) >= 4
        and payload[0] in _BODY
        and payload[1] == 0
        and len(payload) >= 4 + _BODY[payload[0]]
    )


# ------------------------------------------------------------------------------ protocol binding


def handle_ndp(ctx: Context, flow: Flow, from_src: bool, payload: bytes, ts: int) -> bool:
    if flow.protocol == PROTOCOL and payload[:1] and payload[0] not in _BODY:
        return True  # another ICMPv6 message between the same two hosts (an echo): nothing to read
    msg = NdpMessage.parse(payload)
    sender_ip = (flow.src if from_src else flow.dst)[0]
    frame_mac = flow.src_mac if from_src else flow.dst_mac
    unspecified = sender_ip == "::"
    if msg.type in (NEIGHBOR_SOLICITATION, ROUTER_SOLICITATION) and msg.source_ll and not unspecified:
        ctx.emit(AddressClaim(ts, msg.source_ll, sender_ip, PROTOCOL))
    elif msg.type == NEIGHBOR_ADVERTISEMENT and msg.target is not None:
        owner = msg.target_ll or frame_mac
        # Only an advertisement with the override flag says "this address is mine": a proxy (RFC 4389) or
        # an anycast address's holder answers without it (RFC 4861 7.2.6), for an address it does not own.
        if owner and msg.override:
            ctx.emit(AddressClaim(ts, owner, msg.target, PROTOCOL))
        if owner and msg.router:
            ctx.emit(RouterAdvert(ts, owner, msg.target, PROTOCOL))
    elif msg.type == ROUTER_ADVERTISEMENT:
        router = msg.source_ll or frame_mac
        if router and not unspecified:
            ctx.emit(AddressClaim(ts, router, sender_ip, PROTOCOL))
            ctx.emit(RouterAdvert(ts, router, sender_ip, PROTOCOL))
    return True


PROTOCOLS = (
    ProtocolSpec(
        name=PROTOCOL,
        handler=handle_ndp,
        sniff=looks_like,
        ip_protocol=58,
        ip_guess=10,
        control=True,
        emits=(AddressClaim, RouterAdvert),
    ),
)
