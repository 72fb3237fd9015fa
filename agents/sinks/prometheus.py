"""The Prometheus endpoint (DESIGN 2.4): a collector that builds every metric at scrape time from an
:class:`AgentSnapshot`, and a small HTTP(S) server for ``/metrics``.

Why a snapshot: the engine is single-threaded and owned by the capture threads, so nothing here
touches it. At each scrape the runtime's ``snapshot_fn`` copies the counters it needs (under the
engine lock, for as short a time as it can) into a frozen :class:`AgentSnapshot`; formatting and
sending happen afterwards in the server's own thread, never on the packet path.

Label rules: no site/gateway labels (they are the scrape target's labels in Prometheus), and never
destination IPs, ports or flow ids. The only open-ended label is ``mac`` on the per-device series;
they are capped at ``max_device_series`` devices (the ones with the most traffic to/from outside the
site; a flood of spoofed MACs moves little traffic), the rest are summed into ``mac="other"``.
The stream probe's ``camera`` label is bounded by the configuration (its camera names).

Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import hmac
import html
import ipaddress
import logging
import os
import platform
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from agents.config import DEFAULT_METRICS_PORT, MetricsConfig, read_password_file
from monitor import __version__
from monitor.registry import RULES
from monitor.vendors.oui import format_mac

if TYPE_CHECKING:
    from monitor.engine import Engine

__all__ = [
    "DEFAULT_METRICS_PORT",
    "AgentSnapshot",
    "CamwatchCollector",
    "DeviceSummary",
    "ExternalTraffic",
    "InterfaceStats",
    "MetricsServer",
    "MqttStats",
    "SpoolStats",
    "StreamStats",
    "tls_server_context",
]

log = logging.getLogger(__name__)

#: Flow end reasons exported as ``camwatch_flows_ended_total{reason}`` (evictions have their own counter).
FLOW_END_REASONS: Final = ("idle", "active_timeout", "closed")
#: Distinct ``vendor`` label values before the rest are reported as "other" (a bound on cardinality
#: even if a future analyzer produced free-form vendor names).
MAX_VENDOR_LABELS: Final = 64
OTHER: Final = "other"
UNKNOWN: Final = "unknown"

# A device displaces the smallest device that has its own series only with at least this many
# times its traffic: without hysteresis two similar devices would swap series at every scrape.
_DISPLACE_FACTOR: Final = 2


# --------------------------------------------------------------------------------------------------
# The snapshot


@dataclass(frozen=True, slots=True)
class InterfaceStats:
    """One capture source. Kernel counters are ``None`` when the source has none (a pcap file)."""

    packets: int = 0
    bytes: int = 0
    kernel_packets: int | None = None
    kernel_drops: int | None = None
    up: bool = True


class DeviceSummary(NamedTuple):
    """One inventory entry: ECS-formatted MAC, vendor key (``"unknown"`` when not attributed)."""

    mac: str
    vendor: str
    watched: bool


class ExternalTraffic(NamedTuple):
    """A device's traffic with peers outside the site (bytes on the wire, both directions)."""

    bytes_out: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    packets_in: int = 0

    @property
    def total_bytes(self) -> int:
        return self.bytes_out + self.bytes_in


@dataclass(frozen=True, slots=True)
class MqttStats:
    """The MQTT publisher's state."""

    connected: bool = False
    published: int = 0  # alerts acknowledged by the broker (PUBACK)
    publish_failures: int = 0  # publishes that failed or timed out; the alert stays in the spool
    reconnects: int = 0  # connection attempts after the first (after a loss or a failed attempt)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """The on-disk alert spool (alerts not yet acknowledged by the broker)."""

    alerts: int = 0
    bytes: int = 0
    dropped: int = 0  # alerts dropped because the spool was full
    near_full: bool = False


