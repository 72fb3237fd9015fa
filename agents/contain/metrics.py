"""Containment's metrics (``camwatch_containment_*``), built at scrape time from :class:`ContainmentStats`.

The agent's containment task updates the stats (under their lock); a scrape copies them and builds the
families. Counters read from the kernel (the named counters of camwatch's table) start again from zero
when the table is reloaded: :meth:`ContainmentStats.kernel_counters` keeps them monotonic by adding
what was counted before each reset. Per-device series are capped like the engine's (``mac="other"``
beyond ``max_device_series`` devices). docs/containment.md lists every family.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.contain.audit import OUTCOMES

__all__ = ["APPLY_RESULTS", "ContainmentCollector", "ContainmentStats"]

APPLY_RESULTS: Final = OUTCOMES
DROP_REASONS: Final = ("policy", "quarantine")
ACTIONS: Final = ("blocked", "would_block")
OTHER: Final = "other"


@dataclass(slots=True)
class _DeviceCounts:
    flows: int = 0
    packets: int = 0


@dataclass(slots=True)
class ContainmentStats:
    """What the containment task counts; every method takes the lock (scrapes run in another thread)."""

    mode: str
    max_device_series: int = 500
    quarantine_limit: int = 0
    loaded: bool = False
    last_apply: float | None = None
    quarantined: int = 0
    learned: int = 0
    applies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(APPLY_RESULTS, 0))
    auto_quarantines: dict[str, int] = field(default_factory=lambda: dict.fromkeys(APPLY_RESULTS, 0))
    # Kernel counters: the total before the last reset, and the last value read.
    _kernel_base: dict[str, tuple[int, int]] = field(default_factory=dict)
    _kernel_last: dict[str, tuple[int, int]] = field(default_factory=dict)
    _devices: dict[tuple[str, str], _DeviceCounts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count_apply(self, outcome: str, when: float) -> None:
        with self._lock:
            self.applies[outcome] = self.applies.get(outcome, 0) + 1
            if outcome in ("applied", "unchanged", "dry-run"):
                self.last_apply = when

    def count_auto_quarantine(self, outcome: str) -> None:
        with self._lock:
            self.auto_quarantines[outcome] = self.auto_quarantines.get(outcome, 0) + 1

    def kernel_counters(self, counters: Mapping[str, tuple[int, int]]) -> None:
        """The table's named counters as read now (``dropped_policy`` -> (packets, bytes))."""
        with self._lock:
            for name, (packets, octets) in counters.items():
                last = self._kernel_last.get(name, (0, 0))
                if packets < last[0] or octets < last[1]:  # the table was reloaded: it counts from zero
                    base = self._kernel_base.get(name, (0, 0))
                    self._kernel_base[name] = (base[0] + last[0], base[1] + last[1])
                self._kernel_last[name] = (packets, octets)

    def before_reload(self, counters: Mapping[str, tuple[int, int]]) -> None:
        """Counters read right before a reload: what the old table counted is kept."""
        self.kernel_counters(counters)

    def count_device(self, mac: str, action: str, packets: int) -> None:
        """A flow of device ``mac`` that containment blocked (or, in dry-run, would block)."""
        with self._lock:
            key = (mac, action)
            counts = self._devices.get(key)
            if counts is None:
                macs = {m for m, _ in self._devices if m != OTHER}
                if mac not in macs and len(macs) >= self.max_device_series:
                    key = (OTHER, action)
                counts = self._devices.setdefault(key, _DeviceCounts())
            counts.flows += 1
            counts.packets += packets

    def snapshot(self) -> _Snapshot:
        with self._lock:
            dropped = {
                name: (
                    self._kernel_base.get(name, (0, 0))[0] + self._kernel_last.get(name, (0, 0))[0],
                    self._kernel_base.get(name, (0, 0))[1] + self._kernel_last.get(name, (0, 0))[1],
                )
                for name in {*self._kernel_base, *self._kernel_last}
            }
            return _Snapshot(
                mode=self.mode,
                loaded=self.loaded,
                last_apply=self.last_apply,
                quarantined=self.quarantined,
                quarantine_limit=self.quarantine_limit,
                learned=self.learned,
                applies=dict(self.applies),
                auto_quarantines=dict(self.auto_quarantines),
                dropped=dropped,
                devices={k: (v.flows, v.packets) for k, v in self._devices.items()},
            )


