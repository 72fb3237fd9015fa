"""What ``camwatch report`` and ``camwatch inventory export`` read: an inventory, alerts, flow records, the
asset register, from files or from an agent's configuration (its state directory and output files).

Every reader names the file, and the item or line, of what it cannot use, with the fix (:class:`InputError`).
An inventory is accepted in each form camwatch writes it (docs/design.md §4.4):

- a JSON array of device records: ``camwatch replay --inventory``, the agent's ``inventory_file``;
- the retained MQTT inventory, ``{"@timestamp", "observer", "devices": [...]}``;
- the agent's state file ``<state_dir>/inventory.json`` (``{"version": 1, "devices": [...]}``, times in ns).

A file written by another camwatch version is refused with what was found and what to do, never half read.
Lines of alerts or flows that are not records are skipped and counted (a file being written has a half
line at its end); a file none of whose lines is a record is the wrong file and refused, and one with more
bad lines than a half last one is a warning with the count.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from agents.state import INVENTORY_FILE, STATE_VERSION
from monitor.devices import Inventory
from monitor.register import AssetRegister, RegisterError, parse_mac
from monitor.vendors.oui import VendorTable, format_mac

__all__ = ["InputError", "Inputs", "read_alerts", "read_flows", "read_inventory", "read_register"]

log = logging.getLogger(__name__)

_RECORD_HINT: Final = "write it with camwatch replay --inventory FILE, or take the agent's inventory_file"
# Files at most this big are read whole; a JSON-lines file is streamed.
_MAX_JSON: Final = 512 << 20


class InputError(Exception):
    """An input that cannot be used: ``<file>: <where>: <problem>; <fix>``."""

    def __init__(self, source: str | Path, problem: str, fix: str) -> None:
        super().__init__(f"{source}: {problem}; {fix}")
        self.source = str(source)
        self.problem = problem
        self.fix = fix


@dataclass(slots=True)
class Inputs:
    """Everything one report is made of."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    flows: list[dict[str, Any]] = field(default_factory=list)
    register: AssetRegister = field(default_factory=AssetRegister)
    sources: dict[str, str] = field(default_factory=dict)
    """What was read, for the page's footer: kind -> file(s)."""
    skipped_lines: int = 0
    site: str = ""


# ---------------------------------------------------------------------- the inventory


def read_inventory(path: Path) -> list[dict[str, Any]]:
    """Device records (docs/design.md §4.4) from any of the inventory forms; :class:`InputError` otherwise."""
    data = _load_json(path, "an inventory")
    if isinstance(data, list):
        return _records(path, data)
    if isinstance(data, dict):
        if "version" in data:
            return _from_state(path, data)
        if isinstance(data.get("devices"), list):
            return _records(path, data["devices"])
    raise InputError(
        path,
        f"is not a camwatch inventory (a JSON {type(data).__name__} without 'devices')",
        _RECORD_HINT,
    )


