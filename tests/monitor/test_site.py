"""The site model through the engine: inventory entries, their times and addresses."""

from __future__ import annotations

import struct

from lab import synth
from lab.synth import udp4_frame
from monitor.analyzers import dhcp
from tests.enginerun import run_frames

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
RELAY_MAC = "00:00:5e:00:01:01"
CAMERA_MAC = 0x4447CC000001  # Hikvision OUI


def dhcp_request(chaddr: int, *, htype: int = 1, hlen: int = 6, host_name: bytes = b"cam1") -> bytes:
    head = struct.pack("!BBBBIHH", 1, htype, hlen, 1, 0xDEADBEEF, 0, 0)
    head += bytes(4) + bytes(4) + bytes(4) + bytes([10, 20, 0, 1])  # ciaddr yiaddr siaddr giaddr (relayed)
    head += chaddr.to_bytes(16, "big")[-16:] if hlen > 6 else chaddr.to_bytes(6, "big") + bytes(10)
    opts = bytes([53, 1, 3, 12, len(host_name)]) + host_name + b"\xff"
    return head + bytes(64 + 128) + dhcp.MAGIC_COOKIE + opts


def relayed(payload: bytes) -> bytes:
    return udp4_frame(RELAY_MAC, "00:00:5e:00:01:02", "10.20.0.1", "10.0.0.53", 67, 67, payload)


def test_a_device_seen_only_in_a_fact_is_first_seen_when_the_fact_was() -> None:
    # A relayed DHCP request: the frame comes from the relay, the camera's MAC is only in chaddr.
    frame = udp4_frame(
        RELAY_MAC, "00:00:5e:00:01:02", "10.20.0.1", "10.0.0.53", 67, 67, dhcp_request(CAMERA_MAC)
    )
    engine, _, _ = run_frames([(T0, frame)])
    dev = engine.inventory.get(CAMERA_MAC)
    assert dev is not None and dev.first_seen_ns == T0 and dev.last_seen_ns == T0
    record = dev.to_record()
    assert record["first_seen"].startswith("2026-01-01T00:00:00")
    assert {"kind": "dhcp", "detail": "host_name=cam1"} in record["evidence"]


def test_a_dhcp_chaddr_that_is_not_a_mac_is_not_an_inventory_key() -> None:
    # hlen 7-16 (not Ethernet): the "MAC" would be wider than 48 bits. It must not reach the inventory, and
    # the engine must go on with the next packet.
    odd = udp4_frame(RELAY_MAC, "00:00:5e:00:01:02", "10.20.0.1", "10.0.0.53", 67, 67,
                     dhcp_request((1 << 100) | 0xABCDEF, hlen=13))  # fmt: skip
    good = udp4_frame(
        RELAY_MAC, "00:00:5e:00:01:02", "10.20.0.1", "10.0.0.53", 67, 67, dhcp_request(CAMERA_MAC)
    )
    engine, _, _ = run_frames([(T0, odd), (T0 + 1, good)])
    assert all(dev.mac < 1 << 48 for dev in engine.inventory)
    assert engine.inventory.get(CAMERA_MAC) is not None


def test_a_banner_from_an_internet_address_does_not_give_the_gateway_its_make() -> None:
    # A compromised camera tries logins on a Hikvision camera on the Internet: the answers, with its App-webs
    # banner, come through the site gateway's MAC (not yet known as a router). The gateway is no Hikvision
    # device, and nothing is said about a Hikvision device at the gateway's MAC.
    from lab import attacks
    from tests.monitor.rules.traffic import GW, HIK, POLICY, Host, exchange

    outside = Host("192.0.2.90", GW.mac)
    req = attacks.http_request("GET", "/ISAPI/Security/userCheck", outside.ip)
    frames = exchange(T0, HIK, outside, 40000, 80, [(req, attacks.http_response(401, b"<userCheck/>"))])
    engine, _, alerts = run_frames(frames, policy=POLICY)
    gateway = engine.inventory.get(int(GW.mac.replace(":", ""), 16))
    assert gateway is not None and gateway.vendor != "hikvision"
    assert not any(a.get("device", {}).get("id") == GW.mac_id for a in alerts)  # type: ignore[union-attr]
    # A host with a public address on the segment itself claims it (ARP): then its banner is its own.
    own_mac = "44:19:b6:00:00:99"
    public = Host("192.0.2.91", own_mac)
    claim = synth.ether(own_mac, "ff:ff:ff:ff:ff:ff", 0x0806, _arp_reply(own_mac, public.ip))
    answer = attacks.http_response(401, b"<userCheck/>")
    frames = [(T0 - 1000, claim), *exchange(T0, HIK, public, 40001, 80, [(req, answer)])]
    engine, _, _ = run_frames(frames, policy=POLICY)
    dev = engine.inventory.get(int(own_mac.replace(":", ""), 16))
    assert dev is not None and any(e.kind == "http_server" or "App-webs" in e.detail for e in dev.evidence)


def _arp_reply(mac: str, ip: str) -> bytes:
    import ipaddress

    hw = synth.mac_bytes(mac)
    return (
        struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
        + hw
        + ipaddress.IPv4Address(ip).packed
        + bytes(6)
        + ipaddress.IPv4Address("192.0.2.1").packed
    )
