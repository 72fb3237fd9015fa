"""Header decoding for every supported link type and encapsulation, on frames built here."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from lab import synth
from monitor.decode import Decoded, decode
from monitor.flows import addr_str
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcapng_bytes

T = 1_700_000_000_000_000_000
M1, M2 = "44:19:b6:00:00:01", "02:00:00:00:00:01"


def decode_frames(frames: list[tuple[int, bytes]]) -> Decoded:
    """Decode (linktype, frame) pairs as one batch (a pcapng with one interface per link type)."""
    linktypes = sorted({lt for lt, _ in frames})
    data = pcapng_bytes(
        [(lt, 9) for lt in linktypes], [(linktypes.index(lt), T + i, f) for i, (lt, f) in enumerate(frames)]
    )
    parser = CaptureParser("t", batch_size=1 << 16)
    (batch,) = parser.feed(data) + parser.flush()
    return decode(batch)


def row(d: Decoded, i: int) -> dict[str, object]:
    v = int(d.ip_version[i])
    return {
        "ok": bool(d.ok[i]),
        "src": addr_str(int(d.src_hi[i]), int(d.src_lo[i]), v) if d.is_ip[i] else None,
        "dst": addr_str(int(d.dst_hi[i]), int(d.dst_lo[i]), v) if d.is_ip[i] else None,
        "proto": int(d.proto[i]),
        "sport": int(d.sport[i]),
        "dport": int(d.dport[i]),
        "vlan": (int(d.vlan_outer[i]), int(d.vlan_inner[i])),
    }


UDP4 = synth.ipv4("10.0.0.1", "203.0.113.5", 17, synth.udp("10.0.0.1", "203.0.113.5", 5000, 53, b"q"))
TCP6 = synth.ipv6(
    "2001:db8::1", "2001:db8::2", 6, synth.tcp("2001:db8::1", "2001:db8::2", 40000, 443, flags=synth.TCP_SYN)
)


V4 = ("10.0.0.1", "203.0.113.5", 17, 5000, 53, (-1, -1))
V6 = ("2001:db8::1", "2001:db8::2", 6, 40000, 443, (-1, -1))


def sll(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, bytes.fromhex("4419b6000001") + b"\0\0", proto) + payload


def sll2(proto: int, payload: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, bytes.fromhex("4419b6000001") + b"\0\0") + payload


@pytest.mark.parametrize(
    ("linktype", "frame", "expected"),
    [
        (1, synth.ether(M1, M2, 0x0800, UDP4), V4),
        (1, synth.ether(M1, M2, 0x0800, UDP4, vlans=(20,)), (*V4[:5], (20, -1))),
        (1, synth.ether(M1, M2, 0x0800, UDP4, vlans=(0,)), (*V4[:5], (0, -1))),
        (1, synth.ether(M1, M2, 0x86DD, TCP6, vlans=(100, 20)), (*V6[:5], (100, 20))),
        (113, sll(0x0800, UDP4), V4),
        (276, sll2(0x86DD, TCP6), V6),
        (101, UDP4, V4),
        (229, TCP6, V6),
        (0, struct.pack("<I", 2) + UDP4, V4),
        (0, struct.pack("<I", 30) + TCP6, V6),
        (108, struct.pack(">I", 2) + UDP4, V4),
        # PPPoE session and an MPLS label stack in front of IP.
        (1, synth.ether(M1, M2, 0x8864, struct.pack("!BBHHH", 0x11, 0, 1, len(UDP4) + 2, 0x0021) + UDP4),
         V4),
        (1, synth.ether(M1, M2, 0x8847, struct.pack("!II", 16 << 12, (17 << 12) | 0x100) + UDP4),
         V4),
        # IPv6 in IPv4 (6in4): the flow is the inner one.
        (1, synth.ether(M1, M2, 0x0800, synth.ipv4("192.0.2.1", "192.0.2.2", 41, TCP6)),
         V6),
    ],
)  # fmt: skip
def test_link_types_and_encapsulations(linktype: int, frame: bytes, expected: tuple[object, ...]) -> None:
    d = decode_frames([(linktype, frame)])
    r = row(d, 0)
    assert r["ok"]
    assert (r["src"], r["dst"], r["proto"], r["sport"], r["dport"], r["vlan"]) == expected


def test_macs_from_ethernet_and_sll() -> None:
    d = decode_frames([(1, synth.ether(M1, M2, 0x0800, UDP4)), (113, sll(0x0800, UDP4))])
    assert d.src_mac.tolist() == [0x4419B6000001, 0x4419B6000001]
    assert d.dst_mac.tolist() == [0x020000000001, 0]


def test_ipv6_extension_headers_and_fragments() -> None:
    udp = synth.udp("2001:db8::1", "2001:db8::2", 5353, 5353, b"x" * 40)
    hop = struct.pack("!BB6x", 60, 0)  # hop-by-hop -> destination options
    dest = struct.pack("!BB6x", 17, 0)  # destination options -> UDP
    chained = synth.ipv6("2001:db8::1", "2001:db8::2", 0, hop + dest + udp)
    first_frag = synth.ipv6("2001:db8::1", "2001:db8::2", 44, struct.pack("!BBHI", 17, 0, 0x0001, 7) + udp)
    later_frag = synth.ipv6(
        "2001:db8::1", "2001:db8::2", 44, struct.pack("!BBHI", 17, 0, (8 << 3), 7) + b"y" * 16
    )
    d = decode_frames([(1, synth.ether(M1, M2, 0x86DD, p)) for p in (chained, first_frag, later_frag)])
    assert [row(d, i)["sport"] for i in range(2)] == [5353, 5353]
    assert d.ok.tolist() == [True, True, False]
    assert d.fragment.tolist() == [False, True, True]
    assert d.later_fragment.tolist() == [False, False, True]


def test_ipv4_fragments_options_and_truncation() -> None:
    udp = synth.udp("10.0.0.1", "10.0.0.2", 1, 2, b"z" * 32)
    first = synth.ipv4("10.0.0.1", "10.0.0.2", 17, udp, frag=0x2000)
    later = synth.ipv4("10.0.0.1", "10.0.0.2", 17, b"z" * 24, frag=3)
    # IHL 6: four bytes of options (a NOP pad) before UDP.
    opt = bytearray(synth.ipv4("10.0.0.1", "10.0.0.2", 17, b"\x01\x01\x01\x01" + udp))
    opt[0] = 0x46
    cut = synth.ether(M1, M2, 0x0800, UDP4)[:30]  # the IP header is cut short
    arp = synth.ether(M1, "ff:ff:ff:ff:ff:ff", 0x0806, bytes(28))
    d = decode_frames(
        [(1, synth.ether(M1, M2, 0x0800, p)) for p in (first, later, bytes(opt))] + [(1, cut), (1, arp)]
    )
    assert d.ok.tolist() == [True, False, True, False, False]
    assert d.later_fragment.tolist() == [False, True, False, False, False]
    assert d.truncated.tolist() == [False, False, False, True, False]
    assert d.is_ip.tolist() == [True, True, True, False, False]
    assert (int(d.sport[2]), int(d.dport[2])) == (1, 2)


def test_tcp_flags_and_icmp() -> None:
    syn = synth.tcp4_frame(M1, M2, "10.0.0.1", "10.0.0.2", 1234, 80, flags=synth.TCP_SYN)
    ping = synth.ether(M1, M2, 0x0800, synth.ipv4("10.0.0.1", "10.0.0.2", 1, synth.icmp_echo(1, 1)))
    d = decode_frames([(1, syn), (1, ping)])
    assert int(d.tcp_flags[0]) == synth.TCP_SYN
    assert (int(d.icmp_type[1]), int(d.icmp_code[1]), int(d.sport[1])) == (8, 0, 0)


def test_random_bytes_never_raise() -> None:
    rng = np.random.default_rng(5)
    frames = [
        (int(rng.choice([0, 1, 101, 113, 276])), rng.bytes(int(rng.integers(0, 200)))) for _ in range(3000)
    ]
    d = decode_frames(frames)
    assert d.n == 3000


def test_header_offsets_past_the_end_of_the_buffer() -> None:
    """Found by fuzz/fuzz_engine.py: a raw IPv4 packet whose headers point past its last byte."""
    frame = bytes.fromhex(
        "4d00002800004000400661 68c0a858e70ed7ad011f90a2ac77eb776ce15a61d4501003ffe5290000".replace(" ", "")
    )
    d = decode_frames([(101, frame)])
    assert d.n == 1 and not d.ok[0]


def test_gather_pads_with_zeros_past_the_end() -> None:
    from monitor.decode import gather

    data = np.arange(10, dtype=np.uint8)
    got = gather(data, np.array([0, 5, 9, 10, 50]), 4)
    assert got.tolist() == [[0, 1, 2, 3], [5, 6, 7, 8], [9, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def pktap(dlt: int, frame: bytes, rectype: int = 1, length: int = 108) -> bytes:
    """Apple PKTAP's header (little-endian: length, record type, link type, interface name, ...)."""
    return (struct.pack("<III", length, rectype, dlt) + b"en0".ljust(24, b"\0")).ljust(length, b"\0") + frame


