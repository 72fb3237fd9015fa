"""The audit log: records, appending, reading from an offset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.contain.audit import AuditLog, AuditRecord, last_records, read_audit
from agents.contain.files import ContainmentFiles


def test_a_record_round_trips_through_its_line() -> None:
    record = AuditRecord(
        1_770_000_000.5, "quarantine", "applied", "agent", "automatic: alert p2p.nat_traversal",
        mode="enforce", rule="p2p.nat_traversal", incident="abc", device="44-19-b6-00-00-01",
        addresses=("10.20.0.11",), expires=1_770_003_600.0, level=1, plan="0123456789abcdef",
        observer="depot-7/gw-1",
    )  # fmt: skip
    obj = json.loads(record.line())
    assert obj["@timestamp"] == "2026-02-02T02:40:00.500Z" and obj["expires"] == "2026-02-02T03:40:00Z"
    assert AuditRecord.parse(record.line()) == record
    # Empty optional fields are left out.
    minimal = AuditRecord(0.0, "apply", "refused", "cli:root", "why")
    assert set(json.loads(minimal.line())) == {"@timestamp", "action", "outcome", "actor", "reason"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[]", "a record must be a JSON object"),
        ("{", "not JSON"),
        ('{"@timestamp": "x", "action": "apply"}', "a time is not ISO 8601"),
        ('{"@timestamp": "2026-01-01T00:00:00Z", "action": "jump", "outcome": "applied", "actor": "a", '
         '"reason": "r"}', "action 'jump' is not one of"),
        ('{"@timestamp": "2026-01-01T00:00:00Z", "action": "apply", "outcome": "applied", "actor": "a", '
         '"reason": "r", "addresses": "10.0.0.1"}', "addresses: must be a list"),
    ],
)  # fmt: skip
def test_parse_says_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuditRecord.parse(line)


def test_the_log_appends_and_reads_from_where_it_was(tmp_path: Path) -> None:
    log = AuditLog(ContainmentFiles.at(tmp_path), "site/gw")
    first = log.new("apply", "applied", "agent", "start", plan="p")
    assert first.observer == "site/gw"
    lines, offset = read_audit(log.path)
    assert [r for _, r, _ in lines] == [first] and offset == log.path.stat().st_size
    log.new("remove", "applied", "cli:root", "maintenance")
    # A line still being written is left for the next read; a line that is not a record is passed on.
    with log.path.open("ab") as fh:
        fh.write(b'garbage\n{"half": ')
    more, after = read_audit(log.path, offset)
    assert [r.action if r else None for _, r, _ in more] == ["remove", None]
    assert more[-1][2] == b"garbage" and after == log.path.stat().st_size - len(b'{"half": ')
    assert [r.action for r in last_records(log.path, 5)] == ["apply", "remove"]
    # A log replaced by a shorter one is read again from its start.
    log.path.write_bytes(first.line())
    again, _ = read_audit(log.path, after)
    assert [r for _, r, _ in again] == [first]
    assert read_audit(tmp_path / "none.jsonl") == ([], 0)
