"""State on disk: the device inventory and the incidents already alerted survive a restart, so neither
`device.new` nor an ongoing incident fires again.

Nothing in a state file may stop the agent (docs/design.md §4.8): a file that cannot be used whole (not
JSON, nested deeper than the parser goes, ``NaN``/``Infinity``, another version) is set aside as
``<name>.damaged-<unix time>`` with one log line and the agent starts without it; a file with some unusable
entries (a MAC that is not a 48-bit number, a time out of range) is loaded without them and a copy of it is
kept the same way, with one log line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from monitor.alerts import AlertGate
from monitor.devices import Inventory

log = logging.getLogger(__name__)

STATE_VERSION = 1
INVENTORY_FILE = "inventory.json"
INCIDENTS_FILE = "incidents.json"
#: The outbox of the durable sinks (agents/sinks/outbox.py).
OUTBOX_FILE = "outbox.sqlite3"
#: The alert spool the outbox replaced; renamed to OUTBOX_FILE at start-up, its alerts kept.
LEGACY_SPOOL_FILE = "alerts.sqlite3"
#: Every file the agent keeps in the state directory (agents/probe/scheduler.py's STATE_FILE too).
STATE_FILES = (INVENTORY_FILE, INCIDENTS_FILE, OUTBOX_FILE, LEGACY_SPOOL_FILE, "stream_probe.json")
#: State files are the agent's alone.
STATE_FILE_MODE: Final = 0o600

_MAC_LIMIT: Final = 1 << 48
# Times are Unix nanoseconds: at most 2**63 - 1 (year 2262), never negative.
_TIME_LIMIT: Final = 1 << 63


class DamagedState(ValueError):
    """A state file that cannot be used whole."""


def _write_atomic(path: Path, key: str, value: object) -> Path:
    """Write ``{"version", "saved", key: value}`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_suffix(".json.tmp")
    doc: dict[str, Any] = {"version": STATE_VERSION, "saved": time.time(), key: value}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, STATE_FILE_MODE)
    with open(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, separators=(",", ":"), allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _no_constant(name: str) -> object:
    raise DamagedState(f"{name} is not a number a state file holds")


def _parse(text: str) -> object:
    """JSON as the agent writes it: no NaN or Infinity; nesting too deep for the parser is damage too."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError as exc:
        raise DamagedState("nested too deeply to be a state file") from exc


def set_aside(path: Path, *, copy: bool = False) -> Path | None:
    """Move (or copy) ``path`` to ``<name>.damaged-<unix time>[.n]``; the new path, or None if that failed."""
    stamp = int(time.time())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.damaged-{stamp}.{n}")
        n += 1
    try:
        if copy:
            shutil.copyfile(path, aside, follow_symlinks=False)
        else:
            os.replace(path, aside)
    except OSError as exc:
        log.error("cannot set %s aside as %s: %s", path, aside, exc)
        return None
    return aside


def _read(path: Path, key: str, lost: str) -> list[Any] | None:
    """The list under ``key``; None for a first start. A damaged file is set aside (``lost`` says what
    that costs)."""
    try:
        # O_NOFOLLOW: read as root at start-up, from a directory run_as_user owns.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, encoding="utf-8") as fh:
            doc = _parse(fh.read())
        version = doc.get("version") if isinstance(doc, dict) else None
        if version != STATE_VERSION:
            raise DamagedState(f"unknown state version {version!r}")
        assert isinstance(doc, dict)
        items = doc.get(key)
        if not isinstance(items, list):
            raise DamagedState(f"{key} is not a list")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # DamagedState, a JSON error and text that is not UTF-8 included
        _damaged(path, exc, lost)
        return None
    return items


def _damaged(path: Path, exc: BaseException, lost: str) -> None:
    aside = set_aside(path)
    where = f"moved to {aside}" if aside is not None else "left where it is"
    log.error("%s is damaged (%s): %s; %s", path, _reason(exc), where, lost)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, DamagedState) else text


def _load(
    path: Path, key: str, lost: str, usable: Callable[[Any], str | None], restore: Callable[[list[Any]], int]
) -> int:
    """Read ``path``, keep the entries ``usable`` finds nothing wrong with, and ``restore`` them."""
    items = _read(path, key, lost)
    if items is None:
        return 0
    good: list[Any] = []
    problems: list[str] = []
    for item in items:
        problem = usable(item)
        if problem is None:
            good.append(item)
        else:
            problems.append(problem)
    try:
        loaded = restore(good)
    except Exception as exc:  # whatever a damaged entry makes the restore raise, the agent starts
        _damaged(path, exc, lost)
        return 0
    if problems:
        aside = set_aside(path, copy=True)
        kept = f"a copy of the file is kept as {aside}" if aside is not None else "no copy could be kept"
        log.error(
            "%s: %d of %d entries are unusable (first: %s) and skipped: %s; %s",
            path,
            len(problems),
            len(items),
            problems[0],
            kept,
            lost,
        )
    return loaded


def _ns(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    if type(value) is not int or not 0 <= value < _TIME_LIMIT:
        return f"{name} {str(value)[:40]} is not a time in nanoseconds"
    return None


def _usable_device(item: Any) -> str | None:
    """What is wrong with a saved device, or None (the inventory checks the rest of its shape)."""
    if not isinstance(item, dict):
        return f"an entry is a {type(item).__name__}, not an object"
    mac = item.get("mac")
    if type(mac) is not int or not 0 <= mac < _MAC_LIMIT:
        return f"mac {str(mac)[:40]} is not a 48-bit MAC address"
    return _ns(item, "first_seen_ns") or _ns(item, "last_seen_ns")


def _usable_incident(item: Any) -> str | None:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        return f"{str(item)[:40]} is not [event id, time]"
    if type(item[1]) is not int or not 0 <= item[1] < _TIME_LIMIT:
        return f"time {str(item[1])[:40]} is out of range"
    return None


def save_inventory(state_dir: Path, inventory: Inventory) -> Path:
    """Write the inventory atomically."""
    return _write_atomic(state_dir / INVENTORY_FILE, "devices", inventory.state())


def load_inventory(state_dir: Path, inventory: Inventory) -> int:
    """Load a saved inventory; a missing file is a first start, a damaged one is set aside."""
    path = state_dir / INVENTORY_FILE
    loaded = _load(path, "devices", "devices will be rediscovered", _usable_device, inventory.restore)
    if loaded:
        log.info("loaded %d known devices from %s", loaded, path)
    return loaded


def save_incidents(state_dir: Path, gate: AlertGate) -> Path:
    """Write the incidents already alerted (their event ids and times) atomically."""
    return _write_atomic(state_dir / INCIDENTS_FILE, "incidents", gate.state())


def load_incidents(state_dir: Path, gate: AlertGate) -> int:
    """Load the incidents already alerted, so an ongoing one does not alert again after a restart."""
    path = state_dir / INCIDENTS_FILE
    loaded = _load(
        path, "incidents", "ongoing incidents will alert once more", _usable_incident, gate.restore
    )
    if loaded:
        log.info("loaded %d alerted incidents from %s", loaded, path)
    return loaded


__all__ = [
    "INCIDENTS_FILE",
    "INVENTORY_FILE",
    "LEGACY_SPOOL_FILE",
    "OUTBOX_FILE",
    "STATE_FILES",
    "DamagedState",
    "load_incidents",
    "load_inventory",
    "save_incidents",
    "save_inventory",
    "set_aside",
]
