"""The JSON file outputs: JsonLinesSink (replay: replaced and buffered, or appended and flushed per record),
the agent's JsonLinesFile sink (alone, or durable through the outbox) and JsonDocumentFile (the inventory)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.sinks.base import Record, Sink
from agents.sinks.jsonl import JsonDocumentFile, JsonLinesFile
from agents.sinks.lines import JsonLinesSink
from agents.sinks.outbox import Outbox
from tests.agents.helpers.publisher_proc import make_alert
from tests.agents.smalldisk import SKIP_REASON, can_mount, fill, small_disk

ROOT = Path(__file__).parents[2]
DEV_FULL = Path("/dev/full")  # accepts the open, fails every write with ENOSPC


def test_default_mode_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"old":1}\n')
    with JsonLinesSink(str(path)) as sink:
        sink.write({"a": "é", "b": [1, 2]})
    assert path.read_text(encoding="utf-8") == '{"a":"é","b":[1,2]}\n'
    assert sink.count == 1


def test_append_mode_keeps_the_file_and_flushes_each_record(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"old":1}\n')
    sink = JsonLinesSink(path, append=True).open()
    try:
        sink.write({"n": 1})
        assert path.read_text() == '{"old":1}\n{"n":1}\n'  # on disk before the sink closes
        sink.write({"n": 2})
        assert path.read_text() == '{"old":1}\n{"n":1}\n{"n":2}\n'
    finally:
        sink.close()
    sink.close()  # idempotent
    assert sink.count == 2


# --------------------------------------------------------------------------------------------------
# The agent's file sinks: JsonLinesFile (alerts_file, flows_file) and JsonDocumentFile (inventory_file)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_lines_file_appends_each_record_in_order_and_flushes_it(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    path.write_text('{"kept":true}\n')

    async def scenario() -> None:
        sink = JsonLinesFile("flows_file", path)
        await sink.submit({"n": 0, "text": "é"})  # before start: written once it starts
        await sink.start()
        for n in range(1, 300):
            await sink.submit({"n": n})
        await until(lambda: len(read_lines(path)) == 301)  # on disk while the sink runs
        await sink.submit({"n": 300})
        await sink.close()
        await sink.close()  # idempotent
        assert (sink.written, sink.failed) == (301, 0)
        as_sink: Sink[Record] = sink  # it is a Sink; without metrics of its own
        assert as_sink.collector() is None

    asyncio.run(scenario())
    assert read_lines(path) == [{"kept": True}, {"n": 0, "text": "é"}, *({"n": n} for n in range(1, 301))]
    assert path.read_text(encoding="utf-8").splitlines()[1] == '{"n":0,"text":"é"}'  # compact, UTF-8


def test_a_lines_file_that_cannot_be_written_logs_and_counts_the_lost_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> JsonLinesFile:
        sink = JsonLinesFile("alerts_file", DEV_FULL)  # every write fails: no space left on device
        await sink.start()
        for n in range(3):
            await sink.submit({"n": n})
        await sink.close()
        return sink

    sink = asyncio.run(scenario())
    assert sink.failed == 3 and sink.written == 0
    assert any("cannot write" in r.getMessage() and "/dev/full" in r.getMessage() for r in caplog.records)


def test_with_an_outbox_a_record_waits_until_the_file_has_it_and_survives_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk: the records stay in the outbox, retried; after a restart they reach the file, once."""
    outbox_path, path = tmp_path / "outbox.sqlite3", tmp_path / "flows.jsonl"
    wanted = [make_alert(f"e{n}") for n in range(5)]

    async def disk_full() -> None:
        with Outbox.open(outbox_path) as outbox:
            sink = JsonLinesFile("flows_file", DEV_FULL, outbox.channel("flows_file", 100, 1 << 20))
            await sink.start()
            for record in wanted:
                await sink.submit(record)  # returns once the record is in the outbox
            assert sink.channel is not None
            assert sink.channel.depth() == 5
            await until(lambda: any("records wait in the outbox" in r.getMessage() for r in caplog.records))
            await sink.close()
            assert sink.channel.depth() == 5 and sink.written == 0  # nothing acknowledged, nothing lost

    async def restarted() -> int:
        with Outbox.open(outbox_path) as outbox:
            channel = outbox.channel("flows_file", 100, 1 << 20)
            sink = JsonLinesFile("flows_file", path, channel)
            await sink.start()
            await until(lambda: channel.depth() == 0)
            await sink.submit({"after": "restart"})
            await sink.close()
            return channel.depth()

    asyncio.run(disk_full())
    assert asyncio.run(restarted()) == 0
    assert read_lines(path) == [*wanted, {"after": "restart"}]


