"""The site model through the engine: inventory entries, their times and addresses."""

from __future__ import annotations

import struct

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
