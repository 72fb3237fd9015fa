"""The outbox: order, durability, bounds per channel (drop oldest, loudly), near-full warning, damaged files,
the upgrade of an alert spool, and its metrics."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.sinks.base import encode_record
from agents.sinks.outbox import Outbox, OutboxError, adopt
from tests.agents.helpers.publisher_proc import make_alert
from tests.agents.helpers.publisher_proc import open_spool as opened

ROOT = Path(__file__).parents[2]
OUTBOX_LOGGER = "agents.sinks.outbox"
# What the alert spool (schema version 1, before the outbox) created.
SPOOL_V1 = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == OUTBOX_LOGGER and r.levelno == level and text in r.getMessage()
    ]


def test_put_peek_ack_keep_insertion_order_and_counters(tmp_path: Path) -> None:
    with opened(tmp_path / "outbox.sqlite3", 100, 1 << 20) as spool:
        ids = [spool.put(f"payload-{n}".encode(), key=f"e{n}", route=f"t/{n}") for n in range(5)]
        assert ids == sorted(ids)
        assert spool.depth() == 5
        assert spool.bytes() == sum(len(f"payload-{n}") for n in range(5))
        items = spool.peek(3)
        assert [i.key for i in items] == ["e0", "e1", "e2"]
        assert [i.route for i in items] == ["t/0", "t/1", "t/2"]
        assert items[0].payload == b"payload-0" and items[0].attempts == 0 and items[0].created > 0
        assert [i.key for i in spool.peek(10, after=items[-1].row_id)] == ["e3", "e4"]
        assert spool.ack(ids[1]) is True
        assert spool.ack(ids[1]) is False  # already gone
        assert [i.key for i in spool.peek(10)] == ["e0", "e2", "e3", "e4"]
        spool.note_attempts([ids[0], ids[0], ids[2]])
        assert {i.key: i.attempts for i in spool.peek(2)} == {"e0": 2, "e2": 1}
        assert spool.ack_many(ids) == 4
        assert (spool.depth(), spool.bytes()) == (0, 0)
        # Ids never go back, even once the table is empty: a sink's cursor depends on it.
        assert spool.put(b"x", key="again") > ids[-1]


def test_records_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite3"
    with opened(path, 100, 1 << 20) as spool:
        first = spool.put(b"one", key="e1", route="t")
        spool.put(b"two", key="e2", route="t")
        spool.ack(first)
    with opened(path, 100, 1 << 20) as spool:
        assert spool.durable
        assert [(i.key, i.payload) for i in spool.peek(10)] == [("e2", b"two")]
        assert (spool.depth(), spool.bytes()) == (1, 3)
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_records_survive_sigkill_right_after_put(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    script = textwrap.dedent(f"""
        import os, signal
        from agents.sinks.outbox import Outbox
        spool = Outbox.open({str(path)!r}).channel("mqtt", 1000, 1 << 20)
        for n in range(50):
            spool.put(b"x" * 100, key=f"e{{n}}", route="t")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    with opened(path, 1000, 1 << 20) as spool:
        assert [i.key for i in spool.peek(100)] == [f"e{n}" for n in range(50)]


