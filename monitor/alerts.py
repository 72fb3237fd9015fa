"""Alert records (ECS; docs/design.md, "Alert record"), stable incident ids, and duplicate suppression.

The rules themselves are declared by their modules under ``monitor/rules/``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

NS = 1_000_000_000
#: ``event.severity`` and what it means (docs/design.md §4.2); MQTT topics end in the number.
SEVERITY_NAMES = {2: "info", 3: "warning", 4: "high"}


def severity_name(severity: object) -> str:
    """The word for an ``event.severity`` (``info``, ``warning``, ``high``), or the value as text."""
    return SEVERITY_NAMES.get(severity, str(severity)) if isinstance(severity, int) else str(severity)


@dataclass(frozen=True, slots=True)
class Rule:
    """A detection rule: the id is a stable contract, the name is for people."""

    id: str
    name: str
    severity: int
    category: tuple[str, ...] = ("network",)
    type: tuple[str, ...] = ("connection",)


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str | None = None
    port: int | None = None
    mac: str | None = None
    domain: str | None = None

    def to_ecs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ip is not None:
            out["ip"] = self.ip
        if self.port is not None:
            out["port"] = self.port
        if self.mac is not None:
            out["mac"] = self.mac
        if self.domain is not None:
            out["domain"] = self.domain
        return out


@dataclass(frozen=True, slots=True)
class Alert:
    """One incident. `event_id` is derived from the incident's identity, not from time."""

    rule: Rule
    timestamp_ns: int
    event_id: str
    observer: str
    message: str
    source: Endpoint = field(default_factory=Endpoint)
    destination: Endpoint = field(default_factory=Endpoint)
    transport: str | None = None
    protocol: str | None = None
    community_id: str | None = None
    device_id: str | None = None
    manufacturer: str | None = None
    start_ns: int | None = None  # when what the alert is about began, if earlier than the alert

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready ECS record of docs/design.md §4.2."""
        rec: dict[str, Any] = {
            "@timestamp": iso_timestamp(self.timestamp_ns),
            "event": {
                "kind": "alert",
                "id": self.event_id,
                "severity": self.rule.severity,
                "category": list(self.rule.category),
                "type": list(self.rule.type),
            },
            "rule": {"id": self.rule.id, "name": self.rule.name},
        }
        if self.start_ns is not None:
            rec["event"]["start"] = iso_timestamp(self.start_ns)
        src, dst = self.source.to_ecs(), self.destination.to_ecs()
        if src:
            rec["source"] = src
        if dst:
            rec["destination"] = dst
        net = {
            k: v
            for k, v in (
                ("transport", self.transport),
                ("protocol", self.protocol),
                ("community_id", self.community_id),
            )
            if v is not None
        }
        if net:
            rec["network"] = net
        if self.device_id is not None:
            rec["device"] = {"manufacturer": self.manufacturer, "id": self.device_id}
        rec["observer"] = {"name": self.observer}
        rec["message"] = self.message
        return rec


def incident_id(rule_id: str, observer: str, *parts: object) -> str:
    """Stable id of an incident: the same rule, observer and identifying parts give the same id."""
    text = "\x1f".join([rule_id, observer, *(str(p) for p in parts)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def iso_timestamp(ts_ns: int) -> str:
    dt = datetime.fromtimestamp(ts_ns // NS, tz=UTC)
    ms = (ts_ns % NS) // 1_000_000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


class AlertGate:
    """Lets the first alert of an incident through, then suppresses repeats for a while.

    Time is the capture time carried by the alerts, so a replay is deterministic.
    """

    def __init__(self, realert_after_s: float = 86_400.0, max_tracked: int = 100_000) -> None:
        self._window = int(realert_after_s * NS)
        self._max = max_tracked
        self._last: dict[str, int] = {}
        self.suppressed = 0
        self.evicted = 0  # incidents forgotten at the bound (a repeat of one would alert again)

    def admit(self, alert: Alert) -> bool:
        last = self._last.get(alert.event_id)
        if last is not None and alert.timestamp_ns - last < self._window:
            self.suppressed += 1
            return False
        if last is None and len(self._last) >= self._max:
            # Forget the oldest incident (dicts keep insertion order) to stay bounded.
            del self._last[next(iter(self._last))]
            self.evicted += 1
        self._last.pop(alert.event_id, None)
        self._last[alert.event_id] = alert.timestamp_ns
        return True

    def state(self) -> list[list[object]]:
        """The incidents seen, oldest first, as ``[event_id, timestamp_ns]`` pairs (JSON-ready)."""
        return [[event_id, ts] for event_id, ts in self._last.items()]

    def restore(self, items: object) -> int:
        """Take back what :meth:`state` gave (a restart within the window must not re-alert); entries of
        the wrong shape are skipped. Returns how many were restored."""
        if not isinstance(items, list):
            return 0
        restored = 0
        for item in items[-self._max :]:
            if (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
            ):
                self._last.pop(item[0], None)
                self._last[item[0]] = item[1]
                restored += 1
        while len(self._last) > self._max:
            del self._last[next(iter(self._last))]
        return restored
