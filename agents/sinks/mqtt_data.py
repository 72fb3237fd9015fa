"""Flow records and the inventory over MQTT (docs/design.md §4.6), on a connection of their own.

Topics (``<prefix>/<site>/<gateway>/...``):

- ``flows``: one flow record (docs/design.md §4.3) per message, QoS 0, not retained; off by default
  (``mqtt.flows: true``). Best effort by design: the records are also in ``flows_file``; while the broker is
  unreachable they wait in a bounded queue (:data:`FLOW_QUEUE` records), the oldest dropped beyond it
  (``camwatch_mqtt_flows_dropped_total``);
- ``inventory``: the inventory, retained, QoS 1, so a consumer that subscribes gets the current one at once:
  ``{"@timestamp": ..., "observer": {"name": "<site>/<gateway>"}, "devices": [...]}`` with the records of
  docs/design.md §4.4. Published when it changes (a device appears or goes, or its addresses, attribution,
  evidence, model, firmware or protocols change: not for ``last_seen`` and ``peers`` alone) and at least
  every :data:`INVENTORY_REFRESH_SECONDS`; on by default with an ``mqtt`` section (``mqtt.inventory``).

Why a second connection (client id ``<client id>-data``): a burst of flow records must never queue in front
of an alert, and the alert connection's last will and status belong to it alone. One :class:`MqttDataLink`
serves both sinks (:class:`MqttFlowSink`, :class:`MqttInventorySink`); it reconnects with the same capped,
jittered backoff as the alert publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import aiomqtt
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.config import MqttSettings
from agents.sinks.base import Record, encode_record
from agents.sinks.mqtt import backoff_delay, tls_context

__all__ = [
    "FLOW_QUEUE",
    "INVENTORY_REFRESH_SECONDS",
    "MqttDataCollector",
    "MqttDataLink",
    "MqttFlowSink",
    "MqttInventorySink",
    "inventory_document",
]

log = logging.getLogger(__name__)

#: Flow records kept while the broker is unreachable; the oldest are dropped beyond.
FLOW_QUEUE: Final = 10_000
#: Flow records published at once.
FLOW_BATCH: Final = 64
#: The retained inventory is published again after this long even without a change (fresh ``last_seen``).
INVENTORY_REFRESH_SECONDS: Final = 900.0
# Fields that change with every packet: a change of these alone does not republish the inventory.
_VOLATILE: Final = frozenset({"last_seen", "peers"})


def inventory_document(devices: Sequence[Mapping[str, Any]], observer: str) -> dict[str, Any]:
    """The retained inventory message: the records with when and where they were taken."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"@timestamp": now, "observer": {"name": observer}, "devices": list(devices)}


def _fingerprint(devices: Sequence[Mapping[str, Any]]) -> str:
    stable = [{k: v for k, v in d.items() if k not in _VOLATILE} for d in devices]
    return json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str)


