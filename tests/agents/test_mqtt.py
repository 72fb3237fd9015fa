"""The MQTT alert publisher against a real Mosquitto: topics, payloads, status and last will, outages,
a killed agent, authentication and TLS (docs/design.md §4.6)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.config import AgentConfig, ConfigError
from agents.sinks.mqtt import (
    WILL_PAYLOAD,
    AlertPublisher,
    MqttSettings,
    alert_topic,
    backoff_delay,
    encode_alert,
)
from agents.sinks.outbox import OutboxChannel
from monitor import __version__
from tests.agents.helpers.publisher_proc import GATEWAY as PROC_GATEWAY
from tests.agents.helpers.publisher_proc import SITE as PROC_SITE
from tests.agents.helpers.publisher_proc import make_alert, open_spool
from tests.agents.mosquitto import (
    AUTH_PASSWORD,
    AUTH_USER,
    Mosquitto,
    Received,
    Subscriber,
    TlsFiles,
    mosquitto,  # noqa: F401  (fixture)
    mosquitto_auth,  # noqa: F401  (fixture)
    mosquitto_tls,  # noqa: F401  (fixture)
    proxy_to,
    retained,
    tls_files,  # noqa: F401  (fixture)
)

ROOT = Path(__file__).parents[2]
SITE, GATEWAY = "depot-7", "gw-1"
STATUS = f"camwatch/{SITE}/{GATEWAY}/status"
_T = TypeVar("_T")


def run(coro: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
    """Run a test coroutine with a hard deadline, so a hang fails the test instead of blocking CI."""

    async def bounded() -> _T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def settings(port: int, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "site": SITE,
        "gateway": GATEWAY,
        "backoff_initial": 0.05,
        "backoff_max": 0.3,
    }
    return MqttSettings(**(values | overrides))


def alerts_in(messages: list[Received]) -> list[Received]:
    return [m for m in messages if "/alerts/" in m.topic]


def event_ids(messages: list[Received]) -> set[str]:
    return {json.loads(m.payload)["event"]["id"] for m in alerts_in(messages)}


def statuses(messages: list[Received]) -> list[bytes]:
    return [m.payload for m in messages if m.topic.endswith("/status")]


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------- topics, payloads, status, will


def test_alerts_arrive_on_their_topic_with_the_exact_payload_at_qos1(
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    sent = [make_alert(f"ev-{sev}", severity=sev) for sev in (1, 2, 3, 4, 5)]

    async def scenario() -> None:
        async with Subscriber(mosquitto, "camwatch/#") as sub:
            with open_spool(tmp_path / "alerts.sqlite3", 1000, 1 << 20) as spool:
                async with AlertPublisher(settings(mosquitto.port), spool) as publisher:
                    for alert in sent:
                        await publisher.submit(alert)
                    await sub.wait_until(lambda m: len(alerts_in(m)) == len(sent), 10)
                    await until(lambda: spool.depth() == 0, 5, "the spool to be emptied by PUBACKs")
                    assert publisher.connected
                    assert publisher.published_total == len(sent)
                    assert publisher.last_connect_ts is not None
                    status = await retained(mosquitto, STATUS)
                    assert status is not None and status.retain and status.qos == 1
                    doc = json.loads(status.payload)
                    assert doc["state"] == "online" and doc["version"] == __version__
                    datetime.fromisoformat(doc["since"].replace("Z", "+00:00"))
        got = {json.loads(m.payload)["event"]["id"]: m for m in alerts_in(sub.messages)}
        for alert in sent:
            m = got[alert["event"]["id"]]
            assert m.topic == f"camwatch/{SITE}/{GATEWAY}/alerts/{alert['event']['severity']}"
            assert m.payload == encode_alert(alert)
            assert json.loads(m.payload) == alert
            assert m.qos == 1 and not m.retain

    run(scenario())


def test_the_sinks_collector_shows_the_connection_and_the_acknowledged_alerts(
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    def scrape(registry: CollectorRegistry) -> dict[str, float]:
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
        }

    async def scenario() -> None:
        with open_spool(tmp_path / "outbox.sqlite3", 1000, 1 << 20) as spool:
            publisher = AlertPublisher(settings(mosquitto.port), spool)
            registry = CollectorRegistry()
            registry.register(publisher.collector())
            assert scrape(registry) == {
                "camwatch_mqtt_connected": 0.0,
                "camwatch_mqtt_published_total": 0.0,
                "camwatch_mqtt_publish_failures_total": 0.0,
                "camwatch_mqtt_reconnects_total": 0.0,
            }
            await publisher.start()
            try:
                for n in range(3):
                    await publisher.submit(make_alert(f"m{n}"))
                await until(lambda: spool.depth() == 0, 5, "the PUBACKs")
                metrics = scrape(registry)
                assert (
                    metrics["camwatch_mqtt_connected"] == 1 and metrics["camwatch_mqtt_published_total"] == 3
                )
            finally:
                await publisher.close()
            assert scrape(registry)["camwatch_mqtt_connected"] == 0

    run(scenario())


def test_the_last_will_says_offline_when_the_connection_dies_and_nothing_is_lost(
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with Subscriber(mosquitto, "camwatch/#") as sub, proxy_to(mosquitto) as proxy:
            with open_spool(tmp_path / "alerts.sqlite3", 1000, 1 << 20) as spool:
                async with AlertPublisher(settings(proxy.port), spool) as publisher:
                    await publisher.submit(make_alert("before"))
                    await sub.wait_until(lambda m: "before" in event_ids(m), 10)
                    # Kill the agent's connection as a crash or a broken network does: no DISCONNECT.
                    await proxy.pause()
                    proxy.cut()
                    await sub.wait_until(lambda m: statuses(m)[-1:] == [WILL_PAYLOAD], 10)
                    status = await retained(mosquitto, STATUS)
                    assert status is not None and status.payload == WILL_PAYLOAD and status.retain
                    await until(lambda: not publisher.connected, 5, "the publisher to notice")
                    await publisher.submit(make_alert("during"))  # spooled; no broker reachable
                    assert spool.depth() == 1
                    await proxy.resume()
                    await sub.wait_until(lambda m: "during" in event_ids(m), 10)
                    assert publisher.reconnects_total == 1
                    assert publisher.connect_failures_total >= 1
                    assert json.loads(statuses(sub.messages)[-1])["state"] == "online"
        states = [json.loads(p)["state"] for p in statuses(sub.messages)]
        assert states == ["online", "offline", "online", "offline"]
        assert statuses(sub.messages)[-1] != WILL_PAYLOAD  # the clean shutdown says so itself

    run(scenario())


def test_a_clean_shutdown_publishes_what_is_spooled_then_offline(
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with Subscriber(mosquitto, "camwatch/#") as sub:
            with open_spool(tmp_path / "alerts.sqlite3", 1000, 1 << 20) as spool:
                async with AlertPublisher(settings(mosquitto.port), spool):
                    for n in range(200):
                        await spool_and_forget(spool, n)
                assert spool.depth() == 0
            await sub.wait_until(lambda m: len(event_ids(m)) == 200, 10)
            status = await retained(mosquitto, STATUS)
            assert status is not None
            doc = json.loads(status.payload)
            assert doc["state"] == "offline" and doc["version"] == __version__ and "since" in doc

    async def spool_and_forget(spool: OutboxChannel, n: int) -> None:
        # As the runtime does without a publisher: straight into the spool, picked up by the sender.
        alert = make_alert(f"s{n}")
        spool.put(encode_alert(alert), key=f"s{n}", route=settings(1).alert_topic(alert))

    run(scenario())


# ---------------------------------------------------------------------- outages and a killed agent


def test_a_hung_broker_is_left_after_the_puback_timeout_and_alerts_follow_later(
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with Subscriber(mosquitto, "camwatch/#") as sub, proxy_to(mosquitto) as proxy:
            with open_spool(tmp_path / "alerts.sqlite3", 1000, 1 << 20) as spool:
                async with AlertPublisher(settings(proxy.port, timeout=1.0), spool) as publisher:
                    await until(lambda: publisher.connected, 5, "a connection")
                    proxy.stalled = True  # TCP stays up, nothing gets through: only a timeout notices
                    await publisher.submit(make_alert("stalled"))
                    await until(lambda: publisher.publish_failures_total >= 1, 5, "the PUBACK timeout")
                    assert spool.depth() == 1
                    proxy.stalled = False
                    proxy.cut()  # the stalled connections would carry stale bytes
                    await sub.wait_until(lambda m: "stalled" in event_ids(m), 10)
                    await until(lambda: spool.depth() == 0, 5, "the ack")

    run(scenario())


def test_shutdown_without_a_broker_is_prompt_and_keeps_the_alerts(tmp_path: Path) -> None:
    port = Mosquitto(tmp_path / "never-started").port

    async def scenario() -> float:
        with open_spool(tmp_path / "alerts.sqlite3", 1000, 1 << 20) as spool:
            async with AlertPublisher(settings(port), spool) as publisher:
                for n in range(10):
                    await publisher.submit(make_alert(f"kept{n}"))
                await until(lambda: publisher.connect_failures_total >= 2, 5, "refused connections")
                started = time.monotonic()
            elapsed = time.monotonic() - started
            assert spool.depth() == 10
            return elapsed

    assert run(scenario()) < 1.0
    with open_spool(tmp_path / "alerts.sqlite3", 1000, 1 << 20) as spool:
        assert [i.key for i in spool.peek(100)] == [f"kept{n}" for n in range(10)]


def test_a_30_second_broker_outage_loses_no_alert(tmp_path: Path) -> None:
    """The broker stops for 30 s while an alert is submitted every 100 ms; all of them arrive afterwards.

    The broker keeps the subscriber's persistent session across its restart (persistence on), as a SOC
    consumer's broker would, so what the publisher sends before the subscriber is back is queued for it.
    """
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    sent: list[str] = []
    figures: dict[str, float] = {}

    async def scenario() -> None:
        async with Subscriber(broker, "camwatch/#", client_id="soc-consumer", persistent=True) as sub:
            with open_spool(tmp_path / "alerts.sqlite3", 10_000, 16 << 20) as spool:
                opts = {"backoff_initial": 0.2, "backoff_max": 2.0}
                async with AlertPublisher(settings(broker.port, **opts), spool) as publisher:
                    slowest = 0.0
                    began = time.monotonic()
                    stop = asyncio.Event()

                    async def produce() -> None:
                        nonlocal slowest
                        n = 0
                        while not stop.is_set():
                            t0 = time.monotonic()
                            await publisher.submit(make_alert(f"o{n}", severity=1 + n % 5, n=n))
                            if time.monotonic() - t0 > slowest:
                                slowest = time.monotonic() - t0
                                figures["slowest_at_s"] = t0 - began
                            sent.append(f"o{n}")
                            n += 1
                            await asyncio.sleep(0.1)

                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(produce(), name="producer")
                        await asyncio.sleep(1.0)
                        await asyncio.to_thread(broker.stop)
                        await asyncio.sleep(30.0)
                        assert not publisher.connected
                        assert spool.depth() >= 250  # ~300 alerts waited in the spool
                        figures["backlog"] = spool.depth()
                        backlog = set(sent)
                        restarted, restarted_wall = time.monotonic(), time.time()
                        await asyncio.to_thread(broker.start)
                        await sub.wait_until(lambda m: event_ids(m) >= backlog, 10)
                        figures["backlog_delivered_s"] = time.monotonic() - restarted
                        assert publisher.last_connect_ts is not None
                        figures["reconnect_s"] = publisher.last_connect_ts - restarted_wall
                        await asyncio.sleep(max(0.0, restarted + 1.0 - time.monotonic()))
                        stop.set()
                    await until(lambda: spool.depth() == 0, 10, "the spool to be empty")
                    await sub.wait_until(lambda m: event_ids(m) >= set(sent), 10)
                    figures["slowest_submit_s"] = slowest
                    assert publisher.reconnects_total >= 1
        assert event_ids(sub.messages) == set(sent)
        assert slowest < 0.5  # submit never waits for the network

    try:
        run(scenario(), timeout=60)
    finally:
        broker.stop()
    print(
        f"\nbroker outage 30 s: {len(sent)} alerts, {figures['backlog']:.0f} spooled at the restart; "
        f"reconnected {figures['reconnect_s']:.2f} s after it (backoff capped at 2 s here), whole backlog at "
        f"the subscriber {figures['backlog_delivered_s']:.2f} s after it; slowest submit "
        f"{figures['slowest_submit_s'] * 1000:.1f} ms (at +{figures['slowest_at_s']:.1f} s; broker stopped "
        "at +1 s, restarted at +31 s)"
    )


async def _start_proc(state_dir: Path, port: int, count: int, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.agents.helpers.publisher_proc",
        "--state-dir",
        str(state_dir),
        "--port",
        str(port),
        "--count",
        str(count),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("ab"),
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )


async def _spooled(proc: asyncio.subprocess.Process) -> int:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.startswith(b"SPOOLED "), line
    return int(line.split()[1])


async def _kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL


def test_a_sigkilled_publisher_loses_nothing_and_its_will_says_offline(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not started: the alerts stay in the spool
    state = tmp_path / "state"
    proc_log = tmp_path / "publisher.log"
    status_topic = f"camwatch/{PROC_SITE}/{PROC_GATEWAY}/status"

    def spool_rows() -> int:
        db = sqlite3.connect(f"file:{state / 'outbox.sqlite3'}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        finally:
            db.close()

    async def scenario() -> None:
        first = await _start_proc(state, broker.port, 40, proc_log)
        assert await _spooled(first) == 40
        await _kill(first)
        assert spool_rows() == 40

        await asyncio.to_thread(broker.start)
        async with Subscriber(broker, "camwatch/#") as sub:
            second = await _start_proc(state, broker.port, 0, proc_log)
            try:
                assert await _spooled(second) == 40
                await sub.wait_until(lambda m: event_ids(m) >= {f"kill-{n}" for n in range(40)}, 20)
                await until(lambda: spool_rows() == 0, 10, "the acks to be committed")
                assert json.loads(statuses(sub.messages)[-1])["state"] == "online"
            finally:
                await _kill(second)
            # Killed while connected: the broker publishes the last will.
            await sub.wait_until(lambda m: statuses(m)[-1:] == [WILL_PAYLOAD], 10)
        status = await retained(broker, status_topic)
        assert status is not None and status.payload == WILL_PAYLOAD

    try:
        run(scenario(), timeout=60)
    finally:
        broker.stop()
    with open_spool(state / "outbox.sqlite3", 1000, 1 << 20) as spool:
        assert spool.depth() == 0


# ---------------------------------------------------------------------- authentication and TLS


def test_password_authentication(
    mosquitto_auth: Mosquitto,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agents.sinks.mqtt")
    auth: dict[str, Any] = {"username": AUTH_USER, "password": AUTH_PASSWORD}

    async def scenario() -> None:
        async with Subscriber(mosquitto_auth, "camwatch/#", client_options=auth) as sub:
            with open_spool(tmp_path / "bad.sqlite3", 100, 1 << 20) as spool:
                bad = settings(mosquitto_auth.port, username=AUTH_USER, password="wrong")
                async with AlertPublisher(bad, spool) as publisher:
                    await publisher.submit(make_alert("refused"))
                    await until(lambda: publisher.connect_failures_total >= 2, 10, "refused connections")
                    assert not publisher.connected and spool.depth() == 1
            with open_spool(tmp_path / "good.sqlite3", 100, 1 << 20) as spool:
                good = settings(mosquitto_auth.port, username=AUTH_USER, password=AUTH_PASSWORD)
                async with AlertPublisher(good, spool) as publisher:
                    await publisher.submit(make_alert("accepted"))
                    await sub.wait_until(lambda m: "accepted" in event_ids(m), 10)
            assert "refused" not in event_ids(sub.messages)

    run(scenario())
    refused = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert refused and all("wrong" not in text for text in refused)  # no password in the logs


def test_tls_with_a_private_ca(
    mosquitto_tls: Mosquitto,  # noqa: F811
    tls_files: TlsFiles,  # noqa: F811
    tmp_path: Path,
) -> None:
    tls_client = {"tls_params": aiomqtt.TLSParameters(ca_certs=str(tls_files.ca))}

    async def scenario() -> None:
        async with Subscriber(mosquitto_tls, "camwatch/#", client_options=tls_client) as sub:
            # Without our CA (the system's CAs only) the broker's certificate is refused.
            with open_spool(tmp_path / "untrusted.sqlite3", 100, 1 << 20) as spool:
                async with AlertPublisher(settings(mosquitto_tls.port, tls=True), spool) as publisher:
                    await publisher.submit(make_alert("untrusted"))
                    await until(lambda: publisher.connect_failures_total >= 1, 10, "a refused certificate")
                    assert not publisher.connected and spool.depth() == 1
            with open_spool(tmp_path / "alerts.sqlite3", 100, 1 << 20) as spool:
                s = settings(mosquitto_tls.port, host="localhost", tls=True, ca_file=str(tls_files.ca))
                async with AlertPublisher(s, spool) as publisher:
                    await publisher.submit(make_alert("over-tls"))
                    await sub.wait_until(lambda m: "over-tls" in event_ids(m), 10)
            assert event_ids(sub.messages) == {"over-tls"}

    run(scenario())


# ---------------------------------------------------------------------- throughput and order


def test_publish_throughput_and_order_against_the_local_broker(
    mosquitto: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    n = 3000
    s = settings(mosquitto.port)
    result: dict[str, float] = {}

    async def scenario() -> None:
        async with Subscriber(mosquitto, "camwatch/#") as sub:
            with open_spool(tmp_path / "alerts.sqlite3", 10_000, 64 << 20) as spool:
                for i in range(n):
                    alert = make_alert(f"t{i:05d}", severity=1 + i % 3, n=i)
                    spool.put(encode_alert(alert), key=f"t{i:05d}", route=s.alert_topic(alert))
                start = time.monotonic()
                async with AlertPublisher(s, spool) as publisher:
                    await until(lambda: spool.depth() == 0, 30, "the spool to drain")
                    result["elapsed"] = time.monotonic() - start
                    assert publisher.published_total == n and publisher.publish_failures_total == 0
            await sub.wait_until(lambda m: len(alerts_in(m)) >= n, 20)
        # In order: per topic, alerts arrive in the order they were spooled.
        for severity in (1, 2, 3):
            ids = [
                json.loads(m.payload)["event"]["id"]
                for m in alerts_in(sub.messages)
                if m.topic.endswith(f"/{severity}")
            ]
            assert ids == sorted(ids) and len(ids) == n // 3

    run(scenario(), timeout=60)
    print(f"\npublish throughput, QoS 1, 32 in flight, local mosquitto: {n / result['elapsed']:.0f} alerts/s")


# ---------------------------------------------------------------------- settings, topics, backoff


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    assert backoff_delay(1, 1.0, 60.0, rand=lambda: 1.0) == 1.0
    assert backoff_delay(4, 1.0, 60.0, rand=lambda: 1.0) == 8.0
    assert backoff_delay(10, 1.0, 60.0, rand=lambda: 1.0) == 60.0
    assert backoff_delay(10_000, 1.0, 60.0, rand=lambda: 1.0) == 60.0  # no overflow
    assert backoff_delay(5, 1.0, 60.0, rand=lambda: 0.25) == 4.0
    assert all(0.0 <= backoff_delay(7, 1.0, 60.0) <= 60.0 for _ in range(1000))


def agent_config(mqtt: str, tmp_path: Path) -> AgentConfig:
    text = f"site: {SITE}\ngateway: {GATEWAY}\ncapture: {{interfaces: [eth1]}}\nmqtt: {mqtt}\n"
    return AgentConfig.from_yaml(text, "agent.yaml", tmp_path)


def test_settings_are_validated_by_the_config_reader_with_the_field_named(tmp_path: Path) -> None:
    cases = [
        ("{host: broker, port: 0}", "mqtt.port"),
        ("{host: broker, topic_prefix: 'cam#'}", "mqtt.topic_prefix"),
        ("{host: broker, ca_file: /etc/ca.pem}", "mqtt.ca_file"),
        ("{host: broker, keepalive: 0}", "mqtt.keepalive"),
        ("{host: ''}", "mqtt.host"),
    ]
    for mqtt, field in cases:
        with pytest.raises(ConfigError) as info:
            agent_config(mqtt, tmp_path)
        assert field in [p.field for p in info.value.problems], str(info.value)
    s = MqttSettings(host="broker", site=SITE, gateway=GATEWAY, password=None)
    assert s.identifier == f"camwatch-{SITE}-{GATEWAY}"
    assert s.status_topic == STATUS
    assert "s3cret" not in repr(
        MqttSettings(host="b", site=SITE, gateway=GATEWAY, username="u", password="s3cret")
    )


def test_alert_topics_follow_the_numeric_severity(tmp_path: Path) -> None:
    s = settings(1883, topic_prefix="acme/camwatch")
    assert s.alert_topic(make_alert("e", severity=4)) == f"acme/camwatch/{SITE}/{GATEWAY}/alerts/4"
    assert s.alert_topic({"event": {"id": "e"}}).endswith("/alerts/unknown")
    config = AgentConfig.from_yaml(f"site: {SITE}\ngateway: {GATEWAY}\ncapture: {{interfaces: [eth1]}}\n")
    assert config.mqtt is None
    assert alert_topic(config, make_alert("e", severity=2)) == f"camwatch/{SITE}/{GATEWAY}/alerts/2"
    assert alert_topic(s, make_alert("e", severity=2)) == s.alert_topic(make_alert("e", severity=2))
    with_section = agent_config("{host: b, topic_prefix: acme}", tmp_path)
    assert alert_topic(with_section, make_alert("e", severity=3)) == f"acme/{SITE}/{GATEWAY}/alerts/3"


def test_the_config_section_is_the_publishers_settings_with_one_set_of_defaults(tmp_path: Path) -> None:
    s = agent_config("{host: mqtt.site, tls: true, keepalive: }", tmp_path)
    assert isinstance(s.mqtt, MqttSettings)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.tls, s.mqtt.ca_file) == ("mqtt.site", 8883, True, None)
    # Left out (or null) in the file, built in code: the same defaults, from one place.
    bare = MqttSettings(host="mqtt.site", site=SITE, gateway=GATEWAY, tls=True)
    assert (s.mqtt.keepalive, s.mqtt.identifier, s.mqtt.port) == (bare.keepalive, bare.identifier, bare.port)
    assert (bare.keepalive, bare.identifier) == (60, f"camwatch-{SITE}-{GATEWAY}")
    assert s.mqtt.status_topic == STATUS


def test_the_password_is_read_from_its_file_only_when_asked(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("from-the-file\n")
    secret.chmod(0o600)
    config = agent_config(
        "{host: broker.site, tls: true, username: gw, password_file: mqtt.password}", tmp_path
    )
    assert config.mqtt is not None and config.mqtt.password is None  # the config holds no secret
    s = config.mqtt.with_password()
    assert (s.username, s.password, s.keepalive) == ("gw", "from-the-file", config.mqtt.keepalive)
    secret.unlink()
    with pytest.raises(OSError):
        config.mqtt.with_password()
