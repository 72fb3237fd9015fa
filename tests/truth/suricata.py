"""Reader for suricata-verify `tests/<test>/test.yaml` descriptors.

A `filter` check pins the number of eve.json records (`count`) whose fields equal every entry of `match`
(dotted paths such as `flow.pkts_toserver`, `dns.answers[0].rrname`, plus `has-key`/`not-has-key`).
A check only constrains the fields it lists. `shell` and `file-compare` checks are kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class SuricataCheck:
    """One `filter` check: `count` eve records must match every item of `match`."""

    count: int
    match: dict[str, Any]
    requires: dict[str, Any]
    filename: str | None


@dataclass(frozen=True)
class SuricataTest:
    """A whole `test.yaml`: test-level requirements, extra Suricata args and the checks."""

    requires: dict[str, Any]
    args: list[str]
    checks: list[SuricataCheck]
    other_checks: list[dict[str, Any]]


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a mapping, got {value!r}")
    return {str(k): v for k, v in value.items()}


def read_suricata_test(path: Path | str) -> SuricataTest:
    """Parse a suricata-verify `test.yaml`."""
    doc = _mapping(yaml.safe_load(Path(path).read_text(encoding="utf-8")), str(path))
    args_value = doc.get("args") or []
    args = [str(a) for a in args_value] if isinstance(args_value, list) else [str(args_value)]
    checks: list[SuricataCheck] = []
    others: list[dict[str, Any]] = []
    for item in doc.get("checks") or []:
        entry = _mapping(item, f"{path}: check")
        if "filter" not in entry:
            others.append(entry)
            continue
        filt = _mapping(entry["filter"], f"{path}: filter")
        count = filt.get("count")
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"{path}: filter count is {count!r}")
        filename = filt.get("filename")
        checks.append(
            SuricataCheck(
                count=count,
                match=_mapping(filt.get("match"), f"{path}: match"),
                requires=_mapping(filt.get("requires"), f"{path}: requires"),
                filename=str(filename) if filename is not None else None,
            )
        )
    return SuricataTest(
        requires=_mapping(doc.get("requires"), f"{path}: requires"),
        args=args,
        checks=checks,
        other_checks=others,
    )


def read_suricata_checks(path: Path | str) -> list[tuple[int, dict[str, Any]]]:
    """The `filter` checks of a `test.yaml` as (count, match) pairs."""
    return [(c.count, c.match) for c in read_suricata_test(path).checks]
