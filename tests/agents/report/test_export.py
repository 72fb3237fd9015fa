"""``camwatch inventory export``: JSON, CSV, and a CSV NetBox's bulk device import accepts."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from agents.report.export import select, to_csv, to_json, to_netbox
from monitor.register import AssetRegister

# NetBox 4.x, netbox/dcim/forms/bulk_import.py: DeviceImportForm.Meta.fields, the fields of those without
# required=False (BaseDeviceImportForm: role, manufacturer, device_type, status; DeviceImportForm: site), and
# dcim/choices.py DeviceStatusChoices. Device.description is a CharField(max_length=200).
NETBOX_FIELDS = {
    "name", "role", "tenant", "manufacturer", "device_type", "platform", "serial", "asset_tag", "status",
    "site", "location", "rack", "position", "face", "latitude", "longitude", "parent", "device_bay",
    "airflow", "virtual_chassis", "vc_position", "vc_priority", "cluster", "description", "config_template",
    "comments", "tags",
}  # fmt: skip
NETBOX_REQUIRED = {"role", "manufacturer", "device_type", "status", "site"}
NETBOX_STATUSES = {"offline", "active", "planned", "staged", "failed", "inventory", "decommissioning"}

REGISTER = AssetRegister.parse(
    "mac,name,location,model,owner,status,replace_by,notes\n"
    "44:19:b6:00:01:01,Gate,North gate,,Facilities,scheduled,2026-03-31,contract 1142\n"
    "44:19:b6:00:01:02,Yard,Yard east,,,removed,,\n"
    "00:11:22:33:44:55,Office PC,,,,active,,\n"
)


def device(mac: str, watched: bool = True, **more: Any) -> dict[str, Any]:
    return {
        "mac": mac, "ips": ["10.20.0.11", "fe80::1"], "vendor": "hikvision", "manufacturer": "Hikvision",
        "watched": watched, "evidence": [{"kind": "oui", "detail": "Hikvision"}], "model": "DS-2CD2043G2",
        "first_seen": "2026-02-01T08:00:00.000Z", "last_seen": "2026-02-02T08:00:00.000Z", **more,
    }  # fmt: skip


DEVICES = [
    device("44-19-b6-00-01-01"),
    device("44-19-b6-00-01-02", serial="DS-2CD2143G2-I20230101AAWR"),
    device("44-19-b6-00-01-03", model=None),  # watched, not listed
    device("00-11-22-33-44-55", watched=False, vendor=None, manufacturer="Dell", model=None),  # listed only
    device("00-11-22-33-44-66", watched=False, vendor=None, manufacturer=None, model=None),  # neither
]
# The site's router and recorder (a NAS of no camera maker), both on the camera network.
ROUTER = device("02-00-00-00-00-01", vendor=None, manufacturer=None, model=None, router=True)
NAS = device("00-11-32-00-00-02", vendor=None, manufacturer="Synology", model=None)


def test_watched_and_listed_devices_are_exported_with_their_register_row() -> None:
    chosen = select(DEVICES, REGISTER, every=False)
    assert [d["mac"] for d in chosen] == [d["mac"] for d in DEVICES[:4]]
    assert chosen[0]["asset"] == {
        "status": "scheduled", "name": "Gate", "location": "North gate", "owner": "Facilities",
        "replace_by": "2026-03-31", "notes": "contract 1142",
    }  # fmt: skip
    assert "asset" not in chosen[2]
    assert len(select(DEVICES, REGISTER, every=True)) == 5
    assert json.loads(to_json(chosen)) == chosen


def test_csv_has_one_line_per_device() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(select(DEVICES, REGISTER, every=False)))))
    assert [r["mac"] for r in rows] == [d["mac"] for d in DEVICES[:4]]
    assert rows[0]["ips"] == "10.20.0.11;fe80::1" and rows[0]["asset_location"] == "North gate"
    assert rows[1]["asset_status"] == "removed" and rows[2]["asset_status"] == ""


def test_netbox_import_csv_has_the_form_fields_the_required_ones_and_valid_statuses() -> None:
    text = to_netbox(select(DEVICES, REGISTER, every=False), "depot-7", "CCTV camera")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames is not None
    assert NETBOX_REQUIRED <= set(reader.fieldnames) <= NETBOX_FIELDS
    rows = list(reader)
    assert len(rows) == 4
    for row in rows:
        assert all(row[f] for f in NETBOX_REQUIRED), row
        assert row["status"] in NETBOX_STATUSES
        assert len(row["description"]) <= 200
    assert len({r["name"] for r in rows}) == 4  # unique within the site
    gate, yard, unlisted, office = rows
    assert (gate["name"], gate["status"], gate["site"], gate["role"]) == (
        "Gate",
        "decommissioning",
        "depot-7",
        "CCTV camera",
    )
    assert gate["description"] == "MAC 44-19-b6-00-01-01; 10.20.0.11, fe80::1; at North gate"
    assert "Replace by 2026-03-31." in gate["comments"] and "- oui: Hikvision" in gate["comments"]
    assert (yard["status"], yard["serial"]) == ("offline", "DS-2CD2143G2-I20230101AAWR")
    assert (unlisted["name"], unlisted["status"], unlisted["device_type"]) == (
        "Hikvision-4419b6000103", "active", "Unknown model"
    )  # fmt: skip
    assert (office["manufacturer"], office["device_type"], office["status"]) == (
        "Dell",
        "Unknown model",
        "active",
    )


def test_routers_are_left_out_unless_asked_for_and_no_router_or_nas_is_called_a_camera() -> None:
    devices = [*DEVICES, ROUTER, NAS]
    chosen = select(devices, REGISTER, every=False)
    assert ROUTER["mac"] not in [d["mac"] for d in chosen]  # as in the ledger: routers excepted
    assert NAS["mac"] in [d["mac"] for d in chosen]  # watched: on the camera network
    listed = AssetRegister.parse(f"mac,name,status\n{ROUTER['mac']},Site router,active\n")
    assert [d["mac"] for d in select([ROUTER], listed, every=False)] == [ROUTER["mac"]]
    rows = list(csv.DictReader(io.StringIO(to_netbox(select(devices, REGISTER, every=True), "d7", "Camera"))))
    roles = {r["description"].split(";")[0]: r["role"] for r in rows}
    assert roles["MAC 02-00-00-00-00-01"] == "Router"
    assert roles["MAC 00-11-32-00-00-02"] == "Unclassified"  # the inventory does not say it is a camera
    assert roles["MAC 00-11-22-33-44-55"] == "Unclassified"  # the office PC (Dell)
    assert roles["MAC 44-19-b6-00-01-01"] == "Camera"  # --netbox-role
