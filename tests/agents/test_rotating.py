"""RotatingFile: rotation by size, retention by count and age, and a real full disk (a small tmpfs)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agents.sinks.jsonl import JsonLinesFile
from agents.sinks.rotating import DiskFull, RotatingFile, Rotation
from tests.agents.smalldisk import fill, small_disk


def record(n: int, pad: int = 150) -> bytes:
    return json.dumps({"n": n, "pad": "x" * pad}, separators=(",", ":")).encode()


def numbers(paths: list[Path]) -> list[int]:
    """Every record's number across ``paths`` in order; a line that is not whole JSON fails the test."""
    out = []
    for path in paths:
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in half a line"
        out += [json.loads(line)["n"] for line in data.splitlines()]
    return out


def test_a_file_is_rotated_before_it_would_pass_its_size(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    f = RotatingFile(path, Rotation(max_size=2000, max_files=100), "flows_file")
    for n in range(100):
        f.write([record(n, 40)])  # 56 bytes a line
    f.close()
    rotated = f.rotated_files()
    assert len(rotated) == f.rotations == 2
    for old in rotated:
        assert old.name.startswith("flows.") and old.name.endswith(".jsonl")
        assert 2000 - 56 < old.stat().st_size <= 2000  # full, never past the size
    # Nothing lost, nothing twice, in order across the files ("-01" in the same second sorts after).
    assert numbers([*rotated, path]) == list(range(100))
    assert f.written == 100
    assert f.disk_bytes() == sum(p.stat().st_size for p in [*rotated, path])


def test_retention_keeps_the_newest_files_by_count_and_age(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    f = RotatingFile(path, Rotation(max_size=200, max_files=3), "flows_file")
    for n in range(40):
        f.write([record(n, 40)])
    kept = f.rotated_files()
    assert len(kept) == 3 and f.deleted_retention == f.rotations - 3 > 0
    got = numbers([*kept, path])
    assert got == list(range(got[0], 40))  # the newest records, contiguous: the oldest files went first
    # An old file left by an earlier run goes at start-up once it is older than max_age.
    stale = tmp_path / "flows.20200101T000000Z.jsonl"
    stale.write_bytes(record(-1) + b"\n")
    other = tmp_path / "alerts.20200101T000000Z.jsonl"  # another output's file is never touched
    other.write_bytes(b"{}\n")
    aged = RotatingFile(path, Rotation(max_size=200, max_files=10, max_age=86400), "flows_file")
    aged.retain(now=time.time())
    assert not stale.exists() and other.exists()
    assert aged.rotated_files() == kept
    f.close()
    aged.close()


def test_a_full_disk_drops_the_oldest_files_and_keeps_writing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", 256) as disk:
        path = disk / "flows.jsonl"
        f = RotatingFile(path, Rotation(max_size=32 << 10, max_files=1000), "flows_file")
        caplog.set_level(logging.WARNING, "agents.sinks.rotating")
        total = 0
        for batch in range(200):  # about 3.2 MB into 256 KiB
            f.write([record(batch * 100 + i) for i in range(100)])
            total += 100
        f.close()
        files = [*f.rotated_files(), path]
        got = numbers(files)
        # The newest records are all there, contiguous up to the last one written: only the oldest went.
        assert got == list(range(got[0], total))
        assert got[0] > 0 and f.deleted_disk_full > 0
        assert f.dropped_disk_full == 0 and f.written == total
        assert any(
            "disk full writing" in r.message and "deleted the oldest flow file" in r.message
            for r in caplog.records
        )


def test_with_nothing_of_its_own_left_to_delete_the_write_fails_whole(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 128) as disk:
        path = disk / "flows.jsonl"
        f = RotatingFile(path, Rotation(max_size=1 << 20, max_files=10), "flows_file")
        f.write([record(0)])
        fill(disk / "someone-else.bin")  # another program filled the disk
        with pytest.raises(DiskFull):
            f.write([record(n) for n in range(1, 200)])
        # The current file (the output's last) was rotated away and deleted to try; what is there is whole.
        assert f.deleted_disk_full == 1
        assert numbers([*f.rotated_files(), path]) == []
        os.unlink(disk / "someone-else.bin")
        f.write([record(500)])  # room again: writing resumes
        assert numbers([path]) == [500]
        f.close()


def test_the_file_sink_counts_what_a_full_disk_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", 128) as disk:
        sink = JsonLinesFile("flows_file", disk / "flows.jsonl", rotation=Rotation(max_size=1 << 20))
        fill(disk / "someone-else.bin")
        caplog.set_level(logging.ERROR, "agents.sinks.rotating")

        async def run() -> None:
            await sink.start()
            for n in range(10):
                await sink.submit({"n": n})
            await sink.close()

        asyncio.run(run())
        assert sink.failed == 10 and sink.written == 0
        registry = CollectorRegistry()
        collector = sink.collector()
        assert collector is not None
        registry.register(collector)
        text = generate_latest(registry).decode()
        assert 'camwatch_output_records_dropped_total{output="flows_file",reason="disk_full"} 10.0' in text
        assert any("10 records dropped" in r.message for r in caplog.records)


def test_a_batch_larger_than_the_disk_is_split_across_files(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 256) as disk:
        path = disk / "flows.jsonl"
        f = RotatingFile(path, Rotation(max_size=32 << 10, max_files=1000), "flows_file")
        f.write([record(n) for n in range(3000)])  # about 500 KB at once
        f.close()
        files = [*f.rotated_files(), path]
        assert all(p.stat().st_size <= 32 << 10 for p in files)
        got = numbers(files)
        assert got == list(range(got[0], 3000)) and got[0] > 0
        assert f.written == 3000 and f.deleted_disk_full > 0
