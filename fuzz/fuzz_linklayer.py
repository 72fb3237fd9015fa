"""Fuzz the address-claim analyzers (ARP, NDP, DHCPv6): only AnalyzerError may escape their parsers, and the
sniffer never accepts what the parser refuses (NDP). Seeds: hand-built messages of each kind (RFC 826,
RFC 4861, RFC 8415), since the corpus has almost none.

Run: ``python -m fuzz.fuzz_linklayer [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys

from monitor.analyzers import AnalyzerError, arp, dhcpv6, ndp

NAME = "linklayer"

_CAM = bytes.fromhex("4419b6000001")


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    for fn in (arp.ArpPacket.parse, dhcpv6.parse):
        with contextlib.suppress(AnalyzerError):
            fn(data)
    looks = ndp.looks_like(data)
    try:
        msg = ndp.NdpMessage.parse(data)
    except AnalyzerError as exc:
        # looks_like checks the fixed part only: a malformed option list is for parse to refuse.
        if looks and "option" not in str(exc):
            raise AssertionError(f"looks_like accepted an NDP message parse refuses: {exc}") from None
        return
    _ = msg.name


def seeds() -> list[bytes]:
    arp_req = (
        bytes.fromhex("0001080006040001") + _CAM + bytes([10, 20, 0, 11]) + bytes(6) + bytes([10, 20, 0, 1])
    )
    ns = bytes([135, 0, 0, 0, 0, 0, 0, 0]) + bytes(15) + b"\x01" + bytes([1, 1]) + _CAM
    ra = bytes([134, 0, 0, 0, 64, 0, 7, 8]) + bytes(8) + bytes([1, 1]) + _CAM
    na = bytes([136, 0, 0, 0, 0x80, 0, 0, 0]) + bytes(15) + b"\x01" + bytes([2, 1]) + _CAM
    duid = bytes.fromhex("00030001") + _CAM
    iaaddr = bytes.fromhex("00050018") + bytes(15) + b"\x11" + bytes.fromhex("00000e1000000e10")
    ia_na = bytes.fromhex("0003") + (12 + len(iaaddr)).to_bytes(2, "big") + bytes(12) + iaaddr
    reply = bytes.fromhex("07001234") + bytes.fromhex("0001") + len(duid).to_bytes(2, "big") + duid + ia_na
    relay = bytes([12, 0]) + bytes(32) + bytes.fromhex("0009") + len(reply).to_bytes(2, "big") + reply
    return [arp_req, ns, ra, na, reply, relay]


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
