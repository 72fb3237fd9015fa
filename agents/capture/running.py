"""A capture source as the agent runs it: its restarts after a failure, the alert that says so, and its
metrics (``camwatch_up``, ``camwatch_capture_*``).

A capture thread that fails (the source raised, or the engine raised on a batch) is not left down: the
agent restarts it after a capped exponential backoff with jitter (:func:`restart_delay`), logs one line
per failure, counts the restart (``camwatch_capture_restarts_total``) and raises ``agent.capture_failed``
once per outage (:func:`failure_alert`). An outage ends once the source has read for
:data:`STABLE_SECONDS` after its last restart: the next failure is a new incident and its backoff starts
from the beginning again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.capture.source import CaptureSource
from monitor.alerts import Alert, incident_id, iso_timestamp
from monitor.rules.agent import CAPTURE_FAILED

__all__ = [
    "RESTART_INITIAL_SECONDS",
    "RESTART_MAX_SECONDS",
    "STABLE_SECONDS",
    "CaptureCollector",
    "Outage",
    "RunningSource",
    "failure_alert",
    "restart_delay",
]

#: The first restart waits about this long; each further failure of the same outage doubles it ...
RESTART_INITIAL_SECONDS: Final = 1.0
#: ... up to this: a source that keeps failing is retried every minute or so, for ever.
RESTART_MAX_SECONDS: Final = 60.0
#: A source that has read this long since its last restart is healthy again.
STABLE_SECONDS: Final = 60.0


def restart_delay(
    failures: int, initial: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with equal jitter: between half and all of
    ``min(maximum, initial * 2**(failures - 1))``. Half of it is fixed, so a source that fails at once
    again is never restarted in a tight loop; the other half spreads sources that failed together."""
    exponent = min(max(failures - 1, 0), 62)
    cap = min(maximum, initial * 2.0**exponent)
    return cap / 2 + rand() * cap / 2


@dataclass(slots=True)
class Outage:
    """One failure incident of a source, from its first failure until it has read for STABLE_SECONDS."""

    since_ns: int  # wall time of the first failure (the incident's identity)
    failures: int = 0


@dataclass(slots=True)
class RunningSource:
    """A source the agent reads in a thread of its own, with what it has read and how it is doing.

    The capture thread updates the counters (under the engine lock, with the batch they count); a scrape
    reads them without a lock: each is one int, and a scrape that sees a batch's packets before its bytes
    is off by one batch for one scrape.
    """

    name: str  # the interface, or the capture file's path
    source: CaptureSource
    live: bool  # a live interface (kernel counters; restarted when it fails) rather than a file
    packets: int = 0
    bytes: int = 0
    finished: bool = False
    """Read to its end: a capture file at its end (then its flows are ended and written)."""
    error: str | None = None
    """The current failure, None while the source reads (or a file ended cleanly)."""
    restarts: int = 0
    """Times the agent restarted it after a failure."""
    outage: Outage | None = None
    running_since: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None

    @property
    def up(self) -> bool:
        """Open and reading: no failure, and not at its end."""
        return self.error is None and not self.finished


def failure_alert(
    st: RunningSource, observer: str, error: str, delay: float | None, now_ns: int | None = None
) -> dict[str, Any]:
    """The ``agent.capture_failed`` alert record of ``st``'s current outage (docs/design.md §4.2), with the
    failure under ``camwatch.capture``. ``delay`` is when it is restarted (None: it is not, a file)."""
    assert st.outage is not None
    now_ns = now_ns if now_ns is not None else time.time_ns()
    kind = "interface" if st.live else "capture file"
    if delay is None:
        then = (
            "it is not restarted (a capture file is not read twice): replay the rest with `camwatch replay`"
        )
    else:
        then = f"the agent restarts it in {delay:.1f} s and keeps retrying, less often, until it reads again"
    message = (
        f"Capture on {kind} {st.name} failed ({error}): {then}. Until then the traffic there is not watched "
        "and raises no alert. Check the agent's log for the cause (an interface gone or down, a camwatch bug "
        "to report) and whether camwatch_capture_up is back to 1."
    )
    alert = Alert(
        rule=CAPTURE_FAILED,
        timestamp_ns=now_ns,
        event_id=incident_id(CAPTURE_FAILED.id, observer, st.name, st.outage.since_ns),
        observer=observer,
        message=message,
        start_ns=st.outage.since_ns,
    )
    record = alert.to_record()
    record["observer"]["ingress"] = {"interface": {"name": st.name}}
    record["camwatch"] = {
        "capture": {
            "interface": st.name,
            "live": st.live,
            "error": error,
            "restarts": st.restarts,
            "restart_in_seconds": None if delay is None else round(delay, 3),
            "since": iso_timestamp(st.outage.since_ns),
            "packets": st.packets,
        }
    }
    return record


class CaptureCollector(Collector):
    """The capture sources' families, read at scrape time (``sources`` may grow until the agent starts)."""

    def __init__(self, sources: Sequence[RunningSource]) -> None:
        self._sources = sources

    def describe(self) -> Iterable[Metric]:
        return _families([])

    def collect(self) -> Iterable[Metric]:
        return _families(list(self._sources))


def _families(sources: Sequence[RunningSource]) -> list[Metric]:
    labels = ("interface",)
    healthy = GaugeMetricFamily(
        "camwatch_up",
        "1 unless a capture source has failed (and is not running again yet).",
        value=float(all(st.error is None for st in sources)),
    )
    up = GaugeMetricFamily(
        "camwatch_capture_up", "1 if the capture source is open and reading, else 0.", labels=labels
    )
    finished = GaugeMetricFamily(
        "camwatch_capture_finished",
        "1 once the source was read to its end (a capture file), else 0.",
        labels=labels,
    )
    restarts = CounterMetricFamily(
        "camwatch_capture_restarts_total",
        "Times the agent restarted the capture source after it failed.",
        labels=labels,
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
    for st in sorted(sources, key=lambda s: s.name):
        up.add_metric([st.name], float(st.up))
        finished.add_metric([st.name], float(st.finished))
        restarts.add_metric([st.name], st.restarts)
        packets.add_metric([st.name], st.packets)
        octets.add_metric([st.name], st.bytes)
        if st.live:  # a file has no kernel counters
            stats = st.source.stats()
            kernel_packets.add_metric([st.name], stats.kernel_packets)
            kernel_drops.add_metric([st.name], stats.kernel_drops)
    return [healthy, up, finished, restarts, packets, octets, kernel_packets, kernel_drops]
