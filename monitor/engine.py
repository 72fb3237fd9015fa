"""The engine: decoded batches in, flow records and alerts out. No I/O, no clock reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.alerts import Alert, AlertGate
from monitor.analysis import Analysis, DeviceFact, Observation
from monitor.decode import decode
from monitor.detectors import is_site_address
from monitor.detectors.device import new_device_alert
from monitor.detectors.dns import check_query
from monitor.detectors.egress import check_flow
from monitor.detectors.p2p import check_p2p
from monitor.detectors.stream import (
    check_media_flow,
    check_rtsp_request,
    check_transport,
    is_sustained_upstream,
)
from monitor.detectors.upnp import check_upnp
from monitor.devices import Device, Inventory, is_unicast_mac
from monitor.flows import Flow, FlowConfig, FlowTable
from monitor.pcapfile import PacketBatch
from monitor.policy import SitePolicy
from monitor.vendors.clouds import CloudCatalogue
from monitor.vendors.oui import VendorTable


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
    flow_packets: int = 0
    alerts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Events:
    """What one call produced: flows that ended and alerts that passed the gate."""

    flows: list[Flow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


class Engine:
    """Feed it batches in capture order; call `finish` at the end of input."""

    def __init__(
        self,
        policy: SitePolicy,
        vendors: VendorTable,
        config: EngineConfig | None = None,
        clouds: CloudCatalogue | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.policy = policy
        self.flows = FlowTable(self.config.flows)
        self.inventory = Inventory(vendors, self.config.max_devices)
        self.gate = AlertGate(self.config.realert_after_s)
        self.stats = EngineStats()
        self.now_ns = 0
        self.analysis = Analysis()
        self.clouds = clouds if clouds is not None else CloudCatalogue.load()
        self._pending: list[Alert] = []
        self._external: dict[int, list[int]] = {}
        # Flows between a watched device and outside the site, until judged for sustained upstream video
        # (P2P media, unlabelled streaming): id(flow) -> (flow, the site side is the source).
        self._upstream: dict[int, tuple[Flow, bool]] = {}
        self._upstream_judged_ns = 0

    def feed(self, batch: PacketBatch) -> Events:
        out = Events()
        if len(batch) == 0:
            return out
        d = decode(batch)
        st = self.stats
        st.packets += d.n
        st.bytes += int(d.wirelen.sum())
        # Every packet is in exactly one of: a flow, non-IP, a later fragment, truncated.
        st.ip_packets += int(d.is_ip.sum())
        st.non_ip += int((~d.is_ip & ~d.truncated).sum())
        st.fragments += int(d.fragment.sum())
        st.later_fragments += int(d.later_fragment.sum())
        st.truncated += int((d.truncated & ~d.later_fragment).sum())
        st.flow_packets += int(d.ok.sum())

        created, ended = self.flows.update(d)
        # The flow table groups by key; alerts and first-seen times follow capture time.
        created.sort(key=_start)
        an = self.analysis
        for flow in created:
            an.on_new_flow(flow)
        an.run(batch, d, self.flows.inspect, self.flows.more)
        for flow in created:
            if flow.domain is None:
                # A DNS answer earlier in this same batch.
                flow.domain = an.resolutions.name_for(flow.dst[0], flow.start_ns)
        # New flows, facts and observations in capture order: a device attributed by a later packet
        # must not change how an earlier one is judged (nor may batch boundaries).
        nf, nd = len(created), len(an.device_facts)
        stream: list[tuple[int, int, Flow | DeviceFact | Observation | _Reply]] = [
            *((f.start_ns, i, f) for i, f in enumerate(created)),
            *((f.ts_ns, nf + i, f) for i, f in enumerate(an.device_facts)),
            *((o.ts_ns, nf + nd + i, o) for i, o in enumerate(an.observations)),
            *(
                (ts, nf + nd + len(an.observations) + i, _Reply(f))
                for i, (f, ts) in enumerate(self.flows.replied)
            ),
        ]
        stream.sort(key=_first_two)
        for ts, _, item in stream:
            if isinstance(item, Flow):
                self._on_new_flow(item, out)
            elif isinstance(item, _Reply):
                flow = item.flow
                self._device(flow.dst_mac, flow.dst[0], ts, out)
            elif isinstance(item, DeviceFact):
                self._apply_facts([item], out)
            else:
                self._on_observations([item], out)
        self._label_devices(self.flows.inspect)
        self._touch_devices()
        self.now_ns = max(self.now_ns, int(d.ts_ns.max()))
        self._judge_upstream(out)
        ended.extend(self.flows.expire(self.now_ns))
        self._on_ended(ended, out)
        out.flows.extend(ended)
        self._flush_alerts(out)
        return out

    def tick(self, now_ns: int) -> Events:
        """Advance time without packets (a live source that is quiet)."""
        self.now_ns = max(self.now_ns, now_ns)
        out = Events(flows=self.flows.expire(self.now_ns))
        self._on_ended(out.flows, out)
        self._flush_alerts(out)
        return out

    def finish(self) -> Events:
        out = Events(flows=self.flows.flush(self.now_ns))
        self._on_ended(out.flows, out)
        self._flush_alerts(out)
        return out

    # ---------------------------------------------------------------- protocol intelligence

    def _apply_facts(self, facts: list[DeviceFact], out: Events) -> None:
        for fact in facts:
            if not is_unicast_mac(fact.mac):
                continue
            dev, _ = self.inventory.observe(fact.mac, self.now_ns or 0)
            dev.add_evidence(fact.kind, fact.detail)
            if fact.vendor and dev.vendor is None:
                # A randomised or unknown MAC: the traffic says who made the device.
                dev.vendor = fact.vendor
                dev.manufacturer = VENDOR_NAMES.get(fact.vendor, fact.vendor.title())
            for name in ("model", "firmware", "serial"):
                value = getattr(fact, name)
                if value and getattr(dev, name) is None:
                    setattr(dev, name, value)
            if fact.protocol:
                dev.protocols.add(fact.protocol)
            self._device(fact.mac, fact.ip if fact.ip in dev.ips else None, dev.last_seen_ns, out)

    def _label_devices(self, inspected: list[tuple[Flow, list[int]]]) -> None:
        for flow, _ in inspected:
            if flow.protocol is None:
                continue
            for mac in (flow.src_mac, flow.dst_mac):
                dev = self.inventory.get(mac) if mac else None
                if dev is not None:
                    dev.protocols.add(flow.protocol)

    def _watched_side(self, flow: Flow, sender_is_src: bool) -> Device | None:
        """The device on that side of the flow if it is watched, else None."""
        mac = flow.src_mac if sender_is_src else flow.dst_mac
        ip = (flow.src if sender_is_src else flow.dst)[0]
        dev = self.inventory.get(mac) if mac else None
        if dev is not None and dev.ips and ip not in dev.ips:
            dev = None  # the MAC is a router's: the address behind it is someone else
        if dev is not None and dev.watched:
            return dev
        if self.policy.is_watched(ip, dev.vendor if dev is not None else None):
            return dev if dev is not None else _ANONYMOUS
        return None

    def _on_observations(self, observations: list[Observation], out: Events) -> None:
        observer = self.config.observer
        for obs in observations:
            kind = obs.kind
            if kind == "dns_query":
                dev = self._watched_side(obs.flow, obs.from_src)
                if dev is not None:
                    for alert in check_query(obs, _real(dev), self.policy, self.clouds, observer):
                        self._emit(alert, out)
            elif kind == "p2p":
                dev = self._watched_side(obs.flow, obs.from_src)
                if dev is not None:
                    p2p_alert = check_p2p(obs, _real(dev), self.policy, observer)
                    if p2p_alert is not None:
                        self._emit(p2p_alert, out)
            elif kind in ("igd_search", "port_mapping"):
                dev = self._watched_side(obs.flow, obs.from_src)
                if dev is not None:
                    self._emit(check_upnp(obs, _real(dev), observer), out)
            elif kind == "rtsp_request":
                camera = self._watched_side(obs.flow, not obs.from_src)
                if camera is not None:
                    rtsp_alert = check_rtsp_request(obs, _real(camera), self.policy, observer)
                    if rtsp_alert is not None:
                        self._emit(rtsp_alert, out)
            elif kind == "rtsp_transport":
                self._expect_media(obs)
                cam_is_src = not obs.from_src if obs.data.get("request") else obs.from_src
                camera = self._watched_side(obs.flow, cam_is_src)
                if camera is not None:
                    t_alert = check_transport(obs, _real(camera), self.policy, observer)
                    if t_alert is not None:
                        self._emit(t_alert, out)
            elif kind == "media":
                self._check_media(obs.flow, obs.from_src, obs.ts_ns, out, obs.data.get("protocol"))

    def _expect_media(self, obs: Observation) -> None:
        t = obs.data["transport"]
        flow = obs.flow
        # The RTSP client is the side that sent requests: the flow's source for a request.
        client_is_src = obs.from_src if obs.data.get("request") else not obs.from_src
        client_ip = (flow.src if client_is_src else flow.dst)[0]
        camera_ip = (flow.dst if client_is_src else flow.src)[0]
        if t.client_port is not None:
            dest = t.destination or client_ip
            self.analysis.expect_media(dest, t.client_port[0], "rtp", camera_ip)
            self.analysis.expect_media(dest, t.client_port[1], "rtcp", camera_ip)
        if t.server_port is not None:
            self.analysis.expect_media(camera_ip, t.server_port[0], "rtp", camera_ip)
            self.analysis.expect_media(camera_ip, t.server_port[1], "rtcp", camera_ip)

    def _check_media(
        self, flow: Flow, sender_is_src: bool, ts_ns: int, out: Events, protocol: str | None = None
    ) -> None:
        dev = self._watched_side(flow, sender_is_src)
        if dev is None:
            return
        alert = check_media_flow(
            flow, sender_is_src, _real(dev), self.policy, self.config.observer, ts_ns, protocol
        )
        if alert is not None:
            self._emit(alert, out)

    def external_traffic(self, live: bool = True) -> dict[int, list[int]]:
        """Per device MAC: [bytes out, bytes in, packets out, packets in] with peers outside the site.

        Ended flows are accumulated as they end; live flows are added on each call (a scrape), so
        a long flow counts before it ends.
        """
        totals = {mac: list(v) for mac, v in self._external.items()}
        if live:
            for flow in self.flows.flows():
                self._account_external(flow, totals)
        return totals

    def _account_external(self, flow: Flow, into: dict[int, list[int]]) -> None:
        (s_ip, _), (d_ip, _) = flow.src, flow.dst
        s_site, d_site = is_site_address(self.policy, s_ip), is_site_address(self.policy, d_ip)
        if s_site == d_site:
            return
        mac = flow.src_mac if s_site else flow.dst_mac
        if not mac or (mac not in into and len(into) >= MAX_EXTERNAL_DEVICES):
            return
        (sp, sb), (dp, db) = flow.src_counts, flow.dst_counts
        out_b, out_p, in_b, in_p = (sb, sp, db, dp) if s_site else (db, dp, sb, sp)
        acc = into.setdefault(mac, [0, 0, 0, 0])
        acc[0] += out_b
        acc[1] += in_b
        acc[2] += out_p
        acc[3] += in_p

    def _watch_upstream(self, flow: Flow) -> None:
        """Follow a flow between a watched device and outside the site until it proves to be video."""
        (s_ip, _), (d_ip, _) = flow.src, flow.dst
        s_site = is_site_address(self.policy, s_ip)
        if s_site == is_site_address(self.policy, d_ip) or len(self._upstream) >= MAX_UPSTREAM_FLOWS:
            return
        if self._watched_side(flow, s_site) is not None:
            self._upstream[id(flow)] = (flow, s_site)

    def _judge_upstream(self, out: Events) -> None:
        # Once per second of capture time: a P2P media session (PPPP, PTCP, a relay) can last for hours,
        # so it is judged while it runs, not only when it ends. The set is small: only the external flows
        # of watched devices, dropped once judged or ended.
        if not self._upstream or self.now_ns - self._upstream_judged_ns < NS:
            return
        self._upstream_judged_ns = self.now_ns
        for key, (flow, site_is_src) in list(self._upstream.items()):
            if is_sustained_upstream(flow, site_is_src):
                del self._upstream[key]
                self._check_media(flow, site_is_src, flow.last_ns, out)

    def _on_ended(self, ended: list[Flow], out: Events) -> None:
        for flow in ended:
            self._upstream.pop(id(flow), None)
            self._account_external(flow, self._external)
            camera_is_src = flow.media_from_src if flow.protocol == "rtp" else None
            for sender_is_src in (True, False):
                sent, _ = flow.src_counts if sender_is_src else flow.dst_counts
                if camera_is_src is not None and sender_is_src != camera_is_src:
                    continue  # the viewer's side of announced RTP: its NAT "punch" packets, not video
                # RTP this side sent, or unlabelled bulk at camera rate.
                if sent and (flow.protocol == "rtp" or is_sustained_upstream(flow, sender_is_src)):
                    self._check_media(flow, sender_is_src, flow.start_ns, out)

    def _touch_devices(self) -> None:
        # Last-seen per MAC from the flow table's per-key aggregates: a handful of updates per
        # batch, whatever its size.
        touch = self.inventory.touch
        for mac, ts in self.flows.last_senders:
            touch(mac, ts)

    def _on_new_flow(self, flow: Flow, out: Events) -> None:
        observer = self.config.observer
        src_ip, _ = flow.src
        dst_ip, _ = flow.dst
        # An address belongs to a MAC only when that MAC sent from it: the receiving side's
        # MAC may be a router's, carrying every remote destination.
        src_dev = self._device(flow.src_mac, src_ip, flow.start_ns, out)
        # The responder's address is learned when it first sends (see _on_reply).
        dst_dev = self._device(flow.dst_mac, None, flow.start_ns, out)
        if src_dev is not None and len(src_dev.peers) < 1024:
            src_dev.peers.add(dst_ip)
        if dst_dev is not None and len(dst_dev.peers) < 1024:
            dst_dev.peers.add(src_ip)
        opener = src_dev if flow.opener_is_src else dst_dev
        alert = check_flow(flow, opener, self.policy, observer)
        if alert is not None:
            self._emit(alert, out)
        self._watch_upstream(flow)
        if flow.media_from_src is None:
            # In capture order, a SETUP earlier in this same batch counts too (the batch-start pass
            # in Analysis.on_new_flow ran before it was seen).
            self.analysis.announced_media(flow)
        if flow.protocol == "rtp":  # announced by an RTSP SETUP
            camera_is_src = flow.media_from_src
            self._check_media(flow, True if camera_is_src is None else camera_is_src, flow.start_ns, out)

    def _device(self, mac: int, ip: str | None, ts: int, out: Events) -> Device | None:
        if not is_unicast_mac(mac):
            return None
        inv = self.inventory
        dev, _new = inv.observe(mac, ts)
        if ip is None:
            # Seen only as a receiver (or a fact without an address): announced once it sends.
            return dev
        inv.add_ip(dev, ip)
        if not dev.watched:
            why = ""
            if ip is not None and self.policy.is_monitored_ip(ip):
                why = "it is on a monitored network"
            elif dev.vendor is not None and dev.vendor in self.policy.watched_vendors:
                why = f"its vendor ({dev.vendor}) is on the watch list"
            if why:
                dev.watched = True
                if not dev.announced:
                    dev.announced = True
                    # A device in the site's asset register is watched like any other, just not "new".
                    if not self.policy.is_known_device(dev.mac):
                        self._emit(new_device_alert(dev, ip, ts, self.config.observer, why), out)
        return dev

    def _emit(self, alert: Alert, out: Events) -> None:
        self._pending.append(alert)

    def _flush_alerts(self, out: Events) -> None:
        # Gate in capture-time order whatever order the detectors ran in.
        pending, self._pending = self._pending, []
        pending.sort(key=_alert_time)
        for alert in pending:
            if self.gate.admit(alert):
                out.alerts.append(alert)
                self.stats.alerts[alert.rule.id] = self.stats.alerts.get(alert.rule.id, 0) + 1


def _start(flow: Flow) -> int:
    return flow.start_ns


# Bound on the per-device external traffic table (a flood of spoofed MACs must not grow it).
NS = 1_000_000_000
MAX_EXTERNAL_DEVICES = 10_000
MAX_UPSTREAM_FLOWS = 10_000  # external flows of watched devices followed at once (a flood must not grow it)


def _alert_time(alert: Alert) -> int:
    return alert.timestamp_ns


# A watched endpoint with no inventory entry (no MAC on this link type): detectors get None.
_ANONYMOUS = Device(0, 0)


def _real(dev: Device) -> Device | None:
    return None if dev is _ANONYMOUS else dev


VENDOR_NAMES = {
    "hikvision": "Hikvision",
    "dahua": "Dahua",
    "ezviz": "EZVIZ",
    "imou": "Imou",
    "uniview": "Uniview",
    "xiongmai": "Xiongmai",
    "tiandy": "Tiandy",
    "axis": "Axis",
    "huawei": "Huawei",
}


def _first_two(item: tuple[int, int, object]) -> tuple[int, int]:
    return item[0], item[1]


@dataclass(frozen=True, slots=True)
class _Reply:
    """A flow's responder sent its first packet (its address is now known)."""

    flow: Flow
