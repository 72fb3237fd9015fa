"""The agent's and the engine's metrics, as prometheus_client collectors built at scrape time.

Each component of the agent has its own collector registered on the exporter's registry (docs/metrics.md
lists every family): this module has the agent's (:class:`AgentCollector`: build, start time, alerts by rule)
and the engine's (:class:`EngineCollector`); the capture sources', the outbox's, the MQTT sink's and the
stream probe's are beside them (agents/capture/running.py, agents/sinks/outbox.py, agents/sinks/mqtt.py,
agents/probe/metrics.py).

The engine is single-threaded and owned by the capture threads, so its collector copies what it needs
under the engine lock, for as short a time as it can, and builds the families after releasing it.

Label rules: no site/gateway labels (they are the scrape target's labels in Prometheus), and never
destination IPs, ports or flow ids. The only open-ended label is ``mac`` on the per-device series;
they are capped at ``max_device_series`` devices (the ones with the most traffic to/from outside the
site; a flood of spoofed MACs moves little traffic), the rest are summed into ``mac="other"``.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor import __version__
from monitor.registry import RULES
from monitor.vendors.oui import format_mac

if TYPE_CHECKING:
    from monitor.engine import Engine

__all__ = [
    "FLOW_END_REASONS",
    "LIVE_EXTERNAL_MAX_FLOWS",
    "AgentCollector",
    "AlertCounts",
    "DeviceSummary",
    "EngineCollector",
    "EngineReading",
    "ExternalTraffic",
    "StateSaves",
]

#: Flow end reasons exported as ``camwatch_flows_ended_total{reason}`` (evictions have their own counter).
FLOW_END_REASONS: Final = ("idle", "active_timeout", "closed")
#: Walking every live flow for the per-device external traffic holds the engine lock; above this many
#: live flows a scrape reports ended flows only (they are accumulated as flows end).
LIVE_EXTERNAL_MAX_FLOWS: Final = 50_000
#: Distinct ``vendor`` label values before the rest are reported as "other" (a bound on cardinality
#: even if a future analyzer produced free-form vendor names).
MAX_VENDOR_LABELS: Final = 64
OTHER: Final = "other"
UNKNOWN: Final = "unknown"
#: ``camwatch_devices{status}`` of a device the asset register does not list.
UNREGISTERED: Final = "unregistered"

# A device displaces the smallest device that has its own series only with at least this many
# times its traffic: without hysteresis two similar devices would swap series at every scrape.
_DISPLACE_FACTOR: Final = 2


# --------------------------------------------------------------------------------------------------
# The agent


class AlertCounts:
    """Alerts handed to the agent's sinks, by rule id; counted on the event loop, read by scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, rule_id: str) -> None:
        with self._lock:
            self._counts[rule_id] = self._counts.get(rule_id, 0) + 1

    def snapshot(self) -> dict[str, int]:
        """A copy (a scrape formats it while alerts keep coming)."""
        with self._lock:
            return dict(self._counts)


class StateSaves(NamedTuple):
    """How saving the state directory goes: failed saves, and the time of the last one that worked."""

    failures: int = 0
    last_success: float | None = None


class AgentCollector(Collector):
    """``camwatch_build_info``, ``camwatch_start_time_seconds``, ``camwatch_alerts_total`` and, with
    ``state``, ``camwatch_state_*``.

    Every alert takes the agent's one alert path, the engine's and the stream probe's alike, and is
    counted there: ``alerts`` returns those counts by rule id.
    """

    def __init__(
        self,
        start_time: float,
        alerts: Callable[[], Mapping[str, int]],
        state: Callable[[], StateSaves] | None = None,
    ) -> None:
        self._start_time = start_time
        self._alerts = alerts
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return _agent_families(self._start_time, {}, StateSaves(0, 0.0) if self._state else None)

    def collect(self) -> Iterable[Metric]:
        return _agent_families(self._start_time, self._alerts(), self._state() if self._state else None)


