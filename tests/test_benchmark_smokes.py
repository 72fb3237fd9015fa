"""The issue-16 benchmarks and long checks, once each in their `--smoke` mode: each completes, checks itself
and writes its report. Nothing here looks at a time (measurements are run by hand: benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks"


def _smoke(script: str, *args: str, timeout: float = 600) -> str:
    res = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_pcapng_interfaces(tmp_path: Path) -> None:
    out = _smoke("pcapng_interfaces.py", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "pcapng_interfaces.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and set(report["captures"]) == {"repeated", "named"}
    for section in report["captures"].values():
        rows = {row["reader"]: row for row in section["results"]}
        assert set(rows) == {"camwatch CaptureParser", "dpkt pcapng.Reader", "scapy RawPcapNgReader"}
        assert all(row["packets"] == 1000 for row in rows.values())
        assert (
            rows["camwatch CaptureParser"]["timestamps_right"]
            and rows["scapy RawPcapNgReader"]["timestamps_right"]
        )
        assert not rows["dpkt pcapng.Reader"]["timestamps_right"]  # it keeps the first interface only
    assert out.count("| camwatch CaptureParser |") == 2
