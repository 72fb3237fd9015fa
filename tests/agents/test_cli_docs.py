"""The command line as documented: every option a user can type is in the README and docs/design.md §4.1, and
`check-config --help` says what FILE may be."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from agents.cli import _build_parser

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DESIGN = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return parser


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """The long options a user sees in --help (hidden ones and --help left out)."""
    return [
        opt
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--verbose"
    ]


@pytest.mark.parametrize("command", [("replay",), ("lab", "up")])
def test_every_option_is_in_the_readme(command: tuple[str, ...]) -> None:
    options = _options(_subparser(_build_parser(), *command))
    assert options, command
    missing = [opt for opt in options if opt not in README]
    assert not missing, f"README.md does not mention {missing} of camwatch {' '.join(command)}"


def test_replay_options_are_in_the_design() -> None:
    section = DESIGN[DESIGN.index("### 4.1 CLI") : DESIGN.index("### 4.2")]
    missing = [opt for opt in _options(_subparser(_build_parser(), "replay")) if opt not in section]
    assert not missing, missing
    assert "-v" in section and "-v" in README


def test_check_config_help_says_what_file_may_be() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "agents.cli", "check-config", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "agent configuration" in text and "site policy" in text and "FILE" in text
