"""Classification and deep parsing of the few packets the flow table selects.

The flow table shows the analyzers only the first packets of each flow (and every packet of the
small control protocols). Here each such packet is given to the protocol its ports or its content
point to (``monitor/registry.py`` knows every protocol and where it is expected); the protocol's
handler labels the flow and reports what it learned as typed events (``monitor/events.py``): facts
about a device, and what the rules judge. No analyzer error escapes: a malformed packet is counted
and skipped.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from monitor.analyzers import AnalyzerError
from monitor.decode import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN, Decoded
from monitor.events import DeviceFact, Event
from monitor.evidence import EvidenceRecorder, keep_only_ring
from monitor.flows import CLIENT_DATA, Flow
from monitor.pcapfile import PacketBatch
from monitor.protocol import FlowApp
from monitor.reassembly import OrderStats, TcpOrder, seq_diff
from monitor.registry import Protocols, protocols

log = logging.getLogger(__name__)
T = TypeVar("T")

# RTP/RTCP endpoints announced by RTSP SETUPs and not yet seen (the oldest are forgotten first).
MAX_EXPECTED_MEDIA = 4096
# Sessions whose flows share state (each may keep its flows alive: a few kB each).
MAX_SHARED_STATES = 1024
# A datagram repeated within this long is a mirror's copy (a retry by the sender comes much later).
DUPLICATE_WINDOW_NS = 20_000_000
# Datagrams a flow remembers for that (the oldest first seen is forgotten).
RECENT_DATAGRAMS = 8


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
        self.evicted = 0  # the oldest answers forgotten at the bound

    def add(self, ip: str, name: str, ts_ns: int) -> None:
        self._names.pop(ip, None)
        self._names[ip] = (name, ts_ns)
        if len(self._names) > self._max:
            self._names.popitem(last=False)
            self.evicted += 1

    def name_for(self, ip: str, before_ns: int | None = None) -> str | None:
        hit = self._names.get(ip)
        if hit is None or (before_ns is not None and hit[1] > before_ns):
            return None
        return hit[0]


class Analysis:
    """Runs the protocol handlers over the packets the flow table selected in a batch; the
    :class:`~monitor.protocol.Context` they report through."""

    def __init__(self, registry: Protocols | None = None) -> None:
        self.stats = AnalysisStats()
        self.resolutions = Resolutions()
        self.events: list[Event] = []
        self.now_ns = 0  # capture time of the packet being analysed
        # RTSP-negotiated media endpoints: (ip, port) -> (label, camera ip), so the RTP/RTCP
        # flows a SETUP announced are labelled when they start.
        self.expected_media: OrderedDict[tuple[str, int], tuple[str, str]] = OrderedDict()
        self.media_evicted = 0  # expectations forgotten at the bound (MAX_EXPECTED_MEDIA)
        # State several flows share (Context.shared: the two connections of a tunnelled RTSP session).
        self.shared_states: OrderedDict[Hashable, object] = OrderedDict()
        self.shared_evicted = 0
        self.protocols = registry or protocols()
        self.order = OrderStats()
        # Evidence for alerts (issue 12): each analysed flow's recent packets, within global bounds.
        self.evidence = EvidenceRecorder()
        # Whether a flow has a watched device on either side (the engine's site model answers; alone,
        # every flow counts as watched). Decided at a flow's first analysed packet: the flows of
        # unwatched hosts (most of a busy network) keep no evidence and report no requests.
        self.involves_watched: Callable[[Flow], bool] = _every_flow
        # A vendor a device fact names is watched (a banner can make a flow's device watched).
        self.vendor_watched: Callable[[str], bool] = _every_vendor

    def run(
        self,
        batch: PacketBatch,
        d: Decoded,
        selected: list[tuple[Flow, list[int]]],
        more: Callable[[Flow, int], list[int]] | None = None,
    ) -> None:
        """Analyse the selected packets, in capture order across flows. With ``more`` (the flow table's),
        a flow whose budget a packet raised also gets the rest of its packets in this batch."""
        self.events = []
        if not selected:
            return
        data = batch.data.data  # a memoryview: slicing it costs a third of slicing the array
        self._analyse_all(batch, d, data, [(pos, flow) for flow, positions in selected for pos in positions])
        if more is None:
            return
        # A packet may have raised its flow's budget (a control protocol's label: every packet; a WebRTC
        # flow's DTLS handshake): the rest of its packets in this batch, which the flow table did not pick,
        # are read too, so the result does not depend on where batches end. They are read in capture order
        # across flows, round after round while budgets rise: the two connections of one session (an RTSP
        # tunnel's requests and answers) are then read in the order they were sent, whatever the batch size.
        flows = [flow for flow, _ in selected]
        while True:
            extra: list[tuple[int, Flow]] = []
            for flow in flows:
                app = flow.app
                if flow.inspect_left != 0 and not (app is not None and app.done):
                    extra += [(pos, flow) for pos in more(flow, flow.inspect_left)]
            if not extra:
                break
            self._analyse_all(batch, d, data, extra)
        # Request mode set inside the batch (the flow's label): the client's data the table did not pick, so
        # that what is read does not depend on where batches end.
        extra = [(pos, flow) for flow in flows if flow.client_side >= 0 for pos in more(flow, CLIENT_DATA)]
        if extra:
            self._analyse_all(batch, d, data, extra)

    def _analyse_all(
        self, batch: PacketBatch, d: Decoded, data: memoryview, work: list[tuple[int, Flow]]
    ) -> None:
        """Analyse the packets at these positions, each with its flow, in capture order."""
        work.sort(key=lambda item: item[0])
        for row, (_, flow) in zip(_rows(batch, d, [pos for pos, _ in work]), work, strict=True):
            self._analyse(data, row, flow)

    def run_link(self, batch: PacketBatch, d: Decoded) -> None:
        """Frames of the link-layer protocols (ARP) in the batch, after :meth:`run` (their events join
        that batch's)."""
        link = self.protocols.link
        if not link:
            return
        rows = np.flatnonzero(np.isin(d.ethertype, list(link)))
        for pos in rows.tolist():
            spec = link[int(d.ethertype[pos])]
            frame = batch.packet(pos)
            self.stats.packets += 1
            self.now_ns = ts = int(d.ts_ns[pos])
            try:
                spec.handler(self, int(d.src_mac[pos]), int(d.dst_mac[pos]), frame[int(d.l3_off[pos]) :], ts)
            except AnalyzerError:
                self.stats.parse_errors += 1
            except Exception:  # a bug in an analyzer must never stop the agent
                self.stats.internal_errors += 1
                log.exception("%s analyzer failure", spec.name)

    def _analyse(self, data: memoryview, row: _Row, flow: Flow) -> None:
        app = flow.app
        if app is None:
            app = flow.app = FlowApp()
        if app.done:
            return
        app.offered += 1
        if app.limit is not None and app.offered > app.limit:
            return
        keep = app.watched
        if keep is None:
            keep = app.watched = self.involves_watched(flow)
            if keep:
                self._request_mode(flow)  # by its ports, before a label (a request cut in tiny segments)
        ts, start, l3, l4, ip_len, flags, src_hi, src_lo, sport, offset, caplen, wirelen, linktype = row
        if start < 0:
            return
        proto = flow.key[2]
        if proto != PROTO_TCP and proto != PROTO_UDP:
            start = l4  # no ports: the protocol's handler gets the whole IP payload
        end = l3 + ip_len
        verify = True  # whether the TCP checksum can be checked: the whole segment was captured
        if end <= l4 and proto == PROTO_TCP:
            # An IP length that ends before the TCP header: a TSO/GRO or BIG TCP super-frame (IPv4 total
            # length 0, IPv6 payload length 0) merged by the capturing host. Its data runs to the captured
            # length (as Wireshark's "TSO" option reads it); its checksum is the NIC's to fill in.
            end, verify = caplen, False
        elif end > caplen:
            end, verify = caplen, False  # cut by the snap length
        k = flow.key
        from_src = ((src_hi, src_lo, sport) == (k[3], k[4], k[5])) == flow.a_sent_first
        if end <= start:
            if proto == PROTO_TCP:
                if flags & TCP_SYN:
                    # Where the data will start: later segments are then put in order from the first.
                    packet = data[offset : offset + caplen].tobytes()
                    seq = int.from_bytes(packet[l4 + 4 : l4 + 8], "big")
                    self._order(app, from_src).feed(seq, True, b"", 0, self.order)
                    if keep:  # evidence (issue 12): the handshake is kept with the flow's first packets
                        self.evidence.record(app, ts, packet, from_src, wirelen, linktype)
                elif (app.tcp_src is not None and app.tcp_src.suspect is not None) or (
                    app.tcp_dst is not None and app.tcp_dst.suspect is not None
                ):
                    # A bare ACK or FIN may confirm a segment whose checksum did not verify (reassembly.py).
                    packet = data[offset : offset + caplen].tobytes()
                    self._tcp(flow, app, packet, l4, flags, from_src, b"", ts, True)
            return
        packet = data[offset : offset + caplen].tobytes()
        payload = packet[start:end]
        if proto == PROTO_TCP and flow.skip_to is not None and from_src == _client_is_src(flow):
            seq = int.from_bytes(packet[l4 + 4 : l4 + 8], "big")
            if seq_diff(flow.skip_to, seq) >= len(payload):
                return  # inside a body the analyzer skips (the flow table picked it before it knew)
        self.stats.packets += 1
        if keep:  # evidence (issue 12): the packets the analyzers read, a small ring per flow (evidence.py)
            self.evidence.record(app, ts, packet, from_src, wirelen, linktype)
        if proto == PROTO_TCP:
            if verify and packet[l3] >> 4 == 4 and (packet[l3 + 6] & 0x3F or packet[l3 + 7]):
                verify = False  # an IPv4 first fragment: the rest of the segment is in the others
            # A checksum of 0 (never filled in: lab tools, some offloads) is unverified like a wrong one: the
            # segment is read once confirmed, but a copy whose checksum holds replaces it (else junk with a
            # zero checksum, which the receiver drops, would hide the real bytes from the analyzers).
            valid = not verify or _checksum_ok(packet, l3, l4, end)
            self._tcp(flow, app, packet, l4, flags, from_src, payload, ts, valid)
        elif not self._repeated(app, from_src, payload, ts):
            self._deliver(flow, app, from_src, [(payload, ts)])

    def _tcp(
        self,
        flow: Flow,
        app: FlowApp,
        packet: bytes,
        l4: int,
        flags: int,
        from_src: bool,
        payload: bytes,
        ts: int,
        valid: bool,
    ) -> None:
        """Each byte once, in order: mirror copies, retransmissions and reordering must not reach a stream
        parser (their counters say what was dropped or skipped); a segment whose checksum did not verify waits
        for a good copy of its bytes or for the sender or the receiver to go past it."""
        if flags & TCP_ACK:
            theirs = app.tcp_dst if from_src else app.tcp_src
            if theirs is not None and theirs.suspect is not None:
                # The other side's bytes this one acknowledges come first: they were sent before.
                ack = int.from_bytes(packet[l4 + 8 : l4 + 12], "big")
                self._deliver(flow, app, not from_src, theirs.confirm(ack, self.order))
        seq = int.from_bytes(packet[l4 + 4 : l4 + 8], "big")
        order = self._order(app, from_src)
        pieces = order.feed(seq, bool(flags & TCP_SYN), payload, ts, self.order, valid)
        self._deliver(flow, app, from_src, pieces)
        skip = flow.skip_to
        if skip is not None and order.next is not None and seq_diff(order.next, skip) > 0:
            flow.skip_to = None  # the stream went past the skipped body

    def _deliver(self, flow: Flow, app: FlowApp, from_src: bool, pieces: list[tuple[bytes, int]]) -> None:
        for piece, piece_ts in pieces:
            self.now_ns = piece_ts
            app.skip_offer = None  # an offer stands for the last piece only: it counts from its end
            try:
                self._dispatch(flow, from_src, piece, piece_ts)
            except AnalyzerError:
                self.stats.parse_errors += 1
            except Exception:  # a bug in an analyzer must never stop the agent
                self.stats.internal_errors += 1
                log.exception("analyzer failure on flow %s -> %s", flow.src, flow.dst)
        offer = app.skip_offer
        if offer is None:
            return
        app.skip_offer = None
        side, nbytes, accept = offer
        if flow.client_side < 0 or side != from_src or side != _client_is_src(flow) or nbytes <= 0:
            return
        order = app.tcp_src if side else app.tcp_dst
        if order is None or order.next is None or order.waiting:
            return  # segments wait: they may hold some of those bytes, so the handler reads on
        # The client's segments that end before this are not shown any more (an upload's body).
        flow.skip_to = order.skip(nbytes)
        accept(nbytes)

    def on_flow_end(self, flow: Flow) -> None:
        """A flow ended: segments still waiting behind a hole will never be read (a mirror that lost one),
        and what its TCP sequencers held no longer counts against the budget of held bytes. Its analyzers'
        state goes (its evidence stays): requests left unanswered name the flow, and would hold it in a
        reference cycle."""
        app = flow.app
        if app is None:
            return
        keep_only_ring(app)
        for order in (app.tcp_src, app.tcp_dst):
            if order is not None and order.waiting:
                self.order.holes += 1
                order.drop(self.order)

    @staticmethod
    def _order(app: FlowApp, from_src: bool) -> TcpOrder:
        order = app.tcp_src if from_src else app.tcp_dst
        if order is None:
            order = TcpOrder()
            if from_src:
                app.tcp_src = order
            else:
                app.tcp_dst = order
        return order

    def _repeated(self, app: FlowApp, from_src: bool, payload: bytes, ts: int) -> bool:
        """The same datagram from the same side moments ago: a mirror's copy, not a second message."""
        # (side, content hash, length) as one integer: the length fits in 32 bits, below it the side's bit.
        key = hash(payload) << 33 | len(payload) << 1 | from_src
        last: int | None = None
        seen = app.datagrams  # (key, ts, key, ts, ...): the last RECENT_DATAGRAMS keys, in order first seen
        if seen is None:
            app.datagrams = (key, ts)
        else:
            keys = seen[::2]
            if key in keys:
                at = 2 * keys.index(key) + 1
                last = seen[at]
                app.datagrams = (*seen[:at], ts, *seen[at + 1 :])  # a key seen again keeps its place
            else:
                seen += (key, ts)
                app.datagrams = seen[2:] if len(seen) > 2 * RECENT_DATAGRAMS else seen
        if last is not None and 0 <= ts - last < DUPLICATE_WINDOW_NS:
            self.order.duplicates += 1
            return True
        return False

    def _dispatch(self, flow: Flow, from_src: bool, payload: bytes, ts: int) -> None:
        app = flow.app
        if app is None:
            app = flow.app = FlowApp()
        specs = self.protocols.specs
        label = flow.protocol
        if label is not None and label in specs:
            specs[label].handler(self, flow, from_src, payload, ts)
            return
        app.tried += 1
        for proto in self._candidates(flow, payload):
            try:
                if specs[proto].handler(self, flow, from_src, payload, ts):
                    self.label(flow, proto)
                    return
            except AnalyzerError:
                app.failures += 1
                continue

    def _candidates(self, flow: Flow, payload: bytes) -> list[str]:
        reg = self.protocols
        (_, sport), (_, dport) = flow.src, flow.dst
        ports = reg.ports.get(flow.proto)
        out: list[str] = [*ports.get(dport, ()), *ports.get(sport, ())] if ports else []
        for name, sniff in reg.guesses.get(flow.proto, ()):
            if name not in out and sniff(payload):
                out.append(name)
        return out

    def label(self, flow: Flow, proto: str, taken: int = 0) -> None:
        """Label the flow (its first label stays) and set its budget; ``taken``: packets the flow table
        already took that the analyzers have not been offered yet (a label given before the first one)."""
        if flow.protocol is None:
            flow.protocol = proto
            self.stats.by_protocol[proto] = self.stats.by_protocol.get(proto, 0) + 1
        reg = self.protocols
        self._request_mode(flow)
        if proto in reg.control:
            flow.inspect_left = -1
        else:
            more = reg.after_label.get(proto)
            if more is not None:
                # Media and encrypted sessions: a few more packets at most.
                flow.inspect_left = min(flow.inspect_left, more) if flow.inspect_left >= 0 else more
                app = flow.app
                if app is None:
                    app = flow.app = FlowApp()
                limit = app.offered + taken + more
                app.limit = limit if app.limit is None else min(app.limit, limit)

    def _request_mode(self, flow: Flow) -> None:
        """A request/answer protocol (ProtocolSpec.requests) on a TCP flow of a watched device: the client's
        data is shown to the analyzers for the whole connection (flows.py, Flow.client_side), so that the
        exploit matchers read every request, however late in a kept-alive connection, however segmented."""
        if flow.proto != PROTO_TCP or not self.watched(flow):
            return
        specs = self.protocols.specs
        label = flow.protocol
        if label is None:
            # Unlabelled: by the protocols expected on its ports (HTTP on 80, DVRIP on 37777), so that a
            # request whose first segments are too short to recognise is still read past the budget.
            ports = self.protocols.ports.get(PROTO_TCP, {})
            names = (*ports.get(flow.dst[1], ()), *ports.get(flow.src[1], ()))
            wanted = any(specs[name].requests for name in names)
        else:
            spec = specs.get(label)
            wanted = spec is not None and spec.requests
        if not wanted:
            flow.client_side, flow.skip_to = -1, None  # labelled something else (TLS on 8000...)
        elif flow.client_side < 0:
            flow.client_side = 0 if flow.opener_is_src == flow.a_sent_first else 1

    # ---------------------------------------------------------------- Context (for the handlers)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def watched(self, flow: Flow) -> bool:
        app = flow.app
        return app is None or app.watched is not False

    def fact(
        self,
        flow: Flow,
        from_src: bool,
        kind: str,
        detail: str,
        *,
        vendor: str | None = None,
        model: str | None = None,
        firmware: str | None = None,
        serial: str | None = None,
        protocol: str | None = None,
    ) -> None:
        ip, _ = flow.src if from_src else flow.dst
        mac = flow.src_mac if from_src else flow.dst_mac
        app = flow.app
        if vendor is not None and app is not None and app.watched is False and self.vendor_watched(vendor):
            app.watched = True  # a banner named a watched vendor: from now on this flow is watched
            self._request_mode(flow)
        self.events.append(
            DeviceFact(
                self.now_ns,
                mac,
                ip,
                kind,
                detail,
                vendor=vendor,
                model=model,
                firmware=firmware,
                serial=serial,
                protocol=protocol,
            )
        )

    def upgrade(self, flow: Flow, name: str) -> None:
        """Label a STUN/DTLS/SRTP flow with ``name`` if it ranks higher than its label (srtp > dtls >
        stun: what the flow finally carries); other labels are never replaced."""
        rank = self.protocols.mux_rank
        current = flow.protocol
        if current is None:
            self.label(flow, name)
        elif current in rank and rank[name] > rank[current]:
            flow.protocol = name
            self.stats.by_protocol[name] = self.stats.by_protocol.get(name, 0) + 1

    def resolved(self, ip: str, name: str, ts_ns: int) -> None:
        self.resolutions.add(ip, name, ts_ns)

    def handover(self, flow: Flow, name: str, from_src: bool, payload: bytes, ts_ns: int) -> None:
        flow.protocol = name
        self.stats.by_protocol[name] = self.stats.by_protocol.get(name, 0) + 1
        self.label(flow, name)  # the new label's budget and request mode
        self.protocols.specs[name].handler(self, flow, from_src, payload, ts_ns)

    def shared(self, key: Hashable, cls: type[T]) -> T:
        states = self.shared_states
        value = states.get(key)
        if isinstance(value, cls):
            states.move_to_end(key)
            return value
        value = states[key] = cls()
        if len(states) > MAX_SHARED_STATES:
            states.popitem(last=False)
            self.shared_evicted += 1
        return value

    # ---------------------------------------------------------------- media announced by RTSP

    def expect_media(self, ip: str, port: int, label: str, camera_ip: str) -> None:
        self.expected_media.pop((ip, port), None)
        self.expected_media[(ip, port)] = (label, camera_ip)
        if len(self.expected_media) > MAX_EXPECTED_MEDIA:
            self.expected_media.popitem(last=False)
            self.media_evicted += 1

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
            self.label(flow, label, taken=1)  # its first packet was taken when the flow was created
        name = self.resolutions.name_for(flow.dst[0], flow.start_ns)
        if name is not None:
            flow.domain = name


# What _analyse reads of one packet: ts_ns, payload_off, l3_off, l4_off, ip_len, tcp_flags, src_hi, src_lo,
# sport, then the batch's offset, caplen, wirelen and linktype.
_Row = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]


def _rows(batch: PacketBatch, d: Decoded, positions: list[int]) -> Iterator[_Row]:
    """The columns of these packets as Python ints, gathered once per batch: reading numpy scalars one by
    one (a dozen per analysed packet) cost more than the gather of every column for the short-flows
    benchmark, and a gather of only the analysed rows costs nothing for long flows."""
    idx = np.asarray(positions, dtype=np.int64)
    columns = (
        d.ts_ns, d.payload_off, d.l3_off, d.l4_off, d.ip_len, d.tcp_flags, d.src_hi, d.src_lo, d.sport,
        batch.offsets, batch.caplen, batch.wirelen, batch.linktype,
    )  # fmt: skip
    # An iterator: zip hands out one tuple at a time (and reuses it), where a list of them put a batch's
    # worth of tuples in the cycle collector's youngest generation.
    return zip(*(column[idx].tolist() for column in columns), strict=True)


def _client_is_src(flow: Flow) -> bool:
    """Whether the client of a flow in request mode (Flow.client_side) is its source."""
    return (flow.client_side == 0) == flow.a_sent_first


def _checksum_ok(packet: bytes, l3: int, l4: int, end: int) -> bool:
    """Whether the TCP checksum of the segment ``packet[l4:end]`` verifies (RFC 9293 3.1, RFC 8200 8.1).

    The one's complement sum of 16-bit words is the big-endian integer of the bytes modulo 0xFFFF (2**16 is
    1 modulo 0xFFFF), which ``int`` computes in C: a few microseconds for a full segment, on the analysed
    packets only."""
    addrs = packet[l3 + 12 : l3 + 20] if packet[l3] >> 4 == 4 else packet[l3 + 8 : l3 + 40]
    segment = packet[l4:end]
    length = end - l4
    if length & 1:
        segment += b"\0"
    total = int.from_bytes(addrs, "big") % 0xFFFF + 6 + length + int.from_bytes(segment, "big") % 0xFFFF
    return total % 0xFFFF == 0


def _every_flow(flow: Flow) -> bool:
    return True


def _every_vendor(vendor: str) -> bool:
    return True
