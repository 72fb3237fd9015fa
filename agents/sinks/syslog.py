"""The syslog sink (docs/siem.md): each alert as one RFC 5424 message whose MSG is the alert record's JSON.

Wire format, one message per alert::

    <PRI>1 TIMESTAMP HOSTNAME camwatch PROCID MSGID [origin software="camwatch" swVersion="..."] {...}

- ``PRI`` is ``facility * 8 + severity``; the alert's ``event.severity`` maps to syslog severities as
  :data:`SYSLOG_SEVERITY` says (5 critical -> 1 alert, 4 high -> 2 critical, 3 warning -> 4 warning, 2 info ->
  6 informational);
- ``TIMESTAMP`` is the alert's ``@timestamp`` (when it happened, not when it was sent: a spooled alert
  keeps its time), ``HOSTNAME`` the gateway, ``MSGID`` the ``rule.id``, so a receiver can route on them
  without parsing the JSON;
- STRUCTURED-DATA is the IANA-registered ``origin`` element (RFC 5424 §7.2: no private enterprise number);
- MSG is the compact JSON of the alert record (docs/design.md §4.2), UTF-8 without a byte-order mark (RFC 5424
  MSG-ANY): a BOM would end up in front of the JSON in every receiver's file and break its JSON parser.

Transports: ``udp`` (RFC 5426, one message per datagram), ``tcp`` (RFC 6587) and ``tls`` (RFC 5425), the
stream transports with octet-counting framing (``LEN SP MSG``), which survives any byte in the message.

Delivery: the sink is durable. ``submit`` commits the alert to the ``syslog`` channel of the outbox first; a
background task sends the channel in order and deletes each alert once the transport took it (the TCP/TLS
write drained into the kernel, the datagram sent). A receiver that is down or unreachable only delays
delivery: the sender reconnects with a capped, jittered backoff and resends from the oldest alert. Syslog has
no acknowledgements, so the alerts in the kernel's send buffer when a connection breaks can be lost (RFC 6587
§3.3.3): use MQTT where at-least-once matters; the syslog copy is for the SIEM.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.config import SYSLOG_FACILITIES as FACILITIES
from agents.config import SYSLOG_PROTOCOLS as PROTOCOLS
from agents.config import SyslogSettings
from agents.sinks.base import Record, SinkError, encode_record
from agents.sinks.outbox import OutboxChannel, OutboxError
from monitor import __version__

__all__ = [
    "FACILITIES",
    "PROTOCOLS",
    "SYSLOG_SEVERITY",
    "SyslogCollector",
    "SyslogError",
    "SyslogSettings",
    "SyslogSink",
    "format_message",
    "octet_counted",
    "tls_context",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: camwatch ``event.severity`` -> RFC 5424 severity (1 alert, 2 critical, 4 warning, 6 informational).
SYSLOG_SEVERITY: Final[Mapping[int, int]] = {5: 1, 4: 2, 3: 4, 2: 6}
_DEFAULT_SYSLOG_SEVERITY: Final = 5  # notice: an alert of a severity camwatch does not define
#: The channel of the outbox the sink keeps its alerts in.
CHANNEL: Final = "syslog"
# RFC 5426: a datagram larger than this may be truncated or dropped on the way; the sink warns once.
_UDP_SAFE: Final = 2048
_UDP_MAX: Final = 65_507
_BATCH: Final = 256
_TIMESTAMP_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_NON_PRINTABLE: Final = re.compile(r"[^!-~]")  # PRINTUSASCII: %d33-126


class SyslogError(SinkError):
    """The syslog receiver could not be reached or the connection failed."""


def format_message(alert: Mapping[str, Any], settings: SyslogSettings, procid: int | None = None) -> bytes:
    """The RFC 5424 message for one alert (without framing)."""
    event = alert.get("event")
    severity = event.get("severity") if isinstance(event, Mapping) else None
    syslog_severity = (
        SYSLOG_SEVERITY.get(severity, _DEFAULT_SYSLOG_SEVERITY)
        if isinstance(severity, int) and not isinstance(severity, bool)
        else _DEFAULT_SYSLOG_SEVERITY
    )
    pri = FACILITIES.get(settings.facility, FACILITIES["local0"]) * 8 + syslog_severity
    stamp = alert.get("@timestamp")
    if not (isinstance(stamp, str) and _TIMESTAMP_RE.fullmatch(stamp)):
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    rule = alert.get("rule")
    rule_id = rule.get("id") if isinstance(rule, Mapping) else None
    header = " ".join(
        (
            f"<{pri}>1",
            stamp,
            _field(settings.hostname, 255),
            _field(settings.app_name, 48),
            _field(str(procid if procid is not None else os.getpid()), 128),
            _field(str(rule_id) if rule_id else "-", 32),
            f'[origin software="camwatch" swVersion="{_sd_value(__version__)}"]',
        )
    )
    return header.encode("ascii") + b" " + encode_record(alert)


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 / RFC 5425 §4.3 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII, at most ``limit`` characters, ``-`` when empty."""
    clean = _NON_PRINTABLE.sub("-", value)[:limit]
    return clean or "-"


