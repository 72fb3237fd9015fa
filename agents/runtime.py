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
import importlib
import logging
import os
import pwd
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prometheus_client import CollectorRegistry

from agents.capture.pcap_source import PcapFileSource
from agents.capture.running import (
    RESTART_INITIAL_SECONDS,
    RESTART_MAX_SECONDS,
    STABLE_SECONDS,
    CaptureCollector,
    Outage,
    RunningSource,
    failure_alert,
    restart_delay,
)
from agents.capture.source import LiveCaptureSource
from agents.collectors import AgentCollector, AlertCounts, EngineCollector, StateSaves
from agents.config import AgentConfig, ConfigError, ConfigProblem, Rotation
from agents.contain.answers import with_answers
from agents.exports import Exports
from agents.incidents import IncidentCollector
from agents.learn.mode import LearningMode, is_learning_record
from agents.privileges import drop_privileges, user_exists
from agents.sinks.base import Record, Sink
from agents.sinks.evidence import EvidenceSink, RingReading
from agents.sinks.jsonl import FileOutputsCollector, JsonDocumentFile, JsonLinesFile
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
from monitor.registry import Rulebook, rulebook
from monitor.site import unlisted_message
from monitor.vendors.oui import VendorTable

if TYPE_CHECKING:
    from agents.contain.agent import AgentContainment
    from agents.probe.scheduler import StreamProber
    from agents.sinks.mqtt import AlertPublisher, MqttSettings

log = logging.getLogger(__name__)

