"""The alert spool: a durable, bounded SQLite queue between the engine and the MQTT publisher (DESIGN 2.5).

An alert is committed here (WAL, `synchronous=FULL`: the commit returns after fsync) before anything
tries to publish it, and it is deleted only after the broker's PUBACK, so neither a broker outage nor a
killed agent loses it. Delivery is therefore at-least-once: consumers drop duplicates by `event.id`.

Bounds and what gives when they are hit:
- `max_alerts` and `max_bytes` (sum of payload sizes) bound the spool. When a new alert does not fit,
  the OLDEST alerts are dropped to make room: during a long outage the newest alerts describe what is
  happening now, which is what the person on call needs first. Every drop is counted (`dropped`) and
  logged at WARNING (the first one, then once per `drop_log_every` drops, and a summary on close).
- `near_full` turns true at 80 % of either bound; each transition into that state logs a WARNING.

Failure policy (the agent never crashes because of its spool):
- a file SQLite cannot read (not a database, failed integrity check, unknown schema) is moved aside as
  `alerts.sqlite3.corrupt-<unix time>` (with its `-wal`), logged at ERROR, and a fresh spool is created;
- a spool that cannot be written at all (read-only or full file system, permissions) falls back to an
  in-memory database with an ERROR log: alerts are still published, but not durable until restart
  (`durable` is false). The rows on disk are left untouched and published after the next start.

Thread safety: every method takes an internal lock, so the publisher may run the methods in a worker
thread (it does: a put with its fsync took 0.2-0.5 ms at the median and up to 7 ms on the development VM's
disk, and flash storage on edge gateways can be much slower; that must not stall the event loop) while a
metrics scrape reads `depth()`,
`bytes()`, `dropped` and `near_full`, which are kept in memory and never touch the database.
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
from typing import TypeVar

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
NEAR_FULL_RATIO = 0.8
DEFAULT_DROP_LOG_EVERY = 100
_BUSY_TIMEOUT_S = 5.0
# The WAL is reused after each checkpoint; this caps what it keeps on disk after a burst.
_JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
# SQLite primary result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_T = TypeVar("_T")

# AUTOINCREMENT (not a plain rowid alias): ids must never be reused, even after the table was emptied,
# because the publisher walks the spool with an "after this id" cursor and would skip a reused id.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


class PublisherError(Exception):
    """Root of the alert-delivery errors (spool and MQTT); carries where it happened."""

    def __init__(
        self,
        message: str,
        *,
        broker: str | None = None,
        topic: str | None = None,
        path: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.broker = broker
        self.topic = topic
        self.path = path
        self.event_id = event_id

    def __str__(self) -> str:
        context = [
            f"{name}={value}"
            for name, value in (
                ("broker", self.broker),
                ("topic", self.topic),
                ("path", self.path),
                ("event_id", self.event_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(context)})" if context else self.message


class SpoolError(PublisherError):
    """The spool could not store or read alerts, even after recovery."""


class _Unusable(Exception):
    """The spool file opened but is not ours or not sound (internal)."""


@dataclass(frozen=True, slots=True)
class SpoolItem:
    """One spooled alert, as `peek` returns it."""

    row_id: int
    event_id: str
    topic: str
    payload: bytes
    created: float
    attempts: int


class AlertSpool:
    """Durable bounded FIFO of alerts waiting for a PUBACK; open it with `AlertSpool.open`."""

    def __init__(
        self, path: Path, max_alerts: int, max_bytes: int, drop_log_every: int = DEFAULT_DROP_LOG_EVERY
    ) -> None:
        if max_alerts < 1 or max_bytes < 1:
            raise SpoolError(
                f"spool bounds must be positive (max_alerts={max_alerts}, max_bytes={max_bytes})",
                path=str(path),
            )
        self.path = path
        self.max_alerts = max_alerts
        self.max_bytes = max_bytes
        self.drop_log_every = max(1, drop_log_every)
        self.dropped = 0
        """Alerts dropped (oldest first) because the spool was full."""
        self.lost = 0
        """Alerts lost because the spool file was corrupt and had to be replaced."""
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._durable = False
        self._depth = 0
        self._bytes = 0
        self._near_full = False
        self._dropped_logged = 0
        self._last_id = 0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        max_alerts: int,
        max_bytes: int,
        *,
        drop_log_every: int = DEFAULT_DROP_LOG_EVERY,
    ) -> AlertSpool:
        """Open (or create) the spool at `path`; use the result as a context manager."""
        spool = cls(Path(path), max_alerts, max_bytes, drop_log_every)
        with spool._lock:
            spool._attach()
        return spool

    def __enter__(self) -> AlertSpool:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (the WAL is checkpointed); spooled alerts stay for the next start."""
        with self._lock:
            if self._dropped_logged != self.dropped:
                log.warning(
                    "alert spool %s: %d alerts dropped in total because it was full", self.path, self.dropped
                )
                self._dropped_logged = self.dropped
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
                if self._depth:
                    log.info("alert spool %s closed with %d alerts waiting", self.path, self._depth)

    # ------------------------------------------------------------------ state (no I/O: cheap from any thread)

    def depth(self) -> int:
        """Number of alerts waiting."""
        return self._depth

    def bytes(self) -> int:
        """Sum of the payload sizes waiting (the file itself is larger: ids, topics, pages, WAL)."""
        return self._bytes

    @property
    def near_full(self) -> bool:
        """True at 80 % or more of either bound."""
        return self._near_full

    @property
    def durable(self) -> bool:
        """False when the spool fell back to memory because its file could not be used."""
        return self._durable

    # ------------------------------------------------------------------ queue operations

    def put(self, topic: str, payload: builtins.bytes, event_id: str) -> int:
        """Store an alert durably (fsync) and return its row id; drops the oldest ones when full."""
        size = len(payload)
        if size > self.max_bytes:
            raise SpoolError(
                f"alert of {size} bytes is larger than the whole spool ({self.max_bytes} bytes)",
                path=str(self.path),
                topic=topic,
                event_id=event_id,
            )
        with self._lock:
            return self._guarded("put", lambda conn: self._insert(conn, topic, payload, event_id))

    def peek(self, limit: int, after: int = 0) -> list[SpoolItem]:
        """Up to `limit` alerts with a row id greater than `after`, oldest first."""
        query = (
            "SELECT id, event_id, topic, payload, created, attempts FROM alerts"
            " WHERE id > ? ORDER BY id LIMIT ?"
        )

        def run(conn: sqlite3.Connection) -> list[SpoolItem]:
            rows = conn.execute(query, (after, limit)).fetchall()
            return [SpoolItem(r[0], r[1], r[2], builtins.bytes(r[3]), r[4], r[5]) for r in rows]

        with self._lock:
            return self._guarded("peek", run)

    def ack(self, row_id: int) -> bool:
        """Delete an alert the broker has acknowledged; False if it was no longer there (dropped)."""
        return self.ack_many((row_id,)) == 1

    def ack_many(self, row_ids: Iterable[int]) -> int:
        """Delete several acknowledged alerts in one transaction; returns how many were still there."""
        ids = list(row_ids)
        if not ids:
            return 0
        with self._lock:
            return self._guarded("ack", lambda conn: self._delete(conn, ids))

    def note_attempts(self, row_ids: Iterable[int]) -> None:
        """Count one more publish attempt for these alerts (kept for diagnosis)."""
        ids = [(i,) for i in row_ids]
        if not ids:
            return

        def run(conn: sqlite3.Connection) -> None:
            with self._transaction(conn, durable=False):
                conn.executemany("UPDATE alerts SET attempts = attempts + 1 WHERE id = ?", ids)

        with self._lock:
            self._guarded("note_attempts", run)

    # ------------------------------------------------------------------ internals

    def _insert(self, conn: sqlite3.Connection, topic: str, payload: builtins.bytes, event_id: str) -> int:
        size = len(payload)
        with self._transaction(conn, durable=True):
            dropped_ids = self._make_room(conn, size)
            cur = conn.execute(
                "INSERT INTO alerts (event_id, topic, payload, created, attempts) VALUES (?, ?, ?, ?, 0)",
                (event_id, topic, payload, time.time()),
            )
            row_id = cur.lastrowid
        # Counters change only once the transaction is committed (an exception above leaves them alone).
        assert row_id is not None
        self._depth += 1
        self._bytes += size
        self._last_id = max(self._last_id, row_id)
        if dropped_ids:
            self._note_drops(dropped_ids)
        self._update_near_full()
        return row_id

    def _make_room(self, conn: sqlite3.Connection, size: int) -> list[tuple[int, str, int]]:
        """Delete the oldest alerts until one of `size` bytes fits; returns (id, event_id, size) of each."""
        need_count = self._depth + 1 - self.max_alerts
        need_bytes = self._bytes + size - self.max_bytes
        if need_count <= 0 and need_bytes <= 0:
            return []
        victims: list[tuple[int, str, int]] = []
        freed = 0
        cur = conn.execute("SELECT id, event_id, length(payload) FROM alerts ORDER BY id")
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
            # Victims are the oldest rows, contiguous in id order.
            conn.execute("DELETE FROM alerts WHERE id <= ?", (victims[-1][0],))
        return victims

    def _note_drops(self, victims: list[tuple[int, str, int]]) -> None:
        self._depth -= len(victims)
        self._bytes -= sum(v[2] for v in victims)
        before = self.dropped
        self.dropped += len(victims)
        # Once at the first drop, then once per `drop_log_every`: an outage must not flood the log.
        if before == 0 or self.dropped // self.drop_log_every > before // self.drop_log_every:
            log.warning(
                "alert spool %s is full (%d/%d alerts, %d/%d bytes): dropped the %d oldest alert(s), up to "
                "event %s; %d alerts dropped so far (is the MQTT broker reachable?)",
                self.path,
                self._depth,
                self.max_alerts,
                self._bytes,
                self.max_bytes,
                len(victims),
                victims[-1][1],
                self.dropped,
            )
            self._dropped_logged = self.dropped

    def _delete(self, conn: sqlite3.Connection, ids: list[int]) -> int:
        marks = ",".join("?" * len(ids))
        # An ack that is lost in a power cut only means one duplicate publish after the restart, so a
        # delete does not pay for an fsync (synchronous=NORMAL; a crash of the process alone loses nothing).
        with self._transaction(conn, durable=False):
            sizes = conn.execute(f"DELETE FROM alerts WHERE id IN ({marks}) RETURNING length(payload)", ids)
            removed = [row[0] for row in sizes.fetchall()]
        self._depth -= len(removed)
        self._bytes -= sum(removed)
        self._update_near_full()
        return len(removed)

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

    def _update_near_full(self) -> None:
        near = (
            self._depth >= NEAR_FULL_RATIO * self.max_alerts
            or self._bytes >= NEAR_FULL_RATIO * self.max_bytes
        )
        if near and not self._near_full:
            log.warning(
                "alert spool %s is near full: %d/%d alerts, %d/%d bytes; the oldest alerts will be dropped "
                "when it is full",
                self.path,
                self._depth,
                self.max_alerts,
                self._bytes,
                self.max_bytes,
            )
        elif self._near_full and not near:
            log.info("alert spool %s is below %d %% again", self.path, int(NEAR_FULL_RATIO * 100))
        self._near_full = near

    def _guarded(self, what: str, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `op`; on a database error recover (move aside / fall back to memory) and retry once."""
        if self._conn is None:
            raise SpoolError(f"alert spool is closed ({what})", path=str(self.path))
        try:
            return op(self._conn)
        except sqlite3.Error as exc:
            self._recover(exc, what)
        assert self._conn is not None
        try:
            return op(self._conn)
        except sqlite3.Error as exc:
            raise SpoolError(f"alert spool {what} failed after recovery: {exc}", path=str(self.path)) from exc

    def _recover(self, exc: sqlite3.Error, what: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            assert self._conn is not None
            self._conn.close()
        self._conn = None
        if self._durable and _is_corrupt(exc):
            self.lost += self._depth
            log.error(
                "alert spool %s is corrupt during %s (%s): the %d alerts in it are lost",
                self.path,
                what,
                exc,
                self._depth,
            )
            self._replace_file(str(exc))
        elif self._durable:
            self._fall_back_to_memory(f"{what} failed: {exc}")
        else:
            self.lost += self._depth
            log.error("in-memory alert spool failed during %s (%s): starting it afresh", what, exc)
            self._conn = self._open_memory()

    def _attach(self) -> None:
        """Open the spool file, replacing it when it is unusable, or fall back to memory."""
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
        """Move an unusable spool file aside and start a fresh one (memory if even that fails)."""
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
                log.warning("alert spool %s: WAL is not available here (journal mode %s)", self.path, mode)
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise _Unusable(f"integrity check failed: {'; '.join(map(str, problems[:3]))}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise _Unusable(f"unknown spool schema version {version}")
            self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._durable = True
        self._load_counters(conn)
        if self._depth:
            log.info("alert spool %s: %d alerts waiting from before", self.path, self._depth)
        return conn

    def _open_memory(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._init_schema(conn)
        self._durable = False
        self._load_counters(conn)
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # Keep ids increasing across a replaced file too (the publisher's cursor relies on it).
        (seq,) = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'alerts'"
        ).fetchone()
        if seq < self._last_id:
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'alerts'")
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('alerts', ?)", (self._last_id,))
        conn.execute("COMMIT")

    def _load_counters(self, conn: sqlite3.Connection) -> None:
        depth, size, last = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), coalesce(max(id), 0) FROM alerts"
        ).fetchone()
        self._depth, self._bytes = int(depth), int(size)
        self._last_id = max(self._last_id, int(last))
        self._near_full = False
        self._update_near_full()

    def _fall_back_to_memory(self, reason: str) -> None:
        log.error(
            "alert spool %s cannot be used (%s): keeping alerts in memory until restart; they are still "
            "published but are lost if the agent stops before the broker has them",
            self.path,
            reason,
        )
        self._conn = self._open_memory()

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
            # can still be opened for forensics); it must not be replayed into the fresh spool.
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}-wal", f"{aside}-wal")
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.path}-shm")
        except OSError as exc:
            log.error("alert spool %s is unusable (%s) and cannot be moved aside: %s", self.path, reason, exc)
            raise
        log.error(
            "alert spool %s is unusable (%s): moved to %s; starting a fresh spool", self.path, reason, aside
        )


def _is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text
