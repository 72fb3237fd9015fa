"""``device.flooding``: a watched device floods one destination with new connections (a denial of service).

What an infected camera is for: Mirai and its descendants turn cameras and recorders into DDoS bots, whose
SYN, ACK and UDP floods pick a new source port (and, by default, a new destination port) for every packet,
and whose "DNS water torture" asks the site's resolver for random names under the victim's domain. On the
wire each packet is a new flow to the one victim. No camera does that otherwise: its recorder, cloud, DNS and
NTP take a handful of connections a minute.

Counted per watched device and destination address, in a sliding window of ``WINDOW_NS`` (ten one-second
buckets): ``FLOOD_FLOWS`` flows the device opened there within it is a flood (100 a second, far below a
bot's rate and far above any camera's), when they come from many source ports (``FLOOD_SOURCE_PORTS``
distinct: a bot takes a new one per packet, while a port scanner such as nmap keeps one, and stays
``device.scanning``). Only flows the device itself started count: its first packet seen, and not an answer
(a SYN-ACK, a reset, an ICMP error or echo reply; nor a flow whose opener only its port said): a camera
*being* flooded answers too. An HTTP flood over a few kept-alive connections (Mirai's) is counted by its
requests: ``FLOOD_FLOWS`` HTTP requests the device sent to one address within the window. One alert per
device and target (its ``event.id``), re-armed once the target
has gone quiet (under a tenth of the threshold in the window); the scanning rule leaves a reported target to
it (``Site.note_flood``), so a flood over random ports is not also a port scan. State is bounded:
``MAX_PAIRS`` (device, destination) pairs in all, the least recently used forgotten (a scan of random
addresses churns them; a flood's target, hit without pause, stays), each a few hundred bytes while quiet.

Mirai also floods a prefix on the Internet, each packet to a random host of it and a random port: a flow to
an address off the site is counted for its /24 (IPv4) or /64 (IPv6) too (``flood_prefix``), which is reported
as the target (``camwatch.flood.prefix``; ``destination.ip`` is one of its addresses) when its flows while
busy are random: ``MAX_PORTS`` destination ports or more, none with a tenth of them (a scanner's port list
has tens; a recorder's or a CDN client's few carry most), and no address of it has two thirds of the
window's (that one is the flood's own target). An address of a reported prefix is not reported again. Flows
to the site's own networks are not counted for their prefix: a recorder reconnecting to its cameras, RTSP
over UDP included, reaches hundreds of ports of its /24.

A flood inside a tunnel (Mirai's GRE floods, greip and greeth) is one flow: it is counted by packets
instead, ``FLOOD_FLOWS`` packets the device sent to one address within the window, over its GRE and IP-in-IP
flows (``PACKET_FLOOD``), followed while they run: ``MAX_PACKET_FLOWS`` new ones, and apart from them
``MAX_BUSY_FLOWS`` that sent more than one packet (so a flood at a whole prefix, a new one-packet flow per
packet, cannot push a flood's flow out), each table forgetting the least recently active. The decoder keeps
a watched device's tunnel to the Internet as its outer packet (``monitor.engine._TunnelOwners``), so a GRE
flood is the camera's flow to its victim. The flow table gives a flow's totals, not when each packet was
sent: a count's new packets (at every batch) are spread evenly over the seconds since the last count, which
is exact for a steady flood and only approximate for a burst read in the same batch as a slow start. A ping
flood is counted the same way, by the echo requests the device sent in a ping flow it started (``Flow.echo``:
an ICMP flow's key has no identifier, so its packet counts mix the device's pings and its replies to others').

Not seen here: a flood inside one flow with ports (a fixed source and destination port: the sustained-rate
check of ``stream.egress`` reports its volume), a flood at a prefix on one or a few ports (it stays
``device.scanning``), a GRE flood at a prefix (its flows are counted per address), a flood over
more prefixes than a scan's churn lets stay at once (each under the threshold: ``device.scanning`` reports
the fan-out), and floods from spoofed source addresses (the device is known by its address unless its MAC
names it).
"""

from __future__ import annotations

import ipaddress
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final, Literal

