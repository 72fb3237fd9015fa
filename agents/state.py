"""State on disk: the device inventory and the incidents already alerted survive a restart, so neither
`device.new` nor an ongoing incident fires again."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

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


def _write_atomic(path: Path, key: str, value: object) -> Path:
    """Write ``{"version", "saved", key: value}`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_suffix(".json.tmp")
    doc: dict[str, Any] = {"version": STATE_VERSION, "saved": time.time(), key: value}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _read(path: Path, key: str, lost: str) -> list[Any] | None:
    """The list under ``key``; None for a first start. A damaged file is set aside (``lost`` says what
    that costs)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        version = doc.get("version") if isinstance(doc, dict) else None
        if version != STATE_VERSION:
            raise ValueError(f"unknown state version {version!r}")
        items = doc[key]
        if not isinstance(items, list):
            raise ValueError(f"{key} is not a list")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        log.error("%s is damaged (%s): moved to %s; %s", path, exc, aside, lost)
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return None
    return items


def save_inventory(state_dir: Path, inventory: Inventory) -> Path:
    """Write the inventory atomically."""
    return _write_atomic(state_dir / INVENTORY_FILE, "devices", inventory.state())


def load_inventory(state_dir: Path, inventory: Inventory) -> int:
    """Load a saved inventory; a missing file is a first start, a damaged one is set aside."""
    path = state_dir / INVENTORY_FILE
    devices = _read(path, "devices", "devices will be rediscovered")
    if devices is None:
        return 0
    loaded = inventory.restore(devices)
    log.info("loaded %d known devices from %s", loaded, path)
    return loaded


def save_incidents(state_dir: Path, gate: AlertGate) -> Path:
    """Write the incidents already alerted (their event ids and times) atomically."""
    return _write_atomic(state_dir / INCIDENTS_FILE, "incidents", gate.state())


def load_incidents(state_dir: Path, gate: AlertGate) -> int:
    """Load the incidents already alerted, so an ongoing one does not alert again after a restart."""
    path = state_dir / INCIDENTS_FILE
    items = _read(path, "incidents", "ongoing incidents will alert once more")
    if items is None:
        return 0
    loaded = gate.restore(items)
    log.info("loaded %d alerted incidents from %s", loaded, path)
    return loaded
