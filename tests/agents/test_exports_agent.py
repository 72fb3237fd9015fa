"""Everything the SOC and the removal programme need leaves a running agent: alerts to a real rsyslog
(with the register's row of the device), flow records and the retained inventory to a real Mosquitto, flow
files on a real small disk that fills up (the oldest files go, a log line and a metric say so), and the
removal programme's metrics in a real Prometheus."""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from agents.config import AgentConfig
from agents.runtime import Agent
from lab import scenario, synth
from monitor.pcapwrite import pcap_bytes
from tests.agents.mosquitto import Mosquitto, Subscriber, free_port, make_tls_files, retained
from tests.agents.promserver import SKIP_REASON, ScrapeTarget, prometheus_binary, running_prometheus
from tests.agents.rsyslog import Rsyslog, require_rsyslog
from tests.agents.smalldisk import small_disk
from tests.enginerun import vendors

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"
NS = 1_000_000_000
GATE, YARD = scenario.hik_mac(1), scenario.hik_mac(2)  # in the register: scheduled, and removed


def _written_order(path: Path) -> tuple[int, str, int]:
    """Flow files in the order they were written: rotated ones by time, then by their same-second number
    (``Z.jsonl`` before ``Z-01.jsonl``, which a plain name sort puts first), the current file last."""
    m = re.fullmatch(r"flows\.(\d{8}T\d{6}Z)(?:-(\d+))?\.jsonl", path.name)
    return (0, m.group(1), int(m.group(2) or 0)) if m else (1, "", 0)


LOOKUPS = 3000  # DNS lookups from the gate camera, each its own flow: about 1 MB of flow records

pytestmark = [
    pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed"),
    pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON),
]


def capture(path: Path) -> Path:
    """The demo site (two Hikvision cameras, a Dahua, an Axis, the personas) and many short DNS flows."""
    shape = scenario.SiteShape(hik_cameras=2, seconds=20.0, video_pps=20)
    t0 = shape.start_ns + NS
    step = 18 * NS // LOOKUPS
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04time\x07example\x00\x00\x01\x00\x01"
    lookups = [
        (t0 + i * step, synth.udp4_frame(GATE, scenario.GW_MAC, scenario.hik_ip(1), scenario.GW_IP,
                                         20000 + i, 53, query))
        for i in range(LOOKUPS)
    ]  # fmt: skip
    path.write_bytes(pcap_bytes(list(heapq.merge(scenario.site_packets(shape), lookups, key=lambda e: e[0]))))
    return path


