"""The decoder's bounded walks, at and past each bound: MPLS labels, IPv6 extension headers, tunnels.

Each walk stops after a fixed number of steps so that a hostile packet costs bounded work. Up to the bound
the packet decodes to its flow; past it the packet is never mistaken for another flow: an MPLS stack that
does not end is not IP, an extension chain that does not end is truncated, and a tunnel nested deeper
than we unwrap stays a tunnel packet between the innermost addresses reached. An IPv6 extension chain
longer than we walk is counted as such (`ext_overflow`), not as truncated: nothing was cut.
"""

from __future__ import annotations

import struct

import pytest

from lab.synth import ether, ipv4, ipv6, udp
from monitor.decode import IPV6_MAX_EXT
from tests.monitor.test_decode import M1, M2, decode_frames, row

MAX_MPLS_LABELS = 4
MAX_IPV6_EXT = IPV6_MAX_EXT
MAX_TUNNELS = 2


def _udp4(src: str, dst: str) -> bytes:
    return ipv4(src, dst, 17, udp(src, dst, 5000, 53, b"q"))


def _mpls(labels: int, payload: bytes) -> bytes:
    stack = b"".join(
        struct.pack("!I", ((16 + i) << 12) | (0x100 if i == labels - 1 else 0) | 64) for i in range(labels)
    )
    return ether(M1, M2, 0x8847, stack + payload)


@pytest.mark.parametrize("labels", [1, MAX_MPLS_LABELS])
def test_mpls_stack_up_to_the_bound_decodes(labels: int) -> None:
    r = row(decode_frames([(1, _mpls(labels, _udp4("10.0.0.1", "10.0.0.2")))]), 0)
    assert (r["ok"], r["src"], r["dst"], r["proto"], r["sport"], r["dport"]) == (
        True,
        "10.0.0.1",
        "10.0.0.2",
        17,
        5000,
        53,
    )


def test_mpls_stack_past_the_bound_is_not_ip() -> None:
    d = decode_frames([(1, _mpls(MAX_MPLS_LABELS + 1, _udp4("10.0.0.1", "10.0.0.2")))])
    assert (bool(d.ok[0]), bool(d.is_ip[0]), bool(d.truncated[0])) == (False, False, False)


def _ext_chain(count: int, last_nh: int = 17) -> tuple[int, bytes]:
    """`count` extension headers: destination options, with an authentication header (AH, whose length
    counts 4-byte units minus 2) in second place; returns the IPv6 next header and the chain."""
    kinds = [60] * count
    if count >= 2:
        kinds[1] = 51
    chain = b""
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < count else last_nh
        if kind == 51:
            chain += struct.pack("!BBHII", nxt, 2, 0, 0x100, 1) + bytes(4)  # (2 + 2) * 4 = 16 bytes
        else:
            chain += struct.pack("!BB6x", nxt, 1) + bytes(8)  # (1 + 1) * 8 = 16 bytes
    return kinds[0], chain


@pytest.mark.parametrize("count", [2, MAX_IPV6_EXT])
def test_ipv6_extension_chain_up_to_the_bound_decodes(count: int) -> None:
    src, dst = "2001:db8::1", "2001:db8::2"
    nh, chain = _ext_chain(count)
    d = decode_frames([(1, ether(M1, M2, 0x86DD, ipv6(src, dst, nh, chain + udp(src, dst, 5000, 53, b"q"))))])
    r = row(d, 0)
    assert (r["ok"], r["proto"], r["sport"], r["dport"]) == (True, 17, 5000, 53)
    assert int(d.payload_off[0]) == 14 + 40 + 16 * count + 8


def test_the_bound_walks_at_least_eight_headers() -> None:
    # RFC 8200 allows each header once (destination options twice): 8 covers every chain seen in practice.
    assert MAX_IPV6_EXT >= 8


