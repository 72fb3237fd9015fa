"""ARP for IPv4 over Ethernet (RFC 826, RFC 5227): who says, on its own segment, which address is its.

Only the Ethernet/IPv4 form is read (hardware type 1, protocol type 0x0800, lengths 6 and 4). The sender
of a request or a reply claims its address; an ARP probe (sender address 0.0.0.0, RFC 5227) claims
nothing. Limits: a router doing proxy ARP answers for the hosts behind it, and its claims are taken as
its own; the same private addresses reused on two VLANs of one site meet in one table.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from monitor.analyzers import AnalyzerError
from monitor.events import AddressClaim
from monitor.protocol import Context, LinkSpec

PROTOCOL: Final = "arp"
ETHERTYPE_ARP: Final = 0x0806
REQUEST: Final = 1
REPLY: Final = 2

_HEADER = struct.Struct("!HHBBH6s4s6s4s")


def _error(reason: str) -> AnalyzerError:
    return AnalyzerError(PROTOCOL, reason)


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """One Ethernet/IPv4 ARP packet; MACs are integers, addresses dotted text."""

    operation: int  # 1 request, 2 reply (others are RARP/InARP, refused)
    sender_mac: int
    sender_ip: str
    target_mac: int
    target_ip: str

    @classmethod
    def parse(cls, data: bytes) -> ArpPacket:
        """Parse the ARP payload (after the ethertype); raises AnalyzerError when it is not Ethernet/IPv4
        ARP. Bytes after the 28-byte packet (Ethernet padding) are ignored."""
        if len(data) < _HEADER.size:
            raise _error(f"{len(data)} bytes, shorter than the 28 of an Ethernet/IPv4 ARP packet")
        htype, ptype, hlen, plen, oper, sha, spa, tha, tpa = _HEADER.unpack_from(data)
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4):
            raise _error(
                f"hardware type {htype}, protocol {ptype:#06x}, lengths {hlen}/{plen}: not Ethernet/IPv4"
            )
        if oper not in (REQUEST, REPLY):
            raise _error(f"operation {oper} is neither request (1) nor reply (2)")
        return cls(
            oper,
            int.from_bytes(sha, "big"),
            str(ipaddress.IPv4Address(spa)),
            int.from_bytes(tha, "big"),
            str(ipaddress.IPv4Address(tpa)),
        )

    @property
    def is_probe(self) -> bool:
        """An address conflict probe (RFC 5227): the sender has no address yet."""
        return self.sender_ip == "0.0.0.0"

    @property
    def is_announcement(self) -> bool:
        """A gratuitous ARP: the sender announces its own address."""
        return self.sender_ip == self.target_ip


# ------------------------------------------------------------------------------ protocol binding


def handle_arp(ctx: Context, src_mac: int, dst_mac: int, payload: bytes, ts: int) -> None:
    pkt = ArpPacket.parse(payload)
    if not pkt.is_probe and pkt.sender_mac:
        ctx.emit(AddressClaim(ts, pkt.sender_mac, pkt.sender_ip, PROTOCOL))


LINK_PROTOCOLS = (
    LinkSpec(name=PROTOCOL, ethertype=ETHERTYPE_ARP, handler=handle_arp, emits=(AddressClaim,)),
)
