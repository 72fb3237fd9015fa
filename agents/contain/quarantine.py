"""The quarantine book: which devices are quarantined, until when, why; escalation and the cap.

The kernel's quarantine sets enforce (each element times out on its own, even with the agent stopped);
this book says who asked, why and for how long, and is what each reload carries into the new ruleset
(``remaining`` seconds per address). It lives in ``<state_dir>/containment/quarantine.json``; the agent
and `camwatch contain` change it under one lock (:func:`agents.contain.files.locked`).

Sans-I/O except :func:`load_book` and :func:`save_book`. Rules (:meth:`QuarantineBook.decide`):

- a never-block address is never quarantined (refused);
- at most ``max_devices`` devices at once: a request beyond that is refused (a bug, a flood of alerts or an
  attacker must not be able to cut off a whole site);
- durations escalate: the n-th quarantine of a device within ``window`` lasts ``durations[n-1]`` (the last
  one repeats);
- an automatic request for a device already quarantined is refused (its time is not extended by repeats);
  an operator's request replaces the entry.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agents.contain.render import TimedAddress
from monitor.policy import IPAddress

__all__ = [
    "BOOK_VERSION",
    "Decision",
    "QuarantineBook",
    "QuarantineEntry",
    "QuarantineSettings",
    "load_book",
    "save_book",
]

log = logging.getLogger(__name__)

BOOK_VERSION: Final = 1
#: Past quarantines remembered per device (for escalation), and devices remembered.
MAX_HISTORY: Final = 16
MAX_HISTORY_DEVICES: Final = 4096


@dataclass(frozen=True, slots=True)
class QuarantineSettings:
    """The ``containment.quarantine`` section (docs/config.md)."""

    durations: tuple[float, ...] = (3600.0, 6 * 3600.0, 86400.0)
    window: float = 7 * 86400.0
    max_devices: int = 5
    #: Rule ids whose alerts quarantine their device automatically (opt-in: empty by default).
    auto_rules: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """One quarantined device. ``device`` is its MAC (``44-19-b6-00-00-01``), or ``ip:<address>`` when
    no MAC is known; times are Unix seconds."""

    device: str
    addresses: tuple[IPAddress, ...]
    since: float
    until: float
    actor: str
    reason: str
    rule: str | None = None
    incident: str | None = None
    level: int = 1

    def remaining(self, now: float) -> float:
        return max(0.0, self.until - now)

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "addresses": [str(a) for a in self.addresses],
            "since": self.since,
            "until": self.until,
            "actor": self.actor,
            "reason": self.reason,
            "rule": self.rule,
            "incident": self.incident,
            "level": self.level,
        }

    @classmethod
    def parse(cls, obj: object) -> QuarantineEntry:
        """From :meth:`to_json`'s form; ValueError names the bad field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"an entry must be an object, not {type(obj).__name__}")

        def get(key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
            value = obj.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{key}: {value!r} is not valid")
            return value

        device = get("device", str)
        addresses = tuple(ipaddress.ip_address(str(a)) for a in get("addresses", list))
        return cls(
            device=device,
            addresses=addresses,
            since=float(get("since", (int, float))),
            until=float(get("until", (int, float))),
            actor=get("actor", str),
            reason=get("reason", str),
            rule=get("rule", str, optional=True),
            incident=get("incident", str, optional=True),
            level=int(get("level", int)),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a quarantine request gets: ``seconds`` at escalation ``level``, or ``refused`` with why."""

    seconds: float = 0.0
    level: int = 0
    refused: str | None = None


@dataclass(slots=True)
class QuarantineBook:
    """The active quarantines by device, and past start times per device (escalation)."""

    active: dict[str, QuarantineEntry] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)

    def decide(
        self,
        device: str,
        addresses: Iterable[IPAddress],
        now: float,
        settings: QuarantineSettings,
        never_block: Container[IPAddress],
        *,
        automatic: bool,
        seconds: float | None = None,
    ) -> Decision:
        """Whether and how long to quarantine ``device`` now; ``seconds`` overrides the escalation (an
        operator's choice)."""
        addrs = list(addresses)
        if not addrs:
            return Decision(refused="no address of the device is known")
        blocked = [a for a in addrs if a in never_block]
        if blocked:
            return Decision(
                refused=f"{', '.join(map(str, blocked))} is on the never-block list (recorder, resolvers, "
                "gateway, management hosts): it is never quarantined"
            )
        current = self.active.get(device)
        if current is not None and current.until > now and automatic:
            return Decision(refused=f"already quarantined until {_iso(current.until)}")
        others = sum(1 for d, e in self.active.items() if e.until > now and d != device)
        if others >= settings.max_devices:
            return Decision(
                refused=f"{others} devices are quarantined already, the most allowed at once "
                f"(containment.quarantine.max_devices: {settings.max_devices})"
            )
        previous = [t for t in self.history.get(device, ()) if now - t < settings.window]
        level = len(previous) + 1
        if seconds is None:
            seconds = settings.durations[min(level, len(settings.durations)) - 1]
        return Decision(seconds=seconds, level=level)

    def add(self, entry: QuarantineEntry) -> None:
        """Record a quarantine (after it was put in the kernel)."""
        self.active[entry.device] = entry
        starts = self.history.setdefault(entry.device, [])
        starts.append(entry.since)
        del starts[:-MAX_HISTORY]
        while len(self.history) > MAX_HISTORY_DEVICES:  # the oldest devices' history goes first
            oldest = min(self.history, key=lambda d: self.history[d][-1] if self.history[d] else 0.0)
            if oldest == entry.device:
                break
            del self.history[oldest]

    def find(self, device: str) -> QuarantineEntry | None:
        """The active entry for a MAC (any separator, any case) or one of its addresses."""
        text = device.strip()
        if text in self.active:  # as the book names it (a MAC, or ip:<address>)
            return self.active[text]
        wanted = text.lower().replace(":", "-")
        if wanted in self.active:
            return self.active[wanted]
        try:
            ip = ipaddress.ip_address(device.strip())
        except ValueError:
            return None
        return next((e for e in self.active.values() if ip in e.addresses), None)

    def release(self, device: str) -> QuarantineEntry | None:
        """Remove the device's active entry (its history stays); the entry, or None if it had none."""
        entry = self.find(device)
        if entry is not None:
            del self.active[entry.device]
        return entry

    def expire(self, now: float) -> list[QuarantineEntry]:
        """Remove and return the entries whose time is up."""
        done = [e for e in self.active.values() if e.until <= now]
        for entry in done:
            del self.active[entry.device]
        return done

    def timed(self, now: float) -> list[TimedAddress]:
        """Every quarantined address with its remaining time (what a reload carries over)."""
        return [
            TimedAddress(a, e.remaining(now))
            for e in self.active.values()
            if e.until > now
            for a in e.addresses
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": BOOK_VERSION,
            "active": [e.to_json() for e in sorted(self.active.values(), key=lambda e: e.since)],
            "history": {d: list(t) for d, t in sorted(self.history.items())},
        }

    @classmethod
    def parse(cls, obj: object) -> QuarantineBook:
        """From :meth:`to_json`'s form; ValueError says what is wrong."""
        if not isinstance(obj, Mapping) or obj.get("version") != BOOK_VERSION:
            raise ValueError(f"not a version {BOOK_VERSION} quarantine book")
        active_raw, history_raw = obj.get("active"), obj.get("history")
        if not isinstance(active_raw, list) or not isinstance(history_raw, Mapping):
            raise ValueError("'active' must be a list and 'history' an object")
        book = cls()
        for index, item in enumerate(active_raw):
            try:
                entry = QuarantineEntry.parse(item)
            except ValueError as exc:
                raise ValueError(f"active[{index}]: {exc}") from None
            book.active[entry.device] = entry
        for device, starts in history_raw.items():
            if isinstance(device, str) and isinstance(starts, list):
                book.history[device] = [float(t) for t in starts if isinstance(t, int | float)][-MAX_HISTORY:]
        return book


def load_book(path: Path) -> QuarantineBook:
    """The book at ``path``; empty when there is none. A damaged file is set aside with an error in the
    log (its quarantines then end at the next reload: the kernel keeps them until then)."""
    try:
        return QuarantineBook.parse(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return QuarantineBook()
    except (OSError, ValueError) as exc:
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        log.error("%s is damaged (%s): moved to %s; its quarantines are forgotten", path, exc, aside)
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return QuarantineBook()


def save_book(path: Path, book: QuarantineBook) -> None:
    """Write the book atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(book.to_json(), fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
