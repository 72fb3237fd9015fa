"""The site's asset register: a CSV of the cameras the site knows, their place and their replacement plan.

Columns (docs/register.md): ``mac`` (required), ``name``, ``location``, ``model``, ``owner``, ``status``
(``active``, ``scheduled`` or ``removed``), ``replace_by`` (a date, ``YYYY-MM-DD``) and ``notes``. The first
line names the columns, in any order; header names are matched without regard to case, spaces or dashes.

Bad input never costs the good rows. Every problem is named with its line and the fix
(:class:`RegisterProblem`); what happens to the row:

- a row whose MAC cannot be read is skipped (nothing else can identify the device);
- a bad ``status`` or ``replace_by`` is left empty (``active``, no date) and the rest of the row is kept: the
  device stays known, so a typo in a date does not turn it into a ``device.new`` alert;
- an unknown column is reported once and ignored; a second row for the same MAC is reported and skipped.

Sans-I/O: :meth:`AssetRegister.parse` takes the file's bytes; :meth:`AssetRegister.load` reads the file.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final

from monitor.vendors.oui import format_mac

__all__ = [
    "COLUMNS",
    "STATUSES",
    "Asset",
    "AssetRegister",
    "RegisterError",
    "RegisterProblem",
    "parse_mac",
]

#: The register's columns, in the order ``camwatch`` writes them.
COLUMNS: Final = ("mac", "name", "location", "model", "owner", "status", "replace_by", "notes")
ACTIVE: Final = "active"
SCHEDULED: Final = "scheduled"
REMOVED: Final = "removed"
#: ``active``: in service, no replacement planned; ``scheduled``: replacement planned (``replace_by``);
#: ``removed``: taken off the network (seen again, it raises ``device.removed_seen``).
STATUSES: Final = (ACTIVE, SCHEDULED, REMOVED)
#: Words people write for a status, and the status they mean (the fix names it; the row is not guessed).
_STATUS_HINTS: Final[Mapping[str, str]] = {
    "in service": ACTIVE,
    "in_service": ACTIVE,
    "live": ACTIVE,
    "installed": ACTIVE,
    "ok": ACTIVE,
    "planned": SCHEDULED,
    "to replace": SCHEDULED,
    "to_replace": SCHEDULED,
    "replace": SCHEDULED,
    "pending": SCHEDULED,
    "replaced": REMOVED,
    "decommissioned": REMOVED,
    "retired": REMOVED,
    "gone": REMOVED,
    "offline": REMOVED,
}
_EXAMPLE_HEADER: Final = ",".join(COLUMNS)
# A register is a site's cameras: thousands at most. The bound keeps a wrong file (a capture, a log)
# from filling memory with problems.
MAX_ROWS: Final = 1_000_000
MAX_PROBLEMS: Final = 1000
_MAC_RES: Final = (
    re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}"),
    re.compile(r"[0-9a-f]{2}(?:-[0-9a-f]{2}){5}"),
    re.compile(r"[0-9a-f]{4}(?:\.[0-9a-f]{4}){2}"),  # Cisco
    re.compile(r"[0-9a-f]{12}"),
)
_ISO_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DMY_RE: Final = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")


@dataclass(frozen=True, slots=True)
class RegisterProblem:
    """One problem in a register: where (``line`` 0: the file as a whole), what, and the fix."""

    line: int
    problem: str
    fix: str
    column: str | None = None
    skipped: bool = False
    """The row was not used (its other fields are lost until the line is fixed)."""

    def describe(self, source: str) -> str:
        """``<file>: line <n>: [<column>: ]<problem>; <fix>``."""
        where = f"line {self.line}: " if self.line else ""
        col = f"{self.column}: " if self.column else ""
        return f"{source}: {where}{col}{self.problem}; {self.fix}"


class RegisterError(Exception):
    """The register cannot be read at all (missing, unreadable); row problems are not errors."""

    def __init__(self, source: str, problem: str, fix: str) -> None:
        super().__init__(f"{source}: {problem}; {fix}")
        self.source = source
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True, slots=True)
class Asset:
    """One row of the register."""

    mac: int
    name: str = ""
    location: str = ""
    model: str = ""
    owner: str = ""
    status: str = ACTIVE
    replace_by: date | None = None
    notes: str = ""
    line: int = 0

    @property
    def mac_str(self) -> str:
        """The MAC as the alerts and the inventory write it (``44-19-b6-00-00-01``)."""
        return format_mac(self.mac)

    def overdue(self, today: date) -> bool:
        """Still on site (not ``removed``) after its ``replace_by`` date."""
        return self.status != REMOVED and self.replace_by is not None and self.replace_by < today

    def to_ecs(self) -> dict[str, Any]:
        """What an alert carries about the device (``camwatch.asset``): the non-empty fields."""
        out: dict[str, Any] = {"status": self.status}
        for key in ("name", "location", "model", "owner"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.replace_by is not None:
            out["replace_by"] = self.replace_by.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class AssetRegister:
    """The register's rows by MAC, and the problems found reading it."""

    assets: Mapping[int, Asset] = field(default_factory=dict)
    problems: tuple[RegisterProblem, ...] = ()
    source: str = "<register>"
    rows: int = 0
    """Data rows in the file (good or not)."""
    removed: frozenset[int] = field(init=False, repr=False, compare=False)
    """The MACs listed as ``removed`` (the rule asks for every new flow: kept as a set)."""

    def __post_init__(self) -> None:
        removed = frozenset(mac for mac, asset in self.assets.items() if asset.status == REMOVED)
        object.__setattr__(self, "removed", removed)

    # -- reading --------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> AssetRegister:
        """Read and parse the file; :class:`RegisterError` if it cannot be read at all."""
        source = str(path)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError as exc:
            raise RegisterError(source, "does not exist", "check the path (see docs/register.md)") from exc
        except OSError as exc:
            raise RegisterError(
                source, f"cannot be read ({exc.strerror or exc})", "make it readable by camwatch"
            ) from exc
        return cls.parse(data, source)

    @classmethod
    def parse(cls, data: bytes | str, source: str = "<register>") -> AssetRegister:
        """Parse a register's content; problems are collected, never raised."""
        return _Parser(source).run(data)

    # -- queries --------------------------------------------------------------------------------

    def __contains__(self, mac: object) -> bool:
        return mac in self.assets

    def __len__(self) -> int:
        return len(self.assets)

    def __iter__(self) -> Iterator[Asset]:
        return iter(self.assets.values())

    def get(self, mac: int) -> Asset | None:
        """The row for ``mac``, or None."""
        return self.assets.get(mac)

    def status_of(self, mac: int) -> str | None:
        """The register status of ``mac``; None when the register does not list it."""
        asset = self.assets.get(mac)
        return asset.status if asset is not None else None

    def by_status(self) -> dict[str, int]:
        """Rows per status (every status present, zero included)."""
        counts = dict.fromkeys(STATUSES, 0)
        for asset in self.assets.values():
            counts[asset.status] += 1
        return counts

    def overdue(self, today: date) -> list[Asset]:
        """The rows still on site after their ``replace_by`` date, earliest first."""
        late = [a for a in self.assets.values() if a.overdue(today)]
        return sorted(late, key=lambda a: (a.replace_by or today, a.mac))

    def describe_problems(self) -> list[str]:
        """One line per problem, as ``check-config`` and ``camwatch report`` print them."""
        return [p.describe(self.source) for p in self.problems]


