"""A JSON-lines file with size-based rotation and retention, that keeps writing when the disk fills up.

:class:`RotatingFile` is what a file sink (agents/sinks/jsonl.py, ``flows_file``) writes through, from its
one worker thread:

- **rotation**: before a write would take the file past ``max_size``, the file is renamed to
  ``<stem>.<UTC time>Z<suffix>`` (``flows.jsonl`` -> ``flows.20260202T100000Z.jsonl``; ``-01``, ``-02``
  after the time when two rotations fall in one second) and a new file is started. A rename keeps the
  inode, so a shipper following the file (Filebeat, Vector, Fluent Bit) reads it to the end first;
- **retention**: after each rotation (and at start-up) rotated files beyond ``max_files``, or rotated
  longer ago than ``max_age``, are deleted, oldest first;
- **a full disk** (ENOSPC, EDQUOT): the partial write is cut off (no half line is left in the file), the
  oldest rotated file is deleted and the write tried again, until it fits; with no rotated file left, the
  current file itself is rotated away and deleted (the oldest records go first). Only when nothing of the
  output is left to delete are the records of that write dropped. Each deletion is a WARNING log line and
  ``camwatch_output_files_deleted_total{reason="disk_full"}``; dropped records are an ERROR line (at most
  one a minute) and ``camwatch_output_records_dropped_total``. The agent never stops for it.

Rotated files are created by the user the agent runs as (after the privilege drop): the file's directory must
be writable by it (the agent checks at start-up).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.config import Rotation
from agents.sinks.private import open_private

__all__ = ["DiskFull", "RotatingFile", "Rotation", "RotationCollector"]

log = logging.getLogger(__name__)

#: errno values that mean "no room": the file system is full, or the user's quota is.
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
#: A dropped-records ERROR line at most this often (a full disk would otherwise log every batch).
_DROP_LOG_SECONDS: Final = 60.0
_STAMP: Final = "%Y%m%dT%H%M%SZ"


class DiskFull(OSError):
    """No room for a write, and no older file of the output left to delete."""


class RotatingFile:
    """An append-only file of lines, rotated by size, with retention. Not thread-safe: one writer thread;
    the counters may be read from any thread (a scrape)."""

    def __init__(self, path: Path, rotation: Rotation, name: str = "file") -> None:
        self.path = path
        self.rotation = rotation
        self.name = name
        self.rotations = 0
        self.deleted_retention = 0
        self.deleted_disk_full = 0
        self.dropped_disk_full = 0
        self.dropped_error = 0
        self.written = 0
        self._rotated_bytes = 0
        self._last_drop_log = -_DROP_LOG_SECONDS
        self._lock = threading.Lock()  # guards _rotated_bytes against a scrape reading it
        # Opened now (the agent may still be privileged); unbuffered: a failed write leaves nothing behind.
        self._fh: IO[bytes] | None = open_private(path)  # held until close; 0640
        self.size = os.fstat(self._fh.fileno()).st_size
        stem, suffix = _split(path.name)
        self._pattern = re.compile(
            re.escape(stem) + r"\.(\d{8}T\d{6}Z)(?:-(\d+))?" + re.escape(suffix) + r"\Z"
        )
        self._stem, self._suffix = stem, suffix
        self._recount()

    # ------------------------------------------------------------------ writing

    def write(self, lines: Sequence[bytes], *, fsync: bool = False) -> None:
        """Append the lines (each without its newline), rotating whenever the next one would not fit and
        deleting the output's oldest files while the disk is full. :class:`DiskFull` when nothing is left to
        delete; any other OSError as it comes. Either way the lines not written are not in the file (whole
        lines only): the caller keeps them (durable) or drops them (:meth:`note_dropped`); ``written`` counts
        those that were."""
        if self._fh is None:
            raise OSError(f"{self.path} is closed")
        limit = self.rotation.max_size
        start = 0
        while start < len(lines):
            if self.size > 0 and self.size + len(lines[start]) + 1 > limit:
                self._rotate_and_retain()
            # As many lines as fit in the file (at least one: a line longer than max_size gets a file alone).
            room = limit - self.size
            end, used = start, 0
            while end < len(lines) and (end == start or used + len(lines[end]) + 1 <= room):
                used += len(lines[end]) + 1
                end += 1
            self._write_chunk(b"".join(line + b"\n" for line in lines[start:end]), fsync)
            self.written += end - start
            start = end

    def _write_chunk(self, data: bytes, fsync: bool) -> None:
        while True:
            try:
                self._append(data, fsync)
                return
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise
                if not self._free_space(exc):
                    raise DiskFull(exc.errno, exc.strerror) from exc

    def _append(self, data: bytes, fsync: bool) -> None:
        fh = self._fh
        assert fh is not None
        start = self.size
        view = memoryview(data)
        try:
            while view:
                done = fh.write(view)
                if not done:
                    raise OSError(errno.EIO, f"{self.path}: the write made no progress")
                view = view[done:]
                self.size += done
            if fsync:
                os.fsync(fh.fileno())
        except OSError:
            # Cut off what part of the batch reached the file: a reader must never see half a line.
            with contextlib.suppress(OSError):
                os.ftruncate(fh.fileno(), start)
            self.size = start
            raise

    def _free_space(self, exc: OSError) -> bool:
        """Delete the oldest file of this output to make room; False when there is nothing left to delete."""
        rotated = self.rotated_files()
        if not rotated and self.size > 0:
            # Nothing rotated left: the current file holds the oldest records that remain.
            try:
                self._rotate()
            except OSError as rename_exc:
                log.error("%s: cannot rotate %s to make room: %s", self.name, self.path, rename_exc)
                return False
            rotated = self.rotated_files()
        if not rotated:
            return False
        victim = rotated[0]
        size = _size(victim)
        try:
            victim.unlink()
        except FileNotFoundError:
            return True  # someone else removed it: try again
        except OSError as unlink_exc:
            log.error("%s: disk full and cannot delete %s: %s", self.name, victim, unlink_exc)
            return False
        self.deleted_disk_full += 1
        self._forget(size)
        log.warning(
            "%s: disk full writing %s (%s): deleted the oldest flow file %s (%s) to make room",
            self.name,
            self.path,
            exc.strerror or exc,
            victim.name,
            _human(size),
        )
        return True

    def note_dropped(self, count: int, exc: OSError) -> None:
        """``count`` records of a failed write are lost (a sink without an outbox): count and say so, at
        most once a minute."""
        full = isinstance(exc, DiskFull)
        if full:
            self.dropped_disk_full += count
        else:
            self.dropped_error += count
        now = time.monotonic()
        if now - self._last_drop_log < _DROP_LOG_SECONDS:
            return
        self._last_drop_log = now
        if full:
            log.error(
                "%s: disk full and no older file of this output left to delete: %d records dropped "
                "(%d in all); free space on %s",
                self.name,
                count,
                self.dropped_disk_full,
                self.path.parent,
            )
        else:
            log.error("%s: cannot write to %s: %s: %d records dropped", self.name, self.path, exc, count)

    # ------------------------------------------------------------------ rotation and retention

    def rotated_files(self) -> list[Path]:
        """This output's rotated files, oldest first."""
        found: list[tuple[str, int, Path]] = []
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return []
        for entry in entries:
            m = self._pattern.match(entry.name)
            if m is not None:
                found.append((m.group(1), int(m.group(2) or 0), Path(entry.path)))
        found.sort(key=lambda item: (item[0], item[1]))
        return [path for _, _, path in found]

    def retain(self, now: float | None = None) -> None:
        """Delete rotated files beyond ``max_files`` or older than ``max_age`` (also at start-up)."""
        rotated = self.rotated_files()
        doomed = rotated[: max(0, len(rotated) - self.rotation.max_files)]
        if self.rotation.max_age is not None:
            horizon = (time.time() if now is None else now) - self.rotation.max_age
            for path in rotated[len(doomed) :]:
                if self._rotated_at(path) < horizon:
                    doomed.append(path)
        for path in doomed:
            size = _size(path)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("%s: cannot delete the old file %s: %s", self.name, path, exc)
                continue
            self.deleted_retention += 1
            self._forget(size)
            log.info("%s: deleted %s (%s): beyond the retention limit", self.name, path.name, _human(size))
        self._recount()

    def _rotate_and_retain(self) -> None:
        try:
            self._rotate()
        except OSError as exc:
            # Keep writing to the current file: losing records is worse than a file past its size.
            log.error("%s: cannot rotate %s: %s (writing on)", self.name, self.path, exc)
            return
        self.retain()

    def _rotate(self) -> None:
        """Rename the current file aside and start a new one."""
        fh = self._fh
        assert fh is not None
        target = self._rotated_name(time.time())
        os.rename(self.path, target)
        try:
            new = open_private(self.path)  # held until the next rotation
        except OSError:
            os.rename(target, self.path)  # put it back: the records go on in the same file
            raise
        with contextlib.suppress(OSError):
            fh.close()
        self._fh = new
        with self._lock:
            self._rotated_bytes += self.size
        self.size = 0
        self.rotations += 1
        log.info("%s: rotated %s to %s", self.name, self.path.name, target.name)

    def _rotated_name(self, now: float) -> Path:
        stamp = datetime.fromtimestamp(now, UTC).strftime(_STAMP)
        # Within one second the number only grows (a deleted "-00" must not be reused after a "-01": the
        # names are the files' order).
        taken = [
            int(m.group(2) or 0)
            for path in self.rotated_files()
            if (m := self._pattern.match(path.name)) is not None and m.group(1) == stamp
        ]
        n = max(taken) + 1 if taken else 0
        extra = f"-{n:02d}" if n else ""
        return self.path.with_name(f"{self._stem}.{stamp}{extra}{self._suffix}")

    def _rotated_at(self, path: Path) -> float:
        m = self._pattern.match(path.name)
        if m is None:
            return time.time()
        return datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC).timestamp()

    def _forget(self, size: int) -> None:
        with self._lock:
            self._rotated_bytes = max(0, self._rotated_bytes - size)

    def _recount(self) -> None:
        total = sum(_size(path) for path in self.rotated_files())
        with self._lock:
            self._rotated_bytes = total

    def disk_bytes(self) -> int:
        """Bytes this output holds on disk: the current file and the rotated ones."""
        with self._lock:
            return self.size + self._rotated_bytes

    def close(self) -> None:
        """Close the current file (idempotent)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def collector(self) -> RotationCollector:
        """``camwatch_output_*`` for this output."""
        return RotationCollector([self])


class RotationCollector(Collector):
    """``camwatch_output_*``: rotations, deletions, dropped records and disk use of rotating outputs."""

    def __init__(self, files: Iterable[RotatingFile]) -> None:
        self._files = list(files)

    def describe(self) -> Iterable[Metric]:
        return _families([])

    def collect(self) -> Iterable[Metric]:
        return _families(self._files)


def _families(files: Sequence[RotatingFile]) -> list[Metric]:
    written = CounterMetricFamily(
        "camwatch_output_records_written_total", "Records written to a file output.", labels=("output",)
    )
    rotations = CounterMetricFamily(
        "camwatch_output_file_rotations_total", "Times a file output was rotated.", labels=("output",)
    )
    deleted = CounterMetricFamily(
        "camwatch_output_files_deleted_total",
        "Rotated files deleted: beyond the retention limits (retention), or the oldest to make room on a "
        "full disk (disk_full).",
        labels=("output", "reason"),
    )
    dropped = CounterMetricFamily(
        "camwatch_output_records_dropped_total",
        "Records a file output could not write: the disk was full with no older file of the output left "
        "to delete (disk_full), or another write error (error).",
        labels=("output", "reason"),
    )
    size = GaugeMetricFamily(
        "camwatch_output_disk_bytes",
        "Bytes a file output holds on disk (the current file and its rotated files).",
        labels=("output",),
        unit="bytes",
    )
    for f in files:
        written.add_metric([f.name], f.written)
        rotations.add_metric([f.name], f.rotations)
        deleted.add_metric([f.name, "retention"], f.deleted_retention)
        deleted.add_metric([f.name, "disk_full"], f.deleted_disk_full)
        dropped.add_metric([f.name, "disk_full"], f.dropped_disk_full)
        dropped.add_metric([f.name, "error"], f.dropped_error)
        size.add_metric([f.name], f.disk_bytes())
    return [written, rotations, deleted, dropped, size]


def _split(name: str) -> tuple[str, str]:
    """``flows.jsonl`` -> (``flows``, ``.jsonl``): the time goes before the suffix, so a ``*.jsonl`` glob
    still finds rotated files."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + suffix


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