#: The image problems the stream probe judges (``camwatch_stream_image_problem{problem}``).
STREAM_PROBLEMS: Final = ("black", "covered", "frozen")


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One camera of the stream probe, as of its last probe (``None``: not measured).

    ``up`` is None before the first probe. ``codec``, ``width`` and ``height`` are those of the last
    successful probe; the other measurements are the last probe's: after a failed one ``fps`` and
    ``bitrate`` are 0 (the stream delivers nothing), ``keyframe_interval`` is None and ``problems`` is
    empty (the picture could not be judged).
    """

    up: bool | None = None
    fps: float | None = None
    bitrate: float | None = None
    keyframe_interval: float | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    problems: Mapping[str, bool] = field(default_factory=dict)  # by STREAM_PROBLEMS
    last_probe: float | None = None  # Unix time the last probe finished
    probe_duration: float | None = None  # seconds the last probe took, connecting included
    probes_ok: int = 0
    probes_failed: int = 0


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """Everything the metrics show, copied at scrape time. Counters are totals since the agent started."""

    version: str = __version__
    start_time: float = 0.0  # Unix time the agent started
    healthy: bool = True  # every capture source open and reading
    capture: Mapping[str, InterfaceStats] = field(default_factory=dict)  # by interface (or pcap) name
    packets_truncated: int = 0
    packets_non_ip: int = 0
    packets_later_fragments: int = 0
    analyzer_packets: Mapping[str, int] = field(default_factory=dict)  # by protocol
    analyzer_parse_errors: int = 0
    analyzer_internal_errors: int = 0
    flows_active: int = 0
    flows_limit: int | None = None
    flows_created: int = 0
    flows_ended: Mapping[str, int] = field(default_factory=dict)  # by FLOW_END_REASONS
    flows_evicted: int = 0
    devices: Sequence[DeviceSummary] = ()
    devices_limit: int | None = None
    external: Mapping[str, ExternalTraffic] = field(default_factory=dict)  # by device MAC
    alerts: Mapping[str, int] = field(default_factory=dict)  # by rule id
    alerts_suppressed: int = 0
    mqtt: MqttStats | None = None  # None: MQTT not configured (no mqtt series)
    spool: SpoolStats | None = None  # None: no spool (no spool series)
    streams: Mapping[str, StreamStats] = field(default_factory=dict)  # by camera name (stream probe)

    @classmethod
    def from_engine(
        cls,
        engine: Engine,
        *,
        capture: Mapping[str, InterfaceStats],
        start_time: float,
        healthy: bool = True,
        mqtt: MqttStats | None = None,
        spool: SpoolStats | None = None,
        live_external: bool = True,
    ) -> AgentSnapshot:
        """The engine's part of a snapshot. Call it with the engine lock held: it reads live state.

        ``live_external`` adds the live flows to the per-device external traffic (a long flow counts
        before it ends); it walks the flow table, so a very large table makes the lock hold longer.
        """
        st, fs, an = engine.stats, engine.flows.stats, engine.analysis.stats
        devices = tuple(
            DeviceSummary(d.mac_str, d.vendor or UNKNOWN, bool(d.watched)) for d in engine.inventory
        )
        external = {
            format_mac(mac): ExternalTraffic(*counts[:4])
            for mac, counts in engine.external_traffic(live=live_external).items()
        }
        return cls(
            start_time=start_time,
            healthy=healthy,
            capture=dict(capture),
            packets_truncated=st.truncated,
            packets_non_ip=st.non_ip,
            packets_later_fragments=st.later_fragments,
            analyzer_packets=dict(an.by_protocol),
            analyzer_parse_errors=an.parse_errors,
            analyzer_internal_errors=an.internal_errors,
            flows_active=len(engine.flows),
            flows_limit=engine.config.flows.max_flows,
            flows_created=fs.created,
            flows_ended={"idle": fs.ended_idle, "active_timeout": fs.ended_active, "closed": fs.ended_closed},
            flows_evicted=fs.evicted,
            devices=devices,
            devices_limit=engine.config.max_devices,
            external=external,
            alerts=dict(st.alerts),
            alerts_suppressed=engine.gate.suppressed,
            mqtt=mqtt,
            spool=spool,
        )


# --------------------------------------------------------------------------------------------------
# The collector


class _DeviceSeries:
    """Which devices get their own series, and the running total of everyone else.

    Counters must never go down, so the ``other`` series accumulates the *increments* of devices
    while they are in it, and a device that gets its own series starts it from what was not yet
    counted elsewhere: the sum over all series stays exact however devices move in and out.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._base: dict[str, ExternalTraffic] = {}  # tracked MAC -> traffic counted before its series
        self._last: dict[str, ExternalTraffic] = {}  # every MAC -> totals at the previous scrape
        self._other = ExternalTraffic()

    def update(
        self, external: Mapping[str, ExternalTraffic]
    ) -> tuple[list[tuple[str, ExternalTraffic]], ExternalTraffic, int]:
        """Per-device series values, the ``other`` series, and how many devices are in ``other``."""
        with self._lock:
            for mac in [m for m in self._base if m not in external]:
                del self._base[mac]
            self._select(external)
            other = list(self._other)
            for mac, now in external.items():
                before = self._last.get(mac)
                if mac not in self._base:
                    for i in range(4):
                        other[i] += max(0, now[i] - (before[i] if before is not None else 0))
            self._other = ExternalTraffic(*other)
            self._last = dict(external)
            series = [
                (mac, ExternalTraffic(*(max(0, n - b) for n, b in zip(external[mac], base, strict=True))))
                for mac, base in self._base.items()
            ]
            return series, self._other, len(external) - len(self._base)

    def _select(self, external: Mapping[str, ExternalTraffic]) -> None:
        if self.cap <= 0:
            return
        candidates = sorted(
            (m for m in external if m not in self._base), key=lambda m: (-external[m].total_bytes, m)
        )
        free = self.cap - len(self._base)
        for mac in candidates[:free]:
            self._promote(mac)
        rest = candidates[max(free, 0) :]
        if not rest:
            return
        tracked = sorted(self._base, key=lambda m: (external[m].total_bytes, m))
        for challenger, incumbent in zip(rest, tracked, strict=False):
            if external[challenger].total_bytes <= _DISPLACE_FACTOR * external[incumbent].total_bytes:
                break
            del self._base[incumbent]
            self._promote(challenger)

    def _promote(self, mac: str) -> None:
        # Traffic seen before now was counted in "other" (or in an earlier series of this device).
        self._base[mac] = self._last.get(mac, ExternalTraffic())


