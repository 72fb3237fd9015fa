"""The outbox: a durable, bounded SQLite queue between the agent and its durable sinks (docs/design.md §4.6).

Any sink that must not lose a record uses it the same way: it commits the record to its *channel* (WAL,
``synchronous=FULL``: the commit returns after fsync) before anything tries to deliver it, and deletes it
only once delivery is acknowledged (the broker's PUBACK, a file's fsync), so neither an outage nor a killed
agent loses it. Delivery is therefore at-least-once: consumers drop duplicates (alerts by ``event.id``).

One file (``<state_dir>/outbox.sqlite3``) holds every channel; a channel is one sink's queue, named after the
sink (``mqtt``), with its own bounds, so a flood on one sink never pushes out another's records.

Bounds and what gives when they are hit (per channel):
- ``max_records`` and ``max_bytes`` (sum of payload sizes) bound the channel. When a new record does not fit,
  the OLDEST records are dropped to make room: during a long outage the newest alerts describe what is
  happening now, which is what the person on call needs first. Every drop is counted (``dropped``) and
  logged at WARNING (the first one, then once per ``drop_log_every`` drops, and a summary on close).
- ``near_full`` turns true at 80 % of either bound; each transition into that state logs a WARNING.

Failure policy (the agent never crashes because of its outbox):
- a file SQLite cannot read (not a database, failed integrity check, an unknown schema version, or tables
  that are not the outbox's: another program's database, a damaged upgrade) is moved aside as
  ``outbox.sqlite3.corrupt-<unix time>`` (with its ``-wal``), logged at ERROR, and a fresh outbox is created;
- an outbox that cannot be written at all (read-only or full file system, permissions) falls back to an
  in-memory database with an ERROR log: records are still delivered, but not durable (``durable`` is false,
  ``camwatch_spool_durable`` 0). Every :data:`FILE_RETRY_SECONDS` (at the next operation after that) the
  file is tried again; once it works, the records waiting in memory are moved into it, the ones left on disk
  are delivered again too (``epoch`` changes: a sink walking the channel starts from its oldest record), and a
  WARNING says the outbox is durable again.

Thread safety: every method takes the outbox's lock, so a sink may run them in a worker thread (the MQTT
publisher does: a put with its fsync took 0.2-0.5 ms at the median and up to 7 ms on the development VM's
disk, and flash storage on edge gateways can be much slower; that must not stall the event loop) while a
metrics scrape reads ``depth()``, ``bytes()``, ``dropped`` and ``near_full``, which are kept in memory and
never touch the database.

Schema history: version 1 was the MQTT alert spool (``alerts.sqlite3``, table ``alerts``); :func:`adopt`
renames such a file and :meth:`Outbox.open` upgrades it in place, its rows becoming the ``mqtt`` channel's.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.sinks.base import SinkError

__all__ = ["Outbox", "OutboxChannel", "OutboxCollector", "OutboxError", "OutboxItem", "adopt"]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2
NEAR_FULL_RATIO: Final = 0.8
DEFAULT_DROP_LOG_EVERY: Final = 100
#: The channel a version 1 spool's rows belong to.
LEGACY_CHANNEL: Final = "mqtt"
# Ids of an outbox that started in memory begin here, far above what any file reaches (one per record).
_MEMORY_FIRST_ID = 1 << 40
#: While in memory, the file is tried again this often.
FILE_RETRY_SECONDS: Final = 30.0
_BUSY_TIMEOUT_S = 5.0
# The WAL is reused after each checkpoint; this caps what it keeps on disk after a burst.
_JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
# SQLite primary result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_T = TypeVar("_T")

# AUTOINCREMENT (not a plain rowid alias): ids must never be reused, even after the table was emptied,
# because a sink walks its channel with an "after this id" cursor and would skip a reused id.
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    route TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
""",
    "CREATE INDEX IF NOT EXISTS outbox_by_sink ON outbox (sink, id)",
)
# The tables (and their columns, in order) of each schema version: anything else is not an outbox.
_TABLES: Final[dict[int, dict[str, tuple[str, ...]]]] = {
    0: {},
    1: {"alerts": ("id", "event_id", "topic", "payload", "created", "attempts")},
    SCHEMA_VERSION: {"outbox": ("id", "sink", "key", "route", "payload", "created", "attempts")},
}
# Version 1 -> 2: the alert spool's table becomes the outbox, its rows the MQTT channel's. ALTER TABLE
# RENAME also renames the table's sqlite_sequence entry, so ids keep increasing.
_UPGRADE_1 = (
    "ALTER TABLE alerts RENAME TO outbox",
    "ALTER TABLE outbox RENAME COLUMN event_id TO key",
    "ALTER TABLE outbox RENAME COLUMN topic TO route",
    f"ALTER TABLE outbox ADD COLUMN sink TEXT NOT NULL DEFAULT '{LEGACY_CHANNEL}'",
)