def _sd_value(value: str) -> str:
    """An SD-PARAM value: '"', '\\' and ']' escaped (RFC 5424 §6.3.3)."""
    return re.sub(r'(["\\\]])', r"\\\1", value)


def _backoff(failures: int, initial: float, maximum: float) -> float:
    """Capped exponential backoff, full jitter (as the MQTT sink's)."""
    return random.random() * min(maximum, initial * 2.0 ** min(max(failures - 1, 0), 62))


class SyslogSink:
    """Sends the alerts of its outbox channel to a syslog receiver from a background task."""

    name = "syslog"

    def __init__(
        self, settings: SyslogSettings, channel: OutboxChannel, tls: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.connected = False
        self.sent_total = 0
        """Alerts handed to the transport and deleted from the outbox."""
        self.send_failures_total = 0
        """Connections or sends that failed (the alerts stay in the outbox and are sent again)."""
        self.reconnects_total = 0
        self.spool_failures_total = 0
        """Alerts ``submit`` could not store in the outbox (lost, logged at ERROR)."""
        self._procid = os.getpid()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camwatch-syslog")
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connections = 0
        self._warned_size = False
        self._closed = False
        # Built by the agent while privileged (a client key can be root-only), or here.
        self._tls = tls if tls is not None or settings.protocol != "tls" else tls_context(settings)

    async def start(self) -> None:
        """Start sending in the background (what waits in the outbox goes first)."""
        if self._task is not None or self._closed:
            raise RuntimeError("a SyslogSink is started once")
        self._task = asyncio.create_task(self._run(), name="camwatch-syslog-sender")

    async def submit(self, alert: Record) -> None:
        """Store the alert in the outbox (in a worker thread) and wake the sender."""
        event = alert.get("event")
        key = str(event.get("id", "")) if isinstance(event, Mapping) else ""
        try:
            await self._in_worker(
                self.channel.put, format_message(alert, self.settings, self._procid), key=key
            )
        except OutboxError as exc:
            self.spool_failures_total += 1
            log.error("syslog: alert not stored in the outbox, it is lost: %s", exc)
            return
        self._wake.set()

    async def close(self) -> None:
        """Send what waits (``drain_timeout``), then stop; the rest stays in the outbox. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._wake.set()
        try:
            if self._task is not None:
                done, _ = await asyncio.wait({self._task}, timeout=self.settings.drain_timeout)
                if not done:
                    log.warning(
                        "syslog: shutdown: %d alerts not sent in time stay in the outbox",
                        self.channel.depth(),
                    )
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
        finally:
            await asyncio.to_thread(self._io.shutdown, wait=True)

    def collector(self) -> SyslogCollector:
        """``camwatch_syslog_*``."""
        return SyslogCollector(self)

    # ------------------------------------------------------------------ the sender

    async def _run(self) -> None:
        s = self.settings
        failures = 0
        while True:
            try:
                await self._session()
                return  # a session ends cleanly only on shutdown
            except (OSError, SyslogError, OutboxError, ssl.SSLError) as exc:
                failure: BaseException = exc
            self.connected = False
            self.send_failures_total += 1
            if self._closing.is_set():
                log.warning(
                    "syslog: %s (%s); %d alerts stay in the outbox", failure, s.receiver, self.channel.depth()
                )
                return
            failures += 1
            delay = _backoff(failures, s.backoff_initial, s.backoff_max)
            log.warning(
                "syslog: %s (%s); retrying in %.1f s (%d alerts waiting)",
                failure,
                s.receiver,
                delay,
                self.channel.depth(),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    async def _session(self) -> None:
        s = self.settings
        if s.protocol == "udp":
            await self._session_udp()
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    s.host, s.port, ssl=self._tls, server_hostname=s.host if self._tls else None
                ),
                s.timeout,
            )
        except TimeoutError as exc:
            raise SyslogError("connection timed out") from exc
        self._on_connect()
        lost = asyncio.create_task(_watch_eof(reader), name="camwatch-syslog-link")
        try:

            async def send(frames: list[bytes]) -> None:
                if lost.done():
                    raise SyslogError("connection closed by the receiver")
                writer.write(b"".join(octet_counted(frame) for frame in frames))
                await asyncio.wait_for(writer.drain(), s.timeout)

            await self._pump(send, lost)
        finally:
            lost.cancel()
            self.connected = False
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _session_udp(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        protocol = _DatagramErrors()
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, remote_addr=(s.host, s.port))
        self._on_connect()
        try:

            async def send(frames: list[bytes]) -> None:
                for frame in frames:
                    if protocol.error is not None:
                        raise protocol.error
                    if len(frame) > _UDP_MAX:
                        log.error("syslog: a %d-byte alert does not fit in a datagram: not sent", len(frame))
                        continue
                    if len(frame) > _UDP_SAFE and not self._warned_size:
                        self._warned_size = True
                        log.warning(
                            "syslog: a %d-byte alert over UDP may be cut by the receiver (RFC 5426 "
                            "guarantees 480-2048 bytes); use tcp or tls",
                            len(frame),
                        )
                    transport.sendto(frame)

            await self._pump(send, None)
        finally:
            self.connected = False
            transport.close()

    async def _pump(self, send: Callable[[list[bytes]], Any], lost: asyncio.Task[None] | None) -> None:
        """Send the channel, oldest first, until shutdown with nothing left (or a failure raises)."""
        while True:
            self._wake.clear()
            batch = await self._in_worker(self.channel.peek, _BATCH)
            if batch:
                await send([item.payload for item in batch])
                await self._in_worker(self.channel.ack_many, [item.row_id for item in batch])
                self.sent_total += len(batch)
                continue
            if self._closing.is_set():
                return
            waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait())}
            if lost is not None:
                waits.add(lost)
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                if task is not lost:
                    task.cancel()
            if lost is not None and lost in done:
                raise SyslogError("connection closed by the receiver")

    def _on_connect(self) -> None:
        self._connections += 1
        if self._connections > 1:
            self.reconnects_total += 1
        self.connected = True
        log.info("syslog: sending alerts to %s; %d waiting", self.settings.receiver, self.channel.depth())

    async def _in_worker(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        job = asyncio.get_running_loop().run_in_executor(self._io, functools.partial(fn, *args, **kwargs))
        # Shielded: a cancelled caller must not drop a queued put (the alert would be lost).
        return await asyncio.shield(job)


async def _watch_eof(reader: asyncio.StreamReader) -> None:
    """A syslog receiver never sends: anything read ends, EOF or an error, mean the connection is gone."""
    with contextlib.suppress(OSError, ssl.SSLError):
        while await reader.read(4096):
            pass


class _DatagramErrors(asyncio.DatagramProtocol):
    """Remembers an ICMP error (port unreachable) reported on the socket."""

    def __init__(self) -> None:
        self.error: OSError | None = None

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc


def tls_context(s: SyslogSettings) -> ssl.SSLContext:
    """The client TLS context for these settings (reads the CA, certificate and key files)."""
    ctx = ssl.create_default_context(cafile=s.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.cert_file is not None:
        ctx.load_cert_chain(s.cert_file, s.key_file)
    if s.tls_insecure:
        ctx.check_hostname = False
    return ctx


class SyslogCollector(Collector):
    """``camwatch_syslog_*``: the sink's connection, counters and what waits in its outbox channel."""

    def __init__(self, sink: SyslogSink) -> None:
        self._sink = sink

    def describe(self) -> Iterable[Metric]:
        return _families(False, 0, 0, 0, 0)

    def collect(self) -> Iterable[Metric]:
        s = self._sink
        return _families(
            s.connected, s.sent_total, s.send_failures_total, s.reconnects_total, s.channel.depth()
        )


def _families(connected: bool, sent: int, failures: int, reconnects: int, waiting: int) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "camwatch_syslog_connected",
            "1 while the syslog sink has a connection (tcp, tls) or a socket (udp), else 0.",
            value=float(connected),
        ),
        CounterMetricFamily("camwatch_syslog_sent_total", "Alerts sent to the syslog receiver.", value=sent),
        CounterMetricFamily(
            "camwatch_syslog_failures_total",
            "Connections or sends to the syslog receiver that failed (the alerts wait and are sent again).",
            value=failures,
        ),
        CounterMetricFamily(
            "camwatch_syslog_reconnects_total",
            "Connections to the receiver after the first.",
            value=reconnects,
        ),
        GaugeMetricFamily(
            "camwatch_syslog_waiting", "Alerts in the outbox waiting for the syslog receiver.", value=waiting
        ),
    ]