class CamwatchCollector:
    """Builds the camwatch metric families from ``snapshot_fn()`` at each scrape.

    Register it in a :class:`~prometheus_client.CollectorRegistry`. ``max_device_series`` caps the
    devices with their own ``camwatch_device_external_*`` series (0: every device goes to "other").
    """

    def __init__(self, snapshot_fn: Callable[[], AgentSnapshot], max_device_series: int = 500) -> None:
        if max_device_series < 0:
            raise ValueError("max_device_series must be >= 0")
        self._snapshot_fn = snapshot_fn
        self._devices = _DeviceSeries(max_device_series)

    def describe(self) -> Iterable[Metric]:
        """The families without calling ``snapshot_fn`` (the registry uses this to find name clashes)."""
        return [*_agent_families(_DESCRIBE), *_device_families([], ExternalTraffic(), 0, {})]

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot_fn()
        yield from _agent_families(snap)
        series, other, dropped = self._devices.update(snap.external)
        yield from _device_families(series, other, dropped, {d.mac: d.vendor for d in snap.devices})


def _device_families(
    series: Sequence[tuple[str, ExternalTraffic]],
    other: ExternalTraffic,
    dropped: int,
    vendor_of: Mapping[str, str],
) -> Iterator[Metric]:
    vendors = _VendorLabels()
    bytes_fam = CounterMetricFamily(
        "camwatch_device_external_bytes_total",
        "Bytes a device exchanged with peers outside the site (out: sent by the device), frame "
        'length on the wire; devices beyond max_device_series are summed into mac="other".',
        labels=("mac", "vendor", "direction"),
        unit="bytes",
    )
    packets_fam = CounterMetricFamily(
        "camwatch_device_external_packets_total",
        "Packets a device exchanged with peers outside the site (out: sent by the device).",
        labels=("mac", "vendor", "direction"),
    )
    for mac, traffic in [*sorted(series), (OTHER, other)]:
        vendor = OTHER if mac == OTHER else vendors.label(vendor_of.get(mac))
        bytes_fam.add_metric([mac, vendor, "out"], traffic.bytes_out)
        bytes_fam.add_metric([mac, vendor, "in"], traffic.bytes_in)
        packets_fam.add_metric([mac, vendor, "out"], traffic.packets_out)
        packets_fam.add_metric([mac, vendor, "in"], traffic.packets_in)
    yield bytes_fam
    yield packets_fam
    yield GaugeMetricFamily(
        "camwatch_device_series_dropped",
        'Devices with external traffic whose series are summed into mac="other" (beyond max_device_series).',
        value=dropped,
    )


