"""``camwatch inventory export``: the inventory as JSON, CSV, or NetBox's device import CSV (docs/report.md).

Which devices: the watched ones but routers (as in the ledger: a router forwards for the cameras, it is not
one of them) and those the asset register lists (``--all``: every device). Each carries its register row
when there is one (JSON: ``asset``; CSV: the ``asset_*`` columns).

NetBox: the CSV that *Devices > Import* (``DeviceImportForm``) takes, with its required fields ``name``,
``role``, ``manufacturer``, ``device_type``, ``status`` and ``site``. NetBox looks the role, manufacturer,
device type and site up by name, so they must exist before the import (docs/report.md says how); the MAC,
addresses and location go into ``description`` and the attribution evidence into ``comments``, which need
nothing to exist. Register status maps to NetBox's: active -> ``active``, scheduled -> ``decommissioning``,
removed -> ``offline``; a device not in the register is ``active`` (it is on the network). The role says
what the inventory knows a device is: a router (``router: true``) is ``Router``; a device attributed to a
camera or recorder maker (a ``vendor`` key) has the camera role (``--netbox-role``); any other (a NAS, a PC,
a device nothing identified) is ``Unclassified``, for a person to assign.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from monitor.register import AssetRegister, parse_mac

__all__ = [
    "FORMATS",
    "NETBOX_COLUMNS",
    "NETBOX_OTHER_ROLE",
    "NETBOX_ROUTER_ROLE",
    "NETBOX_STATUS",
    "netbox_role",
    "select",
    "to_csv",
    "to_json",
    "to_netbox",
]

FORMATS: Final = ("json", "csv", "netbox")
#: The columns written for NetBox, all fields of its DeviceImportForm.
NETBOX_COLUMNS: Final = (
    "name", "role", "manufacturer", "device_type", "status", "site", "serial", "description", "comments",
)  # fmt: skip
#: Register status -> NetBox DeviceStatusChoices.
NETBOX_STATUS: Final[Mapping[str, str]] = {
    "active": "active",
    "scheduled": "decommissioning",
    "removed": "offline",
}
#: NetBox roles of what is not a camera: a router, and a device of no camera or recorder maker.
NETBOX_ROUTER_ROLE: Final = "Router"
NETBOX_OTHER_ROLE: Final = "Unclassified"
_CSV_COLUMNS: Final = (
    "mac", "ips", "vendor", "manufacturer", "watched", "router", "model", "firmware", "serial", "first_seen",
    "last_seen", "protocols", "peers", "evidence", "asset_name", "asset_location", "asset_status",
    "asset_replace_by", "asset_owner",
)  # fmt: skip
# NetBox: Device.description is at most 200 characters.
_DESCRIPTION_MAX: Final = 200


def select(
    devices: Sequence[Mapping[str, Any]], register: AssetRegister, every: bool
) -> list[dict[str, Any]]:
    """The devices to export (watched but routers, or listed; or all), each with ``asset`` when the register
    lists it."""
    out = []
    for record in devices:
        mac = parse_mac(str(record.get("mac", "")))
        asset = register.get(mac) if mac is not None else None
        watched = record.get("watched") and not record.get("router")
        if not (every or watched or asset is not None):
            continue
        item = dict(record)
        if asset is not None:
            item["asset"] = {**asset.to_ecs(), "notes": asset.notes} if asset.notes else asset.to_ecs()
        out.append(item)
    return out


def to_json(devices: Sequence[Mapping[str, Any]]) -> str:
    """A JSON array of the records (docs/design.md §4.4, plus ``asset``)."""
    return json.dumps(list(devices), indent=1, ensure_ascii=False) + "\n"


def to_csv(devices: Sequence[Mapping[str, Any]]) -> str:
    """One line per device; lists joined with ``;``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(_CSV_COLUMNS)
    for d in devices:
        asset: Mapping[str, Any] = d["asset"] if isinstance(d.get("asset"), Mapping) else {}
        evidence = _evidence(d)
        row = {
            "mac": d.get("mac", ""),
            "ips": ";".join(str(ip) for ip in d.get("ips") or ()),
            "vendor": d.get("vendor") or "",
            "manufacturer": d.get("manufacturer") or "",
            "watched": "yes" if d.get("watched") else "no",
            "router": "yes" if d.get("router") else "no",
            "model": d.get("model") or "",
            "firmware": d.get("firmware") or "",
            "serial": d.get("serial") or "",
            "first_seen": d.get("first_seen") or "",
            "last_seen": d.get("last_seen") or "",
            "protocols": ";".join(str(p) for p in d.get("protocols") or ()),
            "peers": d.get("peers", ""),
            "evidence": "; ".join(
                f"{e.get('kind')}: {e.get('detail')}" for e in evidence if isinstance(e, dict)
            ),
            "asset_name": asset.get("name", ""),
            "asset_location": asset.get("location", ""),
            "asset_status": asset.get("status", ""),
            "asset_replace_by": asset.get("replace_by", ""),
            "asset_owner": asset.get("owner", ""),
        }
        writer.writerow([_cell(str(row[c])) for c in _CSV_COLUMNS])
    return out.getvalue()


