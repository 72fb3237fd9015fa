"""The MQTT sink (docs/design.md §4.6): spool first, publish with QoS 1, delete on PUBACK.

Topics (`<prefix>` is `camwatch` unless configured):
- `<prefix>/<site>/<gateway>/alerts/<severity>`: one alert record (docs/design.md §4.2) as compact JSON,
  QoS 1, not retained; `<severity>` is the alert's numeric `event.severity` as text.
- `<prefix>/<site>/<gateway>/status`: retained, QoS 1. `{"state":"online","since":...,"version":...}` after
  each connection; `{"state":"offline","since":...,"version":...}` on a clean shutdown; the broker publishes
  the last will `{"state":"offline"}` when the connection dies without a clean disconnect.

Delivery guarantee: at least once. `submit` commits the alert to its outbox spool before anything else and
never waits for the network. A background task publishes the spool in order and deletes each alert only
after its PUBACK. With aiomqtt 2.x, `await client.publish(..., qos=1)` returns only once paho's
`on_publish` fired for that message id, and paho fires it for QoS 1 only when the PUBACK arrives (paho
`_handle_pubackcomp` -> `_do_on_publish`; aiomqtt `Client.publish` waits on an event set by `_on_publish`;
both read in the installed sources). After a reconnect everything still spooled is published again, so a
consumer may see an alert twice (the PUBACK was lost with the connection): drop duplicates by `event.id`.
A PUBACK means the broker took the message, not that a subscriber got it; with MQTT 3.1.1 a broker that
refuses a publish (ACL) still acknowledges it, so the broker's ACL must allow the topics.

Connection handling: one aiomqtt client per connection (no session state is carried across connections:
the spool is the session). Any MQTT error, a lost link (seen at once through the client's message
iterator, rather than after a publish timeout) or a missing PUBACK within `timeout` ends the connection;
the publisher reconnects after a capped exponential backoff with full jitter. An outage is said once (the
first failed attempt, at WARNING; a reminder every 5 minutes while it lasts; each attempt at DEBUG) and its
end once (the connection, at WARNING, with how long it lasted); ``camwatch_mqtt_connected`` says it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

import aiomqtt
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.config import AgentConfig, MqttSettings
from agents.sinks.base import Record, SinkError, encode_record
from agents.sinks.outbox import OutboxChannel, OutboxError, OutboxItem
from monitor import __version__

__all__ = [
    "AlertPublisher",
    "BrokerError",
    "MqttCollector",
    "MqttSettings",
    "PublishError",
    "PublisherError",
    "alert_topic",
    "backoff_delay",
    "encode_alert",
    "tls_context",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

WILL_PAYLOAD = b'{"state":"offline"}'
#: While the broker cannot be reached: the first failed attempt is logged at WARNING, then one reminder this
#: often (each attempt at DEBUG), and the connection that ends the outage at WARNING.
OUTAGE_REMINDER_SECONDS = 300.0


class PublisherError(SinkError):
    """Root of the MQTT publisher's errors."""


class BrokerError(PublisherError):
    """The connection to the broker failed or was lost."""


class PublishError(BrokerError):
    """A publish got no PUBACK (error, timeout or the connection dropped while it was in flight)."""


class _Drained(Exception):
    """Ends a connection's task group on shutdown (internal)."""


def alert_topic(config: AgentConfig | MqttSettings, alert: Mapping[str, Any]) -> str:
    """The alert topic for these settings, or for an agent config (its `mqtt` section; without one, the
    topic the default settings would use)."""
    if isinstance(config, MqttSettings):
        return config.alert_topic(alert)
    settings = config.mqtt or MqttSettings(host="", site=config.site, gateway=config.gateway)
    return settings.alert_topic(alert)


def encode_alert(alert: Mapping[str, Any]) -> bytes:
    """The alert record as compact UTF-8 JSON, exactly as published (same form as the JSON-lines sink)."""
    return encode_record(alert)