def test_with_an_outbox_records_submitted_before_a_sigkill_are_written_after_the_restart(
    tmp_path: Path,
) -> None:
    outbox_path, path = tmp_path / "outbox.sqlite3", tmp_path / "alerts.jsonl"
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from pathlib import Path
        from agents.sinks.jsonl import JsonLinesFile
        from agents.sinks.outbox import Outbox

        async def main():
            channel = Outbox.open({str(outbox_path)!r}).channel("alerts_file", 100, 1 << 20)
            sink = JsonLinesFile("alerts_file", Path("/dev/full"), channel)
            await sink.start()
            for n in range(20):
                await sink.submit({{"event": {{"id": f"k{{n}}"}}}})
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr

    async def restarted() -> None:
        with Outbox.open(outbox_path) as outbox:
            sink = JsonLinesFile("alerts_file", path, outbox.channel("alerts_file", 100, 1 << 20))
            await sink.start()
            await sink.close()

    asyncio.run(restarted())
    assert [r["event"]["id"] for r in read_lines(path)] == [f"k{n}" for n in range(20)]


def test_a_document_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"

    async def scenario() -> JsonDocumentFile:
        sink = JsonDocumentFile("inventory_file", path)
        await sink.start()
        await sink.submit([{"mac": "44-19-b6-00-00-01", "vendor": "hikvision"}])
        first = path.read_text(encoding="utf-8")
        assert json.loads(first) == [{"mac": "44-19-b6-00-00-01", "vendor": "hikvision"}]
        assert first.startswith('[\n {\n  "mac"') and first.endswith("]\n")  # as `replay --inventory`
        await sink.submit([])
        await sink.close()
        return sink

    sink = asyncio.run(scenario())
    assert json.loads(path.read_text()) == [] and sink.written == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.json"]  # no temporary file left


def test_a_document_file_that_cannot_be_written_keeps_the_last_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "inventory.json"

    async def scenario() -> JsonDocumentFile:
        sink = JsonDocumentFile("inventory_file", path)
        await sink.submit({"devices": 1})
        await sink.submit({"not json": {1, 2}})  # a set: TypeError while encoding
        return sink

    sink = asyncio.run(scenario())
    assert json.loads(path.read_text()) == {"devices": 1}
    assert sink.failed == 1 and any("cannot write" in r.getMessage() for r in caplog.records)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.skipif(not can_mount(), reason=SKIP_REASON)
def test_a_lines_file_on_a_full_disk_keeps_its_records_and_writes_them_when_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agents.sinks.jsonl.RETRY_SECONDS", 0.05)
    records = [{"n": n, "text": "x" * 80} for n in range(60)]

    async def scenario(disk: Path) -> tuple[int, int, int]:
        sink = JsonLinesFile("alerts_file", disk / "alerts.jsonl")
        await sink.start()
        filler = fill(disk)
        for record in records:
            await sink.submit(record)
        while sink.waiting == 0 or not any("cannot write" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.01)  # the writer tried, and the disk said no
        waiting = sink.waiting
        filler.unlink()  # room again: the records that waited are written, in order
        while sink.waiting:
            await asyncio.sleep(0.01)
        await sink.close()
        return waiting, sink.written, sink.failed

    with small_disk(tmp_path / "disk", "64k") as disk:
        waiting, written, failed = asyncio.run(scenario(disk))
        lines = (disk / "alerts.jsonl").read_bytes().split(b"\n")
    assert waiting > 0 and failed == 0 and written == len(records)
    parsed = []
    for line in lines:
        with contextlib.suppress(ValueError):
            parsed.append(json.loads(line))
    assert parsed == records  # each record once and whole, in order (a line cut by the full disk is its own)
    errors = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert any("writing to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