class MqttDataLink:
    """The data connection: publishes queued flow records (QoS 0) and the newest inventory (retained)."""

    def __init__(self, settings: MqttSettings, flow_queue: int = FLOW_QUEUE) -> None:
        self.settings = settings
        self.flows_topic = f"{settings.topic_prefix}/{settings.site}/{settings.gateway}/flows"
        self.inventory_topic = f"{settings.topic_prefix}/{settings.site}/{settings.gateway}/inventory"
        self.connected = False
        self.flows_published = 0
        self.flows_dropped = 0
        self.inventory_published = 0
        self.reconnects = 0
        self.connect_failures = 0
        self._flows: deque[bytes] = deque()
        self._flow_queue = flow_queue
        self._inventory: bytes | None = None  # the newest inventory not yet acknowledged by the broker
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._users = 0
        self._connections = 0

    @property
    def inventory_pending(self) -> bool:
        """An inventory waits to be published."""
        return self._inventory is not None

    @property
    def queued(self) -> int:
        """Flow records waiting for the broker."""
        return len(self._flows)

    # ------------------------------------------------------------------ what the sinks hand over

    def queue_flow(self, payload: bytes) -> None:
        if len(self._flows) >= self._flow_queue:
            self._flows.popleft()
            self.flows_dropped += 1
            if self.flows_dropped in (1, 10, 100) or self.flows_dropped % 10_000 == 0:
                log.warning(
                    "mqtt flows: %d flow records dropped (the broker does not keep up or is unreachable; "
                    "they are in flows_file if one is set)",
                    self.flows_dropped,
                )
        self._flows.append(payload)
        self._wake.set()

    def set_inventory(self, payload: bytes) -> None:
        self._inventory = payload
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle (shared by the sinks)

    async def start(self) -> None:
        self._users += 1
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="camwatch-mqtt-data")

    async def close(self) -> None:
        """When its last sink closes: publish what is queued (``drain_timeout``), then disconnect."""
        self._users -= 1
        if self._users > 0 or self._task is None:
            return
        task, self._task = self._task, None
        self._closing.set()
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=self.settings.drain_timeout)
        if not done:
            log.warning(
                "mqtt data: shutdown: %d flow records%s not published in time",
                len(self._flows),
                " and the inventory" if self._inventory is not None else "",
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info(
            "mqtt data: stopped: %d flow records published (%d dropped), the inventory published %d times",
            self.flows_published,
            self.flows_dropped,
            self.inventory_published,
        )

    # ------------------------------------------------------------------ the connection

    async def _supervise(self) -> None:
        s = self.settings
        failures = 0
        while True:
            try:
                await self._session()
                return
            except (aiomqtt.MqttError, OSError) as exc:
                failure: BaseException = exc
            self.connected = False
            self.connect_failures += 1
            if self._closing.is_set():
                log.warning("mqtt data: %s (%s); stopping", failure, s.broker)
                return
            failures += 1
            delay = backoff_delay(failures, s.backoff_initial, s.backoff_max)
            log.warning("mqtt data: %s (%s); retrying in %.1f s", failure, s.broker, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _session(self) -> None:
        s = self.settings
        context = await asyncio.to_thread(tls_context, s) if s.tls else None
        async with aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=f"{s.identifier}-data",
            logger=logging.getLogger(f"{__name__}.client"),
            clean_session=True,
            keepalive=s.keepalive,
            timeout=s.timeout,
            max_inflight_messages=s.max_inflight,
            tls_context=context,
        ) as client:
            # aiomqtt warns above this many pending calls; a batch of publishes is expected.
            client.pending_calls_threshold = FLOW_BATCH + 2
            self._connections += 1
            if self._connections > 1:
                self.reconnects += 1
            self.connected = True
            log.info("mqtt data: connected to %s as %s-data", s.broker, s.identifier)
            try:
                await self._publish(client)
            finally:
                self.connected = False

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            self._wake.clear()
            inventory = self._inventory
            if inventory is not None:
                await client.publish(self.inventory_topic, inventory, qos=1, retain=True)
                if self._inventory is inventory:  # a newer one may have come meanwhile
                    self._inventory = None
                self.inventory_published += 1
                continue
            if self._flows:
                # Several publishes at once: paho writes them in one go (a quarter faster than one by one).
                batch = [self._flows.popleft() for _ in range(min(len(self._flows), FLOW_BATCH))]
                try:
                    await asyncio.gather(
                        *(client.publish(self.flows_topic, p, qos=0, retain=False) for p in batch)
                    )
                except aiomqtt.MqttError:
                    # Not known which went out: the batch goes again on the next connection (QoS 0 is at
                    # most once per attempt; a consumer may see a record twice after a reconnect).
                    self._flows.extendleft(reversed(batch))
                    while len(self._flows) > self._flow_queue:
                        self._flows.popleft()  # the bound drops the oldest, as queue_flow does
                        self.flows_dropped += 1
                    raise
                self.flows_published += len(batch)
                continue
            if self._closing.is_set():
                return
            await self._wake.wait()

    def collector(self) -> MqttDataCollector:
        return MqttDataCollector(self)


class MqttFlowSink:
    """``mqtt.flows``: each flow record to ``<prefix>/<site>/<gateway>/flows``, QoS 0."""

    name = "mqtt_flows"

    def __init__(self, link: MqttDataLink, with_metrics: bool = True) -> None:
        self.link = link
        self._with_metrics = with_metrics

    async def start(self) -> None:
        await self.link.start()

    async def submit(self, record: Record) -> None:
        self.link.queue_flow(encode_record(record))

    async def close(self) -> None:
        await self.link.close()

    def collector(self) -> MqttDataCollector | None:
        # The link's metrics are registered once, by one of the sinks sharing it.
        return self.link.collector() if self._with_metrics else None


class MqttInventorySink:
    """``mqtt.inventory``: the inventory, retained, when it changed (or every 15 minutes)."""

    name = "mqtt_inventory"

    def __init__(self, link: MqttDataLink, observer: str, with_metrics: bool = True) -> None:
        self.link = link
        self.observer = observer
        self._last: str | None = None
        self._last_at = 0.0
        self._with_metrics = with_metrics

    async def start(self) -> None:
        await self.link.start()

    async def submit(self, records: Sequence[Mapping[str, Any]]) -> None:
        fingerprint = _fingerprint(records)
        now = time.monotonic()
        if fingerprint == self._last and now - self._last_at < INVENTORY_REFRESH_SECONDS:
            return
        self._last, self._last_at = fingerprint, now
        document = inventory_document(records, self.observer)
        self.link.set_inventory(json.dumps(document, separators=(",", ":"), default=str).encode("utf-8"))

    async def close(self) -> None:
        await self.link.close()

    def collector(self) -> MqttDataCollector | None:
        return self.link.collector() if self._with_metrics else None


class MqttDataCollector(Collector):
    """``camwatch_mqtt_flows_*`` and ``camwatch_mqtt_inventory_*``."""

    def __init__(self, link: MqttDataLink) -> None:
        self._link = link

    def describe(self) -> Iterable[Metric]:
        return _families(False, 0, 0, 0, 0)

    def collect(self) -> Iterable[Metric]:
        k = self._link
        return _families(
            k.connected, k.flows_published, k.flows_dropped, len(k._flows), k.inventory_published
        )


def _families(connected: bool, published: int, dropped: int, queued: int, inventories: int) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "camwatch_mqtt_data_connected",
            "1 while the connection for flow records and the inventory is up, else 0.",
            value=float(connected),
        ),
        CounterMetricFamily(
            "camwatch_mqtt_flows_published_total", "Flow records published (QoS 0).", value=published
        ),
        CounterMetricFamily(
            "camwatch_mqtt_flows_dropped_total",
            "Flow records dropped because the queue for the broker was full.",
            value=dropped,
        ),
        GaugeMetricFamily("camwatch_mqtt_flows_queued", "Flow records waiting for the broker.", value=queued),
        CounterMetricFamily(
            "camwatch_mqtt_inventory_published_total",
            "Times the retained inventory was published (and acknowledged).",
            value=inventories,
        ),
    ]
