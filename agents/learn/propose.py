"""From observations to a proposal: the learned allow rules, the devices, and the findings for a person.

What is learned (docs/learning.md): destinations watched devices opened flows to that the base policy does
not allow, by DNS name where an answer the device received explained the address, by address otherwise,
each with the ports seen. Devices are grouped by model (vendor and model) where a discovery reply or a
banner said it, else by vendor; model groups of one vendor that learned the same destinations become
one vendor group. A destination is learned when its group used it often enough (``min_flows`` flows over
at least ``min_span_s``): scans and one-off attempts have low support.

MUDgee-style wildcards, each only with enough support (``wildcard_members`` distinct members and on
average ``min_flows`` flows each, over ``min_span_s``):

- names: sibling names on one port (``0.pool.ntp.example``, ``1.pool...``) become ``*.pool.ntp.example``,
  never above a registrable level (two labels at least) nor over a flagged name;
- addresses: answered flows to several addresses of one /24 (IPv4) or /64 (IPv6) on one port become the
  network, never over a flagged address;
- ports: one destination on ``port_wildcard_members`` ports or more becomes "any port".

Never learned: what a rule flagged (``observe.py``), devices flagged as a whole, a device's scanning port,
transports without ports (the policy cannot allow ICMP alone). Each is a finding. Output is bounded: more
than ``max_destinations`` learned destinations is refused with the devices responsible.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from agents.learn.observe import ADDRESS, NAME, OUT, Observations, Usage, UsageKey, service
from monitor.alerts import iso_timestamp

__all__ = [
    "Destination",
    "DeviceInfo",
    "Finding",
    "Group",
    "LearnRefused",
    "LearnSettings",
    "LearnedRule",
    "Proposal",
    "devices_from_inventory",
    "propose",
]

NETWORK: Final = "network"
NS: Final = 1_000_000_000
_TRANSPORTS_WITH_PORTS: Final = ("tcp", "udp")
#: Findings of one kind printed in full; the rest are counted.
MAX_FINDINGS_SHOWN: Final = 20


class LearnRefused(Exception):
    """Nothing is written: the proposal would be unbounded (the message names who and what to do)."""


@dataclass(frozen=True, slots=True)
class LearnSettings:
    """How much support learning asks for (``camwatch learn`` options)."""

    min_flows: int = 3
    min_span_s: float = 600.0
    max_destinations: int = 1000
    wildcard_members: int = 4
    port_wildcard_members: int = 8


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the inventory says of a device (``id`` as alerts write its MAC)."""

    id: str
    vendor: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    ips: tuple[str, ...] = ()
    watched: bool = True
    router: bool = False

    def describe(self) -> str:
        maker = self.manufacturer or "unknown vendor"
        return " ".join(p for p in (maker, self.model or "", ",".join(self.ips[:2])) if p)


def devices_from_inventory(records: Iterable[Mapping[str, Any]]) -> dict[str, DeviceInfo]:
    """Devices by id from inventory records (``Inventory.records()``, the agent's ``inventory_file``)."""
    out: dict[str, DeviceInfo] = {}
    for rec in records:
        mac = rec.get("mac")
        if not isinstance(mac, str):
            continue

        def text(key: str, rec: Mapping[str, Any] = rec) -> str | None:
            value = rec.get(key)
            return value if isinstance(value, str) and value else None

        ips = rec.get("ips")
        out[mac] = DeviceInfo(
            id=mac,
            vendor=text("vendor"),
            manufacturer=text("manufacturer"),
            model=text("model"),
            firmware=text("firmware"),
            ips=tuple(str(ip) for ip in ips) if isinstance(ips, list) else (),
            watched=rec.get("watched") is True,
            router=rec.get("router") is True,
        )
    return out


@dataclass(slots=True)
class Group:
    """Devices learned together: one model, or one vendor."""

    key: str
    label: str
    vendor: str | None
    manufacturer: str | None
    model: str | None
    devices: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.key.lower()).strip("-") or "unknown"


