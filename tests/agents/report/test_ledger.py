"""The phase-out ledger from inputs: one row per watched or listed device, what each did, overdue."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

from agents.report.inputs import Inputs
from agents.report.ledger import COLUMNS, build, to_csv
from monitor.register import AssetRegister

GATE, YARD, SPARE, OFFICE, ROUTER, STRAY = (
    "44-19-b6-00-01-01", "44-19-b6-00-01-02", "44-19-b6-00-09-09", "00-11-22-33-44-55", "02-00-00-00-00-01",
    "3c-ef-8c-00-02-01",
)  # fmt: skip
REGISTER = AssetRegister.parse(
    "mac,name,location,model,owner,status,replace_by,notes\n"
    f"{GATE},=cmd|' /C calc'!A0,North gate,DS-2CD2043G2,Facilities,scheduled,2026-03-31,\n"
    f"{YARD},Yard,Yard east,,Facilities,removed,2025-12-31,taken down\n"
    f"{SPARE},Spare,Store,,,active,,never installed\n"
)


def device(mac: str, watched: bool = True, **more: Any) -> dict[str, Any]:
    return {
        "mac": mac,
        "ips": ["10.20.0.11"],
        "vendor": "hikvision",
        "manufacturer": "Hikvision",
        "watched": watched,
        "evidence": [{"kind": "oui", "detail": "Hikvision (netaddr)"}, {"kind": "sadp", "detail": "DS-2CD"}],
        "first_seen": "2026-02-01T08:00:00.000Z",
        "last_seen": "2026-02-02T08:00:00.000Z",
        **more,
    }


def alert(rule: str, mac: str, when: str, **more: Any) -> dict[str, Any]:
    return {
        "@timestamp": when,
        "event": {"kind": "alert", "id": f"{rule}-{mac}-{when}", "severity": 3},
        "rule": {"id": rule},
        "device": {"id": mac},
        **more,
    }


def flow(src_mac: str, src_ip: str, dst_ip: str, end: str, domain: str | None = None) -> dict[str, Any]:
    dst: dict[str, Any] = {"ip": dst_ip}
    if domain:
        dst["domain"] = domain
    return {"source": {"ip": src_ip, "mac": src_mac}, "destination": dst, "end": end}


def inputs() -> Inputs:
    return Inputs(
        devices=[
            device(GATE, model=None, containment={"state": "quarantined"}),
            device(YARD, ips=["10.20.0.12"]),
            device(STRAY, ips=["10.20.0.40"], vendor="dahua", manufacturer="Dahua", firmware="2.800"),
            device(OFFICE, watched=False, vendor=None, manufacturer="Dell"),
            device(ROUTER, router=True),
        ],
        alerts=[
            alert(
                "dns.vendor_cloud",
                GATE,
                "2026-02-01T09:00:00.000Z",
                destination={"ip": "10.20.0.1", "domain": "litedev.ezvizlife.com"},
            ),
            alert(
                "egress.unexpected_destination",
                GATE,
                "2026-02-01T09:00:01.000Z",
                source={"ip": "10.20.0.11", "mac": GATE},
                destination={"ip": "203.0.113.7"},
            ),
            alert("p2p.nat_traversal", STRAY, "2026-02-01T10:00:00.000Z", destination={"ip": "198.51.100.9"}),
            alert(
                "upnp.port_mapping", STRAY, "2026-02-01T10:00:01.000Z", destination={"ip": "239.255.255.250"}
            ),
            alert("exploit.attempt", GATE, "2026-02-01T11:00:00.000Z", source={"ip": "192.0.2.66"}),
            alert("auth.default_credentials", GATE, "2026-02-01T11:00:05.000Z", source={"ip": "10.20.0.99"}),
            alert(
                "device.removed_seen",
                YARD,
                "2026-02-01T12:00:00.000Z",
                source={"ip": "10.20.0.12", "mac": YARD},
            ),
        ],
        flows=[
            flow(GATE, "10.20.0.11", "203.0.113.7", "2026-02-01T09:00:02.000Z", "litedev.ezvizlife.com"),
            flow(GATE, "10.20.0.11", "203.0.113.8", "2026-02-02T07:00:00.000Z"),
            flow(GATE, "10.20.0.11", "10.20.0.2", "2026-02-02T07:30:00.000Z"),  # on site: not a destination
            flow(YARD, "10.20.0.12", "192.0.2.10", "2026-02-01T12:00:00.000Z"),
        ],
        register=REGISTER,
        site="depot-7",
    )


def rows_by_mac(text: str) -> dict[str, dict[str, str]]:
    return {r["mac"]: r for r in csv.DictReader(io.StringIO(text))}


def test_one_row_per_watched_or_listed_device_with_what_it_did() -> None:
    ledger = build(inputs(), date(2026, 4, 1))
    text = to_csv(ledger)
    assert text.splitlines()[0].split(",") == list(COLUMNS)
    rows = rows_by_mac(text)
    # Watched devices and the register's (the spare, never seen); not the office PC, not the router.
    assert set(rows) == {GATE, YARD, SPARE, STRAY}
    gate = rows[GATE]
    assert gate["status"] == "scheduled" and gate["overdue"] == "yes" and gate["location"] == "North gate"
    assert gate["model"] == "DS-2CD2043G2"  # from the register: the inventory had none
    # Off-site addresses from its alert and its flows (203.0.113.7 counted once).
    assert gate["external_destinations"] == "2" and gate["last_external"] == "2026-02-02T07:00:00.000Z"
    assert gate["vendor_cloud"] == "1" and gate["vendor_cloud_names"] == "litedev.ezvizlife.com"
    assert gate["last_vendor_cloud"] == "2026-02-01T09:00:02.000Z"  # the flow after the lookup
    assert (gate["exploit_attempts"], gate["default_credentials"], gate["alerts"]) == ("1", "1", "4")
    assert gate["containment"] == "quarantined"
    assert gate["evidence"] == "oui: Hikvision (netaddr); sadp: DS-2CD"
    # A formula from a register cell is neutralised for spreadsheets.
    assert gate["name"] == "'=cmd|' /C calc'!A0"
    stray = rows[STRAY]
    assert (stray["status"], stray["p2p"], stray["upnp"], stray["external_destinations"]) == (
        "unregistered", "1", "1", "1"  # the UPnP search's multicast group is not a destination
    )  # fmt: skip
    yard = rows[YARD]
    assert yard["status"] == "removed" and yard["overdue"] == "no" and yard["alerts"] == "1"
    spare = rows[SPARE]
    assert (spare["seen"], spare["first_seen"], spare["alerts"], spare["notes"]) == (
        "no",
        "",
        "0",
        "never installed",
    )


def test_overdue_depends_on_the_day() -> None:
    assert rows_by_mac(to_csv(build(inputs(), date(2026, 3, 31))))[GATE]["overdue"] == "no"
    assert rows_by_mac(to_csv(build(inputs(), date(2026, 4, 1))))[GATE]["overdue"] == "yes"


def test_an_empty_site_is_an_empty_ledger() -> None:
    ledger = build(Inputs(), date(2026, 4, 1))
    assert ledger.rows == [] and to_csv(ledger) == ",".join(COLUMNS) + "\r\n"