from monitor.alerts import CRITICAL, NS, Alert, Rule, endpoint
from monitor.decode import (
    PROTO_GRE,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_IPIP,
    PROTO_IPV6_IN_IP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
)
from monitor.events import AppRequest, Clock, DnsQuery, Event, FlowEnded, FlowStarted
from monitor.evidence import combine, snapshot
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.rules._common import Bounded
from monitor.site import Site, Watched, flood_prefix

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
BUCKETS: Final = 10  # one a second
FLOOD_FLOWS: Final = 1000
FLOOD_SOURCE_PORTS: Final = 64  # distinct source ports among a flood's flows (counted up to this)
QUIET_FLOWS: Final = FLOOD_FLOWS // 10  # a window under this re-arms a reported target
MAX_PAIRS: Final = 16_384
MAX_PORTS: Final = 256  # distinct destination ports counted per busy target (the count stops there)
SAMPLE: Final = 16
PREFIX_TOP_PORT: Final = 0.1  # the most a flood at a prefix sends to one destination port (a share)
PREFIX_TOP_ADDRESS: Final = 2 / 3  # an address with this share of a prefix's flows is the flood's target
MAX_DOMAINS: Final = 32  # domains of a busy target's DNS questions counted (the rest: not counted)
VICTIM_SHARE: Final = 0.75  # of a DNS flood's questions under one domain: the victim's
COLUMNS: Final = 6
REQUESTS: Final = 4  # the column of HTTP requests
PACKETS: Final = 5  # the column of packets of PACKET_FLOOD protocols
PACKET_FLOOD: Final = frozenset({PROTO_GRE, PROTO_IPIP, PROTO_IPV6_IN_IP})  # tunnels, counted by packets
# ICMP echo request types: a ping flood is counted by the requests the device sent (Flow.echo), not its
# packets: an ICMP flow's key has no identifier, and its packets mix its pings and its replies to others'.
_ECHO_REQUEST: Final = {PROTO_ICMP: 8, PROTO_ICMPV6: 128}
MAX_PACKET_FLOWS: Final = 4096  # new flows of those protocols (and of pings) followed at once
MAX_BUSY_FLOWS: Final = 1024  # and those that sent more than one packet
_ZEROS: Final = array("I", bytes(4 * COLUMNS))


@dataclass(slots=True)
class _Target:
    """One destination of one device: its flows per second of the window, and while it is busy what they
    were. Small while quiet (16,384 of them): one array of 60 counts, no sets."""

    second: int  # the capture second of the latest flow
    # COLUMNS counts per second of the window (at (second % BUCKETS) * COLUMNS): flows, tcp, udp, bare SYNs,
    # HTTP requests, packets of PACKET_FLOOD protocols.
    counts: array[int] = field(default_factory=lambda: array("I", bytes(4 * BUCKETS * COLUMNS)))
    busy: _Busy | None = None  # kept while QUIET_FLOWS or more are in the window
    reported: bool = False

    def advance(self, second: int) -> None:
        """Move the window to end at ``second``: the buckets of the seconds that went by are emptied."""
        gone = second - self.second
        if gone <= 0:
            return
        counts = self.counts
        for s in range(self.second + 1, self.second + 1 + min(gone, BUCKETS)):
            at = (s % BUCKETS) * COLUMNS
            counts[at : at + COLUMNS] = _ZEROS
        self.second = second

    def total(self, column: int = 0) -> int:
        return sum(self.counts[column::COLUMNS])

    def first_second(self) -> int:
        """The earliest second of the window with a flow."""
        return next(
            s
            for s in range(self.second - BUCKETS + 1, self.second + 1)
            if any(self.counts[(s % BUCKETS) * COLUMNS + c] for c in (0, REQUESTS, PACKETS))
        )

    def busiest(self) -> int:
        """The largest of its flows, HTTP requests and packets in the window."""
        return max(self.total(), self.total(REQUESTS), self.total(PACKETS))


