"""Run one benchmark script in its ``--smoke`` mode (CI's check that it runs and checks itself; no timing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"


def smoke(script: str, *args: str, timeout: float = 600) -> str:
    """``benchmarks/SCRIPT --smoke ARGS...`` with this interpreter; its stdout (it must exit 0)."""
    res = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout
