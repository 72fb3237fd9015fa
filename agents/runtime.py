"""The gateway agent: capture sources -> engine -> sinks, with metrics and state on disk.

Threads and the event loop: each capture source is a blocking iterator of batches, run in its own
thread together with `Engine.feed` (under one lock), so neither the kernel ring nor the engine ever
waits for the event loop and the event loop never waits for them. The loop carries what is
asynchronous: the sinks, time ticks for idle links, saving state, signals, and the stream probe
(``stream_probe``: its probes run as child processes, agents/probe).

Outputs are sinks (agents/sinks/base.py), in three streams:

- alerts, the engine's and the stream probe's, take one path (``_submit_alert``): counted by rule
  (``camwatch_alerts_total``), then handed to ``alerts_file`` when one is configured, then to MQTT, which
  commits each alert to the outbox before publishing it; without an ``mqtt`` section there is no broker
  and no outbox (nothing would ever empty it), and each alert goes to the log instead;
- ended flows become flow records (``monitor.records.flow_record``) for ``flows_file``;
- the inventory is written to ``inventory_file`` whenever the state is saved (every minute, and at the end).

Metrics: one collector per component (the agent, the engine, the capture sources, the outbox, each sink
with metrics, the stream probe), registered on the exporter's registry and built at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pwd
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prometheus_client import CollectorRegistry

from agents.capture.pcap_source import PcapFileSource
from agents.capture.running import CaptureCollector, RunningSource
from agents.collectors import AgentCollector, AlertCounts, EngineCollector
from agents.config import AgentConfig, ConfigError, ConfigProblem
from agents.incidents import IncidentCollector
from agents.privileges import drop_privileges
from agents.sinks.base import Record, Sink
from agents.sinks.evidence import EvidenceSink, RingReading
from agents.sinks.jsonl import JsonDocumentFile, JsonLinesFile
from agents.sinks.log import LogSink
from agents.sinks.outbox import Outbox, adopt
from agents.sinks.prometheus import MetricsServer
from agents.state import (
    LEGACY_SPOOL_FILE,
    OUTBOX_FILE,
    load_incidents,
    load_inventory,
    save_incidents,
    save_inventory,
)
from monitor.engine import Engine, EngineConfig, Events
from monitor.flows import Flow, FlowConfig
from monitor.pcapfile import CaptureError, PacketBatch
from monitor.records import flow_record
from monitor.vendors.oui import VendorTable

if TYPE_CHECKING:
    from agents.probe.scheduler import StreamProber
    from agents.sinks.mqtt import AlertPublisher, MqttSettings

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
SAVE_SECONDS = 60.0
RECONNECT_MAX_SECONDS = 10.0
PACE_SLICE_NS = 200_000_000  # a capture replayed in real time is fed 200 ms of traffic at a time
#: The MQTT sink's outbox channel (an upgraded alert spool's alerts are in it).
MQTT_CHANNEL: Final = "mqtt"
# Flow records converted on the event loop between two yields to the other tasks: a burst of ended
# flows (an eviction wave) must not hold the loop for long.
_FLOWS_PER_YIELD: Final = 1024

#: The inventory as ``inventory_file`` holds it: ``Inventory.records()``, what ``replay --inventory`` writes.
InventoryRecords = Sequence[Mapping[str, Any]]

_T = TypeVar("_T")


@dataclass(slots=True)
class AgentCounters:
    started: float = field(default_factory=time.time)
    alerts_submitted: int = 0
    state_saves: int = 0


class Agent:
    """`camwatch run`: one site gateway."""

    def __init__(self, config: AgentConfig, vendors: VendorTable | None = None) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        limits = config.limits
        timeouts = config.timeouts
        flow_cfg = FlowConfig(
            tcp_idle_timeout=timeouts.tcp_idle,
            udp_idle_timeout=timeouts.udp_idle,
            other_idle_timeout=timeouts.other_idle,
            active_timeout=timeouts.active,
            max_flows=limits.max_flows,
        )
        self.engine = Engine(
            config.site_policy,
            vendors or VendorTable.load(),
            EngineConfig(observer=config.observer, flows=flow_cfg, max_devices=limits.max_devices),
        )
        self.lock = threading.Lock()
        self.sources: list[RunningSource] = []
        self.counters = AgentCounters()
        self.alert_counts = AlertCounts()
        self.registry = CollectorRegistry()
        self.metrics: MetricsServer | None = None
        self.outbox: Outbox | None = None
        self.publisher: AlertPublisher | None = None
        self.prober: StreamProber | None = None
        self.evidence: EvidenceSink | None = None  # evidence pcaps (see "evidence pcaps" below)
        #: Each alert goes to each of these, in order.
        self.alert_sinks: list[Sink[Record]] = []
        self.flow_sinks: list[Sink[Record]] = []
        self.inventory_sinks: list[Sink[InventoryRecords]] = []
        self.user = "root"
        self._loop: asyncio.AbstractEventLoop | None = None
        # What the capture threads and the stream probe hand to the event loop; None ends the stream.
        self._alerts: asyncio.Queue[Record | None] | None = None
        self._flows: asyncio.Queue[list[Flow] | None] | None = None
        self._stop = threading.Event()

    @property
    def sinks(self) -> list[Sink[Any]]:
        """Every sink, each once."""
        seen: dict[int, Sink[Any]] = {}
        every: list[Sink[Any]] = [*self.alert_sinks, *self.flow_sinks, *self.inventory_sinks]
        for sink in every:
            seen.setdefault(id(sink), sink)
        return list(seen.values())

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (or SIGTERM/SIGINT); then flush flows, alerts and state."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._alerts = asyncio.Queue()
        self._flows = asyncio.Queue()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        load_inventory(self.state_dir, self.engine.inventory)
        load_incidents(self.state_dir, self.engine.gate)
        try:
            async with contextlib.AsyncExitStack() as stack:
                # Everything that needs privileges first: capture sockets, the metrics listener, secrets,
                # the output files (they may be in root-owned places).
                self._open_sources()
                self._start_metrics()
                settings = self._mqtt_settings()
                self._open_files(stack)
                self.prober = self._make_prober()  # reads the cameras' password files
                self.user = drop_privileges(self.config.run_as_user, self.state_dir)
                self._check_inventory_file()
                await self._start_sinks(stack, settings)
                async with asyncio.TaskGroup() as tg:
                    for st in self.sources:
                        st.thread = threading.Thread(
                            target=self._capture, args=(st,), name=f"capture-{st.name}"
                        )
                        st.thread.start()
                    alerts = tg.create_task(self._forward_alerts(), name="alerts")
                    flows = tg.create_task(self._forward_flows(), name="flows")
                    tg.create_task(self._ticks(stop), name="tick")
                    tg.create_task(self._save_periodically(stop), name="state")
                    if self.prober is not None:
                        tg.create_task(self.prober.run(stop), name="stream-probe")
                    await stop.wait()
                    self._shutdown_sources()
                    await asyncio.to_thread(self._join_sources)
                    with self.lock:
                        self._emit(self.engine.finish())
                    # Everything queued, the engine's last events included, reaches the sinks, in order.
                    self._alerts.put_nowait(None)
                    self._flows.put_nowait(None)
                    await alerts
                    await flows
                    await self._write_inventory()
                    raise _Stopped
        except* _Stopped:
            pass
        finally:
            self._shutdown_sources()
            self._save_state()
            if self.metrics is not None:
                self.metrics.stop()
            log.info("camwatch agent stopped")

    def _open_sources(self) -> None:
        cap = self.config.capture
        if cap.pcap is not None:
            source = PcapFileSource(cap.pcap, cap.batch_size)
            self.sources.append(RunningSource(str(cap.pcap), source, live=False))
            return
        from agents.capture.afpacket import open_live

        for iface in cap.interfaces:
            live = open_live(iface, method=cap.method, batch_size=cap.batch_size)
            self.sources.append(RunningSource(iface, live, live=True))

    def _start_metrics(self) -> None:
        """The agent's, the capture sources' and the engine's collectors, and the server (a port below
        1024 needs privileges). The others are registered as their components start."""
        limits = self.config.limits
        self.registry.register(AgentCollector(self.counters.started, self.alert_counts.snapshot))
        self.registry.register(CaptureCollector(self.sources))
        self.registry.register(
            EngineCollector.of_engine(
                self.engine,
                self.lock,
                flows_limit=limits.max_flows,
                devices_limit=limits.max_devices,
                max_device_series=self.config.metrics.max_device_series,
            )
        )
        self.registry.register(IncidentCollector.of_engine(self.engine, self.lock))
        self.metrics = MetricsServer.from_config(self.config.metrics, self.registry)
        self.metrics.start()

    def _open_files(self, stack: contextlib.AsyncExitStack) -> None:
        """The file outputs, opened now while privileged (each closed by ``stack``)."""
        cfg = self.config
        self._open_evidence()
        if cfg.alerts_file is not None:
            self.alert_sinks.append(self._open_lines(stack, "alerts_file", cfg.alerts_file))
        if cfg.flows_file is not None:
            self.flow_sinks.append(self._open_lines(stack, "flows_file", cfg.flows_file))
        if cfg.inventory_file is not None:
            inventory = JsonDocumentFile("inventory_file", cfg.inventory_file)
            stack.push_async_callback(inventory.close)
            self.inventory_sinks.append(inventory)

    def _open_lines(self, stack: contextlib.AsyncExitStack, key: str, path: Path) -> JsonLinesFile:
        """A JSON-lines sink on ``path``, opened for appending now; a file that cannot be opened is a
        configuration problem naming ``key``."""
        try:
            sink = JsonLinesFile(key, path)
        except OSError as exc:
            raise ConfigError(
                [
                    ConfigProblem(
                        key,
                        f"cannot be opened for appending ({exc.strerror or exc})",
                        f"check that {path.parent} exists and is writable",
                        source=self.config.source,
                    )
                ]
            ) from exc
        stack.push_async_callback(sink.close)
        return sink

    def _check_inventory_file(self) -> None:
        """``inventory_file`` is replaced through a temporary file beside it: once privileges are dropped,
        its directory must still be writable."""
        path = self.config.inventory_file
        if path is None or os.access(path.parent, os.W_OK):
            return
        raise ConfigError(
            [
                ConfigProblem(
                    "inventory_file",
                    f"its directory {path.parent} is not writable by {self.user} (the file is replaced "
                    "through a temporary file beside it)",
                    f"give {path.parent} to {self.user}, or put the file in state_dir ({self.state_dir})",
                    source=self.config.source,
                )
            ]
        )

    async def _start_sinks(self, stack: contextlib.AsyncExitStack, settings: MqttSettings | None) -> None:
        """The MQTT sink with its outbox (or the log without a broker), then start every sink and register
        their metrics."""
        if settings is None:
            # No broker: nothing would ever empty an outbox. Alerts go to the log and alerts_file.
            where = f"the log and {self.config.alerts_file}" if self.config.alerts_file else "the log"
            log.warning("no mqtt section: alerts go to %s only", where)
            self.alert_sinks.append(LogSink())
        else:
            from agents.sinks.mqtt import AlertPublisher

            limits = self.config.limits
            path = self.state_dir / OUTBOX_FILE
            adopt(self.state_dir / LEGACY_SPOOL_FILE, path)  # an alert spool from before the outbox
            self.outbox = stack.enter_context(Outbox.open(path))
            channel = self.outbox.channel(MQTT_CHANNEL, limits.spool_max_alerts, limits.spool_max_bytes)
            self.publisher = AlertPublisher(settings, channel)
            stack.push_async_callback(self.publisher.close)  # closed before the outbox
            self.alert_sinks.append(self.publisher)
            self.registry.register(self.outbox.collector())
        for sink in self.sinks:
            await sink.start()
            collector = sink.collector()
            if collector is not None:
                self.registry.register(collector)

    def _make_prober(self) -> StreamProber | None:
        cfg = self.config.stream_probe
        if cfg is None:
            return None
        from agents.probe import EXTRA_HINT, missing_modules

        missing = missing_modules()
        if missing:  # check-config says so too; this is for a venv changed since
            raise ConfigError(
                [
                    ConfigProblem(
                        "stream_probe",
                        f"needs packages that are not installed ({', '.join(missing)})",
                        f"{EXTRA_HINT}, or remove the stream_probe section",
                        source=self.config.source,
                    )
                ]
            )
        from agents.probe.scheduler import StreamProber

        self._prepare_snapshot_dir(cfg.snapshot_dir)
        try:
            prober = StreamProber(
                cfg, self.config.observer, self.state_dir, self._queue_alert, self._device_by_ip
            )
        except (OSError, ValueError) as exc:  # a password file gone or emptied since validation
            raise ConfigError(
                [
                    ConfigProblem(
                        "stream_probe.cameras",
                        f"a camera's password file cannot be read ({exc})",
                        "check its password_file: it must exist, be readable and hold the password",
                        source=self.config.source,
                    )
                ]
            ) from exc
        self.registry.register(prober.collector())
        return prober

    def _prepare_snapshot_dir(self, directory: Path) -> None:
        """A snapshot directory outside the state directory is created now and given to run_as_user
        (inside it, drop_privileges hands it over with the rest)."""
        if directory.is_relative_to(self.state_dir) or os.geteuid() != 0 or self.config.run_as_user is None:
            return
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            entry = pwd.getpwnam(self.config.run_as_user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        except (OSError, KeyError) as exc:
            log.error("stream probe: cannot prepare the snapshot directory %s: %s", directory, exc)

    def _queue_alert(self, record: dict[str, Any]) -> None:
        """The stream probe's alerts join the engine's (called on the event loop)."""
        if self._alerts is not None:
            self._alerts.put_nowait(record)

    def _device_by_ip(self, ip: str) -> tuple[str, str | None] | None:
        """(MAC, manufacturer) of the inventory device using ``ip`` (called from a worker thread)."""
        with self.lock:
            for device in self.engine.inventory:
                if ip in device.ips:
                    return device.mac_str, device.manufacturer
        return None

    def _mqtt_settings(self) -> MqttSettings | None:
        """Broker settings, read while still privileged (the password file may be root-only)."""
        if self.config.mqtt is None:
            return None
        try:
            settings = self.config.mqtt.with_password()
        except (OSError, ValueError) as exc:  # the password file gone or emptied since validation
            raise ConfigError(
                [
                    ConfigProblem(
                        "mqtt.password_file",
                        f"cannot be read ({exc})",
                        "check that it exists, is readable and holds the password on its first line",
                        source=self.config.source,
                    )
                ]
            ) from exc
        # An alarm path: after an outage, reconnect within seconds rather than a minute.
        return dataclasses.replace(settings, backoff_max=RECONNECT_MAX_SECONDS)

    # ------------------------------------------------------------------ evidence pcaps (issue 12)

    def _open_evidence(self) -> None:
        """The evidence sink, first of the alert sinks: each alert's pcap is written (and named in its
        ``file.path``) before any other sink sees the alert. Its directory is made now, while privileged."""
        cfg = self.config.evidence
        if cfg is None:
            return
        try:
            self.evidence = EvidenceSink(
                cfg.dir,
                max_bytes=cfg.max_bytes,
                max_files=cfg.max_files,
                max_age_s=cfg.max_age,
                max_file_bytes=cfg.max_file_bytes,
                rings=self._evidence_rings,
            )
            if not cfg.dir.is_relative_to(self.state_dir) and self.config.run_as_user and os.geteuid() == 0:
                entry = pwd.getpwnam(self.config.run_as_user)
                os.chown(cfg.dir, entry.pw_uid, entry.pw_gid)
        except (OSError, KeyError) as exc:
            raise ConfigError(
                [
                    ConfigProblem(
                        "evidence.dir",
                        f"cannot be created or used ({exc})",
                        f"check that {cfg.dir.parent} exists and is writable, or turn evidence off "
                        "(evidence: {enabled: false})",
                        source=self.config.source,
                    )
                ]
            ) from exc
        self.alert_sinks.insert(0, self.evidence)

    def _evidence_rings(self) -> RingReading:
        with self.lock:
            st = self.engine.analysis.evidence.stats
            return RingReading(st.packets, st.bytes, self.engine.analysis.evidence.rings, st.forgotten)

    # ------------------------------------------------------------------ capture threads

    def _capture(self, st: RunningSource) -> None:
        pace = self.config.capture.pace
        started_wall = time.monotonic()
        first_ts: int | None = None
        try:
            for batch in st.source.batches():
                if self._stop.is_set():
                    break
                if len(batch) == 0:
                    continue
                pieces = [batch]
                if pace == "realtime" and isinstance(st.source, PcapFileSource):
                    first_ts = first_ts if first_ts is not None else int(batch.ts_ns[0])
                    pieces = list(_time_slices(batch, PACE_SLICE_NS))
                for piece in pieces:
                    if len(pieces) > 1 and first_ts is not None:
                        due = started_wall + (int(piece.ts_ns[-1]) - first_ts) / 1e9
                        while not self._stop.is_set() and time.monotonic() < due:
                            time.sleep(min(0.1, max(due - time.monotonic(), 0.0)))
                    if self._stop.is_set():
                        break
                    with self.lock:
                        events = self.engine.feed(piece)
                        st.packets += len(piece)
                        st.bytes += int(piece.wirelen.sum())
                        self._emit(events)
        except CaptureError as exc:
            st.error = str(exc)
            log.error("capture %s: %s", st.name, exc)
        except Exception as exc:  # the agent keeps serving metrics and alerts from other sources
            st.error = f"{type(exc).__name__}: {exc}"
            log.exception("capture %s failed", st.name)
        finally:
            st.finished = True

    def _emit(self, events: Events) -> None:
        """Hand alerts and ended flows to the event loop (called with the engine lock held, from any
        thread, so they reach it in the engine's order)."""
        if self._alerts is None or self._flows is None:
            return
        for alert in events.alerts:
            record = alert.to_record()
            if self.evidence is not None:
                self.evidence.attach(record, alert.evidence)  # names the pcap in file.path
            self._to_loop(self._alerts, record)
        # Flow objects, not records: the records are made on the loop, not while the lock is held (an
        # ended flow is out of the table, nothing changes it any more). Only when something wants them.
        if events.flows and self.flow_sinks:
            self._to_loop(self._flows, events.flows)

    def _to_loop(self, queue: asyncio.Queue[_T], item: _T) -> None:
        if threading.current_thread() is threading.main_thread():
            queue.put_nowait(item)
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(queue.put_nowait, item)

    def _shutdown_sources(self) -> None:
        self._stop.set()
        for st in self.sources:
            with contextlib.suppress(Exception):
                st.source.close()

    def _join_sources(self) -> None:
        for st in self.sources:
            if st.thread is not None:
                st.thread.join(timeout=10)

    # ------------------------------------------------------------------ loop tasks

    async def _forward_alerts(self) -> None:
        assert self._alerts is not None
        while (record := await self._alerts.get()) is not None:
            await self._submit_alert(record)

    async def _submit_alert(self, record: Record) -> None:
        """The one path of every alert: counted, then to each alert sink in turn."""
        self.counters.alerts_submitted += 1
        self.alert_counts.add(str(record["rule"]["id"]))
        for sink in self.alert_sinks:
            await sink.submit(record)

    async def _forward_flows(self) -> None:
        assert self._flows is not None
        while (flows := await self._flows.get()) is not None:
            await self._submit_flows(flows)

    async def _submit_flows(self, flows: list[Flow]) -> None:
        for n, flow in enumerate(flows, 1):
            record = flow_record(flow)
            for sink in self.flow_sinks:
                await sink.submit(record)
            if n % _FLOWS_PER_YIELD == 0:
                await asyncio.sleep(0)

    async def _ticks(self, stop: asyncio.Event) -> None:
        live = self.config.capture.pcap is None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
            if live and not stop.is_set():
                await asyncio.to_thread(self._tick)

    def _tick(self) -> None:
        with self.lock:
            self._emit(self.engine.tick(time.time_ns()))

    async def _save_periodically(self, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAVE_SECONDS)
            if stop.is_set():
                return  # the shutdown saves, after the engine's last events
            await asyncio.to_thread(self._save_state)
            await self._write_inventory()

    def _save_state(self) -> None:
        try:
            with self.lock:
                save_inventory(self.state_dir, self.engine.inventory)
                save_incidents(self.state_dir, self.engine.gate)
            self.counters.state_saves += 1
        except OSError as exc:
            log.error("cannot save state in %s: %s", self.state_dir, exc)

    async def _write_inventory(self) -> None:
        """The inventory to the inventory sinks (``inventory_file``)."""
        if not self.inventory_sinks:
            return
        records = await asyncio.to_thread(self._inventory_records)
        for sink in self.inventory_sinks:
            await sink.submit(records)

    def _inventory_records(self) -> InventoryRecords:
        with self.lock:
            return self.engine.inventory.records()


def _time_slices(batch: PacketBatch, span_ns: int) -> Iterable[PacketBatch]:
    """Split a batch into consecutive pieces each covering at most `span_ns` of capture time."""
    import numpy as np

    ts = batch.ts_ns
    if len(batch) == 0:
        return
    edges = np.searchsorted(ts, np.arange(int(ts[0]) + span_ns, int(ts[-1]) + span_ns, span_ns), side="right")
    start = 0
    for end in [*edges.tolist(), len(batch)]:
        if end > start:
            cut = slice(start, end)
            yield PacketBatch(
                batch.data,
                batch.offsets[cut],
                batch.caplen[cut],
                batch.wirelen[cut],
                batch.ts_ns[cut],
                batch.linktype[cut],
            )
            start = end


class _Stopped(Exception):
    """Ends the task group once the agent has flushed (the tasks are then cancelled)."""
