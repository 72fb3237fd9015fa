"""State on disk and privilege drop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.state import load_incidents, load_inventory, save_incidents, save_inventory
from lab import scenario
from monitor.alerts import Alert, AlertGate
from monitor.engine import Engine
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.rules.device import DEVICE_NEW
from tests.enginerun import run_engine, vendors

ROOT = Path(__file__).parents[2]


def test_known_devices_are_not_announced_again_after_a_restart(tmp_path: Path) -> None:
    cap = tmp_path / "site.pcap"
    cap.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    first, _, alerts = run_engine(cap)
    announced = [a for a in alerts if a["rule"]["id"] == "device.new"]  # type: ignore[index]
    assert announced
    save_inventory(tmp_path, first.inventory)

    second = Engine(SitePolicy.default(), vendors())
    assert load_inventory(tmp_path, second.inventory) == len(first.inventory)
    restored = {d["mac"]: d for d in second.inventory.records()}
    original = {d["mac"]: d for d in first.inventory.records()}
    assert restored == original  # first seen, vendor, evidence, model... all kept
    from agents.capture.pcap_source import PcapFileSource

    new_alerts = []
    for batch in PcapFileSource(cap).batches():
        new_alerts += second.feed(batch).alerts
    new_alerts += second.finish().alerts
    assert [a for a in new_alerts if a.rule.id == "device.new"] == []
    assert any(a.rule.id != "device.new" for a in new_alerts)  # the other rules still fire


def test_a_damaged_state_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "inventory.json").write_text("{not json", encoding="utf-8")
    engine = Engine(SitePolicy.default(), vendors())
    assert load_inventory(tmp_path, engine.inventory) == 0
    assert not (tmp_path / "inventory.json").exists()
    assert list(tmp_path.glob("inventory.json.damaged-*"))
    # Entries of the wrong shape are skipped, the good ones kept.
    good = {"mac": 1, "first_seen_ns": 1, "last_seen_ns": 2, "ips": [], "vendor": None, "manufacturer": None,
            "watched": False, "announced": True, "evidence": []}  # fmt: skip
    (tmp_path / "inventory.json").write_text(json.dumps({"version": 1, "devices": [good, {"mac": "x"}]}))
    assert load_inventory(tmp_path, engine.inventory) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_privileges_are_dropped_and_the_state_dir_handed_over(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite3").write_bytes(b"")
    os.chmod(tmp_path, 0o755)
    code = (
        "import os, sys, socket\n"
        "from pathlib import Path\n"
        "from agents.privileges import drop_privileges\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"  # opened as root
        f"who = drop_privileges('nobody', Path({str(state)!r}))\n"
        "try:\n"
        "    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "    print('still-privileged')\n"
        "except PermissionError:\n"
        "    print('dropped', who, os.getuid(), s.fileno() > 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[:2] == ["dropped", "nobody"] and res.stdout.split()[3] == "True"
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    assert (state / "outbox.sqlite3").stat().st_uid == nobody and state.stat().st_uid == nobody


def test_ongoing_incidents_do_not_alert_again_after_a_restart(tmp_path: Path) -> None:
    from agents.capture.pcap_source import PcapFileSource

    cap = tmp_path / "site.pcap"
    cap.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    first, _, alerts = run_engine(cap)
    assert len(alerts) > 5
    save_inventory(tmp_path, first.inventory)
    save_incidents(tmp_path, first.gate)

    alerted = {str(a["event"]["id"]) for a in alerts}  # type: ignore[index]

    def replay_after_restart(with_incidents: bool) -> set[str]:
        engine = Engine(SitePolicy.default(), vendors())
        load_inventory(tmp_path, engine.inventory)
        if with_incidents:
            assert load_incidents(tmp_path, engine.gate) == len(alerted)
        out = [a for batch in PcapFileSource(cap).batches() for a in engine.feed(batch).alerts]
        return {a.event_id for a in out + engine.finish().alerts}

    # Without the incidents the same incidents alert again; with them, none does. (A device the first run
    # attributed only late, e.g. by its HTTP banner, is watched from the start now: its earlier flows are
    # new incidents, with new ids.)
    assert replay_after_restart(False) & alerted
    assert replay_after_restart(True) & alerted == set()


def test_a_damaged_incidents_file_is_set_aside_and_bad_entries_skipped(tmp_path: Path) -> None:
    (tmp_path / "incidents.json").write_text('{"version": 1, "incidents": 7}', encoding="utf-8")
    assert load_incidents(tmp_path, AlertGate()) == 0
    assert list(tmp_path.glob("incidents.json.damaged-*"))
    entries = [["a", 5], ["b", "5"], [1, 5], ["c", True], ["d"], "e", ["f", 9]]
    (tmp_path / "incidents.json").write_text(json.dumps({"version": 1, "incidents": entries}))
    gate = AlertGate(realert_after_s=10, max_tracked=1)
    assert load_incidents(tmp_path, gate) == 1  # only the newest good entry fits the bound of 1
    assert gate.state() == [["f", 9]]
    alert = Alert(rule=DEVICE_NEW, timestamp_ns=10, event_id="f", observer="s/g", message="m")
    assert not gate.admit(alert)  # suppressed: restored at 9 ns, within the 10 s window
