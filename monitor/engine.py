"""The engine: decoded batches in, flow records and alerts out. No I/O, no clock reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.alerts import Alert, AlertGate
from monitor.decode import decode
from monitor.detectors.device import new_device_alert
from monitor.detectors.egress import check_flow
from monitor.devices import Device, Inventory, is_unicast_mac
from monitor.flows import Flow, FlowConfig, FlowTable
from monitor.pcapfile import PacketBatch
from monitor.policy import SitePolicy
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

    def __init__(self, policy: SitePolicy, vendors: VendorTable, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.policy = policy
        self.flows = FlowTable(self.config.flows)
        self.inventory = Inventory(vendors, self.config.max_devices)
        self.gate = AlertGate(self.config.realert_after_s)
        self.stats = EngineStats()
        self.now_ns = 0

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
        for flow in created:
            self._on_new_flow(flow, out)
        self._touch_devices()
        out.flows.extend(ended)
        self.now_ns = max(self.now_ns, int(d.ts_ns.max()))
        out.flows.extend(self.flows.expire(self.now_ns))
        return out

    def tick(self, now_ns: int) -> Events:
        """Advance time without packets (a live source that is quiet)."""
        self.now_ns = max(self.now_ns, now_ns)
        return Events(flows=self.flows.expire(self.now_ns))

    def finish(self) -> Events:
        return Events(flows=self.flows.flush(self.now_ns))

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
        dst_dev = self._device(flow.dst_mac, dst_ip if flow.dst_counts[0] else None, flow.start_ns, out)
        if src_dev is not None and len(src_dev.peers) < 1024:
            src_dev.peers.add(dst_ip)
        if dst_dev is not None and len(dst_dev.peers) < 1024:
            dst_dev.peers.add(src_ip)
        opener = src_dev if flow.opener_is_src else dst_dev
        alert = check_flow(flow, opener, self.policy, observer)
        if alert is not None:
            self._emit(alert, out)

    def _device(self, mac: int, ip: str | None, ts: int, out: Events) -> Device | None:
        if not is_unicast_mac(mac):
            return None
        inv = self.inventory
        dev, _new = inv.observe(mac, ts)
        if ip is None:
            ip = dev.ips[0] if dev.ips else None
        else:
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
                    self._emit(new_device_alert(dev, ip, ts, self.config.observer, why), out)
        return dev

    def _emit(self, alert: Alert, out: Events) -> None:
        if self.gate.admit(alert):
            out.alerts.append(alert)
            self.stats.alerts[alert.rule.id] = self.stats.alerts.get(alert.rule.id, 0) + 1


def _start(flow: Flow) -> int:
    return flow.start_ns
