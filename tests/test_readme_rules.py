"""The rule tables people read against the rules camwatch declares (``monitor.registry.RULES``): README's
"Rules implemented" and docs/design.md §4.2's rule catalogue list every rule id, none that does not exist,
each with its severity."""

from __future__ import annotations

import re
from pathlib import Path

from monitor.alerts import SEVERITY_NAMES
from monitor.registry import RULES

ROOT = Path(__file__).parents[1]


def table_after(text: str, heading: str) -> list[list[str]]:
    """The cells of each body row of the first Markdown table after `heading`."""
    rest = text[text.index(heading) :]
    lines = rest.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:  # the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    assert rows, heading
    return rows


def rule_severities(rows: list[list[str]], severity_column: int) -> dict[str, str]:
    """rule id -> the severity cell of its row (a row may name several ids, each in backticks)."""
    found: dict[str, str] = {}
    for row in rows:
        ids = re.findall(r"`([a-z0-9_]+\.[a-z0-9_]+)`", row[0])
        assert ids and ", ".join(f"`{i}`" for i in ids) == row[0], row[0]
        for rule_id in ids:
            assert rule_id not in found, f"{rule_id} is listed twice"
            found[rule_id] = row[severity_column]
    return found


def test_readme_lists_every_rule_with_its_severity() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = rule_severities(table_after(readme, "### Rules implemented"), 1)
    assert sorted(listed) == sorted(RULES)
    wrong = {i: s for i, s in listed.items() if s != SEVERITY_NAMES[RULES[i].severity]}
    assert wrong == {}, f"README severities that are not the rules': {wrong}"


def test_design_catalogue_lists_every_rule_with_its_severity() -> None:
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    listed = rule_severities(table_after(design, "**Rule catalogue**"), 1)
    assert sorted(listed) == sorted(RULES)
    wrong = {i: s for i, s in listed.items() if s != str(RULES[i].severity)}
    assert wrong == {}, f"design.md severities that are not the rules': {wrong}"


def test_the_readme_names_every_severity() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    legend = ", ".join(f"{number} {name}" for number, name in sorted(SEVERITY_NAMES.items()))
    assert f"Severity is `event.severity`: {legend}." in readme
