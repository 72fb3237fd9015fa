"""IPv6 hosts as real cameras are: duplicate address detection from ::, addresses in every advertised prefix,
a new temporary address a day. None of it may make camwatch take a camera for a router (whose traffic is no
device's) or stop judging it."""

from __future__ import annotations

import ipaddress

import pytest

from lab import synth
from lab.mirror import icmp6
from lab.payloads import dns_query
from tests.enginerun import run_frames

NS = 1_000_000_000
T0 = 1_767_225_600 * NS
CAM_MAC, ROUTER_MAC = "44:19:b6:12:34:56", "00:1b:21:aa:bb:01"  # a Hikvision camera, the site's router
PUBLIC_DNS = "2001:4860:4860::8888"
CLOUD = "litedev.ezvizlife.com"
Frames = list[tuple[int, bytes]]


def address(prefix: str, host: int) -> str:
    return str(ipaddress.IPv6Network(prefix)[host])


def lookup(t: int, src: str, port: int) -> Frames:
    """The camera asks a public resolver for its vendor's cloud from ``src``, and is answered."""
    query = synth.udp(src, PUBLIC_DNS, port, 53, dns_query(0x1234, CLOUD))
    return [(t, synth.ether(CAM_MAC, ROUTER_MAC, 0x86DD, synth.ipv6(src, PUBLIC_DNS, 17, query)))]


def dad_probe(t: int, tentative: str) -> Frames:
    """Duplicate address detection (RFC 4862 5.4.2): a neighbor solicitation for the new address, from ::."""
    low = int(ipaddress.IPv6Address(tentative)) & 0xFFFFFF
    solicited = str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0")) | low))
    body = bytes([135, 0, 0, 0]) + bytes(4) + ipaddress.IPv6Address(tentative).packed
    ip = synth.ipv6("::", solicited, 58, icmp6("::", solicited, body), hop=255)
    return [(t, synth.ether(CAM_MAC, "33:33:ff:00:00:01", 0x86DD, ip))]


