"""Bidirectional flow table: keys, counters, timeouts, TCP close, bounded size.

A batch is aggregated per flow key with numpy, so a flow's packets in a batch cost one
Python-level update. Only keys whose packets may change the flow's life (TCP FIN/RST, a SYN
after a close, a gap longer than the idle timeout, a flow outliving the active timeout) are
replayed packet by packet. A flow's fate depends only on its own packets' timestamps, so the
records are the same whatever the batch size; only the moment a record is emitted varies.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from monitor.communityid import community_id
from monitor.decode import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Decoded

if TYPE_CHECKING:
    from monitor.protocol import FlowApp

NS = 1_000_000_000
INSPECT_PACKETS = 12
# `FlowTable.more`'s limit for the client's data of a flow in request mode (Flow.client_side).
CLIENT_DATA = -2

# (vlan_outer, vlan_inner, proto, a_hi, a_lo, a_port, b_hi, b_lo, b_port); a <= b.
FlowKey = tuple[int, int, int, int, int, int, int, int, int]
# The flow table's memo of integers (FlowTable._same) holds at most MAX_SHARED_INTS, and at most
# SHARED_INTS_PER_FLOW per flow of the table's bound (a small table's memo stays small); full, it is emptied.
MAX_SHARED_INTS = 65_536
SHARED_INTS_PER_FLOW = 4

_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_MIX3 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Timeouts (seconds) and the bound on the number of live flows."""

    tcp_idle_timeout: float = 300.0
    udp_idle_timeout: float = 60.0
    other_idle_timeout: float = 60.0
    active_timeout: float = 1800.0
    tcp_close_linger: float = 5.0
    max_flows: int = 200_000

    def __post_init__(self) -> None:
        for name in ("tcp_idle_timeout", "udp_idle_timeout", "other_idle_timeout", "active_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.tcp_close_linger < 0:
            raise ValueError("tcp_close_linger must be >= 0")
        if self.max_flows < 1:
            raise ValueError("max_flows must be >= 1")


def addr_bytes(hi: int, lo: int, version: int) -> bytes:
    """Packed address from the (hi, lo) halves used in flow keys."""
    if version == 4:
        return (lo & 0xFFFFFFFF).to_bytes(4, "big")
    return ((hi << 64) | lo).to_bytes(16, "big")


def addr_str(hi: int, lo: int, version: int) -> str:
    if version == 4:
        return socket.inet_ntoa((lo & 0xFFFFFFFF).to_bytes(4, "big"))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


_PINGS: Final = frozenset({PROTO_ICMP, PROTO_ICMPV6})


def _echo_requests(proto: np.ndarray, icmp_type: np.ndarray) -> npt.NDArray[np.bool_]:
    """Which packets are ICMP (type 8) or ICMPv6 (type 128) echo requests."""
    echo: npt.NDArray[np.bool_] = ((proto == PROTO_ICMP) & (icmp_type == 8)) | (
        (proto == PROTO_ICMPV6) & (icmp_type == 128)
    )
    return echo


def _count_echo(flow: Flow, a: int, b: int) -> None:
    echo = flow.echo
    if echo is None:
        flow.echo = [a, b]
    else:
        echo[0] += a
        echo[1] += b


class Flow:
    """One bidirectional flow. Side `a` is the lower (address, port) of the key."""

    __slots__ = (
        "a_sent_first",
        "app",
        "bytes_a",
        "bytes_b",
        "client_side",
        "closed_ns",
        "copy",
        "domain",
        "dst",
        "echo",
        "end_reason",
        "fin_a",
        "fin_b",
        "first_flags",
        "first_ttl",
        "flags_a",
        "flags_b",
        "icmp_code",
        "icmp_type",
        "inspect_left",
        "ip_bytes_a",
        "ip_bytes_b",
        "ip_version",
        "key",
        "last_ns",
        "mac_a",
        "mac_b",
        "media_from_src",
        "opener",
        "pkts_a",
        "pkts_b",
        "protocol",
        "reply_flags",
        "server_name",
        "skip_to",
        "src",
        "start_ns",
    )

    def __init__(self, key: FlowKey, ts: int, a_sent_first: bool, ip_version: int) -> None:
        self.key = key
        self.start_ns = ts
        self.last_ns = ts
        self.a_sent_first = a_sent_first
        self.ip_version = ip_version
        self.pkts_a = self.pkts_b = 0
        self.bytes_a = self.bytes_b = 0
        self.ip_bytes_a = self.ip_bytes_b = 0
        self.flags_a = self.flags_b = 0
        self.first_flags = 0
        self.reply_flags = 0  # TCP flags of the responder's first packet (a SYN-ACK accepts, a RST refuses)
        self.first_ttl = 0  # TTL / hop limit of the first packet: a routed copy of it has a lower one
        self.fin_a = self.fin_b = False
        self.closed_ns: int | None = None
        self.mac_a = self.mac_b = 0
        self.icmp_type = self.icmp_code = -1
        # ICMP echo requests each side (a, b) sent; None until one: a flow's key has no echo identifier, so
        # its packet counts mix one side's pings with its replies to the other's.
        self.echo: list[int] | None = None
        self.protocol: str | None = None
        self.domain: str | None = None  # the name the destination was resolved from (DNS, before the flow)
        self.server_name: str | None = None  # the TLS SNI, when the flow carries one
        self.end_reason = ""
        # Packets still to show the analyzers (-1: every packet, for control protocols); the
        # bulk of a video flow is never looked at past its first packets.
        self.inspect_left = INSPECT_PACKETS
        # Past that budget, the data segments one side sends keep being shown: the client's requests on a
        # request/answer protocol of a watched device (ProtocolSpec.requests), so that a request late in a
        # kept-alive connection or cut in many segments is still read. -1: off; else the `from_b` value of
        # the client (0: side a). Answers (a download, an MJPEG stream) are not shown.
        self.client_side = -1
        # While set, the client's segments ending at or before this sequence number are not shown: the
        # body of an upload the analyzer does not need (it said so through FlowApp.skip_offer).
        self.skip_to: int | None = None
        self.app: FlowApp | None = None  # the analyzers' state for this flow
        # For media an RTSP SETUP announced: whether the camera (the video's sender) is the source. The
        # viewer may send the first packet (FFmpeg's NAT "punch"), so who started the flow does not tell.
        self.media_from_src: bool | None = None
        # Who opened the flow when its opening was not seen (a session running before capture started):
        # True for the first sender, False for the other side, None to judge by the first packet's flags.
        self.opener: bool | None = None
        # This flow repeats another: the same conversation seen again on another VLAN (a routed copy on a
        # trunk mirror). One conversation is one flow for alerting purposes: rules judge the original.
        self.copy = False
        # Orientation: "src" is the sender of the first packet seen (docs/design.md §4.3). Written out once:
        # every new flow is looked at by the site model and the rules.
        # The address strings are interned: a host's address is in many live flows, and in the site model's
        # tables, as one string (49 + its length bytes each) rather than one per flow and side.
        a = (sys.intern(addr_str(key[3], key[4], ip_version)), key[5])
        b = (sys.intern(addr_str(key[6], key[7], ip_version)), key[8])
        self.src, self.dst = (a, b) if a_sent_first else (b, a)

    @property
    def proto(self) -> int:
        return self.key[2]

    @property
    def src_mac(self) -> int:
        return self.mac_a if self.a_sent_first else self.mac_b

    @property
    def dst_mac(self) -> int:
        return self.mac_b if self.a_sent_first else self.mac_a

    @property
    def src_counts(self) -> tuple[int, int]:
        return (self.pkts_a, self.bytes_a) if self.a_sent_first else (self.pkts_b, self.bytes_b)

    @property
    def src_echo_requests(self) -> int:
        """ICMP echo requests the flow's source sent (a ping flood's packets)."""
        echo = self.echo
        return 0 if echo is None else echo[0 if self.a_sent_first else 1]

    @property
    def dst_counts(self) -> tuple[int, int]:
        return (self.pkts_b, self.bytes_b) if self.a_sent_first else (self.pkts_a, self.bytes_a)

    @property
    def packets(self) -> int:
        return self.pkts_a + self.pkts_b

    @property
    def bytes(self) -> int:
        return self.bytes_a + self.bytes_b

    @property
    def opener_is_src(self) -> bool:
        """Who opened the flow: the first sender, unless its first packet was a SYN-ACK (or the side that
        opened a session already running was decided otherwise: :attr:`opener`)."""
        if self.opener is not None:
            return self.opener
        syn_ack = TCP_SYN | TCP_ACK
        return not (self.proto == PROTO_TCP and self.first_flags & syn_ack == syn_ack)

    @property
    def opening_seen(self) -> bool:
        """The flow's first packet opened it: any non-TCP flow, or TCP starting with a SYN."""
        return self.proto != PROTO_TCP or bool(self.first_flags & TCP_SYN)

    def community_id(self) -> str:
        k = self.key
        a = addr_bytes(k[3], k[4], self.ip_version)
        b = addr_bytes(k[6], k[7], self.ip_version)
        proto = k[2]
        if proto in (PROTO_ICMP, PROTO_ICMPV6):
            s, d = (a, b) if self.a_sent_first else (b, a)
            return community_id(s, d, proto, icmp_type=self.icmp_type, icmp_code=self.icmp_code)
        return community_id(a, b, proto, k[5], k[8])


@dataclass(slots=True)
class FlowStats:
    created: int = 0
    ended_idle: int = 0
    ended_active: int = 0
    ended_closed: int = 0
    evicted: int = 0
    hash_collisions: int = 0


class FlowTable:
    """Live flows; `update` takes a decoded batch and returns the flows it created and ended."""

    def __init__(self, config: FlowConfig | None = None) -> None:
        self.config = c = config or FlowConfig()
        self._idle = {PROTO_TCP: int(c.tcp_idle_timeout * NS), 17: int(c.udp_idle_timeout * NS)}
        self._other_idle = int(c.other_idle_timeout * NS)
        self._active = int(c.active_timeout * NS)
        self._linger = int(c.tcp_close_linger * NS)
        # TCP flows and the others live in separate LRU dicts so each can be expired from
        # its front with one idle timeout.
        self._tcp: OrderedDict[FlowKey, Flow] = OrderedDict()
        self._other: OrderedDict[FlowKey, Flow] = OrderedDict()
        self.stats = FlowStats()
        # (MAC, last time it sent) for each side that sent in the last `update`'s batch.
        self.last_senders: list[tuple[int, int]] = []
        # The packets of the last batch to show the analyzers: (flow, batch positions in capture order).
        self.inspect: list[tuple[Flow, list[int]]] = []
        # Flows whose responder sent its first packet in the last batch, with that packet's time.
        self.replied: list[tuple[Flow, int]] = []
        # Batch positions of flows whose budget ran out inside the last batch, not yet shown: see `more`.
        self._rest: dict[Flow, np.ndarray] = {}
        self._columns: _Columns | None = None  # the last batch's, for `more`
        # The integers a new flow keeps (addresses and ports of its key, MACs), by value: one object for a
        # value many live flows hold (a host's address, a server's port, the gateway's MAC) where each flow
        # had its own (28 to 36 bytes each, 11 in a flow). Bounded: emptied when full.
        self._ints: dict[int, int] = {}
        self._max_ints = min(MAX_SHARED_INTS, SHARED_INTS_PER_FLOW * c.max_flows)

    def __len__(self) -> int:
        return len(self._tcp) + len(self._other)

    def get(self, key: FlowKey) -> Flow | None:
        return (self._tcp if key[2] == PROTO_TCP else self._other).get(key)

    def flows(self) -> list[Flow]:
        return [*self._tcp.values(), *self._other.values()]

    def idle_timeout_ns(self, proto: int) -> int:
        return self._idle.get(proto, self._other_idle)

    def _same(self, value: int) -> int:
        """``value`` as the object the memo holds for it."""
        ints = self._ints
        held = ints.get(value)
        if held is None:
            if len(ints) >= self._max_ints:
                ints.clear()
            held = ints[value] = value
        return held

    def _new_flow(self, key: FlowKey, ts: int, a_sent_first: bool, ip_version: int) -> Flow:
        """A flow for ``key``, its key's addresses and ports the memo's."""
        same = self._same
        vo, vi, proto, ah, al, ap, bh, bl, bp = key
        k = (vo, vi, proto, same(ah), same(al), same(ap), same(bh), same(bl), same(bp))
        return Flow(k, ts, a_sent_first, ip_version)

    def update(self, d: Decoded) -> tuple[list[Flow], list[Flow]]:
        """Account the flow-eligible packets of `d`; returns (created, ended) flows."""
        created: list[Flow] = []
        ended: list[Flow] = []
        if d.ok.all():
            sel: slice | np.ndarray = slice(None)  # the usual batch: no copies
            nsel = d.n
        else:
            sel = np.flatnonzero(d.ok)
            nsel = len(sel)
        self.last_senders = []
        self.inspect = inspect = []
        self.replied = replied = []
        self._rest = rest = {}
        self._columns = columns = _columns(d)
        if nsel == 0:
            return created, ended
        sh, sl, sp = d.src_hi[sel], d.src_lo[sel], d.sport[sel]
        dh, dl, dp = d.dst_hi[sel], d.dst_lo[sel], d.dport[sel]
        a_first = (sh < dh) | ((sh == dh) & ((sl < dl) | ((sl == dl) & (sp <= dp))))
        ah, al, ap = np.where(a_first, sh, dh), np.where(a_first, sl, dl), np.where(a_first, sp, dp)
        bh, bl, bp = np.where(a_first, dh, sh), np.where(a_first, dl, sl), np.where(a_first, dp, sp)
        proto = d.proto[sel].astype(np.int64)
        vo, vi = d.vlan_outer[sel], d.vlan_inner[sel]
        from_b = (~a_first).astype(np.int64)
        # Ports, protocol and outer VLAN packed in one word (16+16+8 bits, VLAN id + 1 in 13 bits).
        packed = ((ap << 16) | bp | (proto << 32) | ((vo + 1) << 40)).astype(np.uint64)
        inner = (vi + 1).astype(np.uint64)
        h = _mix(
            al * _MIX1 ^ bl * _MIX2 ^ ah * _MIX3 ^ (bh + packed) * _MIX1 ^ packed ^ (inner << np.uint64(53))
        )

        # One stable sort by hash groups each key's packets together, in capture order.
        order = np.argsort(h, kind="stable")
        hs = h[order]
        starts = np.empty(len(hs), dtype=bool)
        starts[0] = True
        np.not_equal(hs[1:], hs[:-1], out=starts[1:])
        bounds = np.flatnonzero(starts)
        first = order[bounds]
        inverse = np.empty(len(hs), dtype=np.int64)
        inverse[order] = np.cumsum(starts) - 1
        cols = (al, bl, ah, bh, packed, inner)  # the whole key
        if any(np.any(c[first][inverse] != c) for c in cols):
            # A 64-bit hash collision inside one batch: fall back to exact grouping.
            self.stats.hash_collisions += 1
            stacked = np.stack([c.view(np.int64) for c in cols], 1)
            _, first, inverse = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            order = np.argsort(inverse, kind="stable")
            bounds = np.zeros(len(first), dtype=np.int64)
            np.cumsum(np.bincount(inverse, minlength=len(first))[:-1], out=bounds[1:])
        nkeys = len(first)
        counts = np.diff(np.append(bounds, len(order)))

        ts = d.ts_ns[sel]
        ts_sorted = ts[order]
        first_ts = np.minimum.reduceat(ts_sorted, bounds)
        last_ts = np.maximum.reduceat(ts_sorted, bounds)
        gaps = np.empty_like(ts_sorted)
        gaps[0] = 0
        np.subtract(ts_sorted[1:], ts_sorted[:-1], out=gaps[1:])
        gaps[bounds] = 0
        max_gap = np.maximum.reduceat(gaps, bounds)
        flags = d.tcp_flags[sel]
        flags_sorted = flags[order]
        flags_or = np.bitwise_or.reduceat(flags_sorted, bounds)
        dflags = np.zeros(2 * nkeys, dtype=np.uint8)
        tcp_rows = np.flatnonzero(flags)
        np.bitwise_or.at(dflags, inverse[tcp_rows] * 2 + from_b[tcp_rows], flags[tcp_rows])
        slot = inverse * 2 + from_b
        dflags_l = dflags.reshape(nkeys, 2).tolist()
        wl = d.wirelen[sel]
        ipl = d.ip_len[sel]
        pk2 = np.bincount(slot, minlength=2 * nkeys).reshape(nkeys, 2)
        echo = _echo_requests(d.proto[sel], d.icmp_type[sel])
        echo_l = None
        if echo.any():  # pings: their requests per side, which the packet counts cannot tell from replies
            echo_l = np.bincount(slot[echo], minlength=2 * nkeys).reshape(nkeys, 2).tolist()
        by2 = np.bincount(slot, weights=wl, minlength=2 * nkeys).astype(np.int64).reshape(nkeys, 2)
        ip2 = np.bincount(slot, weights=ipl, minlength=2 * nkeys).astype(np.int64).reshape(nkeys, 2)
        smac, dmac = d.src_mac[sel], d.dst_mac[sel]
        # MAC of each side: the sender's source MAC / the receiver's destination MAC, taken
        # from the key's first packet in the batch.
        f_from_b = from_b[first]
        mac_a = np.where(f_from_b == 0, smac[first], dmac[first])
        mac_b = np.where(f_from_b == 0, dmac[first], smac[first])

        key_lists = [c[first].tolist() for c in (vo, vi, proto, ah, al, ap, bh, bl, bp)]
        keys: list[FlowKey] = list(zip(*key_lists, strict=True))
        version = d.ip_version[sel][first].tolist()
        first_ts_l, last_ts_l, gap_l = first_ts.tolist(), last_ts.tolist(), max_gap.tolist()
        flags_l, ffrom_b = flags_or.tolist(), f_from_b.tolist()
        pk_l, by_l, ip_l = pk2.tolist(), by2.tolist(), ip2.tolist()
        mac_a_l, mac_b_l = mac_a.tolist(), mac_b.tolist()
        # When each side last sent in this batch (-1: it did not), for the inventory's last-seen.
        fb_sorted = from_b[order]
        sent_a = np.maximum.reduceat(np.where(fb_sorted == 0, ts_sorted, -1), bounds).tolist()
        sent_b = np.maximum.reduceat(np.where(fb_sorted == 1, ts_sorted, -1), bounds).tolist()
        # Each side's first packet in this batch (n: none): its time, and its TCP flags for a responder's.
        n = len(order)
        rank = np.arange(n)
        at_a = np.minimum.reduceat(np.where(fb_sorted == 0, rank, n), bounds)
        at_b = np.minimum.reduceat(np.where(fb_sorted == 1, rank, n), bounds)
        ts_pad = np.append(ts_sorted, np.iinfo(np.int64).max)
        flags_pad = np.append(flags_sorted, 0)
        first_a, first_b = ts_pad[at_a].tolist(), ts_pad[at_b].tolist()
        first_flags_a, first_flags_b = flags_pad[at_a].tolist(), flags_pad[at_b].tolist()
        self.last_senders = [
            *((m, t) for m, t in zip(mac_a_l, sent_a, strict=True) if t >= 0 and m),
            *((m, t) for m, t in zip(mac_b_l, sent_b, strict=True) if t >= 0 and m),
        ]
        fflags_l = flags[first].tolist()
        first_pos = first if isinstance(sel, slice) else sel[first]
        icmp_t, icmp_c = d.icmp_type[sel][first].tolist(), d.icmp_code[sel][first].tolist()

        active, linger = self._active, self._linger
        # Keys in order of their last packet in the batch, so that the LRU dicts stay ordered by last activity
        # inside a batch too: eviction and expiry take the front, which must be the least recently active
        # flow whatever the batch boundaries (hash order would make the choice depend on them).
        for k in np.argsort(last_ts, kind="stable").tolist():
            key = keys[k]
            p = key[2]
            table = self._tcp if p == PROTO_TCP else self._other
            idle = self._idle.get(p, self._other_idle)
            flow = table.get(key)
            f0, f1 = first_ts_l[k], last_ts_l[k]
            slow = gap_l[k] > idle or (flow is None and f1 - f0 > active)
            if p == PROTO_TCP and flags_l[k] & (TCP_FIN | TCP_RST | TCP_SYN):
                slow = (
                    slow
                    or bool(flags_l[k] & (TCP_FIN | TCP_RST))
                    or (flow is not None and flow.closed_ns is not None)
                )
            if flow is not None and not slow:
                slow = (
                    f0 - flow.last_ns > idle
                    or f1 - flow.start_ns > active
                    or (flow.closed_ns is not None and f1 - flow.closed_ns > linger)
                )
            if slow:
                b0 = int(bounds[k])
                pos = order[b0 : b0 + int(counts[k])]
                if not isinstance(sel, slice):
                    pos = sel[pos]
                self._replay(key, table, pos, d, created, ended)
                continue
            if flow is None:
                flow = self._new_flow(key, f0, ffrom_b[k] == 0, version[k])
                flow.first_flags = fflags_l[k]
                flow.first_ttl = int(d.ttl(first_pos[k : k + 1])[0])
                flow.icmp_type, flow.icmp_code = icmp_t[k], icmp_c[k]
                table[flow.key] = flow
                created.append(flow)
                self.stats.created += 1
            else:
                table.move_to_end(key)
                if f0 < flow.start_ns:
                    flow.start_ns = f0
            if f1 > flow.last_ns:
                flow.last_ns = f1
            if echo_l is not None and (echo_l[k][0] or echo_l[k][1]):
                _count_echo(flow, echo_l[k][0], echo_l[k][1])
            pa, pb = pk_l[k]
            ba, bb = by_l[k]
            ia, ib = ip_l[k]
            # The responder's first packet: its address is learned from what it sends.
            if flow.a_sent_first:
                if pb and not flow.pkts_b:
                    replied.append((flow, first_b[k]))
                    flow.reply_flags = first_flags_b[k]
            elif pa and not flow.pkts_a:
                replied.append((flow, first_a[k]))
                flow.reply_flags = first_flags_a[k]
            flow.pkts_a += pa
            flow.pkts_b += pb
            flow.bytes_a += ba
            flow.bytes_b += bb
            flow.ip_bytes_a += ia
            flow.ip_bytes_b += ib
            if not flow.mac_a:
                flow.mac_a = self._same(mac_a_l[k])
            if not flow.mac_b:
                flow.mac_b = self._same(mac_b_l[k])
            if p == PROTO_TCP:
                fa, fb = dflags_l[k]
                flow.flags_a |= fa
                flow.flags_b |= fb
            left = flow.inspect_left
            if left or flow.client_side >= 0:
                b0, count = int(bounds[k]), int(counts[k])
                take = count if left < 0 else min(left, count)
                pos = order[b0 : b0 + take]
                if not isinstance(sel, slice):
                    pos = sel[pos]
                if left > 0:
                    flow.inspect_left = left - take
                if take < count:
                    tail = order[b0 + take : b0 + count]
                    if not isinstance(sel, slice):
                        tail = sel[tail]
                    if flow.client_side >= 0:
                        # The client's data past the budget (after the budgeted packets in capture order).
                        picked = client_data(flow, tail, columns, d)
                        if picked.any():
                            pos = np.concatenate((pos, tail[picked]))
                            tail = tail[~picked]
                    if left > 0 and len(tail):
                        # Kept (a view, no copy) in case a packet just selected raises the budget.
                        rest[flow] = tail
                if len(pos):
                    inspect.append((flow, pos.tolist()))
        self._evict(ended)
        return created, ended

    def more(self, flow: Flow, limit: int) -> list[int]:
        """Up to ``limit`` (-1: all; CLIENT_DATA: the client's data of a flow in request mode) more positions
        of ``flow`` in the last batch, in capture order: the
        packets its budget did not cover when the batch was grouped. The analyzers ask for them when a
        packet they just read raised the budget (a WebRTC flow's DTLS handshake), so that the result does not
        depend on where batches end. They count against ``flow.inspect_left``."""
        rest = self._rest.get(flow)
        if rest is None or not len(rest):
            return []
        if limit == CLIENT_DATA:
            # The client's data among them, for a flow whose request mode was set inside the batch: not
            # counted against the budget (request mode reads past it).
            if flow.client_side < 0 or self._columns is None:
                return []
            picked = client_data(flow, rest, self._columns)
            self._rest[flow] = rest[~picked]
            client: list[int] = rest[picked].tolist()
            return client
        take = len(rest) if limit < 0 else min(limit, len(rest))
        self._rest[flow] = rest[take:]
        if flow.inspect_left > 0:
            flow.inspect_left = max(0, flow.inspect_left - take)
        out: list[int] = rest[:take].tolist()
        return out

    def _replay(
        self,
        key: FlowKey,
        table: OrderedDict[FlowKey, Flow],
        pos: np.ndarray,
        d: Decoded,
        created: list[Flow],
        ended: list[Flow],
    ) -> None:
        """Packet-by-packet update of one key's packets (positions `pos` in the batch)."""
        idle = self._idle.get(key[2], self._other_idle)
        a_side = (key[3], key[4], key[5])
        ts_l = d.ts_ns[pos].tolist()
        wl_l = d.wirelen[pos].tolist()
        ip_l = d.ip_len[pos].tolist()
        fl_l = d.tcp_flags[pos].tolist()
        sh_l, sl_l, sp_l = d.src_hi[pos].tolist(), d.src_lo[pos].tolist(), d.sport[pos].tolist()
        smac_l, dmac_l = d.src_mac[pos].tolist(), d.dst_mac[pos].tolist()
        it_l, ic_l = d.icmp_type[pos].tolist(), d.icmp_code[pos].tolist()
        # Echo requests per packet, for a ping's key only (Flow.echo).
        echo_l = _echo_requests(d.proto[pos], d.icmp_type[pos]).tolist() if key[2] in _PINGS else None
        version = int(d.ip_version[pos[0]])
        is_tcp = key[2] == PROTO_TCP
        pos_l = pos.tolist()
        flow = table.get(key)
        shown: tuple[Flow, list[int]] | None = None
        unpicked: dict[Flow, list[int]] = {}
        # Which of these packets are client data of the flow in request mode (Flow.client_side), worked out
        # for the flow object they were worked out for: a flow that ends here and starts again is new.
        picks: tuple[Flow, list[bool]] | None = None
        for i, t in enumerate(ts_l):
            fl = fl_l[i]
            from_a = (sh_l[i], sl_l[i], sp_l[i]) == a_side
            # A flow between a host and itself (same address and port) counts as side a.
            previous = None
            if flow is not None:
                reason = ""
                if flow.closed_ns is not None and (
                    t - flow.closed_ns > self._linger
                    or (fl & (TCP_SYN | TCP_ACK)) == TCP_SYN
                    or t - flow.last_ns > idle
                ):
                    reason = "closed"
                elif t - flow.last_ns > idle:
                    reason = "idle"
                elif t - flow.start_ns > self._active:
                    reason = "active"
                if reason:
                    self._end(table, flow, reason, ended)
                    previous, flow = flow, None
            if flow is None:
                flow = self._new_flow(key, t, from_a, version)
                flow.first_flags = fl
                flow.first_ttl = int(d.ttl(pos[i : i + 1])[0])
                if previous is not None and previous.end_reason == "active":
                    # The same session goes on in a new record: whoever opened it still did.
                    same = previous.a_sent_first == from_a
                    flow.opener = previous.opener_is_src if same else not previous.opener_is_src
                flow.icmp_type, flow.icmp_code = it_l[i], ic_l[i]
                table[flow.key] = flow
                created.append(flow)
                self.stats.created += 1
                shown = None
            else:
                table.move_to_end(key)
                if t < flow.start_ns:
                    flow.start_ns = t
            if t > flow.last_ns:
                flow.last_ns = t
            if from_a != flow.a_sent_first and not (flow.pkts_a if from_a else flow.pkts_b):
                self.replied.append((flow, t))
                flow.reply_flags = fl
            if echo_l is not None and echo_l[i]:
                _count_echo(flow, int(from_a), int(not from_a))
            if from_a:
                flow.pkts_a += 1
                flow.bytes_a += wl_l[i]
                flow.ip_bytes_a += ip_l[i]
                flow.flags_a |= fl
                if not flow.mac_a:
                    flow.mac_a = self._same(smac_l[i])
                if not flow.mac_b:
                    flow.mac_b = self._same(dmac_l[i])
            else:
                flow.pkts_b += 1
                flow.bytes_b += wl_l[i]
                flow.ip_bytes_b += ip_l[i]
                flow.flags_b |= fl
                if not flow.mac_b:
                    flow.mac_b = self._same(smac_l[i])
                if not flow.mac_a:
                    flow.mac_a = self._same(dmac_l[i])
            client = False
            if not flow.inspect_left and flow.client_side >= 0:
                if picks is None or picks[0] is not flow:
                    picks = (flow, client_data(flow, pos, _columns(d), d).tolist())
                client = picks[1][i]
            if flow.inspect_left or client:
                if shown is None or shown[0] is not flow:
                    shown = (flow, [])
                    self.inspect.append(shown)
                shown[1].append(pos_l[i])
                if flow.inspect_left > 0:
                    flow.inspect_left -= 1
            elif shown is not None and shown[0] is flow:
                # Past the budget: kept in case a packet just selected raises it (see `more`).
                unpicked.setdefault(flow, []).append(pos_l[i])
            if is_tcp and flow.closed_ns is None:
                if fl & TCP_RST:
                    flow.closed_ns = t
                elif fl & TCP_FIN:
                    if from_a:
                        flow.fin_a = True
                    else:
                        flow.fin_b = True
                    if flow.fin_a and flow.fin_b:
                        flow.closed_ns = t
        for unpicked_flow, positions in unpicked.items():
            self._rest[unpicked_flow] = np.array(positions, dtype=np.int64)

    def _end(self, table: OrderedDict[FlowKey, Flow], flow: Flow, reason: str, ended: list[Flow]) -> None:
        del table[flow.key]
        flow.end_reason = reason
        if reason == "idle":
            self.stats.ended_idle += 1
        elif reason == "active":
            self.stats.ended_active += 1
        elif reason == "closed":
            self.stats.ended_closed += 1
        ended.append(flow)

    def _evict(self, ended: list[Flow]) -> None:
        over = len(self) - self.config.max_flows
        while over > 0:
            tcp_front = next(iter(self._tcp.values()), None)
            other_front = next(iter(self._other.values()), None)
            if other_front is None or (tcp_front is not None and tcp_front.last_ns < other_front.last_ns):
                _, flow = self._tcp.popitem(last=False)
            else:
                _, flow = self._other.popitem(last=False)
            flow.end_reason = "evicted"
            self.stats.evicted += 1
            ended.append(flow)
            over -= 1

    def expire(self, now_ns: int) -> list[Flow]:
        """End the flows idle for longer than their timeout (or closed and lingered) at `now_ns`."""
        ended: list[Flow] = []
        for table in (self._tcp, self._other):
            while table:
                flow = next(iter(table.values()))
                timeout = self._idle.get(flow.key[2], self._other_idle)
                # A closed connection ends as "closed" however long ago: the reason must not
                # depend on when the scan runs.
                if flow.closed_ns is not None and (
                    now_ns - flow.closed_ns > self._linger or now_ns - flow.last_ns > timeout
                ):
                    self._end(table, flow, "closed", ended)
                elif now_ns - flow.last_ns > timeout:
                    self._end(table, flow, "idle", ended)
                else:
                    # The front is the least recently updated flow: nothing behind it is older.
                    break
        return ended

    def flush(self, now_ns: int) -> list[Flow]:
        """End every live flow (end of input or shutdown) at time `now_ns`.

        A flow that had already timed out or closed by then gets that reason, as if the expiry
        scan had reached it: the reason must not depend on how often the scan ran.
        """
        ended: list[Flow] = []
        for table in (self._tcp, self._other):
            for flow in table.values():
                if flow.closed_ns is not None:
                    flow.end_reason = "closed"
                elif now_ns - flow.last_ns > self._idle.get(flow.key[2], self._other_idle):
                    flow.end_reason = "idle"
                else:
                    flow.end_reason = "end"
                ended.append(flow)
            table.clear()
        return ended


# The columns of a decoded batch that say which packets are a client's data (not the batch's bytes: the
# flow table keeps them until the next batch, for `more`).
_Columns = tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]


