"""`camwatch run` capturing live on a real interface: two network namespaces joined by a veth pair.

The agent and a Mosquitto broker run in namespace B (the "gateway"); the vendor personas' traffic is
written onto the veth from namespace A; the alerts must arrive over MQTT. Runs as root only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import scenario
from tests.agents.mosquitto import MOSQUITTO, free_port
from tests.agents.mqttsub import NamespaceSubscriber
from tests.agents.netns import NetnsPair, netns_pair, send_frames, skip_reason

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"

__all__ = ["netns_pair"]  # the fixture, imported for pytest

pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto is not installed"),
]


def test_live_capture_raises_the_personas_alerts_over_mqtt(netns_pair: NetnsPair, tmp_path: Path) -> None:
    pair = netns_pair
    port, metrics_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, str(MOSQUITTO), "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"site: depot-7\ngateway: gw-live\ncapture:\n  interfaces: [{pair.if_b}]\n"
        f"policy_file: {POLICY}\nmetrics:\n  listen: 127.0.0.1\n  port: {metrics_port}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\nstate_dir: {tmp_path / 'state'}\nrun_as_user: null\n"
    )
    command = [
        "ip",
        "netns",
        "exec",
        pair.ns_b,
        sys.executable,
        "-m",
        "agents.cli",
        "run",
        "--config",
        str(config),
    ]
    agent = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    collector: NamespaceSubscriber | None = None
    try:
        collector = NamespaceSubscriber(pair.ns_b, port, client_id="live-test")
        deadline = time.monotonic() + 15
        while not collector.online():
            assert time.monotonic() < deadline, "the agent never came online"
            assert agent.poll() is None, agent.stdout.read() if agent.stdout else ""
            time.sleep(0.1)
        # The personas' traffic, in capture order, as fast as the veth takes it.
        frames = [f for _, f in sorted(scenario.persona_events(scenario.demo_shape()), key=lambda e: e[0])]
        sent_at = time.monotonic()
        send_frames(pair.ns_a, pair.if_a, frames)
        want = {"dns.vendor_cloud", "dns.resolver_bypass", "p2p.nat_traversal", "upnp.port_mapping",
                "stream.unauthorized_client", "stream.egress", "egress.unexpected_destination"}  # fmt: skip
        while {a["rule"]["id"] for a in collector.alerts()} < want:  # type: ignore[index]
            assert time.monotonic() - sent_at < 10, sorted({a["rule"]["id"] for a in collector.alerts()})  # type: ignore[index]
            time.sleep(0.1)

        # device.new comes 5 s after a device is first watched (on the agent's clock tick when the link
        # is quiet): wait for the well-behaved Axis camera's too.
        def axis_rules() -> set[str]:
            return {
                a["rule"]["id"] for a in collector.alerts() if a["source"].get("mac") == "00-40-8c-00-03-01"
            }  # type: ignore[attr-defined, index, union-attr]

        while not axis_rules():
            assert time.monotonic() - sent_at < 10, "no alert for the Axis camera"
            time.sleep(0.1)
        got = collector.alerts()
        assert {a["observer"]["name"] for a in got} == {"depot-7/gw-live"}  # type: ignore[index]
        # The well-behaved Axis camera (its WS-Discovery reply) raised nothing but device.new.
        assert axis_rules() == {"device.new"}
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            out, _ = agent.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            out, _ = agent.communicate()
        if collector is not None:
            collector.close()
        broker.terminate()
        broker.wait(timeout=10)
    assert agent.returncode == 0, out
    assert (tmp_path / "state" / "inventory.json").is_file()
    assert os.path.getsize(tmp_path / "state" / "inventory.json") > 100
