"""The CI switch (`tests/envskip.py`): with CAMWATCH_REQUIRE_ENV=1 every kind of skip fails the run."""

from __future__ import annotations

import pytest

from tests.envskip import MARKER, SWITCH

SKIPPING = {
    "test_marks": """
        import pytest

        @pytest.mark.skipif(True, reason="mosquitto is not installed")
        def test_skipif(): pass

        @pytest.mark.skip(reason="no prometheus")
        def test_skip(): pass

        def test_call(): pytest.skip("cannot create network namespaces")

        @pytest.fixture
        def netns(): pytest.skip("not root")

        def test_fixture(netns): pass

        @pytest.mark.parametrize("x", [])
        def test_empty_parameters(x): pass

        def test_runs(): pass

        @pytest.mark.xfail(reason="known", strict=True)
        def test_xfail(): assert False
    """,
    "test_module": """
        import pytest
        pytest.importorskip("camwatch_no_such_module", reason="the stream extra is not installed")

        def test_never(): pass
    """,
}


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str | None, *files: str
) -> pytest.RunResult:
    if value is None:
        monkeypatch.delenv(SWITCH, raising=False)
    else:
        monkeypatch.setenv(SWITCH, value)
    pytester.makepyfile(**{name: SKIPPING[name] for name in files or SKIPPING})
    return pytester.runpytest_inprocess("-p", "tests.envskip", "-rA")


def test_without_the_switch_skips_stay_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=6, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*skips allowed ({SWITCH} unset)*"])


def test_with_the_switch_every_skip_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, "1", "test_marks")
    # Skips in setup (marks, fixtures, empty parameter sets) are reported as errors, in the call as failures.
    result.assert_outcomes(passed=1, failed=1, errors=4, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*{SWITCH}=1, a skipped test fails*"])
    for reason in (
        "mosquitto is not installed",
        "no prometheus",
        "cannot create network namespaces",
        "not root",
        "got empty parameter set*",
    ):
        result.stdout.fnmatch_lines([f"*skipped while {SWITCH}=1: {reason}*"])


def test_with_the_switch_a_module_skip_is_a_collection_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like any collection error it stops the run before the tests: the missing dependency is named."""
    result = _run(pytester, monkeypatch, "1", "test_module")
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*skipped while {SWITCH}=1: the stream extra is not installed*"])


def test_a_declared_skip_is_allowed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SWITCH, "1")
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{MARKER}("a hypothetical platform difference")
        def test_declared(): pytest.skip("not on this platform")
        """
    )
    result = pytester.runpytest_inprocess("-p", "tests.envskip")
    result.assert_outcomes(skipped=1)


def test_a_bad_switch_value_is_named(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, "yes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{SWITCH}='yes': set it to 1*"])
