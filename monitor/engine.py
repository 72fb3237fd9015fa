"""The engine: decoded batches in, flow records and alerts out. No I/O, no clock reads.

Per batch: the flow table counts every packet and picks the few the analyzers read; the analyzers
report typed events; the engine puts the flow table's events (new flows, first replies), the
analyzers' and the clock's into capture order and hands each one to the components registered for
its type: the site model first (inventory, watched devices), then the RTSP media expectations, then
every rule module that consumes it (``monitor/registry.py``). Rules return alerts; the gate lets the
first of each incident through, in capture-time order.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from monitor.alerts import Alert, AlertGate
from monitor.analysis import Analysis
from monitor.decode import PROTO_TCP, PROTO_UDP, Decoded, decode
from monitor.defrag import Defragmenter, Packet
from monitor.devices import Inventory
from monitor.events import (
    AddressClaim,
    Clock,
    DeviceFact,
    Event,
    FlowEnded,
    FlowEvent,
    FlowStarted,
    ResponderSeen,
    RouterAdvert,
    StreamTransport,
)
from monitor.evidence import attach as attach_evidence
from monitor.flows import Flow, FlowConfig, FlowTable, addr_str
from monitor.pcapfile import PacketBatch
from monitor.policy import SitePolicy
from monitor.register import AssetRegister
from monitor.registry import Rulebook, rulebook
from monitor.site import Site
from monitor.vendors.clouds import CloudCatalogue
from monitor.vendors.oui import VendorTable

if TYPE_CHECKING:
    from monitor.rules import RuleModule

Judge = Callable[[Event], Sequence[Alert]]


class _TunnelOwners:
    """Watched devices send no tunnel of a site's: a GRE or IP-in-IP tunnel one sends to the Internet,
    wrapping packets from no site's address, is its own traffic, read as its outer packet (`decode` asks only
    of that kind). Mirai's GRE floods (greip, greeth) wrap random addresses and MACs, which, looked through,
    made the camera a router and its flood a thousand strangers' flows; mirrors (ERSPAN, VXLAN) and a site's
    VPN, whose inner packets are the site's, are always looked through."""

    def __init__(self, site: Site, watched_oui: Callable[[int], bool]) -> None:
        self._site = site
        self._watched_oui = watched_oui

    def mac(self, mac: int) -> bool:
        """A MAC of a watched make, even one the site model took for a router's: the few packets of a flood
        that drew a private inner source are looked through, and their sources behind the camera's MAC made it
        a "router", after which the rest of its flood was looked through too. (No camera vendor's router
        tunnels packets from the Internet to the Internet.)"""
        return self._watched_oui(mac)

    def address(self, version: int, src: tuple[int, int]) -> bool:
        """A monitored address (even behind a router's MAC), but not a known router's own."""
        ip = addr_str(*src, version)
        return ip not in self._site.router_ips and self._site.is_monitored(ip)


#: Decisions the rules scheduled (a pull's, a scan's, a new device's...) waiting at once. Each rule bounds its
#: own state, but a timer outlives the entry it names (its pull answered, its entry evicted): without a bound
#: the heap was rate x hold (50,001 for 100,000 RTSP clients in 20 s). Past it the one scheduled first is
#: taken at once (not the one due first: a short wait scheduled after many long ones would be decided before
#: what it waits for), counted as the ``timers`` table's evictions.
MAX_TIMERS: Final = 65_536


@dataclass(frozen=True, slots=True)
class EngineConfig:
    observer: str = "default/replay"
    flows: FlowConfig = field(default_factory=FlowConfig)
    max_devices: int = 50_000
    realert_after_s: float = 86_400.0


