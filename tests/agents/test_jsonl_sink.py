"""JsonLinesSink: a replaced, buffered file by default; appended to and flushed per record with ``append``."""

from __future__ import annotations

from pathlib import Path

from agents.sinks.jsonl import JsonLinesSink


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
