"""JSON outputs in files: records as JSON lines (alerts, flows), and JSON documents replaced whole (the
inventory).

- :class:`~agents.sinks.lines.JsonLinesSink` (its own module, light to import) writes synchronously;
  ``camwatch replay`` uses it.
- :class:`JsonLinesFile` is the agent's sink for ``alerts_file`` and ``flows_file``: ``submit`` queues the
  record and a writer task appends it (in a worker thread, flushed per batch), so the event loop never
  waits for the disk. A write that fails (a full disk) keeps the records that did not make it in memory
  (up to :data:`MAX_WAITING`, the oldest dropped beyond) and tries again with backoff: one ERROR line when it
  starts failing, one WARNING when it writes again (``camwatch_output_records_waiting``,
  ``camwatch_output_records_lost_total``). With an outbox channel it is durable: each record is committed to
  the outbox first and deleted once the file has it on disk (fsync), so a record submitted before a crash is
  written after the restart (at least once: a crash between the fsync and the delete writes it twice).
- :class:`JsonDocumentFile` is the sink for ``inventory_file``: each document submitted replaces the file
  atomically (temporary file, fsync, rename), so a reader never sees half a document.

With a :class:`~agents.sinks.rotating.Rotation` (``flows_rotation``) a :class:`JsonLinesFile` writes through a
:class:`~agents.sinks.rotating.RotatingFile`: rotated by size, old files deleted by count and age, and the
oldest files deleted first when the disk is full (``camwatch_output_*`` of the rotation). When even that
leaves no room, the records wait in memory like those of a plain file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.sinks.base import Record, encode_record
from agents.sinks.outbox import OutboxChannel, OutboxError
from agents.sinks.private import FILE_MODE, open_private
from agents.sinks.rotating import RotatingFile, Rotation, RotationCollector

__all__ = ["FileOutputsCollector", "JsonDocumentFile", "JsonLinesFile"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Records written (and, durable, acknowledged in the outbox) per batch.
BATCH: Final = 512
#: A durable file that cannot be written is retried after this long, doubling up to RETRY_MAX_SECONDS.
RETRY_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 30.0
#: Records a file that cannot be written keeps in memory for the next try (without an outbox).
MAX_WAITING: Final = 100_000


class JsonLinesFile:
    """A sink appending each record to ``path`` as one JSON line; durable with an outbox ``channel``.

    The file is opened for appending here (so the agent opens it while it still has its start-up
    privileges; OSError if it cannot be) and never truncated. Records are written in the order submitted.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        channel: OutboxChannel | None = None,
        rotation: Rotation | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.channel = channel
        self.written = 0
        """Records written to the file."""
        self.failed = 0
        """Records lost because the file could not be written (not durable) or stored (durable)."""
        # With a rotation, the rotating file owns the file (rotated, retained, room made on a full disk).
        self.rotating = RotatingFile(path, rotation, name) if rotation is not None else None
        # Unbuffered: a write that fails leaves nothing behind in a buffer to be written later.
        self._fh: IO[bytes] | None = open_private(path) if self.rotating is None else None
        self._pending: list[bytes] = []  # without an outbox: encoded lines waiting for the writer
        self._failing = False  # the last write failed (said once, until a write works again)
        self._torn = False  # a failed write left part of a line: the next write ends it first
        self._error: OSError | None = None  # why the last write failed
        # One worker thread does the file and outbox calls, in submission order, off the event loop.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"camwatch-{name}")
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def durable(self) -> bool:
        """True with an outbox channel."""
        return self.channel is not None

    async def start(self) -> None:
        """Start the writer task (records submitted before are written first)."""
        if self._writer is not None or self._closed:
            raise RuntimeError(f"{self.name}: a sink is started once")
        if self.rotating is not None:  # files left beyond the limits by an earlier run or configuration
            await self._in_worker(self.rotating.retain)
        run = self._deliver_durable if self.channel is not None else self._deliver
        self._writer = asyncio.create_task(run(), name=f"camwatch-{self.name}-writer")

    async def submit(self, record: Record) -> None:
        """Queue the record (durable: commit it to the outbox first, in the worker thread)."""
        if self._closed:
            log.error("%s: record submitted after close, not written", self.name)
            self.failed += 1
            return
        payload = encode_record(record)
        if self.channel is None:
            self._pending.append(payload)
        else:
            try:
                await self._in_worker(self.channel.put, payload, key=_key(record))
            except OutboxError as exc:
                self.failed += 1
                log.error("%s: record not stored in the outbox, it is lost: %s", self.name, exc)
                return
        self._wake.set()

    async def close(self) -> None:
        """Write what is queued (durable: what the file accepts; the rest stays in the outbox) and close
        the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._wake.set()
        try:
            if self._writer is not None:
                await self._writer
            elif self._pending:  # never started: what was submitted is still written
                lines, self._pending = self._pending, []
                await self._in_worker(self._write_lines, lines)
        finally:
            fh, self._fh = self._fh, None
            if fh is not None:
                with contextlib.suppress(OSError):
                    await self._in_worker(fh.close)
            if self.rotating is not None:
                with contextlib.suppress(OSError):
                    await self._in_worker(self.rotating.close)
            await asyncio.to_thread(self._io.shutdown, wait=True)

    def collector(self) -> RotationCollector | None:
        """``camwatch_output_*`` of the rotation; without one, none of its own (see FileOutputsCollector)."""
        return self.rotating.collector() if self.rotating is not None else None

    # ------------------------------------------------------------------ the writer

    @property
    def waiting(self) -> int:
        """Records submitted and not written yet (without an outbox)."""
        return len(self._pending)

    async def _deliver(self) -> None:
        delay = RETRY_SECONDS
        while True:
            # Clear before looking: a submit after the look sets it again.
            self._wake.clear()
            if self._pending:
                # Taken here, on the event loop that appends to it: never shared with the worker.
                lines, self._pending = self._pending, []
                left = await self._in_worker(self._write_lines, lines)
                if not left:
                    delay = RETRY_SECONDS
                    continue
                self._pending = left + self._pending  # in order, before what came meanwhile
                self._bound_waiting()
                if self._closing.is_set():  # no more tries: what is left is lost
                    self._lost(len(self._pending))
                    log.error(
                        "%s: %d records not written to %s at shutdown",
                        self.name,
                        len(self._pending),
                        self.path,
                    )
                    self._pending = []
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if self._closing.is_set():
                return
            await self._wake.wait()

    def _bound_waiting(self) -> None:
        over = len(self._pending) - MAX_WAITING
        if over > 0:
            del self._pending[:over]
            self._lost(over)
            log.error(
                "%s: %d records waiting for %s dropped (the oldest): it cannot be written",
                self.name,
                over,
                self.path,
            )

    def _lost(self, count: int) -> None:
        self.failed += count
        if self.rotating is not None and self._error is not None:  # its dropped counter, by reason
            self.rotating.note_dropped(count, self._error)

    def _write_lines(self, lines: list[bytes]) -> list[bytes]:
        """Write ``lines``; the lines not written when it fails (logged once per failure episode)."""
        try:
            self._write(lines, durable=False)
        except _PartialWrite as exc:
            self._error = exc.cause
            if not self._failing:
                log.error(
                    "%s: cannot write to %s (%s): records wait in memory (up to %d) and are written when it "
                    "works again",
                    self.name,
                    self.path,
                    exc.cause,
                    MAX_WAITING,
                )
            self._failing = True
            return lines[exc.lines :]
        if self._failing:
            self._failing = False
            log.warning("%s: writing to %s again", self.name, self.path)
        return []

    async def _deliver_durable(self) -> None:
        channel = self.channel
        assert channel is not None
        delay = RETRY_SECONDS
        while True:
            self._wake.clear()
            try:
                # From the oldest every time: what was written is deleted, what was not is written again.
                batch = await self._in_worker(channel.peek, BATCH)
                if batch:
                    await self._in_worker(self._write, [item.payload for item in batch], durable=True)
                    await self._in_worker(channel.ack_many, [item.row_id for item in batch])
                    delay = RETRY_SECONDS
                    continue
            except (OSError, OutboxError) as exc:
                log.error(
                    "%s: cannot write to %s (%s); %d records wait in the outbox",
                    self.name,
                    self.path,
                    exc,
                    channel.depth(),
                )
                if self._closing.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if self._closing.is_set():
                return
            await self._wake.wait()

    def _write(self, lines: list[bytes], *, durable: bool) -> None:
        """Append ``lines``; _PartialWrite (an OSError) says how many whole lines made it when it fails."""
        if self.rotating is not None:
            before = self.rotating.written
            try:
                self.rotating.write(lines, fsync=durable)
            except OSError as exc:
                # Whole lines only reach a rotating file (one rotated file after another); a durable sink
                # writes those again: at least once.
                whole = self.rotating.written - before
                self.written += whole
                raise _PartialWrite(whole, exc) from exc
            self.written += len(lines)
            return
        fh = self._fh
        if fh is None:
            raise _PartialWrite(0, OSError(f"{self.path} is closed"))
        # A line cut by an earlier failure is ended first: the records after it start on a line of their own.
        lead = b"\n" if self._torn else b""
        # Whole lines at once (O_APPEND): a reader following the file sees complete records.
        data = memoryview(lead + b"".join(line + b"\n" for line in lines))
        total, written = len(data), 0
        try:
            while written < total:
                done = fh.write(data[written:])
                if not done:
                    raise OSError(f"{self.path}: the write made no progress")
                written += done
        except OSError as exc:
            whole = 0
            if written:  # the lead (if any) is out: what follows it decides whether a line was cut
                whole = _whole_lines(lines, written - len(lead))
                self._torn = written - len(lead) != sum(len(line) + 1 for line in lines[:whole])
            self.written += whole
            raise _PartialWrite(whole, exc) from exc
        self._torn = False
        if durable:  # the outbox deletes them next: they must be on disk first
            os.fsync(fh.fileno())
        self.written += len(lines)

    async def _in_worker(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        job = asyncio.get_running_loop().run_in_executor(self._io, functools.partial(fn, *args, **kwargs))
        # Shielded: a cancelled caller must not drop a queued outbox call (a put would lose the record).
        return await asyncio.shield(job)


class FileOutputsCollector(Collector):
    """``camwatch_output_*``: the JSON-lines files' records waiting to be written and those lost."""

    def __init__(self, files: Sequence[JsonLinesFile]) -> None:
        self._files = files

    def describe(self) -> Iterable[Metric]:
        return _output_families([])

    def collect(self) -> Iterable[Metric]:
        return _output_families(self._files)