@dataclass(slots=True)
class _Busy:
    ports: dict[int, int] = field(default_factory=dict)  # flows to each destination port (up to MAX_PORTS)
    sports: set[int] = field(default_factory=set)  # source ports (up to FLOOD_SOURCE_PORTS)
    sample: list[Flow] = field(default_factory=list)  # the first SAMPLE flows, for the evidence
    # DNS questions the device sent there, and how many of them each parent domain (the name without its
    # first label) had: water torture asks for random names under its victim's domain.
    questions: int = 0
    domains: dict[str, int] = field(default_factory=dict)
    addresses: set[str] = field(default_factory=set)  # a prefix's: the addresses hit (up to MAX_PORTS)

    def note(
        self, flow: Flow, dst_port: int | None, src_port: int | None = None, address: str | None = None
    ) -> None:
        if address is not None and len(self.addresses) < MAX_PORTS:
            self.addresses.add(address)
        ports = self.ports
        if dst_port is not None and (dst_port in ports or len(ports) < MAX_PORTS):
            ports[dst_port] = ports.get(dst_port, 0) + 1
        if src_port is not None and len(self.sports) < FLOOD_SOURCE_PORTS:
            self.sports.add(src_port)
        if len(self.sample) < SAMPLE and flow not in self.sample:
            self.sample.append(flow)

    def question(self, name: str) -> None:
        """Count the domains above ``name`` (two labels or more: under ``victim.example``, and
        ``r2.victim.example`` for ``r1.r2.victim.example``), for the one (nearly) all the questions share."""
        self.questions += 1
        labels = name.rstrip(".").lower().split(".")
        domains = self.domains
        for i in range(1, len(labels) - 1):
            domain = ".".join(labels[i:])
            if domain in domains or len(domains) < MAX_DOMAINS:
                domains[domain] = domains.get(domain, 0) + 1

    def victim_domain(self) -> str | None:
        """The longest domain of VICTIM_SHARE or more of its DNS questions, if there is one."""
        shared = [d for d, n in self.domains.items() if n >= VICTIM_SHARE * self.questions]
        return max(shared, key=lambda d: d.count("."), default=None)


#: ICMP types that answer (echo reply, errors): never the start of a flood by the device that sends them.
_ICMP_ANSWERS: Final = {
    PROTO_ICMP: frozenset({0, 3, 4, 5, 11, 12, 14, 16, 18}),
    PROTO_ICMPV6: frozenset({1, 2, 3, 4, 129}),
}


def started_by_first_sender(flow: Flow) -> bool:
    """The flow's first packet seen opened it and its sender started it: not an answer (a SYN-ACK, a reset,
    an ICMP error or echo reply), and not a flow whose opener only the ports said (an answer met first)."""
    if flow.opener is not None or not flow.opener_is_src:
        return False
    proto = flow.proto
    if proto == PROTO_TCP:
        return not flow.first_flags & TCP_RST
    answers = _ICMP_ANSWERS.get(proto)
    return answers is None or flow.icmp_type not in answers


_By = Literal["flows", "requests", "packets"]  # what reached a flood's threshold


def by_packets(flow: Flow) -> bool:
    """Counted by its packets: a tunnel (PACKET_FLOOD), or a ping (its first packet an echo request)."""
    proto = flow.proto
    return proto in PACKET_FLOOD or _ECHO_REQUEST.get(proto) == flow.icmp_type


def _sent(flow: Flow) -> int:
    """The packets of a flow counted by its packets that its source sent (for a ping, its echo requests)."""
    return flow.src_echo_requests if flow.proto in _ECHO_REQUEST else flow.src_counts[0]


@dataclass(slots=True)
class _Followed:
    """A flow a watched device started that is counted by its packets (``by_packets``)."""

    flow: Flow
    watched: Watched
    key: str  # the device (Watched.key)
    victim: str
    counted_ns: int  # when it was last counted (its start, at first)
    packets: int = 0  # sent by the device then