#: Files the agent creates are at most rw-r----- (directories rwxr-x---): alerts and flows name the site's
#: devices, and none of it is for other local users.
AGENT_UMASK: Final = 0o027
#: Modules the agent imports only later (an asyncio worker thread, a host name's IDNA encoding, the
#: OpenMetrics format, gzip, netaddr for the first MAC outside camwatch's vendor table), imported before
#: the privilege drop: an installation that only root may read would otherwise fail at the first scrape,
#: the first connection to the broker or the first unknown vendor.
LATE_IMPORTS: Final = (
    "concurrent.futures.thread",
    "encodings.idna",
    "gzip",
    "netaddr",
    "prometheus_client.openmetrics.exposition",
)
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
    state_save_failures: int = 0
    state_saved: float | None = None  # Unix time of the last successful save


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
        # The asset register, syslog and the MQTT data sinks (agents/exports.py).
        self.exports = Exports(config)
        # Learning mode (agents/learn/mode.py): a recorder beside the rules, and alerts of learning devices
        # marked as not paging. None without a `learning:` section.
        self.learning = LearningMode(config.learning, self.state_dir) if config.learning is not None else None
        self._unlisted_logged = 0  # global IPv6 networks not in the policy, already logged
        self.engine = Engine(
            config.site_policy,
            vendors or VendorTable.load(),
            EngineConfig(observer=config.observer, flows=flow_cfg, max_devices=limits.max_devices),
            register=self.exports.register,
            rules=self._rulebook(config),
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
        #: Containment (agents/contain): None until run() starts it.
        self.containment: AgentContainment | None = None
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
        self._check_user()
        # Nothing the agent creates is for other local users: alerts, flows, the inventory, the outbox.
        umask = os.umask(AGENT_UMASK)
        try:
            await self._run(stop)
        finally:
            os.umask(umask)

    async def _run(self, stop: asyncio.Event) -> None:
        assert self._alerts is not None and self._flows is not None
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        load_inventory(self.state_dir, self.engine.inventory)
        load_incidents(self.state_dir, self.engine.gate)
        if self.learning is not None:  # learning mode
            self.learning.load()
        try:
            async with contextlib.AsyncExitStack() as stack:
                # Everything that needs privileges first: containment (its first apply; enforce mode
                # without CAP_NET_ADMIN stops here), capture sockets and files, the metrics listener,
                # secrets, the output files (they may be in root-owned places), and the modules imported
                # late (the installation may be unreadable to run_as_user).
                self._start_containment()
                self._open_sources()
                self._start_metrics()
                settings = self._mqtt_settings()
                self._open_files(stack)
                self.exports.open()  # a syslog client key may be root-only
                self.prober = self._make_prober()  # reads the cameras' password files
                preload_modules(mqtt=settings is not None)
                self.user = drop_privileges(self.config.run_as_user, self.state_dir)
                self._check_inventory_file()
                self.exports.check_after_drop(self.user)
                await self._start_sinks(stack, settings)
                if self.containment is not None:
                    self.containment.attach_publisher(self.publisher)
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
                    tg.create_task(self.exports.watch_register(self, stop), name="register")
                    if self.prober is not None:
                        tg.create_task(self.prober.run(stop), name="stream-probe")
                    if self.containment is not None:
                        tg.create_task(self.containment.run(stop), name="containment")
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

    def _check_user(self) -> None:
        """Started as root, ``run_as_user`` must exist: the agent does not start rather than keep root."""
        user = self.config.run_as_user
        if os.geteuid() != 0 or user is None or user_exists(user):
            return
        raise ConfigError(
            [
                ConfigProblem(
                    "run_as_user",
                    f"user '{user}' does not exist on this host, and the agent started as root does not keep "
                    "root",
                    f"create it (useradd --system {user}), or set run_as_user: null when the service manager "
                    "already runs the agent unprivileged",
                    source=self.config.source,
                )
            ]
        )

    def _rulebook(self, config: AgentConfig) -> Rulebook:
        """The engine's rules: the learning mode's recorder beside them, and with containment on, the DNS
        answers of watched devices handed to its name rules."""
        book = self.learning.rulebook() if self.learning is not None else rulebook()
        if config.containment.active:
            book = with_answers(book, self._learn_answer)
        return book

    def _learn_answer(self, name: str, address: str, ttl: float) -> None:
        if self.containment is not None:  # set at start-up, before the first packet
            self.containment.learn(name, address, ttl)

    def _start_containment(self) -> None:
        """Containment (agents/contain, docs/containment.md): its start-up checks and first apply, while
        privileged; its metrics. Mode off only warns about a table left loaded."""
        from agents.contain.agent import AgentContainment

        self.containment = AgentContainment(self.config, self.engine, self.lock)
        self.containment.start()
        self.registry.register(self.containment.collector())

    def _open_sources(self) -> None:
        cap = self.config.capture
        if cap.pcap is not None:
            source = PcapFileSource(cap.pcap, cap.batch_size)
            try:
                source.open()  # now, while privileged: a root-only file is still read after the drop
            except OSError as exc:
                raise ConfigError(
                    [
                        ConfigProblem(
                            "capture.pcap",
                            f"cannot be opened ({exc.strerror or exc})",
                            "check that the file exists and is readable by the user starting the agent",
                            source=self.config.source,
                        )
                    ]
                ) from exc
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
        counters = self.counters
        self.registry.register(
            AgentCollector(
                counters.started,
                self.alert_counts.snapshot,
                lambda: StateSaves(counters.state_save_failures, counters.state_saved),
            )
        )
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
        quiet = self.learning.learning_now if self.learning is not None else None
        self.registry.register(IncidentCollector.of_engine(self.engine, self.lock, quiet))
        if self.learning is not None:  # learning mode
            self.registry.register(self.learning.collector())
        self.metrics = MetricsServer.from_config(self.config.metrics, self.registry)
        self.registry.register(self.metrics.collector())
        self.metrics.start()

    def _open_files(self, stack: contextlib.AsyncExitStack) -> None:
        """The file outputs, opened now while privileged (each closed by ``stack``)."""
        cfg = self.config
        self._open_evidence()
        if cfg.alerts_file is not None:
            self.alert_sinks.append(self._open_lines(stack, "alerts_file", cfg.alerts_file))
        if cfg.flows_file is not None:
            self.flow_sinks.append(self._open_lines(stack, "flows_file", cfg.flows_file, cfg.flows_rotation))
        if cfg.inventory_file is not None:
            inventory = JsonDocumentFile("inventory_file", cfg.inventory_file)
            stack.push_async_callback(inventory.close)
            self.inventory_sinks.append(inventory)

    def _open_lines(
        self, stack: contextlib.AsyncExitStack, key: str, path: Path, rotation: Rotation | None = None
    ) -> JsonLinesFile:
        """A JSON-lines sink on ``path``, opened for appending now (rotated with ``rotation``); a file that
        cannot be opened is a configuration problem naming ``key``."""
        try:
            sink = JsonLinesFile(key, path, rotation=rotation)
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
        await self.exports.add_sinks(self, stack, settings)  # syslog, MQTT flows and inventory
        for sink in self.sinks:
            await sink.start()
            collector = sink.collector()
            if collector is not None:
                self.registry.register(collector)
        files = [sink for sink in self.sinks if isinstance(sink, JsonLinesFile)]
        if files:
            self.registry.register(FileOutputsCollector(files))

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
        """Read ``st`` and feed the engine until the agent stops; a failure is restarted (running.py)."""
        pace = _Pacer(self.config.capture.pace == "realtime" and not st.live, self._stop)
        batches: Iterator[PacketBatch] | None = None
        st.running_since = time.monotonic()
        while not self._stop.is_set():
            failure: BaseException | str
            try:
                if batches is None:
                    batches = iter(st.source.batches())
                batch = next(batches)
            except StopIteration:
                batches = None
                if self._stop.is_set():
                    break
                if not st.live:
                    self._end_of_input(st)
                    return
                failure = "the capture source ended by itself"
            except Exception as exc:  # the source failed: a live one is read again, from a fresh iterator
                batches = None
                if not st.live:  # a file is not read twice (its packets would be counted twice)
                    self._file_failed(st, exc)
                    return
                failure = exc
            else:
                try:
                    self._feed(st, batch, pace)
                except Exception as exc:  # the engine raised: this batch is lost, the source reads on
                    failure = exc
                else:
                    self._running(st)
                    continue
            if not self._restart(st, failure, reopen=batches is None):
                break

    def _feed(self, st: RunningSource, batch: PacketBatch, pace: _Pacer) -> None:
        if len(batch) == 0:
            return
        for piece in pace.pieces(batch):
            if self._stop.is_set():
                return
            with self.lock:
                events = self.engine.feed(piece)
                st.packets += len(piece)
                st.bytes += int(piece.wirelen.sum())
                self._emit(events)

    def _running(self, st: RunningSource) -> None:
        """A batch was read and fed: the source is up; an outage is over once it has read for a while."""
        if st.error is not None:
            st.error = None
            log.warning("capture %s: reading again after %d restart(s)", st.name, st.restarts)
        if st.outage is not None and time.monotonic() - st.running_since >= STABLE_SECONDS:
            st.outage = None

    def _restart(self, st: RunningSource, failure: BaseException | str, *, reopen: bool) -> bool:
        """Say that ``st`` failed (one log line, the metric, one alert per outage), wait the backoff and
        restart it; False if the agent stops meanwhile."""
        error = failure if isinstance(failure, str) else _describe(failure)
        new = st.outage is None
        if st.outage is None:
            st.outage = Outage(time.time_ns())
        st.outage.failures += 1
        st.error = error
        delay = restart_delay(st.outage.failures, RESTART_INITIAL_SECONDS, RESTART_MAX_SECONDS)
        where = "the capture source" if reopen else "the engine, on a batch of"
        log.error(
            "capture %s failed in %s it (%s): restarting it in %.1f s (restart %d); its traffic is not "
            "watched meanwhile",
            st.name,
            where,
            error,
            delay,
            st.restarts + 1,
        )
        if isinstance(failure, BaseException):
            log.debug("capture %s: the failure", st.name, exc_info=failure)
        if new:
            self._to_loop_alert(failure_alert(st, self.config.observer, error, delay))
        if self._stop.wait(delay):
            return False
        st.restarts += 1
        st.running_since = time.monotonic()
        if reopen and isinstance(st.source, LiveCaptureSource):
            try:  # the interface may have gone and come back with another index
                st.source.bind(st.name)
            except OSError as exc:
                log.debug("capture %s: rebinding failed: %s", st.name, exc)
        return True

    def _file_failed(self, st: RunningSource, exc: BaseException) -> None:
        """A capture file that cannot be read on: what was read stays, its flows end as at its end."""
        st.error = _describe(exc)
        st.outage = Outage(time.time_ns(), 1)
        log.error("capture %s: %s: the rest of the file is not read", st.name, st.error)
        if not isinstance(exc, CaptureError):
            log.debug("capture %s: the failure", st.name, exc_info=exc)
        self._to_loop_alert(failure_alert(st, self.config.observer, st.error, None))
        self._end_of_input(st)

    def _end_of_input(self, st: RunningSource) -> None:
        """A capture file at its end: its flows end (reason ``end``) and are written, its held-back alerts
        go out, and the source says it is finished; the agent keeps serving until it is stopped."""
        others_live = any(o.live and o is not st for o in self.sources)
        if not others_live:
            with self.lock:
                self._emit(self.engine.finish())
        st.finished = True
        log.info(
            "capture %s: end of the file after %d packets; its flows are ended and written (the agent "
            "keeps running until stopped)",
            st.name,
            st.packets,
        )

    def _to_loop_alert(self, record: Record) -> None:
        if self._alerts is not None:
            self._to_loop(self._alerts, record)

    def _emit(self, events: Events) -> None:
        """Hand alerts and ended flows to the event loop (called with the engine lock held, from any
        thread, so they reach it in the engine's order)."""
        if self._alerts is None or self._flows is None:
            return
        unlisted = self.engine.site.unlisted_prefixes
        if len(unlisted) > self._unlisted_logged:
            log.warning("%s", unlisted_message(list(unlisted)[self._unlisted_logged :]))
            self._unlisted_logged = len(unlisted)
        if self.containment is not None and events.flows:
            self.containment.observe(events.flows)  # only queued: judged on containment's task
        for alert in events.alerts:
            record = alert.to_record()
            if self.evidence is not None:
                self.evidence.attach(record, alert.evidence)  # names the pcap in file.path
            if self.learning is not None:  # learning mode: flags noted, a learning device's alert marked
                self.learning.on_alert(alert, record, self.engine)
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
        record = self.exports.annotate(record)  # camwatch.asset: the register's row of the device
        self.counters.alerts_submitted += 1
        if not is_learning_record(record):  # learning mode: counted in camwatch_learning_alerts_total instead
            self.alert_counts.add(str(record["rule"]["id"]))
        for sink in self.alert_sinks:
            await sink.submit(record)
        if self.containment is not None:
            await self.containment.on_alert(record)  # automatic quarantine (opt-in, by rule id)

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
                if self.learning is not None:  # learning mode: relearn requests, then learning.json
                    self.learning.save()
            self.counters.state_saves += 1
            self.counters.state_saved = time.time()
        except (OSError, ValueError) as exc:
            self.counters.state_save_failures += 1
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


class _Pacer:
    """Cuts a capture file's batches into 200 ms slices fed at the pace they were captured (``pace:
    realtime``); hands batches through unchanged otherwise."""

    def __init__(self, realtime: bool, stop: threading.Event) -> None:
        self.realtime = realtime
        self.stop = stop
        self.started = time.monotonic()
        self.first_ts: int | None = None

    def pieces(self, batch: PacketBatch) -> Iterator[PacketBatch]:
        if not self.realtime:
            yield batch
            return
        if self.first_ts is None:
            self.first_ts = int(batch.ts_ns[0])
        for piece in _time_slices(batch, PACE_SLICE_NS):
            due = self.started + (int(piece.ts_ns[-1]) - self.first_ts) / 1e9
            while not self.stop.is_set() and time.monotonic() < due:
                time.sleep(min(0.1, max(due - time.monotonic(), 0.0)))
            yield piece


def _describe(exc: BaseException) -> str:
    """One line for a failure: a CaptureError's own message, else the exception's type and message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, CaptureError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def preload_modules(*, mqtt: bool) -> None:
    """Import :data:`LATE_IMPORTS` (and the MQTT sinks if there is a broker: alerts, and the data link of
    flows and the inventory) now, before the privilege drop."""
    for name in (*LATE_IMPORTS, *(("agents.sinks.mqtt", "agents.sinks.mqtt_data") if mqtt else ())):
        try:
            importlib.import_module(name)
        except (
            ImportError
        ) as exc:  # an optional part missing: it fails where it is used, with its own message
            log.debug("preloading %s: %s", name, exc)


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