def parse_mac(text: str) -> int | None:
    """A station MAC written as ``44:19:b6:00:00:01``, ``44-19-B6-00-00-01``, ``4419.b600.0001`` or
    ``4419b6000001``; None if it is none of these."""
    value = text.strip().lower()
    if any(pattern.fullmatch(value) for pattern in _MAC_RES):
        return int(re.sub(r"[:.-]", "", value), 16)
    return None


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[RegisterProblem] = []
        self.dropped_problems = 0

    def add(
        self, line: int, problem: str, fix: str, column: str | None = None, skipped: bool = False
    ) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.dropped_problems += 1
            return
        self.problems.append(RegisterProblem(line, problem, fix, column, skipped))

    def run(self, data: bytes | str) -> AssetRegister:
        text = self.decode(data)
        assets: dict[int, Asset] = {}
        rows = 0
        lines = text.splitlines(keepends=True)
        # The header is the first line that is neither blank nor a comment.
        start = next(
            (i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), None
        )
        if start is None:
            self.add(0, "is empty", f"the first line names the columns, e.g. {_EXAMPLE_HEADER}")
            return self.done(assets, rows)
        delimiter = _delimiter(lines[start])
        reader = csv.reader(io.StringIO("".join(lines[start:])), delimiter=delimiter)
        header = next(reader)
        columns = self.header(header, start + 1)
        if "mac" not in columns.values():
            return self.done(assets, rows)
        previous = reader.line_num
        for record in reader:
            # The line a record starts on (a quoted field may span lines).
            line = start + previous + 1
            previous = reader.line_num
            if not any(cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
                continue
            rows += 1
            if rows > MAX_ROWS:
                self.add(
                    line, f"the register has more than {MAX_ROWS} rows", "split it per site", skipped=True
                )
                break
            asset = self.row(record, columns, line, len(header))
            if asset is None:
                continue
            first = assets.get(asset.mac)
            if first is not None:
                self.add(
                    line,
                    f"{asset.mac_str} is listed again (first on line {first.line})",
                    "keep one row per device: delete or merge this one",
                    "mac",
                    skipped=True,
                )
                continue
            assets[asset.mac] = asset
        return self.done(assets, rows)

    def done(self, assets: dict[int, Asset], rows: int) -> AssetRegister:
        if self.dropped_problems:
            self.problems.append(
                RegisterProblem(
                    0, f"{self.dropped_problems} more problems not listed", "fix the ones above first"
                )
            )
        return AssetRegister(assets, tuple(self.problems), self.source, rows)

    def decode(self, data: bytes | str) -> str:
        if isinstance(data, str):
            return data.removeprefix("\ufeff")
        try:
            return data.decode("utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a BOM
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.add(
                line,
                "is not UTF-8 text (the bad characters are replaced)",
                "save the register as 'CSV UTF-8' (a spreadsheet's default CSV may use another encoding)",
            )
            return data.decode("utf-8-sig", errors="replace")

    def header(self, header: list[str], line: int) -> dict[int, str]:
        """Column index -> column name, for the known columns."""
        columns: dict[int, str] = {}
        seen: dict[str, int] = {}
        for index, raw in enumerate(header):
            name = re.sub(r"[\s-]+", "_", raw.strip().lower())
            if name in COLUMNS:
                if name in seen:
                    self.add(
                        line,
                        f"column '{raw.strip()}' appears twice (columns {seen[name] + 1} and {index + 1})",
                        "keep one; the first is read",
                    )
                    continue
                seen[name] = index
                columns[index] = name
                continue
            if not name:
                if any(h.strip() for h in header[index + 1 :]):
                    self.add(line, f"column {index + 1} has no name", f"name it, or remove it ({_known()})")
                continue
            close = difflib.get_close_matches(name, COLUMNS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close and close[0] not in seen else ""
            self.add(
                line,
                f"unknown column '{raw.strip()}' (its values are ignored)",
                f"{hint}rename or remove it ({_known()})",
            )
        if "mac" not in seen:
            self.add(
                line,
                "has no 'mac' column, so no device can be read",
                f"the first line names the columns, e.g. {_EXAMPLE_HEADER}",
            )
        return columns

    def row(self, record: list[str], columns: Mapping[int, str], line: int, width: int) -> Asset | None:
        values = {name: record[i].strip() if i < len(record) else "" for i, name in columns.items()}
        if len(record) > width and any(cell.strip() for cell in record[width:]):
            self.add(
                line,
                f"has {len(record)} fields but the header names {width} (the extra ones are ignored)",
                'quote values that contain the delimiter, e.g. "North gate, pole 3"',
            )
        mac_text = values.get("mac", "")
        mac = parse_mac(mac_text)
        if mac is None:
            what = "is empty" if not mac_text else f"'{_short(mac_text)}' is not a MAC address"
            self.add(
                line,
                f"{what}: the row is skipped",
                "write the device's MAC as six hex pairs, e.g. 44:19:b6:00:00:01",
                "mac",
                skipped=True,
            )
            return None
        if mac == 0 or (mac >> 40) & 0x01:
            kind = "zero" if mac == 0 else "a group (multicast) address"
            self.add(
                line,
                f"{format_mac(mac)} is {kind}, not a device's: the row is skipped",
                "write the device's own MAC (on its label or in its web interface)",
                "mac",
                skipped=True,
            )
            return None
        status = self.status(values.get("status", ""), line)
        replace_by = self.date(values.get("replace_by", ""), line)
        return Asset(
            mac=mac,
            name=values.get("name", ""),
            location=values.get("location", ""),
            model=values.get("model", ""),
            owner=values.get("owner", ""),
            status=status,
            replace_by=replace_by,
            notes=values.get("notes", ""),
            line=line,
        )

    def status(self, text: str, line: int) -> str:
        value = text.strip().lower()
        if not value:
            return ACTIVE
        if value in STATUSES:
            return value
        meant = _STATUS_HINTS.get(value) or _STATUS_HINTS.get(value.replace("-", " "))
        if meant is None:
            close = difflib.get_close_matches(value, STATUSES, n=1, cutoff=0.6)
            meant = close[0] if close else None
        hint = f"did you mean '{meant}'? " if meant else ""
        self.add(
            line,
            f"'{_short(text)}' is not one of {', '.join(STATUSES)} (read as active)",
            f"{hint}write active (in service), scheduled (replacement planned) or removed (off the network)",
            "status",
        )
        return ACTIVE

    def date(self, text: str, line: int) -> date | None:
        value = text.strip()
        if not value:
            return None
        fix = "write the date as YYYY-MM-DD, e.g. 2027-03-31"
        if _ISO_DATE_RE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                self.add(line, f"'{value}' is not a day of the calendar (left empty)", fix, "replace_by")
                return None
        m = _DMY_RE.fullmatch(value)
        if m is not None:
            a, b, year = (int(g) for g in m.groups())
            # Day first or month first cannot be told apart unless one of them is above 12.
            guess = _try_date(year, b, a) if a > 12 else _try_date(year, a, b) if b > 12 else None
            if guess is not None:
                fix = f"write it as {guess.isoformat()} (YYYY-MM-DD)"
            else:
                fix = "write it as YYYY-MM-DD (which of the first two numbers is the day cannot be told)"
        self.add(line, f"'{_short(value)}' is not a date (left empty)", fix, "replace_by")
        return None


def _try_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _delimiter(header: str) -> str:
    """A spreadsheet in a comma-decimal locale writes ';'; some tools write tabs."""
    if "," in header:
        return ","
    if ";" in header:
        return ";"
    return "\t" if "\t" in header else ","


def _known() -> str:
    return "known columns: " + ", ".join(COLUMNS)


def _short(text: str, limit: int = 40) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
