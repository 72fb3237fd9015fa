"""Severity where people read alerts: the replay's summary and the lab demo's alert lines."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest

from agents import cli
from lab import scenario
from lab.demo_live import show
from monitor.alerts import SEVERITY_NAMES, severity_name
from monitor.pcapwrite import pcap_bytes
from monitor.registry import RULES

ROOT = Path(__file__).parents[2]


def test_the_replay_summary_counts_alerts_by_severity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = tmp_path / "site.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    alerts = tmp_path / "alerts.jsonl"
    policy = str(ROOT / "examples" / "site-policy.yaml")
    assert cli.main(["replay", str(pcap), "--policy", policy, "--alerts", str(alerts)]) == 0
    counts = Counter(json.loads(line)["event"]["severity"] for line in alerts.read_text().splitlines())
    assert set(counts) == {2, 3, 4}
    expected = ", ".join(f"{counts[s]} {SEVERITY_NAMES[s]}" for s in (4, 3, 2))
    summary = f"camwatch: {sum(counts.values())} alerts ({expected}): device.exposed 1, device.new"
    assert summary in capsys.readouterr().err


def test_the_demo_shows_each_alerts_severity() -> None:
    out = io.StringIO()
    alert = {"rule": {"id": "p2p.nat_traversal"}, "event": {"severity": 4}, "message": "P2P to the Internet"}
    show(out, alert)
    # lab.demo.alert_line: the capture time (none here), the severity padded to the longest name ("critical"),
    # the rule, the message.
    assert out.getvalue() == f"  ALERT   {'high':<8}  {'p2p.nat_traversal':<30} P2P to the Internet\n"


def test_every_rule_has_a_named_severity() -> None:
    assert {severity_name(rule.severity) for rule in RULES.values()} <= set(SEVERITY_NAMES.values())
    assert severity_name(7) == "7" and severity_name(None) == "None"
