"""The report's readers: every form of the inventory camwatch writes, and what they refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.report.inputs import InputError, read_alerts, read_flows, read_inventory, rotated
from agents.state import save_inventory
from monitor.devices import Inventory
from tests.enginerun import vendors

RECORD = {"mac": "44:19:B6:00:01:01", "ips": ["10.20.0.11"], "vendor": "hikvision", "watched": True}


def test_each_inventory_form_is_read(tmp_path: Path) -> None:
    array = tmp_path / "inv.json"
    array.write_text(json.dumps([RECORD]))
    assert [d["mac"] for d in read_inventory(array)] == ["44-19-b6-00-01-01"]  # MAC written the ECS way
    mqtt = tmp_path / "mqtt.json"
    mqtt.write_text(json.dumps({"@timestamp": "x", "observer": {"name": "s/g"}, "devices": [RECORD]}))
    assert [d["mac"] for d in read_inventory(mqtt)] == ["44-19-b6-00-01-01"]
    # The agent's state file: restored the way the agent restores it, records as replay writes them.
    inventory = Inventory(vendors())
    dev, _ = inventory.observe(0x4419B6000101, 1_770_000_000 * 10**9)
    dev.watched = True
    save_inventory(tmp_path, inventory)
    (got,) = read_inventory(tmp_path / "inventory.json")
    assert got["mac"] == "44-19-b6-00-01-01" and got["watched"] is True
    assert got["first_seen"] == "2026-02-02T02:40:00.000Z"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            {"version": 2, "saved": 0, "devices": []},
            "is an agent state file of version 2; this camwatch reads version 1",
        ),
        (
            [{"address": "44:19:b6:00:01:01"}],
            "item 0 has no usable 'mac' (null): written by another camwatch version",
        ),
        ([{"mac": 75, "first_seen_ns": 0}], "item 0 is an entry of the agent's state (MAC as a number)"),
        ([RECORD, "44:19:b6:00:01:02"], "item 1 is not a device record but text"),
        ({"hosts": []}, "is not a camwatch inventory (a JSON dict without 'devices')"),
        ("nothing", "is not a camwatch inventory (a JSON str without 'devices')"),
    ],
)
def test_an_inventory_from_another_version_or_not_one_is_refused(
    tmp_path: Path, content: object, problem: str
) -> None:
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError) as info:
        read_inventory(path)
    assert str(info.value).startswith(f"{path}: {problem}")
    assert info.value.fix


def test_broken_and_missing_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "inv.json"
    path.write_text("[{")
    with pytest.raises(InputError, match=r"inv.json: is not JSON"):
        read_inventory(path)
    with pytest.raises(InputError, match="does not exist"):
        read_inventory(tmp_path / "missing.json")
    with pytest.raises(InputError, match="does not exist"):
        read_alerts([tmp_path / "missing.jsonl"])


def test_alert_and_flow_lines_that_are_not_records_are_skipped_and_counted(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(
        '{"rule": {"id": "x"}, "event": {"id": "1"}}\nnot json\n[1]\n{"rule": 1}\n\n{"rule": {"id"'
    )
    got, skipped = read_alerts([alerts])
    assert len(got) == 1 and skipped == 4
    flows = tmp_path / "flows.jsonl"
    line = {"source": {"ip": "a", "mac": "m", "port": 1}, "destination": {"ip": "b"}, "event": {"end": "t"}}
    flows.write_text(json.dumps(line) + "\n{}\n")
    got, skipped = read_flows([flows])
    assert (
        got == [{"source": {"ip": "a", "mac": "m"}, "destination": {"ip": "b"}, "end": "t"}] and skipped == 1
    )


def test_rotated_flow_files_are_found_oldest_first(tmp_path: Path) -> None:
    names = ("flows.20260202T100000Z-01.jsonl", "flows.20260101T000000Z.jsonl",
             "flows.20260202T100000Z.jsonl", "flows.jsonl", "alerts.20260101T000000Z.jsonl")  # fmt: skip
    for name in names:
        (tmp_path / name).write_text("")
    assert [p.name for p in rotated(tmp_path / "flows.jsonl")] == [
        "flows.20260101T000000Z.jsonl", "flows.20260202T100000Z.jsonl", "flows.20260202T100000Z-01.jsonl",
        "flows.jsonl",
    ]  # fmt: skip
