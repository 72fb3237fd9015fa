"""Containment inside the agent: the first apply, following the policy file and the kernel, judging the
captured flows (dry-run counting, enforce logging), automatic quarantine from alerts, publishing the audit
log over MQTT, and the start-up error without CAP_NET_ADMIN.

The gateway is the namespaces of gateway_site.py with real nftables; the engine is the real one, fed with
frames built here (what a capture of the camera side of the gateway would see).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from agents.config import AgentConfig
from agents.contain.agent import AgentContainment, containment_topic
from agents.contain.audit import last_records, read_audit
from agents.contain.nft import Nft
from agents.contain.plan import NameAllow
from agents.contain.render import render_ruleset
from monitor.engine import Engine
from monitor.flows import Flow
from tests.agents.contain.conftest import needs_nft
from tests.agents.contain.gateway_site import API, CAM1, CLOUD, POLICY, REC, VMS, Site
from tests.agents.mosquitto import MOSQUITTO, Mosquitto, Subscriber
from tests.enginerun import run_frames

pytestmark = needs_nft

ROOT = Path(__file__).parents[3]
CAM1_MAC, FAR_MAC, REC_MAC, GW_MAC = (
    "44:19:b6:77:00:11",
    "44:19:b6:00:00:09",
    "00:11:32:77:00:02",
    "02:00:00:00:00:01",
)
FAR = "10.50.0.9"  # a Hikvision device outside the monitored networks: watched by vendor
T0 = 1_770_000_000_000_000_000


def frames() -> list[tuple[int, bytes]]:
    """The camera tries its cloud (three SYNs, no answer), the far device sends to the cloud, the recorder
    pulls the camera (a complete handshake)."""
    out: list[tuple[int, bytes]] = []
    for n in range(3):
        syn = (
            Ether(src=CAM1_MAC, dst=GW_MAC)
            / IP(src=CAM1, dst=CLOUD, ttl=64)
            / TCP(sport=40000, dport=8666, flags="S")
        )
        out.append((T0 + n * 1_000_000_000, bytes(syn)))
    far = Ether(src=FAR_MAC, dst=GW_MAC) / IP(src=FAR, dst=CLOUD, ttl=64) / UDP(sport=5000, dport=6002) / b"x"
    out.append((T0 + 100_000_000, bytes(far)))
    out.append(
        (
            T0 + 200_000_000,
            bytes(
                Ether(src=REC_MAC, dst=GW_MAC) / IP(src=REC, dst=CAM1) / TCP(sport=5555, dport=554, flags="S")
            ),
        )
    )
    out.append(
        (
            T0 + 210_000_000,
            bytes(
                Ether(src=CAM1_MAC, dst=GW_MAC)
                / IP(src=CAM1, dst=REC)
                / TCP(sport=554, dport=5555, flags="SA")
            ),
        )
    )
    return out


def make_config(tmp_path: Path, mode: str, **containment: Any) -> AgentConfig:
    policy = tmp_path / "policy.yaml"
    if not policy.exists():
        policy.write_text(POLICY)
    doc = {
        "site": "cwtest",
        "gateway": "gw",
        "capture": {"interfaces": ["eth1"]},
        "policy_file": str(policy),
        "state_dir": str(tmp_path / "state"),
        "run_as_user": None,
        "mqtt": {"host": "127.0.0.1"},
        "containment": {"mode": mode, "check_interval": 1, **containment},
    }
    return AgentConfig.from_yaml(json.dumps(doc), "agent.yaml", tmp_path)


def engine_and_flows(config: AgentConfig) -> tuple[Engine, list[Flow]]:
    engine, flows, _ = run_frames(frames(), policy=config.site_policy)
    return engine, flows


def agent(site: Site, config: AgentConfig, engine: Engine) -> AgentContainment:
    return AgentContainment(config, engine, threading.Lock(), nft=site.nft())


def scrape(containment: AgentContainment) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(containment.collector())
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def clean(site: Site) -> None:
    site.nft().load("table inet camwatch {}\ndelete table inet camwatch\n")


def test_enforce_applies_at_start_and_logs_and_counts_what_it_blocks(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clean(site)
    config = make_config(tmp_path, "enforce")
    engine, flows = engine_and_flows(config)
    containment = agent(site, config, engine)
    containment.start()
    state = site.nft().table()
    assert containment.plan is not None and state is not None and state.digest == containment.plan.digest
    # The device of a watched vendor outside the monitored networks is contained, from the inventory.
    assert "10.50.0.9" in site.nft()._run(["list", "set", "inet", "camwatch", "watched_v4"])
    assert last_records(containment.files.audit, 1)[0].reason == "agent start"
    assert not site.tcp("cam", CAM1, CLOUD, 8666) and site.tcp("rec", REC, CAM1, 554)
    with caplog.at_level(logging.WARNING, logger="agents.contain.agent"):
        containment.observe(flows)
        containment.observe(flows)  # the same device and destination again: counted, not logged again
        containment._tick()
    logged = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert len(logged) == 2, logged
    assert any(f"blocked {CAM1} (44-19-b6-77-00-11) -> {CLOUD} 8666/tcp" in m for m in logged)
    assert any(f"blocked {FAR} (44-19-b6-00-00-09) -> {CLOUD} 6002/udp" in m for m in logged)
    containment._check("periodic check")  # reads the kernel's counters (every check_interval)
    metrics = scrape(containment)
    assert metrics['camwatch_containment_device_flows_total{action="blocked",mac="44-19-b6-77-00-11"}'] == 2
    assert metrics['camwatch_containment_device_packets_total{action="blocked",mac="44-19-b6-77-00-11"}'] == 6
    assert not any("00-11-32" in name for name in metrics)  # the recorder's pull is not blocked
    assert metrics['camwatch_containment_mode{mode="enforce"}'] == 1
    assert metrics["camwatch_containment_ruleset_loaded"] == 1
    assert metrics['camwatch_containment_applies_total{result="applied"}'] == 1
    assert metrics['camwatch_containment_dropped_packets_total{reason="policy"}'] >= 1  # the SYNs above


def test_dry_run_counts_what_would_be_blocked_and_loads_nothing(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clean(site)
    config = make_config(tmp_path, "dry-run", quarantine={"auto_rules": ["p2p.nat_traversal"]})
    engine, flows = engine_and_flows(config)
    containment = agent(site, config, engine)
    before = site.nft()._run(["list", "ruleset"])
    containment.start()
    with caplog.at_level(logging.WARNING, logger="agents.contain.agent"):
        containment.observe(flows)
        containment._tick()
    asyncio.run(containment.on_alert(alert("p2p.nat_traversal")))
    assert site.nft()._run(["list", "ruleset"]) == before
    assert site.tcp("cam", CAM1, CLOUD, 8666)
    assert any(f"dry run: would block {CAM1}" in r.getMessage() for r in caplog.records)
    metrics = scrape(containment)
    assert (
        metrics['camwatch_containment_device_flows_total{action="would_block",mac="44-19-b6-77-00-11"}'] == 1
    )
    assert metrics["camwatch_containment_ruleset_loaded"] == 0
    assert metrics['camwatch_containment_applies_total{result="dry-run"}'] == 1
    assert metrics['camwatch_containment_auto_quarantines_total{outcome="dry-run"}'] == 1
    assert [(r.action, r.outcome) for r in last_records(containment.files.audit, 2)] == [
        ("apply", "dry-run"),
        ("quarantine", "dry-run"),
    ]


def alert(rule: str, mac: str = CAM1_MAC.replace(":", "-"), ip: str = CAM1) -> dict[str, Any]:
    return {
        "event": {"id": f"incident-{rule}", "severity": 4},
        "rule": {"id": rule},
        "source": {"ip": ip, "mac": mac},
        "destination": {"ip": CLOUD},
        "device": {"id": mac},
        "message": "Camera started P2P NAT traversal",
    }


def test_a_critical_alert_quarantines_its_device(site: Site, tmp_path: Path) -> None:
    clean(site)
    config = make_config(
        tmp_path, "enforce", quarantine={"auto_rules": ["p2p.nat_traversal"], "durations": ["2m"]}
    )
    engine, _ = engine_and_flows(config)
    containment = agent(site, config, engine)
    containment.start()
    assert site.tcp("cam", CAM1, VMS, 9000)
    asyncio.run(containment.on_alert(alert("upnp.port_mapping")))  # not an auto rule: nothing
    assert site.nft().table().elements("quarantine") == []  # type: ignore[union-attr]
    asyncio.run(containment.on_alert(alert("p2p.nat_traversal")))
    state = site.nft().table()
    assert state is not None and [str(e.address) for e in state.elements("quarantine")] == [CAM1]
    assert not site.tcp("cam", CAM1, VMS, 9000) and site.tcp("rec", REC, CAM1, 554)
    (record,) = last_records(containment.files.audit, 1)
    assert (record.action, record.outcome, record.rule, record.device) == (
        "quarantine",
        "applied",
        "p2p.nat_traversal",
        "44-19-b6-77-00-11",
    )
    assert record.incident == "incident-p2p.nat_traversal" and record.expires is not None
    assert 110 < record.expires - record.ts <= 120
    asyncio.run(containment.on_alert(alert("p2p.nat_traversal")))  # a repeat: refused, time not extended
    assert last_records(containment.files.audit, 1)[0].outcome == "refused"
    # The ruleset loaded again by hand from `render` has no quarantine: the next check puts it back.
    assert containment.plan is not None
    site.nft().load(render_ruleset(containment.plan))
    assert site.tcp("cam", CAM1, VMS, 9000)
    containment._check("periodic check")
    assert (
        "quarantined addresses missing from the kernel" in last_records(containment.files.audit, 1)[0].reason
    )
    assert not site.tcp("cam", CAM1, VMS, 9000)
    containment._tick()
    metrics = scrape(containment)
    assert metrics["camwatch_containment_quarantined_devices"] == 1
    assert metrics['camwatch_containment_auto_quarantines_total{outcome="applied"}'] == 1
    assert metrics['camwatch_containment_auto_quarantines_total{outcome="refused"}'] == 1


def test_a_name_rule_allows_what_dns_answered_for_its_ttl_across_reloads_and_restarts(
    site: Site, tmp_path: Path
) -> None:
    # The plan gets a name rule directly (policies with names: test_plan.py; answers: test_answers.py).
    clean(site)
    config = make_config(tmp_path, "enforce", name_grace=0)
    engine, _ = engine_and_flows(config)
    containment = agent(site, config, engine)
    containment.start()
    assert containment.plan is not None
    rule = NameAllow("api by name", ("*.api.example",), frozenset({(8444, "tcp")}))
    containment.plan = dataclasses.replace(containment.plan, names=(rule,))
    assert not site.tcp("cam", CAM1, API, 8444)
    containment.learn("cdn.example", API, 300)  # no rule matches
    containment.learn("eu.api.example.", API, 300)
    containment._tick()
    assert site.tcp("cam", CAM1, API, 8444) and not site.tcp("cam", CAM1, API, 8443 + 2)
    assert scrape(containment)["camwatch_containment_name_addresses"] == 1
    state = site.nft().table()
    assert state is not None
    (element,) = state.elements("names_ports")
    assert (str(element.address), element.transport, element.port) == (API, "tcp", 8444)
    assert element.expires is not None and 250 < element.expires <= 300
    # A reload carries it; so does a restart of the agent (read back from the kernel).
    containment._check("reload", force=True)  # the table is replaced: the element goes into the new one
    assert last_records(containment.files.audit, 1)[0].reason == "reload"
    assert site.tcp("cam", CAM1, API, 8444)
    again = agent(site, config, engine)
    again.start()
    assert site.tcp("cam", CAM1, API, 8444) and again.stats.learned == 0  # counted at its first tick
    again._tick()
    assert again.stats.learned == 1


def test_a_quarantine_nft_refuses_is_audited_and_the_alert_path_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, "enforce", quarantine={"auto_rules": ["p2p.nat_traversal"]})
    engine, _ = engine_and_flows(config)
    broken = Nft(("ip", "netns", "exec", "cw-no-such-namespace", "nft"))
    containment = AgentContainment(config, engine, threading.Lock(), nft=broken)
    asyncio.run(containment.on_alert(alert("p2p.nat_traversal")))
    (record,) = last_records(containment.files.audit, 5)
    assert (record.action, record.outcome) == ("quarantine", "failed") and "nft failed" in record.reason
    assert scrape(containment)['camwatch_containment_auto_quarantines_total{outcome="failed"}'] == 1


def test_it_follows_the_policy_file_and_restores_its_table_but_not_after_a_remove(
    site: Site, tmp_path: Path
) -> None:
    clean(site)
    config = make_config(tmp_path, "enforce")
    engine, _ = engine_and_flows(config)
    containment = agent(site, config, engine)
    containment.start()
    first = containment.applied
    assert site.tcp("cam", CAM1, VMS, 9000)
    # The policy file changes: the vms rule goes. The next check applies the new plan.
    assert config.policy_file is not None
    config.policy_file.write_text(POLICY.replace("  - {name: vms, to: [203.0.113.20/32]}\n", ""))
    os.utime(config.policy_file, (time.time() + 5, time.time() + 5))
    containment._check("periodic check")
    assert containment.applied != first and site.nft().table().digest == containment.applied  # type: ignore[union-attr]
    assert "policy file" in last_records(containment.files.audit, 1)[0].reason
    assert not site.tcp("cam", CAM1, VMS, 9000)
    # A policy that does not validate is refused once; the one in force stays.
    config.policy_file.write_text("site: cwtest\nmonitored: {networks: [10.91.0.0/33]}\n")
    os.utime(config.policy_file, (time.time() + 10, time.time() + 10))
    applied = containment.applied
    containment._check("periodic check")
    containment._check("periodic check")
    refusals = [r for r in last_records(containment.files.audit, 3) if r.outcome == "refused"]
    assert len(refusals) == 1 and "cannot be used" in refusals[0].reason
    assert containment.applied == applied
    # Deleted outside camwatch: loaded again at the next check.
    site.nft().load("delete table inet camwatch\n")
    containment._check("periodic check")
    assert site.nft().table() is not None
    assert "deleted outside camwatch" in last_records(containment.files.audit, 1)[0].reason
    # Removed with `camwatch contain remove`: it stays removed.
    containment.controller.remove("cli:test", "maintenance")
    containment._check("periodic check")
    assert site.nft().table() is None and containment.stats.loaded is False


class Recorded:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Mapping[str, Any], str]] = []

    async def submit_to(self, topic: str, record: Mapping[str, Any], key: str = "") -> None:
        self.sent.append((topic, record, key))


def test_the_audit_log_is_published_once_in_order(site: Site, tmp_path: Path) -> None:
    clean(site)
    config = make_config(tmp_path, "enforce")
    engine, _ = engine_and_flows(config)
    containment = agent(site, config, engine)
    containment.start()
    publisher = Recorded()
    containment.attach_publisher(publisher)
    ip = ipaddress.ip_address(CAM1)
    containment.controller.quarantine(containment.plan, "cam", [ip], "cli:test", "manual", automatic=False)
    asyncio.run(containment._publish_audit())
    asyncio.run(containment._publish_audit())
    lines, _ = read_audit(containment.files.audit)
    assert [r for _, r, _ in lines if r] and [p[1] for p in publisher.sent] == [
        r.to_json() for _, r, _ in lines if r
    ]
    assert {p[0] for p in publisher.sent} == {"camwatch/cwtest/gw/containment"}
    containment.controller.release(CAM1, "cli:test", "done")
    asyncio.run(containment._publish_audit())
    assert publisher.sent[-1][1]["action"] == "release" and len(publisher.sent) == len(lines) + 1


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto is not installed")
def test_audit_records_reach_an_mqtt_subscriber(site: Site, tmp_path: Path) -> None:
    from agents.sinks.mqtt import AlertPublisher
    from agents.sinks.outbox import Outbox

    clean(site)

    async def scenario() -> list[dict[str, Any]]:
        with Mosquitto(tmp_path / "broker") as broker:
            config = make_config(tmp_path, "enforce")
            assert config.mqtt is not None
            settings = config.mqtt.__class__(host=broker.host, port=broker.port, site="cwtest", gateway="gw")
            engine, _ = engine_and_flows(config)
            containment = agent(site, config, engine)
            containment.start()
            topic = containment_topic("camwatch", "cwtest", "gw")
            with Outbox.open(tmp_path / "outbox.sqlite3") as outbox:
                publisher = AlertPublisher(settings, outbox.channel("mqtt", 1000, 1 << 20))
                async with Subscriber(broker, topic) as sub, publisher:
                    containment.attach_publisher(publisher)
                    await containment._publish_audit()
                    await sub.wait_until(lambda got: len(got) >= 1, 10)
                    return [json.loads(m.payload) for m in sub.messages]

    received = asyncio.run(scenario())
    assert received[0]["action"] == "apply" and received[0]["outcome"] == "applied"
    assert received[0]["observer"] == "cwtest/gw" and received[0]["reason"] == "agent start"


def test_enforce_without_cap_net_admin_is_a_start_up_error(site: Site) -> None:
    # A directory an unprivileged user can use; the agent runs as nobody with no capabilities.
    work = Path(tempfile.mkdtemp(prefix="cwcontain-"))
    try:
        work.chmod(0o777)
        (work / "policy.yaml").write_text(POLICY)
        doc = {
            "site": "cwtest",
            "capture": {"interfaces": ["lo"]},
            "policy_file": "policy.yaml",
            "state_dir": str(work / "state"),
            "run_as_user": None,
            "containment": {"mode": "enforce"},
        }
        (work / "agent.yaml").write_text(json.dumps(doc))
        for f in work.iterdir():
            f.chmod(0o644)
        setpriv = shutil.which("setpriv")
        assert setpriv is not None
        done = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
             sys.executable, "-m", "agents.cli", "run", "--config", str(work / "agent.yaml")],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "containment.mode" in done.stderr and "without CAP_NET_ADMIN" in done.stderr
        assert "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_leftovers(site: Site) -> Iterator[None]:
    yield
    clean(site)