def _records(path: Path, items: Sequence[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InputError(path, f"item {index} is not a device record but {_kind(item)}", _RECORD_HINT)
        mac = item.get("mac")
        if isinstance(mac, int) and "first_seen_ns" in item:
            raise InputError(
                path,
                f"item {index} is an entry of the agent's state (MAC as a number), not a device record",
                "give the whole state file (state_dir/inventory.json), or the agent's inventory_file",
            )
        parsed = parse_mac(mac) if isinstance(mac, str) else None
        if parsed is None:
            raise InputError(
                path,
                f"item {index} has no usable 'mac' ({_kind(mac)}): written by another camwatch version, or "
                "not an inventory",
                _RECORD_HINT + " with this camwatch version",
            )
        record = dict(item)
        record["mac"] = format_mac(parsed)
        out.append(record)
    return out


def _from_state(path: Path, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    version = doc.get("version")
    if version != STATE_VERSION or not isinstance(doc.get("devices"), list):
        raise InputError(
            path,
            f"is an agent state file of version {version!r}; this camwatch reads version {STATE_VERSION}",
            "run camwatch report with the camwatch version of the agent that wrote it, or use the agent's "
            "inventory_file",
        )
    inventory = Inventory(VendorTable.load(), max_devices=10_000_000)
    loaded = inventory.restore(doc["devices"])
    if loaded < len(doc["devices"]):
        log.warning(
            "%s: %d device entries could not be read and are left out", path, len(doc["devices"]) - loaded
        )
    return inventory.records()


# ---------------------------------------------------------------------- alerts and flows


def read_alerts(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], int]:
    """Alert records (docs/design.md §4.2) from JSON-lines files, and how many lines were skipped.

    A line that is not an alert is skipped (a file being written ends in a half line); a file with lines but
    no alert at all is the wrong file (:class:`InputError`), and one with more bad lines than a half last
    one is a warning naming it (see :class:`_Tally`)."""
    alerts: list[dict[str, Any]] = []
    skipped = 0
    for path in paths:
        tally = _Tally(path, "alert")
        for lineno, obj in _json_lines(path):
            if (
                isinstance(obj, str)
                or not isinstance(obj.get("rule"), dict)
                or not isinstance(obj.get("event"), dict)
            ):
                tally.bad(lineno, obj)
                continue
            tally.good(lineno)
            alerts.append(obj)
        skipped += tally.done(
            "the alerts camwatch writes: the agent's alerts_file, camwatch replay --alerts FILE (JSON lines)"
        )
    return alerts, skipped


def read_flows(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], int]:
    """Flow records (docs/design.md §4.3), only the fields the ledger uses (a day of flows is large); lines
    that are not flow records are skipped and judged as in :func:`read_alerts`."""
    flows: list[dict[str, Any]] = []
    skipped = 0
    for path in paths:
        tally = _Tally(path, "flow")
        for lineno, obj in _json_lines(path):
            if isinstance(obj, str):
                tally.bad(lineno, obj)
                continue
            src, dst = obj.get("source"), obj.get("destination")
            if not isinstance(src, dict) or not isinstance(dst, dict) or "rule" in obj:
                tally.bad(lineno, obj)
                continue
            tally.good(lineno)
            event: dict[str, Any] = obj["event"] if isinstance(obj.get("event"), dict) else {}
            flows.append(
                {
                    "source": {k: src[k] for k in ("ip", "mac", "domain") if k in src},
                    "destination": {k: dst[k] for k in ("ip", "mac", "domain") if k in dst},
                    "end": event.get("end") or event.get("start"),
                }
            )
        skipped += tally.done(
            "the flows camwatch writes: the agent's flows_file, camwatch replay --flows FILE (JSON lines)"
        )
    return flows, skipped


class _Tally:
    """The lines of one JSON-lines file: how many were records, which were not, and what the first was."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = path, kind
        self.records = 0
        self.skipped: list[int] = []
        self.first_bad = ""
        self.last = 0

    def good(self, lineno: int) -> None:
        self.records += 1
        self.last = lineno

    def bad(self, lineno: int, obj: dict[str, Any] | str) -> None:
        if not self.skipped:
            self.first_bad = _line_kind(obj)
        self.skipped.append(lineno)
        self.last = lineno

    def done(self, fix: str) -> int:
        """The lines skipped; :class:`InputError` when no line was a record, a warning when more were
        skipped than the half last line of a file being written."""
        n, lines = len(self.skipped), self.records + len(self.skipped)
        first = f"line {self.skipped[0]} is {self.first_bad}" if n else ""
        # Only the last line bad, and not JSON: a record being written (even the file's first).
        half = n == 1 and self.skipped[0] == self.last and self.first_bad == _NOT_JSON
        if n and not self.records and not half:
            raise InputError(
                self.path,
                f"is not a file of {self.kind} records: none of its {lines} line(s) is one ({first})",
                f"give {fix}",
            )
        if half:
            log.warning(
                "%s: its last line is not a complete %s record (a file being written): skipped",
                self.path,
                self.kind,
            )
        elif n:
            wrong = ": probably the wrong file" if n > self.records else ": check it"
            log.warning(
                "%s: %d of its %d lines are not %s records and were skipped (%s)%s",
                self.path,
                n,
                lines,
                self.kind,
                first,
                wrong,
            )
        return n


def _line_kind(obj: dict[str, Any] | str) -> str:
    """What a line that is not the record wanted is, for the message."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj.get("rule"), dict):
        return "an alert record, for --alerts"
    event = obj.get("event")
    if isinstance(event, dict) and event.get("kind") == "event" and isinstance(obj.get("source"), dict):
        return "a flow record, for --flows"
    if "mac" in obj or "devices" in obj:
        return "an inventory record, for --inventory"
    return "a JSON object of another kind"


_NOT_JSON: Final = "not JSON"


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Each non-empty line's number and object; for a line that is not a JSON object, what it is."""
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise InputError(path, "does not exist", "check the path") from exc
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})", "make it readable") from exc
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                start = line.strip()[:1]
                # "[" or "{" alone: a JSON document written over lines (an inventory), not JSON lines.
                doc = line.strip() in (b"[", b"{") or (lineno == 1 and start == b"[")
                yield lineno, "the start of a JSON document, not JSON lines" if doc else _NOT_JSON
                continue
            yield lineno, obj if isinstance(obj, dict) else f"not a JSON object but {_kind(obj)}"