def _output_families(files: Sequence[JsonLinesFile]) -> list[Metric]:
    waiting = GaugeMetricFamily(
        "camwatch_output_records_waiting",
        "Records not written to the output file yet (waiting in memory, or in the outbox when durable).",
        labels=("output",),
    )
    lost = CounterMetricFamily(
        "camwatch_output_records_lost",
        "Records that could not be written to the output file and were dropped.",
        labels=("output",),
    )
    for sink in sorted(files, key=lambda f: f.name):
        waiting.add_metric([sink.name], sink.channel.depth() if sink.channel is not None else sink.waiting)
        lost.add_metric([sink.name], sink.failed)
    return [waiting, lost]


class _PartialWrite(OSError):
    """A write that failed after ``lines`` whole lines were written."""

    def __init__(self, lines: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.lines = lines
        self.cause = cause


def _whole_lines(lines: list[bytes], written: int) -> int:
    """How many of ``lines`` (each followed by a newline) fit whole in ``written`` bytes."""
    count = 0
    for line in lines:
        written -= len(line) + 1
        if written < 0:
            break
        count += 1
    return count


class JsonDocumentFile:
    """A sink writing each submitted document to ``path`` as indented JSON, replacing the file atomically.

    The temporary file is created beside ``path``: its directory must be writable by the user the agent
    runs as (the agent checks that at start-up).
    """

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.written = 0
        """Documents written."""
        self.failed = 0
        """Documents that could not be written (logged)."""
        self._lock = asyncio.Lock()  # one write at a time: the newest document is the one left

    async def start(self) -> None:
        """Nothing to start: each document is written when submitted."""

    async def submit(self, record: object) -> None:
        """Write the document now (in a worker thread)."""
        async with self._lock:
            try:
                await asyncio.to_thread(self._replace, record)
            except (OSError, TypeError, ValueError) as exc:
                self.failed += 1
                log.error("%s: cannot write %s: %s", self.name, self.path, exc)

    async def close(self) -> None:
        """Nothing to release (each write closes its file)."""

    def collector(self) -> None:
        """No metrics of its own (a write error is logged)."""
        return None

    def _replace(self, document: object) -> None:
        text = json.dumps(document, indent=1) + "\n"  # as `camwatch replay --inventory` writes it
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            with open(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self.written += 1


def _key(record: Mapping[str, Any]) -> str:
    """What names the record in the outbox's log lines: an alert's ``event.id``."""
    event = record.get("event")
    value = event.get("id") if isinstance(event, Mapping) else None
    return str(value) if value is not None else ""