def _agent_families(start_time: float, alerts: Mapping[str, int], state: StateSaves | None) -> list[Metric]:
    by_rule = CounterMetricFamily(
        "camwatch_alerts_total", "Alerts raised (after duplicate suppression), by rule.", labels=("rule",)
    )
    # Every known rule is present from the start, so increase() sees the first alert of each.
    for rule in sorted({*RULES, *alerts}):
        by_rule.add_metric([rule], alerts.get(rule, 0))
    families: list[Metric] = []
    if state is not None:
        families.append(
            CounterMetricFamily(
                "camwatch_state_save_failures",
                "Saves of the state directory that failed (disk full, permissions); logged at ERROR.",
                value=state.failures,
            )
        )
        if state.last_success is not None:
            families.append(
                GaugeMetricFamily(
                    "camwatch_state_last_save_timestamp_seconds",
                    "When the state (inventory, incidents) was last saved, in Unix time.",
                    value=state.last_success,
                )
            )
    return [
        *families,
        InfoMetricFamily(
            "camwatch_build",
            "camwatch version and the Python running it.",
            value={"version": __version__, "python": platform.python_version()},
        ),
        GaugeMetricFamily(
            "camwatch_start_time_seconds",
            "When the agent started, in Unix time.",
            value=start_time,
            unit="seconds",
        ),
        by_rule,
    ]


# --------------------------------------------------------------------------------------------------
# The engine


class DeviceSummary(NamedTuple):
    """One inventory entry: ECS-formatted MAC, vendor key (``"unknown"`` when not attributed), and its
    asset register status (``"unregistered"`` when the register does not list it)."""

    mac: str
    vendor: str
    watched: bool
    status: str = UNREGISTERED


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
class EngineReading:
    """The engine's counters at one scrape. Counters are totals since the engine started."""

    packets_truncated: int = 0
    packets_non_ip: int = 0
    packets_later_fragments: int = 0
    packets_undecoded: Mapping[int, int] = field(default_factory=dict)  # by link type camwatch does not read
    packets_ipv6_ext_overflow: int = 0
    packets_decapsulated: int = 0
    # IP datagrams (IPv4, IPv6) by what reassembly did with them (reassembled, conflict, timeout, evicted,
    # oversized).
    defrag: Mapping[str, int] = field(default_factory=dict)
    analyzer_packets: Mapping[str, int] = field(default_factory=dict)  # by protocol
    analyzer_parse_errors: int = 0
    analyzer_internal_errors: int = 0
    analyzer_segments: Mapping[str, int] = field(default_factory=dict)  # duplicate, overlap, hole
    flows_one_direction: int = 0
    flow_copies: int = 0
    routers: int = 0
    flows_active: int = 0
    flows_created: int = 0
    flows_ended: Mapping[str, int] = field(default_factory=dict)  # by FLOW_END_REASONS
    flows_evicted: int = 0
    devices: Sequence[DeviceSummary] = ()
    external: Mapping[str, ExternalTraffic] = field(default_factory=dict)  # by device MAC
    alerts_suppressed: int = 0
    evictions: Mapping[str, int] = field(default_factory=dict)  # by bounded table (Engine.evictions)

    @classmethod
    def of(cls, engine: Engine, *, live_external: bool = True) -> EngineReading:
        """Read ``engine``. Call it with the engine lock held: it reads live state.

        ``live_external`` adds the live flows to the per-device external traffic (a long flow counts
        before it ends); it walks the flow table, so a very large table makes the lock hold longer.
        """
        st, fs, an = engine.stats, engine.flows.stats, engine.analysis.stats
        return cls(
            packets_truncated=st.truncated,
            packets_non_ip=st.non_ip,
            packets_later_fragments=st.later_fragments,
            packets_undecoded=dict(st.undecoded_linktypes),
            packets_ipv6_ext_overflow=st.ipv6_ext_overflow,
            packets_decapsulated=st.decapsulated,
            defrag={
                "reassembled": st.defrag_reassembled,
                "conflict": st.defrag_conflicts,
                "timeout": st.defrag_timeouts,
                "evicted": st.defrag_evicted,
                "oversized": st.defrag_oversized,
            },
            analyzer_packets=dict(an.by_protocol),
            analyzer_parse_errors=an.parse_errors,
            analyzer_internal_errors=an.internal_errors,
            analyzer_segments={
                "duplicate": engine.analysis.order.duplicates,
                "overlap": engine.analysis.order.overlaps,
                "hole": engine.analysis.order.holes,
            },
            flows_one_direction=st.tcp_one_direction,
            flow_copies=engine.site.stats.copies,
            routers=engine.site.stats.routers,
            flows_active=len(engine.flows),
            flows_created=fs.created,
            flows_ended={"idle": fs.ended_idle, "active_timeout": fs.ended_active, "closed": fs.ended_closed},
            flows_evicted=fs.evicted,
            devices=tuple(
                DeviceSummary(
                    d.mac_str,
                    d.vendor or UNKNOWN,
                    bool(d.watched),
                    engine.site.register.status_of(d.mac) or UNREGISTERED,
                )
                for d in engine.inventory
            ),
            external={
                format_mac(mac): ExternalTraffic(*counts[:4])
                for mac, counts in engine.external_traffic(live=live_external).items()
            },
            alerts_suppressed=engine.gate.suppressed,
            evictions=engine.evictions(),
        )