class _VendorLabels:
    """Vendor label values for one scrape, at most MAX_VENDOR_LABELS distinct ones."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def label(self, vendor: str | None) -> str:
        value = vendor or UNKNOWN
        if value in self._seen:
            return value
        if len(self._seen) >= MAX_VENDOR_LABELS or len(value) > 40:
            return OTHER
        self._seen.add(value)
        return value


def _counter(name: str, doc: str, value: float, unit: str = "") -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value, unit=unit)


def _gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, unit=unit)


def _agent_families(snap: AgentSnapshot) -> Iterator[Metric]:
    """Every family except the stateful per-device ones."""
    yield InfoMetricFamily(
        "camwatch_build",
        "camwatch version and the Python running it.",
        value={"version": snap.version, "python": platform.python_version()},
    )
    yield _gauge(
        "camwatch_start_time_seconds", "When the agent started, in Unix time.", snap.start_time, "seconds"
    )
    yield _gauge("camwatch_up", "1 if every capture source is open and reading, else 0.", float(snap.healthy))
    yield from _capture_families(snap)

    yield _counter(
        "camwatch_packets_truncated_total",
        "Packets cut short (by the snap length or a broken header) before their headers could be decoded.",
        snap.packets_truncated,
    )
    yield _counter(
        "camwatch_packets_non_ip_total",
        "Frames that are not IPv4/IPv6 (ARP, LLDP, ...).",
        snap.packets_non_ip,
    )
    yield _counter(
        "camwatch_packets_later_fragments_total",
        "IP fragments after the first (no transport header: not assigned to a flow).",
        snap.packets_later_fragments,
    )
    analyzed = CounterMetricFamily(
        "camwatch_analyzer_packets_total", "Packets given to a protocol analyzer.", labels=("protocol",)
    )
    for protocol, count in sorted(snap.analyzer_packets.items()):
        analyzed.add_metric([protocol], count)
    yield analyzed
    yield _counter(
        "camwatch_analyzer_parse_errors_total",
        "Payloads an analyzer could not parse (malformed or unexpected protocol data).",
        snap.analyzer_parse_errors,
    )
    yield _counter(
        "camwatch_analyzer_internal_errors_total",
        "Analyzer failures that are camwatch bugs (an exception caught and counted); please report them.",
        snap.analyzer_internal_errors,
    )
    yield from _flow_families(snap)
    yield from _device_count_families(snap)

    alerts = CounterMetricFamily(
        "camwatch_alerts_total", "Alerts raised (after duplicate suppression), by rule.", labels=("rule",)
    )
    # Every known rule is present from the start, so increase() sees the first alert of each.
    for rule in sorted({*RULES, *snap.alerts}):
        alerts.add_metric([rule], snap.alerts.get(rule, 0))
    yield alerts
    yield _counter(
        "camwatch_alerts_suppressed_total",
        "Repeats of an already reported incident that were not raised again.",
        snap.alerts_suppressed,
    )
    if snap.mqtt is not None:
        yield from _mqtt_families(snap.mqtt)
    if snap.spool is not None:
        yield from _spool_families(snap.spool)
    if snap.streams:
        yield from _stream_families(snap.streams)


def _stream_families(streams: Mapping[str, StreamStats]) -> Iterator[Metric]:
    """The stream probe's per-camera families (only with a ``stream_probe`` section)."""
    cam = ("camera",)
    up = GaugeMetricFamily(
        "camwatch_stream_up",
        "1 if the last probe received and decoded the camera's video, else 0.",
        labels=cam,
    )
    fps = GaugeMetricFamily(
        "camwatch_stream_frames_per_second",
        "Frame rate the last probe measured from the frames' timestamps (0 when the stream was down).",
        labels=cam,
    )
    bitrate = GaugeMetricFamily(
        "camwatch_stream_bitrate_bits_per_second",
        "Video bitrate the last probe measured from the packet sizes (0 when the stream was down).",
        labels=cam,
    )
    keyframes = GaugeMetricFamily(
        "camwatch_stream_keyframe_interval_seconds",
        "Time between keyframes the last probe measured (needs two keyframes in the probe's duration).",
        labels=cam,
        unit="seconds",
    )
    info = InfoMetricFamily(
        "camwatch_stream", "The camera's video as the last successful probe saw it.", labels=cam
    )
    problem = GaugeMetricFamily(
        "camwatch_stream_image_problem",
        "1 if the last probe judged the picture black, covered or frozen (one at most), else 0.",
        labels=("camera", "problem"),
    )
    last = GaugeMetricFamily(
        "camwatch_stream_last_probe_timestamp_seconds",
        "When the last probe of the camera finished, in Unix time.",
        labels=cam,
        unit="seconds",
    )
    probes = CounterMetricFamily(
        "camwatch_stream_probes",
        "Probes of the camera's stream by result (ok or failed).",
        labels=("camera", "result"),
    )
    duration = GaugeMetricFamily(
        "camwatch_stream_probe_duration_seconds",
        "How long the last probe took, connecting and judging the frames included.",
        labels=cam,
        unit="seconds",
    )
    for name, st in sorted(streams.items()):
        probes.add_metric([name, "ok"], st.probes_ok)
        probes.add_metric([name, "failed"], st.probes_failed)
        if st.up is None:
            continue  # not probed yet: no measurement to show
        up.add_metric([name], float(st.up))
        if st.last_probe is not None:
            last.add_metric([name], st.last_probe)
        if st.probe_duration is not None:
            duration.add_metric([name], st.probe_duration)
        if st.fps is not None:
            fps.add_metric([name], st.fps)
        if st.bitrate is not None:
            bitrate.add_metric([name], st.bitrate)
        if st.keyframe_interval is not None:
            keyframes.add_metric([name], st.keyframe_interval)
        if st.codec is not None and st.width is not None and st.height is not None:
            info.add_metric([name], {"codec": st.codec, "width": str(st.width), "height": str(st.height)})
        for p in STREAM_PROBLEMS:
            if p in st.problems:
                problem.add_metric([name, p], float(st.problems[p]))
    yield from (up, fps, bitrate, keyframes, info, problem, last, probes, duration)


