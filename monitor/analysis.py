"""Classification and deep parsing of the few packets the flow table selects.

The flow table shows the analyzers only the first packets of each flow (and every packet of the
small control protocols). Here each such packet is given to the analyzer its ports or its content
point to; what the analyzers learn becomes *observations*: facts about a flow (its protocol label,
the name its destination was resolved from), about a device (vendor evidence, model, serial) and
events the detectors judge (a DNS lookup, a P2P registration, a port-mapping request, an RTSP
request). No analyzer error escapes: a malformed packet is counted and skipped.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.analyzers import AnalyzerError
from monitor.decode import PROTO_TCP, PROTO_UDP, Decoded
from monitor.flows import Flow
from monitor.pcapfile import PacketBatch

log = logging.getLogger(__name__)

# Protocols whose every packet is worth reading (small, control-plane): once a flow is labelled
# with one of these its inspection budget becomes unlimited.
CONTROL = frozenset(
    {
        "dns",
        "mdns",
        "llmnr",
        "dhcp",
        "ntp",
        "ssdp",
        "wsd",
        "sadp",
        "dhip",
        "rtsp",
        "mqtt",
        "stun",
        "pppp",
        "ezviz-p2p",
        "dahua-p2p",
        "upnp",
    }
)

# Candidate protocols by (transport, port), tried before content heuristics.
UDP_PORTS: dict[int, tuple[str, ...]] = {
    53: ("dns",),
    5353: ("mdns",),
    5355: ("llmnr",),
    67: ("dhcp",),
    68: ("dhcp",),
    123: ("ntp",),
    1900: ("ssdp",),
    3702: ("wsd",),
    37020: ("sadp",),
    37810: ("dhip",),
    5050: ("dhip",),
    8800: ("dahua-p2p",),
    6002: ("ezviz-p2p",),
    6003: ("ezviz-p2p",),
    31007: ("ezviz-p2p",),
    32100: ("pppp",),
    32108: ("pppp",),
    3478: ("stun",),
    3479: ("stun",),
    19302: ("stun",),
}
TCP_PORTS: dict[int, tuple[str, ...]] = {
    53: ("dns",),
    80: ("http",),
    8080: ("http",),
    8000: ("http",),
    8666: ("http",),
    49152: ("http",),
    554: ("rtsp",),
    8554: ("rtsp",),
    443: ("tls",),
    8443: ("tls",),
    1883: ("mqtt",),
    31006: ("mqtt",),
    8883: ("tls",),
    3478: ("stun",),
}
# Content heuristics, in order, when the ports say nothing (or were wrong).
UDP_GUESSES = (
    *("stun", "dtls", "dns", "rtcp", "rtp", "pppp", "dahua-p2p", "ezviz-p2p"),
    *("ssdp", "wsd", "sadp", "dhip"),
)
TCP_GUESSES = ("http", "rtsp", "tls", "mqtt")


@dataclass(slots=True)
class Observation:
    """Something an analyzer saw that a detector or the site model acts on."""

    kind: str  # "dns_query", "p2p", "igd_search", "port_mapping", "rtsp_request", "rtsp_transport", ...
    flow: Flow
    ts_ns: int
    from_src: bool  # sent by the flow's source (first sender)?
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class DeviceFact:
    """Evidence about the device that sent (or owns) an address: vendor, model, serial..."""

    mac: int
    ip: str
    kind: (
        str  # evidence kind: sadp, dhip, wsd, http_server, rtsp_server, realm, tls_cert, dhcp, mqtt_user ...
    )
    detail: str
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    protocol: str | None = None
    ts_ns: int = 0


class FlowApp:
    """Per-flow analyzer state: stream parsers per direction and what was learned."""

    __slots__ = ("done", "failures", "parsers", "tried", "webrtc")

    def __init__(self) -> None:
        self.parsers: dict[tuple[str, bool], Any] = {}
        self.tried = 0
        self.failures = 0
        self.webrtc: object | None = None  # handlers.WebRtcState of a STUN/DTLS/SRTP flow
        # Set when the analyzers want no more of this flow: packets the flow table had already
        # selected in the current batch are skipped.
        self.done = False


@dataclass(slots=True)
class AnalysisStats:
    packets: int = 0
    parse_errors: int = 0
    internal_errors: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)


class Resolutions:
    """Address -> name from DNS answers (bounded, most recent wins)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._names: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def add(self, ip: str, name: str, ts_ns: int) -> None:
        self._names.pop(ip, None)
        self._names[ip] = (name, ts_ns)
        if len(self._names) > self._max:
            self._names.popitem(last=False)

    def name_for(self, ip: str, before_ns: int | None = None) -> str | None:
        hit = self._names.get(ip)
        if hit is None or (before_ns is not None and hit[1] > before_ns):
            return None
        return hit[0]


