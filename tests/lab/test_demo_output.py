"""What the demos print: severities, why an EZVIZ camera is called Hikvision, no advice to start a running
agent, and the recorder's count explained."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from lab import demo
from lab.demo_live import ALERT_COLUMNS, camera_line
from lab.lab import AGENT, LabStatus, ProcessStatus
from monitor.alerts import SEVERITY_NAMES

ROOT = Path(__file__).parents[2]


def test_replay_demo_shows_severities_devices_and_the_oem(tmp_path: Path) -> None:
    capture = tmp_path / "demo.pcap"
    assert demo.main([str(capture)]) == 0
    alerts, inventory = tmp_path / "alerts.jsonl", tmp_path / "inventory.json"
    res = subprocess.run(
        [sys.executable, "-m", "agents.cli", "replay", str(capture), "--policy",
         str(ROOT / "examples" / "site-policy.yaml"), "--alerts", str(alerts), "--inventory", str(inventory)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = io.StringIO()
    records = [json.loads(line) for line in alerts.read_text().splitlines()]
    demo.show(records, json.loads(inventory.read_text()), out)
    text = out.getvalue()
    lines = [line for line in text.splitlines() if " p2p.nat_traversal " in line]
    assert lines and all("  high  " in line for line in lines)
    assert any("  info  " in line and "device.new" in line for line in text.splitlines())
    assert f"{len(records)} alerts: " in text
    # The phone-home camera is "Hikvision device" in the alerts while its traffic names EZVIZ: said why.
    assert "Why 'Hikvision device' when the traffic says EZVIZ: EZVIZ is Hikvision's consumer brand" in text
    assert "44-19-b6-00-01-01  Hikvision (evidence: oui" in text
    assert " a ezviz" not in text


def test_the_demo_headings_name_every_severity() -> None:
    """A critical alert (the lab's exploit attempt, a scanning device) is announced by the headings too."""
    alerts = [
        {"rule": {"id": "exploit.attempt"}, "event": {"severity": 5}, "message": "exploit"},
        {"rule": {"id": "device.new"}, "event": {"severity": 2}, "message": "new"},
    ]
    out = io.StringIO()
    demo.show(alerts, [], out)
    heading, critical, info, counts = out.getvalue().splitlines()[:4]
    assert heading == "Alerts (severity: critical, high, warning or info):"
    assert "  critical " in critical and "  info " in info
    assert counts == "  2 alerts: 1 critical, 0 high, 0 warning, 1 info"
    # The live demo's legend, and both against the severities an alert can carry.
    assert ALERT_COLUMNS == "(time, severity critical/high/warning/info, rule, message)"
    for name in SEVERITY_NAMES.values():
        assert f" {name}" in heading and f" {name}" in counts and name in ALERT_COLUMNS


def test_a_camera_of_an_oem_brand_is_explained() -> None:
    alerts: list[dict[str, object]] = [
        {
            "rule": {"id": "p2p.nat_traversal"},
            "device": {"manufacturer": "Hikvision", "id": "44-19-b6-77-00-11"},
        },
        {
            "rule": {"id": "dns.vendor_cloud"},
            "device": {"manufacturer": "Hikvision", "id": "44-19-b6-77-00-11"},
        },
    ]
    line = camera_line("cam1", "ezviz", "10.77.0.11", alerts)
    assert line.startswith("  cam1 (ezviz persona, 10.77.0.11): dns.vendor_cloud, p2p.nat_traversal\n")
    assert "alerts call it a Hikvision device: EZVIZ is Hikvision's consumer brand" in line
    # A camera of the maker's own brand needs no note.
    assert "\n" not in camera_line("cam2", "dahua", "10.77.0.12", [])


def _status(processes: tuple[ProcessStatus, ...], frames: int | None) -> LabStatus:
    camera = {"name": "cam1", "persona": "ezviz", "ip": "10.77.0.11", "mac": "44:19:b6:77:00:11",
              "url": "rtsp://10.77.0.11:554/stream", "rtsp": "ok", "pattern": "normal",
              "recorder_packets": frames}  # fmt: skip
    return LabStatus(
        "cwdemo", "/tmp/lab", {"cwdemo-gw": True}, processes, (camera,), {}, "ip netns exec ... camwatch run"
    )


def test_lab_status_does_not_ask_to_start_a_running_agent() -> None:
    agent = ProcessStatus(AGENT, "cwdemo-gw", 42, True, True, "/tmp/lab/agent.log")
    running = _status((agent,), 0).text()
    assert "run the agent" not in running and "agent " in running
    alone = _status((), 0).text()
    assert "to run the agent on this lab: ip netns exec ... camwatch run" in alone


def test_lab_status_explains_the_recorder_count() -> None:
    assert "the recorder has not pulled video yet (it connects within seconds)" in _status((), 0).text()
    assert "the recorder pulled 1,234 video frames" in _status((), 1234).text()
    assert "recorder packets" not in _status((), None).text()