def _rules(records: list[dict[str, object]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        rid = str(r["rule"]["id"])  # type: ignore[index]
        out[rid] = out.get(rid, 0) + 1
    return out


def test_duplicate_address_detection_from_unspecified_is_not_an_address_of_the_camera() -> None:
    # A camera in steady state takes a new temporary address (RFC 8981): DAD probes it from ::, then uses it.
    first, temporary = address("2001:db8:20:1::/64", 0x11), address("2001:db8:20:1::/64", 0xABCD)
    frames = lookup(T0, first, 40000) + dad_probe(T0 + NS, temporary) + lookup(T0 + 2 * NS, temporary, 40001)
    engine, _, with_dad = run_frames(frames)
    _, _, without = run_frames([f for f in frames if f not in dad_probe(T0 + NS, temporary)])
    dev = engine.inventory.get(int(CAM_MAC.replace(":", ""), 16))
    assert dev is not None and not dev.router and "::" not in dev.ips
    assert dev.ips == [first, temporary]
    assert _rules(with_dad) == _rules(without)
    assert _rules(with_dad)["dns.resolver_bypass"] >= 1 and "dns.vendor_cloud" in _rules(with_dad)


@pytest.mark.parametrize("prefixes", [2, 3])
def test_a_camera_with_an_address_in_each_advertised_prefix_is_a_host(prefixes: int) -> None:
    # Two ISPs (RFC 7157) or a renumbering (RFC 4192): the camera has an address in each prefix and uses both.
    frames: Frames = []
    for i in range(prefixes):
        frames += lookup(T0 + i * NS, address(f"2001:db8:{0x20 + i:x}:1::/64", 0x11), 40000 + i)
    engine, _, alerts = run_frames(frames)
    dev = engine.inventory.get(int(CAM_MAC.replace(":", ""), 16))
    assert dev is not None and not dev.router and len(dev.ips) == prefixes
    # Each address's lookup judged as the camera's (one incident a rule: the repeats are suppressed).
    assert engine.stats.alerts.get("dns.vendor_cloud", 0) >= 1
    assert {a["source"]["mac"] for a in alerts if a["rule"]["id"] != "device.new"} == {  # type: ignore[index]
        "44-19-b6-12-34-56"
    }


def test_a_mac_sending_from_many_global_prefixes_is_still_a_router() -> None:
    # The site router forwards the Internet's answers to the camera: from a new /64 each.
    cam = address("2001:db8:20:1::/64", 0x11)
    frames: Frames = []
    for i in range(5):
        server = address(f"2001:db8:{0x100 + i:x}::/64", 1)
        udp = synth.udp(server, cam, 123, 40000 + i, bytes(48))
        ip = synth.ipv6(server, cam, 17, udp)
        frames.append((T0 + i * NS, synth.ether(ROUTER_MAC, CAM_MAC, 0x86DD, ip)))
    engine, _, _ = run_frames(frames)
    router = engine.inventory.get(int(ROUTER_MAC.replace(":", ""), 16))
    assert router is not None and router.router


def test_a_camera_keeps_being_judged_past_its_16th_temporary_address() -> None:
    # A new temporary address a day: on the 17th day and after, the camera is still the camera.
    frames: Frames = []
    for day in range(20):
        frames += lookup(T0 + day * 86_400 * NS, address("2001:db8:20:1::/64", 0x1000 + day), 40000 + day)
    engine, _, alerts = run_frames(frames)
    dev = engine.inventory.get(int(CAM_MAC.replace(":", ""), 16))
    assert dev is not None and not dev.router and len(dev.ips) == 16
    assert dev.ips[-1] == address("2001:db8:20:1::/64", 0x1000 + 19)  # the newest kept, the oldest forgotten
    last_day = T0 + 19 * 86_400 * NS
    late = [
        a
        for a in alerts
        if a["rule"]["id"] == "dns.vendor_cloud" and str(a["@timestamp"]) >= _iso(last_day)  # type: ignore[index]
    ]
    assert late and all(a["source"]["mac"] == "44-19-b6-12-34-56" for a in late)  # type: ignore[index]


def _iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------- who owns an address

ATTACKER_MAC = "02:00:00:66:66:66"
CAM_INT = int(CAM_MAC.replace(":", ""), 16)


def _ndp(t: int, mac: str, src: str, dst: str, body: bytes) -> Frames:
    return [
        (
            t,
            synth.ether(
                mac, "33:33:00:00:00:01", 0x86DD, synth.ipv6(src, dst, 58, icmp6(src, dst, body), hop=255)
            ),
        )
    ]


def neighbor_solicitation(t: int, mac: str, src: str, target: str) -> Frames:
    body = (
        bytes([135, 0, 0, 0])
        + bytes(4)
        + ipaddress.IPv6Address(target).packed
        + bytes([1, 1])
        + synth.mac_bytes(mac)
    )
    return _ndp(t, mac, src, "ff02::1:ff00:1", body)


def neighbor_advertisement(t: int, mac: str, src: str, target: str, owner: str, override: bool) -> Frames:
    flags = 0x20 if override else 0
    body = bytes([136, 0, 0, 0, flags, 0, 0, 0]) + ipaddress.IPv6Address(target).packed
    return _ndp(t, mac, src, "ff02::1", body + bytes([2, 1]) + synth.mac_bytes(owner))


@pytest.mark.parametrize("override", [False, True])
def test_another_stations_advertisement_of_the_cameras_address_does_not_silence_it(override: bool) -> None:
    # The camera resolves its router (claiming its own address, RFC 4861 7.2.2); then a host on the VLAN
    # advertises the camera's address as its own: with the override flag clear, as a proxy does (RFC 4389), it
    # is no claim at all; with it set (a spoofed advertisement), both stations claim the address: a conflict
    # on the camera's record, and the camera is still judged as itself, not taken for a router.
    cam = address("2001:db8:20:1::/64", 0x11)
    claim = neighbor_solicitation(T0, CAM_MAC, cam, "2001:db8:20:1::1")
    forged = neighbor_advertisement(T0 + NS, ATTACKER_MAC, "fe80::66", cam, ATTACKER_MAC, override)
    traffic = lookup(T0 + 2 * NS, cam, 40000)
    engine, _, alerts = run_frames(claim + forged + traffic)
    _, _, clean = run_frames(claim + traffic)
    dev = engine.inventory.get(CAM_INT)
    assert dev is not None and not dev.router
    assert _rules(alerts) == _rules(clean) and "dns.vendor_cloud" in _rules(alerts)
    conflicts = [e.detail for e in dev.evidence if e.kind == "address-conflict"]
    assert conflicts == ([f"{cam} also claimed by 02-00-00-66-66-66 (ndp)"] if override else [])


def test_a_dhcpv6_lease_belongs_to_the_interface_it_was_sent_to() -> None:
    # A camera with wired and Wi-Fi interfaces builds its DUID from the Wi-Fi MAC (RFC 8415 11.2 allows any of
    # its link-layer addresses); the lease is sent to its wired interface, which then uses the address.
    from scapy.layers.dhcp6 import DUID_LL, DHCP6_Reply, DHCP6OptClientId, DHCP6OptIA_NA, DHCP6OptIAAddress

    wifi = "44:19:b6:12:34:57"
    leased = address("2001:db8:20:1::/64", 0x500)
    ia = DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr=leased, validlft=3600)])
    reply = bytes(DHCP6_Reply(trid=7) / DHCP6OptClientId(duid=DUID_LL(lladdr=wifi)) / ia)
    server, cam_ll = "fe80::1", "fe80::4619:b6ff:fe12:3456"
    udp = synth.udp(server, cam_ll, 547, 546, reply)
    frames = [(T0, synth.ether(ROUTER_MAC, CAM_MAC, 0x86DD, synth.ipv6(server, cam_ll, 17, udp)))]
    engine, _, alerts = run_frames(frames + lookup(T0 + NS, leased, 40000))
    dev = engine.inventory.get(CAM_INT)
    assert dev is not None and not dev.router and leased in dev.ips
    assert engine.inventory.get(int(wifi.replace(":", ""), 16)) is None  # no phantom device
    assert {a["source"]["mac"] for a in alerts} == {"44-19-b6-12-34-56"}  # type: ignore[index]


# ---------------------------------------------------------------- a global-address-only site


def test_global_ipv6_networks_the_policy_does_not_list_are_named() -> None:
    # Without its prefix in the policy, a GUA-only site's own hosts are outside the site for camwatch (only
    # ULA and link-local are site addresses by default): the engine names the network to list.
    from monitor.policy import SitePolicy
    from monitor.site import unlisted_message

    frames = lookup(T0, address("2001:db8:20:1::/64", 0x11), 40000)
    frames += lookup(T0 + NS, address("fd00:20::/64", 0x11), 40001)  # a ULA: on the site already
    engine, _, _ = run_frames(frames)
    assert dict(engine.site.unlisted_prefixes) == {"2001:db8:20:1::/64": CAM_INT}
    assert "in 2001:db8:20:1::/64, which no monitored network holds" in unlisted_message(
        engine.site.unlisted_prefixes
    )
    listed = SitePolicy.from_yaml("site: s\nmonitored: {networks: [2001:db8:20::/48]}\n")
    engine, _, _ = run_frames(frames, policy=listed)
    assert not engine.site.unlisted_prefixes
