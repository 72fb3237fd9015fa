"""Remote mirrors and tunnels: GRE (IP and Ethernet), ERSPAN I/II/III and VXLAN are decoded through to the
mirrored device's frame, so its flows, MACs and VLANs are what a local SPAN port would show. What is not a
mirror or tunnel we can read stays the outer packet's flow."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from lab import mirror, synth
from monitor.decode import Decoded
from tests.enginerun import run_frames
from tests.monitor.rules.traffic import POLICY
from tests.monitor.test_decode import decode_frames, row

SW, COL = "192.0.2.1", "192.0.2.2"  # the switch sending its mirror, the collector
SW_MAC, COL_MAC = "02:00:00:00:0a:aa", "02:00:00:00:0b:bb"
CAM_MAC, GW_MAC = "44:19:b6:00:00:01", "02:00:00:00:00:01"
GW_INT = 0x020000000001
CAM, DNS = "10.20.0.11", "8.8.8.8"
CAM_FLOW = (CAM, DNS, 17, 40000, 53)

DNS_QUERY = synth.ipv4(CAM, DNS, 17, synth.udp(CAM, DNS, 40000, 53, b"\x12\x34\x01\x00" + bytes(8)))


def camera_frame(vlans: tuple[int, ...] = ()) -> bytes:
    return synth.ether(CAM_MAC, GW_MAC, 0x0800, DNS_QUERY, vlans=vlans)


def outer(proto: int, payload: bytes, vlans: tuple[int, ...] = ()) -> bytes:
    return synth.ether(SW_MAC, COL_MAC, 0x0800, synth.ipv4(SW, COL, proto, payload), vlans=vlans)


def gre(ptype: int, payload: bytes, *, checksum: bool = False, key: bool = False, seq: bool = False) -> bytes:
    flags = (0x8000 if checksum else 0) | (0x2000 if key else 0) | (0x1000 if seq else 0)
    optional = (b"\0\0\0\0" if checksum else b"") + (b"KEY!" if key else b"") + (b"SEQ#" if seq else b"")
    return outer(47, struct.pack("!HH", flags, ptype) + optional + payload)


def erspan2(frame: bytes) -> bytes:
    # version 1, VLAN 0, COS 3, encapsulation 0, session 1, index 0
    return gre(0x88BE, struct.pack("!HHI", 0x1000, (3 << 13) | 1, 0) + frame, seq=True)


def erspan3(frame: bytes, platform: bool = False, frame_type: int = 0) -> bytes:
    # version 2, session 1, a timestamp, SGT 0, frame type, O bit (an 8-byte platform subheader follows)
    header = struct.pack("!HHIHH", 0x2000, 1, 0x12345678, 0, (frame_type << 10) | int(platform))
    return gre(0x22EB, header + (bytes(8) if platform else b"") + frame, seq=True)


def vxlan(frame: bytes, port: int = 4789) -> bytes:
    return outer(17, synth.udp(SW, COL, 54321, port, struct.pack("!II", 0x08000000, 5000 << 8) + frame))


def inner(d: Decoded, i: int = 0) -> tuple[object, ...]:
    r = row(d, i)
    return (r["ok"], r["src"], r["dst"], r["proto"], r["sport"], r["dport"])


def _gre_teb(f: bytes) -> bytes:
    return gre(0x6558, f)


def _gre_teb_all_flags(f: bytes) -> bytes:
    return gre(0x6558, f, checksum=True, key=True, seq=True)


def _erspan1(f: bytes) -> bytes:
    return gre(0x88BE, f)


def _erspan2_key(f: bytes) -> bytes:
    return gre(0x88BE, struct.pack("!HHI", 0x1000, 1, 0) + f, key=True, seq=True)


def _erspan3_platform(f: bytes) -> bytes:
    return erspan3(f, platform=True)


MIRRORS: dict[str, Callable[[bytes], bytes]] = {
    "gre-teb": _gre_teb,
    "gre-teb-all-flags": _gre_teb_all_flags,
    "erspan1": _erspan1,
    "erspan2": erspan2,
    "erspan2-key": _erspan2_key,
    "erspan3": erspan3,
    "erspan3-platform": _erspan3_platform,
    "vxlan": vxlan,
}


@pytest.mark.parametrize("kind", sorted(MIRRORS))
def test_mirror_gives_the_devices_flow_macs_and_vlan(kind: str) -> None:
    # The outer frame is on the collector's VLAN 99; the mirrored frame on the camera's VLAN 20.
    frame = MIRRORS[kind](camera_frame(vlans=(20,)))
    tagged = frame[:12] + struct.pack("!HH", 0x8100, 99) + frame[12:]
    d = decode_frames([(1, tagged), (1, MIRRORS[kind](camera_frame()))])
    for i, vlan in ((0, (20, -1)), (1, (-1, -1))):
        assert inner(d, i) == (True, *CAM_FLOW)
        assert row(d, i)["vlan"] == vlan
        assert (int(d.src_mac[i]), int(d.dst_mac[i])) == (0x4419B6000001, 0x020000000001)
        assert bool(d.decapsulated[i])
        # The analyzers read the inner packet: its IP header is where l3_off says.
        l3 = int(d.l3_off[i])
        assert d.data[d.offsets[i] + l3 : d.offsets[i] + l3 + len(DNS_QUERY)].tobytes() == DNS_QUERY


@pytest.mark.parametrize(
    "frame",
    [
        gre(0x0800, DNS_QUERY),
        gre(0x0800, DNS_QUERY, key=True, seq=True),
        erspan3(DNS_QUERY, frame_type=2),  # ERSPAN III carrying an IP packet
    ],
    ids=["gre-ip", "gre-ip-key-seq", "erspan3-ip"],
)
def test_ip_over_gre_gives_the_inner_flow(frame: bytes) -> None:
    d = decode_frames([(1, frame)])
    assert inner(d) == (True, *CAM_FLOW)
    assert bool(d.decapsulated[0])


def test_a_mirrored_arp_frame_is_the_devices_arp() -> None:
    arp = synth.ether(CAM_MAC, "ff:ff:ff:ff:ff:ff", 0x0806, bytes(28))
    d = decode_frames([(1, vxlan(arp))])
    assert (bool(d.ok[0]), bool(d.is_ip[0]), bool(d.truncated[0]), int(d.ethertype[0])) == (
        False,
        False,
        False,
        0x0806,
    )
    assert (int(d.src_mac[0]), int(d.dst_mac[0])) == (0x4419B6000001, 0xFFFFFFFFFFFF)
    assert int(d.l3_off[0]) == 14 + 20 + 8 + 8 + 14


@pytest.mark.parametrize(
    ("frame", "proto"),
    [
        (gre(0x880B, b"\xff\x03\x00\x21" + DNS_QUERY), 47),  # PPP in GRE: not decoded
        (outer(47, struct.pack("!HH", 0x3001, 0x880B) + bytes(8) + DNS_QUERY), 47),  # GRE version 1 (PPTP)
        (outer(47, struct.pack("!HH", 0x4000, 0x0800) + bytes(8) + DNS_QUERY), 47),  # source routing
        (vxlan(camera_frame(), port=4790), 17),  # not the VXLAN port
        (gre(0x6558, camera_frame()[:10]), 47),  # the mirrored frame is cut before its ethertype
    ],
    ids=["gre-ppp", "gre-v1", "gre-routing", "udp-4790", "gre-teb-cut"],
)
def test_what_is_not_a_tunnel_we_read_stays_the_outer_flow(frame: bytes, proto: int) -> None:
    d = decode_frames([(1, frame)])
    r = row(d, 0)
    assert (r["ok"], r["src"], r["dst"], r["proto"]) == (True, SW, COL, proto)
    assert not bool(d.decapsulated[0])


def test_the_engine_counts_decapsulated_packets_and_sees_the_camera() -> None:
    frames = [camera_frame(), erspan2(camera_frame()), vxlan(camera_frame()), gre(0x6558, camera_frame())]
    engine, flows, _ = run_frames([(10**18 + i, f) for i, f in enumerate(frames)])
    assert engine.stats.decapsulated == 3
    assert engine.stats.flow_packets == 4
    ((flow),) = flows
    assert (flow.src[0], flow.dst) == (CAM, (DNS, 53))
    assert flow.src_mac == 0x4419B6000001


# A tunnel a watched device sends to the Internet, wrapping packets from no site's address, is its own traffic
# (monitor.engine._TunnelOwners): Mirai's GRE floods.
VICTIM = "203.0.113.80"
FORGED = synth.ipv4(
    "45.33.12.7", "91.198.174.1", 17, synth.udp("45.33.12.7", "91.198.174.1", 7, 9, bytes(16))
)


def _ip_over_gre(src: str, dst: str, src_mac: str, packet: bytes = FORGED) -> bytes:
    gre_ip = struct.pack("!HH", 0, 0x0800) + packet
    return synth.ether(src_mac, GW_MAC, 0x0800, synth.ipv4(src, dst, 47, gre_ip))


def _flows(frames: list[bytes], batch_size: int = 65536) -> tuple[list[tuple[object, ...]], int]:
    engine, flows, _ = run_frames(
        [(10**18 + i, f) for i, f in enumerate(frames)], policy=POLICY, batch_size=batch_size
    )
    return sorted((f.proto, f.src[0], f.dst[0]) for f in flows), engine.stats.decapsulated


def test_a_watched_devices_tunnel_to_the_internet_is_its_own_flow() -> None:
    got, decapsulated = _flows(
        [
            _ip_over_gre(CAM, VICTIM, CAM_MAC),  # a camera, watched by its address and its make
            _ip_over_gre(
                "10.20.0.77", VICTIM, "02:00:00:00:0c:cc"
            ),  # an unknown host of the monitored network
            _ip_over_gre("192.168.1.64", VICTIM, "44:19:b6:00:00:64"),  # a Hikvision at its factory address
            _ip_over_gre("198.51.100.64", VICTIM, "44:19:b6:00:00:65"),  # and at a public address
            _ip_over_gre("172.16.0.9", VICTIM, "02:00:00:00:0d:dd"),  # a host nobody watches: looked through
        ]
    )
    assert got == [
        (17, "45.33.12.7", "91.198.174.1"),
        (47, CAM, VICTIM),
        (47, "10.20.0.77", VICTIM),
        (47, "192.168.1.64", VICTIM),
        (47, "198.51.100.64", VICTIM),
    ]
    assert decapsulated == 1


def test_what_a_camera_tunnels_from_the_site_or_to_it_is_looked_through() -> None:
    got, decapsulated = _flows(
        [
            _ip_over_gre(CAM, VICTIM, CAM_MAC, DNS_QUERY),  # a site host's packet inside: a VPN's kind
            _ip_over_gre(CAM, "10.20.0.5", CAM_MAC),  # to an address on the site
            synth.ether(CAM_MAC, GW_MAC, 0x0800, synth.ipv4(CAM, VICTIM, 47, erspan2(camera_frame())[34:])),
        ]
    )
    assert got == [(17, CAM, DNS), (17, "45.33.12.7", "91.198.174.1")] and decapsulated == 3


@pytest.mark.parametrize(
    "frame",
    [
        gre(0x880B, b"\x00" * 40),  # PPTP's enhanced GRE
        gre(0x883E, b"\x00" * 40),  # WCCP
        synth.ether(CAM_MAC, GW_MAC, 0x0800, synth.ipv4(CAM, VICTIM, 4, bytes(40))),  # IP in IP, no IP inside
        vxlan(camera_frame())[:60],
    ],
    ids=["pptp", "wccp", "ipip-no-version", "cut-vxlan"],
)
def test_a_tunnel_nothing_is_read_inside_stays_one_flow(frame: bytes) -> None:
    # A batch whose only tunnel-looking packets carry nothing decodable (the owners are then never asked).
    got, decapsulated = _flows([frame])
    assert len(got) == 1 and decapsulated == 0


@pytest.mark.parametrize(
    ("src", "dst"),
    [("10.20.0.250", "10.20.0.5"), ("10.20.0.250", "172.16.9.9"), ("10.20.0.250", VICTIM), (SW, COL)],
    ids=[
        "switch-in-the-camera-network",
        "to-another-site-network",
        "to-a-public-collector",
        "between-public",
    ],
)
def test_a_mirror_is_still_looked_through(src: str, dst: str) -> None:
    # The switch's management address may be in the cameras' network, even with a Hikvision MAC (Hikvision
    # makes switches), and its collector anywhere: the mirrored frames are the site's.
    inner = struct.pack("!HH", 0, 0x6558) + camera_frame()
    got, decapsulated = _flows([synth.ether(CAM_MAC, COL_MAC, 0x0800, synth.ipv4(src, dst, 47, inner))])
    assert got == [(17, CAM, DNS)] and decapsulated == 1


def test_a_camera_behind_a_router_and_the_routers_own_tunnel() -> None:
    # The site's router (an NDP router advertisement made it known) forwards the camera's GRE flood (its MAC
    # on the frame): the camera's by its address. The router's own tunnel (its address) is looked through.
    router_ll = "fe80::1"
    advert = mirror.icmp6(router_ll, "ff02::1", mirror.ndp_router_advertisement(GW_MAC))
    frames = [
        synth.ether(
            GW_MAC, "33:33:00:00:00:01", 0x86DD, synth.ipv6(router_ll, "ff02::1", 58, advert, hop=255)
        ),
        _ip_over_gre(CAM, VICTIM, GW_MAC),
        _ip_over_gre("198.51.100.1", VICTIM, GW_MAC),
    ]
    engine, flows, _ = run_frames(
        [(10**18 + i, f) for i, f in enumerate(frames)], policy=POLICY, batch_size=1
    )
    assert GW_INT in engine.site.routers
    assert sorted((f.proto, f.src[0]) for f in flows if f.proto != 58) == [(17, "45.33.12.7"), (47, CAM)]