class OutboxError(SinkError):
    """The outbox could not store or read records, even after recovery."""


class _Unusable(Exception):
    """The outbox file opened but is not ours or not sound (internal)."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One stored record, as :meth:`OutboxChannel.peek` returns it."""

    row_id: int
    key: str  # what identifies the record to its consumer (an alert's event.id)
    route: str  # where the sink sends it (an MQTT topic); empty for a sink with one destination
    payload: bytes
    created: float
    attempts: int


def adopt(old: Path, new: Path) -> bool:
    """Rename database ``old`` (with its ``-wal``, ``-shm``) to ``new`` unless ``new`` exists; True if done.

    For the upgrade from the alert spool (``alerts.sqlite3``): the alerts it holds must not be forgotten.
    """
    if new.exists() or not old.exists():
        return False
    # The database with its WAL, or nothing: a database without its WAL would open without the commits
    # the WAL holds, so a failure puts back what was renamed.
    moved: list[tuple[str, str]] = []
    try:
        for suffix in ("", "-wal", "-shm"):
            source, target = f"{old}{suffix}", f"{new}{suffix}"
            if suffix and not os.path.exists(source):
                continue
            os.replace(source, target)
            moved.append((source, target))
    except OSError as exc:
        for source, target in reversed(moved):
            with contextlib.suppress(OSError):
                os.replace(target, source)
        log.error(
            "outbox: cannot rename %s to %s (%s): what it holds waits there, undelivered", old, new, exc
        )
        return False
    log.info("outbox: %s is now %s", old, new)
    return True


