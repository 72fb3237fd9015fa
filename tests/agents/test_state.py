"""State on disk and privilege drop."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
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


# --------------------------------------------------------------------------------------------------
# Damaged state files never stop the agent


GOOD_DEVICE = {"mac": 1, "first_seen_ns": 1, "last_seen_ns": 2, "ips": [], "vendor": None,
               "manufacturer": None, "watched": False, "announced": True, "evidence": []}  # fmt: skip
NESTED = '{"version": 1, "devices": ' + "[" * 100_000 + "]" * 100_000 + "}"


def device(**changes: object) -> str:
    return json.dumps({**GOOD_DEVICE, **changes})


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (NESTED.encode(), "nested too deeply"),
        (
            ('{"version": 1, "devices": [' + device(mac="INF") + "]}").replace('"INF"', "Infinity").encode(),
            "Infinity",
        ),
        (('{"version": 1, "devices": [' + device(mac="NAN") + "]}").replace('"NAN"', "NaN").encode(), "NaN"),
        ('{"version": 1, "devices": []}'.encode("utf-16"), "UnicodeDecodeError"),
        (b'{"version": 2, "devices": []}', "unknown state version 2"),
    ],
    ids=["nested", "infinity", "nan", "utf16", "version"],
)
def test_a_state_file_that_cannot_be_used_whole_is_set_aside_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: bytes, why: str
) -> None:
    (tmp_path / "inventory.json").write_bytes(text)
    engine = Engine(SitePolicy.default(), vendors())
    with caplog.at_level(logging.ERROR, logger="agents.state"):
        assert load_inventory(tmp_path, engine.inventory) == 0
    assert not (tmp_path / "inventory.json").exists()
    (aside,) = tmp_path.glob("inventory.json.damaged-*")
    assert aside.read_bytes() == text
    (line,) = [r.getMessage() for r in caplog.records if r.name == "agents.state"]
    assert why in line and "moved to" in line and "\n" not in line


@pytest.mark.parametrize(
    "bad",
    [
        {"mac": -5},
        {"mac": 1 << 60},
        {"mac": 1.5},
        {"mac": True},
        {"first_seen_ns": -1},
        {"last_seen_ns": 10**30},
        {"first_seen_ns": "1"},
    ],
    ids=["negative", "above-48-bits", "float", "bool", "negative-time", "huge-time", "string-time"],
)
def test_unusable_devices_are_skipped_the_rest_loaded_and_scrapes_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: dict[str, object]
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from agents.collectors import EngineCollector

    text = '{"version": 1, "devices": [' + device(**bad) + "," + device(mac=2) + "]}"
    (tmp_path / "inventory.json").write_text(text)
    engine = Engine(SitePolicy.default(), vendors())
    with caplog.at_level(logging.ERROR, logger="agents.state"):
        assert load_inventory(tmp_path, engine.inventory) == 1
    assert [d["mac"] for d in engine.inventory.records()] == ["00-00-00-00-00-02"]
    (line,) = [r.getMessage() for r in caplog.records if r.name == "agents.state"]
    assert "1 of 2 entries are unusable" in line and "a copy of the file is kept" in line
    (copy,) = tmp_path.glob("inventory.json.damaged-*")
    assert copy.read_text() == text  # kept for a look; the file itself is rewritten at the next save
    registry = CollectorRegistry()
    registry.register(EngineCollector.of_engine(engine, threading.Lock()))
    assert b"camwatch_devices" in generate_latest(registry)  # the scrape that used to fail with 500
    save_inventory(tmp_path, engine.inventory)
    assert json.loads((tmp_path / "inventory.json").read_text())["devices"][0]["mac"] == 2


def test_damaged_incidents_and_probe_state_are_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agents.config import CameraConfig, StreamProbeConfig
    from agents.probe.scheduler import STATE_FILE, StreamProber

    (tmp_path / "incidents.json").write_text(
        '{"version": 1, "incidents": ' + "[" * 50_000 + "]" * 50_000 + "}"
    )
    assert load_incidents(tmp_path, AlertGate()) == 0
    assert list(tmp_path.glob("incidents.json.damaged-*"))
    (tmp_path / "incidents.json").write_text(
        '{"version": 1, "incidents": [["a", 5], ["b", -3], ["c", 1e400]]}'
    )
    gate = AlertGate()
    assert load_incidents(tmp_path, gate) == 1 and gate.state() == [["a", 5]]
    (tmp_path / STATE_FILE).write_text(
        '{"version": 1, "cameras": ' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "}"
    )
    probe = StreamProbeConfig(
        cameras=(CameraConfig("yard", "rtsp://192.0.2.1/s"),), snapshot_dir=tmp_path / "s"
    )
    with caplog.at_level(logging.ERROR):
        StreamProber(probe, "s/g", tmp_path, lambda record: None)  # does not raise
    assert list(tmp_path.glob(f"{STATE_FILE}.damaged-*")) and not (tmp_path / STATE_FILE).exists()
    assert any("open incidents start afresh" in r.getMessage() for r in caplog.records)