def test_pktap_is_read_through_to_the_packets_own_link_type() -> None:
    frames = [
        (258, pktap(1, synth.ether(M1, M2, 0x0800, UDP4, vlans=(20,)))),
        (258, pktap(12, TCP6)),  # DLT_RAW as macOS numbers it
        (258, pktap(0, struct.pack("<I", 2) + UDP4)),
    ]
    d = decode_frames(frames)
    assert [row(d, i)["ok"] for i in range(3)] == [True, True, True]
    assert (*[row(d, 0)[k] for k in ("src", "dst", "proto", "sport", "dport")], row(d, 0)["vlan"]) == (
        *V4[:5],
        (20, -1),
    )
    assert [row(d, 1)[k] for k in ("src", "dst", "proto", "sport", "dport")] == list(V6[:5])
    assert int(d.src_mac[0]) == 0x4419B6000001 and int(d.src_mac[1]) == 0
    assert not d.undecoded_linktype.any()


def test_packets_of_link_types_we_do_not_read_are_marked() -> None:
    frame = synth.ether(M1, M2, 0x0800, UDP4)
    frames = [
        (1, frame),
        (127, frame),  # 802.11 radiotap
        (105, frame),  # 802.11
        (258, pktap(127, frame)),  # PKTAP around a link type we do not read
        (258, pktap(1, frame, rectype=2)),  # a PKTAP record that is not a packet
        (258, struct.pack("<III", 4000, 1, 1) + frame),  # a header longer than the packet
    ]
    d = decode_frames(frames)
    assert d.undecoded_linktype.tolist() == [False, True, True, True, True, True]
    assert d.ok.tolist() == [True, False, False, False, False, False]
    assert not d.truncated.any()


