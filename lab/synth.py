"""Minimal, fast frame builders (Ethernet, 802.1Q, IPv4, IPv6, UDP, TCP, ICMP).

Generating a million-packet capture with scapy takes minutes; these build frames with struct
and precomputed headers, with correct IPv4 and L4 checksums.
"""

from __future__ import annotations

import ipaddress
import struct

from monitor.vendors.oui import parse_mac

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def mac_bytes(mac: str | int) -> bytes:
    value = parse_mac(mac) if isinstance(mac, str) else mac
    return value.to_bytes(6, "big")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ether(
    src: str | int, dst: str | int, ethertype: int, payload: bytes, vlans: tuple[int, ...] = ()
) -> bytes:
    head = mac_bytes(dst) + mac_bytes(src)
    for vid in vlans:
        head += struct.pack("!HH", 0x8100, vid & 0xFFF)
    return head + struct.pack("!H", ethertype) + payload


def ipv4(
    src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 0, frag: int = 0
) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, ttl, proto, 0, s, d)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, *, hop: int = 64) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, hop, s, d) + payload


def pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    """The IPv4 or IPv6 pseudo-header of an L4 checksum."""
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!IxxxB", length, proto)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(pseudo_header(src, dst, 17, length) + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


def tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    flags: int = TCP_ACK,
    seq: int = 0,
    ack: int = 0,
) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    csum = checksum(pseudo_header(src, dst, 6, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def icmp_echo(ident: int, seq: int, payload: bytes = b"camwatch", reply: bool = False) -> bytes:
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def udp4_frame(
    smac: str,
    dmac: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: bytes,
    vlans: tuple[int, ...] = (),
) -> bytes:
    return ether(smac, dmac, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload)), vlans)


def tcp4_frame(
    smac: str,
    dmac: str,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    flags: int = TCP_ACK,
    seq: int = 0,
    ack: int = 0,
    vlans: tuple[int, ...] = (),
) -> bytes:
    return ether(
        smac,
        dmac,
        0x0800,
        ipv4(src, dst, 6, tcp(src, dst, sport, dport, payload, flags=flags, seq=seq, ack=ack)),
        vlans,
    )


class RtpTemplate:
    """A fixed UDP/RTP flow whose frames differ only in sequence number and timestamp.

    Headers are built once; each frame patches the RTP fields (checksum left as computed for
    the template is wrong after patching, so the UDP checksum is set to 0 = "none", as IPv4 allows).
    """

    def __init__(
        self, smac: str, dmac: str, src: str, dst: str, sport: int, dport: int, size: int, ssrc: int
    ) -> None:
        payload = struct.pack("!BBHII", 0x80, 96, 0, 0, ssrc) + bytes(size - 12)
        frame = bytearray(udp4_frame(smac, dmac, src, dst, sport, dport, payload))
        frame[40:42] = b"\0\0"  # UDP checksum off
        self._frame = frame
        self._rtp = 42

    def frame(self, seq: int, ts: int) -> bytes:
        f = self._frame
        struct.pack_into("!HI", f, self._rtp + 2, seq & 0xFFFF, ts & 0xFFFFFFFF)
        return bytes(f)