class Outbox:
    """The durable store of every channel: :meth:`open` it, then get a sink's queue from :meth:`channel`."""

    def __init__(self, path: Path, drop_log_every: int = DEFAULT_DROP_LOG_EVERY) -> None:
        self.path = path
        self.drop_log_every = max(1, drop_log_every)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._durable = False
        self._last_id = 0
        self._channels: dict[str, OutboxChannel] = {}
        self._retry_at = 0.0  # in memory: when to try the file again (monotonic)
        self.epoch = 0
        """Changes when records that a sink may have walked past come back (the file usable again)."""

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, drop_log_every: int = DEFAULT_DROP_LOG_EVERY) -> Outbox:
        """Open (or create) the outbox at ``path``; use the result as a context manager."""
        outbox = cls(Path(path), drop_log_every)
        with outbox._lock:
            outbox._attach()
        return outbox

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (the WAL is checkpointed); stored records stay for the next start."""
        with self._lock:
            for channel in self._channels.values():
                channel._log_drop_summary()
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
                for channel in self._channels.values():
                    if channel._depth:
                        log.info(
                            "outbox %s: %s closed with %d records waiting",
                            self.path,
                            channel.name,
                            channel._depth,
                        )

    def channel(self, name: str, max_records: int, max_bytes: int) -> OutboxChannel:
        """The queue of sink ``name`` (created on first use) with these bounds; records stored under this
        name before (by an earlier run) are in it."""
        if max_records < 1 or max_bytes < 1:
            raise OutboxError(
                f"outbox bounds must be positive (max_records={max_records}, max_bytes={max_bytes})",
                sink=name,
                path=str(self.path),
            )
        with self._lock:
            if name in self._channels:
                raise OutboxError(
                    "this outbox already has a channel of that name", sink=name, path=str(self.path)
                )
            channel = OutboxChannel(self, name, max_records, max_bytes)
            self._channels[name] = channel
            if self._conn is not None:
                channel._load_counters(self._conn)
                if channel._depth:
                    log.info(
                        "outbox %s: %s has %d records waiting from before", self.path, name, channel._depth
                    )
            return channel

    @property
    def channels(self) -> list[OutboxChannel]:
        """The channels opened so far."""
        return list(self._channels.values())

    @property
    def durable(self) -> bool:
        """False when the outbox fell back to memory because its file could not be used."""
        return self._durable

    def collector(self) -> OutboxCollector:
        """The ``camwatch_spool_*`` metrics of every channel, summed."""
        return OutboxCollector(self)

    # ------------------------------------------------------------------ for the channels

    def _guarded(self, what: str, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``op`` under the lock; on a database error recover (move aside / fall back to memory) and
        retry once."""
        with self._lock:
            if self._conn is None:
                raise OutboxError(f"outbox is closed ({what})", path=str(self.path))
            if not self._durable and time.monotonic() >= self._retry_at:
                self._reattach()
            try:
                return op(self._conn)
            except sqlite3.Error as exc:
                self._recover(exc, what)
            assert self._conn is not None
            try:
                return op(self._conn)
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {what} failed after recovery: {exc}", path=str(self.path)) from exc

    def _note_id(self, row_id: int) -> None:
        self._last_id = max(self._last_id, row_id)

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection, *, durable: bool) -> Iterator[None]:
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------ opening and recovery

    def _recover(self, exc: sqlite3.Error, what: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            assert self._conn is not None
            self._conn.close()
        self._conn = None
        if self._durable and _is_corrupt(exc):
            waiting = self._forget_all()
            log.error(
                "outbox %s is corrupt during %s (%s): the %d records in it are lost",
                self.path,
                what,
                exc,
                waiting,
            )
            self._replace_file(str(exc))
        elif self._durable:
            self._fall_back_to_memory(f"{what} failed: {exc}")
        else:
            waiting = self._forget_all()
            log.error(
                "in-memory outbox failed during %s (%s): starting it afresh, %d records lost",
                what,
                exc,
                waiting,
            )
            self._conn = self._open_memory()

    def _forget_all(self) -> int:
        """Count every channel's waiting records as lost (their database is gone); returns how many."""
        total = 0
        for channel in self._channels.values():
            channel.lost += channel._depth
            total += channel._depth
        return total

    def _attach(self) -> None:
        """Open the outbox file, replacing it when it is unusable, or fall back to memory."""
        try:
            self._conn = self._open_file()
        except _Unusable as exc:
            self._replace_file(str(exc))
        except sqlite3.Error as exc:
            if _is_corrupt(exc):
                self._replace_file(str(exc))
            else:
                self._fall_back_to_memory(str(exc))
        except OSError as exc:
            self._fall_back_to_memory(str(exc))

    def _replace_file(self, reason: str) -> None:
        """Move an unusable outbox file aside and start a fresh one (memory if even that fails)."""
        try:
            self._move_aside(reason)
            self._conn = self._open_file()
        except (sqlite3.Error, OSError, _Unusable) as exc:
            self._fall_back_to_memory(str(exc))

    def _open_file(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_S
        )
        try:
            # The first statement reads the header: a file that is not SQLite fails here.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("outbox %s: WAL is not available here (journal mode %s)", self.path, mode)
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _Unusable(f"integrity check failed: {'; '.join(map(str, problems[:3]))}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in _TABLES:
                raise _Unusable(f"unknown outbox schema version {version}")
            _check_tables(conn, version)
            self._init_schema(conn, version)
        except BaseException:
            conn.close()
            raise
        self._durable = True
        self._load_counters(conn)
        return conn

    def _open_memory(self) -> sqlite3.Connection:
        if self._last_id == 0:
            # The file was never read (unusable from the start): memory ids must still come after every id
            # it holds, for the day its rows and these meet in it again.
            self._last_id = _MEMORY_FIRST_ID
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._init_schema(conn, 0)
        self._durable = False
        self._load_counters(conn)
        return conn

    def _init_schema(self, conn: sqlite3.Connection, version: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                for statement in _UPGRADE_1:
                    conn.execute(statement)
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # Keep ids increasing across a replaced file too (the sinks' cursors rely on it).
            (seq,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'"
            ).fetchone()
            if seq < self._last_id:
                conn.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'")
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (self._last_id,))
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if version == 1:
            log.info(
                "outbox %s: upgraded from the alert spool (its alerts are the %s channel's)",
                self.path,
                LEGACY_CHANNEL,
            )

    def _load_counters(self, conn: sqlite3.Connection) -> None:
        (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        self._last_id = max(self._last_id, int(last))
        for channel in self._channels.values():
            channel._load_counters(conn)

    def _fall_back_to_memory(self, reason: str) -> None:
        log.error(
            "outbox %s cannot be used (%s): keeping records in memory, trying the file again every %g s; "
            "they are still delivered but are lost if the agent stops before their sink has them",
            self.path,
            reason,
            FILE_RETRY_SECONDS,
        )
        self._conn = self._open_memory()
        self._retry_at = time.monotonic() + FILE_RETRY_SECONDS

    def _still_in_memory(self, memory: sqlite3.Connection, exc: BaseException) -> None:
        self._durable = False
        self._load_counters(memory)  # opening the file read its counters
        log.debug("outbox %s still cannot be used: %s", self.path, exc)

    def _reattach(self) -> None:
        """In memory: try the file again; if it works, move what waits in memory into it and use it."""
        self._retry_at = time.monotonic() + FILE_RETRY_SECONDS
        memory = self._conn
        assert memory is not None
        try:
            try:
                conn = self._open_file()
            except _Unusable as exc:  # damaged while in memory: aside, and a fresh one
                self._move_aside(str(exc))
                conn = self._open_file()
        except (sqlite3.Error, OSError, _Unusable) as exc:
            self._still_in_memory(memory, exc)
            return
        try:
            rows = memory.execute(
                "SELECT id, sink, key, route, payload, created, attempts FROM outbox ORDER BY id"
            ).fetchall()
            # Memory ids continue after every id the file has had: they never collide with its rows.
            with self._transaction(conn, durable=True):
                conn.executemany(
                    "INSERT INTO outbox (id, sink, key, route, payload, created, attempts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:  # still full, most likely: stay in memory
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._still_in_memory(memory, exc)
            return
        with contextlib.suppress(sqlite3.Error):
            memory.close()
        self._conn = conn
        self._durable = True
        self._load_counters(conn)
        self.epoch += 1
        log.warning(
            "outbox %s can be used again: the %d record(s) kept in memory are in it, it is durable again",
            self.path,
            len(rows),
        )

    def _move_aside(self, reason: str) -> None:
        stamp = int(time.time())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{n}")
            n += 1
        try:
            os.replace(self.path, aside)
            # The WAL goes with its database (SQLite pairs "<db>-wal" with "<db>", so the set-aside copy
            # can still be opened for forensics); it must not be replayed into the fresh outbox.
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}-wal", f"{aside}-wal")
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.path}-shm")
        except OSError as exc:
            log.error("outbox %s is unusable (%s) and cannot be moved aside: %s", self.path, reason, exc)
            raise
        log.error(
            "outbox %s is unusable (%s): moved to %s; starting a fresh outbox", self.path, reason, aside
        )


class OutboxChannel:
    """One sink's durable bounded FIFO in an :class:`Outbox`; get it with :meth:`Outbox.channel`."""

    def __init__(self, outbox: Outbox, name: str, max_records: int, max_bytes: int) -> None:
        self.outbox = outbox
        self.name = name
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.dropped = 0
        """Records dropped (oldest first) because the channel was full."""
        self.lost = 0
        """Records lost because the outbox file was corrupt and had to be replaced."""
        self._depth = 0
        self._bytes = 0
        self._near_full = False
        self._dropped_logged = 0

    @property
    def path(self) -> Path:
        """The outbox file."""
        return self.outbox.path

    # ------------------------------------------------------------------ state (no I/O: cheap from any thread)

    def depth(self) -> int:
        """Number of records waiting."""
        return self._depth

    def bytes(self) -> int:
        """Sum of the payload sizes waiting (the file itself is larger: ids, routes, pages, WAL)."""
        return self._bytes

    @property
    def near_full(self) -> bool:
        """True at 80 % or more of either bound."""
        return self._near_full

    @property
    def durable(self) -> bool:
        """False when the outbox fell back to memory because its file could not be used."""
        return self.outbox.durable

    @property
    def epoch(self) -> int:
        """Changes when records a sink may have walked past are back (see :attr:`Outbox.epoch`)."""
        return self.outbox.epoch

    # ------------------------------------------------------------------ queue operations

    def put(self, payload: builtins.bytes, *, key: str = "", route: str = "") -> int:
        """Store a record durably (fsync) and return its row id; drops the oldest ones when full."""
        size = len(payload)
        if size > self.max_bytes:
            raise OutboxError(
                f"record of {size} bytes is larger than the whole channel ({self.max_bytes} bytes)",
                sink=self.name,
                path=str(self.path),
                topic=route or None,
                key=key,
            )
        return self.outbox._guarded("put", lambda conn: self._insert(conn, route, payload, key))

    def peek(self, limit: int, after: int = 0) -> list[OutboxItem]:
        """Up to ``limit`` records with a row id greater than ``after``, oldest first."""
        query = (
            "SELECT id, key, route, payload, created, attempts FROM outbox"
            " WHERE sink = ? AND id > ? ORDER BY id LIMIT ?"
        )

        def run(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(query, (self.name, after, limit)).fetchall()
            return [OutboxItem(r[0], r[1], r[2], builtins.bytes(r[3]), r[4], r[5]) for r in rows]

        return self.outbox._guarded("peek", run)

    def ack(self, row_id: int) -> bool:
        """Delete a record whose delivery was acknowledged; False if it was no longer there (dropped)."""
        return self.ack_many((row_id,)) == 1

    def ack_many(self, row_ids: Iterable[int]) -> int:
        """Delete several acknowledged records in one transaction; returns how many were still there."""
        ids = list(row_ids)
        if not ids:
            return 0
        return self.outbox._guarded("ack", lambda conn: self._delete(conn, ids))

    def note_attempts(self, row_ids: Iterable[int]) -> None:
        """Count one more delivery attempt for these records (kept for diagnosis)."""
        ids = [(i, self.name) for i in row_ids]
        if not ids:
            return

        def run(conn: sqlite3.Connection) -> None:
            with self.outbox._transaction(conn, durable=False):
                conn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ? AND sink = ?", ids)

        self.outbox._guarded("note_attempts", run)

    # ------------------------------------------------------------------ internals (the outbox's lock is held)

    def _insert(self, conn: sqlite3.Connection, route: str, payload: builtins.bytes, key: str) -> int:
        size = len(payload)
        with self.outbox._transaction(conn, durable=True):
            dropped = self._make_room(conn, size)
            cur = conn.execute(
                "INSERT INTO outbox (sink, key, route, payload, created, attempts) VALUES (?, ?, ?, ?, ?, 0)",
                (self.name, key, route, payload, time.time()),
            )
            row_id = cur.lastrowid
        # Counters change only once the transaction is committed (an exception above leaves them alone).
        assert row_id is not None
        self._depth += 1
        self._bytes += size
        self.outbox._note_id(row_id)
        if dropped:
            self._note_drops(dropped)
        self._update_near_full()
        return row_id

    def _make_room(self, conn: sqlite3.Connection, size: int) -> list[tuple[int, str, int]]:
        """Delete the oldest records until one of ``size`` bytes fits; returns (id, key, size) of each."""
        need_count = self._depth + 1 - self.max_records
        need_bytes = self._bytes + size - self.max_bytes
        if need_count <= 0 and need_bytes <= 0:
            return []
        victims: list[tuple[int, str, int]] = []
        freed = 0
        cur = conn.execute(
            "SELECT id, key, length(payload) FROM outbox WHERE sink = ? ORDER BY id", (self.name,)
        )
        try:
            while len(victims) < need_count or freed < need_bytes:
                row = cur.fetchone()
                if row is None:
                    break
                victims.append((row[0], row[1], row[2]))
                freed += row[2]
        finally:
            cur.close()
        if victims:
            # Victims are the channel's oldest rows, contiguous in its id order.
            conn.execute("DELETE FROM outbox WHERE sink = ? AND id <= ?", (self.name, victims[-1][0]))
        return victims

    def _note_drops(self, victims: list[tuple[int, str, int]]) -> None:
        self._depth -= len(victims)
        self._bytes -= sum(v[2] for v in victims)
        before = self.dropped
        self.dropped += len(victims)
        every = self.outbox.drop_log_every
        # Once at the first drop, then once per `drop_log_every`: an outage must not flood the log.
        if before == 0 or self.dropped // every > before // every:
            log.warning(
                "outbox %s: %s is full (%d/%d records, %d/%d bytes): dropped the %d oldest record(s), up to "
                "%s; %d records dropped so far (is its destination reachable?)",
                self.path,
                self.name,
                self._depth,
                self.max_records,
                self._bytes,
                self.max_bytes,
                len(victims),
                victims[-1][1] or f"row {victims[-1][0]}",
                self.dropped,
            )
            self._dropped_logged = self.dropped

    def _log_drop_summary(self) -> None:
        if self._dropped_logged != self.dropped:
            log.warning(
                "outbox %s: %s: %d records dropped in total because it was full",
                self.path,
                self.name,
                self.dropped,
            )
            self._dropped_logged = self.dropped

    def _delete(self, conn: sqlite3.Connection, ids: list[int]) -> int:
        marks = ",".join("?" * len(ids))
        # An ack that is lost in a power cut only means one duplicate delivery after the restart, so a
        # delete does not pay for an fsync (synchronous=NORMAL; a crash of the process alone loses nothing).
        with self.outbox._transaction(conn, durable=False):
            sizes = conn.execute(
                f"DELETE FROM outbox WHERE sink = ? AND id IN ({marks}) RETURNING length(payload)",
                [self.name, *ids],
            )
            removed = [row[0] for row in sizes.fetchall()]
        self._depth -= len(removed)
        self._bytes -= sum(removed)
        self._update_near_full()
        return len(removed)

    def _load_counters(self, conn: sqlite3.Connection) -> None:
        depth, size = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE sink = ?", (self.name,)
        ).fetchone()
        self._depth, self._bytes = int(depth), int(size)
        self._near_full = False
        self._update_near_full()

    def _update_near_full(self) -> None:
        near = (
            self._depth >= NEAR_FULL_RATIO * self.max_records
            or self._bytes >= NEAR_FULL_RATIO * self.max_bytes
        )
        if near and not self._near_full:
            log.warning(
                "outbox %s: %s is near full: %d/%d records, %d/%d bytes; the oldest records will be dropped "
                "when it is full",
                self.path,
                self.name,
                self._depth,
                self.max_records,
                self._bytes,
                self.max_bytes,
            )
        elif self._near_full and not near:
            log.info("outbox %s: %s is below %d %% again", self.path, self.name, int(NEAR_FULL_RATIO * 100))
        self._near_full = near


class OutboxCollector(Collector):
    """``camwatch_spool_*``: what waits in the outbox, summed over its channels (today only the MQTT
    sink's, hence the names and help texts). Reads in-memory counters only: a scrape never touches the
    database."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def describe(self) -> Iterable[Metric]:
        return _families(0, 0, 0, False, True)

    def collect(self) -> Iterable[Metric]:
        channels = self._outbox.channels
        return _families(
            sum(c.depth() for c in channels),
            sum(c.bytes() for c in channels),
            sum(c.dropped for c in channels),
            any(c.near_full for c in channels),
            self._outbox.durable,
        )


def _families(depth: int, size: int, dropped: int, near_full: bool, durable: bool) -> list[Metric]:
    return [
        GaugeMetricFamily(
            "camwatch_spool_durable",
            "1 when the spool is on disk; 0 when its file cannot be used and alerts are kept in memory "
            "(lost if the agent stops first; the file is tried again every 30 s).",
            value=float(durable),
        ),
        GaugeMetricFamily(
            "camwatch_spool_alerts", "Alerts in the spool waiting for the broker.", value=depth
        ),
        GaugeMetricFamily(
            "camwatch_spool_bytes", "Size of the alerts in the spool.", value=size, unit="bytes"
        ),
        CounterMetricFamily(
            "camwatch_spool_dropped_total", "Alerts dropped because the spool was full (lost).", value=dropped
        ),
        GaugeMetricFamily(
            "camwatch_spool_near_full",
            "1 when the spool is close to its limits (limits.spool_max_*): alerts will soon be dropped.",
            value=float(near_full),
        ),
    ]


def _check_tables(conn: sqlite3.Connection, version: int) -> None:
    """_Unusable unless the file has exactly the tables (and columns) of ``version``."""
    expected = _TABLES[version]
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not str(row[0]).startswith("sqlite_")
    }
    if tables != set(expected):
        found = ", ".join(sorted(tables)[:5]) or "none"
        raise _Unusable(f"not an outbox of schema version {version} (its tables: {found})")
    for table, columns in expected.items():
        found_columns = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({table})"))
        if found_columns != columns:
            raise _Unusable(f"table {table} has the columns ({', '.join(found_columns)}), not an outbox's")


def _is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text
