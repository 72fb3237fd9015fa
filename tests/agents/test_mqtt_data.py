"""Flow records (QoS 0) and the retained inventory over MQTT, on their own connection, against a real
Mosquitto: what arrives, when the inventory is republished, and a broker that comes late."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agents.config import MqttSettings
from agents.sinks.mqtt_data import MqttDataLink, MqttFlowSink, MqttInventorySink
from tests.agents.mosquitto import Mosquitto, Subscriber, proxy_to, retained

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed")

PREFIX = "camwatch/depot-7/gw-1"


def settings(broker: Mosquitto, port: int | None = None) -> MqttSettings:
    return MqttSettings(
        host=broker.host,
        port=port or broker.port,
        site="depot-7",
        gateway="gw-1",
        backoff_initial=0.05,
        backoff_max=0.2,
    )


def device(
    mac: str, last_seen: str = "2026-02-02T10:00:00.000Z", peers: int = 1, **more: Any
) -> dict[str, Any]:
    return {
        "mac": mac,
        "ips": ["10.20.0.11"],
        "vendor": "hikvision",
        "last_seen": last_seen,
        "peers": peers,
        **more,
    }


def test_flow_records_and_the_inventory_arrive_on_their_topics(tmp_path: Path) -> None:
    async def run() -> tuple[list[Any], list[Any], Any]:
        with Mosquitto(tmp_path / "broker") as broker:
            async with Subscriber(broker, f"{PREFIX}/#") as sub:
                link = MqttDataLink(settings(broker))
                flows, inventory = (
                    MqttFlowSink(link),
                    MqttInventorySink(link, "depot-7/gw-1", with_metrics=False),
                )
                await flows.start()
                await inventory.start()
                for n in range(200):
                    await flows.submit({"event": {"kind": "event"}, "n": n})
                await inventory.submit([device("44-19-b6-00-00-01")])
                while link.inventory_published < 1:  # acknowledged (not only seen by the subscriber)
                    await asyncio.sleep(0.01)
                # Only last_seen and the peer count changed: nothing to publish.
                await inventory.submit([device("44-19-b6-00-00-01", "2026-02-02T10:05:00.000Z", peers=3)])
                assert not link.inventory_pending
                # The model became known: published.
                await inventory.submit([device("44-19-b6-00-00-01", model="DS-2CD2043G2")])
                assert link.inventory_pending
                await sub.wait_until(lambda m: sum(r.topic.endswith("/flows") for r in m) >= 200, 20)
                # A new device: published.
                await inventory.submit([device("44-19-b6-00-00-01"), device("3c-ef-8c-00-00-02")])
                await sub.wait_until(lambda m: sum(r.topic.endswith("/inventory") for r in m) >= 3, 20)
                await inventory.close()
                await flows.close()
                kept = await retained(broker, f"{PREFIX}/inventory")
                return (
                    [r for r in sub.messages if r.topic.endswith("/flows")],
                    [r for r in sub.messages if r.topic.endswith("/inventory")],
                    kept,
                )

    flows, inventories, kept = asyncio.run(run())
    assert [json.loads(r.payload)["n"] for r in flows] == list(range(200))  # every one, in order
    assert {r.qos for r in flows} == {0}
    assert len(inventories) == 3  # the last_seen-only change was not published
    first, model, second = (json.loads(r.payload) for r in inventories)
    assert model["devices"][0]["model"] == "DS-2CD2043G2"
    assert first["observer"] == {"name": "depot-7/gw-1"} and first["@timestamp"].endswith("Z")
    assert [d["mac"] for d in first["devices"]] == ["44-19-b6-00-00-01"]
    assert [d["mac"] for d in second["devices"]] == ["44-19-b6-00-00-01", "3c-ef-8c-00-00-02"]
    # A subscriber that comes later gets the current inventory at once: it is retained.
    assert kept is not None and kept.retain and json.loads(kept.payload)["devices"] == second["devices"]


def test_a_broker_that_comes_late_gets_the_newest_inventory_and_the_queued_flows(tmp_path: Path) -> None:
    async def run() -> tuple[list[Any], Any, int]:
        with Mosquitto(tmp_path / "broker") as broker:
            async with proxy_to(broker) as proxy, Subscriber(broker, f"{PREFIX}/flows") as sub:
                await proxy.pause()  # the broker is unreachable for the link, not for the test
                link = MqttDataLink(settings(broker, proxy.port), flow_queue=50)
                flows, inventory = (
                    MqttFlowSink(link),
                    MqttInventorySink(link, "depot-7/gw-1", with_metrics=False),
                )
                await flows.start()
                await inventory.start()
                for n in range(80):  # 30 more than the queue holds: the oldest go
                    await flows.submit({"n": n})
                await inventory.submit([device("44-19-b6-00-00-01")])
                await inventory.submit([device("44-19-b6-00-00-01"), device("3c-ef-8c-00-00-02")])
                while link.connect_failures < 2:
                    await asyncio.sleep(0.05)
                await proxy.resume()
                await sub.wait_until(lambda m: len(m) >= 50, 20)
                while link.queued:
                    await asyncio.sleep(0.05)
                await inventory.close()
                await flows.close()
                kept = await retained(broker, f"{PREFIX}/inventory")
                return [json.loads(r.payload)["n"] for r in sub.messages], kept, link.flows_dropped

    got, kept, dropped = asyncio.run(run())
    assert dropped == 30 and got == list(range(30, 80))
    assert kept is not None
    assert [d["mac"] for d in json.loads(kept.payload)["devices"]] == [
        "44-19-b6-00-00-01",
        "3c-ef-8c-00-00-02",
    ]