def test_channels_are_separate_queues_with_their_own_bounds(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox.open(path) as outbox:
        alerts = outbox.channel("mqtt", 100, 1 << 20)
        flows = outbox.channel("flows_file", 5, 1 << 20)
        kept = [alerts.put(f"a{n}".encode(), key=f"a{n}") for n in range(3)]
        for n in range(20):  # a flood on one channel pushes out its own oldest records only
            flows.put(f"f{n}".encode(), key=f"f{n}")
        assert [i.key for i in alerts.peek(100)] == ["a0", "a1", "a2"]
        assert [i.key for i in flows.peek(100)] == [f"f{n}" for n in range(15, 20)]
        assert (flows.depth(), flows.dropped, alerts.dropped) == (5, 15, 0)
        # A channel acknowledges only its own records.
        assert flows.ack_many(kept) == 0 and alerts.depth() == 3
        with pytest.raises(OutboxError, match="already has a channel"):
            outbox.channel("mqtt", 10, 100)
    with Outbox.open(path) as outbox:
        assert outbox.channel("flows_file", 5, 1 << 20).depth() == 5
        assert [i.key for i in outbox.channel("mqtt", 100, 1 << 20).peek(10)] == ["a0", "a1", "a2"]


def test_overfilling_drops_the_oldest_counts_and_warns_once_per_n(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=OUTBOX_LOGGER)
    with Outbox.open(tmp_path / "outbox.sqlite3", drop_log_every=10) as outbox:
        spool = outbox.channel("mqtt", 10, 1 << 20)
        for n in range(25):
            spool.put(b"x" * 10, key=f"e{n}", route="t")
        assert spool.depth() == 10
        assert spool.dropped == 15
        # The newest are kept: during an outage they describe what is happening now.
        assert [i.key for i in spool.peek(100)] == [f"e{n}" for n in range(15, 25)]
        full = records(caplog, logging.WARNING, "oldest record(s)")
        assert len(full) == 2  # the first drop, then the 10th: not one line per record
        assert "up to e0; 1 records dropped so far" in full[0].getMessage()
        assert "10 records dropped so far" in full[1].getMessage()
    summary = records(caplog, logging.WARNING, "15 records dropped in total")
    assert len(summary) == 1 and "mqtt" in summary[0].getMessage()


def test_the_byte_bound_drops_as_many_old_records_as_needed(tmp_path: Path) -> None:
    with opened(tmp_path / "outbox.sqlite3", 1000, 1000) as spool:
        for n in range(3):
            spool.put(b"a" * 300, key=f"small{n}", route="t")
        spool.put(b"b" * 700, key="big", route="t")  # needs the room of two old records: 900 + 700 > 1000
        assert [i.key for i in spool.peek(10)] == ["small2", "big"]
        assert spool.bytes() == 1000
        assert spool.dropped == 2
        with pytest.raises(OutboxError, match="larger than the whole channel") as info:
            spool.put(b"c" * 1001, key="huge", route="t")
        assert info.value.key == "huge" and info.value.sink == "mqtt" and "outbox.sqlite3" in str(info.value)


def test_near_full_warns_on_each_transition_into_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=OUTBOX_LOGGER)
    with opened(tmp_path / "outbox.sqlite3", 10, 1 << 20) as spool:
        ids = [spool.put(b"x", key=f"e{n}", route="t") for n in range(7)]
        assert not spool.near_full
        assert records(caplog, logging.WARNING, "near full") == []
        ids += [spool.put(b"x", key=f"e{n}", route="t") for n in range(7, 10)]  # 8/10 crosses 80 %
        assert spool.near_full
        assert len(records(caplog, logging.WARNING, "near full")) == 1
        spool.ack_many(ids[:5])
        assert not spool.near_full
        assert len(records(caplog, logging.INFO, "below 80 %")) == 1
        for n in range(3):
            spool.put(b"x", key=f"again{n}", route="t")
        assert spool.near_full
        assert len(records(caplog, logging.WARNING, "near full")) == 2
    with opened(tmp_path / "bytes.sqlite3", 1000, 100) as spool:
        spool.put(b"x" * 80, key="e", route="t")  # 80 % of the byte bound
        assert spool.near_full