class EngineCollector(Collector):
    """The engine's families: packets, analyzers, flows, devices, per-device external traffic, repeats.

    ``read`` returns the engine's counters; :meth:`of_engine` builds it from an engine and its lock.
    ``flows_limit`` and ``devices_limit`` are the configured bounds (no series when None).
    ``max_device_series`` caps the devices with their own ``camwatch_device_external_*`` series
    (0: every device goes to "other").
    """

    def __init__(
        self,
        read: Callable[[], EngineReading],
        *,
        flows_limit: int | None = None,
        devices_limit: int | None = None,
        max_device_series: int = 500,
    ) -> None:
        if max_device_series < 0:
            raise ValueError("max_device_series must be >= 0")
        self._read = read
        self._flows_limit = flows_limit
        self._devices_limit = devices_limit
        self._devices = _DeviceSeries(max_device_series)

    @classmethod
    def of_engine(
        cls,
        engine: Engine,
        lock: AbstractContextManager[object],
        *,
        flows_limit: int | None = None,
        devices_limit: int | None = None,
        max_device_series: int = 500,
    ) -> EngineCollector:
        """A collector reading ``engine`` under ``lock`` (the lock its capture threads hold to feed it)."""

        def read() -> EngineReading:
            with lock:
                live = len(engine.flows) <= LIVE_EXTERNAL_MAX_FLOWS
                return EngineReading.of(engine, live_external=live)

        return cls(
            read, flows_limit=flows_limit, devices_limit=devices_limit, max_device_series=max_device_series
        )

    def describe(self) -> Iterable[Metric]:
        """The families without reading the engine (the registry uses this to find name clashes)."""
        return [
            *_engine_families(EngineReading(), 0, 0),
            *_device_families([], ExternalTraffic(), 0, {}),
        ]

    def collect(self) -> Iterable[Metric]:
        reading = self._read()
        yield from _engine_families(reading, self._flows_limit, self._devices_limit)
        series, other, dropped = self._devices.update(reading.external)
        yield from _device_families(series, other, dropped, {d.mac: d.vendor for d in reading.devices})


