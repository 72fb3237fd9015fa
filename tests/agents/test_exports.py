"""agents/exports.py: alerts given the register's row, the register reloaded when its file changes, and the
syslog sink's outbox when there is no MQTT broker."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import date
from pathlib import Path

from agents.config import AgentConfig
from agents.exports import annotate
from agents.runtime import Agent
from lab import scenario
from monitor.pcapwrite import pcap_bytes
from monitor.register import AssetRegister
from tests.agents.promserver import free_port
from tests.enginerun import vendors

ROOT = Path(__file__).parents[2]
REGISTER = AssetRegister.parse(
    "mac,name,location,status,replace_by\n44:19:b6:00:01:01,Gate,North gate,scheduled,2026-03-31\n"
)


def alert(device_id: object) -> dict[str, object]:
    return {"rule": {"id": "egress.unexpected_destination"}, "device": {"id": device_id}, "message": "m"}


def test_an_alert_about_a_listed_device_carries_its_row() -> None:
    got = annotate(alert("44-19-b6-00-01-01"), REGISTER, today=date(2026, 4, 1))
    assert got["camwatch"] == {
        "asset": {
            "status": "scheduled",
            "name": "Gate",
            "location": "North gate",
            "replace_by": "2026-03-31",
            "overdue": True,
        }
    }
    assert (
        annotate(alert("44-19-b6-00-01-01"), REGISTER, today=date(2026, 3, 1))["camwatch"]["asset"]["overdue"]
        is False
    )  # type: ignore[index]
    # Kept beside what the alert already had under camwatch (the stream probe's measurements).
    probe = {**alert("44:19:B6:00:01:01"), "camwatch": {"stream": {"fps": 12.5}}}
    assert annotate(probe, REGISTER)["camwatch"]["stream"] == {"fps": 12.5}  # type: ignore[index]
    for other in (alert("44-19-b6-00-01-02"), alert("not-a-mac"), alert(None), {"rule": {"id": "x"}}):
        assert annotate(other, REGISTER) is other  # untouched


def site_pcap(path: Path) -> Path:
    path.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(hik_cameras=2, seconds=12.0))))
    return path


def test_the_register_is_reloaded_when_its_file_changes(tmp_path: Path) -> None:
    register = tmp_path / "register.csv"
    register.write_text(f"mac,status\n{scenario.hik_mac(1)},active\n")
    config = AgentConfig.from_yaml(
        f"site: depot-7\ncapture: {{pcap: {site_pcap(tmp_path / 'site.pcap')}}}\n"
        f"state_dir: {tmp_path / 'state'}\nrun_as_user: null\nasset_register: {register}\n",
        "agent.yaml",
        tmp_path,
    )
    agent = Agent(config, vendors())
    assert agent.engine.site.register.status_of(0x4419B6000101) == "active"
    assert not agent.exports.reload_if_changed(agent)  # unchanged
    register.write_text(f"mac,status\n{scenario.hik_mac(1)},removed\n{scenario.hik_mac(2)},active\n")
    os.utime(register, ns=(1, 1))  # a new stamp even within the file system's time resolution
    assert agent.exports.reload_if_changed(agent)
    site = agent.engine.site.register
    assert site.status_of(0x4419B6000101) == "removed" and len(site) == 2 and site.removed == {0x4419B6000101}
    register.unlink()  # a register that disappears: the one loaded stays
    assert not agent.exports.reload_if_changed(agent)
    assert agent.engine.site.register is site


def test_syslog_without_mqtt_keeps_its_alerts_in_the_outbox(tmp_path: Path) -> None:
    """No broker and the syslog receiver does not answer: every alert waits in the outbox's syslog channel."""
    config = AgentConfig.from_yaml(
        f"site: depot-7\ncapture: {{pcap: {site_pcap(tmp_path / 'site.pcap')}, pace: fast}}\n"
        f"policy_file: {ROOT / 'examples' / 'site-policy.yaml'}\n"
        f"metrics: {{listen: 127.0.0.1, port: {free_port()}}}\nstate_dir: {tmp_path / 'state'}\n"
        f"run_as_user: null\nalerts_file: {tmp_path / 'alerts.jsonl'}\n"
        f"syslog: {{host: 127.0.0.1, port: {free_port()}, protocol: tcp}}\n",
        "agent.yaml",
        tmp_path,
    )

    async def run() -> int:
        agent = Agent(config, vendors())
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        while agent.counters.alerts_submitted < 10:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 30)
        return agent.counters.alerts_submitted

    submitted = asyncio.run(run())
    raised = len((tmp_path / "alerts.jsonl").read_text().splitlines())
    assert submitted == raised > 10
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite3") as db:
        rows = db.execute("SELECT sink, payload FROM outbox ORDER BY id").fetchall()
    assert {sink for sink, _ in rows} == {"syslog"} and len(rows) == raised
    assert all(
        bytes(p).startswith(b"<") and b" camwatch " in bytes(p) for _, p in rows
    )  # RFC 5424, ready to send
