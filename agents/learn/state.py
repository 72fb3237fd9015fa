"""The learning mode's files in the agent's state directory (beside agents/state.py's, not inside it).

- ``learning.json``: the site's learning window, each device's state (learning or enforcing, and until
  when) and the observations recorded while devices learned; written atomically with the other state
  (every minute and at shutdown). ``camwatch learn --from-state DIR`` reads it.
- ``relearn/<mac>``: one file per request to learn a device again (``camwatch learn --relearn``); the
  agent takes and deletes them when it saves its state (and at start).

Reading never changes the directory: ``camwatch learn`` may run beside the agent, as root or not.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Final

from monitor.vendors.oui import format_mac

__all__ = [
    "LEARNING_FILE",
    "RELEARN_DIR",
    "LearningStateError",
    "read_inventory_records",
    "read_learning",
    "request_relearn",
    "take_relearn_requests",
    "write_learning",
]

LEARNING_FILE: Final = "learning.json"
RELEARN_DIR: Final = "relearn"
INVENTORY_FILE: Final = "inventory.json"  # agents/state.py's, read here without touching it
STATE_VERSION: Final = 1
_MAC_RE: Final = re.compile(r"[0-9a-f]{12}")


class LearningStateError(ValueError):
    """A learning state file that cannot be used; the message names the file and what to do."""


def write_learning(state_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``learning.json`` atomically (temporary file, fsync, rename)."""
    path = state_dir / LEARNING_FILE
    tmp = path.with_suffix(".json.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump({"version": STATE_VERSION, "saved": time.time(), **doc}, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_learning(state_dir: Path) -> dict[str, Any] | None:
    """The learning state, or None when there is none yet; LearningStateError when it is damaged."""
    path = state_dir / LEARNING_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise LearningStateError(f"{path}: cannot be read ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
        raise LearningStateError(f"{path}: not a camwatch learning state (unknown version)")
    return doc


def read_inventory_records(state_dir: Path) -> list[dict[str, Any]]:
    """The devices of the agent's saved inventory, as saved (``Inventory.state()`` entries); [] if none."""
    path = state_dir / INVENTORY_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as exc:
        raise LearningStateError(f"{path}: cannot be read ({exc})") from exc
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, list):
        raise LearningStateError(f"{path}: not a camwatch inventory")
    return [d for d in devices if isinstance(d, dict)]


def parse_mac(text: str) -> int:
    """A MAC address in any of the usual spellings; ValueError otherwise."""
    digits = re.sub(r"[:.\-]", "", text.strip().lower())
    if not _MAC_RE.fullmatch(digits):
        raise ValueError(f"'{text}' is not a MAC address (write it like 44:19:b6:00:00:01)")
    return int(digits, 16)


def request_relearn(state_dir: Path, macs: list[str]) -> list[str]:
    """Ask the agent to learn these devices again; returns them as alerts write them."""
    if not state_dir.is_dir():
        raise LearningStateError(f"{state_dir}: no such state directory (the agent's state_dir)")
    wanted = [format_mac(parse_mac(mac)) for mac in macs]
    folder = state_dir / RELEARN_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise LearningStateError(f"{folder}: is not a directory; remove it and ask again")
    folder.mkdir(mode=0o750, exist_ok=True)
    owner = state_dir.stat()
    for mac in wanted:
        path = folder / mac
        # Never through a link: the service user owns this directory (root must not write where it points).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"mac": mac, "requested": time.time()}) + "\n")
        if os.geteuid() == 0:
            # Written by root for the agent, which runs as the state directory's owner and deletes it.
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
    if os.geteuid() == 0:
        os.chown(folder, owner.st_uid, owner.st_gid, follow_symlinks=False)
    return wanted


def take_relearn_requests(state_dir: Path) -> list[str]:
    """The devices asked to learn again (their request files are removed)."""
    folder = state_dir / RELEARN_DIR
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    out: list[str] = []
    for entry in entries:
        try:
            mac = format_mac(parse_mac(entry.name))
        except ValueError:
            continue  # not a request: left alone
        if not entry.is_file() or entry.is_symlink():
            continue
        try:
            entry.unlink()
        except OSError:
            continue
        out.append(mac)
    return out