def netbox_role(device: Mapping[str, Any], camera_role: str) -> str:
    """The NetBox role of a device: ``Router``, ``camera_role`` for a camera or recorder maker's device,
    else ``Unclassified`` (the inventory does not say what it is)."""
    if device.get("router"):
        return NETBOX_ROUTER_ROLE
    return camera_role if device.get("vendor") else NETBOX_OTHER_ROLE


def to_netbox(devices: Sequence[Mapping[str, Any]], site: str, role: str) -> str:
    """NetBox's bulk device import CSV for these devices at ``site``; ``role`` is the cameras' (and
    recorders') device role, the others' is :func:`netbox_role`'s."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(NETBOX_COLUMNS)
    names: set[str] = set()
    for d in devices:
        asset: Mapping[str, Any] = d["asset"] if isinstance(d.get("asset"), Mapping) else {}
        mac = str(d.get("mac", ""))
        maker = str(d.get("manufacturer") or d.get("vendor") or "Unknown")
        name = str(asset.get("name") or f"{maker}-{mac.replace('-', '').replace(':', '')}")
        if name in names:  # NetBox: a device name is unique within its site
            name = f"{name} ({mac})"
        names.add(name)
        ips = ", ".join(str(ip) for ip in d.get("ips") or ())
        description = f"MAC {mac}" + (f"; {ips}" if ips else "")
        if asset.get("location"):
            description += f"; at {asset['location']}"
        comments = [
            f"Seen by camwatch from {d.get('first_seen', '?')} to {d.get('last_seen', '?')}.",
            *(f"- {e.get('kind')}: {e.get('detail')}" for e in _evidence(d)),
        ]
        if asset.get("replace_by"):
            comments.append(f"Replace by {asset['replace_by']}.")
        if asset.get("owner"):
            comments.append(f"Owner: {asset['owner']}.")
        if asset.get("notes"):
            comments.append(str(asset["notes"]))
        row = {
            "name": name,
            "role": netbox_role(d, role),
            "manufacturer": maker,
            "device_type": str(d.get("model") or asset.get("model") or "Unknown model"),
            "status": NETBOX_STATUS.get(str(asset.get("status", "")), "active"),
            "site": site,
            "serial": str(d.get("serial") or ""),
            "description": _clip(description, _DESCRIPTION_MAX),
            "comments": "\n".join(comments),
        }
        writer.writerow([_cell(row[c]) for c in NETBOX_COLUMNS])
    return out.getvalue()


def _evidence(device: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = device.get("evidence")
    return [e for e in found if isinstance(e, Mapping)] if isinstance(found, list) else []


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(text: str) -> str:
    # Values come from the network (banners, certificates): never a spreadsheet formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
