"""A capture source as the agent runs it, and its metrics (``camwatch_up``, ``camwatch_capture_*``)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.capture.source import CaptureSource

__all__ = ["CaptureCollector", "RunningSource"]


@dataclass(slots=True)
class RunningSource:
    """A source the agent reads in a thread of its own, with what it has read and how it ended.

    The capture thread updates the counters (under the engine lock, with the batch they count); a scrape
    reads them without a lock: each is one int, and a scrape that sees a batch's packets before its bytes
    is off by one batch for one scrape.
    """

    name: str  # the interface, or the capture file's path
    source: CaptureSource
    live: bool  # a live interface (kernel counters; ending is a failure) rather than a file
    packets: int = 0
    bytes: int = 0
    finished: bool = False
    error: str | None = None
    thread: threading.Thread | None = None

    @property
    def up(self) -> bool:
        """Open and reading: no error, and a live source has not ended (a file that ended is fine)."""
        return self.error is None and not (self.finished and self.live)


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
        "1 if every capture source is open and reading, else 0.",
        value=float(all(st.error is None for st in sources)),
    )
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
    for st in sorted(sources, key=lambda s: s.name):
        up.add_metric([st.name], float(st.up))
        packets.add_metric([st.name], st.packets)
        octets.add_metric([st.name], st.bytes)
        if st.live:  # a file has no kernel counters
            stats = st.source.stats()
            kernel_packets.add_metric([st.name], stats.kernel_packets)
            kernel_drops.add_metric([st.name], stats.kernel_drops)
    return [healthy, up, packets, octets, kernel_packets, kernel_drops]
