"""The agent's learning mode (``learning:`` in the configuration; docs/learning.md).

Per device, two states: **learning** then **enforcing**. The site's learning window opens at the first
traffic the agent sees with learning on (kept in ``learning.json``, so a restart does not reopen it) and
lasts ``period``; every device seen in it learns until it closes. A device first seen later enforces at
once (``new_devices: enforce``, the default: a stranger is not given days of silence) or learns a period of
its own (``new_devices: learn``). ``camwatch learn --relearn MAC`` gives one device a new period (after a
firmware change): what it learned before is forgotten.

While a device learns:

- the recorder beside the rules (``agents.learn.observe``) keeps what it does, and every alert's flags;
- its alerts still go out, marked (critical ones excepted: they page as ever): ``event.severity`` becomes
  :data:`LEARNING_SEVERITY` (1, below info),
  so MQTT publishes them under ``.../alerts/1``, which nothing that pages subscribes to, and
  ``camwatch.learning`` says ``{"state": "learning", "until": ..., "severity": <the rule's>}``; they are
  counted in ``camwatch_learning_alerts_total{rule}`` instead of ``camwatch_alerts_total``, which the
  Prometheus alerting rules page on.

``camwatch learn --from-state`` turns the saved observations into a proposed policy, reviewed and applied by
a person (docs/learning.md, "Review and apply"). Times are capture times (the alerts' and flows'), so a
replayed capture learns like a live site.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.config import LearningConfig
from agents.learn.observe import Observations, rulebook_with
from agents.learn.state import (
    LEARNING_FILE,
    LearningStateError,
    read_learning,
    take_relearn_requests,
    write_learning,
)
from monitor.alerts import CRITICAL, Alert, iso_timestamp
from monitor.registry import RULES, Rulebook
from monitor.vendors.oui import parse_mac

if TYPE_CHECKING:
    from monitor.engine import Engine

log = logging.getLogger(__name__)

__all__ = [
    "ENFORCING",
    "LEARNING",
    "LEARNING_SEVERITY",
    "LearningCollector",
    "LearningMode",
    "LearningReading",
    "is_learning_record",
]

LEARNING: Final = "learning"
ENFORCING: Final = "enforcing"
#: ``event.severity`` of an alert raised while its device learns: below info (2), so it never pages.
LEARNING_SEVERITY: Final = 1
NS: Final = 1_000_000_000
#: Devices whose state is kept (a flood of spoofed MACs must not grow the state file without bound).
MAX_DEVICES: Final = 100_000


@dataclass(slots=True)
class DeviceLearning:
    """One device: it learns from ``since_ns`` until ``until_ns`` (capture time); enforces after."""

    since_ns: int
    until_ns: int


def is_learning_record(record: Any) -> bool:
    """Was this alert record marked as raised while its device learned?"""
    extra = record.get("camwatch") if hasattr(record, "get") else None
    return isinstance(extra, dict) and isinstance(extra.get("learning"), dict)


class LearningMode:
    """Per-device learning states, the observations, and their state file (``learning.json``)."""

    def __init__(self, config: LearningConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.period_ns = int(config.period * NS)
        # The capture threads (under the engine lock) write, scrapes read.
        self._lock = threading.Lock()
        self.alerts: dict[str, int] = {}
        self.now_ns = 0
        self._reset()

    def _reset(self) -> None:
        self.observations = Observations(self.config.max_observations)
        self.observations.accept = self.learns
        self.window_start_ns: int | None = None
        self.devices: dict[str, DeviceLearning] = {}
        self._finished: set[str] = set()
        #: Devices asked to learn again: their new period starts at their next traffic (capture time).
        self.relearn_pending: set[str] = set()

    @property
    def window_end_ns(self) -> int | None:
        return None if self.window_start_ns is None else self.window_start_ns + self.period_ns

    def rulebook(self) -> Rulebook:
        """The engine's rules with the recorder beside them."""
        return rulebook_with(self.observations)

    # ------------------------------------------------------------------ states

    def state(self, device: str, ts_ns: int) -> tuple[str, int | None]:
        """``(LEARNING, until_ns)`` or ``(ENFORCING, None)`` for a device at ``ts_ns``; a device not seen
        before (or asked to learn again) is given its state now."""
        if not self.config.enabled:
            return ENFORCING, None
        forget = False
        with self._lock:
            self.now_ns = max(self.now_ns, ts_ns)
            if self.window_start_ns is None:
                self.window_start_ns = ts_ns
                log.info(
                    "learning: the site's learning window opens; it closes at %s",
                    iso_timestamp(ts_ns + self.period_ns),
                )
            dev = self.devices.get(device)
            if device in self.relearn_pending:
                self.relearn_pending.discard(device)
                dev = self.devices[device] = DeviceLearning(ts_ns, ts_ns + self.period_ns)
                self._finished.discard(device)
                forget = True
            elif dev is None:
                if len(self.devices) >= MAX_DEVICES:
                    return ENFORCING, None
                end = self.window_start_ns + self.period_ns
                if ts_ns < end:
                    until = end
                elif self.config.new_devices == "learn":
                    until = ts_ns + self.period_ns
                else:
                    until = ts_ns  # enforcing from the start
                dev = self.devices[device] = DeviceLearning(ts_ns, until)
            learning = ts_ns < dev.until_ns
            finished = not learning and device not in self._finished and dev.until_ns > dev.since_ns
            if finished:
                self._finished.add(device)
        if forget:
            forgotten = self.observations.forget_device(device)
            log.info(
                "learning: %s learns again until %s (%d earlier observations forgotten)",
                device,
                iso_timestamp(dev.until_ns),
                forgotten,
            )
        if finished:
            log.info(
                "learning: %s finished learning (%s); its alerts page from now on. Review the proposal: "
                "camwatch learn --from-state %s --policy POLICY --out LEARNED.yaml",
                device,
                iso_timestamp(dev.until_ns),
                self.state_dir,
            )
        return (LEARNING, dev.until_ns) if learning else (ENFORCING, None)

    def learning_now(self, device: str) -> bool:
        """Whether the device learns at the newest time seen (read only: for the metrics)."""
        with self._lock:
            dev = self.devices.get(device)
            return dev is not None and self.now_ns < dev.until_ns

    def learns(self, device: str, ts_ns: int) -> bool:
        return self.state(device, ts_ns)[0] == LEARNING

    def on_alert(self, alert: Alert, record: MutableMapping[str, Any], engine: Engine) -> bool:
        """Note the alert's flags; mark its record when its device learns. True if marked."""

        def device_ips(mac: str) -> Sequence[str]:
            try:
                dev = engine.inventory.get(parse_mac(mac))
            except ValueError:
                return ()
            return dev.ips if dev is not None else ()

        if not self.config.enabled:
            return False
        self.observations.note_alert(alert, device_ips, engine.site.is_site_address)
        if alert.device_id is None:
            return False
        state, until = self.state(alert.device_id, alert.timestamp_ns)
        if state != LEARNING or until is None or alert.rule.severity >= CRITICAL:
            # Critical alerts (an exploit attempt, the device scanning for others) page while it learns: a
            # camera compromised in its first week is what learning must not hide (docs/learning.md).
            return False
        event = record.setdefault("event", {})
        severity = event.get("severity", alert.rule.severity)
        event["severity"] = LEARNING_SEVERITY
        extra = record.setdefault("camwatch", {})
        extra["learning"] = {"state": LEARNING, "until": iso_timestamp(until), "severity": severity}
        with self._lock:
            self.alerts[alert.rule.id] = self.alerts.get(alert.rule.id, 0) + 1
        return True

    def relearn(self, devices: Iterable[str]) -> None:
        """These devices learn again for a period from their next traffic; what they learned before is
        forgotten then."""
        with self._lock:
            for device in devices:
                self.relearn_pending.add(device)
                log.info("learning: %s will learn again from its next traffic", device)

    # ------------------------------------------------------------------ the state file

    def load(self) -> None:
        """Resume from ``learning.json``; a damaged file is set aside with a log line (learning restarts)."""
        path = self.state_dir / LEARNING_FILE
        try:
            doc = read_learning(self.state_dir)
            if doc is None:
                return
            self._restore(doc)
        except (LearningStateError, ValueError, TypeError, KeyError) as exc:
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            log.error("%s is damaged (%s): moved to %s; learning starts again", path, exc, aside)
            with contextlib.suppress(OSError):
                path.replace(aside)
            self._reset()
            return
        log.info(
            "learning: resumed %d devices and %d observations from %s",
            len(self.devices),
            len(self.observations.usages),
            path,
        )
        self.take_requests()

    def _restore(self, doc: dict[str, Any]) -> None:
        start = doc.get("window_start_ns")
        if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
            raise ValueError(f"window_start_ns is {start!r}")
        devices: dict[str, DeviceLearning] = {}
        for device, (since, until) in dict(doc.get("devices", {})).items():
            devices[str(device)] = DeviceLearning(int(since), int(until))
        observations = Observations.from_json(doc.get("observations"), self.config.max_observations)
        observations.accept = self.learns
        self.relearn_pending = {str(d) for d in doc.get("relearn", [])}
        self.window_start_ns = start
        self.devices = dict(list(devices.items())[:MAX_DEVICES])
        self.observations = observations

    def take_requests(self) -> None:
        """Take the relearn requests ``camwatch learn --relearn`` left in the state directory."""
        requests = take_relearn_requests(self.state_dir)
        if requests:
            self.relearn(requests)

    def save(self) -> None:
        """Take the relearn requests, then write ``learning.json`` (call with the engine lock held)."""
        self.take_requests()
        with self._lock:
            devices = {d: [s.since_ns, s.until_ns] for d, s in self.devices.items()}
            pending = sorted(self.relearn_pending)
        write_learning(
            self.state_dir,
            {
                "window_start_ns": self.window_start_ns,
                "period_s": self.config.period,
                "devices": devices,
                "relearn": pending,
                "observations": self.observations.to_json(),
            },
        )

    # ------------------------------------------------------------------ metrics

    def collector(self) -> LearningCollector:
        return LearningCollector(self.reading)

    def reading(self) -> LearningReading:
        """What the collector shows (called by scrapes, from their own thread)."""
        with self._lock:
            now = self.now_ns
            states = {LEARNING: 0, ENFORCING: 0}
            for dev in self.devices.values():
                states[LEARNING if now < dev.until_ns else ENFORCING] += 1
            alerts = dict(self.alerts)
        return LearningReading(states, alerts, len(self.observations.usages), self.observations.dropped)


