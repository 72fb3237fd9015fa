"""The site model: the policy, the inventory, who is who on the wire, and what the rules ask about them.

It keeps the inventory up to date from the events (new flows, first replies, device facts, address
claims), marks devices watched (in a monitored network, or of a watched vendor) and reports each newly
watched device as a :class:`~monitor.events.DeviceWatched` event. The rules ask it which side of a flow is
a watched device, and whether an address is on the site.

**Identity that survives routing.** On a VLAN trunk mirror a packet routed between VLANs is seen twice:
from the sender's own MAC on its segment, and from the router's MAC on the next one (with a TTL one
lower). A router's MAC therefore "sends" from every address it forwards, and is nobody's identity. The
site model tells routers from hosts:

- the routed copy of a conversation: the same 5-tuple started on another VLAN within a second, with a
  lower first TTL (its sender MAC, and the original's receiver MAC, are a router's; the copy is one flow
  with its original for the rules: :attr:`Flow.copy`);
- a router made itself known: an NDP router advertisement, the router option of a DHCP lease;
- one MAC sends from an address another MAC claimed on its own segment (ARP, NDP, DHCP);
- one MAC sends from many IPv4 addresses, from site and off-site IPv4 addresses, or from IPv6 global
  addresses of several /64 prefixes.

An address then gets its MAC from the segment where the host lives (:meth:`host_mac`): the frame's MAC
unless it is a router's, else the MAC that claimed the address, or that sent from it as a host. A device
found to be a router keeps only the addresses and evidence that are its own.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from monitor.devices import (
    DISCOVERY_KINDS,
    STRENGTH_BANNER,
    STRENGTH_DISCOVERY,
    Device,
    Inventory,
    is_local_ip,
    is_unicast_mac,
)
from monitor.events import AddressClaim, DeviceFact, DeviceWatched, Event, RouterAdvert
from monitor.flows import Flow
from monitor.names import ResolvedNames
from monitor.policy import SitePolicy
from monitor.register import AssetRegister
from monitor.vendors.clouds import CloudCatalogue
from monitor.vendors.fingerprints import display_name
from monitor.vendors.oui import format_mac

NS = 1_000_000_000
# Bound on the per-device external traffic table (a flood of spoofed MACs must not grow it).
MAX_EXTERNAL_DEVICES = 10_000
MAX_PEERS = 1024
MAX_BINDINGS = 100_000  # address -> MAC of the host that owns it
MAX_FLOOD_TARGETS = 4096  # (device, target) pairs of the floods reported, remembered for the scanning rule
MAX_ROUTERS = 4096
MAX_PENDING_FACTS = 4096  # facts about addresses whose host is not known yet (sent through a router)
# Flows started in the last COPY_WINDOW_NS, to find routed copies: a router forwards within a millisecond,
# so a short window and a small table do; a flood of new flows only shortens what is remembered.
MAX_RECENT_FLOWS = 4096
COPY_WINDOW_NS = NS // 5
# A claim (ARP, NDP, DHCP) vouches for an address this long: after it, the address may belong to another.
CLAIM_TTL_NS = 4 * 3600 * NS
# A host sends from a few addresses; a MAC that sends from more IPv4 addresses forwards for others.
ROUTER_IPV4_ADDRESSES = 4
# Global IPv6 /64s a MAC sends from before it is taken for a router (see Site._forwards).
ROUTER_IPV6_PREFIXES = 4
MAX_UNLISTED_PREFIXES = 16

# Binding sources, strongest first: a claim on the host's own segment beats what traffic suggested.
_CLAIMED = frozenset({"arp", "ndp", "dhcp", "dhcpv6"})

Tuple5 = tuple[int, str, int, str, int]


# What copy detection keeps of a recent flow (not the flow: a flood must not keep flows alive):
# (key, start_ns, src, first_ttl, src_mac, dst_mac).
_Started = tuple[tuple[int, ...], int, tuple[str, int], int, int, int]


@dataclass(frozen=True, slots=True)
class Watched:
    """A watched endpoint: its inventory device, or None when it has none (no MAC on this link type)."""

    device: Device | None
    mac: int
    """The MAC the endpoint is known by (its own, never a router's), 0 if none is known."""

    def key(self, ip: str) -> str:
        """The identity rules keep per-device state under: its MAC as text, else its address ``ip``."""
        return str(self.mac) if self.mac else ip


@lru_cache(maxsize=65_536)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ip)