Handler = Callable[["Analysis", Flow, bool, bytes, int], bool]


class Analysis:
    """Runs the analyzers over the packets the flow table selected in a batch."""

    def __init__(self) -> None:
        self.stats = AnalysisStats()
        self.resolutions = Resolutions()
        self.observations: list[Observation] = []
        self.device_facts: list[DeviceFact] = []
        self.now_ns = 0  # capture time of the packet being analysed
        # RTSP-negotiated media endpoints: (ip, port) -> (label, camera ip), so the RTP/RTCP
        # flows a SETUP announced are labelled when they start.
        self.expected_media: OrderedDict[tuple[str, int], tuple[str, str]] = OrderedDict()
        from monitor import handlers  # the per-protocol adapters (kept apart: one concept a module)

        self.handlers: dict[str, Handler] = handlers.HANDLERS
        self.detectors: dict[str, Callable[[bytes], bool]] = handlers.LOOKS_LIKE
        self._mux_rank = handlers.MUX_LABELS

    def run(
        self,
        batch: PacketBatch,
        d: Decoded,
        selected: list[tuple[Flow, list[int]]],
        more: Callable[[Flow, int], list[int]] | None = None,
    ) -> None:
        """Analyse the selected packets, in capture order across flows. With ``more`` (the flow table's),
        a WebRTC flow whose budget a packet raised also gets the rest of its packets in this batch."""
        self.observations = []
        self.device_facts = []
        if not selected:
            return
        work = [(pos, flow) for flow, positions in selected for pos in positions]
        work.sort(key=lambda item: item[0])
        for pos, flow in work:
            self._analyse(batch, d, pos, flow)
        if more is None:
            return
        rank = self._mux_rank
        for flow, _ in selected:
            # Only multiplexed STUN/DTLS/SRTP flows: ICE checks and a DTLS handshake may outrun the
            # first-batch budget before the first SRTP packet, which is what tells media from signalling.
            while flow.protocol in rank and flow.inspect_left != 0:
                app = flow.app
                if isinstance(app, FlowApp) and app.done:
                    break
                positions = more(flow, flow.inspect_left)
                if not positions:
                    break
                for pos in positions:
                    self._analyse(batch, d, pos, flow)

    def _analyse(self, batch: PacketBatch, d: Decoded, pos: int, flow: Flow) -> None:
        app = flow.app
        if isinstance(app, FlowApp) and app.done:
            return
        start = int(d.payload_off[pos])
        if start < 0:
            return
        end = min(int(d.l3_off[pos]) + int(d.ip_len[pos]), int(batch.caplen[pos]))
        if end <= start:
            return
        packet = batch.packet(pos)
        payload = packet[start:end]
        from_src = self._from_src(flow, d, pos)
        self.stats.packets += 1
        self.now_ns = ts = int(d.ts_ns[pos])
        try:
            self._dispatch(flow, from_src, payload, ts)
        except AnalyzerError:
            self.stats.parse_errors += 1
        except Exception:  # a bug in an analyzer must never stop the agent
            self.stats.internal_errors += 1
            log.exception("analyzer failure on flow %s -> %s", flow.src, flow.dst)

    @staticmethod
    def _from_src(flow: Flow, d: Decoded, pos: int) -> bool:
        k = flow.key
        from_a = (int(d.src_hi[pos]), int(d.src_lo[pos]), int(d.sport[pos])) == (k[3], k[4], k[5])
        return from_a == flow.a_sent_first

    def _dispatch(self, flow: Flow, from_src: bool, payload: bytes, ts: int) -> None:
        app = flow.app
        if not isinstance(app, FlowApp):
            app = flow.app = FlowApp()
        label = flow.protocol
        if label is not None and label in self.handlers:
            self.handlers[label](self, flow, from_src, payload, ts)
            return
        app.tried += 1
        for proto in self._candidates(flow, payload):
            handler = self.handlers.get(proto)
            if handler is None:
                continue
            try:
                if handler(self, flow, from_src, payload, ts):
                    self.label(flow, proto)
                    return
            except AnalyzerError:
                app.failures += 1
                continue

    def _candidates(self, flow: Flow, payload: bytes) -> list[str]:
        proto = flow.proto
        (_, sport), (_, dport) = flow.src, flow.dst
        ports = UDP_PORTS if proto == PROTO_UDP else TCP_PORTS if proto == PROTO_TCP else {}
        out: list[str] = [*ports.get(dport, ()), *ports.get(sport, ())]
        guesses = UDP_GUESSES if proto == PROTO_UDP else TCP_GUESSES if proto == PROTO_TCP else ()
        for g in guesses:
            if g not in out:
                check = self.detectors.get(g)
                if check is not None and check(payload):
                    out.append(g)
        return out

    def label(self, flow: Flow, proto: str) -> None:
        if flow.protocol is None:
            flow.protocol = proto
            self.stats.by_protocol[proto] = self.stats.by_protocol.get(proto, 0) + 1
        if proto in CONTROL:
            flow.inspect_left = -1
        elif proto in ("rtp", "rtcp", "tls"):
            # Media and encrypted sessions: a few more packets at most.
            flow.inspect_left = min(flow.inspect_left, 4) if flow.inspect_left >= 0 else 4

    def upgrade(self, flow: Flow, proto: str) -> None:
        """Label a STUN/DTLS/SRTP flow with ``proto`` if it ranks higher than its label (srtp > dtls >
        stun: what the flow finally carries); other labels are never replaced."""
        rank = self._mux_rank
        current = flow.protocol
        if current is None:
            self.label(flow, proto)
        elif current in rank and rank[proto] > rank[current]:
            flow.protocol = proto
            self.stats.by_protocol[proto] = self.stats.by_protocol.get(proto, 0) + 1

    def observe(self, kind: str, flow: Flow, from_src: bool, ts: int, **data: Any) -> None:
        self.observations.append(Observation(kind, flow, ts, from_src, data))

    def device_fact(self, flow: Flow, from_src: bool, kind: str, detail: str, **extra: Any) -> None:
        """Evidence about the device that sent this packet."""
        ip, _ = flow.src if from_src else flow.dst
        mac = flow.src_mac if from_src else flow.dst_mac
        self.device_facts.append(DeviceFact(mac, ip, kind, detail, ts_ns=self.now_ns, **extra))

    def expect_media(self, ip: str, port: int, label: str, camera_ip: str) -> None:
        self.expected_media.pop((ip, port), None)
        self.expected_media[(ip, port)] = (label, camera_ip)
        if len(self.expected_media) > 4096:
            self.expected_media.popitem(last=False)

    def announced_media(self, flow: Flow) -> str | None:
        """The label an RTSP SETUP announced for this UDP flow (rtp/rtcp), or None. Also notes which side is
        the camera (``flow.media_from_src``): the viewer may send the flow's first packet (a NAT "punch")."""
        if flow.proto != PROTO_UDP or not self.expected_media:
            return None
        (s_ip, s_port), (d_ip, d_port) = flow.src, flow.dst
        hit = self.expected_media.get((d_ip, d_port)) or self.expected_media.get((s_ip, s_port))
        if hit is None:
            return None
        flow.media_from_src = s_ip == hit[1]
        return hit[0]

    def on_new_flow(self, flow: Flow) -> None:
        """Label a new flow from what earlier packets announced (RTSP media ports, DNS names)."""
        label = self.announced_media(flow)
        if label is not None:
            self.label(flow, label)
        name = self.resolutions.name_for(flow.dst[0], flow.start_ns)
        if name is not None:
            flow.domain = name