def test_the_engine_counts_undecoded_link_types_apart_from_non_ip() -> None:
    from monitor.decode import undecoded_message
    from monitor.engine import Engine
    from monitor.policy import SitePolicy
    from tests.enginerun import vendors

    frame = synth.ether(M1, M2, 0x0800, UDP4)
    arp = synth.ether(M1, "ff:ff:ff:ff:ff:ff", 0x0806, bytes(28))
    linktypes = [127, 1, 9]
    frames = [
        (0, 127, frame),
        (0, 127, frame),
        (1, 1, arp),
        (1, 1, frame),
        (2, 9, b"\xff\x03\x00\x21" + UDP4),
    ]
    data = pcapng_bytes([(lt, 9) for lt in linktypes], [(i, T + k, f) for k, (i, _, f) in enumerate(frames)])
    parser = CaptureParser("t")
    engine = Engine(SitePolicy.default(), vendors())
    for batch in parser.feed(data) + parser.flush():
        engine.feed(batch)
    st = engine.stats
    assert st.undecoded_linktypes == {127: 2, 9: 1}
    assert (st.packets, st.non_ip, st.flow_packets, st.truncated) == (5, 1, 1, 0)
    assert undecoded_message(st.undecoded_linktypes) == (
        "1 packet of link type 9 (PPP), 2 packets of link type 127 "
        "(IEEE 802.11 radiotap) not decoded: camwatch reads Ethernet, Linux SLL/SLL2, raw IP, BSD loopback "
        "and Apple PKTAP"
    )


def test_a_super_frame_with_ip_total_length_zero_counts_its_ip_bytes() -> None:
    # Linux BIG TCP / TSO: an IPv4 total length of 0 means "the rest of the frame" (Wireshark's TSO reading);
    # a normal packet keeps its own length, Ethernet padding not counted.
    tcp = synth.tcp4_frame(M1, M2, "10.0.0.1", "10.0.0.2", 1000, 80, b"x" * 3000)
    big = bytearray(tcp)
    big[14 + 2 : 14 + 4] = b"\0\0"
    small = synth.udp4_frame(M1, M2, "10.0.0.1", "10.0.0.2", 1, 2, b"")  # 42 bytes, padded to 60 below
    d = decode_frames([(1, bytes(big)), (1, small + bytes(18))])
    assert d.ok.tolist() == [True, True]
    assert d.ip_len.tolist() == [len(tcp) - 14, 28]
