"""The engine's incidents as metrics: ``camwatch_alerts_folded_total{rule}`` and ``camwatch_incidents_total``.

An incident groups the alerts about one device (monitor/alerts.py); alerts past a device's caps are
folded into it instead of sent. Folded alerts never reach the agent's alert path, so they are counted here,
from the engine's incident book, copied under the engine lock at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.alerts import Incidents
from monitor.registry import RULES

if TYPE_CHECKING:
    from monitor.engine import Engine

__all__ = ["IncidentCollector"]


class IncidentCollector(Collector):
    """Alerts folded into incidents, by rule, and incidents opened."""

    def __init__(self, incidents: Incidents, lock: AbstractContextManager[object] | None = None) -> None:
        self._incidents = incidents
        self._lock = lock if lock is not None else threading.Lock()

    @classmethod
    def of_engine(cls, engine: Engine, lock: AbstractContextManager[object]) -> IncidentCollector:
        return cls(engine.gate.incidents, lock)

    def describe(self) -> Iterable[Metric]:
        return _families({}, 0)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            folded, opened = dict(self._incidents.folded), self._incidents.opened
        return _families(folded, opened)


def _families(folded: dict[str, int], opened: int) -> list[Metric]:
    by_rule = CounterMetricFamily(
        "camwatch_alerts_folded_total",
        "Alerts folded into their device's incident instead of sent (past the per-device caps, or absorbed "
        "by a scan), by rule.",
        labels=("rule",),
    )
    for rule in sorted({*RULES, *folded}):
        by_rule.add_metric([rule], folded.get(rule, 0))
    return [
        by_rule,
        CounterMetricFamily(
            "camwatch_incidents_total", "Incidents opened (alerts grouped per device).", value=opened
        ),
    ]
