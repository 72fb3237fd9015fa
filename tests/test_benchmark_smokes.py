"""The issue-16 benchmarks and long checks, once each in their `--smoke` mode: each completes, checks itself
and writes its report. Nothing here looks at a time (measurements are run by hand: benchmarks/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchsmoke import smoke


def test_pcapng_interfaces(tmp_path: Path) -> None:
    out = smoke("pcapng_interfaces.py", "--out-dir", str(tmp_path))
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


def test_floods(tmp_path: Path) -> None:
    out = smoke("floods.py", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "floods.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["problems"] == []
    floods = {r["flood"]: r for r in report["results"]}
    assert set(floods) == {"flows", "macs", "dns", "rtsp", "tunnels"}
    for r in floods.values():
        assert all(row["size"] <= row["bound"] for row in r["tables"].values() if row["bound"] is not None)
        assert r["rss_peak_kib"] >= r["rss_baseline_kib"] > 0
    # What each flood fills, at smoke size: its own table.
    assert floods["flows"]["tables"]["flows"]["size"] == 2000
    assert floods["macs"]["tables"]["devices"]["size"] >= 2000
    assert floods["dns"]["tables"]["dns_resolutions"]["size"] == 2000
    assert floods["rtsp"]["tables"]["media_expectations"]["size"] == 4000  # RTP and RTCP per client
    assert floods["tunnels"]["tables"]["shared_states"]["size"] == 1024  # at its bound: 2,000 sessions came
    assert floods["tunnels"]["tables"]["shared_states"]["evicted"] == 2000 - 1024
    assert out.count("| flows |") == 1


def test_mutated(tmp_path: Path) -> None:
    out = smoke("mutated.py", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "mutated.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["packets"] == 20_000
    assert report["uncaught_exceptions"] == 0 and report["analyzer_internal_errors"] == 0
    assert report["flows_created"] > 0 and report["analyzer_parse_errors"] > 0  # garbage reached the parsers
    assert len(report["rss_kib"]) >= 3 and "| 20,000 |" in out


def test_startup(tmp_path: Path) -> None:
    out = smoke("startup.py", "--out-dir", str(tmp_path))
    report = json.loads((tmp_path / "startup.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["runs"] == 2
    rows = {r["command"]: r for r in report["results"]}
    assert "camwatch replay (one packet)" in rows and "python -c pass" in rows
    assert all(len(r["runs"]) == 2 and r["median_s"] > 0 for r in rows.values())
    assert "camwatch replay, one packet: median" in out
