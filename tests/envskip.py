"""pytest plugin: with ``CAMWATCH_REQUIRE_ENV=1`` (CI sets it in `.ci/run`) a skipped test is a failure.

Tests that need root, network namespaces, Mosquitto, Prometheus, Alertmanager, openssl, shellcheck, an
optional extra... skip with the reason when that is missing, so that a developer's laptop still runs
the rest. In CI everything is installed by `scripts/test`, so a skip there means a dependency went
missing and the test silently stopped testing: the switch turns every skip (a ``skip``/``skipif`` mark,
``pytest.skip()``, ``importorskip``, a module skipped at collection, an empty parameter set) into a
failure that names the reason. Expected failures (``xfail``) are not skips and are left alone.

A test that may legitimately skip in CI (not for want of something the machine should have) says so
with ``@pytest.mark.skip_ok_in_ci("why")``; none needs to today.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

SWITCH = "CAMWATCH_REQUIRE_ENV"
MARKER = "skip_ok_in_ci"
_REQUIRED = pytest.StashKey[bool]()


def required(config: pytest.Config) -> bool:
    """Is the switch on for this run?"""
    return config.stash.get(_REQUIRED, False)


def _switch_value() -> bool:
    value = os.environ.get(SWITCH, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise pytest.UsageError(f"{SWITCH}={value!r}: set it to 1 (skips fail) or 0/unset (skips allowed)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(reason): this test may skip even when {SWITCH}=1 (not an environment skip)"
    )
    config.stash[_REQUIRED] = _switch_value()


def pytest_report_header(config: pytest.Config) -> str:
    if required(config):
        return f"camwatch: {SWITCH}=1, a skipped test fails (the environment must have everything)"
    return f"camwatch: skips allowed ({SWITCH} unset); CI sets {SWITCH}=1"


def _reason(longrepr: object) -> str:
    # A skip's longrepr is (path, line, "Skipped: <reason>").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _refusal(reason: str) -> str:
    return (
        f"skipped while {SWITCH}=1: {reason}\n"
        "CI must run every test: install what it needs (scripts/setup-system.sh, the extras in "
        f"scripts/test), or mark a skip that is not about the environment with @pytest.mark.{MARKER}(...)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and required(item.config)
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker(MARKER) is None
    ):
        report.outcome = "failed"
        report.longrepr = _refusal(_reason(report.longrepr))
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped and required(collector.config):
        report.outcome = "failed"
        report.longrepr = _refusal(_reason(report.longrepr))
    return report
