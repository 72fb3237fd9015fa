"""State on disk: the device inventory survives a restart, so `device.new` does not fire again."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from monitor.devices import Inventory

log = logging.getLogger(__name__)

STATE_VERSION = 1
INVENTORY_FILE = "inventory.json"


def save_inventory(state_dir: Path, inventory: Inventory) -> Path:
    """Write the inventory atomically (temporary file, fsync, rename)."""
    path = state_dir / INVENTORY_FILE
    tmp = path.with_suffix(".json.tmp")
    doc: dict[str, Any] = {"version": STATE_VERSION, "saved": time.time(), "devices": inventory.state()}
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_inventory(state_dir: Path, inventory: Inventory) -> int:
    """Load a saved inventory; a missing file is a first start, a damaged one is set aside."""
    path = state_dir / INVENTORY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        version = doc.get("version") if isinstance(doc, dict) else None
        if version != STATE_VERSION:
            raise ValueError(f"unknown state version {version!r}")
        devices = doc["devices"]
        if not isinstance(devices, list):
            raise ValueError("devices is not a list")
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError) as exc:
        aside = path.with_name(f"{INVENTORY_FILE}.damaged-{int(time.time())}")
        log.error("%s is damaged (%s): moved to %s; devices will be rediscovered", path, exc, aside)
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return 0
    loaded = inventory.restore(devices)
    log.info("loaded %d known devices from %s", loaded, path)
    return loaded