@lru_cache(maxsize=4096)
def _group_address(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_multicast or ip == "255.255.255.255"


class FloodingRule(RuleModule):
    """Counts the flows each watched device opens to each destination; a flood is one alert."""

    consumes = (FlowStarted, AppRequest, DnsQuery, Clock, FlowEnded)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self.pairs: Bounded[tuple[str, str], _Target] = Bounded(MAX_PAIRS)
        # Flows of PACKET_FLOOD protocols a watched device started, by id: the flow, its device (watched,
        # key) and the packets it had sent when last counted; new ones, and those that sent more than one.
        self.packet_flows: Bounded[int, _Followed] = Bounded(MAX_PACKET_FLOWS)
        self.busy_flows: Bounded[int, _Followed] = Bounded(MAX_BUSY_FLOWS)

    def evictions(self) -> dict[str, int]:
        return {
            "flood_pairs": self.pairs.evicted,
            "flood_packet_flows": self.packet_flows.evicted + self.busy_flows.evicted,
        }

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, FlowStarted):
            return self._flow(event.flow, event.ts_ns)
        if isinstance(event, AppRequest):
            return self._request(event)
        if isinstance(event, DnsQuery):
            self._question(event)
            return ()
        if isinstance(event, Clock):
            return self._count_packets(event.ts_ns)
        if isinstance(event, FlowEnded):
            key = id(event.flow)
            followed = self.packet_flows.pop(key) or self.busy_flows.pop(key)
            return self._packets(followed, event.flow.last_ns) if followed is not None else ()
        return ()

    def _target(self, key: str, dst_ip: str, ts: int) -> tuple[_Target, int]:
        """The (device, destination) pair's counts, moved to ``ts``; and the larger of its flows and requests
        in the window before this one (a quiet target is re-armed and forgets what it kept while busy)."""
        second = ts // NS
        target = self.pairs.get((key, dst_ip))
        if target is None:
            target = _Target(second)
            self.pairs.put((key, dst_ip), target)
        target.advance(second)
        before = target.busiest()
        if before < QUIET_FLOWS:
            if target.reported:
                target.reported = False  # gone quiet: a later flood is news (the gate holds back a day)
                self.site.forget_flood(key, dst_ip)
            target.busy = None
        return target, before

    def _flow(self, flow: Flow, ts: int) -> Sequence[Alert]:
        if flow.copy or not started_by_first_sender(flow):
            return ()
        dst_ip = flow.dst[0]
        if _group_address(dst_ip):
            return ()  # discovery: multicast and broadcast are no victim
        site = self.site
        watched = site.watched(flow, True)
        if watched is None:
            return ()
        key = watched.key(flow.src[0])
        if by_packets(flow):
            self._count(watched, key, dst_ip, flow, ts)
            followed = _Followed(flow, watched, key, dst_ip, flow.start_ns)
            alerts = self._packets(followed, ts)
            self._follow(id(flow), followed)
            return alerts
        prefix = None if site.is_site_address(dst_ip) else flood_prefix(dst_ip)
        flooded = prefix is not None and (key, prefix) in site.flood_targets
        alerts = self._count(watched, key, dst_ip, flow, ts, report=not flooded)
        if alerts or prefix is None or (key, dst_ip) in site.flood_targets:
            return alerts
        return self._count(watched, key, prefix, flow, ts, address=dst_ip)

    def _count(
        self,
        watched: Watched,
        key: str,
        victim: str,
        flow: Flow,
        ts: int,
        address: str | None = None,
        report: bool = True,
    ) -> Sequence[Alert]:
        """A flow the device started to ``victim``: an address, or the prefix ``address`` is in (see the
        module's docstring for when a prefix is reported). Counted only when ``report`` is False (an address
        of a reported prefix)."""
        target, before = self._target(key, victim, ts)
        counts, at = target.counts, ((ts // NS) % BUCKETS) * COLUMNS
        counts[at] += 1
        proto = flow.proto
        if proto == PROTO_TCP:
            counts[at + 1] += 1
            if flow.first_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                counts[at + 3] += 1
        elif proto == PROTO_UDP:
            counts[at + 2] += 1
        if before < QUIET_FLOWS or by_packets(flow):
            return ()  # ports and flows are kept for busy targets only (memory: MAX_PAIRS of them)
        busy = target.busy = target.busy or _Busy()
        busy.note(flow, flow.dst[1], flow.src[1], address)
        flows = target.total()
        if flows < FLOOD_FLOWS or target.reported or len(busy.sports) < FLOOD_SOURCE_PORTS or not report:
            return ()
        if address is not None and not self._random_hosts(key, target, busy, ts, flows):
            return ()
        return self._report(watched, key, flow, True, target, victim, ts)

    def _random_hosts(self, key: str, prefix: _Target, busy: _Busy, ts: int, flows: int) -> bool:
        """A busy prefix's flows went to random ports, and not mostly to one address (the window's counts).
        The addresses are looked up every 16th flow only: a flood at one address is counted for its prefix
        too, and its prefix asks on each of its flows."""
        ports = busy.ports
        if len(ports) < MAX_PORTS or max(ports.values()) > PREFIX_TOP_PORT * sum(ports.values()):
            return False
        if flows % 16:
            return False
        second, top = ts // NS, 0
        for address in busy.addresses:
            target = self.pairs.peek((key, address))
            if target is not None:
                target.advance(second)
                top = max(top, target.total())
        return top <= PREFIX_TOP_ADDRESS * prefix.total()

    def _request(self, event: AppRequest) -> Sequence[Alert]:
        """An HTTP request a watched device sent: Mirai's HTTP flood sends thousands over a few kept-alive
        connections, which the count of new flows never sees."""
        flow = event.flow
        if event.protocol != "http" or flow.copy:
            return ()
        watched = self.site.watched(flow, event.from_src)
        if watched is None:
            return ()
        (src_ip, _), (dst_ip, dst_port) = (flow.src, flow.dst) if event.from_src else (flow.dst, flow.src)
        key = watched.key(src_ip)
        ts = event.ts_ns
        target, before = self._target(key, dst_ip, ts)
        target.counts[((ts // NS) % BUCKETS) * COLUMNS + REQUESTS] += 1
        if before < QUIET_FLOWS:
            return ()
        target.busy = target.busy or _Busy()
        target.busy.note(flow, dst_port)
        if target.total(REQUESTS) < FLOOD_FLOWS or target.reported:
            return ()
        return self._report(watched, key, flow, event.from_src, target, dst_ip, ts, "requests")

    def _question(self, event: DnsQuery) -> None:
        """A DNS question to a busy target: its name, to say whose domain a DNS flood is aimed at."""
        flow = event.flow
        (src_ip, _), (dst_ip, _) = (flow.src, flow.dst) if event.from_src else (flow.dst, flow.src)
        watched = self.site.watched(flow, event.from_src)
        if watched is None:
            return
        target = self.pairs.get((watched.key(src_ip), dst_ip))
        if target is not None and target.busy is not None:
            target.busy.question(event.name)

    def _follow(self, key: int, followed: _Followed) -> None:
        if followed.packets > 1:
            self.busy_flows.put(key, followed)
        else:
            self.packet_flows.put(key, followed)

    def _count_packets(self, now: int) -> Sequence[Alert]:
        """At every batch: the packets each followed flow sent since; an active one is moved to the busy
        flows' table, or to its end (the least recently active are forgotten first)."""
        out: list[Alert] = []
        for table in (self.busy_flows, self.packet_flows):
            for key, followed in table.items():
                if _sent(followed.flow) != followed.packets:
                    out.extend(self._packets(followed, now))
                    table.pop(key)
                    self._follow(key, followed)
        return out

    def _packets(self, followed: _Followed, now: int) -> Sequence[Alert]:
        """Count what ``followed`` sent since it was last counted, spread evenly over the seconds since (a
        batch can hold minutes of a slow tunnel, which must not look like a burst)."""
        flow = followed.flow
        sent, last_ns = _sent(flow), flow.last_ns
        new, followed.packets = sent - followed.packets, sent
        if new <= 0:
            return ()
        first, last = followed.counted_ns // NS, last_ns // NS
        followed.counted_ns = last_ns
        target, before = self._target(followed.key, followed.victim, last_ns)
        # The seconds the packets were sent in that are still in the window, and their share of them.
        seconds = range(max(first, last - BUCKETS + 1, target.second - BUCKETS + 1), last + 1)
        share, spare = divmod(new * len(seconds) // (last - first + 1), len(seconds)) if seconds else (0, 0)
        counts = target.counts
        for s in seconds:
            counts[(s % BUCKETS) * COLUMNS + PACKETS] += share + (spare if s == last else 0)
        if before + new < QUIET_FLOWS:
            return ()
        busy = target.busy = target.busy or _Busy()
        busy.note(flow, None)  # no ports
        if target.total(PACKETS) < FLOOD_FLOWS or target.reported:
            return ()
        return self._report(
            followed.watched, followed.key, flow, True, target, followed.victim, max(now, last_ns), "packets"
        )

    def _report(
        self,
        watched: Watched,
        key: str,
        flow: Flow,
        device_is_src: bool,
        target: _Target,
        victim: str,
        now: int,
        by: _By = "flows",
    ) -> Sequence[Alert]:
        """``by``: what reached the threshold (``flows``, ``requests`` or ``packets``)."""
        target.reported = True
        self.site.note_flood(key, victim)
        return (self._alert(watched, flow, device_is_src, target, victim, now, by),)

    def _alert(
        self,
        watched: Watched,
        flow: Flow,
        device_is_src: bool,
        target: _Target,
        victim: str,
        now: int,
        by: _By,
    ) -> Alert:
        site = self.site
        busy = target.busy
        assert busy is not None  # judged only while busy
        side = Side.of(flow, device_is_src, watched.mac)  # the flow's starter, or the HTTP request's sender
        flows, tcp, udp, syns = (target.total(c) for c in range(4))
        packets = target.total(PACKETS)
        start_ns = target.first_second() * NS
        seconds = max(now - start_ns, 0) / NS
        counts = [(n, name) for n, name in ((tcp, "tcp"), (udp, "udp"), (flows - tcp - udp, "other")) if n]
        counts.sort(key=lambda c: -c[0])
        main = counts[0][1] if counts and counts[0][1] != "other" else transport_name(flow.proto)
        kinds = ", ".join(f"{name} {n:,}" for n, name in counts)
        ports = len(busy.ports)
        port_txt = f"{ports:,}{'+' if ports >= MAX_PORTS else ''} destination ports"
        if ports == 1:
            port_txt = f"all to {main}/{next(iter(busy.ports))}"
        syn_txt = f"; {syns:,} of them bare SYNs" if syns else ""
        hit = flow.dst[0] if device_is_src else flow.src[0]  # an address of the victim
        where = " (on the site)" if site.is_site_address(hit) else ""
        if "/" in victim:
            hosts = len(busy.addresses)
            where += f" ({hosts:,}{'+' if hosts >= MAX_PORTS else ''} of its addresses)"
        dns = ""
        domain = busy.victim_domain() if busy.ports.keys() == {53} and udp else None
        if domain is not None:
            dns = (
                f": a DNS flood through the resolver, random names under {domain} (Mirai's DNS water "
                f"torture: the victim is {domain}'s name servers)"
            )
        elif busy.ports.keys() == {53} and udp:
            dns = (
                ": a DNS flood through the resolver (random names under the victim's domain: Mirai's DNS "
                "water torture)"
            )
        what = f"{flows:,} new connections to it in {seconds:.1f} s ({kinds}; {port_txt}{syn_txt}){dns}"
        if by == "packets" and flow.proto in _ECHO_REQUEST:
            what = f"{packets:,} ICMP echo requests to it in {seconds:.1f} s: a ping flood"
        elif by == "packets":
            main = transport_name(flow.proto)
            how = (
                "a GRE flood (Mirai's greip and greeth: random addresses inside the tunnel)"
                if flow.proto == PROTO_GRE
                else "a flood wrapped in IP-in-IP"
            )
            what = f"{packets:,} {main.upper()} packets to it in {seconds:.1f} s: {how}"
        elif by == "requests":
            sent = target.total(REQUESTS)
            over = f"{flows:,} new connections" if flows else "connections opened before"
            what = f"{sent:,} HTTP requests to it in {seconds:.1f} s over {over} ({port_txt}): an HTTP flood"
        message = (
            f"{describe(watched.device, side.ip, side.mac)} is flooding {victim}{where}: {what}. A "
            "camera never does this: it is a denial-of-service attack by malware on the device (Mirai "
            "family). Isolate the device from the network, then reset it and update its firmware; the "
            "attack's target may complain to the site's ISP."
        )
        flood: dict[str, Any] = {
            "flows": flows,
            "seconds": round(seconds, 3),
            "transports": {name: n for n, name in counts},
            "ports": ports,
            "syns": syns,
            "requests": target.total(REQUESTS),
            "packets": packets,
            "sample": [endpoint(*(f.src if f.src[0] == victim else f.dst)) for f in busy.sample[:10]],
        }
        if domain is not None:
            flood["domain"] = domain
        if "/" in victim:
            flood["prefix"], flood["addresses"] = victim, len(busy.addresses)
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
        only_port = next(iter(busy.ports)) if ports == 1 else None
        return replace(
            alert,
            source=replace(alert.source, port=None),
            destination=replace(alert.destination, port=only_port, domain=None),
            community_id=None,
            transport=main,
            fields=(("camwatch.flood", flood),),
            evidence=combine(snapshot(f, now) for f in busy.sample),
            start_ns=start_ns,
        )
