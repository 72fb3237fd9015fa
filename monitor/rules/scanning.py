"""``device.scanning``: a watched device contacts many addresses or ports that do not answer (fan-out).

A camera talks to a handful of places: its recorder, the site's DNS and NTP, perhaps its vendor's cloud.
A camera that tries dozens of addresses a minute, most of which never accept, is scanning: the mark of
Mirai-family malware looking for its next victims (telnet, tcp/23 and 2323) or of an attacker's foothold.

Counted per watched device over ``WINDOW_NS``, from the flows it opens (TCP and UDP, not multicast or
broadcast): an attempt **failed** when the peer refused it (a RST) or had not answered ``GRACE_NS``
later. It is a scan when the failed attempts reach ``ADDRESS_THRESHOLD`` distinct addresses, or
``PORT_THRESHOLD`` distinct ports of one address, or when ``MIRAI_THRESHOLD`` SYNs to distinct addresses
carry Mirai's signature (the TCP sequence number equal to the destination address: conclusive on its own).
A recorder connecting to its 64 cameras at boot is not: they accept. Nor is a recorder reconnecting to the
cameras of a switch that lost power: a service (address and port) that accepted this device before
(``MAX_KNOWN_PEERS`` kept a device) is its peer's, and its refusals while it boots are not a fan-out; the
peer's other ports are (a compromised camera port-scanning its own recorder). A flow whose opener only its
ports said (an answer met first) is no attempt: a camera flooded with stray ACKs answers them.

Cheap while nothing happens: each new destination updates a few counters; the full count runs only when
the distinct destinations cross a threshold (and again every ``ADDRESS_THRESHOLD`` new ones), ``HOLD_NS``
later so that answers in flight are in. A scan is **one** alert (one incident per device), with counts, the
telnet ports named when they were tried, and a sample of destinations; the rule absorbs the device's
``egress.unexpected_destination`` alerts of the same incident (the scan's own connections). State is
bounded per device (``MAX_ATTEMPTS``), in all (``MAX_TOTAL_ATTEMPTS``) and in devices (``MAX_DEVICES``).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final

from monitor.alerts import CRITICAL, NS, Alert, Rule, endpoint
from monitor.decode import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN
from monitor.events import Event, FlowStarted, ResponderSeen
from monitor.evidence import Evidence, combine, recorded, snapshot, tcp_seq
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.rules._common import Bounded
from monitor.site import Site, Watched

DEVICE_SCANNING = Rule(
    "device.scanning",
    "Watched device is scanning the network (many addresses or ports)",
    CRITICAL,
    ("network", "intrusion_detection"),
    ("connection", "info"),
    absorbs=("egress.unexpected_destination",),
)
RULES = (DEVICE_SCANNING,)

WINDOW_NS: Final = 60 * NS
GRACE_NS: Final = 1 * NS
HOLD_NS: Final = 5 * NS
ADDRESS_THRESHOLD: Final = 32
PORT_THRESHOLD: Final = 32
MIRAI_THRESHOLD: Final = 3
TELNET_PORTS: Final = frozenset({23, 2323})
MAX_ATTEMPTS: Final = 4096
MAX_TOTAL_ATTEMPTS: Final = 65_536
MAX_DEVICES: Final = 1024
MAX_KNOWN_PEERS: Final = 1024  # services that accepted a device before, per device (the oldest forgotten)
SAMPLE: Final = 16

PENDING, ACCEPTED, REFUSED = 0, 1, 2


@dataclass(slots=True)
class _Attempt:
    ts_ns: int
    state: int
    flow: Flow | None  # kept for the first SAMPLE attempts of a window only (evidence)


@dataclass(slots=True)
class _Device:
    watched: Watched
    # (address, port, transport) -> the latest attempt there, oldest first.
    attempts: OrderedDict[tuple[str, int, int], _Attempt] = field(default_factory=OrderedDict)
    addresses: dict[str, int] = field(default_factory=dict)  # address -> attempts in the window
    ports: dict[str, set[int]] = field(default_factory=dict)  # address -> ports tried (bounded)
    next_address_check: int = ADDRESS_THRESHOLD
    next_port_check: int = PORT_THRESHOLD
    checking: bool = False
    reported: bool = False
    overflow: int = 0  # attempts beyond MAX_ATTEMPTS, counted only
    mirai: set[str] = field(default_factory=set)
    total: int = 0
    first_ns: int = 0
    last: Flow | None = None
    # Services (address, port) that accepted this device's connections before, oldest first: its peers' (its
    # cameras', its recorder's), whose refusals (rebooting) are not a scan; the peer's other ports are (a
    # compromised camera scanning its own recorder).
    known: Bounded[tuple[str, int], bool] = field(default_factory=lambda: Bounded(MAX_KNOWN_PEERS))


@lru_cache(maxsize=4096)
def _group_address(ip: str) -> bool:
    """Multicast, or a broadcast address (the limited one, or the last address of a /24)."""
    addr = ipaddress.ip_address(ip)
    return addr.is_multicast or (addr.version == 4 and (ip.endswith(".255") or ip == "0.0.0.0"))


@dataclass(frozen=True, slots=True)
class CheckScan(Event):
    """Time to count the failed attempts of the device ``key``."""

    key: str


class ScanningRule(RuleModule):
    """Follows the flows watched devices open; reports a device whose failed attempts fan out."""

    consumes = (FlowStarted, ResponderSeen, CheckScan)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self.devices: Bounded[str, _Device] = Bounded(MAX_DEVICES)
        self._flows: Bounded[int, tuple[str, tuple[str, int, int]]] = Bounded(MAX_TOTAL_ATTEMPTS)
        self.total_attempts = 0

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, FlowStarted):
            self._started(event.flow, event.ts_ns)
        elif isinstance(event, ResponderSeen):
            self._answered(event.flow)
        elif isinstance(event, CheckScan):
            return self._check(event.key, event.ts_ns)
        return ()

    def _started(self, flow: Flow, ts: int) -> None:
        proto = flow.proto
        if proto != PROTO_TCP and proto != PROTO_UDP:
            return
        opener_is_src = flow.opener_is_src
        dst_ip, dst_port = flow.dst if opener_is_src else flow.src
        if _group_address(dst_ip):
            return  # discovery multicast and broadcast: never a fan-out
        if flow.opener is False:
            return  # an answer met first (its opener said by the ports only): no attempt seen to judge
        watched = self.site.watched(flow, opener_is_src)
        if watched is None:
            return
        src_ip = (flow.src if opener_is_src else flow.dst)[0]
        key = watched.key(src_ip)
        if self.site.is_flood_target(key, dst_ip):
            return  # device.flooding's victim: its flows must not fill the budget a scan is judged on
        dev = self.devices.get(key)
        if dev is None:
            dev = _Device(watched, first_ns=ts)
            self.devices.put(key, dev)
        self._prune(dev, ts)
        dev.total += 1
        dev.last = flow
        if proto == PROTO_TCP and opener_is_src and flow.first_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            first = recorded(flow)
            read = tcp_seq(first[0][1], first[0][4]) if first else None
            if read is not None and read[0] == read[1]:
                dev.mirai.add(dst_ip)
        where = (dst_ip, dst_port, proto)
        if len(dev.attempts) >= MAX_ATTEMPTS or self.total_attempts >= MAX_TOTAL_ATTEMPTS:
            dev.overflow += 1
        else:
            old = dev.attempts.pop(where, None)
            if old is None:
                self.total_attempts += 1
                dev.addresses[dst_ip] = dev.addresses.get(dst_ip, 0) + 1
                ports = dev.ports.setdefault(dst_ip, set())
                if len(ports) < MAX_ATTEMPTS:
                    ports.add(dst_port)
            keep = flow if len(dev.attempts) < SAMPLE else None
            dev.attempts[where] = _Attempt(ts, PENDING, keep)
            self._flows.put(id(flow), (key, where))
        if dev.reported or dev.checking:
            return
        busiest = len(dev.ports.get(dst_ip, ()))
        if (
            len(dev.addresses) >= dev.next_address_check
            or busiest >= dev.next_port_check
            or len(dev.mirai) >= MIRAI_THRESHOLD
        ):
            dev.checking = True
            self.site.schedule(CheckScan(ts + HOLD_NS, key))

    def _prune(self, dev: _Device, now: int) -> None:
        attempts = dev.attempts
        horizon = now - WINDOW_NS
        while attempts:
            where, first = next(iter(attempts.items()))
            if first.ts_ns >= horizon:
                break
            attempts.popitem(last=False)
            self.total_attempts -= 1
            ip = where[0]
            left = dev.addresses.get(ip, 1) - 1
            if left <= 0:
                dev.addresses.pop(ip, None)
                dev.ports.pop(ip, None)
            else:
                dev.addresses[ip] = left
        if not attempts:
            dev.first_ns = now
            dev.total = dev.overflow = 0  # the attempts counted are the window's
            dev.mirai.clear()
            dev.next_address_check, dev.next_port_check = ADDRESS_THRESHOLD, PORT_THRESHOLD
            # Quiet for a whole window: a later scan is judged afresh (Mirai lives in RAM: a camera reset and
            # infected again scans again; the gate still holds back a repeat within its re-alert time).
            dev.reported = False

    def _answered(self, flow: Flow) -> None:
        where = self._flows.get(id(flow))
        if where is None:
            return
        dev = self.devices.get(where[0])
        attempt = dev.attempts.get(where[1]) if dev is not None else None
        if attempt is None or attempt.state != PENDING:
            return
        if flow.proto == PROTO_TCP:
            flags = flow.reply_flags  # the responder's first packet's
            if flow.first_flags & TCP_SYN:
                attempt.state = ACCEPTED if flags & TCP_SYN else REFUSED if flags & TCP_RST else PENDING
            else:
                # Met mid-stream (the capture began after the handshake): both sides sending is a connection;
                # only a reset answers an ACK probe.
                attempt.state = REFUSED if flags & TCP_RST else ACCEPTED
        else:
            attempt.state = ACCEPTED
        if attempt.state == ACCEPTED and dev is not None:
            dev.known.put((where[1][0], where[1][1]), True)

    def _check(self, key: str, now: int) -> Sequence[Alert]:
        dev = self.devices.get(key)
        if dev is None or dev.reported:
            return ()
        dev.checking = False
        self._prune(dev, now)
        failed: dict[str, set[int]] = {}
        floods = self.site.is_flood_target
        for (ip, port, _), attempt in dev.attempts.items():
            if (ip, port) in dev.known:
                continue  # a service that accepted this device before (a camera rebooting), not a scan target
            if floods(key, ip):
                continue  # device.flooding's victim: its random ports are a flood, not a port scan
            if attempt.state == REFUSED or (attempt.state == PENDING and attempt.ts_ns < now - GRACE_NS):
                failed.setdefault(ip, set()).add(port)
        busiest = max((len(p) for p in failed.values()), default=0)
        mirai = len(dev.mirai) >= MIRAI_THRESHOLD
        if len(failed) < ADDRESS_THRESHOLD and busiest < PORT_THRESHOLD and not mirai:
            # Not (yet) a scan: look again once as many new destinations more were tried.
            dev.next_address_check = len(dev.addresses) + ADDRESS_THRESHOLD
            dev.next_port_check = max(len(p) for p in dev.ports.values()) + PORT_THRESHOLD if dev.ports else 0
            return ()
        dev.reported = True
        return (self._alert(dev, failed, now),)

    def _alert(self, dev: _Device, failed: dict[str, set[int]], now: int) -> Alert:
        watched = dev.watched
        flow = dev.last
        assert flow is not None
        attempts = dev.attempts
        telnet = sum(1 for (_, port, _) in attempts if port in TELNET_PORTS)
        ports = {port for (_, port, _) in attempts}
        # Examples of what failed (the message says "N of them refused or unanswered (e.g. ...)").
        sample = [endpoint(ip, port) for (ip, port, _) in attempts if port in failed.get(ip, ())][:10]
        side = Side.of(flow, flow.opener_is_src, watched.mac)
        what = []
        if dev.mirai:
            what.append(f"{len(dev.mirai)} of its SYNs carry Mirai's signature (sequence number = address)")
        if telnet:
            what.append(f"{telnet} attempts to the telnet ports 23/2323")
        seconds = max(now - dev.first_ns, 0) / NS
        refused = sum(len(p) for p in failed.values())
        message = (
            f"{describe(watched.device, side.ip, side.mac)} is scanning: {dev.total + dev.overflow} "
            f"connection attempts to {len(dev.addresses)} addresses and {len(ports)} ports in "
            f"{seconds:.0f} s, "
            f"{refused} of them refused or unanswered (e.g. {', '.join(sample[:5])})"
            + (f"; {'; '.join(what)}" if what else "")
            + ": it is probably infected (Mirai-family malware spreads this way). Isolate it from the "
            "network, then reset it and update its firmware."
        )
        scan: dict[str, Any] = {
            "attempts": dev.total + dev.overflow,
            "addresses": len(dev.addresses),
            "ports": len(ports),
            "failed": sum(len(p) for p in failed.values()),
            "failed_addresses": len(failed),
            "mirai": len(dev.mirai),
            "telnet": telnet,
            "seconds": round(seconds, 3),
            "sample": sample,
        }
        parts: list[Evidence | None] = [
            snapshot(a.flow, now) for a in attempts.values() if a.flow is not None
        ]
        alert = side_alert(
            DEVICE_SCANNING,
            flow,
            side,
            watched.device,
            self.site.observer,
            now,
            message,
            ("scan",),
            protocol=None,
        )
        # The incident is the device's scan, not one destination: no destination of its own.
        return replace(
            alert,
            source=replace(alert.source, port=None),
            destination=replace(alert.destination, ip=None, port=None, domain=None),
            community_id=None,
            transport=transport_name(flow.proto),
            fields=(("camwatch.scan", scan),),
            evidence=combine(parts),
            start_ns=dev.first_ns,
        )
