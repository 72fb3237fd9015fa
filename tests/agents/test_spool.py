"""The alert spool: order, durability, bounds (drop oldest, loudly), near-full warning, damaged files."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agents.sinks.mqtt import encode_alert
from agents.sinks.spool import AlertSpool, SpoolError
from tests.agents.helpers.publisher_proc import make_alert

ROOT = Path(__file__).parents[2]
SPOOL_LOGGER = "agents.sinks.spool"


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == SPOOL_LOGGER and r.levelno == level and text in r.getMessage()
    ]


def test_put_peek_ack_keep_insertion_order_and_counters(tmp_path: Path) -> None:
    with AlertSpool.open(tmp_path / "alerts.sqlite3", 100, 1 << 20) as spool:
        ids = [spool.put(f"t/{n}", f"payload-{n}".encode(), f"e{n}") for n in range(5)]
        assert ids == sorted(ids)
        assert spool.depth() == 5
        assert spool.bytes() == sum(len(f"payload-{n}") for n in range(5))
        items = spool.peek(3)
        assert [i.event_id for i in items] == ["e0", "e1", "e2"]
        assert [i.topic for i in items] == ["t/0", "t/1", "t/2"]
        assert items[0].payload == b"payload-0" and items[0].attempts == 0 and items[0].created > 0
        assert [i.event_id for i in spool.peek(10, after=items[-1].row_id)] == ["e3", "e4"]
        assert spool.ack(ids[1]) is True
        assert spool.ack(ids[1]) is False  # already gone
        assert [i.event_id for i in spool.peek(10)] == ["e0", "e2", "e3", "e4"]
        spool.note_attempts([ids[0], ids[0], ids[2]])
        assert {i.event_id: i.attempts for i in spool.peek(2)} == {"e0": 2, "e2": 1}
        assert spool.ack_many(ids) == 4
        assert (spool.depth(), spool.bytes()) == (0, 0)
        # Ids never go back, even once the table is empty: the publisher's cursor depends on it.
        assert spool.put("t", b"x", "again") > ids[-1]


def test_alerts_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "alerts.sqlite3"
    with AlertSpool.open(path, 100, 1 << 20) as spool:
        first = spool.put("t", b"one", "e1")
        spool.put("t", b"two", "e2")
        spool.ack(first)
    with AlertSpool.open(path, 100, 1 << 20) as spool:
        assert spool.durable
        assert [(i.event_id, i.payload) for i in spool.peek(10)] == [("e2", b"two")]
        assert (spool.depth(), spool.bytes()) == (1, 3)
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_alerts_survive_sigkill_right_after_put(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    script = textwrap.dedent(f"""
        import os, signal
        from agents.sinks.spool import AlertSpool
        spool = AlertSpool.open({str(path)!r}, 1000, 1 << 20)
        for n in range(50):
            spool.put("t", b"x" * 100, f"e{{n}}")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    with AlertSpool.open(path, 1000, 1 << 20) as spool:
        assert [i.event_id for i in spool.peek(100)] == [f"e{n}" for n in range(50)]


def test_overfilling_drops_the_oldest_counts_and_warns_once_per_n(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SPOOL_LOGGER)
    with AlertSpool.open(tmp_path / "alerts.sqlite3", 10, 1 << 20, drop_log_every=10) as spool:
        for n in range(25):
            spool.put("t", b"x" * 10, f"e{n}")
        assert spool.depth() == 10
        assert spool.dropped == 15
        # The newest are kept: during an outage they describe what is happening now.
        assert [i.event_id for i in spool.peek(100)] == [f"e{n}" for n in range(15, 25)]
        full = records(caplog, logging.WARNING, "oldest alert(s)")
        assert len(full) == 2  # the first drop, then the 10th: not one line per alert
        assert "1 alerts dropped so far" in full[0].getMessage()
        assert "10 alerts dropped so far" in full[1].getMessage()
    summary = records(caplog, logging.WARNING, "15 alerts dropped in total")
    assert len(summary) == 1


def test_the_byte_bound_drops_as_many_old_alerts_as_needed(tmp_path: Path) -> None:
    with AlertSpool.open(tmp_path / "alerts.sqlite3", 1000, 1000) as spool:
        for n in range(3):
            spool.put("t", b"a" * 300, f"small{n}")
        spool.put("t", b"b" * 700, "big")  # needs the room of two old alerts... and 900 + 700 > 1000
        assert [i.event_id for i in spool.peek(10)] == ["small2", "big"]
        assert spool.bytes() == 1000
        assert spool.dropped == 2
        with pytest.raises(SpoolError, match="larger than the whole spool") as info:
            spool.put("t", b"c" * 1001, "huge")
        assert info.value.event_id == "huge" and "alerts.sqlite3" in str(info.value)