def _capture_families(snap: AgentSnapshot) -> Iterator[Metric]:
    labels = ("interface",)
    up = GaugeMetricFamily(
        "camwatch_capture_up", "1 if the capture source is open and reading, else 0.", labels=labels
    )
    packets = CounterMetricFamily(
        "camwatch_capture_packets_total", "Packets read from the capture source.", labels=labels
    )
    octets = CounterMetricFamily(
        "camwatch_capture_bytes_total",
        "Bytes read from the capture source: each frame's length on the wire, even if truncated.",
        labels=labels,
        unit="bytes",
    )
    kernel_packets = CounterMetricFamily(
        "camwatch_capture_kernel_packets_total",
        "Packets the kernel passed to the capture socket, including those it then dropped.",
        labels=labels,
    )
    kernel_drops = CounterMetricFamily(
        "camwatch_capture_kernel_drops_total",
        "Packets the kernel dropped because the capture ring was full (the agent fell behind).",
        labels=labels,
    )
    for name, stats in sorted(snap.capture.items()):
        up.add_metric([name], float(stats.up))
        packets.add_metric([name], stats.packets)
        octets.add_metric([name], stats.bytes)
        if stats.kernel_packets is not None:
            kernel_packets.add_metric([name], stats.kernel_packets)
        if stats.kernel_drops is not None:
            kernel_drops.add_metric([name], stats.kernel_drops)
    yield from (up, packets, octets, kernel_packets, kernel_drops)