def test_every_export_of_a_running_agent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_rsyslog()
    pcap = capture(tmp_path / "site.pcap")
    (tmp_path / "register.csv").write_text(
        "mac,name,location,model,owner,status,replace_by,notes\n"
        f"{GATE},Gate,North gate,DS-2CD2043G2,Facilities,scheduled,2020-06-30,\n"
        f"{YARD},Yard,Yard east,,Facilities,removed,2020-01-31,taken down\n"
        "44:19:b6:00:09:09,Spare,Store room,,,active,,never installed\n"
    )
    caplog.set_level(logging.INFO)

    async def run() -> dict[str, Any]:
        tls = make_tls_files(tmp_path / "tls")
        with (
            Rsyslog(tls) as rs,
            Mosquitto(tmp_path / "broker") as broker,
            small_disk(tmp_path / "disk", 256) as disk,
        ):
            port = free_port()
            text = f"""
site: depot-7
gateway: gw-1
capture: {{pcap: {pcap}, pace: fast}}
policy_file: {POLICY}
metrics: {{listen: 127.0.0.1, port: {port}}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, flows: true}}
syslog: {{host: 127.0.0.1, port: {rs.tcp_port}, protocol: tcp}}
asset_register: {tmp_path / "register.csv"}
flows_file: {disk / "flows.jsonl"}
flows_rotation: {{max_size: 64KiB, max_files: 100}}
timeouts: {{udp_idle: 1}}
state_dir: {tmp_path / "state"}
run_as_user: null
"""
            config = AgentConfig.from_yaml(text, "agent.yaml", tmp_path)
            async with Subscriber(broker, "camwatch/depot-7/gw-1/#") as sub:
                agent = Agent(config, vendors())
                stop = asyncio.Event()
                task = asyncio.create_task(agent.run(stop))
                try:
                    with running_prometheus(tmp_path / "prom", [ScrapeTarget(f"127.0.0.1:{port}")]) as prom:
                        deleted = await asyncio.to_thread(
                            prom.wait_for,
                            'sum(camwatch_output_files_deleted_total{reason="disk_full"})',
                            lambda v: v > 0,
                            40,
                        )
                        q = {
                            name: await asyncio.to_thread(prom.query, expr)
                            for name, expr in {
                                "by_status": "sum by (status) (camwatch_devices)",
                                "overdue": "camwatch_replacements_overdue",
                                "assets": "camwatch_register_assets",
                                "removed_seen": 'camwatch_alerts_total{rule="device.removed_seen"}',
                                "info": 'camwatch_asset_info{name="Gate"}',
                            }.items()
                        }
                finally:
                    stop.set()
                    await asyncio.wait_for(task, 30)
                await sub.wait_until(lambda m: any(r.topic.endswith("/status") and b"offline" in r.payload
                                                   for r in m), 10)  # fmt: skip
                messages = list(sub.messages)
            inventory = await retained(broker, "camwatch/depot-7/gw-1/inventory")
            alerts = [json.loads(r.payload) for r in messages if "/alerts/" in r.topic]
            syslogged = rs.wait_for("tcp", len(alerts))
            files = sorted(disk.glob("flows*.jsonl"), key=_written_order)
            on_disk = [json.loads(line) for f in files for line in f.read_text().splitlines()]
            flows_file = agent.flow_sinks[0]
            return {
                "deleted": deleted,
                "q": q,
                "alerts": alerts,
                "syslogged": syslogged,
                "mqtt_flows": [json.loads(r.payload) for r in messages if r.topic.endswith("/flows")],
                "on_disk": on_disk,
                "written": getattr(flows_file, "written", None),
                "inventory": inventory,
            }

    got = asyncio.run(run())

    # The flow files: a full disk cost the oldest files only; the agent said so and kept going.
    assert got["deleted"] > 0
    assert any("deleted the oldest flow file" in r.message for r in caplog.records)
    assert got["written"] is not None and got["written"] > LOOKUPS
    assert 0 < len(got["on_disk"]) < got["written"]
    # The same records went to MQTT (QoS 0, all of them on a healthy local broker), in the same order.
    ids = [f["network"]["community_id"] for f in got["mqtt_flows"]]
    assert len(ids) == got["written"]
    tail = [f["network"]["community_id"] for f in got["on_disk"]]
    assert ids[-len(tail) :] == tail  # what is left on disk is the newest records

    # Alerts: the removed camera seen, the listed ones not "new", the register's row in each alert.
    alerts = got["alerts"]
    rules = [a["rule"]["id"] for a in alerts]
    assert rules.count("device.removed_seen") == 1
    new = {a["device"]["id"] for a in alerts if a["rule"]["id"] == "device.new"}
    assert new and "44-19-b6-00-01-01" not in new and "44-19-b6-00-01-02" not in new
    gate = [a for a in alerts if a.get("device", {}).get("id") == "44-19-b6-00-01-01"]
    assert gate, "the gate camera phones home in the demo site"
    for a in gate:
        assert a["camwatch"]["asset"] == {
            "status": "scheduled",
            "name": "Gate",
            "location": "North gate",
            "model": "DS-2CD2043G2",
            "owner": "Facilities",
            "replace_by": "2020-06-30",
            "overdue": True,
        }
    # Syslog: every alert, whole, the same as over MQTT.
    assert sorted((json.loads(m["msg"]) for m in got["syslogged"]), key=lambda a: a["event"]["id"]) == sorted(
        alerts, key=lambda a: a["event"]["id"]
    )

    # The retained inventory.
    assert got["inventory"] is not None and got["inventory"].retain
    document = json.loads(got["inventory"].payload)
    assert document["observer"] == {"name": "depot-7/gw-1"}
    assert {"44-19-b6-00-01-01", "44-19-b6-00-01-02"} <= {d["mac"] for d in document["devices"]}

    # The removal programme's metrics, as Prometheus stored them.
    q = got["q"]
    by_status = {s["metric"]["status"]: float(s["value"][1]) for s in q["by_status"]}
    assert by_status["scheduled"] == 1 and by_status["removed"] == 1 and by_status["unregistered"] >= 3
    assert "active" not in by_status  # the spare camera is listed but never seen: not in the inventory
    assert float(q["overdue"][0]["value"][1]) == 1  # the gate: the removed yard camera is not overdue
    assert {s["metric"]["status"]: float(s["value"][1]) for s in q["assets"]} == {
        "active": 1, "scheduled": 1, "removed": 1
    }  # fmt: skip
    assert float(q["removed_seen"][0]["value"][1]) == 1
    assert q["info"][0]["metric"]["location"] == "North gate"