def _engine_families(
    r: EngineReading, flows_limit: int | None, devices_limit: int | None
) -> Iterator[Metric]:
    yield _counter(
        "camwatch_packets_truncated_total",
        "Packets cut short (by the snap length or a broken header) before their headers could be decoded.",
        r.packets_truncated,
    )
    yield _counter(
        "camwatch_packets_non_ip_total", "Frames that are not IPv4/IPv6 (ARP, LLDP, ...).", r.packets_non_ip
    )
    yield _counter(
        "camwatch_packets_later_fragments_total",
        "IP fragments after the first (no transport header: not assigned to a flow).",
        r.packets_later_fragments,
    )
    undecoded = CounterMetricFamily(
        "camwatch_packets_undecoded_total",
        "Frames of a link type camwatch does not decode (802.11, PPP, ...), by link type number.",
        labels=("linktype",),
    )
    for linktype, count in sorted(r.packets_undecoded.items()):
        undecoded.add_metric([str(linktype)], count)
    yield undecoded
    yield _counter(
        "camwatch_packets_ipv6_ext_overflow_total",
        "IPv6 packets with more extension headers than camwatch walks (8): not assigned to a flow.",
        r.packets_ipv6_ext_overflow,
    )
    yield _counter(
        "camwatch_packets_decapsulated_total",
        "Packets read inside a tunnel (remote mirror: GRE, ERSPAN, VXLAN; IP-in-IP, GTP-U).",
        r.packets_decapsulated,
    )
    defrag = CounterMetricFamily(
        "camwatch_ip_datagrams_fragmented_total",
        "Fragmented IP datagrams by what reassembly did: reassembled, or given up (conflict, timeout, "
        "evicted, oversized: the first fragment is then read alone).",
        labels=("outcome",),
    )
    for outcome, count in sorted(r.defrag.items()):
        defrag.add_metric([outcome], count)
    yield defrag
    analyzed = CounterMetricFamily(
        "camwatch_analyzer_packets_total", "Packets given to a protocol analyzer.", labels=("protocol",)
    )
    for protocol, count in sorted(r.analyzer_packets.items()):
        analyzed.add_metric([protocol], count)
    yield analyzed
    yield _counter(
        "camwatch_analyzer_parse_errors_total",
        "Payloads an analyzer could not parse (malformed or unexpected protocol data).",
        r.analyzer_parse_errors,
    )
    yield _counter(
        "camwatch_analyzer_internal_errors_total",
        "Analyzer failures that are camwatch bugs (an exception caught and counted); please report them.",
        r.analyzer_internal_errors,
    )
    segments = CounterMetricFamily(
        "camwatch_analyzer_segments_total",
        "Packets the analyzers did not read as they came: duplicate (a mirror's copy or a retransmission, "
        "dropped), overlap (trimmed to its new bytes), hole (a gap never filled, skipped).",
        labels=("outcome",),
    )
    for outcome in ("duplicate", "overlap", "hole"):
        segments.add_metric([outcome], r.analyzer_segments.get(outcome, 0))
    yield segments
    yield _counter(
        "camwatch_flows_one_direction_total",
        "TCP flows that ended with only one direction seen: the mirror is asymmetric or drops.",
        r.flows_one_direction,
    )
    yield _counter(
        "camwatch_flow_copies_total",
        "Flows that repeat another on a second VLAN (a routed copy on a trunk mirror): judged once.",
        r.flow_copies,
    )
    yield _gauge(
        "camwatch_routers",
        "MACs found to forward other hosts' packets (never a device's identity).",
        r.routers,
    )
    yield _gauge("camwatch_flows_active", "Flows in the flow table now.", r.flows_active)
    if flows_limit is not None:
        yield _gauge("camwatch_flows_limit", "The flow table's bound (limits.max_flows).", flows_limit)
    yield _counter("camwatch_flows_total", "Flows created.", r.flows_created)
    ended = CounterMetricFamily(
        "camwatch_flows_ended_total",
        "Flows that ended: idle (idle timeout), active_timeout (cut after timeouts.active), closed (TCP).",
        labels=("reason",),
    )
    for reason in FLOW_END_REASONS:
        ended.add_metric([reason], r.flows_ended.get(reason, 0))
    yield ended
    yield _counter(
        "camwatch_flows_evicted_total",
        "Flows ended early because the flow table was full (raise limits.max_flows if this grows).",
        r.flows_evicted,
    )
    yield from _device_count_families(r.devices, devices_limit)
    yield _counter(
        "camwatch_alerts_suppressed_total",
        "Repeats of an already reported incident that were not raised again.",
        r.alerts_suppressed,
    )
    evictions = CounterMetricFamily(
        "camwatch_table_evictions_total",
        "Entries a bounded engine table forgot or refused at its bound, by table (docs/design.md §6).",
        labels=("table",),
    )
    for table, count in sorted(r.evictions.items()):
        evictions.add_metric([table], count)
    yield evictions


def _device_count_families(devices: Sequence[DeviceSummary], limit: int | None) -> Iterator[Metric]:
    vendors = _VendorLabels()
    counts: dict[tuple[str, str, str], int] = {}
    for device in devices:
        key = (vendors.label(device.vendor), "true" if device.watched else "false", device.status)
        counts[key] = counts.get(key, 0) + 1
    family = GaugeMetricFamily(
        "camwatch_devices",
        "Devices in the inventory, by vendor, whether they are watched, and their asset register status "
        "(active, scheduled, removed; unregistered when the register does not list them).",
        labels=("vendor", "watched", "status"),
    )
    for (vendor, watched, status), count in sorted(counts.items()):
        family.add_metric([vendor, watched, status], count)
    yield family
    if limit is not None:
        yield _gauge("camwatch_devices_limit", "The inventory's bound (limits.max_devices).", limit)


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


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
