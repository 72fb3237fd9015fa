"""The phase-out ledger: one row per watched device, and per device of the asset register, with what each one
did on the network (docs/report.md).

Pure: inputs in (:class:`~agents.report.inputs.Inputs`), rows out; ``ledger.csv`` and ``index.html`` are both
made from :func:`build` (so the page's numbers are the CSV's).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from agents.report.inputs import Inputs
from monitor.devices import is_local_ip
from monitor.register import parse_mac
from monitor.vendors.clouds import CloudCatalogue
from monitor.vendors.oui import format_mac

__all__ = ["COLUMNS", "UNREGISTERED", "Ledger", "Row", "build", "to_csv"]

#: The ledger's columns, in order: the issue's, then the ones a programme manager asked for beside them.
COLUMNS: Final = (
    "mac", "ip", "vendor", "model", "firmware", "status", "replace_by", "location", "first_seen",
    "last_seen", "external_destinations", "vendor_cloud", "p2p", "upnp", "default_credentials",
    "exploit_attempts", "alerts", "name", "owner", "manufacturer", "overdue", "seen", "watched",
    "last_external", "vendor_cloud_names", "last_vendor_cloud", "evidence", "containment", "notes",
)  # fmt: skip
#: Status of a device the register does not list.
UNREGISTERED: Final = "unregistered"
# Alert rules counted in their own columns (docs/design.md §4.2; exploit.attempt and auth.default_credentials
# are the attack rules' ids).
_COUNTED: Final[Mapping[str, str]] = {
    "p2p.nat_traversal": "p2p",
    "upnp.port_mapping": "upnp",
    "auth.default_credentials": "default_credentials",
    "exploit.attempt": "exploit_attempts",
}
_CLOUD_RULE: Final = "dns.vendor_cloud"
# Alerts whose source is the other party, the device the destination (docs/design.md §4.2).
_TO_CLIENT: Final = frozenset({"stream.unauthorized_client"})
_NUMBERS: Final = ("external_destinations", "vendor_cloud", "p2p", "upnp", "default_credentials",
                   "exploit_attempts", "alerts")  # fmt: skip


@dataclass(slots=True)
class Row:
    """One device of the ledger: column name -> text (numbers as decimal text), as in the CSV."""

    values: dict[str, str]
    evidence: list[tuple[str, str]] = field(default_factory=list)

    def number(self, column: str) -> int:
        return int(self.values[column] or 0)

    def __getitem__(self, column: str) -> str:
        return self.values[column]


@dataclass(slots=True)
class Ledger:
    """The rows (watched or listed devices, by status then MAC) and what they were made from."""

    rows: list[Row]
    as_of: date
    site: str
    sources: dict[str, str]

    def count(self, column: str, value: str) -> int:
        return sum(1 for r in self.rows if r[column] == value)

    def total(self, column: str) -> int:
        return sum(r.number(column) for r in self.rows)

    def with_some(self, column: str) -> int:
        return sum(1 for r in self.rows if r.number(column) > 0)


def build(inputs: Inputs, as_of: date, clouds: CloudCatalogue | None = None) -> Ledger:
    """The ledger of these inputs on the day ``as_of`` (what is overdue)."""
    clouds = clouds if clouds is not None else CloudCatalogue.load()
    register = inputs.register
    devices: dict[int, Mapping[str, Any]] = {}
    for record in inputs.devices:
        mac = parse_mac(str(record.get("mac", "")))
        # A router forwards for the cameras (docs/design.md §2): it is not one of them, unless listed.
        if mac is not None and ((record.get("watched") and not record.get("router")) or mac in register):
            devices[mac] = record
    macs = set(devices) | {asset.mac for asset in register}
    activity = _activity(inputs, clouds)
    rows: list[Row] = []
    for mac in macs:
        rows.append(_row(mac, devices.get(mac), register.get(mac), activity.get(mac), as_of))
    order = {"scheduled": 0, "active": 1, UNREGISTERED: 2, "removed": 3}
    rows.sort(key=lambda r: (order.get(r["status"], 9), r["replace_by"] or "9999", r["mac"]))
    return Ledger(rows, as_of, inputs.site, dict(inputs.sources))


@dataclass(slots=True)
class _Activity:
    external: set[str] = field(default_factory=set)
    last_external: str = ""
    clouds: set[str] = field(default_factory=set)
    last_cloud: str = ""
    counted: dict[str, int] = field(default_factory=dict)
    alerts: int = 0


def _activity(inputs: Inputs, clouds: CloudCatalogue) -> dict[int, _Activity]:
    acts: dict[int, _Activity] = {}

    def of(mac_text: object) -> _Activity | None:
        mac = parse_mac(mac_text) if isinstance(mac_text, str) else None
        return acts.setdefault(mac, _Activity()) if mac is not None else None

    for alert in inputs.alerts:
        device: dict[str, Any] = alert["device"] if isinstance(alert.get("device"), dict) else {}
        act = of(device.get("id"))
        if act is None:
            continue
        act.alerts += 1
        rule = str(alert["rule"].get("id", ""))
        when = str(alert.get("@timestamp", ""))
        column = _COUNTED.get(rule)
        if column is not None:
            act.counted[column] = act.counted.get(column, 0) + 1
        dst: dict[str, Any] = alert["destination"] if isinstance(alert.get("destination"), dict) else {}
        src: dict[str, Any] = alert["source"] if isinstance(alert.get("source"), dict) else {}
        if rule == _CLOUD_RULE and dst.get("domain"):
            act.clouds.add(str(dst["domain"]).lower())
            act.last_cloud = max(act.last_cloud, when)
        # Where the device's traffic went: the destination when the device is the source (its own flow, its
        # lookup, its video); the client for a stream pulled from it (the video goes there). An attacker's
        # address is not a destination: exploit attempts have their own column.
        me = device.get("id")
        if rule in _TO_CLIENT:
            far = src if src.get("mac") != me else {}
        else:
            far = dst if src.get("mac") in (None, me) else {}
        ip = far.get("ip")
        if isinstance(ip, str) and _off_site(ip):
            act.external.add(ip)
            act.last_external = max(act.last_external, when)
    for flow in inputs.flows:
        source: dict[str, Any] = flow["source"]
        destination: dict[str, Any] = flow["destination"]
        for near, far in ((source, destination), (destination, source)):
            act = of(near.get("mac"))
            ip = far.get("ip")
            if (
                act is None
                or not isinstance(ip, str)
                or not _off_site(ip)
                or _off_site(str(near.get("ip", "")))
            ):
                continue
            act.external.add(ip)
            act.last_external = max(act.last_external, str(flow.get("end") or ""))
            domain = far.get("domain")
            if isinstance(domain, str) and clouds.match_domain(domain) is not None:
                act.clouds.add(domain.lower())
                act.last_cloud = max(act.last_cloud, str(flow.get("end") or ""))
    return acts


def _off_site(ip: str) -> bool:
    """A unicast address outside private, link-local and multicast space."""
    try:
        if is_local_ip(ip):
            return False
    except ValueError:
        return False
    return not (ip.startswith(("224.", "239.", "ff")) or ip in ("255.255.255.255", "0.0.0.0", "::"))


def _row(mac: int, dev: Mapping[str, Any] | None, asset: Any, act: _Activity | None, as_of: date) -> Row:
    act = act or _Activity()
    dev = dev or {}
    ips: list[Any] = dev["ips"] if isinstance(dev.get("ips"), list) else []
    found: list[Any] = dev["evidence"] if isinstance(dev.get("evidence"), list) else []
    evidence = [(str(e.get("kind", "")), str(e.get("detail", ""))) for e in found if isinstance(e, dict)]
    values = {
        "mac": format_mac(mac),
        "ip": ";".join(str(ip) for ip in ips),
        "vendor": str(dev.get("vendor") or ""),
        "model": str(dev.get("model") or (asset.model if asset is not None else "") or ""),
        "firmware": str(dev.get("firmware") or ""),
        "status": asset.status if asset is not None else UNREGISTERED,
        "replace_by": asset.replace_by.isoformat() if asset is not None and asset.replace_by else "",
        "location": asset.location if asset is not None else "",
        "first_seen": str(dev.get("first_seen") or ""),
        "last_seen": str(dev.get("last_seen") or ""),
        "external_destinations": str(len(act.external)),
        "vendor_cloud": str(len(act.clouds)),
        "p2p": str(act.counted.get("p2p", 0)),
        "upnp": str(act.counted.get("upnp", 0)),
        "default_credentials": str(act.counted.get("default_credentials", 0)),
        "exploit_attempts": str(act.counted.get("exploit_attempts", 0)),
        "alerts": str(act.alerts),
        "name": asset.name if asset is not None else "",
        "owner": asset.owner if asset is not None else "",
        "manufacturer": str(dev.get("manufacturer") or ""),
        "overdue": "yes" if asset is not None and asset.overdue(as_of) else "no",
        "seen": "yes" if dev else "no",
        "watched": "yes" if dev.get("watched") else "no",
        "last_external": act.last_external,
        "vendor_cloud_names": ";".join(sorted(act.clouds)),
        "last_vendor_cloud": act.last_cloud,
        "evidence": "; ".join(f"{kind}: {detail}" for kind, detail in evidence),
        "containment": _containment(dev.get("containment")),
        "notes": asset.notes if asset is not None else "",
    }
    return Row(values, evidence)


def _containment(value: object) -> str:
    """Containment state where the inventory has it (a text, or an object with a ``state``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("state") or value.get("mode") or "")
    return ""


def to_csv(ledger: Ledger) -> str:
    """``ledger.csv``: a header of :data:`COLUMNS`, one line per row (RFC 4180 quoting, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in ledger.rows:
        writer.writerow([_cell(row.values[c]) for c in COLUMNS])
    return out.getvalue()


def _cell(text: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet (CSV injection): a device name or a banner
    # from the network must not run one.
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def numeric_columns() -> Sequence[str]:
    return _NUMBERS


def rows_where(ledger: Ledger, column: str, values: Iterable[str]) -> list[Row]:
    wanted = set(values)
    return [r for r in ledger.rows if r[column] in wanted]
