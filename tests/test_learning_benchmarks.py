"""The allow-matching and learning benchmarks run once, in their ``--smoke`` mode (benchmarks/README.md):
each completes, checks its own correctness (the index and the scan agree on every lookup and alert; learn
writes its policy) and reports. Nothing here looks at a time."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchsmoke import smoke


def test_allow_matching_benchmark(tmp_path: Path) -> None:
    out = smoke("allow_match.py", "--json", str(tmp_path / "allow.json"))
    report = json.loads((tmp_path / "allow.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["rules"] == 2000
    assert [row["tool"] for row in report["results"]] == [
        "camwatch egress_allowed (index)",
        "old scan in policy order",
    ]
    # Half the lookups ask for a rule's own port: some are allowed, some are not.
    assert 0 < report["allowed"] < report["lookups"] and report["alerts"] > 0
    assert "| camwatch egress_allowed (index) |" in out and "index vs scan:" in out


def test_learn_day_benchmark(tmp_path: Path) -> None:
    out = smoke("learn_day.py", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "learn_day.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["capture"]["packets"] > 1000
    assert [row["tool"] for row in report["results"]] == [
        "camwatch learn (--mud)",
        "camwatch replay (the engine alone)",
    ]
    assert all(row["peak_rss_mib"] > 0 for row in report["results"])
    assert "destination(s) learned" in out
    assert "time.example.org" in (tmp_path / "sitelife-learned.yaml").read_text(encoding="utf-8")
