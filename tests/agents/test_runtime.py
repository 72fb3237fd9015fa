"""The agent end to end: a capture source, the engine, a real Mosquitto and a real Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agents.capture.pcap_source import PcapFileSource
from agents.config import AgentConfig
from agents.lab import scenario
from agents.runtime import Agent
from monitor.pcapwrite import pcap_bytes
from tests.agents.mosquitto import Mosquitto, Subscriber, free_port
from tests.agents.promserver import SKIP_REASON, ScrapeTarget, prometheus_binary, running_prometheus
from tests.enginerun import vendors

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed")


def agent_config(
    tmp_path: Path, pcap: Path, broker: Mosquitto, metrics_port: int, pace: str = "fast"
) -> AgentConfig:
    text = f"""
site: depot-7
gateway: gw-test
capture:
  pcap: {pcap}
  pace: {pace}
policy_file: {POLICY}
metrics:
  listen: 127.0.0.1
  port: {metrics_port}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
state_dir: {tmp_path / "state"}
run_as_user: null
"""
    return AgentConfig.from_yaml(text, "agent.yaml", base_dir=tmp_path)


def site_capture(path: Path, seconds: float = 20.0) -> Path:
    shape = scenario.SiteShape(hik_cameras=2, seconds=seconds, video_pps=50)
    path.write_bytes(pcap_bytes(scenario.site_packets(shape)))
    return path


async def run_until(agent: Agent, done: asyncio.Event, timeout: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent")
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def test_agent_publishes_every_alert_over_mqtt_and_keeps_state(tmp_path: Path) -> None:
    pcap = site_capture(tmp_path / "site.pcap")
    expected = 27  # the demo site with its site policy (tests/monitor/test_engine.py)

    async def scenario_run() -> tuple[list[dict[str, object]], dict[str, bytes], str]:
        with Mosquitto(tmp_path / "broker") as broker:
            port = free_port()
            config = agent_config(tmp_path, pcap, broker, port)
            async with Subscriber(broker, "camwatch/#") as sub:
                agent = Agent(config, vendors())
                done = asyncio.Event()

                async def watch() -> None:
                    await sub.wait_until(lambda m: sum("/alerts/" in r.topic for r in m) >= expected, 30)
                    done.set()

                watcher = asyncio.create_task(watch())
                stop = asyncio.Event()
                task = asyncio.create_task(agent.run(stop))
                await asyncio.wait_for(done.wait(), 40)
                metrics = await asyncio.to_thread(
                    lambda: (
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                    )
                )
                stop.set()
                await asyncio.wait_for(task, 20)
                await watcher
                await sub.wait_until(
                    lambda m: any(r.topic.endswith("/status") and b"offline" in r.payload for r in m), 10
                )
                alerts = [json.loads(r.payload) for r in sub.messages if "/alerts/" in r.topic]
                topics = {r.topic: r.payload for r in sub.messages}
                return alerts, topics, metrics

    alerts, topics, metrics = asyncio.run(scenario_run())
    assert len(alerts) == expected
    assert len({a["event"]["id"] for a in alerts}) == expected
    for topic in topics:
        assert topic.startswith("camwatch/depot-7/gw-test/")
    sev = {a["event"]["severity"] for a in alerts}
    assert {f"camwatch/depot-7/gw-test/alerts/{s}" for s in sev} <= set(topics)
    assert json.loads(topics["camwatch/depot-7/gw-test/status"])["state"] == "offline"
    assert {a["observer"]["name"] for a in alerts} == {"depot-7/gw-test"}
    # Metrics while running: the alerts and the capture counters are there.
    assert 'camwatch_alerts_total{rule="egress.unexpected_destination"} 7.0' in metrics
    assert "camwatch_capture_packets_total" in metrics and "camwatch_build_info" in metrics
    # State on disk: a restarted agent knows the devices and the incidents it alerted, and replaying the
    # same capture (the same incidents, within 24 h) raises none of them again.
    assert (tmp_path / "state" / "inventory.json").is_file()
    assert (tmp_path / "state" / "incidents.json").is_file()
    packets = sum(len(batch) for batch in PcapFileSource(pcap).batches())

    async def restart() -> tuple[list[dict[str, object]], int]:
        with Mosquitto(tmp_path / "broker2") as broker:
            config = agent_config(tmp_path, pcap, broker, free_port())
            async with Subscriber(broker, "camwatch/+/+/alerts/#") as sub:
                agent = Agent(config, vendors())
                stop = asyncio.Event()
                task = asyncio.create_task(agent.run(stop))
                deadline = time.monotonic() + 30
                while agent.engine.stats.packets < packets and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # what the engine raised has time to reach the broker
                stop.set()
                await asyncio.wait_for(task, 20)
                return [json.loads(r.payload) for r in sub.messages], agent.engine.stats.packets

    again, replayed = asyncio.run(restart())
    assert replayed == packets
    assert again == []


@pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)
def test_prometheus_scrapes_the_agent_and_the_metrics_move(tmp_path: Path) -> None:
    pcap = site_capture(tmp_path / "site.pcap", seconds=12.0)

    async def scenario_run() -> tuple[float, float, float]:
        with Mosquitto(tmp_path / "broker") as broker:
            port = free_port()
            config = agent_config(tmp_path, pcap, broker, port, pace="realtime")
            agent = Agent(config, vendors())
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            target = ScrapeTarget(f"127.0.0.1:{port}")
            with running_prometheus(tmp_path / "prom", [target]) as prom:
                expr = 'camwatch_capture_packets_total{job="camwatch"}'
                first = await asyncio.to_thread(prom.wait_for, expr, lambda v: v > 0, 20)
                later = await asyncio.to_thread(prom.wait_for, expr, lambda v: v > first, 20)
                alerts = await asyncio.to_thread(
                    prom.wait_for, 'sum(camwatch_alerts_total{rule="dns.vendor_cloud"})', lambda v: v >= 1, 30
                )
                for name in ("camwatch_flows_active", "camwatch_devices", "camwatch_mqtt_connected",
                             "camwatch_spool_alerts", "camwatch_build_info", "camwatch_up"):  # fmt: skip
                    assert prom.query(name), name
            stop.set()
            await asyncio.wait_for(task, 20)
            return first, later, alerts

    first, later, alerts = asyncio.run(scenario_run())
    assert 0 < first < later
    assert alerts >= 1


def test_agent_killed_with_sigkill_loses_no_spooled_alert(tmp_path: Path) -> None:
    """Broker down: alerts pile up in the spool; SIGKILL; broker up, restart: every one arrives."""
    pcap = site_capture(tmp_path / "site.pcap")
    broker = Mosquitto(tmp_path / "broker")  # configured, not started yet
    config = tmp_path / "agent.yaml"
    state = tmp_path / "state"
    config.write_text(
        f"site: depot-7\ngateway: gw-kill\ncapture:\n  pcap: {pcap}\n  pace: fast\npolicy_file: {POLICY}\n"
        f"metrics:\n  listen: 127.0.0.1\n  port: {free_port()}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n"
        f"state_dir: {state}\nrun_as_user: null\n"
    )
    command = [sys.executable, "-m", "agents.cli", "run", "--config", str(config)]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    outbox = state / "outbox.sqlite3"
    spooled: set[str] = set()
    deadline = time.monotonic() + 30
    while len(spooled) < 27:
        assert time.monotonic() < deadline, f"only {len(spooled)} alerts spooled"
        time.sleep(0.2)
        if outbox.exists():
            with contextlib.closing(sqlite3.connect(outbox)) as db:
                try:
                    spooled = {row[0] for row in db.execute("SELECT key FROM outbox WHERE sink = 'mqtt'")}
                except sqlite3.OperationalError:
                    continue
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    async def restart() -> set[str]:
        broker.start()
        try:
            async with Subscriber(broker, "camwatch/+/+/alerts/#") as sub:
                second = subprocess.Popen(
                    command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                try:
                    await sub.wait_until(
                        lambda m: spooled <= {json.loads(r.payload)["event"]["id"] for r in m}, 30
                    )
                finally:
                    second.send_signal(signal.SIGTERM)
                    await asyncio.to_thread(second.wait, 20)
                return {json.loads(r.payload)["event"]["id"] for r in sub.messages}
        finally:
            broker.stop()

    delivered = asyncio.run(restart())
    assert spooled <= delivered
