"""``device.flooding``: a watched device floods one destination with new connections (a denial of service).

What an infected camera is for: Mirai and its descendants turn cameras and recorders into DDoS bots, whose
SYN, ACK and UDP floods pick a new source port (and, by default, a new destination port) for every packet,
and whose "DNS water torture" asks the site's resolver for random names under the victim's domain. On the
wire each packet is a new flow to the one victim. No camera does that otherwise: its recorder, cloud, DNS and
NTP take a handful of connections a minute.

Counted per watched device and destination address, over windows of ``WINDOW_NS`` that start at the first
flow to it: ``FLOOD_FLOWS`` flows the device opened there in one window is a flood (100 a second, far
below a bot's rate and far above any camera's). One alert per device and target (its ``event.id``); the
scanning rule leaves a reported target's refused attempts to it (``Site.note_flood``), so a flood over random
ports is not also a port scan. State is bounded: ``MAX_TARGETS`` destinations per device (a scan of
random addresses churns them, never a flood's one target), ``MAX_DEVICES`` devices.

Not seen here: a flood inside one flow (a fixed source and destination port: the sustained-rate check of
``stream.egress`` reports its volume), GRE floods (one flow per address pair), and floods from spoofed
source addresses (the device is known by its address unless its MAC names it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final

from monitor.alerts import CRITICAL, NS, Alert, Rule, endpoint
from monitor.decode import PROTO_TCP, TCP_ACK, TCP_SYN
from monitor.events import Event, FlowStarted
from monitor.evidence import combine, snapshot
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.rules._common import Bounded
from monitor.site import Site, Watched

DEVICE_FLOODING = Rule(
    "device.flooding",
    "Watched device is flooding a destination (denial of service)",
    CRITICAL,
    ("network", "intrusion_detection"),
    ("connection", "denied"),
    absorbs=("egress.unexpected_destination",),
)
RULES = (DEVICE_FLOODING,)

WINDOW_NS: Final = 10 * NS
FLOOD_FLOWS: Final = 1000
MAX_TARGETS: Final = 64
MAX_DEVICES: Final = 1024
MAX_PORTS: Final = 1024  # distinct destination ports counted per target (the count stops there)
SAMPLE: Final = 16


@dataclass(slots=True)
class _Target:
    start_ns: int
    flows: int = 0
    transports: dict[int, int] = field(default_factory=dict)  # IP protocol -> flows
    ports: set[int] = field(default_factory=set)
    syns: int = 0  # TCP flows whose first packet is a bare SYN
    sample: list[Flow] = field(default_factory=list)
    reported: bool = False


@dataclass(slots=True)
class _Device:
    watched: Watched
    targets: Bounded[str, _Target] = field(default_factory=lambda: Bounded(MAX_TARGETS))


@lru_cache(maxsize=4096)
def _group_address(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_multicast or ip == "255.255.255.255"


class FloodingRule(RuleModule):
    """Counts the flows each watched device opens to each destination; a flood is one alert."""

    consumes = (FlowStarted,)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self.devices: Bounded[str, _Device] = Bounded(MAX_DEVICES)

    def evictions(self) -> dict[str, int]:
        return {"flood_devices": self.devices.evicted}

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, FlowStarted):
            return ()
        flow = event.flow
        if flow.copy:
            return ()
        opener_is_src = flow.opener_is_src
        (src_ip, _), (dst_ip, dst_port) = (flow.src, flow.dst) if opener_is_src else (flow.dst, flow.src)
        if _group_address(dst_ip):
            return ()  # discovery: multicast and broadcast are no victim
        watched = self.site.watched(flow, opener_is_src)
        if watched is None:
            return ()
        key = str(watched.mac) if watched.mac else src_ip
        dev = self.devices.get(key)
        if dev is None:
            dev = _Device(watched)
            self.devices.put(key, dev)
        ts = event.ts_ns
        target = dev.targets.get(dst_ip)
        if target is None or ts - target.start_ns >= WINDOW_NS:
            target = _Target(ts, reported=target is not None and target.reported)
            dev.targets.put(dst_ip, target)
        target.flows += 1
        proto = flow.proto
        target.transports[proto] = target.transports.get(proto, 0) + 1
        if len(target.ports) < MAX_PORTS:
            target.ports.add(dst_port)
        if proto == PROTO_TCP and flow.first_flags & (TCP_SYN | TCP_ACK) == TCP_SYN and opener_is_src:
            target.syns += 1
        if len(target.sample) < SAMPLE:
            target.sample.append(flow)
        if target.flows < FLOOD_FLOWS or target.reported:
            return ()
        target.reported = True
        self.site.note_flood(key, dst_ip)
        return (self._alert(dev.watched, flow, target, dst_ip, ts),)

    def _alert(self, watched: Watched, flow: Flow, target: _Target, victim: str, now: int) -> Alert:
        site = self.site
        side = Side.of(flow, flow.opener_is_src, watched.mac)
        seconds = max(now - target.start_ns, 0) / NS
        by_transport = sorted(target.transports.items(), key=lambda kv: (-kv[1], kv[0]))
        kinds = ", ".join(f"{transport_name(p)} {n:,}" for p, n in by_transport)
        ports = len(target.ports)
        port_txt = f"{ports:,}{'+' if ports >= MAX_PORTS else ''} destination ports"
        if ports == 1:
            port_txt = f"all to {transport_name(by_transport[0][0])}/{next(iter(target.ports))}"
        syns = f"; {target.syns:,} of them bare SYNs" if target.syns else ""
        where = " (on the site)" if site.is_site_address(victim) else ""
        resolver = (
            ": a DNS flood through the resolver (random names of the victim's domain: Mirai's DNS water "
            "torture)"
            if site.policy.resolvers and site.policy.is_resolver(victim) and dict(by_transport).get(17)
            else ""
        )
        message = (
            f"{describe(watched.device, side.ip, side.mac)} is flooding {victim}{where}: "
            f"{target.flows:,} new connections to it in {seconds:.1f} s ({kinds}; {port_txt}{syns})"
            f"{resolver}. A camera never does this: it is a denial-of-service attack by malware on the "
            "device (Mirai family). Isolate the device from the network, then reset it and update its "
            "firmware; the attack's target may complain to the site's ISP."
        )
        flood: dict[str, Any] = {
            "flows": target.flows,
            "seconds": round(seconds, 3),
            "transports": {transport_name(p): n for p, n in by_transport},
            "ports": ports,
            "syns": target.syns,
            "sample": [endpoint(*(f.dst if f.opener_is_src else f.src)) for f in target.sample[:10]],
        }
        alert = side_alert(
            DEVICE_FLOODING,
            flow,
            side,
            watched.device,
            site.observer,
            now,
            message,
            ("flood", victim),
            protocol=None,
        )
        only_port = next(iter(target.ports)) if ports == 1 else None
        return replace(
            alert,
            source=replace(alert.source, port=None),
            destination=replace(alert.destination, port=only_port, domain=None),
            community_id=None,
            transport=transport_name(by_transport[0][0]),
            fields=(("camwatch.flood", flood),),
            evidence=combine(snapshot(f, now) for f in target.sample),
            start_ns=target.start_ns,
        )
