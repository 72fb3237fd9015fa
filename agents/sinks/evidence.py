"""Evidence pcaps: the packets an alert carries (monitor/evidence.py), written as a pcapng file named in the
alert's ``file.path``, within size and retention bounds.

The engine is sans-I/O: it attaches the packets to the alert. On the agent's side :meth:`EvidenceSink.attach`
(called where the capture thread turns alerts into records) names the file and sets ``file.path`` in the
record; the sink is the first of the alert sinks, so :meth:`EvidenceSink.submit` writes the file (in a
worker thread: the event loop never waits for the disk) before MQTT or the alerts file see the record. A
file that cannot be written takes ``file.path`` out of the record again (and is counted): an alert never
names a file that is not there.

Files: ``<dir>/<UTC time>-<rule.id>-<event.id>.pcapng``, mode 0640, written to a temporary name and
renamed (a reader never sees half a file). One section; an interface per link type; each packet has a
comment saying why it is there (the flow's first packets, recent packets, the one the alert was raised
on) and the section names the alert. Credentials are blanked before the packets leave the engine.

Bounds: ``max_file_bytes`` per file (packets beyond it are left out, the trigger kept), ``max_bytes`` and
``max_files`` in the directory, ``max_age`` per file: the oldest files go first. Pending evidence waiting for
the event loop is bounded too (``MAX_PENDING``). Metrics (``camwatch_evidence_*``): files and bytes
written, deleted (by reason), write errors, dropped, what the directory holds, and the engine's packet
rings (recorded, held, forgotten).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.sinks.base import Record
from monitor.evidence import Evidence, Packet
from monitor.pcapwrite import pcapng_block, pcapng_idb, pcapng_option, pcapng_shb

__all__ = [
    "EvidenceCollector",
    "EvidenceSink",
    "RingReading",
    "pcapng_evidence",
]

log = logging.getLogger(__name__)

MAX_PENDING: Final = 1024
EXPIRE_SECONDS: Final = 600.0
DEFAULT_MAX_FILE_BYTES: Final = 1 << 20
_EPB: Final = 6
_OPT_COMMENT: Final = 1
_NAME_RE: Final = re.compile(r"^\d{8}T\d{6}-[a-z0-9_.]+-[0-9a-f]{32}\.pcapng$")
_SAFE_RULE_RE: Final = re.compile(r"[^a-z0-9_.]")


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def pcapng_evidence(evidence: Evidence, comment: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The evidence as a pcapng file (nanosecond timestamps, one interface per link type, a comment per
    packet); packets that would take it past ``max_bytes`` are left out, the last one (the trigger) kept."""
    packets = list(evidence.packets)
    budget = max_bytes - 512 - len(comment)
    size = sum(len(p.frame) + 64 for p in packets)
    while packets and size > budget:
        dropped = packets.pop(-2 if len(packets) > 1 else 0)
        size -= len(dropped.frame) + 64
    linktypes: dict[int, int] = {}
    for p in packets:
        linktypes.setdefault(p.linktype, len(linktypes))
    parts = [pcapng_shb(options=[pcapng_option(_OPT_COMMENT, comment.encode("utf-8"))])]
    parts += [pcapng_idb(linktype, tsresol=9) for linktype in linktypes]
    parts += [_epb(linktypes[p.linktype], p) for p in packets]
    return b"".join(parts)


def _epb(interface: int, packet: Packet) -> bytes:
    ts = packet.ts_ns
    head = struct.pack("<IIIII", interface, ts >> 32, ts & 0xFFFFFFFF, len(packet.frame), packet.wirelen)
    options = pcapng_option(_OPT_COMMENT, packet.note.encode("utf-8")) + pcapng_option(0, b"")
    return pcapng_block(_EPB, head + _pad4(packet.frame) + options)


@dataclass(slots=True)
class EvidenceCounters:
    files_written: int = 0
    bytes_written: int = 0
    write_errors: int = 0
    dropped: int = 0  # evidence not written: too much waiting for the event loop
    deleted: dict[str, int] = field(default_factory=lambda: {"size": 0, "age": 0, "count": 0})
    files: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class RingReading:
    """The engine's packet rings (``monitor.evidence.EvidenceStats``), copied under the engine lock."""

    packets: int = 0
    bytes: int = 0
    rings: int = 0
    forgotten: int = 0