def backoff_delay(
    failures: int, initial: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff, full jitter: uniform in [0, min(maximum, initial * 2**(failures-1))]."""
    exponent = min(max(failures - 1, 0), 62)  # no float overflow after a very long outage
    return rand() * min(maximum, initial * 2.0**exponent)


class AlertPublisher:
    """The MQTT sink: publishes the alerts of its outbox channel from a background task.

    ``start``/``close`` (or ``async with``) run it; ``collector`` gives its ``camwatch_mqtt_*`` metrics.
    """

    name = "mqtt"

    def __init__(self, settings: MqttSettings, spool: OutboxChannel) -> None:
        self.settings = settings
        self.spool = spool
        """The publisher's outbox channel: each alert waits there until its PUBACK."""
        self.connected = False
        self.published_total = 0
        """Alerts acknowledged by the broker (PUBACK) and deleted from the spool."""
        self.publish_failures_total = 0
        """Publishes that got no PUBACK (they stay spooled and are sent again)."""
        self.reconnects_total = 0
        """Successful connections after the first one."""
        self.connect_failures_total = 0
        """Connection attempts or connections that ended in an error."""
        self.spool_failures_total = 0
        """Alerts `submit` could not spool at all (logged at ERROR)."""
        self.last_connect_ts: float | None = None
        """Unix time of the last CONNACK."""
        # One worker thread does every spool call of this publisher: an fsync must not stall the event loop,
        # and a single thread keeps the calls in submission order.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camwatch-spool")
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._abandon = asyncio.Event()
        self._failures = 0
        self._outage_since: float | None = None  # monotonic: the first failed attempt of the current outage
        self._outage_said = 0.0
        self._connections = 0
        self._acked: list[int] = []
        self._ack_ready = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AlertPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start publishing in the background (what is spooled already goes first)."""
        if self._tg is not None or self._closed:
            raise RuntimeError("an AlertPublisher is started once")
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._supervisor = self._tg.create_task(self._supervise(), name="camwatch-mqtt-publisher")

    async def close(self) -> None:
        """Publish what is spooled (``drain_timeout``), say offline and disconnect; what is left stays
        spooled for the next start. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._tg is None or self._supervisor is None:  # never started
            await asyncio.to_thread(self._io.shutdown, wait=True)
            return
        s = self.settings
        supervisor = self._supervisor
        # Shutdown in steps, each bounded: publish what is spooled (drain_timeout), then give up on what is
        # in flight and say "offline" (timeout), then cancel. Alerts left over stay in the spool.
        self._closing.set()
        self._wake.set()
        try:
            await asyncio.wait({supervisor}, timeout=s.drain_timeout)
            if not supervisor.done():
                log.warning(
                    "mqtt: shutdown: %d alerts not published in time stay spooled", self.spool.depth()
                )
                self._abandon.set()
                # Bounded by aiomqtt's timeout twice: the offline publish, then the DISCONNECT.
                await asyncio.wait({supervisor}, timeout=2 * s.timeout + 1.0)
        finally:
            # Also reached when this task is cancelled while waiting: never leave the group or the worker.
            if not supervisor.done():
                supervisor.cancel()
            try:
                # The body's exception is not handed to the group, which would wrap it in an ExceptionGroup
                # and so change what the caller sees; the supervisor is done or cancelled by now.
                await self._tg.__aexit__(None, None, None)
            finally:
                # Wait for queued spool calls (acks) so the caller can close the spool right after.
                await asyncio.to_thread(self._io.shutdown, wait=True)
                log.info(
                    "mqtt publisher stopped: %d alerts published, %d still spooled",
                    self.published_total,
                    self.spool.depth(),
                )

    async def submit(self, alert: Record) -> None:
        """Spool the alert durably (in a worker thread) and wake the sender; never waits for the network."""
        topic = self.settings.alert_topic(alert)
        event = alert.get("event")
        event_id = str(event.get("id", "")) if isinstance(event, Mapping) else ""
        try:
            await self._spool_io(self.spool.put, encode_alert(alert), key=event_id, route=topic)
        except OutboxError as exc:
            # Raising would stop the caller's alert loop and lose every later alert: count and say it.
            self.spool_failures_total += 1
            log.error("mqtt: alert not spooled, it is lost: %s", exc)
            return
        self._wake.set()

    async def submit_to(self, topic: str, record: Mapping[str, Any], key: str = "") -> None:
        """Spool a record for another topic of this gateway (containment's audit records,
        ``<prefix>/<site>/<gateway>/containment``) and wake the sender: same outbox, same order, same
        delivery as the alerts."""
        try:
            await self._spool_io(self.spool.put, encode_record(record), key=key, route=topic)
        except OutboxError as exc:
            self.spool_failures_total += 1
            log.error("mqtt: record for %s not spooled, it is lost: %s", topic, exc)
            return
        self._wake.set()

    def collector(self) -> MqttCollector:
        """The ``camwatch_mqtt_*`` metrics."""
        return MqttCollector(self)

    # ------------------------------------------------------------------ connection loop

    async def _supervise(self) -> None:
        s = self.settings
        # At least one attempt even when shutdown has already begun: a short run (a capture file) still
        # gets its alerts out within drain_timeout when the broker is there.
        while True:
            failure: BaseException | None = None
            try:
                await self._session()
            except* (aiomqtt.MqttError, SinkError, OSError) as group:
                failure = _first_leaf(group)
            except* Exception as group:
                # A bug must not end alert delivery for good: log it loudly and keep retrying.
                failure = _first_leaf(group)
                log.error("mqtt: unexpected error in the publisher", exc_info=failure)
            self.connected = False
            if self._closing.is_set():
                return
            if failure is None:  # a session only ends cleanly on shutdown; anything else is a failure
                failure = BrokerError("connection ended", broker=s.broker)
            self._failures += 1
            self.connect_failures_total += 1
            delay = backoff_delay(self._failures, s.backoff_initial, s.backoff_max)
            where = "" if isinstance(failure, SinkError) and failure.broker else f" ({s.broker})"
            now = time.monotonic()
            if self._outage_since is None:
                self._outage_since = self._outage_said = now
                level = logging.WARNING  # the outage starts: said once
            elif now - self._outage_said >= OUTAGE_REMINDER_SECONDS:
                self._outage_said = now
                level = logging.WARNING  # a reminder while it lasts
            else:
                level = logging.DEBUG  # each further attempt
            log.log(
                level,
                "mqtt: %s%s; retrying in %.1f s (%d alerts spooled; %d attempt(s) failed in %.0f s)",
                failure,
                where,
                delay,
                self.spool.depth(),
                self._failures,
                now - self._outage_since,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _session(self) -> None:
        """One connection: say online, publish the spool until the link drops or shutdown, say offline."""
        s = self.settings
        context = await asyncio.to_thread(tls_context, s) if s.tls else None
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=s.identifier,
            logger=logging.getLogger(f"{__name__}.client"),
            will=aiomqtt.Will(s.status_topic, WILL_PAYLOAD, qos=1, retain=True),
            clean_session=True,
            keepalive=s.keepalive,
            timeout=s.timeout,
            max_inflight_messages=s.max_inflight,
            tls_context=context,
        )
        # aiomqtt warns above this many pending calls; our own bound is max_inflight.
        client.pending_calls_threshold = s.max_inflight + 1
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise BrokerError(f"cannot connect: {exc}", broker=s.broker) from exc
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_exit(client)
            self._on_connect()
            await self._publish_status(client, "online")
            # The broker demonstrably works: the next failure starts the backoff from the beginning.
            self._failures = 0
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._watch_link(client), name="mqtt-link")
                    tg.create_task(self._send(client, tg), name="mqtt-sender")
                    tg.create_task(self._wait_abandon(), name="mqtt-abandon")
                    tg.create_task(self._acker(), name="mqtt-acker")
            except* _Drained:
                pass
            finally:
                self.connected = False
                # PUBACKs received but not yet deleted: delete them now, or they are published again.
                await self._flush_acks()
            if self._closing.is_set():
                try:
                    await self._publish_status(client, "offline")
                except PublisherError as exc:
                    log.warning(
                        "mqtt: could not publish the offline status (the last will covers it): %s", exc
                    )
                log.info("mqtt: disconnecting from %s", s.broker)

    def _on_connect(self) -> None:
        self._connections += 1
        if self._connections > 1:
            self.reconnects_total += 1
        self.connected = True
        self.last_connect_ts = time.time()
        s = self.settings
        outage = ""
        if self._outage_since is not None:
            outage = f" after {time.monotonic() - self._outage_since:.0f} s without a broker"
            self._outage_since = None
        log.log(
            logging.WARNING if outage else logging.INFO,
            "mqtt: connected to %s%s as %s%s; %d alerts spooled",
            s.broker,
            " (TLS)" if s.tls else "",
            s.identifier,
            outage,
            self.spool.depth(),
        )

    async def _publish_status(self, client: aiomqtt.Client, state: str) -> None:
        s = self.settings
        payload = json.dumps(
            {"state": state, "since": _iso_now(), "version": __version__}, separators=(",", ":")
        ).encode()
        try:
            await client.publish(s.status_topic, payload, qos=1, retain=True)
        except aiomqtt.MqttError as exc:
            raise PublishError(
                f"status not acknowledged: {exc}", broker=s.broker, topic=s.status_topic
            ) from exc

    async def _watch_link(self, client: aiomqtt.Client) -> None:
        # Nothing is subscribed, so the iterator yields nothing; it raises as soon as the connection drops,
        # which ends the task group and with it the publishes waiting for a PUBACK that will never come.
        try:
            async for _message in client.messages:
                pass
        except aiomqtt.MqttError as exc:
            reason = exc.__cause__ or exc
            raise BrokerError(f"connection lost: {reason}", broker=self.settings.broker) from exc
        raise BrokerError("connection closed", broker=self.settings.broker)

    async def _acker(self) -> None:
        while True:
            await self._ack_ready.wait()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        self._ack_ready.clear()
        if self._acked:
            ids, self._acked = self._acked, []
            await self._spool_io(self.spool.ack_many, ids)

    async def _wait_abandon(self) -> None:
        await self._abandon.wait()
        raise _Drained

    async def _send(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        """Publish the spool in order, up to `max_inflight` at once; returns only by raising."""
        s = self.settings
        slots = asyncio.Semaphore(s.max_inflight)
        inflight: set[asyncio.Task[None]] = set()
        after = 0  # each connection starts from the oldest alert: whatever was not acknowledged goes again
        epoch = self.spool.epoch
        while True:
            # Clear before looking: a submit that lands after the peek sets the event again.
            self._wake.clear()
            if self.spool.epoch != epoch:
                # The outbox's file is back with alerts older than the cursor: from the oldest again (those in
                # flight may go twice; consumers drop duplicates by event.id).
                epoch, after = self.spool.epoch, 0
            batch = await self._spool_io(self.spool.peek, s.max_inflight, after)
            if not batch:
                if self._closing.is_set():
                    if inflight:
                        await asyncio.wait(inflight)
                    raise _Drained
                await self._wake.wait()
                continue
            await self._spool_io(self.spool.note_attempts, [item.row_id for item in batch])
            for item in batch:
                await slots.acquire()
                # Tasks start in creation order and paho queues the PUBLISH before the task's first await,
                # so alerts go on the wire in spool order.
                task = tg.create_task(
                    self._publish_one(client, item, slots), name=f"mqtt-publish-{item.row_id}"
                )
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                after = item.row_id

    async def _publish_one(self, client: aiomqtt.Client, item: OutboxItem, slots: asyncio.Semaphore) -> None:
        acknowledged = False
        try:
            try:
                await client.publish(item.route, item.payload, qos=1, retain=False)
            except aiomqtt.MqttError as exc:
                raise PublishError(
                    f"no PUBACK: {exc}", broker=self.settings.broker, topic=item.route, key=item.key
                ) from exc
            acknowledged = True
            self.published_total += 1
            # Deleted in batches by the acker: one transaction (and one thread hop) for many PUBACKs.
            self._acked.append(item.row_id)
            self._ack_ready.set()
        finally:
            slots.release()
            if not acknowledged:
                self.publish_failures_total += 1

    async def _spool_io(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        job = asyncio.get_running_loop().run_in_executor(self._io, functools.partial(fn, *args, **kwargs))
        # Shielded: cancelling the caller would otherwise cancel a job still queued for the worker, and a
        # dropped ack means a duplicate, a dropped put a lost alert. The job runs to the end either way.
        return await asyncio.shield(job)


def tls_context(s: MqttSettings) -> ssl.SSLContext:
    """The client TLS context for these settings (also the data link's, agents/sinks/mqtt_data.py)."""
    # Built in a worker thread: loading CA bundles and keys reads files.
    ctx = ssl.create_default_context(cafile=s.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.cert_file:
        ctx.load_cert_chain(s.cert_file, s.key_file)
    if s.tls_insecure:
        ctx.check_hostname = False
    return ctx


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class MqttCollector(Collector):
    """``camwatch_mqtt_*``: the publisher's connection and counters, read at scrape time."""

    def __init__(self, publisher: AlertPublisher) -> None:
        self._publisher = publisher

    def describe(self) -> Iterable[Metric]:
        return _families(False, 0, 0, 0)

    def collect(self) -> Iterable[Metric]:
        p = self._publisher
        return _families(p.connected, p.published_total, p.publish_failures_total, p.reconnects_total)


def _families(connected: bool, published: int, failures: int, reconnects: int) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "camwatch_mqtt_connected", "1 if connected to the MQTT broker, else 0.", value=float(connected)
        ),
        CounterMetricFamily(
            "camwatch_mqtt_published_total", "Alerts the broker acknowledged (PUBACK).", value=published
        ),
        CounterMetricFamily(
            "camwatch_mqtt_publish_failures_total",
            "Publishes that failed or were not acknowledged in time (the alert stays in the spool).",
            value=failures,
        ),
        CounterMetricFamily(
            "camwatch_mqtt_reconnects_total",
            "Connection attempts to the broker after the first (after a loss or a failed attempt).",
            value=reconnects,
        ),
    ]