def test_near_full_warns_on_each_transition_into_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SPOOL_LOGGER)
    with AlertSpool.open(tmp_path / "alerts.sqlite3", 10, 1 << 20) as spool:
        ids = [spool.put("t", b"x", f"e{n}") for n in range(7)]
        assert not spool.near_full
        assert records(caplog, logging.WARNING, "near full") == []
        ids += [spool.put("t", b"x", f"e{n}") for n in range(7, 10)]  # 8/10 crosses 80 %
        assert spool.near_full
        assert len(records(caplog, logging.WARNING, "near full")) == 1
        spool.ack_many(ids[:5])
        assert not spool.near_full
        assert len(records(caplog, logging.INFO, "below 80 %")) == 1
        for n in range(3):
            spool.put("t", b"x", f"again{n}")
        assert spool.near_full
        assert len(records(caplog, logging.WARNING, "near full")) == 2
    with AlertSpool.open(tmp_path / "bytes.sqlite3", 1000, 100) as spool:
        spool.put("t", b"x" * 80, "e")  # 80 % of the byte bound
        assert spool.near_full


def test_a_file_that_is_not_a_database_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "alerts.sqlite3"
    path.write_bytes(b"this is not SQLite\n" * 200)
    with AlertSpool.open(path, 100, 1 << 20) as spool:
        assert spool.durable and spool.depth() == 0
        spool.put("t", b"x", "e")
        assert spool.depth() == 1
    aside = list(tmp_path.glob("alerts.sqlite3.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not SQLite")
    errors = records(caplog, logging.ERROR, "moved to")
    assert len(errors) == 1 and "not a database" in errors[0].getMessage()


def test_a_damaged_database_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alerts.sqlite3"
    with AlertSpool.open(path, 1000, 1 << 20) as spool:
        for n in range(200):
            spool.put("t", os.urandom(500), f"e{n}")
    with path.open("r+b") as fh:  # overwrite table pages in the middle of the file
        fh.seek(3 * 4096)
        fh.write(b"\xff" * 4 * 4096)
    with AlertSpool.open(path, 1000, 1 << 20) as spool:
        assert spool.durable and spool.depth() == 0
        assert spool.put("t", b"fresh", "new") > 0
        assert [i.event_id for i in spool.peek(10)] == ["new"]
    assert len(list(tmp_path.glob("alerts.sqlite3.corrupt-*"))) == 1
    assert "malformed" in records(caplog, logging.ERROR, "moved to")[0].getMessage()


def test_the_wal_of_a_corrupt_spool_goes_aside_with_it(tmp_path: Path) -> None:
    # A valid WAL left by a killed agent next to a damaged database: replayed into the fresh spool it would
    # bring back pages of the damaged one. (SQLite checkpoints it into the damaged file when the spool
    # closes it after the failed check; a WAL still there then goes aside with its database.)
    path = tmp_path / "alerts.sqlite3"
    with AlertSpool.open(path, 1000, 1 << 20) as spool:
        for n in range(200):
            spool.put("t", os.urandom(500), f"e{n}")
    script = textwrap.dedent(f"""
        import os, signal
        from agents.sinks.spool import AlertSpool
        spool = AlertSpool.open({str(path)!r}, 1000, 1 << 20)
        for n in range(5):
            spool.put("t", b"x" * 100, f"late{{n}}")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    wal = Path(f"{path}-wal").read_bytes()
    assert len(wal) > 0  # the late alerts are only in the WAL
    with path.open("r+b") as fh:
        fh.seek(3 * 4096)
        fh.write(b"\xff" * 4 * 4096)
    with AlertSpool.open(path, 1000, 1 << 20) as spool:
        assert spool.depth() == 0 and spool.peek(10) == []
        spool.put("t", b"fresh", "new")
    with AlertSpool.open(path, 1000, 1 << 20) as spool:
        assert [i.event_id for i in spool.peek(10)] == ["new"]
    assert len([p for p in tmp_path.glob("alerts.sqlite3.corrupt-*") if not p.name.endswith("-wal")]) == 1


def test_a_spool_that_cannot_be_written_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with AlertSpool.open(blocker / "alerts.sqlite3", 100, 1 << 20) as spool:
        assert not spool.durable
        spool.put("t", b"x", "e")
        assert [i.event_id for i in spool.peek(10)] == ["e"]
    assert records(caplog, logging.ERROR, "keeping alerts in memory")


def test_bad_bounds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match="must be positive"):
        AlertSpool.open(tmp_path / "alerts.sqlite3", 0, 100)


def test_enqueue_cost_with_synchronous_full(tmp_path: Path) -> None:
    """Measures `put` (fsync per alert); the figure is printed for the record (pytest -s)."""
    payload = encode_alert(make_alert("e-measure"))
    n = 300
    with AlertSpool.open(tmp_path / "alerts.sqlite3", 10_000, 64 << 20) as spool:
        start = time.perf_counter()
        for i in range(n):
            spool.put("camwatch/s/g/alerts/3", payload, f"e{i}")
        per_alert = (time.perf_counter() - start) / n
        assert spool._conn is not None
        assert spool._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, as the last put left it
    print(f"\nspool enqueue, synchronous=FULL, {len(payload)}-byte alert: {per_alert * 1e6:.0f} us/alert")
    assert per_alert < 0.1  # a sanity bound only; an SD card can be far slower than a server disk
