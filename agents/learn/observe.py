"""What the engine saw the watched devices do, aggregated and bounded: the input of ``camwatch learn``.

A :func:`recorder` class joins the engine's rule modules (``Engine(rules=...)``): it consumes the events the
rules consume and returns no alert. For each flow a watched device opens, it records, per device, the
destination (the DNS name the device resolved it from, else the address), port and transport: how many
flows, how many were answered, first and last seen, and whether the base policy already allows it (and
why). For each flow opened *to* a watched device it records the peer and the device's port (for MUD's
to-device ACLs). Discovery and link traffic (multicast, broadcast, link-local) is left out.

What a rule flags is never learned: :meth:`Observations.note_alert` takes every alert the engine raised;
any rule but ``egress.unexpected_destination`` and ``device.new`` flags the peers it names (addresses and
the DNS name), and ``exploit.*`` and ``device.*`` rules (``device.scanning``...) flag the device itself.
Names of the vendor-cloud catalogue are flagged as they are resolved. A device that opens flows to many
addresses on one port within minutes (a scan: :data:`SCAN_ADDRESSES` in :data:`SCAN_WINDOW_NS`) has that
port flagged as scanning.

Everything is bounded (:data:`MAX_USAGES` aggregates; findings, flags): a flood of destinations only counts
what was dropped. ``to_json``/``from_json`` carry it through the agent's state file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from agents.sinks.base import Record
from monitor.alerts import Alert
from monitor.decode import PROTO_TCP, PROTO_UDP
from monitor.events import DnsAnswer, Event, FlowEnded, FlowStarted
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.names import ResolvedNames
from monitor.registry import Rulebook, rulebook
from monitor.rules import RuleModule
from monitor.rules.egress import answer_key, opened_by_watched
from monitor.site import Site
from monitor.vendors.oui import format_mac

log = logging.getLogger(__name__)

__all__ = [
    "IN",
    "MAX_USAGES",
    "OUT",
    "Observations",
    "Usage",
    "UsageKey",
    "recorder",
    "rulebook_with",
]

FORMAT_VERSION: Final = 1
OUT: Final = "out"  # a flow the device opened
IN: Final = "in"  # a flow opened to the device
NAME: Final = "name"
ADDRESS: Final = "addr"

#: Aggregates kept (device, direction, peer, port, transport): far more than a site's normal needs.
MAX_USAGES: Final = 100_000
#: Alert records kept as findings (``camwatch learn --alerts``), and flagged peers and devices.
MAX_FINDINGS: Final = 10_000
MAX_FLAGS: Final = 100_000
#: Addresses a name record remembers it resolved to (for the flags and the comments).
MAX_NAME_ADDRESSES: Final = 16
#: A device that opens flows to this many addresses on one port within the window is scanning.
SCAN_ADDRESSES: Final = 32
SCAN_WINDOW_NS: Final = 600_000_000_000
#: Rules whose alerts are part of what is learned, not flags: the egress alert is every new destination;
#: ``device.new`` every new device.
NOT_FLAGS: Final = frozenset({"egress.unexpected_destination", "device.new"})
#: Rule id prefixes that flag the device itself: it was attacked or misbehaves as a whole.
DEVICE_FLAGS: Final = ("exploit.", "device.")
# Reasons the policy gives for destinations that are never egress (discovery, link traffic).
_ON_LINK: Final = frozenset({"multicast", "broadcast", "loopback", "link-local"})


@dataclass(frozen=True, slots=True)
class UsageKey:
    """One aggregate: a device (MAC, or its address without a MAC), a direction, the peer (a DNS name or
    an address), the port (the destination's for ``out``, the device's for ``in``; 0 without ports) and
    the transport."""

    device: str
    direction: str
    kind: str
    peer: str
    port: int
    transport: str


@dataclass(slots=True)
class Usage:
    """How often, and when, a :class:`UsageKey` happened; ``allowed`` is the base policy's reason when it
    already allowed it (None: it did not)."""

    flows: int = 0
    answered: int = 0
    first_ns: int = 0
    last_ns: int = 0
    allowed: str | None = None
    addresses: list[str] = field(default_factory=list)

    def add(self, ts_ns: int, answered: bool, addresses: Iterable[str] = ()) -> None:
        if self.flows == 0 or ts_ns < self.first_ns:
            self.first_ns = ts_ns
        self.last_ns = max(self.last_ns, ts_ns)
        self.flows += 1
        self.answered += answered
        for address in addresses:
            if address not in self.addresses and len(self.addresses) < MAX_NAME_ADDRESSES:
                self.addresses.append(address)


@dataclass(slots=True)
class _Pending:
    """A flow being recorded, until it ends (when its answer is known)."""

    key: UsageKey
    resolved_from: tuple[str, ...]
    address: str
    allowed: str | None


class Observations:
    """The aggregates, the flags and the findings of one learning run (captures or an agent's period).

    ``accept(device, ts_ns)`` says whether a device's traffic is recorded (the agent: only devices in
    their learning period); by default everything is.
    """

    def __init__(self, max_usages: int = MAX_USAGES) -> None:
        self.max_usages = max_usages
        self.usages: dict[UsageKey, Usage] = {}
        self.dropped = 0  # aggregates not kept: the bound was reached
        self.dropped_by_device: dict[str, int] = {}
        #: Peers (addresses, names) a rule flagged -> the rule ids that did.
        self.flagged_peers: dict[str, set[str]] = {}
        #: Devices a rule flagged as a whole -> the rule ids.
        self.flagged_devices: dict[str, set[str]] = {}
        #: (device, port, transport) found scanning -> distinct addresses seen in one window.
        self.scans: dict[tuple[str, int, str], int] = {}
        self.findings: list[Record] = []
        self.findings_dropped = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.accept: Callable[[str, int], bool] = lambda device, ts_ns: True
        # Scan windows: (device, port, transport) -> (window start, addresses in it).
        self._windows: dict[tuple[str, int, str], tuple[int, set[str]]] = {}

    # ------------------------------------------------------------------ recording

    def seen(self, ts_ns: int) -> None:
        if self.first_ns is None or ts_ns < self.first_ns:
            self.first_ns = ts_ns
        if self.last_ns is None or ts_ns > self.last_ns:
            self.last_ns = ts_ns

    def record(
        self, key: UsageKey, ts_ns: int, answered: bool, allowed: str | None, addresses: Iterable[str] = ()
    ) -> None:
        usage = self.usages.get(key)
        if usage is None:
            if len(self.usages) >= self.max_usages:
                self.dropped += 1
                self.dropped_by_device[key.device] = self.dropped_by_device.get(key.device, 0) + 1
                return
            usage = self.usages[key] = Usage(allowed=allowed)
        usage.add(ts_ns, answered, addresses)
        self.seen(ts_ns)

    def note_fanout(self, device: str, address: str, port: int, transport: str, ts_ns: int) -> None:
        """Count distinct addresses a device opens flows to on one port, per window: a scan."""
        key = (device, port, transport)
        start, addresses = self._windows.get(key, (ts_ns, set()))
        if ts_ns - start > SCAN_WINDOW_NS:
            start, addresses = ts_ns, set()
        if len(addresses) < SCAN_ADDRESSES:
            addresses.add(address)
        self._windows[key] = (start, addresses)
        if len(addresses) >= SCAN_ADDRESSES and key not in self.scans:
            self.scans[key] = len(addresses)
        if len(self._windows) > MAX_FLAGS:
            self._windows.pop(next(iter(self._windows)))

    def flag_peer(self, peer: str, why: str) -> None:
        reasons = self.flagged_peers.get(peer)
        if reasons is None:
            if len(self.flagged_peers) >= MAX_FLAGS:
                return
            reasons = self.flagged_peers[peer] = set()
        reasons.add(why)

    def note_alert(
        self,
        alert: Alert,
        device_ips: Callable[[str], Sequence[str]] = lambda mac: (),
        on_site: Callable[[str], bool] = lambda ip: False,
    ) -> None:
        """An alert the engine raised: what it names is flagged (unless it is learning's own input).

        A peer off the site is flagged whole; one on the site (the gateway a UPnP request went to, an
        office PC that pulled video) only for the service the alert is about (:func:`service`). A DNS
        rule's destination is the resolver that was asked: only the name it names is flagged."""
        rule_id = alert.rule.id
        if rule_id in NOT_FLAGS:
            return
        own = set(device_ips(alert.device_id)) if alert.device_id else set()
        port, transport = alert.destination.port or 0, alert.transport or ""
        for endpoint in (alert.source, alert.destination):
            if endpoint.domain is not None:
                self.flag_peer(endpoint.domain, rule_id)
            ip = endpoint.ip
            if ip is None or ip in own or (endpoint.mac is not None and endpoint.mac == alert.device_id):
                continue
            if rule_id.startswith("dns.") and alert.destination.domain is not None:
                continue  # the resolver that was asked about the flagged name
            self.flag_peer(service(ip, port, transport) if on_site(ip) else ip, rule_id)
        if alert.device_id is not None and rule_id.startswith(DEVICE_FLAGS):
            self.flagged_devices.setdefault(alert.device_id, set()).add(rule_id)
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(alert.to_record())
        else:
            self.findings_dropped += 1

    def forget_device(self, device: str) -> int:
        """Drop what was recorded of one device (it learns again); returns how many aggregates."""
        gone = [key for key in self.usages if key.device == device]
        for key in gone:
            del self.usages[key]
        self.flagged_devices.pop(device, None)
        for scan in [k for k in self.scans if k[0] == device]:
            del self.scans[scan]
        return len(gone)

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "dropped": self.dropped,
            "dropped_by_device": self.dropped_by_device,
            "usages": [
                [
                    k.device,
                    k.direction,
                    k.kind,
                    k.peer,
                    k.port,
                    k.transport,
                    u.flows,
                    u.answered,
                    u.first_ns,
                    u.last_ns,
                    u.allowed,
                    u.addresses,
                ]
                for k, u in self.usages.items()
            ],
            "flagged_peers": {peer: sorted(why) for peer, why in self.flagged_peers.items()},
            "flagged_devices": {dev: sorted(why) for dev, why in self.flagged_devices.items()},
            "scans": [[d, p, t, n] for (d, p, t), n in self.scans.items()],
            "findings": self.findings,
            "findings_dropped": self.findings_dropped,
        }

    @classmethod
    def from_json(cls, doc: object, max_usages: int = MAX_USAGES) -> Observations:
        """Take back what :meth:`to_json` gave; ValueError naming what is wrong otherwise."""
        if not isinstance(doc, Mapping) or doc.get("version") != FORMAT_VERSION:
            raise ValueError("not a camwatch learning record (unknown version)")
        obs = cls(max_usages)
        try:
            obs.first_ns = _opt_int(doc.get("first_ns"))
            obs.last_ns = _opt_int(doc.get("last_ns"))
            obs.dropped = int(doc.get("dropped", 0))
            obs.dropped_by_device = {
                str(k): int(v) for k, v in dict(doc.get("dropped_by_device", {})).items()
            }
            for row in doc.get("usages", [])[:max_usages]:
                (device, direction, kind, peer, port, transport, flows, answered, first, last, allowed,
                 addresses) = row  # fmt: skip
                key = UsageKey(str(device), str(direction), str(kind), str(peer), int(port), str(transport))
                obs.usages[key] = Usage(
                    int(flows),
                    int(answered),
                    int(first),
                    int(last),
                    None if allowed is None else str(allowed),
                    [str(a) for a in addresses][:MAX_NAME_ADDRESSES],
                )
            obs.flagged_peers = {
                str(p): {str(w) for w in why} for p, why in dict(doc["flagged_peers"]).items()
            }
            obs.flagged_devices = {
                str(d): {str(w) for w in why} for d, why in dict(doc["flagged_devices"]).items()
            }
            obs.scans = {(str(d), int(p), str(t)): int(n) for d, p, t, n in doc.get("scans", [])}
            findings: list[Record] = [f for f in doc.get("findings", []) if isinstance(f, dict)]
            obs.findings = findings[:MAX_FINDINGS]
            obs.findings_dropped = int(doc.get("findings_dropped", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged learning record ({type(exc).__name__}: {exc})") from exc
        return obs


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a time in ns, got {value!r}")
    return value


def service(ip: str, port: int, transport: str) -> str:
    """How one service of a peer is flagged: ``10.20.0.1 tcp/49152``."""
    return f"{ip} {transport}/{port}"


def device_id(mac: int, ip: str) -> str:
    """How observations name a device: its MAC as alerts write it (``device.id``), else its address."""
    return format_mac(mac) if mac else ip


# ---------------------------------------------------------------------------------------------------
# The recorder: a component the engine runs beside the rules


def recorder(observations: Observations) -> type[RuleModule]:
    """A rule module class (the engine builds it with the site) that records into ``observations``."""

    class Recorder(RuleModule):
        """Records watched devices' flows and the DNS answers that explain them; raises nothing."""

        consumes = (FlowStarted, FlowEnded, DnsAnswer)

        def __init__(self, site: Site) -> None:
            super().__init__(site)
            self.obs = observations
            self.names = ResolvedNames(site.policy.name_grace_ns)
            self.pending: dict[Flow, list[_Pending]] = {}

        def judge(self, event: Event) -> Sequence[Alert]:
            if isinstance(event, FlowStarted):
                self._started(event.flow)
            elif isinstance(event, FlowEnded):
                self._ended(event.flow)
            elif isinstance(event, DnsAnswer):
                self._answer(event)
            return ()

        def _answer(self, event: DnsAnswer) -> None:
            key = answer_key(self.site, event)
            if key is None:
                return
            clouds = self.site.clouds
            for resolved in event.addresses:
                self.names.add(key, resolved.address, resolved.names, resolved.ttl, event.ts_ns)
                for name in resolved.names:
                    entry = clouds.match_domain(name)
                    if entry is not None:
                        # A vendor-cloud name, and the addresses it gave, are never learned.
                        self.obs.flag_peer(name, f"vendor cloud ({entry.vendor} {entry.kind})")
                        self.obs.flag_peer(resolved.address, f"vendor cloud ({entry.vendor} {entry.kind})")

        def _started(self, flow: Flow) -> None:
            records: list[_Pending] = []
            opened = opened_by_watched(self.site, flow)
            ported = flow.proto in (PROTO_TCP, PROTO_UDP)
            if opened is not None:
                dev = device_id(opened.mac, opened.ip)
                if self.obs.accept(dev, flow.start_ns):
                    names = self.names.names_for(opened.key, opened.dst_ip, flow.start_ns)
                    allowed, reason = self.site.policy.egress_allowed(
                        opened.dst_ip, opened.dst_port, opened.transport, names=names
                    )
                    if not (allowed and reason in _ON_LINK):
                        port = opened.dst_port if ported else 0
                        kind, peer = (NAME, names[0]) if names else (ADDRESS, opened.dst_ip)
                        key = UsageKey(dev, OUT, kind, peer, port, opened.transport)
                        records.append(_Pending(key, names, opened.dst_ip, reason if allowed else None))
                        if not allowed:
                            self.obs.note_fanout(dev, opened.dst_ip, port, opened.transport, flow.start_ns)
            # The other side: a flow opened to a watched device (the recorder pulling video).
            responder = self.site.watched(flow, not flow.opener_is_src)
            if responder is not None:
                (r_ip, r_port), (o_ip, _) = (
                    (flow.dst, flow.src) if flow.opener_is_src else (flow.src, flow.dst)
                )
                dev = device_id(responder.mac, r_ip)
                if self.obs.accept(dev, flow.start_ns):
                    key = UsageKey(
                        dev, IN, ADDRESS, o_ip, r_port if ported else 0, transport_name(flow.proto)
                    )
                    records.append(_Pending(key, (), o_ip, None))
            if records:
                self.pending[flow] = records

        def _ended(self, flow: Flow) -> None:
            records = self.pending.pop(flow, None)
            if not records:
                return
            answered = flow.dst_counts[0] > 0 if flow.opener_is_src else flow.src_counts[0] > 0
            for rec in records:
                addresses = [rec.address] if rec.key.kind == NAME else []
                self.obs.record(rec.key, flow.start_ns, answered, rec.allowed, addresses)
            self.obs.seen(flow.last_ns)

    return Recorder


def rulebook_with(observations: Observations) -> Rulebook:
    """Every rule module, and the recorder last (it sees each event after the rules judged it)."""
    book = rulebook()
    return Rulebook(book.rules, (*book.modules, recorder(observations)))
