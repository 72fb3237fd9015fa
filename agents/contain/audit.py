"""The containment audit log: one JSON line per change, appended, never rewritten.

Every apply (or refusal to apply), removal, quarantine (or refusal), release and expiry is written here
by whoever made it, the agent or `camwatch contain`, before the command returns. The agent publishes
each line over MQTT (``<prefix>/<site>/<gateway>/containment``, QoS 1) from the file, in order, so a
change made by a command while the agent was stopped goes out when it starts; ``audit.published`` says
how far it got.

A record (docs/containment.md, "Audit log")::

    {"@timestamp": "2026-02-02T10:00:00.123Z", "action": "quarantine", "outcome": "applied",
     "actor": "agent", "reason": "rule p2p.nat_traversal: ...", "mode": "enforce",
     "rule": "p2p.nat_traversal", "incident": "<event.id>", "device": "44-19-b6-00-00-01",
     "addresses": ["10.77.0.11"], "expires": "2026-02-02T11:00:00Z", "level": 1,
     "plan": "e7946ca72322b30a", "observer": "lab/cwlab-gw"}

``action``: ``apply``, ``remove``, ``quarantine``, ``release``, ``expire``. ``outcome``: ``applied``,
``unchanged``, ``dry-run`` (what would have been done), ``refused`` (a check said no: nothing changed),
``failed`` (nft said no: nothing changed). ``actor``: ``agent``, ``cli:<user>``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from agents.contain.files import ContainmentFiles

__all__ = ["ACTIONS", "OUTCOMES", "AuditLog", "AuditRecord", "read_audit"]

ACTIONS: Final = ("apply", "remove", "quarantine", "release", "expire")
OUTCOMES: Final = ("applied", "unchanged", "dry-run", "refused", "failed")
#: A line longer than this is not a record of ours (bounded reads of a damaged file).
MAX_LINE: Final = 64 * 1024


def _iso(ts: float, ms: bool = True) -> str:
    # From whole milliseconds, rounded: what is written reads back as the same number.
    millis = round(ts * 1000)
    text = datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{millis % 1000:03d}Z" if ms else f"{text}Z"


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One change. Times are Unix seconds here and ISO 8601 UTC on disk."""

    ts: float
    action: str
    outcome: str
    actor: str
    reason: str
    mode: str | None = None
    rule: str | None = None
    incident: str | None = None
    device: str | None = None
    addresses: tuple[str, ...] = ()
    expires: float | None = None
    level: int | None = None
    plan: str | None = None
    observer: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    def to_json(self) -> dict[str, Any]:
        """The record as written (optional fields left out when empty)."""
        out: dict[str, Any] = {
            "@timestamp": _iso(self.ts),
            "action": self.action,
            "outcome": self.outcome,
            "actor": self.actor,
            "reason": self.reason,
        }
        optional: dict[str, Any] = {
            "mode": self.mode,
            "rule": self.rule,
            "incident": self.incident,
            "device": self.device,
            "addresses": list(self.addresses) or None,
            "expires": _iso(self.expires, ms=False) if self.expires is not None else None,
            "level": self.level,
            "plan": self.plan,
            "observer": self.observer,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    def line(self) -> bytes:
        return (json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n").encode()

    @classmethod
    def parse(cls, line: str | bytes) -> AuditRecord:
        """One line of the log; ValueError names what is wrong."""
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(obj, Mapping):
            raise ValueError("a record must be a JSON object")

        def text(key: str, optional: bool = False) -> str | None:
            value = obj.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str):
                raise ValueError(f"{key}: {value!r} is not text")
            return value

        try:
            ts = _parse_iso(text("@timestamp") or "")
            expires_text = text("expires", optional=True)
            expires = _parse_iso(expires_text) if expires_text else None
        except ValueError as exc:
            raise ValueError(f"a time is not ISO 8601: {exc}") from None
        addresses = obj.get("addresses") or []
        level = obj.get("level")
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ValueError("addresses: must be a list of text")
        if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
            raise ValueError(f"level: {level!r} is not a whole number")
        return cls(
            ts=ts,
            action=text("action") or "",
            outcome=text("outcome") or "",
            actor=text("actor") or "",
            reason=text("reason") or "",
            mode=text("mode", True),
            rule=text("rule", True),
            incident=text("incident", True),
            device=text("device", True),
            addresses=tuple(addresses),
            expires=expires,
            level=level,
            plan=text("plan", True),
            observer=text("observer", True),
        )


class AuditLog:
    """Appends records to the audit file (``O_APPEND``, fsync: a record written is a record kept)."""

    def __init__(self, files: ContainmentFiles, observer: str | None = None) -> None:
        self.files = files
        self.path = files.audit
        self.observer = observer

    def write(self, record: AuditRecord) -> AuditRecord:
        """Append ``record`` (with this log's observer when it has none); returns what was written."""
        if record.observer is None and self.observer is not None:
            record = replace(record, observer=self.observer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, record.line())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            self.files.hand_over(self.path)
        return record

    def new(self, action: str, outcome: str, actor: str, reason: str, **fields: Any) -> AuditRecord:
        """Build and append a record stamped now (to the millisecond, as written)."""
        return self.write(AuditRecord(round(time.time(), 3), action, outcome, actor, reason, **fields))


def read_audit(path: Path, offset: int = 0) -> tuple[list[tuple[int, AuditRecord | None, bytes]], int]:
    """Complete lines from byte ``offset`` on: (end offset of the line, the record or None when the line
    is not a record, the line) each, and the offset after the last complete line. A log shorter than
    ``offset`` was replaced: reading starts again from its beginning."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    if size < offset:
        offset = 0
    out: list[tuple[int, AuditRecord | None, bytes]] = []
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(size - offset)
    position = offset
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break  # a line being written: read it next time
        position += len(raw)
        line = raw.rstrip(b"\n")
        if not line.strip() or len(line) > MAX_LINE:
            out.append((position, None, line[:200]))
            continue
        try:
            out.append((position, AuditRecord.parse(line), line))
        except ValueError:
            out.append((position, None, line[:200]))
    return out, position


def last_records(path: Path, count: int) -> Sequence[AuditRecord]:
    """The last ``count`` records of the log (for `camwatch contain status`)."""
    lines, _ = read_audit(path)
    return [r for _, r, _ in lines if r is not None][-count:]
