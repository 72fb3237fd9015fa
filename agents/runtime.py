"""The gateway agent: capture sources -> engine -> sinks (MQTT with spool, Prometheus), with state on disk.

Threads and the event loop: each capture source is a blocking iterator of batches, run in its own
thread together with `Engine.feed` (under one lock), so neither the kernel ring nor the engine ever
waits for the event loop and the event loop never waits for them. The loop carries what is
asynchronous: publishing alerts (MQTT, spool), time ticks for idle links, saving state, signals, and
the stream probe (``stream_probe``: its probes run as child processes, agents/probe).

Every alert, the engine's and the stream probe's, takes one path (``_submit``): counted, appended
to ``alerts_file`` when one is configured, then spooled and published over MQTT; without an ``mqtt``
section there is no broker and no spool, and each alert is logged instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pwd
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.capture.pcap_source import PcapFileSource
from agents.capture.source import CaptureSource
from agents.config import ConfigError, ConfigProblem
from agents.privileges import drop_privileges
from agents.sinks.jsonl import JsonLinesSink
from agents.state import load_incidents, load_inventory, save_incidents, save_inventory
from monitor.engine import Engine, EngineConfig, Events
from monitor.flows import FlowConfig
from monitor.pcapfile import CaptureError, PacketBatch
from monitor.vendors.oui import VendorTable

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
SAVE_SECONDS = 60.0
RECONNECT_MAX_SECONDS = 10.0
PACE_SLICE_NS = 200_000_000  # a capture replayed in real time is fed 200 ms of traffic at a time


@dataclass(slots=True)
class SourceState:
    """A running source and its health, for the metrics."""

    name: str
    source: CaptureSource
    packets: int = 0
    bytes: int = 0
    finished: bool = False
    error: str | None = None
    thread: threading.Thread | None = None


@dataclass(slots=True)
class AgentCounters:
    started: float = field(default_factory=time.time)
    alerts_submitted: int = 0
    state_saves: int = 0


class Agent:
    """`camwatch run`: one site gateway."""

    def __init__(self, config: Any, vendors: VendorTable | None = None) -> None:
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
            EngineConfig(
                observer=f"{config.site}/{config.gateway}", flows=flow_cfg, max_devices=limits.max_devices
            ),
        )
        self.lock = threading.Lock()
        self.sources: list[SourceState] = []
        self.counters = AgentCounters()
        self.publisher: Any = None
        self.spool: Any = None
        self.metrics: Any = None
        self.prober: Any = None  # agents.probe.scheduler.StreamProber with a stream_probe section
        self.alerts_file: JsonLinesSink | None = None
        self.user = "root"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alerts: asyncio.Queue[dict[str, Any]] | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (or SIGTERM/SIGINT); then flush flows, alerts and state."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._alerts = asyncio.Queue()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        load_inventory(self.state_dir, self.engine.inventory)
        load_incidents(self.state_dir, self.engine.gate)
        # Everything that needs privileges first: capture sockets, the metrics listener, secrets.
        self._open_sources()
        self._start_metrics()
        settings = self._mqtt_settings()
        self._open_alerts_file()
        self.prober = self._make_prober()  # reads the cameras' password files
        self.user = drop_privileges(self.config.run_as_user, self.state_dir)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._start_publisher(stack, settings)
                async with asyncio.TaskGroup() as tg:
                    for st in self.sources:
                        st.thread = threading.Thread(
                            target=self._capture, args=(st,), name=f"capture-{st.name}"
                        )
                        st.thread.start()
                    tg.create_task(self._forward_alerts(), name="alerts")
                    tg.create_task(self._ticks(stop), name="tick")
                    tg.create_task(self._save_periodically(stop), name="state")
                    if self.prober is not None:
                        tg.create_task(self.prober.run(stop), name="stream-probe")
                    await stop.wait()
                    self._shutdown_sources()
                    await asyncio.to_thread(self._join_sources)
                    with self.lock:
                        self._emit(self.engine.finish())
                    await self._drain_alerts()
                    raise _Stopped
        except* _Stopped:
            pass
        finally:
            self._shutdown_sources()
            self._save_state()
            if self.metrics is not None:
                self.metrics.stop()
            if self.alerts_file is not None:
                with contextlib.suppress(OSError):
                    self.alerts_file.close()
                self.alerts_file = None
            log.info("camwatch agent stopped")

    def _open_sources(self) -> None:
        cap = self.config.capture
        if cap.pcap is not None:
            self.sources.append(SourceState(str(cap.pcap), PcapFileSource(cap.pcap, cap.batch_size)))
            return
        from agents.capture.afpacket import open_live

        for iface in cap.interfaces:
            self.sources.append(
                SourceState(iface, open_live(iface, method=cap.method, batch_size=cap.batch_size))
            )

    def _start_metrics(self) -> None:
        from agents.sinks.prometheus import MetricsServer

        self.metrics = MetricsServer.from_config(self.config.metrics, self._metrics_snapshot)
        self.metrics.start()

    def _metrics_snapshot(self) -> Any:
        """The engine's snapshot, with the stream probe's cameras and alerts (called from the metrics
        server's thread: the prober's counters are replaced, never changed in place)."""
        from agents.snapshot import snapshot_of

        snap = snapshot_of(self)
        prober = self.prober
        if prober is None:
            return snap
        alerts = dict(snap.alerts)
        for rule, count in prober.alerts.items():
            alerts[rule] = alerts.get(rule, 0) + count
        return dataclasses.replace(snap, alerts=alerts, streams=prober.stats())

    def _open_alerts_file(self) -> None:
        """Open ``alerts_file`` for appending now, while privileged (it may be in a root-owned place)."""
        path = self.config.alerts_file
        if path is None:
            return
        try:
            self.alerts_file = JsonLinesSink(path, append=True).open()  # held for the run
        except OSError as exc:
            raise ConfigError(
                [
                    ConfigProblem(
                        "alerts_file",
                        f"cannot be opened for appending ({exc.strerror or exc})",
                        f"check that {path.parent} exists and is writable",
                        source=self.config.source,
                    )
                ]
            ) from exc

    def _make_prober(self) -> Any:
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
            return StreamProber(
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

    def _mqtt_settings(self) -> Any:
        """Broker settings, read while still privileged (the password file may be root-only)."""
        if self.config.mqtt is None:
            return None
        import dataclasses

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

    async def _start_publisher(self, stack: contextlib.AsyncExitStack, settings: Any) -> None:
        from agents.sinks.mqtt import AlertPublisher
        from agents.sinks.spool import AlertSpool

        if settings is None:
            # No broker: nothing would ever empty a spool. Alerts go to the log and alerts_file.
            where = f"the log and {self.config.alerts_file}" if self.config.alerts_file else "the log"
            log.warning("no mqtt section: alerts go to %s only", where)
            return
        limits = self.config.limits
        self.spool = stack.enter_context(
            AlertSpool.open(
                self.state_dir / "alerts.sqlite3", limits.spool_max_alerts, limits.spool_max_bytes
            )
        )
        self.publisher = await stack.enter_async_context(AlertPublisher(settings, self.spool))

    # ------------------------------------------------------------------ capture threads

    def _capture(self, st: SourceState) -> None:
        pace = getattr(self.config.capture, "pace", "fast")
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
        """Hand alerts to the event loop (called with the engine lock held, from any thread)."""
        if not events.alerts or self._loop is None or self._alerts is None:
            return
        queue = self._alerts
        for alert in events.alerts:
            record = alert.to_record()
            if threading.current_thread() is threading.main_thread():
                queue.put_nowait(record)
            else:
                self._loop.call_soon_threadsafe(queue.put_nowait, record)

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
        while True:
            record = await self._alerts.get()
            await self._submit(record)

    async def _submit(self, record: dict[str, Any]) -> None:
        self.counters.alerts_submitted += 1
        self._append_alert(record)
        if self.publisher is None and self.spool is None:
            log.warning("alert %s: %s", record["rule"]["id"], record.get("message", ""))
        if self.publisher is not None:
            await self.publisher.submit(record)
        elif self.spool is not None:
            from agents.sinks.mqtt import alert_topic

            # One fsync per alert: off the event loop.
            topic = alert_topic(self.config, record)
            await asyncio.to_thread(self.spool.put, topic, _encode(record), record["event"]["id"])

    def _append_alert(self, record: dict[str, Any]) -> None:
        """One JSON line in ``alerts_file``, flushed at once (a demo or a tail -f sees it now)."""
        if self.alerts_file is None:
            return
        try:
            self.alerts_file.write(record)
        except OSError as exc:
            log.error("cannot write the alert to %s: %s", self.config.alerts_file, exc)

    async def _drain_alerts(self) -> None:
        assert self._alerts is not None
        while not self._alerts.empty():
            await self._submit(self._alerts.get_nowait())

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
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAVE_SECONDS)
            await asyncio.to_thread(self._save_state)

    def _save_state(self) -> None:
        try:
            with self.lock:
                save_inventory(self.state_dir, self.engine.inventory)
                save_incidents(self.state_dir, self.engine.gate)
            self.counters.state_saves += 1
        except OSError as exc:
            log.error("cannot save state in %s: %s", self.state_dir, exc)


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


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