def _flow_families(snap: AgentSnapshot) -> Iterator[Metric]:
    yield _gauge("camwatch_flows_active", "Flows in the flow table now.", snap.flows_active)
    if snap.flows_limit is not None:
        yield _gauge("camwatch_flows_limit", "The flow table's bound (limits.max_flows).", snap.flows_limit)
    yield _counter("camwatch_flows_total", "Flows created.", snap.flows_created)
    ended = CounterMetricFamily(
        "camwatch_flows_ended_total",
        "Flows that ended: idle (idle timeout), active_timeout (cut after timeouts.active), closed (TCP).",
        labels=("reason",),
    )
    for reason in FLOW_END_REASONS:
        ended.add_metric([reason], snap.flows_ended.get(reason, 0))
    yield ended
    yield _counter(
        "camwatch_flows_evicted_total",
        "Flows ended early because the flow table was full (raise limits.max_flows if this grows).",
        snap.flows_evicted,
    )


def _device_count_families(snap: AgentSnapshot) -> Iterator[Metric]:
    vendors = _VendorLabels()
    counts: dict[tuple[str, str], int] = {}
    for device in snap.devices:
        key = (vendors.label(device.vendor), "true" if device.watched else "false")
        counts[key] = counts.get(key, 0) + 1
    family = GaugeMetricFamily(
        "camwatch_devices", "Devices in the inventory, by vendor and whether they are watched.",
        labels=("vendor", "watched"),
    )  # fmt: skip
    for (vendor, watched), count in sorted(counts.items()):
        family.add_metric([vendor, watched], count)
    yield family
    if snap.devices_limit is not None:
        yield _gauge(
            "camwatch_devices_limit", "The inventory's bound (limits.max_devices).", snap.devices_limit
        )


def _mqtt_families(mqtt: MqttStats) -> Iterator[Metric]:
    yield _gauge(
        "camwatch_mqtt_connected", "1 if connected to the MQTT broker, else 0.", float(mqtt.connected)
    )
    yield _counter(
        "camwatch_mqtt_published_total", "Alerts the broker acknowledged (PUBACK).", mqtt.published
    )
    yield _counter(
        "camwatch_mqtt_publish_failures_total",
        "Publishes that failed or were not acknowledged in time (the alert stays in the spool).",
        mqtt.publish_failures,
    )
    yield _counter(
        "camwatch_mqtt_reconnects_total",
        "Connection attempts to the broker after the first (after a loss or a failed attempt).",
        mqtt.reconnects,
    )


