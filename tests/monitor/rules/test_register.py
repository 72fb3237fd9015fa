"""``device.removed_seen`` and the register's devices being known (no ``device.new``)."""

from __future__ import annotations

from collections.abc import Iterable

from lab import synth
from lab.mirror import arp
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.register import AssetRegister
from tests.enginerun import vendors

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
GW = "02:00:00:00:00:01"
REMOVED_CAM, ACTIVE_CAM, STRANGER = "44:19:b6:00:02:01", "44:19:b6:00:02:02", "44:19:b6:00:02:03"
POLICY = SitePolicy.from_yaml("site: depot-7\nmonitored: {networks: [10.20.0.0/24]}\n")
REGISTER = AssetRegister.parse(
    "mac,name,location,status,replace_by\n"
    f"{REMOVED_CAM},Gate,North gate,removed,2026-01-31\n"
    f"{ACTIVE_CAM},Yard,Yard pole 3,scheduled,2026-06-30\n",
    "register.csv",
)


def run(frames: Iterable[tuple[int, bytes]], register: AssetRegister | None) -> list[dict[str, object]]:
    engine = Engine(POLICY, vendors(), EngineConfig(observer="depot-7/gw-1"), register=register)
    parser = CaptureParser("frames", 65536)
    alerts = []
    for batch in [*parser.feed(pcap_bytes(list(frames))), *parser.flush()]:
        alerts += [a.to_record() for a in engine.feed(batch).alerts]
    alerts += [a.to_record() for a in engine.finish().alerts]
    return alerts


def dns_from(mac: str, ip: str, ts: int) -> tuple[int, bytes]:
    return ts, synth.udp4_frame(mac, GW, ip, "10.20.0.1", 40000, 53, b"\x12\x34" + bytes(10))


def by_rule(alerts: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for alert in alerts:
        out.setdefault(alert["rule"]["id"], []).append(alert)  # type: ignore[index]
    return out


def test_a_removed_device_that_sends_is_an_alert_and_listed_devices_are_not_new() -> None:
    frames = [
        dns_from(REMOVED_CAM, "10.20.0.21", T0),
        dns_from(ACTIVE_CAM, "10.20.0.22", T0 + NS),
        dns_from(STRANGER, "10.20.0.23", T0 + 2 * NS),
        dns_from(REMOVED_CAM, "10.20.0.21", T0 + 20 * NS),  # the same incident: not raised again
    ]
    alerts = by_rule(run(frames, REGISTER))
    assert sorted(alerts) == ["device.new", "device.removed_seen"]
    # Only the device the register does not list is new.
    assert [a["device"]["id"] for a in alerts["device.new"]] == ["44-19-b6-00-02-03"]  # type: ignore[index]
    [seen] = alerts["device.removed_seen"]
    assert seen["source"] == {"ip": "10.20.0.21", "mac": "44-19-b6-00-02-01"}
    assert seen["device"] == {"manufacturer": "Hikvision", "id": "44-19-b6-00-02-01"}
    assert seen["event"]["severity"] == 3  # type: ignore[index]
    assert seen["@timestamp"] == "2023-11-14T22:13:20.000Z"
    assert "'Gate'" in str(seen["message"]) and "North gate" in str(seen["message"])
    # Without the register every device is new and nothing is "removed".
    assert sorted(by_rule(run(frames, None))) == ["device.new"]
    assert len(by_rule(run(frames, None))["device.new"]) == 3


def test_a_removed_device_answering_or_claiming_an_address_is_seen() -> None:
    # The removed camera never opens a flow: it answers one, or only says who it is over ARP.
    reply = [
        (T0, synth.udp4_frame(GW, REMOVED_CAM, "10.20.0.1", "10.20.0.21", 40000, 554, b"OPTIONS")),
        (T0 + NS, synth.udp4_frame(REMOVED_CAM, GW, "10.20.0.21", "10.20.0.1", 554, 40000, b"RTSP/1.0")),
    ]
    [seen] = by_rule(run(reply, REGISTER))["device.removed_seen"]
    assert seen["@timestamp"] == "2023-11-14T22:13:21.000Z"  # when it answered, not when it was asked
    claim = [
        (
            T0,
            synth.ether(
                REMOVED_CAM,
                "ff:ff:ff:ff:ff:ff",
                0x0806,
                arp(1, REMOVED_CAM, "10.20.0.21", "00:00:00:00:00:00", "10.20.0.1"),
            ),
        )
    ]
    [seen] = by_rule(run(claim, REGISTER))["device.removed_seen"]
    assert seen["source"] == {"ip": "10.20.0.21", "mac": "44-19-b6-00-02-01"}


def test_only_removed_devices_raise_it() -> None:
    frames = [dns_from(ACTIVE_CAM, "10.20.0.22", T0), dns_from(STRANGER, "10.20.0.23", T0)]
    assert "device.removed_seen" not in by_rule(run(frames, REGISTER))
