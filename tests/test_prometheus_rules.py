"""The Prometheus alert rules: `promtool check rules` and the rule unit tests, and every runbook exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[1] / "deploy" / "prometheus"
RUNBOOKS = Path(__file__).parents[1] / "docs" / "runbooks"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)


def test_rules_are_valid() -> None:
    res = promtool("check", "rules", "camwatch-rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "34 rules found" in res.stdout


def test_rule_unit_tests_pass() -> None:
    res = promtool("test", "rules", "tests.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_rule_has_a_runbook_page_and_a_unit_test() -> None:
    rules = (DEPLOY / "camwatch-rules.yml").read_text()
    tests = (DEPLOY / "tests.yml").read_text()
    names = re.findall(r"- alert: (\w+)", rules)
    assert len(names) == 34
    for page in re.findall(r"docs/runbooks/([\w-]+\.md)", rules):
        assert (RUNBOOKS / page).is_file(), page
    for name in names:
        assert f"alertname: {name}" in tests, f"{name} has no promtool unit test"