def _spool_families(spool: SpoolStats) -> Iterator[Metric]:
    yield _gauge("camwatch_spool_alerts", "Alerts in the spool waiting for the broker.", spool.alerts)
    yield _gauge("camwatch_spool_bytes", "Size of the alerts in the spool.", spool.bytes, "bytes")
    yield _counter(
        "camwatch_spool_dropped_total", "Alerts dropped because the spool was full (lost).", spool.dropped
    )
    yield _gauge(
        "camwatch_spool_near_full",
        "1 when the spool is close to its limits (limits.spool_max_*): alerts will soon be dropped.",
        float(spool.near_full),
    )


# What describe() reports: every optional section present, so every family name is registered.
_DESCRIBE: Final = AgentSnapshot(
    flows_limit=0, devices_limit=0, mqtt=MqttStats(), spool=SpoolStats(), streams={"": StreamStats()}
)


# --------------------------------------------------------------------------------------------------
# The HTTP server


def tls_server_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) with the given PEM certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # An empty password: an encrypted key fails here instead of OpenSSL prompting on a terminal.
    context.load_cert_chain(cert_file, key_file, password=b"")
    return context


class _TlsFiles:
    """The TLS context, rebuilt when the certificate or key file changes (renewals, months apart).

    Checked at most once a minute. If the new files cannot be loaded (e.g. a root-only key after
    privileges were dropped) the old context stays in use and a warning is logged.
    """

    CHECK_SECONDS: Final = 60.0

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self._files = (cert_file, key_file)
        self._lock = threading.Lock()
        self._context = tls_server_context(cert_file, key_file)
        self._stamp = self._mtimes()
        self._checked = time.monotonic()

    def _mtimes(self) -> tuple[float, ...]:
        try:
            return tuple(f.stat().st_mtime for f in self._files)
        except OSError:
            return ()

    def context(self) -> ssl.SSLContext:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.CHECK_SECONDS:
                self._checked = now
                stamp = self._mtimes()
                if stamp and stamp != self._stamp:
                    try:
                        self._context = tls_server_context(*self._files)
                        self._stamp = stamp
                        log.info("metrics: reloaded the TLS certificate %s", self._files[0])
                    except (ssl.SSLError, OSError) as exc:
                        log.warning(
                            "metrics: cannot reload the TLS certificate, keeping the old one: %s", exc
                        )
            return self._context


@dataclass(frozen=True, slots=True)
class _Credentials:
    """Basic-auth credentials, kept as a digest so the comparison takes the same time for any input."""

    digest: bytes = field(repr=False)

    @classmethod
    def of(cls, username: str, password: str) -> _Credentials:
        return cls(hashlib.sha256(f"{username}:{password}".encode()).digest())

    def accepts(self, header: str | None) -> bool:
        if header is None:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(given).digest(), self.digest)