@dataclass(slots=True)
class EngineStats:
    packets: int = 0
    bytes: int = 0
    ip_packets: int = 0
    non_ip: int = 0
    fragments: int = 0
    later_fragments: int = 0
    truncated: int = 0
    # IPv6 packets whose extension header chain is longer than the decoder walks (decode.IPV6_MAX_EXT):
    # complete packets, not put in a flow.
    ipv6_ext_overflow: int = 0
    # Packets of a link type the decoder does not read (802.11, PPP, ...), by link type number; not in
    # `non_ip` (decode.undecoded_message() words them).
    undecoded_linktypes: dict[int, int] = field(default_factory=dict)
    # Packets whose flow is the inner packet of a tunnel or a remote mirror (IP in IP, GTP-U, GRE, ERSPAN,
    # VXLAN): counted in the other counters as that inner packet.
    decapsulated: int = 0
    flow_packets: int = 0
    # TCP flows that ended with only one direction seen: an asymmetric mirror (or one that drops), where
    # replies, handshakes and closes could not be judged.
    tcp_one_direction: int = 0
    # IP reassembly (monitor/defrag.py; the counters above count the fragments as captured): datagrams
    # completed; dropped for an overlap whose bytes differ; given up after 30 s of capture time; given up at
    # the bound (oldest first); dropped for reaching past 65,535 bytes or their own end. A datagram given up
    # or dropped puts its first fragment back into its flow unchanged.
    defrag_reassembled: int = 0
    defrag_conflicts: int = 0
    defrag_timeouts: int = 0
    defrag_evicted: int = 0
    defrag_oversized: int = 0
    alerts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Events:
    """What one call produced: flows that ended and alerts that passed the gate."""

    flows: list[Flow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


# At one capture instant, the flow table's news comes first, then what devices said about themselves,
# then what the rules judge, then first replies: a fact must be known before an event of the same
# instant is judged.
_ORDER: dict[type[Event], int] = {
    FlowStarted: 0,
    AddressClaim: 1,
    RouterAdvert: 1,
    DeviceFact: 1,
    ResponderSeen: 3,
}
_JUDGED = 2
_ABOUT_A_FLOW = (FlowStarted, FlowEnded, FlowEvent)
# How much a port looks like a service's: a well-known or protocol port, an unknown one, an ephemeral one.
_SERVICE, _UNKNOWN, _EPHEMERAL = 2, 1, 0


class Engine:
    """Feed it batches in capture order; call `finish` at the end of input."""

    def __init__(
        self,
        policy: SitePolicy,
        vendors: VendorTable,
        config: EngineConfig | None = None,
        clouds: CloudCatalogue | None = None,
        rules: Rulebook | None = None,
        register: AssetRegister | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.policy = policy
        self.flows = FlowTable(self.config.flows)
        self.inventory = Inventory(vendors, self.config.max_devices)
        self.gate = AlertGate(self.config.realert_after_s)
        self.stats = EngineStats()
        self.now_ns = 0
        self.defrag = Defragmenter()
        self._defrag_now = -(1 << 62)  # the largest capture time the defragmenter has been shown
        self.analysis = Analysis()
        # Evidence rings (issue 12): no more than there are live flows, whatever the byte budget.
        self.analysis.evidence.max_rings = min(self.analysis.evidence.max_rings, self.config.flows.max_flows)
        self.clouds = clouds if clouds is not None else CloudCatalogue.load()
        self.site = Site(
            policy, self.inventory, self.clouds, self.config.observer, self._dispatch, self._schedule
        )
        self.site.service_ports = self.analysis.protocols.ports
        if register is not None:  # the asset register: its devices are known (monitor/rules/register.py)
            self.site.register = register
        self._vendors = vendors
        self._oui_memo: dict[int, bool] = {}
        self._tunnel_owners = _TunnelOwners(self.site, self._watched_oui)
        self.analysis.involves_watched = self._involves_watched
        self.analysis.vendor_watched = self._vendor_watched
        self._pending: list[Alert] = []
        # Events to dispatch once capture time passes their ts_ns: a heap of (ts_ns, order, event), and the
        # timers still waiting by order, in the order scheduled (one taken early leaves a stale heap entry).
        self._timers: list[tuple[int, int, Event]] = []
        self._waiting: dict[int, Event] = {}
        self._timer_seq = 0
        self.timers_early = 0  # decisions taken before their time because MAX_TIMERS were waiting
        # Event type -> who handles it: first the site model and the media expectations, then the rules.
        self._site_routes: dict[type[Event], list[Judge]] = {
            FlowStarted: [self._flow_started],
            ResponderSeen: [self._responder_seen],
            DeviceFact: [self._device_fact],
            AddressClaim: [self._address_claim],
            RouterAdvert: [self._router_advert],
            StreamTransport: [self._expect_media],
            FlowEnded: [self._flow_ended],
        }
        self._rule_routes: dict[type[Event], list[Judge]] = {}
        self._rule_modules: list[RuleModule] = []
        for module in (rules or rulebook()).modules:
            instance = module(self.site)
            self._rule_modules.append(instance)
            for kind in module.consumes:
                self._rule_routes.setdefault(kind, []).append(instance.judge)
        self._routes = {
            kind: [*self._site_routes.get(kind, ()), *self._rule_routes.get(kind, ())]
            for kind in {*self._site_routes, *self._rule_routes}
        }

    def _involves_watched(self, flow: Flow) -> bool:
        """A watched device on either side of the flow (a superset of what ``Site.watched`` says, cheapest
        checks first): a monitored address, a known device that is watched or of a watched vendor, or,
        for a host the site model has not met yet (its first packets are in this batch), its MAC's vendor."""
        site = self.site
        src_ip, dst_ip = flow.src[0], flow.dst[0]
        if site.is_monitored(src_ip) or site.is_monitored(dst_ip):
            return True
        watched_vendors = self.policy.watched_vendors
        devices = self.inventory
        src_mac, dst_mac = flow.src_mac, flow.dst_mac  # (properties: read once, this runs for every flow)
        for mac, ip in ((src_mac, src_ip), (dst_mac, dst_ip)):
            host = site.host_mac(mac, ip)
            dev = devices.get(host) if host else None
            if dev is not None and (dev.watched or dev.vendor in watched_vendors):
                return True
        if not watched_vendors:
            return False
        return self._watched_oui(src_mac) or self._watched_oui(dst_mac)

    def _watched_oui(self, mac: int) -> bool:
        """The MAC's registered vendor is watched (memoised per MAC, bounded: the answer never changes)."""
        memo = self._oui_memo
        known = memo.get(mac)
        if known is None:
            known = bool(mac) and self._vendors.lookup(mac).key in self.policy.watched_vendors
            if len(memo) >= 65536:
                memo.clear()
            memo[mac] = known
        return known

    def _decode(self, batch: PacketBatch) -> Decoded:
        return decode(batch, self._tunnel_owners)

    def _vendor_watched(self, vendor: str) -> bool:
        return vendor in self.policy.watched_vendors

    def feed(self, batch: PacketBatch) -> Events:
        out = Events()
        if len(batch) == 0:
            return out
        d = self._decode(batch)
        st = self.stats
        st.packets += d.n
        st.bytes += int(d.wirelen.sum())
        # Every packet is in exactly one of: a flow, non-IP, a later fragment, truncated, an IPv6 chain
        # too long, an undecoded link type.
        st.ip_packets += int(d.is_ip.sum())
        undecoded = d.undecoded_linktype
        if undecoded.any():
            for lt, count in zip(*np.unique(batch.linktype[undecoded], return_counts=True), strict=True):
                st.undecoded_linktypes[int(lt)] = st.undecoded_linktypes.get(int(lt), 0) + int(count)
            st.non_ip += int((~d.is_ip & ~d.truncated & ~undecoded).sum())
        else:
            st.non_ip += int((~d.is_ip & ~d.truncated).sum())
        st.fragments += int(d.fragment.sum())
        st.later_fragments += int(d.later_fragment.sum())
        st.truncated += int((d.truncated & ~d.later_fragment).sum())
        st.ipv6_ext_overflow += int(d.ext_overflow.sum())
        st.decapsulated += int(d.decapsulated.sum())
        st.flow_packets += int(d.ok.sum())
        ts_max = int(d.ts_ns.max())
        if d.fragment.any() or self._defrag_due(ts_max):
            rebuilt = self._defragment(batch, d)
            if rebuilt is not None:
                batch, d = rebuilt, self._decode(rebuilt)
        else:
            self._defrag_now = max(self._defrag_now, ts_max)
        ended = self._flows(batch, d) if len(batch) else []
        self.now_ns = max(self.now_ns, ts_max)
        self._clock()
        ended.extend(self.flows.expire(self.now_ns))
        self._end(ended)
        out.flows.extend(ended)
        self._flush_alerts(out)
        return out

    def _flows(self, batch: PacketBatch, d: Decoded) -> list[Flow]:
        """The flow table, analyzers and rules over a non-empty batch; returns the flows that ended."""
        created, ended = self.flows.update(d)

        # The flow table groups by key; alerts and first-seen times follow capture time.
        created.sort(key=_start)
        an = self.analysis
        for flow in created:
            an.on_new_flow(flow)
        an.run(batch, d, self.flows.inspect, self.flows.more)
        an.run_link(batch, d)
        for flow in created:
            if flow.domain is None:
                # A DNS answer earlier in this same batch.
                flow.domain = an.resolutions.name_for(flow.dst[0], flow.start_ns)
        # New flows, facts and events in capture order: a device attributed by a later packet must not
        # change how an earlier one is judged (nor may batch boundaries).
        stream: list[tuple[int, int, int, Event]] = [
            *((f.start_ns, 0, i, FlowStarted(f.start_ns, f)) for i, f in enumerate(created)),
            *((e.ts_ns, _ORDER.get(type(e), _JUDGED), i, e) for i, e in enumerate(an.events)),
            *((ts, 3, i, ResponderSeen(ts, f)) for i, (f, ts) in enumerate(self.flows.replied)),
        ]
        stream.sort(key=_FIRST_THREE)
        timers = self._timers
        for item in stream:
            if timers and (timers[0][0] < item[0] or len(self._waiting) > MAX_TIMERS):
                self._fire(item[0])
            self._dispatch(item[3])
        self.site.label_devices(flow for flow, _ in self.flows.inspect)
        self._touch_devices()
        return ended

    # ---------------------------------------------------------------- IP reassembly

    def _defrag_due(self, ts_max: int) -> bool:
        """A batch without fragments: does a pending datagram time out in it?"""
        deadline = self.defrag.next_deadline()
        return deadline is not None and max(self._defrag_now, ts_max) > deadline

    def _defragment(self, batch: PacketBatch, d: Decoded) -> PacketBatch | None:
        """The batch with its IP fragments (a tunnel's or a remote mirror's inner ones too) taken out and
        given to the defragmenter in capture order; each completed datagram put where the fragment that
        completed it was, each released first fragment where its datagram was given up. Timeouts are decided
        per packet position, by the running maximum of capture time, so that nothing depends on where
        batches end."""
        defrag = self.defrag
        ts = batch.ts_ns
        running = np.maximum.accumulate(np.maximum(ts, self._defrag_now))
        rows = np.flatnonzero(d.fragment & ~d.truncated)
        inserted: list[tuple[int, Packet]] = []  # (position, packet), in order

        def expire(now_ns: int) -> None:
            for deadline, packet in defrag.expire(now_ns):
                inserted.append((int(np.searchsorted(running, deadline, side="right")), packet))

        taken = np.zeros(len(batch), dtype=bool)
        if rows.size:
            cols = (
                d.vlan_outer[rows], d.vlan_inner[rows], d.src_mac[rows], d.dst_mac[rows], d.l3_off[rows],
                batch.offsets[rows], batch.caplen[rows], batch.wirelen[rows], ts[rows], running[rows],
                batch.linktype[rows],
            )  # fmt: skip
            data = batch.data
            for i, (vo, vi, smac, dmac, l3, start, cap, wire, t, now, lt) in zip(
                rows.tolist(), zip(*(c.tolist() for c in cols), strict=True), strict=True
            ):
                expire(now)
                frame = data[start : start + cap].tobytes()
                took, packets = defrag.add((vo, vi, smac, dmac), frame, l3, t, now, wire, lt)
                if took:
                    taken[i] = True
                    inserted.extend((i, p) for p in packets)
        expire(int(running[-1]))
        self._defrag_now = int(running[-1])
        self._defrag_stats()
        if not inserted and not taken.any():
            return None
        return _rebuild(batch, taken, inserted)

    def _defrag_stats(self) -> None:
        ds, st = self.defrag.stats, self.stats
        st.defrag_reassembled = ds.reassembled
        st.defrag_conflicts = ds.conflicts
        st.defrag_timeouts = ds.timeouts
        st.defrag_evicted = ds.evicted
        st.defrag_oversized = ds.oversized

    def tick(self, now_ns: int) -> Events:
        """Advance time without packets (a live source that is quiet)."""
        self.now_ns = max(self.now_ns, now_ns)
        released: list[Flow] = []
        if self._defrag_due(now_ns):
            # A datagram whose other fragments never came: its first fragment goes to its flow now, not at
            # the source's next packet.
            self._defrag_now = max(self._defrag_now, now_ns)
            held = [(0, packet) for _, packet in self.defrag.expire(self._defrag_now)]
            self._defrag_stats()
            if held:
                batch = _rebuild(None, None, held)
                released = self._flows(batch, self._decode(batch))
        self._clock()
        out = Events(flows=released + self.flows.expire(self.now_ns))
        self._end(out.flows)
        self._flush_alerts(out)
        return out

    def finish(self) -> Events:
        """The end of input: every flow ends, every alert held back goes out."""
        held = self.defrag.flush()
        ended: list[Flow] = []
        if held:
            # First fragments of datagrams never completed: into their flows as they were captured.
            batch = _rebuild(None, None, [(0, p) for p in held])
            ended = self._flows(batch, self._decode(batch))
        out = Events(flows=ended + self.flows.flush(self.now_ns))
        self._end(out.flows)
        self._fire(None)
        self._dispatch(Clock(self.now_ns, final=True))
        self._flush_alerts(out)
        return out

    def external_traffic(self, live: bool = True) -> dict[int, list[int]]:
        """Per device MAC: [bytes out, bytes in, packets out, packets in] with peers outside the site.

        Ended flows are accumulated as they end; live flows are added on each call (a scrape), so
        a long flow counts before it ends.
        """
        totals = {mac: list(v) for mac, v in self.site.external.items()}
        if live:
            for flow in self.flows.flows():
                self.site.account_external(flow, totals)
        return totals

    def evictions(self) -> dict[str, int]:
        """What each bounded table forgot or refused at its bound since the start, by table (the flow
        table's own count is ``flows.stats.evicted``). docs/design.md §6 lists the bounds."""
        site = self.site.stats
        out = {
            "devices": self.inventory.evicted,
            "dns_resolutions": self.analysis.resolutions.evicted,
            "media_expectations": self.analysis.media_evicted,
            "shared_states": self.analysis.shared_evicted,
            "incidents": self.gate.evicted,
            "address_bindings": site.bindings_evicted,
            "routers": site.routers_dropped,
            "pending_facts": site.facts_dropped,
            "external_traffic": site.external_dropped,
            "flood_targets": site.flood_targets_dropped,
            "tcp_held_segments": self.analysis.order.over_budget,
            "timers": self.timers_early,
        }
        for module in self._rule_modules:
            out.update(module.evictions())
        return out

    # ---------------------------------------------------------------- routing

    def _schedule(self, event: Event) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (event.ts_ns, self._timer_seq, event))
        self._waiting[self._timer_seq] = event

    def _fire(self, before_ns: int | None) -> None:
        """Dispatch the scheduled events due strictly before ``before_ns`` (all of them with None): a
        timer fires before the first event after it, so what it sees does not depend on batch sizes. Then,
        while more than MAX_TIMERS wait, the one scheduled first at once."""
        timers, waiting = self._timers, self._waiting
        while timers and (before_ns is None or timers[0][0] < before_ns):
            _, order, event = heapq.heappop(timers)
            if waiting.pop(order, None) is not None:
                self._dispatch(event)
        while len(waiting) > MAX_TIMERS:
            # The one scheduled first, taken at once as if its time had come (the rule decides on what it has
            # seen so far; its alert keeps the decision's time): never dropped, each names a pull, a scan or a
            # device to report.
            self.timers_early += 1
            self._dispatch(waiting.pop(next(iter(waiting))))
        if len(timers) > 2 * MAX_TIMERS:
            timers[:] = [t for t in timers if t[1] in waiting]  # the stale entries of timers taken early
            heapq.heapify(timers)

    def _clock(self) -> None:
        self._fire(self.now_ns)
        self._dispatch(Clock(self.now_ns))

    def _dispatch(self, event: Event) -> None:
        routes = self._routes
        if isinstance(event, _ABOUT_A_FLOW) and event.flow.copy:
            # A routed copy of a conversation already judged: the site model learns from it, the rules
            # do not judge it twice.
            routes = self._site_routes
        for judge in routes.get(type(event), ()):
            alerts = judge(event)
            if alerts:
                # Evidence (issue 12): the alerts of severity 4+ take the packets of the event's flow.
                self._pending.extend(attach_evidence(alerts, event))

    def _end(self, ended: list[Flow]) -> None:
        for flow in ended:
            self._dispatch(FlowEnded(flow.last_ns, flow))

    def _flow_started(self, event: Event) -> Sequence[Alert]:
        assert isinstance(event, FlowStarted)
        flow = event.flow
        self._orient(flow)
        self.site.on_flow_started(flow)
        if flow.media_from_src is None:
            # In capture order, a SETUP earlier in this same batch counts too (the batch-start pass in
            # Analysis.on_new_flow ran before it was seen).
            self.analysis.announced_media(flow)
        return ()

    def _orient(self, flow: Flow) -> None:
        """Who opened a session whose opening was not seen (running before capture started, or a mirror
        that lost it): the side on the service port, not whoever happened to send first."""
        if flow.opener is not None:
            return
        if flow.proto == PROTO_TCP:
            if flow.opening_seen:
                return
        elif flow.proto != PROTO_UDP:
            return
        (_, s_port), (_, d_port) = flow.src, flow.dst
        s, d = self._service_rank(flow.proto, s_port), self._service_rank(flow.proto, d_port)
        # A datagram's first sender normally opened its flow: only a service port answering an ephemeral
        # one says otherwise (a DNS or NTP reply met first).
        if s > d and (flow.proto == PROTO_TCP or (s == _SERVICE and d == _EPHEMERAL)):
            flow.opener = False

    def _service_rank(self, proto: int, port: int) -> int:
        if self.site.is_service_port(proto, port):
            return _SERVICE
        return _EPHEMERAL if port >= 32768 else _UNKNOWN

    def _responder_seen(self, event: Event) -> Sequence[Alert]:
        assert isinstance(event, ResponderSeen)
        self.site.on_responder(event.flow, event.ts_ns)
        return ()

    def _address_claim(self, event: Event) -> Sequence[Alert]:
        assert isinstance(event, AddressClaim)
        self.site.on_claim(event)
        return ()

    def _router_advert(self, event: Event) -> Sequence[Alert]:
        assert isinstance(event, RouterAdvert)
        self.site.on_router(event)
        return ()

    def _device_fact(self, event: Event) -> Sequence[Alert]:
        assert isinstance(event, DeviceFact)
        self.site.on_fact(event)
        return ()

    def _expect_media(self, event: Event) -> Sequence[Alert]:
        """Where the media of an RTSP SETUP will flow, so those flows are labelled when they start."""
        assert isinstance(event, StreamTransport)
        t = event.transport
        flow = event.flow
        client_is_src = event.client_is_src
        client_ip = (flow.src if client_is_src else flow.dst)[0]
        camera_ip = (flow.dst if client_is_src else flow.src)[0]
        expect = self.analysis.expect_media
        if t.client_port is not None:
            dest = t.destination or client_ip
            expect(dest, t.client_port[0], "rtp", camera_ip)
            expect(dest, t.client_port[1], "rtcp", camera_ip)
        if t.server_port is not None:
            expect(camera_ip, t.server_port[0], "rtp", camera_ip)
            expect(camera_ip, t.server_port[1], "rtcp", camera_ip)
        return ()

    def _flow_ended(self, event: Event) -> Sequence[Alert]:
        assert isinstance(event, FlowEnded)
        flow = event.flow
        self.site.account_external(flow)
        self.analysis.on_flow_end(flow)
        if flow.key[2] == PROTO_TCP and not (flow.pkts_a and flow.pkts_b):
            self.stats.tcp_one_direction += 1
        return ()

    def _touch_devices(self) -> None:
        # Last-seen per MAC from the flow table's per-key aggregates: a handful of updates per
        # batch, whatever its size.
        touch = self.inventory.touch
        for mac, ts in self.flows.last_senders:
            touch(mac, ts)

    def _flush_alerts(self, out: Events) -> None:
        # Gate in capture-time order whatever order the rules ran in.
        pending, self._pending = self._pending, []
        pending.sort(key=_alert_time)
        for alert in pending:
            # Repeats are suppressed; what passes joins its device's incident, or is folded into it.
            passed = self.gate.let_through(alert)
            if passed is not None:
                out.alerts.append(passed)
                self.stats.alerts[alert.rule.id] = self.stats.alerts.get(alert.rule.id, 0) + 1


def _rebuild(
    batch: PacketBatch | None, taken: npt.NDArray[np.bool_] | None, inserted: list[tuple[int, Packet]]
) -> PacketBatch:
    """``batch`` without its ``taken`` rows, with each inserted packet put before the row at its position."""
    frames = [p.frame for _, p in inserted]
    extra = np.frombuffer(b"".join(frames), dtype=np.uint8)
    lengths = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    starts = np.zeros(len(frames), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    ins_pos = np.fromiter((pos for pos, _ in inserted), dtype=np.int64, count=len(inserted))
    ins_ts = np.fromiter((p.ts_ns for _, p in inserted), dtype=np.int64, count=len(inserted))
    ins_wire = np.fromiter((p.wirelen for _, p in inserted), dtype=np.int64, count=len(inserted))
    ins_lt = np.fromiter((p.linktype for _, p in inserted), dtype=np.uint16, count=len(inserted))
    if batch is None:
        data, offsets, caplen, wirelen, ts, lt = extra, starts, lengths, ins_wire, ins_ts, ins_lt
    else:
        assert taken is not None
        keep = np.flatnonzero(~taken)
        data, offsets = batch.data, batch.offsets[keep]
        if len(frames):
            # Only the batch's own span is copied (its data may be a view of a larger mapped window).
            lo, hi = int(batch.offsets.min()), int((batch.offsets + batch.caplen).max())
            data = np.concatenate((data[lo:hi], extra))
            offsets, starts = offsets - lo, starts + (hi - lo)
        offsets = np.concatenate((offsets, starts))
        caplen = np.concatenate((batch.caplen[keep], lengths))
        wirelen = np.concatenate((batch.wirelen[keep], ins_wire))
        ts = np.concatenate((batch.ts_ns[keep], ins_ts))
        lt = np.concatenate((batch.linktype[keep], ins_lt))
        # Kept rows after what is inserted at their position; inserted packets in the order given.
        pos = np.concatenate((keep * 2 + 1, ins_pos * 2))
        order = np.argsort(pos, kind="stable")
        offsets, caplen, wirelen, ts, lt = offsets[order], caplen[order], wirelen[order], ts[order], lt[order]
    arrays = (data, offsets, caplen, wirelen, ts, lt)
    for a in arrays:
        a.flags.writeable = False
    return PacketBatch(*arrays)


def _start(flow: Flow) -> int:
    return flow.start_ns


def _alert_time(alert: Alert) -> int:
    return alert.timestamp_ns


# (ts_ns, order, index) of a stream item, in C: a Python key function was a visible part of each batch.
_FIRST_THREE = operator.itemgetter(0, 1, 2)
