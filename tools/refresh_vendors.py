#!/usr/bin/env python3
"""Regenerate camwatch's vendor table (monitor/vendors/data/vendors.csv) from IEEE registry CSV files.

Usage:
    python tools/refresh_vendors.py oui.csv mam.csv oui36.csv [iab.csv]
        [--table monitor/vendors/data/vendors.csv] [--output PATH] [--keys all|hikvision,dahua,...]

The files are the IEEE Registration Authority's published CSVs (MA-L ``oui.csv``, MA-M ``mam.csv``,
MA-S ``oui36.csv``, legacy ``iab.csv``), columns ``Registry,Assignment,Organization Name,Organization
Address``. This script does not download them: fetch them on a machine with internet access and pass the
paths.

Only organisations whose name canonicalises to a key of interest are kept (by default the camera and
recorder makers, ``CAMERA_KEYS``). For every registry present in the given files, rows a previous refresh
wrote for that registry (source ``ieee:...``) are replaced; hand-added rows (any other source) are kept,
unless the IEEE file now lists the very same block, in which case the registry's row supersedes them.
The table's leading ``#`` comment block is preserved.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(_REPO))

from monitor.vendors.oui import (  # noqa: E402
    CAMERA_KEYS,
    REGISTRY_BITS,
    TableRow,
    canonical_vendor,
    format_prefix,
    read_rows,
    write_rows,
)

log = logging.getLogger("refresh_vendors")

DEFAULT_TABLE = _REPO / "monitor" / "vendors" / "data" / "vendors.csv"
IEEE_SOURCE_PREFIX = "ieee:"
IEEE_COLUMNS = ("Registry", "Assignment", "Organization Name")
# CID (company ID) assignments are not MAC address blocks: a device never sources frames from one.
_SKIPPED_REGISTRIES = frozenset({"CID"})


@dataclass(frozen=True, slots=True)
class IeeeRecord:
    """One assignment from an IEEE registry CSV."""

    registry: str
    prefix: int
    bits: int
    organization: str
    source: str


def read_ieee_csv(path: Path) -> list[IeeeRecord]:
    """Parse one IEEE registry CSV; raises ValueError on a malformed file."""
    records: list[IeeeRecord] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in IEEE_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: not an IEEE registry CSV (missing {', '.join(missing)})")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            registry = (record.get("Registry") or "").strip()
            if registry in _SKIPPED_REGISTRIES:
                continue
            bits = REGISTRY_BITS.get(registry)
            if bits is None:
                raise ValueError(f"{where}: unknown registry {registry!r}")
            assignment = (record.get("Assignment") or "").strip()
            try:
                if len(assignment) != bits // 4:
                    raise ValueError(f"assignment {assignment!r} is not {bits // 4} hex digits")
                prefix = int(assignment, 16)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            organization = " ".join((record.get("Organization Name") or "").split())
            records.append(IeeeRecord(registry, prefix, bits, organization, IEEE_SOURCE_PREFIX + path.name))
    return records


def refresh(
    existing: Iterable[TableRow], records: Iterable[IeeeRecord], keys: frozenset[str] | None
) -> list[TableRow]:
    """Merge IEEE records into the existing table rows; ``keys=None`` keeps every known vendor."""
    records = list(records)
    refreshed_registries = {r.registry for r in records}
    fresh: dict[tuple[int, int], TableRow] = {}
    for record in records:
        key, display = canonical_vendor(record.organization)
        if key is None or (keys is not None and key not in keys):
            continue
        block = (record.prefix, record.bits)
        if block in fresh:
            log.warning("%s/%d listed twice; keeping the first", format_prefix(*block), record.bits)
            continue
        fresh[block] = TableRow(
            prefix=record.prefix,
            bits=record.bits,
            vendor=key,
            manufacturer=display,
            registry=record.registry,
            source=record.source,
            organization=record.organization,
        )
    kept: list[TableRow] = []
    for row in existing:
        block = (row.prefix, row.bits)
        is_ieee = row.source.startswith(IEEE_SOURCE_PREFIX)
        if is_ieee and row.registry in refreshed_registries:
            continue  # regenerated from this run's files
        if block in fresh:
            if not is_ieee:
                log.info(
                    "hand-added %s/%d (%s) is now in the IEEE file", row.prefix_text, row.bits, row.source
                )
            continue
        kept.append(row)
    rows = kept + list(fresh.values())
    rows.sort(key=lambda r: (r.bits, r.prefix))
    return rows


def read_comments(path: Path) -> list[str]:
    """The leading ``#`` comment lines of a table file, without their ``# `` marker."""
    comments: list[str] = []
    if not path.exists():
        return comments
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comments.append(line[2:] if line.startswith("# ") else line[1:])
    return comments


def _summary(before: Sequence[TableRow], after: Sequence[TableRow]) -> str:
    old = {(r.prefix, r.bits) for r in before}
    new = {(r.prefix, r.bits) for r in after}
    per_key = Counter(r.vendor or "?" for r in after)
    keys = ", ".join(f"{k}={n}" for k, n in sorted(per_key.items()))
    return f"{len(after)} rows ({len(new - old)} added, {len(old - new)} removed): {keys}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path, help="IEEE registry CSV files (oui.csv, mam.csv, ...)")
    parser.add_argument(
        "--table", type=Path, default=DEFAULT_TABLE, help="current table (default: package's)"
    )
    parser.add_argument("--output", type=Path, help="where to write (default: overwrite --table)")
    parser.add_argument(
        "--keys",
        default=",".join(sorted(CAMERA_KEYS)),
        help="comma-separated vendor keys to keep, or 'all' (default: the camera makers)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="report warnings and errors only")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="refresh_vendors: %(message)s"
    )

    keys: frozenset[str] | None = None
    if args.keys.strip().lower() != "all":
        keys = frozenset(k.strip() for k in args.keys.split(",") if k.strip())
    try:
        existing = read_rows(args.table) if args.table.exists() else []
        records = [r for path in args.files for r in read_ieee_csv(path)]
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if not records:
        log.error("the IEEE files hold no assignments; table left unchanged")
        return 1
    rows = refresh(existing, records, keys)
    output: Path = args.output or args.table
    tmp = output.with_name(output.name + ".tmp")
    write_rows(rows, tmp, read_comments(args.table))
    tmp.replace(output)  # atomic: a reader never sees a half-written table
    log.info("wrote %s: %s", output, _summary(existing, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