def rotated(path: Path) -> list[Path]:
    """``path`` and the files rotated from it (agents/sinks/rotating.py), oldest first."""
    stem, dot, suffix = path.name.rpartition(".")
    if not dot or not stem:
        stem, suffix = path.name, ""
    else:
        suffix = "." + suffix
    pattern = re.compile(re.escape(stem) + r"\.(\d{8}T\d{6}Z)(?:-(\d+))?" + re.escape(suffix) + r"\Z")
    found: list[tuple[str, int, Path]] = []
    if path.parent.is_dir():
        for entry in path.parent.iterdir():
            m = pattern.match(entry.name)
            if m is not None:
                found.append((m.group(1), int(m.group(2) or 0), entry))
    return [p for _, _, p in sorted(found, key=lambda t: (t[0], t[1]))] + ([path] if path.exists() else [])


# ---------------------------------------------------------------------- the register


def read_register(path: Path) -> AssetRegister:
    """The register; its bad rows are logged (WARNING), each with its line and fix."""
    try:
        register = AssetRegister.load(path)
    except RegisterError as exc:
        raise InputError(exc.source, exc.problem, exc.fix) from exc
    for line in register.describe_problems():
        log.warning("%s", line)
    return register


# ---------------------------------------------------------------------- helpers


def state_inventory(state_dir: Path) -> Path:
    """The agent's saved inventory in ``state_dir``."""
    return state_dir / INVENTORY_FILE


def _load_json(path: Path, what: str) -> Any:
    try:
        size = path.stat().st_size
        if size > _MAX_JSON:
            raise InputError(
                path, f"is {size} bytes, too large for {what}", "check that it is the right file"
            )
        text = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(path, "does not exist", "check the path") from exc
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})", "make it readable") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(path, f"is not JSON ({exc})", f"give {what} as camwatch writes it") from exc


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean"}.get(type(value), "a number")


# ---------------------------------------------------------------------- containment


def containment_states(mode: str, book_path: Path, now: float) -> dict[str, str]:
    """What containment does to each device, for the ledger's ``containment`` column: ``quarantined until
    <UTC time> (<rule or actor>)`` for a device in the quarantine book (``<state_dir>/containment/
    quarantine.json``), keyed ``mac:<48-bit MAC in hex>`` and ``ip:<address>``, and the mode (``enforce`` or
    ``dry-run``) under ``"*"`` for every other watched device. Read only: a damaged book is a warning, never
    moved aside (that is the agent's business)."""
    from agents.contain.quarantine import QuarantineBook

    states: dict[str, str] = {"*": mode}
    try:
        book = QuarantineBook.parse(json.loads(book_path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return states
    except (OSError, ValueError) as exc:
        log.warning("%s: the quarantine book cannot be read (%s): quarantines are not shown", book_path, exc)
        return states
    for entry in book.active.values():
        if entry.until <= now:
            continue  # expired; the agent lifts it at its next check
        until = datetime.fromtimestamp(entry.until, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        state = f"quarantined until {until} ({f'rule {entry.rule}' if entry.rule else entry.actor})"
        mac = parse_mac(entry.device) if not entry.device.startswith("ip:") else None
        if mac is not None:
            states[f"mac:{mac:x}"] = state
        for address in entry.addresses:
            states[f"ip:{address}"] = state
    return states


def apply_containment(devices: Sequence[dict[str, Any]], states: Mapping[str, str]) -> None:
    """Give each watched device record its ``containment`` state from :func:`containment_states`."""
    for record in devices:
        if not record.get("watched") or "containment" in record:
            continue
        mac = parse_mac(str(record.get("mac", "")))
        raw = record.get("ips") or []
        keys = [f"mac:{mac:x}"] if mac is not None else []
        keys += [f"ip:{ip}" for ip in ([raw] if isinstance(raw, str) else raw)]
        record["containment"] = next((states[k] for k in keys if k in states), states["*"])