@dataclass(frozen=True, slots=True)
class _Snapshot:
    mode: str
    loaded: bool
    last_apply: float | None
    quarantined: int
    quarantine_limit: int
    learned: int
    applies: dict[str, int]
    auto_quarantines: dict[str, int]
    dropped: dict[str, tuple[int, int]]
    devices: dict[tuple[str, str], tuple[int, int]]


class ContainmentCollector(Collector):
    """The ``camwatch_containment_*`` families."""

    def __init__(self, stats: ContainmentStats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        """The families (the registry uses them to find name clashes)."""
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        s = self.stats.snapshot()
        mode = GaugeMetricFamily(
            "camwatch_containment_mode", "Containment mode: 1 for the configured one.", labels=["mode"]
        )
        for name in ("off", "dry-run", "enforce"):
            mode.add_metric([name], 1.0 if s.mode == name else 0.0)
        loaded = GaugeMetricFamily(
            "camwatch_containment_ruleset_loaded",
            "1 if camwatch's nftables table holds the ruleset this agent applied last (enforce mode).",
            value=1.0 if s.loaded else 0.0,
        )
        applies = CounterMetricFamily(
            "camwatch_containment_applies",
            "Ruleset applies by result: applied, unchanged, dry-run (checked only), refused (nft -c or the "
            "plan said no), failed (nft failed; the previous ruleset stays).",
            labels=["result"],
        )
        for result in APPLY_RESULTS:
            applies.add_metric([result], s.applies.get(result, 0))
        families: list[Metric] = [mode, loaded, applies]
        if s.last_apply is not None:
            families.append(
                GaugeMetricFamily(
                    "camwatch_containment_last_apply_timestamp_seconds",
                    "When the ruleset was last applied or checked (Unix time).",
                    value=s.last_apply,
                )
            )
        packets = CounterMetricFamily(
            "camwatch_containment_dropped_packets",
            "Packets camwatch's nftables table dropped, by reason (policy: a watched device's destination "
            "is not allowed; quarantine).",
            labels=["reason"],
        )
        octets = CounterMetricFamily(
            "camwatch_containment_dropped_bytes",
            "Bytes of the dropped packets (IP length).",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            p, b = s.dropped.get(f"dropped_{reason}", (0, 0))
            packets.add_metric([reason], p)
            octets.add_metric([reason], b)
        families += [packets, octets]
        flows = CounterMetricFamily(
            "camwatch_containment_device_flows",
            "Flows of a device that containment blocked (action blocked, enforce mode) or would block "
            "(would_block, dry-run), judged from the captured traffic; destinations are in the log.",
            labels=["mac", "action"],
        )
        dev_packets = CounterMetricFamily(
            "camwatch_containment_device_packets",
            "Packets the device sent in those flows (as captured).",
            labels=["mac", "action"],
        )
        for (mac, action), (n_flows, n_packets) in sorted(s.devices.items()):
            flows.add_metric([mac, action], n_flows)
            dev_packets.add_metric([mac, action], n_packets)
        families += [flows, dev_packets]
        families.append(
            GaugeMetricFamily(
                "camwatch_containment_quarantined_devices", "Devices quarantined now.", value=s.quarantined
            )
        )
        families.append(
            GaugeMetricFamily(
                "camwatch_containment_quarantine_limit",
                "The most devices quarantined at once (containment.quarantine.max_devices).",
                value=s.quarantine_limit,
            )
        )
        auto = CounterMetricFamily(
            "camwatch_containment_auto_quarantines",
            "Automatic quarantines requested by alerts (containment.quarantine.auto_rules), by outcome.",
            labels=["outcome"],
        )
        for outcome in APPLY_RESULTS:
            if outcome != "unchanged":
                auto.add_metric([outcome], s.auto_quarantines.get(outcome, 0))
        families.append(auto)
        families.append(
            GaugeMetricFamily(
                "camwatch_containment_name_addresses",
                "Addresses learned from DNS answers for name-based allow rules, allowed now.",
                value=s.learned,
            )
        )
        return families