def _same_subnet(a: str, b: str) -> bool:
    """Both in one /24 (IPv4) or /64 (IPv6): the subnet a host reaches without a router, as far as the
    addresses alone tell."""
    x, y = _address(a), _address(b)
    if x.version != y.version:
        return False
    shift = 8 if x.version == 4 else 64
    return int(x) >> shift == int(y) >> shift and not x.is_multicast and not y.is_multicast


def _scope(ip: str) -> str:
    """``link`` (link-local), ``private`` (RFC 1918, CGNAT, ULA), ``multicast``, ``unspecified`` or
    ``public``."""
    addr = _address(ip)
    if addr.is_link_local:
        return "link"
    if addr.is_multicast:
        return "multicast"
    if addr.is_unspecified:
        return "unspecified"
    return "private" if is_local_ip(ip) else "public"


# IPv6 networks whose /64s hold other hosts' IPv4 addresses (NAT64, IPv4-mapped, Teredo): no one network's.
_V6_HOLDING_V4 = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0/96", "2001::/32")
)


@lru_cache(maxsize=4096)
def flood_prefix(ip: str) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) an address is in: a flood's target when it hits random hosts of it. None
    for an IPv6 address whose /64 holds hosts of all IPv4 (NAT64, IPv4-mapped, Teredo)."""
    addr = _address(ip)
    if addr.version == 6 and any(addr in net for net in _V6_HOLDING_V4):
        return None
    return str(ipaddress.ip_network((addr, 24 if addr.version == 4 else 64), strict=False))


@lru_cache(maxsize=65_536)
def _host_address(ip: str) -> bool:
    """An address a station can own: not unspecified (``::`` of IPv6 duplicate address detection and MLD,
    ``0.0.0.0`` of a DHCP client without a lease), multicast or the limited broadcast."""
    addr = _address(ip)
    return not (addr.is_unspecified or addr.is_multicast or ip == "255.255.255.255")


class Site:
    """The site as the engine knows it. ``announce`` receives the events the site model raises."""

    def __init__(
        self,
        policy: SitePolicy,
        inventory: Inventory,
        clouds: CloudCatalogue,
        observer: str,
        announce: Callable[[Event], None],
        schedule: Callable[[Event], None] | None = None,
    ) -> None:
        self.policy = policy
        #: The asset register (docs/register.md): its devices are known, a removed one seen is an alert.
        self.register = AssetRegister()
        self.inventory = inventory
        self.clouds = clouds
        self.observer = observer
        self._announce = announce
        #: Dispatch an event once capture time passes its ``ts_ns`` (a rule holding an alert back).
        self.schedule = schedule or announce
        # Per device MAC: [bytes out, bytes in, packets out, packets in] with peers outside the site,
        # accumulated as flows end.
        self.external: dict[int, list[int]] = {}
        # The names each watched device resolved (the egress rule keeps them when the policy has name rules):
        # what a name allow rule is matched against, for every rule that asks whether traffic leaves.
        self.resolved_names: ResolvedNames | None = None
        #: (device key, address) pairs ``device.flooding`` reported: the flood's flows are not also a scan.
        self.flood_targets: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: Transport number -> port -> the protocol labels declared there (the engine sets the registry's).
        self.service_ports: Mapping[int, Mapping[int, tuple[str, ...]]] = {}
        self.bindings: OrderedDict[str, tuple[int, str, int]] = OrderedDict()  # ip -> (mac, source, ts)
        # (ip, mac) -> when that MAC last claimed that address itself: another station's claim does not make
        # it a router (a forged or mistaken claim, e.g. a spoofed neighbor advertisement, is a conflict).
        self._own_claims: OrderedDict[tuple[str, int], int] = OrderedDict()
        #: Global IPv6 /64s watched devices send from that no monitored network holds, each with a device
        #: MAC (at most MAX_UNLISTED_PREFIXES): a GUA-only site without its prefixes in the policy sees
        #: its own hosts as outside the site (see ``unlisted_message``).
        self.unlisted_prefixes: OrderedDict[str, int] = OrderedDict()
        self._unlisted_seen: set[str] = set()
        self.routers: set[int] = set()
        self.router_ips: set[str] = set()
        self._recent: OrderedDict[Tuple5, _Started] = OrderedDict()
        self._pending_facts: OrderedDict[str, list[DeviceFact]] = OrderedDict()
        self._on_site: dict[str, bool] = {}
        self._monitored: dict[str, bool] = {}  # ip -> in a monitored network (asked per flow by many rules)
        self.stats = SiteStats()

    # ---------------------------------------------------------------- who is who

    def host_mac(self, mac: int, ip: str) -> int:
        """The MAC of the host that sent from ``ip`` in a frame from ``mac``: ``mac`` itself unless it is
        a router's, else the address's owner on its own segment (0 when unknown)."""
        if mac and mac not in self.routers:
            return mac
        bound = self.bindings.get(ip)
        return bound[0] if bound is not None else 0

    def side_mac(self, flow: Flow, sender_is_src: bool) -> int:
        """The MAC of that side of the flow's host (see :meth:`host_mac`)."""
        if sender_is_src:
            return self.host_mac(flow.src_mac, flow.src[0])
        return self.host_mac(flow.dst_mac, flow.dst[0])

    def _bind(self, ip: str, mac: int, source: str, ts: int) -> None:
        old = self.bindings.get(ip)
        if old is not None and old[1] in _CLAIMED and source not in _CLAIMED and ts - old[2] < CLAIM_TTL_NS:
            return  # what traffic suggests never overrides what the host said on its own segment
        self.bindings.pop(ip, None)
        self.bindings[ip] = (mac, source, ts)
        if len(self.bindings) > MAX_BINDINGS:
            self.bindings.popitem(last=False)
            self.stats.bindings_evicted += 1
        if ip in self._pending_facts and (source in _CLAIMED or self.is_site_address(ip)):
            # Facts held for this address now have their host (an off-site address: only once claimed).
            for fact in self._pending_facts.pop(ip):
                self._apply_fact(mac, fact)

    def mark_router(self, mac: int, why: str) -> None:
        """``mac`` forwards other hosts' packets: it keeps only its own addresses and evidence."""
        if not is_unicast_mac(mac) or mac in self.routers:
            return
        if len(self.routers) >= MAX_ROUTERS:
            self.stats.routers_dropped += 1
            return
        self.routers.add(mac)
        self.stats.routers += 1
        dev = self.inventory.get(mac)
        if dev is None:
            return
        dev.router = True
        # Its own addresses: those it claimed, and those it sent from within one subnet (a router forwards
        # nothing there: the site gateway answering DNS from 10.20.0.1 to the cameras of 10.20.0.0/24).
        own = {
            ip
            for ip in dev.ips
            if self._claimed_by(ip) == mac or any(_same_subnet(ip, peer) for peer in dev.peers)
        }
        for ip in dev.ips:
            if ip not in own and self.host_mac(0, ip) == mac:
                del self.bindings[ip]  # learned from forwarded traffic: not its address
        dev.ips = [ip for ip in dev.ips if ip in own]
        self.inventory.reattribute(dev, own)
        dev.add_evidence("router", why)
        dev.watched = any(self.policy.is_monitored_ip(ip) for ip in dev.ips) or (
            dev.vendor is not None and dev.vendor in self.policy.watched_vendors
        )

    # ---------------------------------------------------------------- the inventory, from events

    def on_flow_started(self, flow: Flow) -> None:
        src_ip, _ = flow.src
        dst_ip, _ = flow.dst
        self._find_copy(flow)
        # An address belongs to a MAC only when that MAC sent from it as a host: the receiving side's
        # MAC may be a router's, carrying every remote destination. The responder's address is learned
        # when it first sends (on_responder).
        src_dev = self._sender(flow.src_mac, src_ip, flow.start_ns, dst_ip)
        dst_mac = flow.dst_mac if flow.dst_mac not in self.routers else 0
        dst_dev = self.device(dst_mac, None, flow.start_ns)
        if src_dev is not None:
            src_dev.add_peer(dst_ip)
        if dst_dev is not None:
            dst_dev.add_peer(src_ip)

    def on_responder(self, flow: Flow, ts_ns: int) -> None:
        self._sender(flow.dst_mac, flow.dst[0], ts_ns, flow.src[0])

    def claimed(self, ip: str, mac: int) -> bool:
        """Did ``mac`` claim ``ip`` on its own segment (ARP, NDP, DHCP)? A router's MAC never does for the
        addresses it forwards for."""
        return bool(mac) and self._claimed_by(ip) == mac

    def _claimed_by(self, ip: str) -> int:
        """The MAC that claimed ``ip`` on its own segment (ARP, NDP, DHCP), 0 if none did."""
        bound = self.bindings.get(ip)
        return bound[0] if bound is not None and bound[1] in _CLAIMED else 0

    def _sender(self, mac: int, ip: str, ts: int, peer: str) -> Device | None:
        """``mac`` sent from ``ip`` to ``peer``: a host's address, unless the MAC forwards for others."""
        if mac in self.routers:
            # A router forwards nothing within one subnet: from there, the address is its own.
            return self.device(mac, ip, ts) if _same_subnet(ip, peer) else None
        claimed = self.bindings.get(ip)
        if (
            claimed is not None
            and claimed[1] in _CLAIMED
            and claimed[0] != mac
            and ts - claimed[2] < CLAIM_TTL_NS
            and is_unicast_mac(mac)
        ):
            own = self._own_claims.get((ip, mac))
            if own is None or ts - own >= CLAIM_TTL_NS:
                # Another station claimed this address on its own segment (recently enough that the address
                # was not handed on), and this MAC never did: it forwards it.
                self.mark_router(mac, f"sends from {ip}, which {claimed[1]} gives to another station")
                return None
            # Both claimed it: two stations on one address, or one claiming another's (ARP/NDP spoofing).
            dev = self.inventory.get(mac)
            if dev is not None:
                other = format_mac(claimed[0])
                dev.add_evidence("address-conflict", f"{ip} also claimed by {other} ({claimed[1]})")
        before = self.inventory.get(mac)
        new_address = before is None or ip not in before.ips
        dev = self.device(mac, ip, ts)
        if dev is not None and new_address and len(dev.ips) > 1 and self._forwards(dev):
            self.mark_router(mac, f"sends from {len(dev.ips)} addresses: {', '.join(dev.ips[:4])}")
            return None
        return dev

    @staticmethod
    def _forwards(dev: Device) -> bool:
        v4 = [ip for ip in dev.ips if _address(ip).version == 4]
        if len(v4) >= ROUTER_IPV4_ADDRESSES:
            return True
        kinds = {_scope(ip) for ip in v4}
        if "private" in kinds and "public" in kinds:
            return True  # a private and a public IPv4 address: a gateway with the Internet behind it
        # A host has an address in each prefix its routers advertise (two ISPs, RFC 7157; a renumbering, RFC
        # 4192; temporary addresses in each, RFC 8981): a router forwarding the Internet's replies sends from
        # many more.
        prefixes = {
            int(_address(ip)) >> 64 for ip in dev.ips if _address(ip).version == 6 and _scope(ip) == "public"
        }
        return len(prefixes) >= ROUTER_IPV6_PREFIXES

    def _find_copy(self, flow: Flow) -> None:
        """Is this flow a routed copy of one started just before on another VLAN?"""
        (s_ip, s_port), (d_ip, d_port) = src, _ = flow.src, flow.dst
        proto = flow.key[2]
        key: Tuple5 = (proto, s_ip, s_port, d_ip, d_port)
        recent = self._recent
        original = recent.get(key) or recent.get((proto, d_ip, d_port, s_ip, s_port))
        start = flow.start_ns
        if original is not None and original[0] != flow.key and original[1] >= start - COPY_WINDOW_NS:
            # The first one seen is the one judged; the TTLs say which MACs forwarded it.
            flow.copy = True
            self.stats.copies += 1
            o_ttl, f_ttl = original[3], flow.first_ttl
            if original[2] == src and o_ttl != f_ttl:
                if o_ttl > f_ttl:
                    far_src, near_dst, far_dst = flow.src_mac, original[5], flow.dst_mac
                else:
                    far_src, near_dst, far_dst = original[4], flow.dst_mac, original[5]
                why = f"forwarded {s_ip} -> {d_ip} (TTL {max(o_ttl, f_ttl)} -> {min(o_ttl, f_ttl)})"
                self.mark_router(far_src, why)
                if near_dst != far_dst:
                    self.mark_router(near_dst, f"next hop of {s_ip} -> {d_ip}")
            return
        recent.pop(key, None)
        recent[key] = (flow.key, start, src, flow.first_ttl, flow.src_mac, flow.dst_mac)
        horizon = start - COPY_WINDOW_NS
        while len(recent) > MAX_RECENT_FLOWS or next(iter(recent.values()))[1] < horizon:
            recent.popitem(last=False)

    def on_claim(self, claim: AddressClaim) -> None:
        if not is_unicast_mac(claim.mac):
            return
        self._bind(claim.ip, claim.mac, claim.source, claim.ts_ns)
        own = self._own_claims
        own.pop((claim.ip, claim.mac), None)
        own[(claim.ip, claim.mac)] = claim.ts_ns
        if len(own) > MAX_BINDINGS:
            own.popitem(last=False)
        if claim.ip in self.router_ips:
            self.mark_router(claim.mac, f"router {claim.ip} ({claim.source})")
        if claim.mac not in self.routers:
            self.device(claim.mac, claim.ip, claim.ts_ns)

    def on_router(self, advert: RouterAdvert) -> None:
        if advert.ip is not None and len(self.router_ips) < MAX_ROUTERS:
            self.router_ips.add(advert.ip)
        mac = advert.mac or self._claimed_by(advert.ip or "")
        if mac:
            self.mark_router(
                mac, f"router advertised by {advert.source}" + (f" ({advert.ip})" if advert.ip else "")
            )

    def on_fact(self, fact: DeviceFact) -> None:
        mac = fact.mac
        if mac in self.routers:
            # Sent through a router: the fact is about the host behind it.
            mac = self.host_mac(mac, fact.ip)
            if not mac:
                self._park(fact)
                return
        elif fact.ip and self._claimed_by(fact.ip) != mac and not self.is_site_address(fact.ip):
            # An address off the site behind a MAC that never claimed it: most likely a router not yet known
            # as one (a camera attacking a Hikvision on the Internet gets its banner through the gateway),
            # whose MAC must not take that device's make. Held until the address's owner claims it here.
            self._park(fact)
            return
        self._apply_fact(mac, fact)

    def _park(self, fact: DeviceFact) -> None:
        facts = self._pending_facts.setdefault(fact.ip, [])
        if len(facts) < 16:
            facts.append(fact)
        if len(self._pending_facts) > MAX_PENDING_FACTS:
            self._pending_facts.popitem(last=False)
            self.stats.facts_dropped += 1

    def _apply_fact(self, mac: int, fact: DeviceFact) -> None:
        if not is_unicast_mac(mac):
            return
        dev, _ = self.inventory.observe(mac, fact.ts_ns)
        dev.add_evidence(fact.kind, fact.detail, fact.ip)
        if fact.vendor:
            strength = STRENGTH_DISCOVERY if fact.kind in DISCOVERY_KINDS else STRENGTH_BANNER
            if dev.vendor is None or (strength > dev.vendor_strength and fact.vendor != dev.vendor):
                # A randomised or unknown MAC, or a stronger signal: the traffic says who made the device.
                dev.vendor = fact.vendor
                dev.manufacturer = display_name(fact.vendor)
            dev.vendor_strength = max(dev.vendor_strength, strength)
        if fact.model and dev.model is None:
            dev.model = fact.model
        if fact.firmware and dev.firmware is None:
            dev.firmware = fact.firmware
        if fact.serial and dev.serial is None:
            dev.serial = fact.serial
        if fact.protocol:
            dev.add_protocol(fact.protocol)
        self.device(mac, fact.ip if fact.ip in dev.ips else None, fact.ts_ns)

    def device(self, mac: int, ip: str | None, ts: int) -> Device | None:
        """The inventory device of a station address (None for a group or zero MAC); with ``ip``, the
        device sent from that address: it is remembered, and the device may become watched."""
        if not is_unicast_mac(mac):
            return None
        dev, _ = self.inventory.observe(mac, ts)
        if ip is None or not _host_address(ip):
            # Seen only as a receiver (or a fact without an address, or sending from no address of its own:
            # a DAD probe from ::): judged once it sends.
            return dev
        if self.inventory.add_ip(dev, ip) and not dev.router:
            self._bind(ip, mac, "traffic", ts)
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
        if dev.watched and ":" in ip and ip not in self._unlisted_seen:
            self._note_unlisted(ip, mac)
        return dev

    def _note_unlisted(self, ip: str, mac: int) -> None:
        seen = self._unlisted_seen
        seen.add(ip)
        if len(seen) > MAX_BINDINGS:
            seen.clear()
        if len(self.unlisted_prefixes) >= MAX_UNLISTED_PREFIXES or _scope(ip) != "public":
            return
        if self.is_monitored(ip):
            return
        prefix = f"{ipaddress.IPv6Network((int(_address(ip)) >> 64 << 64, 64))}"
        self.unlisted_prefixes.setdefault(prefix, mac)

    def label_devices(self, flows: Iterable[Flow]) -> None:
        """Note the protocols each device spoke (from the flows the analyzers just read)."""
        for flow in flows:
            if flow.protocol is None:
                continue
            for mac in (flow.src_mac, flow.dst_mac):
                dev = self.inventory.get(mac) if mac and mac not in self.routers else None
                if dev is not None:
                    dev.add_protocol(flow.protocol)

    # ---------------------------------------------------------------- what the rules ask

    def watched(self, flow: Flow, sender_is_src: bool) -> Watched | None:
        """The watched device on that side of the flow, or None if that side is not watched."""
        ip = (flow.src if sender_is_src else flow.dst)[0]
        mac = self.side_mac(flow, sender_is_src)
        dev = self.inventory.get(mac) if mac else None
        if dev is not None and dev.ips and ip not in dev.ips:
            dev, mac = None, 0  # the address behind this MAC is someone else's
        if dev is not None and dev.watched:
            return Watched(dev, mac)
        if (dev is not None and dev.vendor in self.policy.watched_vendors) or self.is_monitored(ip):
            return Watched(dev, mac)
        return None

    def is_monitored(self, ip: str) -> bool:
        """In one of the policy's monitored networks (memoised: the rules ask it for every new flow)."""
        known = self._monitored.get(ip)
        if known is None:
            known = self.policy.is_monitored_ip(ip)
            if len(self._monitored) >= MAX_BINDINGS:
                self._monitored.clear()  # bounded; the answers never change
            self._monitored[ip] = known
        return known

    def is_site_address(self, ip: str) -> bool:
        """On the site: a monitored network, a private or link-local address, multicast or broadcast."""
        known = self._on_site.get(ip)
        if known is None:
            known = (
                self.policy.is_monitored_ip(ip)
                or is_local_ip(ip)
                or _address(ip).is_multicast
                or ip == "255.255.255.255"
            )
            if len(self._on_site) >= MAX_BINDINGS:
                self._on_site.clear()  # a bounded memo: the answers do not change, only their number
            self._on_site[ip] = known
        return known

    def leaves_site(
        self, ip: str, port: int, transport: str, device: Hashable | None = None, ts_ns: int = 0
    ) -> bool:
        """Traffic to ip:port is not allowed by the policy (outside the site's allowlist). With ``device``
        (its MAC, else its address) a name allow rule counts too: the names that device resolved to ``ip``."""
        names: tuple[str, ...] = ()
        if device is not None and self.resolved_names is not None:
            names = self.resolved_names.names_for(device, ip, ts_ns)
        allowed, _ = self.policy.egress_allowed(ip, port, transport, names=names)
        return not allowed

    def note_flood(self, device: str, ip: str) -> None:
        """``device`` (its MAC as text, else its address) floods ``ip``, an address or a prefix
        (``flood_prefix``); bounded: the oldest forgotten."""
        self.flood_targets[(device, ip)] = None
        self.flood_targets.move_to_end((device, ip))
        while len(self.flood_targets) > MAX_FLOOD_TARGETS:
            self.flood_targets.popitem(last=False)
            self.stats.flood_targets_dropped += 1

    def is_flood_target(self, device: str, ip: str) -> bool:
        """``device`` floods ``ip``, or the prefix it is in."""
        floods = self.flood_targets
        return bool(floods) and ((device, ip) in floods or (device, flood_prefix(ip) or ip) in floods)

    def forget_flood(self, device: str, ip: str) -> None:
        """The flood of ``ip`` by ``device`` is over: its attempts are the scanning rule's again."""
        self.flood_targets.pop((device, ip), None)

    def is_service_port(self, proto: int, port: int) -> bool:
        """A port servers listen on: below 1024, or one a protocol module declares."""
        return port < 1024 or port in self.service_ports.get(proto, ())

    def port_labels(self, proto: int, port: int) -> tuple[str, ...]:
        """The protocol labels declared on ``port`` of transport ``proto`` (declaration order)."""
        return self.service_ports.get(proto, {}).get(port, ())

    def allowed_viewer(self, ip: str) -> bool:
        """May ``ip`` pull video? The policy's viewers; without viewers, anyone on the site."""
        if self.policy.viewers:
            return self.policy.is_viewer(ip)
        return self.is_site_address(ip)

    # ---------------------------------------------------------------- traffic with outside the site

    def account_external(self, flow: Flow, into: dict[int, list[int]] | None = None) -> None:
        """Add the flow's counters to its site device's external traffic (``into``, default the
        accumulated totals of ended flows). A routed copy is not counted twice."""
        if flow.copy:
            return
        totals = self.external if into is None else into
        (s_ip, _), (d_ip, _) = flow.src, flow.dst
        s_site, d_site = self.is_site_address(s_ip), self.is_site_address(d_ip)
        if s_site == d_site:
            return
        mac = self.side_mac(flow, s_site)
        if not mac:
            return
        if mac not in totals and len(totals) >= MAX_EXTERNAL_DEVICES:
            if into is None:
                self.stats.external_dropped += 1
            return
        (sp, sb), (dp, db) = flow.src_counts, flow.dst_counts
        out_b, out_p, in_b, in_p = (sb, sp, db, dp) if s_site else (db, dp, sb, sp)
        acc = totals.setdefault(mac, [0, 0, 0, 0])
        acc[0] += out_b
        acc[1] += in_b
        acc[2] += out_p
        acc[3] += in_p


@dataclass(slots=True)
class SiteStats:
    routers: int = 0  # MACs found to forward for other hosts
    routers_dropped: int = 0  # routers not remembered: the bound was reached
    copies: int = 0  # flows that repeat another (routed copies on a trunk mirror)
    facts_dropped: int = 0  # facts about unknown hosts behind a router, evicted before the host was known
    bindings_evicted: int = 0  # address bindings forgotten at the bound (MAX_BINDINGS), oldest first
    external_dropped: int = 0  # ended flows of a device not summed: MAX_EXTERNAL_DEVICES were summed already
    flood_targets_dropped: int = 0  # reported floods forgotten at MAX_FLOOD_TARGETS (oldest first)


def unlisted_message(prefixes: Iterable[str]) -> str:
    """One sentence for the global IPv6 networks watched devices send from that the policy does not list."""
    listed = ", ".join(prefixes)
    return (
        f"watched devices send from global IPv6 addresses in {listed}, which no monitored network holds: "
        "the other hosts of those networks count as outside the site (DNS to the site's router as resolver "
        "bypass, the recorder as an unauthorized client); list them under monitored.networks in the policy"
    )
