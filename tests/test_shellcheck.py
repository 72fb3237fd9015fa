"""Every shell script of the repository passes shellcheck (scripts/setup-system.sh installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
# Not ours, or not sources: virtual environments, build and demo output, caches.
_SKIP_DIRS = {".git", ".venv", "build", "out", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_SHELLS = (b"sh", b"bash", b"dash")


def _is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    with path.open("rb") as f:
        first = f.readline(200)
    if not first.startswith(b"#!"):
        return False
    words = first[2:].split()
    program = words[-1] if words and words[0].endswith(b"/env") else (words[0] if words else b"")
    return program.rsplit(b"/", 1)[-1] in _SHELLS


def shell_scripts() -> list[Path]:
    """The repository's shell scripts: `*.sh` files and files with a sh/bash shebang."""
    found: list[Path] = []
    stack = [ROOT]
    while stack:
        for path in sorted(stack.pop().iterdir()):
            if path.is_dir():
                if path.name not in _SKIP_DIRS and not path.name.endswith(".egg-info"):
                    stack.append(path)
            elif path.is_file() and _is_shell_script(path):
                found.append(path)
    return sorted(found)


def test_the_scripts_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in shell_scripts()}
    assert {".ci/run", "scripts/test", "scripts/demo", "scripts/setup-env.sh", "deploy/install.sh"} <= names


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shell_scripts_are_shellcheck_clean() -> None:
    scripts = [str(p.relative_to(ROOT)) for p in shell_scripts()]
    res = subprocess.run(["shellcheck", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