class EvidenceSink:
    """Writes each alert's evidence as a pcapng file and names it in the alert (the first alert sink)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 256 << 20,
        max_files: int = 10_000,
        max_age_s: float = 30 * 86400.0,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        rings: Callable[[], RingReading] | None = None,
        name: str = "evidence",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_age_s = max_age_s
        self.max_file_bytes = max_file_bytes
        self._rings = rings
        self._clock = clock
        self.counters = EvidenceCounters()
        self._lock = threading.Lock()  # attach() runs on a capture thread, submit() on the loop
        self._pending: dict[str, Evidence] = {}
        # What the directory holds, oldest first: (name, size, mtime).
        self._files: list[tuple[str, int, float]] = []
        self._expiry: asyncio.Task[None] | None = None
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._scan()

    # ---------------------------------------------------------------- the capture thread

    def attach(self, record: MutableMapping[str, Any], evidence: Evidence | None) -> None:
        """Name the file of this alert's evidence in ``record`` (``file.path``) and keep the evidence for
        :meth:`submit`. Called with the engine lock held: no I/O here."""
        if evidence is None or not evidence.packets:
            return
        path = self.directory / self._file_name(record)
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self.counters.dropped += 1
                return
            self._pending[str(path)] = evidence
        file = record.setdefault("file", {})
        if isinstance(file, dict):
            file["path"] = str(path)

    @staticmethod
    def _file_name(record: Mapping[str, Any]) -> str:
        stamp = str(record.get("@timestamp", ""))
        digits = re.sub(r"[^0-9]", "", stamp)[:14].ljust(14, "0")
        rule = _SAFE_RULE_RE.sub("_", str(record.get("rule", {}).get("id", "alert")).lower())[:64]
        event_id = re.sub(r"[^0-9a-f]", "", str(record.get("event", {}).get("id", "")).lower())
        event_id = event_id[:32].ljust(32, "0")
        return f"{digits[:8]}T{digits[8:14]}-{rule}-{event_id}.pcapng"

    # ---------------------------------------------------------------- the Sink protocol

    async def start(self) -> None:
        """Start the task that applies the age bound while no alert comes."""
        if self._expiry is None:
            self._expiry = asyncio.create_task(
                self._expire_periodically(), name=f"camwatch-{self.name}-expiry"
            )

    async def _expire_periodically(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_SECONDS)
            await asyncio.to_thread(self.expire)

    async def submit(self, record: Record) -> None:
        """Write the file the record names, if this sink named it; never raises."""
        file = record.get("file")
        path = file.get("path") if isinstance(file, Mapping) else None
        if not isinstance(path, str):
            return
        with self._lock:
            evidence = self._pending.pop(path, None)
        if evidence is None:
            return  # named by someone else (the stream probe's snapshot)
        comment = f"camwatch {record.get('rule', {}).get('id')} {record.get('event', {}).get('id')}: " + str(
            record.get("message", "")
        )
        ok = await asyncio.to_thread(self._write, Path(path), evidence, comment[:2000])
        if not ok and isinstance(file, MutableMapping):
            # An alert never names a file that is not there.
            file.pop("path", None)
            if not file and isinstance(record, MutableMapping):
                record.pop("file", None)

    async def close(self) -> None:
        """Stop the expiry task; evidence still waiting is dropped (its alerts went out already)."""
        task, self._expiry = self._expiry, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with self._lock:
            self._pending.clear()

    def collector(self) -> Collector:
        return EvidenceCollector(self)

    # ---------------------------------------------------------------- the worker thread

    def _write(self, path: Path, evidence: Evidence, comment: str) -> bool:
        data = pcapng_evidence(evidence, comment, self.max_file_bytes)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.error("evidence: cannot write %s: %s", path, exc)
            with self._lock:
                self.counters.write_errors += 1
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        with self._lock:
            c = self.counters
            c.files_written += 1
            c.bytes_written += len(data)
            self._files = [f for f in self._files if f[0] != path.name]
            self._files.append((path.name, len(data), self._clock()))
            self._prune()
        return True

    def _scan(self) -> None:
        """What an earlier run left in the directory (only files of this sink's naming)."""
        found: list[tuple[str, int, float]] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            log.error("evidence: cannot read %s: %s", self.directory, exc)
            entries = []
        for entry in entries:
            if _NAME_RE.match(entry.name) and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found.append((entry.name, st.st_size, st.st_mtime))
        found.sort(key=lambda f: (f[2], f[0]))
        with self._lock:
            self._files = found
            self._prune()

    def _prune(self) -> None:
        """Delete the oldest files past the bounds (called with the lock held)."""
        c = self.counters
        now = self._clock()
        files = self._files
        total = sum(f[1] for f in files)
        while files:
            name, size, mtime = files[0]
            if now - mtime > self.max_age_s:
                reason = "age"
            elif total > self.max_bytes:
                reason = "size"
            elif len(files) > self.max_files:
                reason = "count"
            else:
                break
            files.pop(0)
            total -= size
            try:
                (self.directory / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("evidence: cannot delete %s: %s", name, exc)
            c.deleted[reason] += 1
        c.files, c.bytes = len(files), total

    def expire(self) -> None:
        """Apply the age bound now (the agent calls it when it saves state)."""
        with self._lock:
            self._prune()

    def reading(self) -> tuple[EvidenceCounters, RingReading]:
        """A copy of the counters, and the engine's rings."""
        with self._lock:
            c = self.counters
            copy = EvidenceCounters(
                c.files_written, c.bytes_written, c.write_errors, c.dropped, dict(c.deleted), c.files, c.bytes
            )
        return copy, self._rings() if self._rings is not None else RingReading()


class EvidenceCollector(Collector):
    """``camwatch_evidence_*``: the evidence sink's files and the engine's packet rings."""

    def __init__(self, sink: EvidenceSink) -> None:
        self._sink = sink

    def describe(self) -> Iterable[Metric]:
        return _families(EvidenceCounters(), RingReading())

    def collect(self) -> Iterable[Metric]:
        counters, rings = self._sink.reading()
        return _families(counters, rings)


def _families(c: EvidenceCounters, rings: RingReading) -> list[Metric]:
    deleted = CounterMetricFamily(
        "camwatch_evidence_files_deleted_total",
        "Evidence files deleted to stay within bounds.",
        labels=("reason",),
    )
    for reason in ("size", "age", "count"):
        deleted.add_metric([reason], c.deleted.get(reason, 0))
    return [
        CounterMetricFamily(
            "camwatch_evidence_files_written_total", "Evidence pcapng files written.", value=c.files_written
        ),
        CounterMetricFamily(
            "camwatch_evidence_written_bytes_total", "Bytes of evidence files written.", value=c.bytes_written
        ),
        CounterMetricFamily(
            "camwatch_evidence_write_errors_total",
            "Evidence files that could not be written (their alerts name no file).",
            value=c.write_errors,
        ),
        CounterMetricFamily(
            "camwatch_evidence_dropped_total",
            "Alerts whose evidence was not written: too many were waiting.",
            value=c.dropped,
        ),
        deleted,
        GaugeMetricFamily(
            "camwatch_evidence_files", "Evidence files in the evidence directory.", value=c.files
        ),
        GaugeMetricFamily(
            "camwatch_evidence_bytes", "Bytes of the evidence files in the evidence directory.", value=c.bytes
        ),
        CounterMetricFamily(
            "camwatch_evidence_packets_recorded_total",
            "Analysed packets the engine kept in its per-flow evidence rings.",
            value=rings.packets,
        ),
        GaugeMetricFamily(
            "camwatch_evidence_ring_bytes", "Bytes the engine's evidence rings hold now.", value=rings.bytes
        ),
        GaugeMetricFamily("camwatch_evidence_rings", "Flows with an evidence ring now.", value=rings.rings),
        CounterMetricFamily(
            "camwatch_evidence_rings_forgotten_total",
            "Evidence rings forgotten to stay within the engine's bounds (oldest first).",
            value=rings.forgotten,
        ),
    ]
