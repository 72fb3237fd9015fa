"""A real mirror port's habits (lab/mirror.py): a VLAN trunk with routed copies, a port mirrored twice, a
session running before the capture, IPv6 beside IPv4, DNS over TLS and HTTPS. The right devices and
exactly the right alerts, whatever the batch size."""

from __future__ import annotations

import pytest

from lab import mirror
from monitor.policy import SitePolicy
from monitor.records import flow_record
from tests.enginerun import run_frames

ROUTER = mirror.ROUTER_MAC.replace(":", "-")


def dashed(mac: str) -> str:
    return mac.replace(":", "-")


@pytest.fixture(scope="module")
def frames() -> list[tuple[int, bytes]]:
    return mirror.site_frames()


def key(alert: dict[str, object]) -> tuple[object, ...]:
    src, dst = alert.get("source") or {}, alert.get("destination") or {}
    return (alert["rule"]["id"], src.get("ip"), src.get("mac"), dst.get("ip"))  # type: ignore[index, union-attr, attr-defined]


@pytest.mark.parametrize("batch_size", [1, 7, 64, 65536])
def test_each_incident_once_and_nothing_else(frames: list[tuple[int, bytes]], batch_size: int) -> None:
    engine, _, alerts = run_frames(
        frames, policy=SitePolicy.from_yaml(mirror.POLICY_YAML), batch_size=batch_size
    )
    got = [key(a) for a in alerts]
    assert sorted(got, key=str) == sorted(mirror.EXPECTED_ALERTS, key=str)  # each exactly once
    # The router's MAC is nobody's identity: only its own announcement names it.
    for alert in alerts:
        if alert["source"].get("ip") != mirror.ROUTER_V10:  # type: ignore[union-attr]
            named = {alert["source"].get("mac"), (alert.get("destination") or {}).get("mac")}  # type: ignore[union-attr, attr-defined]
            named.add((alert.get("device") or {}).get("id"))  # type: ignore[union-attr, attr-defined]
            assert ROUTER not in named, alert
    assert engine.site.stats.routers == 1 and engine.site.stats.copies == 3
    assert engine.analysis.order.duplicates > 0  # CAM1's port is mirrored twice


def test_devices_survive_routing(frames: list[tuple[int, bytes]]) -> None:
    engine, flows, _ = run_frames(frames, policy=SitePolicy.from_yaml(mirror.POLICY_YAML))
    inv = {d["mac"]: d for d in engine.inventory.records()}
    router = inv[ROUTER]
    # The router keeps its own addresses (ARP and NDP say so), not the cameras' it forwarded, and is not
    # taken for the Hikvision or Dahua camera whose banners it carried.
    assert router["router"] is True and router["vendor"] is None
    assert set(router["ips"]) == {mirror.ROUTER_V10, mirror.ROUTER_V20, mirror.ROUTER_LL}
    assert not [e for e in router["evidence"] if e["kind"] in ("rtsp_server", "http_server", "realm")]
    cam1, cam2 = inv[dashed(mirror.CAM1.mac)], inv[dashed(mirror.CAM2.mac)]
    # IPv4 and IPv6 of one camera meet in one device.
    assert set(cam1["ips"]) == {mirror.CAM1.ip, mirror.CAM1.ip6}
    assert cam1["vendor"] == "hikvision" and cam2["vendor"] == "dahua"
    assert {"kind": "rtsp_server", "detail": "Dahua Rtsp Server"} in cam2["evidence"]
    assert not cam1["first_seen"].startswith("1970") and not cam2["first_seen"].startswith("1970")
    # RTSP is recognised on both VLANs, duplicates and routed copies notwithstanding.
    rtsp = [flow_record(f) for f in flows if flow_record(f)["destination"].get("port") == 554]
    assert len(rtsp) == 4 and all(r["network"].get("protocol") == "rtsp" for r in rtsp)
    assert {r["network"]["vlan"]["id"] for r in rtsp} == {"10", "20"}


def test_session_running_before_the_capture_is_the_cameras_egress(frames: list[tuple[int, bytes]]) -> None:
    _, flows, alerts = run_frames(frames, policy=SitePolicy.from_yaml(mirror.POLICY_YAML))
    (session,) = [f for f in flows if mirror.DAHUA_CLOUD.ip in (f.src[0], f.dst[0])]
    assert session.src[0] == mirror.DAHUA_CLOUD.ip  # the cloud sent the first packet seen...
    assert not session.opener_is_src  # ... but the camera, on the ephemeral port, opened the session
    egress = [
        a
        for a in alerts
        if key(a)[0] == "egress.unexpected_destination" and key(a)[3] == mirror.DAHUA_CLOUD.ip
    ]
    assert len(egress) == 1 and egress[0]["destination"]["port"] == 443  # type: ignore[index]