@dataclass(slots=True)
class _Agg:
    """Support of one (peer, port, transport) within a group."""

    kind: str
    peer: str
    port: int
    transport: str
    flows: int = 0
    answered: int = 0
    first_ns: int = 0
    last_ns: int = 0
    devices: set[str] = field(default_factory=set)
    members: tuple[str, ...] = ()  # a wildcard: the names or addresses it stands for
    note: str = ""

    def take(self, other: _Agg | Usage, device: str | None = None) -> None:
        if self.flows == 0 or other.first_ns < self.first_ns:
            self.first_ns = other.first_ns
        self.last_ns = max(self.last_ns, other.last_ns)
        self.flows += other.flows
        self.answered += other.answered
        if isinstance(other, _Agg):
            self.devices |= other.devices
        elif device is not None:
            self.devices.add(device)

    @property
    def span_ns(self) -> int:
        return self.last_ns - self.first_ns


@dataclass(frozen=True, slots=True)
class Destination:
    """A learned destination: a name pattern or a network, its ports (None: any), and its support."""

    kind: str  # "name" or "network"
    peer: str
    ports: frozenset[tuple[int, str]] | None
    flows: int
    first_ns: int
    last_ns: int
    devices: tuple[str, ...]
    note: str = ""
    #: A wildcard: the names (or addresses) seen that it stands for.
    members: tuple[str, ...] = ()

    def comment(self) -> str:
        n = len(self.devices)
        text = (
            f"{n} device{'s' if n != 1 else ''}, {self.flows:,} flow{'s' if self.flows != 1 else ''}, "
            f"first {iso_timestamp(self.first_ns)}, last {iso_timestamp(self.last_ns)}"
        )
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True, slots=True)
class LearnedRule:
    """One allow rule of the proposal: a group's destinations that share one port set."""

    name: str
    group: str
    ports: frozenset[tuple[int, str]] | None
    destinations: tuple[Destination, ...]

    @property
    def flows(self) -> int:
        return sum(d.flows for d in self.destinations)


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a person decides: ``kind`` is flagged, device, scan, low-support, not-expressible or
    dropped."""

    kind: str
    text: str


@dataclass(slots=True)
class Proposal:
    rules: list[LearnedRule]
    groups: dict[str, Group]
    device_group: dict[str, str]
    known_devices: list[DeviceInfo]
    findings: list[Finding]
    first_ns: int | None
    last_ns: int | None

    @property
    def destinations(self) -> int:
        return sum(len(r.destinations) for r in self.rules)


def propose(
    obs: Observations, devices: Mapping[str, DeviceInfo], settings: LearnSettings | None = None
) -> Proposal:
    """The learned rules, devices and findings; raises :class:`LearnRefused` when unbounded."""
    s = settings or LearnSettings()
    findings: list[Finding] = []
    groups, device_group = _groups(obs, devices)
    flagged_devices = {d: why for d, why in obs.flagged_devices.items()}
    for dev, rule_ids in sorted(flagged_devices.items()):
        info = devices.get(dev)
        findings.append(
            Finding(
                "device",
                f"{dev} ({info.describe() if info else 'unknown device'}) was flagged by "
                f"{', '.join(sorted(rule_ids))}: nothing was learned from it, and it is not in known_devices",
            )
        )
    for (dev, port, transport), count in sorted(obs.scans.items()):
        findings.append(
            Finding(
                "scan",
                f"{dev} opened flows to {count}+ addresses on {transport}/{port} within "
                f"{600 // 60} minutes (a scan): nothing on that port was learned from it",
            )
        )
    per_group: dict[str, dict[tuple[str, str, int, str], _Agg]] = {}
    flagged_use: dict[str, _Agg] = {}
    for key, usage in obs.usages.items():
        if key.direction != OUT or usage.allowed is not None:
            continue
        if key.device in flagged_devices or (key.device, key.port, key.transport) in obs.scans:
            continue
        why = flagged(obs, key, usage)
        if why:
            agg = flagged_use.setdefault(
                f"{key.peer}\x00{why}", _Agg(key.kind, key.peer, key.port, key.transport)
            )
            agg.take(usage, key.device)
            agg.note = why
            continue
        group = device_group[key.device]
        aggs = per_group.setdefault(group, {})
        agg = aggs.setdefault(
            (key.kind, key.peer, key.port, key.transport), _Agg(key.kind, key.peer, key.port, key.transport)
        )
        agg.take(usage, key.device)
    for agg in sorted(flagged_use.values(), key=lambda a: (-a.flows, a.peer)):
        findings.append(
            Finding(
                "flagged",
                f"{agg.peer} ({_ports_text(agg)}): flagged by {agg.note}; {agg.flows:,} flow(s) from "
                f"{', '.join(sorted(agg.devices)[:4])}{' ...' if len(agg.devices) > 4 else ''}: not learned",
            )
        )

    learned: dict[str, list[_Agg]] = {}
    low: list[tuple[str, _Agg]] = []
    for group, aggs in per_group.items():
        items = list(aggs.values())
        items = _wildcard_names(items, obs, s)
        items = _wildcard_addresses(items, obs, s)
        items = _wildcard_ports(items, s)
        for agg in items:
            if agg.transport not in _TRANSPORTS_WITH_PORTS and agg.port == 0:
                findings.append(
                    Finding(
                        "not-expressible",
                        f"{agg.peer} over {agg.transport} ({agg.flows:,} flows from {groups[group].label}): "
                        "an allow rule cannot allow a transport without ports alone; add a rule by hand if "
                        "it is needed",
                    )
                )
            elif agg.flows >= s.min_flows and agg.span_ns >= s.min_span_s * NS:
                learned.setdefault(group, []).append(agg)
            else:
                low.append((group, agg))
    for group, agg in sorted(low, key=lambda item: (-item[1].flows, item[1].peer))[:MAX_FINDINGS_SHOWN]:
        findings.append(
            Finding(
                "low-support",
                f"{agg.peer} ({_ports_text(agg)}) from {groups[group].label}: {agg.flows} flow(s) over "
                f"{agg.span_ns / NS:,.0f} s, below the support asked ({s.min_flows} flows over "
                f"{s.min_span_s:g} s): not learned",
            )
        )
    if len(low) > MAX_FINDINGS_SHOWN:
        findings.append(Finding("low-support", f"... and {len(low) - MAX_FINDINGS_SHOWN} more not learned"))
    if obs.dropped:
        worst = sorted(obs.dropped_by_device.items(), key=lambda kv: -kv[1])[:4]
        findings.append(
            Finding(
                "dropped",
                f"{obs.dropped:,} observations were dropped at the bound of {obs.max_usages:,} "
                f"(most from {', '.join(f'{d} ({n:,})' for d, n in worst)}): look at those devices",
            )
        )

    destinations = {g: _destinations(aggs) for g, aggs in learned.items()}
    _merge_same_behaviour(groups, device_group, destinations)
    total = sum(len(d) for d in destinations.values())
    if total > s.max_destinations:
        counts: dict[str, int] = {}
        for aggs in per_group.values():
            for agg in aggs.values():
                for dev in agg.devices:
                    counts[dev] = counts.get(dev, 0) + 1
        worst_devices = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
        raise LearnRefused(
            f"{total:,} destinations would be learned, more than --max-rules {s.max_destinations:,}: the "
            f"devices with the most distinct destinations are "
            f"{', '.join(f'{d} ({n:,})' for d, n in worst_devices)}; look at them (a scan, P2P, or a "
            f"CDN reached by address), then raise --min-flows or --max-rules"
        )
    rules = _rules(groups, destinations)
    # Every watched device seen (routers on a monitored network too: they are announced like any device),
    # but those a rule flagged as a whole.
    known = [
        info
        for dev, info in sorted(devices.items())
        if info.watched and dev not in flagged_devices and _is_mac(dev)
    ]
    return Proposal(rules, groups, device_group, known, findings, obs.first_ns, obs.last_ns)


# ---------------------------------------------------------------------------------------------------
# Groups


def _groups(obs: Observations, devices: Mapping[str, DeviceInfo]) -> tuple[dict[str, Group], dict[str, str]]:
    groups: dict[str, Group] = {}
    device_group: dict[str, str] = {}
    for dev in sorted({key.device for key in obs.usages}):
        info = devices.get(dev)
        vendor = info.vendor if info else None
        maker = (info.manufacturer if info else None) or (vendor.capitalize() if vendor else None)
        model = info.model if info else None
        if model:
            key, label = f"{vendor or maker or 'unknown'} {model}", f"{maker or 'unknown vendor'} {model}"
        elif vendor or maker:
            key = label = vendor or maker or "unknown"
            label = maker or key
        else:
            key, label = "unknown", "devices of unknown vendor"
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(key, label, vendor, maker, model)
        group.devices.append(dev)
        device_group[dev] = key
    return groups, device_group


def _merge_same_behaviour(
    groups: dict[str, Group], device_group: dict[str, str], destinations: dict[str, list[Destination]]
) -> None:
    """Model groups of one vendor that learned exactly the same destinations become one vendor group."""

    def signature(group: str) -> frozenset[tuple[str, frozenset[tuple[int, str]] | None]]:
        return frozenset((d.peer, d.ports) for d in destinations.get(group, ()))

    by_vendor: dict[str | None, list[str]] = {}
    for key, group in groups.items():
        if group.model is not None and group.vendor is not None and key in destinations:
            by_vendor.setdefault(group.vendor, []).append(key)
    for vendor, keys in by_vendor.items():
        if len(keys) < 2 or len({signature(k) for k in keys}) != 1 or vendor in groups:
            continue
        first = groups[keys[0]]
        models = ", ".join(sorted(groups[k].model or "" for k in keys))
        merged = Group(
            vendor or "unknown",
            f"{first.manufacturer or vendor} ({models})",
            vendor,
            first.manufacturer,
            None,
        )
        combined: dict[tuple[str, frozenset[tuple[int, str]] | None], Destination] = {}
        for key in keys:
            merged.devices += groups.pop(key).devices
            for d in destinations.pop(key):
                prior = combined.get((d.peer, d.ports))
                combined[(d.peer, d.ports)] = d if prior is None else _combine(prior, d)
        groups[merged.key] = merged
        destinations[merged.key] = sorted(combined.values(), key=_dest_order)
        for dev in merged.devices:
            device_group[dev] = merged.key


def _combine(a: Destination, b: Destination) -> Destination:
    return Destination(
        a.kind,
        a.peer,
        a.ports,
        a.flows + b.flows,
        min(a.first_ns, b.first_ns),
        max(a.last_ns, b.last_ns),
        tuple(sorted(set(a.devices) | set(b.devices))),
        a.note or b.note,
        tuple(sorted(set(a.members) | set(b.members))),
    )


# ---------------------------------------------------------------------------------------------------
# Flags


def flagged(obs: Observations, key: UsageKey, usage: Usage) -> str:
    """Why the peer of this usage must not be learned ("" if it may be)."""
    why = obs.flagged_peers.get(key.peer) or obs.flagged_peers.get(service(key.peer, key.port, key.transport))
    if why:
        return ", ".join(sorted(why))
    for address in usage.addresses:
        why = obs.flagged_peers.get(address)
        if why:
            return ", ".join(sorted(why)) + f" (it resolved to {address})"
    return ""


def _flagged_below(obs: Observations, parent: str) -> bool:
    tail = "." + parent
    return any(peer == parent or peer.endswith(tail) for peer in obs.flagged_peers)


def _flagged_inside(obs: Observations, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    for peer in obs.flagged_peers:
        try:
            if ipaddress.ip_address(peer) in network:
                return True
        except ValueError:
            continue
    return False


# ---------------------------------------------------------------------------------------------------
# Wildcards


def _enough(members: Sequence[_Agg], s: LearnSettings, answered: bool = False) -> bool:
    flows = sum(a.answered if answered else a.flows for a in members)
    first = min(a.first_ns for a in members)
    last = max(a.last_ns for a in members)
    return (
        len(members) >= s.wildcard_members
        and flows >= len(members) * s.min_flows
        and last - first >= s.min_span_s * NS
    )


def _merged(kind: str, peer: str, members: Sequence[_Agg], note: str) -> _Agg:
    first = members[0]
    stands_for = tuple(sorted({p for m in members for p in (m.members or (m.peer,))}))
    agg = _Agg(kind, peer, first.port, first.transport, members=stands_for, note=note)
    for member in members:
        agg.take(member)
    return agg


def _wildcard_names(items: list[_Agg], obs: Observations, s: LearnSettings) -> list[_Agg]:
    buckets: dict[tuple[str, int, str], list[_Agg]] = {}
    out: list[_Agg] = []
    for agg in items:
        if agg.kind == NAME and agg.peer.count(".") >= 2:
            parent = agg.peer.split(".", 1)[1]
            buckets.setdefault((parent, agg.port, agg.transport), []).append(agg)
        else:
            out.append(agg)
    for (parent, _port, _transport), members in buckets.items():
        if _enough(members, s) and not _flagged_below(obs, parent):
            names = sorted(m.peer for m in members)
            note = f"{len(names)} names: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
            out.append(_merged(NAME, f"*.{parent}", members, note))
        else:
            out.extend(members)
    return out


def _wildcard_addresses(items: list[_Agg], obs: Observations, s: LearnSettings) -> list[_Agg]:
    buckets: dict[tuple[str, int, str], list[_Agg]] = {}
    out: list[_Agg] = []
    for agg in items:
        if agg.kind != ADDRESS:
            out.append(agg)
            continue
        address = ipaddress.ip_address(agg.peer)
        length = 24 if address.version == 4 else 64
        network = ipaddress.ip_network(f"{address}/{length}", strict=False)
        buckets.setdefault((str(network), agg.port, agg.transport), []).append(agg)
    for (prefix, _port, _transport), members in buckets.items():
        if _enough(members, s, answered=True) and not _flagged_inside(obs, ipaddress.ip_network(prefix)):
            addresses = sorted(m.peer for m in members)
            more = " ..." if len(addresses) > 4 else ""
            note = f"{len(addresses)} addresses: {', '.join(addresses[:4])}{more}"
            out.append(_merged(NETWORK, prefix, members, note))
        else:
            out.extend(members)
    return out


def _wildcard_ports(items: list[_Agg], s: LearnSettings) -> list[_Agg]:
    by_peer: dict[str, list[_Agg]] = {}
    for agg in items:
        by_peer.setdefault(agg.peer, []).append(agg)
    out: list[_Agg] = []
    for peer, members in by_peer.items():
        ported = [m for m in members if m.transport in _TRANSPORTS_WITH_PORTS]
        if len(ported) >= s.port_wildcard_members and _enough(ported, s):
            ports = sorted(f"{m.transport}/{m.port}" for m in ported)
            note = f"any port: seen on {len(ports)} ports ({', '.join(ports[:4])} ...)"
            agg = _merged(ported[0].kind, peer, ported, note)
            agg.port, agg.transport = -1, "any"
            out.append(agg)
            out.extend(m for m in members if m not in ported)
        else:
            out.extend(members)
    return out


# ---------------------------------------------------------------------------------------------------
# Rules


def _destinations(aggs: Iterable[_Agg]) -> list[Destination]:
    """One destination per peer, with every port it was learned on."""
    by_peer: dict[str, list[_Agg]] = {}
    for agg in aggs:
        by_peer.setdefault(agg.peer, []).append(agg)
    out: list[Destination] = []
    for peer, members in by_peer.items():
        any_port = any(m.port == -1 for m in members)
        ports = None if any_port else frozenset((m.port, m.transport) for m in members)
        kind = NAME if members[0].kind == NAME else NETWORK
        devices: set[str] = set()
        for m in members:
            devices |= m.devices
        notes = "; ".join(dict.fromkeys(m.note for m in members if m.note))
        stands_for = tuple(sorted({p for m in members for p in m.members}))
        out.append(
            Destination(
                kind,
                peer if kind == NAME else _as_network(peer),
                ports,
                sum(m.flows for m in members),
                min(m.first_ns for m in members),
                max(m.last_ns for m in members),
                tuple(sorted(devices)),
                notes,
                stands_for,
            )
        )
    return sorted(out, key=_dest_order)


def _as_network(peer: str) -> str:
    return str(ipaddress.ip_network(peer, strict=False))


def _dest_order(d: Destination) -> tuple[int, str]:
    return (0 if d.kind == NAME else 1, d.peer)


def _rules(groups: Mapping[str, Group], destinations: Mapping[str, list[Destination]]) -> list[LearnedRule]:
    rules: list[LearnedRule] = []
    for key in sorted(destinations):
        group = groups[key]
        by_ports: dict[frozenset[tuple[int, str]] | None, list[Destination]] = {}
        for d in destinations[key]:
            by_ports.setdefault(d.ports, []).append(d)
        for ports in sorted(by_ports, key=_ports_order):
            name = f"learned: {group.label}, {_ports_label(ports)}"
            rules.append(LearnedRule(name, key, ports, tuple(by_ports[ports])))
    return rules


def _ports_order(ports: frozenset[tuple[int, str]] | None) -> tuple[int, str]:
    return (0, "") if ports is None else (1, _ports_label(ports))


def _ports_label(ports: frozenset[tuple[int, str]] | None) -> str:
    if ports is None:
        return "any port"
    return " ".join(f"{p}/{t}" for p, t in sorted(ports))


def _ports_text(agg: _Agg) -> str:
    if agg.port == -1:
        return "any port"
    return f"{agg.transport}/{agg.port}" if agg.transport in _TRANSPORTS_WITH_PORTS else agg.transport


def _is_mac(dev: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{2}(?:-[0-9a-f]{2}){5}", dev) is not None