class _Server(ThreadingHTTPServer):
    """One thread per connection (daemon threads: a stuck client cannot keep the agent alive)."""

    daemon_threads = True
    block_on_close = False
    #: Connections served at once; more are closed at once (a scrape needs one, a flood gets no
    #: more threads than this).
    max_connections = 32

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        registry: CollectorRegistry,
        tls: _TlsFiles | None,
        credentials: _Credentials | None,
        landing: bytes,
    ) -> None:
        self.address_family = family
        self.registry = registry
        self.tls = tls
        self.credentials = credentials
        self.landing = landing
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(address, _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("metrics: too many connections, closing one from %s", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang for seconds on an
        # appliance without working DNS; the name is only used for CGI.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        if self.tls is None or not isinstance(request, socket.socket):
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs here, in the connection's thread, so a slow or silent client
        # cannot hold up the accept loop.
        request.settimeout(_Handler.timeout)
        try:
            conn = self.tls.context().wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("metrics: TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that go away mid-response are routine; the default prints a traceback to stderr.
        log.debug("metrics: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses the connection (and its TLS session)
    server_version = f"camwatch/{__version__}"
    sys_version = ""
    timeout = 30

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        credentials = self.server.credentials
        if credentials is not None and not credentials.accepts(self.headers.get("Authorization")):
            self._send(
                401,
                b"401 Unauthorized\n",
                "text/plain; charset=utf-8",
                head,
                [("WWW-Authenticate", 'Basic realm="camwatch", charset="UTF-8"')],
            )
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(self.server.registry)
            except Exception:
                log.exception("metrics: collecting the metrics failed")
                self._send(500, b"500 collecting the metrics failed\n", "text/plain; charset=utf-8", head)
                return
            extra: list[tuple[str, str]] = []
            if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body, compresslevel=6)
                extra.append(("Content-Encoding", "gzip"))
            self._send(200, body, content_type, head, extra)
        elif path in ("/", "/index.html"):
            self._send(200, self.server.landing, "text/html; charset=utf-8", head)
        else:
            self._send(404, b"404 Not Found: try /metrics\n", "text/plain; charset=utf-8", head)

    def _send(
        self, code: int, body: bytes, content_type: str, head: bool, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics: %s %s", self.address_string(), format % args)


def _landing_page(version: str, tls: bool) -> bytes:
    esc = html.escape
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>camwatch</title></head><body>\n'
        "<h1>camwatch</h1>\n"
        "<p>Edge monitor for CCTV camera traffic: the agent's Prometheus endpoint.</p>\n"
        '<p><a href="metrics">Metrics</a></p>\n'
        f"<p>Version {esc(version)}, Python {esc(platform.python_version())}"
        f"{', served over TLS' if tls else ''}.</p>\n"
        "</body></html>\n"
    ).encode()


def _address_family(host: str, port: int) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return infos[0][0]


class MetricsServer:
    """Serves ``/metrics`` (and a landing page at ``/``) from ``registry`` in a daemon thread.

    :meth:`start` binds the socket in the calling thread (so the agent binds before it drops
    privileges, and a port in use fails at start-up) and then serves in the background.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str = "0.0.0.0",
        port: int = DEFAULT_METRICS_PORT,
        *,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        basic_auth: tuple[str, str] | None = None,
        version: str = __version__,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        self.registry = registry
        self.listen = listen
        self._port = port
        self._tls = _TlsFiles(tls_cert_file, tls_key_file) if tls_cert_file and tls_key_file else None
        self._credentials = _Credentials.of(*basic_auth) if basic_auth is not None else None
        self._landing = _landing_page(version, self._tls is not None)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(
        cls,
        config: MetricsConfig,
        snapshot_fn: Callable[[], AgentSnapshot],
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> MetricsServer:
        """A server for the ``metrics`` section: a fresh registry with a :class:`CamwatchCollector`
        (and the standard ``process_*`` metrics). Reads the basic-auth password file now, while the
        agent still has its start-up privileges."""
        registry = registry if registry is not None else CollectorRegistry()
        registry.register(CamwatchCollector(snapshot_fn, config.max_device_series))
        if process_metrics:
            ProcessCollector(registry=registry)
        auth: tuple[str, str] | None = None
        if config.basic_auth is not None:
            auth = (config.basic_auth.username, read_password_file(config.basic_auth.password_file))
        return cls(
            registry,
            config.listen,
            config.port,
            tls_cert_file=config.tls_cert_file,
            tls_key_file=config.tls_key_file,
            basic_auth=auth,
        )

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the configured one."""
        return self._server.server_port if self._server is not None else self._port

    @property
    def url(self) -> str:
        """The ``/metrics`` URL (for a wildcard listen address, on the loopback address)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.listen, self.listen)
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and start serving; raises OSError (e.g. the port is in use) from the caller's thread."""
        if self._server is not None:
            return
        host = self.listen.strip("[]")
        try:
            server = _Server(
                (host, self._port),
                _address_family(host, self._port),
                self.registry,
                self._tls,
                self._credentials,
                self._landing,
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"metrics: cannot listen on {self.listen}:{self._port}: {exc.strerror}"
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics: serving %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