def test_a_file_that_is_not_a_database_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not SQLite\n" * 200)
    with opened(path, 100, 1 << 20) as spool:
        assert spool.durable and spool.depth() == 0
        spool.put(b"x", key="e", route="t")
        assert spool.depth() == 1
    aside = list(tmp_path.glob("outbox.sqlite3.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes().startswith(b"this is not SQLite")
    errors = records(caplog, logging.ERROR, "moved to")
    assert len(errors) == 1 and "not a database" in errors[0].getMessage()


def test_a_damaged_database_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.sqlite3"
    with opened(path, 1000, 1 << 20) as spool:
        for n in range(200):
            spool.put(os.urandom(500), key=f"e{n}", route="t")
    with path.open("r+b") as fh:  # overwrite table pages in the middle of the file
        fh.seek(3 * 4096)
        fh.write(b"\xff" * 4 * 4096)
    with opened(path, 1000, 1 << 20) as spool:
        assert spool.durable and spool.depth() == 0
        assert spool.put(b"fresh", key="new", route="t") > 0
        assert [i.key for i in spool.peek(10)] == ["new"]
    assert len(list(tmp_path.glob("outbox.sqlite3.corrupt-*"))) == 1
    assert "malformed" in records(caplog, logging.ERROR, "moved to")[0].getMessage()


def test_the_wal_of_a_corrupt_outbox_goes_aside_with_it(tmp_path: Path) -> None:
    # A valid WAL left by a killed agent next to a damaged database: replayed into the fresh outbox it would
    # bring back pages of the damaged one. (SQLite checkpoints it into the damaged file when the outbox
    # closes it after the failed check; a WAL still there then goes aside with its database.)
    path = tmp_path / "outbox.sqlite3"
    with opened(path, 1000, 1 << 20) as spool:
        for n in range(200):
            spool.put(os.urandom(500), key=f"e{n}", route="t")
    script = textwrap.dedent(f"""
        import os, signal
        from agents.sinks.outbox import Outbox
        spool = Outbox.open({str(path)!r}).channel("mqtt", 1000, 1 << 20)
        for n in range(5):
            spool.put(b"x" * 100, key=f"late{{n}}", route="t")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    wal = Path(f"{path}-wal").read_bytes()
    assert len(wal) > 0  # the late records are only in the WAL
    with path.open("r+b") as fh:
        fh.seek(3 * 4096)
        fh.write(b"\xff" * 4 * 4096)
    with opened(path, 1000, 1 << 20) as spool:
        assert spool.depth() == 0 and spool.peek(10) == []
        spool.put(b"fresh", key="new", route="t")
    with opened(path, 1000, 1 << 20) as spool:
        assert [i.key for i in spool.peek(10)] == ["new"]
    assert len([p for p in tmp_path.glob("outbox.sqlite3.corrupt-*") if not p.name.endswith("-wal")]) == 1


def test_an_outbox_that_cannot_be_written_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with opened(blocker / "outbox.sqlite3", 100, 1 << 20) as spool:
        assert not spool.durable
        spool.put(b"x", key="e", route="t")
        assert [i.key for i in spool.peek(10)] == ["e"]
    assert records(caplog, logging.ERROR, "keeping records in memory")


def test_the_file_is_tried_again_and_what_waited_in_memory_moves_into_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agents.sinks.outbox.FILE_RETRY_SECONDS", 0.0)  # at the next operation
    state = tmp_path / "state"
    with opened(state / "outbox.sqlite3", 100, 1 << 20) as spool:  # on disk, with a record left there
        spool.put(b"on-disk", key="old", route="t")
    (state / "outbox.sqlite3").rename(tmp_path / "kept.sqlite3")
    state.rmdir()
    state.write_text("a file where the state directory should be")
    with opened(state / "outbox.sqlite3", 100, 1 << 20) as spool:
        assert not spool.durable
        epoch = spool.epoch
        spool.put(b"in-memory", key="mem1", route="t")
        delivered = spool.peek(10)
        assert [i.key for i in delivered] == ["mem1"]
        assert not spool.durable  # still blocked: it stays in memory, quietly
        # The file system is fixed (here: the directory and the old file come back).
        state.unlink()
        state.mkdir()
        (tmp_path / "kept.sqlite3").rename(state / "outbox.sqlite3")
        spool.put(b"in-memory-2", key="mem2", route="t")  # the next operation tries the file
        assert spool.durable and spool.epoch == epoch + 1
        assert [i.key for i in spool.peek(10)] == ["old", "mem1", "mem2"]  # nothing lost, in order
        assert spool.depth() == 3
    with opened(state / "outbox.sqlite3", 100, 1 << 20) as spool:  # and it is all on disk
        assert [i.key for i in spool.peek(10)] == ["old", "mem1", "mem2"]
    (again,) = records(caplog, logging.WARNING, "can be used again")
    assert "the 1 record(s) kept in memory" in again.getMessage()


@pytest.mark.parametrize(
    ("version", "tables"),
    [
        (0, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"]),  # another program's database
        (2, ["CREATE TABLE outbox (id INTEGER PRIMARY KEY, body BLOB)"]),  # a foreign layout, right version
        (1, ["CREATE TABLE alerts (id INTEGER PRIMARY KEY, data BLOB)"]),  # a broken alert spool
        (2, [SPOOL_V1]),  # a spool marked with the outbox's version
    ],
)
def test_a_file_with_a_foreign_schema_is_moved_aside_not_kept_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, version: int, tables: list[str]
) -> None:
    path = tmp_path / "outbox.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for statement in tables:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
    with opened(path, 100, 1 << 20) as spool:
        assert spool.durable  # a fresh outbox on disk, not alerts in memory for ever
        spool.put(b"x", key="e", route="t")
    with opened(path, 100, 1 << 20) as spool:
        assert [i.key for i in spool.peek(10)] == ["e"]
    assert len(list(tmp_path.glob("outbox.sqlite3.corrupt-*"))) == 1
    (error,) = records(caplog, logging.ERROR, "moved to")
    assert "not an outbox" in error.getMessage() or "columns" in error.getMessage()
    assert not records(caplog, logging.ERROR, "keeping records in memory")


def test_bad_bounds_are_refused(tmp_path: Path) -> None:
    with (
        Outbox.open(tmp_path / "outbox.sqlite3") as outbox,
        pytest.raises(OutboxError, match="must be positive"),
    ):
        outbox.channel("mqtt", 0, 100)


def test_an_alert_spool_is_adopted_and_upgraded_with_its_alerts(tmp_path: Path) -> None:
    """The alert spool of the version before the outbox: its waiting alerts become the MQTT channel's."""
    old, new = tmp_path / "alerts.sqlite3", tmp_path / "outbox.sqlite3"
    with contextlib.closing(sqlite3.connect(old, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(SPOOL_V1)
        db.execute("PRAGMA user_version = 1")
        for n in range(4):
            db.execute(
                "INSERT INTO alerts (event_id, topic, payload, created, attempts) VALUES (?, ?, ?, ?, ?)",
                (f"old{n}", f"camwatch/s/g/alerts/{n}", f"payload{n}".encode(), 1.0, n),
            )
        db.execute("DELETE FROM alerts WHERE event_id = 'old3'")  # acknowledged: its id must not come back
    assert adopt(old, new) is True
    assert not old.exists() and adopt(old, new) is False
    with Outbox.open(new) as outbox:
        spool = outbox.channel("mqtt", 100, 1 << 20)
        items = spool.peek(10)
        assert [(i.key, i.route, i.payload, i.attempts) for i in items] == [
            (f"old{n}", f"camwatch/s/g/alerts/{n}", f"payload{n}".encode(), n) for n in range(3)
        ]
        assert (spool.depth(), spool.bytes()) == (3, 3 * len(b"payload0"))
        assert spool.put(b"new", key="new") == 5  # after every id the spool ever gave out
        assert outbox.channel("flows_file", 10, 100).depth() == 0
    with contextlib.closing(sqlite3.connect(new)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_adopt_leaves_an_existing_outbox_alone(tmp_path: Path) -> None:
    old, new = tmp_path / "alerts.sqlite3", tmp_path / "outbox.sqlite3"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    assert adopt(old, new) is False
    assert (old.read_bytes(), new.read_bytes()) == (b"old", b"new")


def test_the_collector_sums_the_channels_and_never_touches_the_database(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.sqlite3") as outbox:
        registry = CollectorRegistry()
        registry.register(outbox.collector())  # registered before any channel: describe() needs none
        assert scrape(registry) == {
            "camwatch_spool_durable": 1.0,
            "camwatch_spool_alerts": 0.0,
            "camwatch_spool_bytes": 0.0,
            "camwatch_spool_dropped_total": 0.0,
            "camwatch_spool_near_full": 0.0,
        }
        mqtt = outbox.channel("mqtt", 4, 1 << 20)
        other = outbox.channel("other", 100, 1 << 20)
        for n in range(6):
            mqtt.put(b"12345", key=f"m{n}")
        other.put(b"abc", key="o")
        expected = {
            "camwatch_spool_durable": 1.0,
            "camwatch_spool_alerts": 5.0,
            "camwatch_spool_bytes": 23.0,
            "camwatch_spool_dropped_total": 2.0,
            "camwatch_spool_near_full": 1.0,  # mqtt: 4 of 4
        }
        assert scrape(registry) == expected
        outbox.close()  # a scrape after the database is closed still answers from the counters
        assert scrape(registry) == expected


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_enqueue_cost_with_synchronous_full(tmp_path: Path) -> None:
    """Measures `put` (fsync per record); the figure is printed for the record (pytest -s)."""
    payload = encode_record(make_alert("e-measure"))
    n = 300
    with Outbox.open(tmp_path / "outbox.sqlite3") as outbox:
        spool = outbox.channel("mqtt", 10_000, 64 << 20)
        start = time.perf_counter()
        for i in range(n):
            spool.put(payload, key=f"e{i}", route="camwatch/s/g/alerts/3")
        per_record = (time.perf_counter() - start) / n
        assert outbox._conn is not None
        assert outbox._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, as the last put left it
    print(f"\noutbox put, synchronous=FULL, {len(payload)}-byte alert: {per_record * 1e6:.0f} us/record")
    assert per_record < 0.1  # a sanity bound only; an SD card can be far slower than a server disk


def test_an_alert_spool_killed_with_its_commits_in_the_wal_is_adopted_with_them(tmp_path: Path) -> None:
    old, new = tmp_path / "alerts.sqlite3", tmp_path / "outbox.sqlite3"
    script = textwrap.dedent(f"""
        import os, signal, sqlite3
        db = sqlite3.connect({str(old)!r}, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute({SPOOL_V1!r})
        db.execute("PRAGMA user_version = 1")
        for n in range(5):
            db.execute("INSERT INTO alerts (event_id, topic, payload, created) VALUES (?, 't', x'00', 1.0)",
                       (f"wal{{n}}",))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert Path(f"{old}-wal").stat().st_size > 0  # the alerts are in the WAL only
    assert adopt(old, new)
    assert not Path(f"{old}-wal").exists()
    with opened(new, 100, 1 << 20) as spool:
        assert [i.key for i in spool.peek(10)] == [f"wal{n}" for n in range(5)]
