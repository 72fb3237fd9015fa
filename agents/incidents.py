"""The engine's incidents as metrics: ``camwatch_alerts_folded_total{rule}``, ``camwatch_incidents_total``,
and each open incident: ``camwatch_incident_severity`` and ``camwatch_incident_alerts`` (device, incident).

An incident groups the alerts about one device (monitor/alerts.py); alerts past a device's caps are
folded into it instead of sent. Folded alerts never reach the agent's alert path, so they are counted here,
from the engine's incident book, copied under the engine lock at scrape time.

The open incidents are series so that Prometheus can raise one alert per incident, labelled with the id
every member alert carries (``camwatch.incident.id``), and Alertmanager group on it (the per-rule counters
cannot carry it). A series lives while its incident is open (its last alert less than the idle time ago):
at most one per device with an open incident (bounded by the book: 10,000). Devices still learning
(learning mode) are left out: their alerts do not page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.alerts import Incidents, OpenIncident
from monitor.registry import RULES

if TYPE_CHECKING:
    from monitor.engine import Engine

__all__ = ["IncidentCollector"]


class IncidentCollector(Collector):
    """Alerts folded into incidents, by rule, incidents opened, and the open ones."""

    def __init__(
        self,
        incidents: Incidents,
        lock: AbstractContextManager[object] | None = None,
        quiet: Callable[[str], bool] | None = None,
    ) -> None:
        self._incidents = incidents
        self._lock = lock if lock is not None else threading.Lock()
        self._quiet = quiet  # devices whose incidents are not shown (learning mode)

    @classmethod
    def of_engine(
        cls, engine: Engine, lock: AbstractContextManager[object], quiet: Callable[[str], bool] | None = None
    ) -> IncidentCollector:
        return cls(engine.gate.incidents, lock, quiet)

    def describe(self) -> Iterable[Metric]:
        return _families({}, 0, [])

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            folded, opened = dict(self._incidents.folded), self._incidents.opened
            still_open = self._incidents.still_open()
        quiet = self._quiet
        if quiet is not None:
            still_open = [inc for inc in still_open if not quiet(inc.device)]
        return _families(folded, opened, still_open)


def _families(folded: dict[str, int], opened: int, still_open: list[OpenIncident]) -> list[Metric]:
    by_rule = CounterMetricFamily(
        "camwatch_alerts_folded_total",
        "Alerts folded into their device's incident instead of sent (past the per-device caps, or absorbed "
        "by a scan), by rule.",
        labels=("rule",),
    )
    for rule in sorted({*RULES, *folded}):
        by_rule.add_metric([rule], folded.get(rule, 0))
    severity = GaugeMetricFamily(
        "camwatch_incident_severity",
        "Each open incident (its last alert less than the idle time ago): the highest severity (1-5) of the "
        "alerts it sent; incident is the id its alerts carry (camwatch.incident.id).",
        labels=("device", "incident"),
    )
    alerts = GaugeMetricFamily(
        "camwatch_incident_alerts",
        "Each open incident: the alerts it sent so far (those folded into it are not sent).",
        labels=("device", "incident"),
    )
    for inc in still_open:
        severity.add_metric([inc.device, inc.id], inc.severity)
        alerts.add_metric([inc.device, inc.id], inc.alerts)
    return [
        by_rule,
        CounterMetricFamily(
            "camwatch_incidents_total", "Incidents opened (alerts grouped per device).", value=opened
        ),
        severity,
        alerts,
    ]
