"""The site model: the policy, the inventory, and what the rules ask about them.

It keeps the inventory up to date from the events (new flows, first replies, device facts), marks
devices watched (in a monitored network, or of a watched vendor) and reports each newly watched
device as a :class:`~monitor.events.DeviceWatched` event. The rules ask it which side of a flow is a
watched device, and whether an address is on the site.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from monitor.devices import Device, Inventory, is_local_ip, is_unicast_mac
from monitor.events import DeviceFact, DeviceWatched, Event
from monitor.flows import Flow
from monitor.policy import SitePolicy
from monitor.vendors.clouds import CloudCatalogue
from monitor.vendors.fingerprints import display_name

# Bound on the per-device external traffic table (a flood of spoofed MACs must not grow it).
MAX_EXTERNAL_DEVICES = 10_000
MAX_PEERS = 1024


@dataclass(frozen=True, slots=True)
class Watched:
    """A watched endpoint: its inventory device, or None when it has none (no MAC on this link type)."""

    device: Device | None


class Site:
    """The site as the engine knows it. ``announce`` receives the events the site model raises."""

    def __init__(
        self,
        policy: SitePolicy,
        inventory: Inventory,
        clouds: CloudCatalogue,
        observer: str,
        announce: Callable[[Event], None],
    ) -> None:
        self.policy = policy
        self.inventory = inventory
        self.clouds = clouds
        self.observer = observer
        self._announce = announce
        # Per device MAC: [bytes out, bytes in, packets out, packets in] with peers outside the site,
        # accumulated as flows end.
        self.external: dict[int, list[int]] = {}

    # ---------------------------------------------------------------- the inventory, from events

    def on_flow_started(self, flow: Flow) -> None:
        src_ip, _ = flow.src
        dst_ip, _ = flow.dst
        # An address belongs to a MAC only when that MAC sent from it: the receiving side's MAC may be
        # a router's, carrying every remote destination. The responder's address is learned when it
        # first sends (on_responder).
        src_dev = self.device(flow.src_mac, src_ip, flow.start_ns)
        dst_dev = self.device(flow.dst_mac, None, flow.start_ns)
        if src_dev is not None and len(src_dev.peers) < MAX_PEERS:
            src_dev.peers.add(dst_ip)
        if dst_dev is not None and len(dst_dev.peers) < MAX_PEERS:
            dst_dev.peers.add(src_ip)

    def on_responder(self, flow: Flow, ts_ns: int) -> None:
        self.device(flow.dst_mac, flow.dst[0], ts_ns)

    def on_fact(self, fact: DeviceFact) -> None:
        if not is_unicast_mac(fact.mac):
            return
        dev, _ = self.inventory.observe(fact.mac, fact.ts_ns)
        dev.add_evidence(fact.kind, fact.detail)
        if fact.vendor and dev.vendor is None:
            # A randomised or unknown MAC: the traffic says who made the device.
            dev.vendor = fact.vendor
            dev.manufacturer = display_name(fact.vendor)
        if fact.model and dev.model is None:
            dev.model = fact.model
        if fact.firmware and dev.firmware is None:
            dev.firmware = fact.firmware
        if fact.serial and dev.serial is None:
            dev.serial = fact.serial
        if fact.protocol:
            dev.protocols.add(fact.protocol)
        self.device(fact.mac, fact.ip if fact.ip in dev.ips else None, dev.last_seen_ns)

    def device(self, mac: int, ip: str | None, ts: int) -> Device | None:
        """The inventory device of a station address (None for a group or zero MAC); with ``ip``, the
        device sent from that address: it is remembered, and the device may become watched."""
        if not is_unicast_mac(mac):
            return None
        dev, _ = self.inventory.observe(mac, ts)
        if ip is None:
            # Seen only as a receiver (or a fact without an address): judged once it sends.
            return dev
        self.inventory.add_ip(dev, ip)
        if not dev.watched:
            why = ""
            if self.policy.is_monitored_ip(ip):
                why = "it is on a monitored network"
            elif dev.vendor is not None and dev.vendor in self.policy.watched_vendors:
                why = f"its vendor ({dev.vendor}) is on the watch list"
            if why:
                dev.watched = True
                if not dev.announced:
                    dev.announced = True
                    self._announce(DeviceWatched(ts, dev, ip, why))
        return dev

    def label_devices(self, flows: Iterable[Flow]) -> None:
        """Note the protocols each device spoke (from the flows the analyzers just read)."""
        for flow in flows:
            if flow.protocol is None:
                continue
            for mac in (flow.src_mac, flow.dst_mac):
                dev = self.inventory.get(mac) if mac else None
                if dev is not None:
                    dev.protocols.add(flow.protocol)

    # ---------------------------------------------------------------- what the rules ask

    def watched(self, flow: Flow, sender_is_src: bool) -> Watched | None:
        """The watched device on that side of the flow, or None if that side is not watched."""
        mac = flow.src_mac if sender_is_src else flow.dst_mac
        ip = (flow.src if sender_is_src else flow.dst)[0]
        dev = self.inventory.get(mac) if mac else None
        if dev is not None and dev.ips and ip not in dev.ips:
            dev = None  # the MAC is a router's: the address behind it is someone else
        if dev is not None and dev.watched:
            return Watched(dev)
        if self.policy.is_watched(ip, dev.vendor if dev is not None else None):
            return Watched(dev)
        return None

    def is_site_address(self, ip: str) -> bool:
        """On the site: a monitored network, a private or link-local address, multicast or broadcast."""
        if self.policy.is_monitored_ip(ip) or is_local_ip(ip):
            return True
        addr = ipaddress.ip_address(ip)
        return addr.is_multicast or ip == "255.255.255.255"

    def leaves_site(self, ip: str, port: int, transport: str) -> bool:
        """Traffic to ip:port is not allowed by the policy (outside the site's allowlist)."""
        allowed, _ = self.policy.egress_allowed(ip, port, transport)
        return not allowed

    def allowed_viewer(self, ip: str) -> bool:
        """May ``ip`` pull video? The policy's viewers; without viewers, anyone on the site."""
        if self.policy.viewers:
            return self.policy.is_viewer(ip)
        return self.is_site_address(ip)

    # ---------------------------------------------------------------- traffic with outside the site

    def account_external(self, flow: Flow, into: dict[int, list[int]] | None = None) -> None:
        """Add the flow's counters to its site device's external traffic (``into``, default the
        accumulated totals of ended flows)."""
        totals = self.external if into is None else into
        (s_ip, _), (d_ip, _) = flow.src, flow.dst
        s_site, d_site = self.is_site_address(s_ip), self.is_site_address(d_ip)
        if s_site == d_site:
            return
        mac = flow.src_mac if s_site else flow.dst_mac
        if not mac or (mac not in totals and len(totals) >= MAX_EXTERNAL_DEVICES):
            return
        (sp, sb), (dp, db) = flow.src_counts, flow.dst_counts
        out_b, out_p, in_b, in_p = (sb, sp, db, dp) if s_site else (db, dp, sb, sp)
        acc = totals.setdefault(mac, [0, 0, 0, 0])
        acc[0] += out_b
        acc[1] += in_b
        acc[2] += out_p
        acc[3] += in_p
