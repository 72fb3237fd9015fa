"""The stream probe's metrics (``camwatch_stream_*``): each camera as of its last probe, at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["STREAM_PROBLEMS", "StreamCollector", "StreamStats"]

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


class StreamCollector(Collector):
    """The per-camera families from ``stats()`` (by camera name), called at each scrape.

    ``stats`` runs in the metrics server's thread: the prober builds a new mapping for each call from
    values it replaces, never changes in place.
    """

    def __init__(self, stats: Callable[[], Mapping[str, StreamStats]]) -> None:
        self._stats = stats

    def describe(self) -> Iterable[Metric]:
        return _families({})

    def collect(self) -> Iterable[Metric]:
        return _families(self._stats())


def _families(streams: Mapping[str, StreamStats]) -> list[Metric]:
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
    return [up, fps, bitrate, keyframes, info, problem, last, probes, duration]
