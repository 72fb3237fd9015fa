"""One camera's incidents, from one probe outcome to the next: when to raise, when to clear.

Pure logic (no I/O, no clock: times are given), so it is tested probe by probe. The rules:

- ``stream.unavailable`` is raised on the first failed probe (``unavailable_after``): a camera that
  stops delivering video is news at once. A failed probe says nothing about the picture, so open
  image incidents stay open and image streaks start again.
- ``stream.black`` / ``stream.covered`` / ``stream.frozen`` are raised after ``image_after`` (2)
  consecutive probes with that verdict, so one odd window (a light switched off, a bus parked in
  front of the lens for four seconds) does not page anyone.
- An incident clears on the first probe that does not show its problem; the next occurrence is a
  new incident.
- One alert per incident: ``event.id`` is derived from the rule, observer, camera and the time the
  incident started (its first bad probe), so the same incident always has the same id, even after a
  restart (:meth:`CameraHealth.state` / :meth:`CameraHealth.restore`), and a later incident another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from agents.probe.reports import PROBLEMS
from monitor.alerts import incident_id

__all__ = ["IMAGE_RULES", "UNAVAILABLE", "CameraHealth", "Change", "Incident", "Outcome"]

UNAVAILABLE: Final = "stream.unavailable"
#: Image problem -> rule id.
IMAGE_RULES: Final = {problem: f"stream.{problem}" for problem in PROBLEMS}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one probe concluded: the stream delivered video (``up``), and the image problem seen."""

    up: bool
    problem: str | None = None  # one of PROBLEMS, only when up

    def __post_init__(self) -> None:
        if self.problem is not None and (not self.up or self.problem not in IMAGE_RULES):
            raise ValueError(f"problem {self.problem!r} needs up=True and one of {', '.join(PROBLEMS)}")


@dataclass(frozen=True, slots=True)
class Incident:
    """An open incident: its rule, stable event id, and when it started (first bad probe, ns)."""

    rule_id: str
    event_id: str
    since_ns: int


@dataclass(frozen=True, slots=True)
class Change:
    """An incident raised (alert it) or cleared; ``probes`` is how many bad probes it took."""

    kind: Literal["raise", "clear"]
    incident: Incident
    probes: int


class CameraHealth:
    """Incident state of one camera (``camera`` is its configured name)."""

    def __init__(self, camera: str, observer: str, image_after: int = 2, unavailable_after: int = 1) -> None:
        if image_after < 1 or unavailable_after < 1:
            raise ValueError("image_after and unavailable_after must be at least 1")
        self.camera = camera
        self.observer = observer
        self.image_after = image_after
        self.unavailable_after = unavailable_after
        self.open: dict[str, Incident] = {}
        self._streaks: dict[str, tuple[int, int]] = {}  # rule id -> (bad probes in a row, first at ns)

    def streak(self, rule_id: str) -> int:
        """Consecutive bad probes for ``rule_id`` up to now."""
        return self._streaks.get(rule_id, (0, 0))[0]

    def update(self, outcome: Outcome, now_ns: int) -> list[Change]:
        """Take one probe's outcome; returns the incidents raised and cleared by it."""
        changes: list[Change] = []
        if not outcome.up:
            for rule in IMAGE_RULES.values():
                self._streaks.pop(rule, None)
            self._bad(UNAVAILABLE, now_ns, self.unavailable_after, changes)
            return changes
        self._good(UNAVAILABLE, changes)
        for problem, rule in IMAGE_RULES.items():
            if outcome.problem == problem:
                self._bad(rule, now_ns, self.image_after, changes)
            else:
                self._good(rule, changes)
        return changes

    def _bad(self, rule: str, now_ns: int, after: int, changes: list[Change]) -> None:
        count, since = self._streaks.get(rule, (0, now_ns))
        count += 1
        self._streaks[rule] = (count, since)
        if count >= after and rule not in self.open:
            incident = Incident(rule, incident_id(rule, self.observer, self.camera, since), since)
            self.open[rule] = incident
            changes.append(Change("raise", incident, count))

    def _good(self, rule: str, changes: list[Change]) -> None:
        count, _ = self._streaks.pop(rule, (0, 0))
        incident = self.open.pop(rule, None)
        if incident is not None:
            changes.append(Change("clear", incident, count))

    def state(self) -> dict[str, Any]:
        """The open incidents and streaks, JSON-ready."""
        return {
            "open": {r: {"event_id": i.event_id, "since_ns": i.since_ns} for r, i in self.open.items()},
            "streaks": {r: list(s) for r, s in self._streaks.items()},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state`; ValueError (and nothing changed) when it is malformed."""
        open_: dict[str, Incident] = {}
        streaks: dict[str, tuple[int, int]] = {}
        known = {UNAVAILABLE, *IMAGE_RULES.values()}
        raw_open, raw_streaks = state.get("open", {}), state.get("streaks", {})
        if not isinstance(raw_open, Mapping) or not isinstance(raw_streaks, Mapping):
            raise ValueError(f"camera {self.camera}: 'open' and 'streaks' must be mappings")
        for rule, value in raw_open.items():
            if rule not in known or not isinstance(value, Mapping):
                raise ValueError(f"camera {self.camera}: unknown or malformed incident {rule!r}")
            event_id, since = value.get("event_id"), value.get("since_ns")
            if type(since) is not int or not 0 <= since < 1 << 63 or not isinstance(event_id, str):
                raise ValueError(f"camera {self.camera}: incident {rule} needs event_id and since_ns")
            open_[rule] = Incident(rule, event_id, since)
        for rule, value in raw_streaks.items():
            if (
                rule not in known
                or not isinstance(value, list)
                or len(value) != 2
                or not all(type(v) is int and 0 <= v < 1 << 63 for v in value)
            ):
                raise ValueError(f"camera {self.camera}: malformed streak {rule!r}")
            streaks[rule] = (value[0], value[1])
        self.open, self._streaks = open_, streaks
