"""Vectorised L2-L4 header decoding of a packet batch.

Every packet's headers are decoded once, with numpy over the whole batch: the per-packet
Python cost is what limits a gateway, and the bulk of camera traffic (RTP video) only needs
the 5-tuple, the length and the timestamp. Link types: Ethernet (with 802.1Q/802.1ad/QinQ),
Linux SLL and SLL2, raw IPv4/IPv6, BSD loopback (NULL and LOOP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.pcapfile import PacketBatch

# Bytes of each packet copied into the header window. Ethernet + 2 VLAN tags + IPv6 + 3
# extension headers + TCP flags fits; IPv4 with 40 bytes of options too.
WINDOW = 160

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_OLD = 12
LINKTYPE_RAW_OLD2 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

# IPv6 extension headers we walk: hop-by-hop, routing, fragment, destination options,
# AH, mobility, HIP, shim6.
_IPV6_EXT = np.array([0, 43, 44, 60, 51, 135, 139, 140], dtype=np.uint8)
_IPV6_MAX_EXT = 4
# IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d) so one key type serves both versions.
V4_MAPPED_HI = np.uint64(0)
V4_MAPPED_LO = np.uint64(0xFFFF_0000_0000)

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
BOOL = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Decoded:
    """Struct of arrays, one entry per packet of the batch.

    `ok` marks packets that belong in a flow (IPv4/IPv6 with a complete enough L4 header,
    not a non-first fragment). Addresses are (hi, lo) 64-bit halves of the IPv6 or
    IPv4-mapped address. Ports are 0 for protocols without ports (ICMP's type and code are
    in `icmp_type`/`icmp_code`).
    """

    n: int
    ts_ns: I64
    wirelen: I64
    ok: BOOL
    is_ip: BOOL
    fragment: BOOL  # any IPv4/IPv6 fragment (first or not)
    later_fragment: BOOL  # non-first fragment: no L4 header, not put in a flow
    truncated: BOOL  # IP packet whose headers were cut by the snap length or malformed
    ip_version: U8
    proto: U8
    src_hi: U64
    src_lo: U64
    dst_hi: U64
    dst_lo: U64
    sport: I64
    dport: I64
    tcp_flags: U8
    icmp_type: I64
    icmp_code: I64
    ip_len: I64  # IP total length (IPv4 header field; IPv6 payload length + 40)
    ethertype: I64  # of the (innermost) payload: 0x0800/0x86DD for IP, 0x0806 ARP, ...
    l3_off: I64  # offset of the (innermost) IP header inside the packet
    l4_off: I64  # offset of the L4 header inside the packet
    payload_off: I64  # offset of the L4 payload inside the packet (-1 if unknown)
    vlan_outer: I64  # -1 when untagged
    vlan_inner: I64
    src_mac: U64  # 0 when the link type has no MAC
    dst_mac: U64
    data: U8  # the batch's bytes and where each packet starts, for the few fields read on demand
    offsets: I64

    def ttl(self, positions: I64) -> U8:
        """IPv4 TTL / IPv6 hop limit of the (innermost) IP header of these IP packets: who is closer to the
        sender (a routed copy has a lower one). Read on demand: only new flows need it."""
        at = (
            self.offsets[positions] + self.l3_off[positions] + np.where(self.ip_version[positions] == 4, 8, 7)
        )
        out: U8 = self.data[np.minimum(at, len(self.data) - 1)]
        return out


_MAX_TUNNELS = 2
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = (0x8847, 0x8848)
PROTO_IPIP = 4
PROTO_IPV6_IN_IP = 41
GTP_U_PORT = 2152

# Widths of the staged header gathers: link layer (Ethernet + 2 tags + ethertype, SLL2), IP
# (a full IPv6 header, an IPv4 header with 20 bytes of options) and transport (TCP flags,
# a GTP-U header). Fixed widths make every field a column slice.
_L2W = 24
_L3W = 40
_L4W = 20
_FASTW = 14 + 20 + _L4W


def gather(data: U8, starts: I64, width: int) -> U8:
    """Copy `width` bytes from each of `starts` in `data` into an (n, width) array.

    Bytes past the end of `data` read as zero; bytes past a packet's captured length are
    whatever follows it, so callers check lengths against `caplen`.
    """
    n = len(starts)
    if n == 0:
        return np.zeros((0, width), dtype=np.uint8)
    limit = len(data) - width
    if limit >= 0 and int(starts.max()) <= limit:
        return np.asarray(np.lib.stride_tricks.sliding_window_view(data, width)[starts])
    # Some starts are within `width` of the end (a batch's buffer ends with its last packet):
    # gather every row clamped to the buffer, then redo those few rows from a padded tail.
    near = np.flatnonzero(starts > limit)
    if limit >= 0:
        out = np.asarray(np.lib.stride_tricks.sliding_window_view(data, width)[np.clip(starts, 0, limit)])
    else:
        out = np.zeros((n, width), dtype=np.uint8)
    # Starts may even lie past the end (a header length pointing beyond a truncated packet).
    lo = min(max(int(starts[near].min()), 0), len(data))
    have = len(data) - lo
    tail = np.zeros(have + width, dtype=np.uint8)
    tail[:have] = data[lo:]
    out[near] = np.lib.stride_tricks.sliding_window_view(tail, width)[np.clip(starts[near] - lo, 0, have)]
    return out


def header_window(batch: PacketBatch, width: int = WINDOW) -> U8:
    """The first `width` bytes of every packet, as an (n, width) array."""
    return gather(batch.data, batch.offsets, width)


def _be16(cols: U8) -> I64:
    return (cols[:, 0].astype(np.int64) << 8) | cols[:, 1]


def _be32(cols: U8) -> I64:
    return np.ascontiguousarray(cols).view(">u4").reshape(-1).astype(np.int64)


def _be64(cols: U8) -> U64:
    return np.ascontiguousarray(cols).view(">u8").reshape(-1).astype(np.uint64)


def _mac(cols: U8) -> U64:
    raw = np.zeros((len(cols), 8), dtype=np.uint8)
    raw[:, 2:] = cols
    return raw.view(">u8").reshape(-1).astype(np.uint64)


class _L3:
    """Network-layer fields being filled in (re-entrant: a tunnel re-decodes its rows)."""

    def __init__(self, n: int) -> None:
        self.is_ip = np.zeros(n, dtype=bool)
        self.truncated = np.zeros(n, dtype=bool)
        self.fragment = np.zeros(n, dtype=bool)
        self.later_fragment = np.zeros(n, dtype=bool)
        self.ip_version = np.zeros(n, dtype=np.uint8)
        self.proto = np.zeros(n, dtype=np.uint8)
        self.src_hi = np.zeros(n, dtype=np.uint64)
        self.src_lo = np.zeros(n, dtype=np.uint64)
        self.dst_hi = np.zeros(n, dtype=np.uint64)
        self.dst_lo = np.zeros(n, dtype=np.uint64)
        self.l4 = np.zeros(n, dtype=np.int64)
        self.ip_len = np.zeros(n, dtype=np.int64)

    def reset(self, r: I64) -> None:
        # The outer header's length stays: Zeek-style IP bytes count the outer packet.
        for arr in (self.is_ip, self.truncated, self.fragment, self.later_fragment):
            arr[r] = False
        self.proto[r] = 0


def _pppoe_mpls(data: U8, offs: I64, caplen: I64, ethertype: I64, l3: I64) -> None:
    """Step over a PPPoE session header or an MPLS label stack to the IP header (rare: per subset)."""
    pppoe = np.flatnonzero((ethertype == ETH_PPPOE_SESSION) & (l3 + 8 <= caplen))
    if pppoe.size:
        ppp = _be16(gather(data, offs[pppoe] + l3[pppoe] + 6, 2))
        ethertype[pppoe] = np.where(ppp == 0x0021, ETH_IPV4, np.where(ppp == 0x0057, ETH_IPV6, 0))
        l3[pppoe] += 8
    mpls = np.isin(ethertype, ETH_MPLS)
    for _ in range(4):
        live = np.flatnonzero(mpls & (l3 + 5 <= caplen))
        if not live.size:
            break
        lab = gather(data, offs[live] + l3[live], 5)
        bottom = (lab[:, 2] & 0x01) != 0
        l3[live] += 4
        done = live[bottom]
        if done.size:
            ver = lab[bottom, 4] >> 4
            ethertype[done] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
            mpls[done] = False
    ethertype[mpls] = 0


def _ipv4(h: U8, v4: I64, l3: I64, f: _L3) -> None:
    """IPv4 header fields from `h` (one row per packet of `v4`, starting at the IP header)."""
    ihl = (h[:, 0] & 0x0F).astype(np.int64) * 4
    good = ((h[:, 0] >> 4) == 4) & (ihl >= 20)
    if not good.all():
        f.truncated[v4[~good]] = True
        v4, h, ihl = v4[good], h[good], ihl[good]
    f.is_ip[v4] = True
    f.ip_version[v4] = 4
    f.proto[v4] = h[:, 9]
    f.ip_len[v4] = _be16(h[:, 2:4])
    frag = _be16(h[:, 6:8])
    f.fragment[v4] = (frag & 0x3FFF) != 0
    f.later_fragment[v4] = (frag & 0x1FFF) != 0
    addrs = _be32(h[:, 12:20]).reshape(-1, 2).astype(np.uint64)
    f.src_hi[v4] = V4_MAPPED_HI
    f.dst_hi[v4] = V4_MAPPED_HI
    f.src_lo[v4] = V4_MAPPED_LO | addrs[:, 0]
    f.dst_lo[v4] = V4_MAPPED_LO | addrs[:, 1]
    f.l4[v4] = l3[v4] + ihl


def _decode_l3(data: U8, offs: I64, caplen: I64, rows: I64, ethertype: I64, l3: I64, f: _L3) -> None:
    """IPv4/IPv6 headers (IPv6 extension headers included) of the packets in `rows`."""
    et = ethertype[rows]
    v4 = rows[(et == ETH_IPV4) & (l3[rows] + 20 <= caplen[rows])]
    if v4.size:
        _ipv4(gather(data, offs[v4] + l3[v4], _L3W), v4, l3, f)

    v6 = rows[(et == ETH_IPV6) & (l3[rows] + 40 <= caplen[rows])]
    if v6.size:
        h = gather(data, offs[v6] + l3[v6], _L3W)
        good = (h[:, 0] >> 4) == 6
        if not good.all():
            f.truncated[v6[~good]] = True
            v6, h = v6[good], h[good]
        f.is_ip[v6] = True
        f.ip_version[v6] = 6
        f.ip_len[v6] = _be16(h[:, 4:6]) + 40
        a = _be64(h[:, 8:40]).reshape(-1, 4)
        f.src_hi[v6], f.src_lo[v6], f.dst_hi[v6], f.dst_lo[v6] = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
        nh = h[:, 6].astype(np.int64)
        off = l3[v6] + 40
        ext = np.isin(nh, _IPV6_EXT)
        if ext.any():
            _ipv6_ext(data, offs, caplen, v6[ext], nh, off, ext, f)
        f.proto[v6] = nh.astype(np.uint8)
        f.l4[v6] = off


def _ipv6_ext(data: U8, offs: I64, caplen: I64, er: I64, nh: I64, off: I64, ext: BOOL, f: _L3) -> None:
    """Walk IPv6 extension headers (rare) for rows `er`; updates nh and off where `ext` is set."""
    sub_nh, sub_off = nh[ext], off[ext]
    live = np.ones(len(er), dtype=bool)
    for _ in range(_IPV6_MAX_EXT):
        live &= np.isin(sub_nh, _IPV6_EXT) & (sub_off + 8 <= caplen[er])
        if not live.any():
            break
        idx = np.flatnonzero(live)
        h = gather(data, offs[er[idx]] + sub_off[idx], 8)
        cur = sub_nh[idx]
        is_frag, is_ah = cur == 44, cur == 51
        elen = np.where(
            is_frag,
            8,
            np.where(is_ah, (h[:, 1].astype(np.int64) + 2) * 4, (h[:, 1].astype(np.int64) + 1) * 8),
        )
        if is_frag.any():
            fr = er[idx[is_frag]]
            f.fragment[fr] = True
            f.later_fragment[fr] = (_be16(h[is_frag, 2:4]) >> 3) != 0
        sub_nh[idx] = h[:, 0]
        sub_off[idx] += elen
    # A chain longer than we walk, or cut by the snap length, stays unknown (a later fragment
    # has no further header to find).
    unknown = np.isin(sub_nh, _IPV6_EXT) & ~f.later_fragment[er]
    f.truncated[er[unknown]] = True
    nh[ext] = sub_nh
    off[ext] = sub_off


def _tunnel_payload(data: U8, offs: I64, caplen: I64, f: _L3, h4: U8) -> tuple[I64, I64, I64] | None:
    """Rows carrying IP in IP (4, 41) or GTP-U, with the inner header's offset and ethertype.

    Flows are keyed on the inner packet, as nDPI (with tunnel decoding) and Zeek do.
    """
    first = f.is_ip & ~f.later_fragment & ~f.truncated
    ipip = first & ((f.proto == PROTO_IPIP) | (f.proto == PROTO_IPV6_IN_IP))
    udp = first & (f.proto == PROTO_UDP) & (f.l4 + 16 <= caplen)
    ports_gtp = (_be16(h4[:, 0:2]) == GTP_U_PORT) | (_be16(h4[:, 2:4]) == GTP_U_PORT)
    # GTPv1-U G-PDU (message type 255) carrying a user packet.
    gtp = udp & ports_gtp & ((h4[:, 8] >> 5) == 1) & (h4[:, 9] == 0xFF)
    if not (ipip.any() or gtp.any()):
        return None
    rows = np.flatnonzero(ipip | gtp)
    # Optional GTP fields (sequence number, N-PDU, next extension type) add 4 bytes.
    gtp_off = f.l4 + 16 + np.where((h4[:, 8] & 0x07) != 0, 4, 0)
    off = np.where(gtp[rows], gtp_off[rows], f.l4[rows])
    first_byte = gather(data, offs[rows] + off, 1)[:, 0]
    ver = np.where(off < caplen[rows], first_byte >> 4, 0)
    inner_eth = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
    keep = inner_eth != 0
    return rows[keep], off[keep], inner_eth[keep]


def decode(batch: PacketBatch) -> Decoded:
    """Decode link, network and transport headers of every packet in `batch`."""
    n = len(batch)
    data = batch.data
    offs = batch.offsets
    caplen = batch.caplen.astype(np.int64, copy=False)
    lt = batch.linktype

    ethertype = np.zeros(n, dtype=np.int64)
    l3 = np.zeros(n, dtype=np.int64)
    vlan_outer = np.full(n, -1, dtype=np.int64)
    vlan_inner = np.full(n, -1, dtype=np.int64)
    src_mac = np.zeros(n, dtype=np.uint64)
    dst_mac = np.zeros(n, dtype=np.uint64)

    # One gather covers the usual packet (untagged Ethernet, IPv4 without options, the first
    # 20 bytes of TCP/UDP); the rest take per-layer gathers below.
    h = gather(data, offs, _FASTW)
    h2 = h[:, :_L2W]
    all_eth = bool((lt == LINKTYPE_ETHERNET).all())
    eth = np.ones(n, dtype=bool) if all_eth else (lt == LINKTYPE_ETHERNET)
    eth &= caplen >= 14
    if eth.any():
        sel: slice | I64 = slice(None) if eth.all() else np.flatnonzero(eth)
        ethertype[sel] = _be16(h2[sel, 12:14])
        l3[sel] = 14
        dst_mac[sel] = _mac(h2[sel, 0:6])
        src_mac[sel] = _mac(h2[sel, 6:12])
    if not all_eth:
        sll = np.flatnonzero((lt == LINKTYPE_LINUX_SLL) & (caplen >= 16))
        if sll.size:
            ethertype[sll] = _be16(h2[sll, 14:16])
            l3[sll] = 16
            # Only the sender's address is in the cooked header (6 bytes when it is a MAC).
            src_mac[sll] = np.where(_be16(h2[sll, 4:6]) == 6, _mac(h2[sll, 6:12]), np.uint64(0))
        sll2 = np.flatnonzero((lt == LINKTYPE_LINUX_SLL2) & (caplen >= 20))
        if sll2.size:
            ethertype[sll2] = _be16(h2[sll2, 0:2])
            l3[sll2] = 20
            src_mac[sll2] = np.where(h2[sll2, 11] == 6, _mac(h2[sll2, 12:18]), np.uint64(0))
        raw_types = (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2, LINKTYPE_IPV4, LINKTYPE_IPV6)
        raw = np.flatnonzero(np.isin(lt, raw_types) & (caplen >= 1))
        if raw.size:
            ver = h2[raw, 0] >> 4
            ethertype[raw] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
        loop = np.flatnonzero(np.isin(lt, (LINKTYPE_NULL, LINKTYPE_LOOP)) & (caplen >= 4))
        if loop.size:
            # The address family is in the capturing host's byte order (NULL) or network order
            # (LOOP); the value is small, so whichever end byte is non-zero holds it.
            fam = np.where(h2[loop, 0] != 0, h2[loop, 0], h2[loop, 3]).astype(np.int64)
            v6_fams = np.isin(fam, (10, 23, 24, 28, 30))
            ethertype[loop] = np.where(fam == 2, ETH_IPV4, np.where(v6_fams, ETH_IPV6, 0))
            l3[loop] = 4

    # VLAN tags (802.1Q, 802.1ad, old QinQ): up to two.
    for depth in range(2):
        tagged = np.flatnonzero(np.isin(ethertype, VLAN_TPIDS) & (caplen >= l3 + 4))
        if not tagged.size:
            break
        tag = gather(data, offs[tagged] + l3[tagged], 4)
        (vlan_outer if depth == 0 else vlan_inner)[tagged] = _be16(tag[:, 0:2]) & 0xFFF
        ethertype[tagged] = _be16(tag[:, 2:4])
        l3[tagged] += 4
    if not all_eth or np.isin(ethertype, (ETH_PPPOE_SESSION, *ETH_MPLS)).any():
        _pppoe_mpls(data, offs, caplen, ethertype, l3)

    f = _L3(n)
    fast = (l3 == 14) & (ethertype == ETH_IPV4) & (h[:, 14] == 0x45) & (caplen >= 34)
    all_fast = bool(fast.all())
    if all_fast:
        _ipv4(h[:, 14:34], np.arange(n), l3, f)
    else:
        fr = np.flatnonzero(fast)
        if fr.size:
            _ipv4(h[fr, 14:34], fr, l3, f)
        rest = np.flatnonzero(~fast & ((ethertype == ETH_IPV4) | (ethertype == ETH_IPV6)))
        _decode_l3(data, offs, caplen, rest, ethertype, l3, f)
    if all_fast:
        h4 = h[:, 34:_FASTW]
    else:
        h4 = np.empty((n, _L4W), dtype=np.uint8)
        h4[fast] = h[fast, 34:_FASTW]
        slow = np.flatnonzero(~fast)
        h4[slow] = gather(data, offs[slow] + f.l4[slow], _L4W)
    for _ in range(_MAX_TUNNELS):
        inner = _tunnel_payload(data, offs, caplen, f, h4)
        if inner is None:
            break
        r, inner_off, inner_eth = inner
        ethertype[r] = inner_eth
        l3[r] = inner_off
        f.reset(r)
        _decode_l3(data, offs, caplen, r, ethertype, l3, f)
        h4[r] = gather(data, offs[r] + f.l4[r], _L4W)

    is_ip, proto, l4, truncated, later_fragment = f.is_ip, f.proto, f.l4, f.truncated, f.later_fragment
    # Frames that claim IP but whose IP header is cut short.
    truncated |= ((ethertype == ETH_IPV4) | (ethertype == ETH_IPV6)) & ~is_ip
    first = is_ip & ~later_fragment & ~truncated
    has_ports = first & ((proto == PROTO_TCP) | (proto == PROTO_UDP) | (proto == PROTO_SCTP))
    short = has_ports & (l4 + 4 > caplen)
    truncated |= short
    has_ports &= ~short
    sport = np.where(has_ports, _be16(h4[:, 0:2]), 0)
    dport = np.where(has_ports, _be16(h4[:, 2:4]), 0)
    tcp = has_ports & (proto == PROTO_TCP) & (l4 + 14 <= caplen)
    tcp_flags = np.where(tcp, h4[:, 13], 0).astype(np.uint8)
    payload = np.full(n, -1, dtype=np.int64)
    payload = np.where(tcp, l4 + (h4[:, 12] >> 4).astype(np.int64) * 4, payload)
    payload = np.where(has_ports & (proto == PROTO_UDP), l4 + 8, payload)
    icmp = first & ((proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)) & (l4 + 2 <= caplen)
    icmp_type = np.where(icmp, h4[:, 0], -1).astype(np.int64)
    icmp_code = np.where(icmp, h4[:, 1], -1).astype(np.int64)
    payload = np.where(icmp, l4 + 8, payload)

    return Decoded(
        n=n,
        ts_ns=batch.ts_ns,
        wirelen=batch.wirelen.astype(np.int64, copy=False),
        ok=first & ~truncated,
        is_ip=is_ip,
        fragment=f.fragment,
        later_fragment=later_fragment,
        truncated=truncated,
        ip_version=f.ip_version,
        proto=proto,
        src_hi=f.src_hi,
        src_lo=f.src_lo,
        dst_hi=f.dst_hi,
        dst_lo=f.dst_lo,
        sport=sport,
        dport=dport,
        tcp_flags=tcp_flags,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        ip_len=f.ip_len,
        ethertype=ethertype,
        l3_off=l3,
        l4_off=l4,
        payload_off=payload,
        vlan_outer=vlan_outer,
        vlan_inner=vlan_inner,
        src_mac=src_mac,
        dst_mac=dst_mac,
        data=data,
        offsets=offs,
    )