def _columns(d: Decoded) -> _Columns:
    return (d.src_hi, d.src_lo, d.sport, d.l3_off, d.ip_len, d.l4_off, d.payload_off, d.wirelen, d.tcp_flags)


def client_data(flow: Flow, pos: np.ndarray, columns: _Columns, d: Decoded | None = None) -> np.ndarray:
    """Which of the packets at batch positions ``pos`` (all of ``flow``) the flow's client sent with data (or
    a FIN or RST: what ends its requests), past ``flow.skip_to`` when the batch ``d`` is given (the analysis
    drops the others too): the packets a flow in request mode shows."""
    src_hi, src_lo, sport, l3_off, ip_len, l4_off, payload_off, wirelen, tcp_flags = columns
    k = flow.key
    from_b = (src_lo[pos] != k[4]) | (src_hi[pos] != k[3]) | (sport[pos] != k[5])
    mine = from_b if flow.client_side else ~from_b
    ends = l3_off[pos] + ip_len[pos]
    l4 = l4_off[pos]
    # An IP length that ends before the TCP header (0 in a TSO/BIG TCP super-frame): the frame's length.
    length = np.where(ends <= l4, wirelen[pos], ends) - payload_off[pos]
    picked: np.ndarray = mine & ((length > 0) | ((tcp_flags[pos] & (TCP_FIN | TCP_RST)) != 0))
    skip = flow.skip_to
    if skip is not None and d is not None and picked.any():
        at = d.offsets[pos] + l4 + 4
        b = d.data[at[:, None] + _SEQ_BYTES].astype(np.int64)
        seq = (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]
        # Past the skipped body in sequence space (32-bit serial arithmetic): ends after `skip`.
        ahead = (seq + np.maximum(length, 0) - skip) % (1 << 32)
        picked &= (ahead > 0) & (ahead < (1 << 31))
    return picked


_SEQ_BYTES = np.arange(4)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the 64-bit result."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> _S30
    x *= _MIX2
    x ^= x >> _S27
    x *= _MIX3
    x ^= x >> _S31
    return x