def test_ipv6_extension_chain_past_the_bound_is_counted_as_too_long_not_truncated() -> None:
    src, dst = "2001:db8::1", "2001:db8::2"
    nh, chain = _ext_chain(MAX_IPV6_EXT + 1)
    d = decode_frames([(1, ether(M1, M2, 0x86DD, ipv6(src, dst, nh, chain + udp(src, dst, 5000, 53, b"q"))))])
    assert (bool(d.ok[0]), bool(d.is_ip[0]), bool(d.truncated[0]), bool(d.ext_overflow[0])) == (
        False,
        True,
        False,
        True,
    )


def test_ipv6_extension_chain_cut_by_the_snap_length_is_truncated() -> None:
    src, dst = "2001:db8::1", "2001:db8::2"
    nh, chain = _ext_chain(3)
    frame = ether(M1, M2, 0x86DD, ipv6(src, dst, nh, chain + udp(src, dst, 5000, 53, b"q")))
    d = decode_frames([(1, frame[: 14 + 40 + 16 + 4])])  # inside the second header
    assert (bool(d.ok[0]), bool(d.truncated[0]), bool(d.ext_overflow[0])) == (False, True, False)


def test_five_headers_as_seen_on_the_internet_decode() -> None:
    """hop-by-hop, destination options, routing, fragment, destination options, then UDP: the chain of
    realtraffic's 16_five.pcap, which the old bound of 4 dropped as truncated."""
    src, dst = "2001:db8::1", "2001:db8::2"

    def opts(nh: int) -> bytes:  # PadN
        return struct.pack("!BB", nh, 0) + bytes([1, 4, 0, 0, 0, 0])

    chain = opts(60) + opts(43) + struct.pack("!BBBBI", 44, 0, 0, 0, 0) + struct.pack("!BBHI", 60, 0, 0, 7)
    chain += opts(17)
    d = decode_frames([(1, ether(M1, M2, 0x86DD, ipv6(src, dst, 0, chain + udp(src, dst, 5000, 53, b"q"))))])
    r = row(d, 0)
    assert (r["ok"], r["proto"], r["sport"], r["dport"]) == (True, 17, 5000, 53)
    assert bool(d.fragment[0]) and not bool(d.later_fragment[0])


def _ip_in_ip(depth: int) -> bytes:
    """`depth` IPv4-in-IPv4 headers (10.0.<k>.1 -> 10.0.<k>.2 at level k) around a UDP packet."""
    packet = _udp4(f"10.0.{depth}.1", f"10.0.{depth}.2")
    for k in range(depth - 1, -1, -1):
        packet = ipv4(f"10.0.{k}.1", f"10.0.{k}.2", 4, packet)
    return ether(M1, M2, 0x0800, packet)


@pytest.mark.parametrize("depth", [1, MAX_TUNNELS])
def test_tunnels_up_to_the_bound_give_the_inner_flow(depth: int) -> None:
    d = decode_frames([(1, _ip_in_ip(depth))])
    r = row(d, 0)
    assert (r["ok"], r["src"], r["dst"], r["proto"], r["sport"]) == (
        True,
        f"10.0.{depth}.1",
        f"10.0.{depth}.2",
        17,
        5000,
    )
    # The IP length is the inner packet's: the analyzers cut the payload at l3_off + ip_len.
    assert int(d.ip_len[0]) == len(_udp4(f"10.0.{depth}.1", f"10.0.{depth}.2"))
    assert int(d.l3_off[0]) == 14 + 20 * depth


def test_a_tunnel_nested_past_the_bound_stays_a_tunnel_packet() -> None:
    d = decode_frames([(1, _ip_in_ip(MAX_TUNNELS + 1))])
    r = row(d, 0)
    assert (r["ok"], r["src"], r["dst"], r["proto"], r["sport"], r["dport"]) == (
        True,
        f"10.0.{MAX_TUNNELS}.1",
        f"10.0.{MAX_TUNNELS}.2",
        4,
        0,
        0,
    )
    assert int(d.payload_off[0]) == -1