@dataclass(frozen=True, slots=True)
class LearningReading:
    """The learning mode's numbers at one scrape."""

    devices: Mapping[str, int] = field(default_factory=dict)
    alerts: Mapping[str, int] = field(default_factory=dict)
    observations: int = 0
    dropped: int = 0


class LearningCollector(Collector):
    """``camwatch_learning_devices{state}``, ``camwatch_learning_alerts_total{rule}``,
    ``camwatch_learning_observations`` and ``camwatch_learning_observations_dropped_total``
    (docs/metrics.md)."""

    def __init__(self, read: Callable[[], LearningReading]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        """The families without reading the learning mode (the registry finds name clashes with it)."""
        return _families(LearningReading())

    def collect(self) -> Iterable[Metric]:
        return _families(self._read())


def _families(reading: LearningReading) -> list[Metric]:
    devices = GaugeMetricFamily(
        "camwatch_learning_devices", "Devices by learning state (learning, enforcing).", labels=["state"]
    )
    for state in (ENFORCING, LEARNING):
        devices.add_metric([state], reading.devices.get(state, 0))
    alerts = CounterMetricFamily(
        "camwatch_learning_alerts",
        "Alerts raised while their device learned (severity 1, not paging), by rule.",
        labels=["rule"],
    )
    # Every known rule from the start, as camwatch_alerts_total (increase() sees the first one).
    for rule in sorted({*RULES, *reading.alerts}):
        alerts.add_metric([rule], reading.alerts.get(rule, 0))
    return [
        devices,
        alerts,
        GaugeMetricFamily(
            "camwatch_learning_observations",
            "Observations kept for camwatch learn --from-state.",
            value=reading.observations,
        ),
        CounterMetricFamily(
            "camwatch_learning_observations_dropped",
            "Observations not kept: learning.max_observations was reached.",
            value=reading.dropped,
        ),
    ]
