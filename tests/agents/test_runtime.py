"""The agent end to end: a capture source, the engine, a real Mosquitto and a real Prometheus, and the
agent's file outputs (flow records, the inventory)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agents import cli
from agents.capture.pcap_source import PcapFileSource
from agents.config import AgentConfig
from agents.runtime import Agent
from agents.sinks.base import encode_record
from lab import scenario
from monitor.pcapwrite import pcap_bytes
from tests.agents.helpers.publisher_proc import make_alert
from tests.agents.mosquitto import Mosquitto, Received, Subscriber, free_port
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
    expected = 28  # the demo site with its site policy (tests/monitor/test_engine.py)

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


def test_the_agent_writes_flow_records_and_the_inventory_as_replay_does(tmp_path: Path) -> None:
    """flows_file and inventory_file from a real run hold exactly what `camwatch replay --flows --inventory`
    writes for the same capture and policy (the same batches: the same records in the same order)."""
    pcap = site_capture(tmp_path / "site.pcap")
    (tmp_path / "out").mkdir()
    flows_file, inventory_file = tmp_path / "out" / "flows.jsonl", tmp_path / "out" / "devices.json"
    flows_file.write_text('{"kept": "from an earlier run"}\n')
    config = AgentConfig.from_yaml(
        f"site: depot-7\ngateway: gw-out\ncapture: {{pcap: {pcap}, pace: fast, batch_size: 4096}}\n"
        f"policy_file: {POLICY}\nmetrics: {{listen: 127.0.0.1, port: {free_port()}}}\nstate_dir: state\n"
        "run_as_user: null\nflows_file: out/flows.jsonl\ninventory_file: out/devices.json\n",
        "agent.yaml",
        base_dir=tmp_path,
    )
    assert (config.flows_file, config.inventory_file) == (flows_file, inventory_file)
    packets = sum(len(batch) for batch in PcapFileSource(pcap).batches())

    async def run() -> None:
        agent = Agent(config, vendors())
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = time.monotonic() + 30
        while agent.engine.stats.packets < packets:
            assert time.monotonic() < deadline and not task.done(), "the capture was not read"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(run())
    replayed = {name: tmp_path / f"replay-{name}" for name in ("alerts.jsonl", "flows.jsonl", "devices.json")}
    code = cli.main(
        ["replay", str(pcap), "--policy", str(POLICY), "--batch-size", "4096",
         "--alerts", str(replayed["alerts.jsonl"]), "--flows", str(replayed["flows.jsonl"]),
         "--inventory", str(replayed["devices.json"])]
    )  # fmt: skip
    assert code == 0
    written = flows_file.read_text(encoding="utf-8").splitlines()
    assert written[0] == '{"kept": "from an earlier run"}'  # appended to, never truncated
    expected = replayed["flows.jsonl"].read_text(encoding="utf-8").splitlines()
    assert len(expected) > 20 and written[1:] == expected
    # Flows that ended while the capture ran, and those the shutdown ended.
    assert {"closed", "end"} <= {json.loads(line)["event"]["reason"] for line in expected}
    assert inventory_file.read_text(encoding="utf-8") == replayed["devices.json"].read_text(encoding="utf-8")
    assert len(json.loads(inventory_file.read_text())) >= 3
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_an_alert_spool_from_before_the_outbox_is_delivered(tmp_path: Path) -> None:
    """Upgrading keeps what was waiting: the alerts of an old `alerts.sqlite3` spool reach the broker."""
    pcap = site_capture(tmp_path / "site.pcap", seconds=2.0)
    state = tmp_path / "state"
    state.mkdir()
    with contextlib.closing(sqlite3.connect(state / "alerts.sqlite3", isolation_level=None)) as db:
        db.execute(
            "CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, topic TEXT "
            "NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute("PRAGMA user_version = 1")
        for n in range(3):
            alert = make_alert(f"spooled-{n}")
            db.execute(
                "INSERT INTO alerts (event_id, topic, payload, created) VALUES (?, ?, ?, 1.0)",
                (f"spooled-{n}", "camwatch/depot-7/gw-test/alerts/3", encode_record(alert)),
            )

    wanted = {f"spooled-{n}" for n in range(3)}

    def event_ids(messages: list[Received]) -> set[str]:
        return {json.loads(r.payload)["event"]["id"] for r in messages}

    async def run() -> set[str]:
        with Mosquitto(tmp_path / "broker") as broker:
            config = agent_config(tmp_path, pcap, broker, free_port())
            async with Subscriber(broker, "camwatch/+/+/alerts/#") as sub:
                done = asyncio.Event()

                async def watch() -> None:
                    await sub.wait_until(lambda m: wanted <= event_ids(m), 30)
                    done.set()

                watcher = asyncio.create_task(watch())
                await run_until(Agent(config, vendors()), done, 30)
                await watcher
                return event_ids(sub.messages)

    assert wanted <= asyncio.run(run())
    assert not (state / "alerts.sqlite3").exists() and (state / "outbox.sqlite3").is_file()
    with contextlib.closing(sqlite3.connect(state / "outbox.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0  # all acknowledged


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the agent drops privileges to 'nobody'")
def test_an_inventory_file_the_agent_cannot_replace_after_dropping_root_is_a_config_error(
    tmp_path: Path,
) -> None:
    pcap = site_capture(tmp_path / "site.pcap", seconds=1.0)
    out = tmp_path / "out"
    out.mkdir(mode=0o755)  # root's: 'nobody' cannot create the temporary file beside the inventory
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"site: depot-7\ngateway: gw-perm\ncapture: {{pcap: {pcap}, pace: fast}}\npolicy_file: {POLICY}\n"
        f"metrics: {{listen: 127.0.0.1, port: {free_port()}}}\nstate_dir: {tmp_path / 'state'}\n"
        f"run_as_user: nobody\ninventory_file: {out / 'devices.json'}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "run", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"inventory_file: its directory {out} is not writable by nobody" in done.stderr
    assert f"give {out} to nobody, or put the file in state_dir" in done.stderr
