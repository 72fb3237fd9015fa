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
    l4_off: I64  # offset of the L4 header inside the packet
    payload_off: I64  # offset of the L4 payload inside the packet (-1 if unknown)
    vlan_outer: I64  # -1 when untagged
    vlan_inner: I64
    src_mac: U64  # 0 when the link type has no MAC
    dst_mac: U64


def _u16(hdr: U8, rows: I64, off: I64) -> I64:
    return (hdr[rows, off].astype(np.int64) << 8) | hdr[rows, off + 1]


def _u32(hdr: U8, rows: I64, off: I64) -> I64:
    return (
        (hdr[rows, off].astype(np.int64) << 24)
        | (hdr[rows, off + 1].astype(np.int64) << 16)
        | (hdr[rows, off + 2].astype(np.int64) << 8)
        | hdr[rows, off + 3]
    )


def _u64_at(hdr: U8, rows: I64, off: I64) -> U64:
    cols = off[:, None] + np.arange(8)
    raw = np.ascontiguousarray(hdr[rows[:, None], cols])
    return raw.view(">u8").reshape(-1).astype(np.uint64)


def _mac_at(hdr: U8, rows: I64, off: int) -> U64:
    raw = np.zeros((len(rows), 8), dtype=np.uint8)
    raw[:, 2:] = hdr[rows, off : off + 6]
    return raw.view(">u8").reshape(-1).astype(np.uint64)


_MAX_TUNNELS = 2
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = (0x8847, 0x8848)
PROTO_IPIP = 4
PROTO_IPV6_IN_IP = 41
GTP_U_PORT = 2152


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


def _pppoe_mpls(hdr: U8, caplen: I64, rows: I64, ethertype: I64, l3: I64) -> None:
    """Step over a PPPoE session header or an MPLS label stack to the IP header."""
    pppoe = (ethertype == ETH_PPPOE_SESSION) & (l3 + 8 <= caplen)
    if pppoe.any():
        r = rows[pppoe]
        ppp = _u16(hdr, r, l3[r] + 6)
        ethertype[r] = np.where(ppp == 0x0021, ETH_IPV4, np.where(ppp == 0x0057, ETH_IPV6, 0))
        l3[r] += 8
    mpls = np.isin(ethertype, ETH_MPLS)
    for _ in range(4):
        live = mpls & (l3 + 5 <= caplen)
        if not live.any():
            break
        r = rows[live]
        bottom = (hdr[r, l3[r] + 2] & 0x01) != 0
        l3[r] += 4
        done = r[bottom]
        if done.size:
            ver = hdr[done, l3[done]] >> 4
            ethertype[done] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
            mpls[done] = False
    ethertype[mpls] = 0


def _decode_l3(hdr: U8, caplen: I64, rows: I64, ethertype: I64, l3: I64, f: _L3) -> None:
    """IPv4/IPv6 headers (with IPv6 extension headers) of the packets in `rows`."""
    v4 = rows[(ethertype[rows] == ETH_IPV4) & (l3[rows] + 20 <= caplen[rows])]
    if v4.size:
        o = l3[v4]
        vihl = hdr[v4, o]
        ihl = (vihl & 0x0F).astype(np.int64) * 4
        good = ((vihl >> 4) == 4) & (ihl >= 20)
        f.truncated[v4[~good]] = True
        r, o, ihl = v4[good], o[good], ihl[good]
        f.is_ip[r] = True
        f.ip_version[r] = 4
        f.proto[r] = hdr[r, o + 9]
        f.ip_len[r] = _u16(hdr, r, o + 2)
        frag = _u16(hdr, r, o + 6)
        f.fragment[r] = (frag & 0x3FFF) != 0
        f.later_fragment[r] = (frag & 0x1FFF) != 0
        f.src_hi[r] = V4_MAPPED_HI
        f.dst_hi[r] = V4_MAPPED_HI
        f.src_lo[r] = V4_MAPPED_LO | _u32(hdr, r, o + 12).astype(np.uint64)
        f.dst_lo[r] = V4_MAPPED_LO | _u32(hdr, r, o + 16).astype(np.uint64)
        f.l4[r] = o + ihl

    v6 = rows[(ethertype[rows] == ETH_IPV6) & (l3[rows] + 40 <= caplen[rows])]
    if v6.size:
        o = l3[v6]
        good = (hdr[v6, o] >> 4) == 6
        f.truncated[v6[~good]] = True
        r, o = v6[good], o[good]
        f.is_ip[r] = True
        f.ip_version[r] = 6
        f.ip_len[r] = _u16(hdr, r, o + 4) + 40
        f.src_hi[r] = _u64_at(hdr, r, o + 8)
        f.src_lo[r] = _u64_at(hdr, r, o + 16)
        f.dst_hi[r] = _u64_at(hdr, r, o + 24)
        f.dst_lo[r] = _u64_at(hdr, r, o + 32)
        nh = hdr[r, o + 6].astype(np.int64)
        off = o + 40
        for _ in range(_IPV6_MAX_EXT):
            ext = np.isin(nh, _IPV6_EXT) & (off + 8 <= np.minimum(caplen[r], WINDOW))
            if not ext.any():
                break
            er, eo = r[ext], off[ext]
            enh = hdr[er, eo].astype(np.int64)
            is_frag = nh[ext] == 44
            is_ah = nh[ext] == 51
            elen = (hdr[er, eo + 1].astype(np.int64) + 1) * 8
            elen = np.where(is_frag, 8, np.where(is_ah, (hdr[er, eo + 1].astype(np.int64) + 2) * 4, elen))
            if is_frag.any():
                fr = er[is_frag]
                f.fragment[fr] = True
                f.later_fragment[fr] = (_u16(hdr, fr, eo[is_frag] + 2) >> 3) != 0
            nh[ext] = enh
            off[ext] = eo + elen
        # Extension-header chains longer than the window stay unknown: mark them truncated
        # (a later fragment has no further header to find).
        still_ext = np.isin(nh, _IPV6_EXT) & ~f.later_fragment[r]
        f.truncated[r[still_ext]] = True
        f.proto[r] = nh.astype(np.uint8)
        f.l4[r] = off


def _tunnel_payload(hdr: U8, caplen: I64, f: _L3) -> tuple[I64, I64, I64] | None:
    """Rows carrying IP in IP (4, 41) or GTP-U, with the inner header's offset and ethertype.

    Flows are keyed on the inner packet, as nDPI (with tunnel decoding) and Zeek do.
    """
    first = f.is_ip & ~f.later_fragment & ~f.truncated
    ipip = first & ((f.proto == PROTO_IPIP) | (f.proto == PROTO_IPV6_IN_IP))
    udp = first & (f.proto == PROTO_UDP) & (f.l4 + 16 <= np.minimum(caplen, WINDOW))
    gtp = np.zeros_like(udp)
    if udp.any():
        r = np.flatnonzero(udp)
        ports = (_u16(hdr, r, f.l4[r]) == GTP_U_PORT) | (_u16(hdr, r, f.l4[r] + 2) == GTP_U_PORT)
        g = f.l4[r] + 8
        # GTPv1-U G-PDU (message type 255) carrying a user packet.
        is_gpdu = ports & ((hdr[r, g] >> 5) == 1) & (hdr[r, g + 1] == 0xFF)
        gtp[r[is_gpdu]] = True
    if not (ipip.any() or gtp.any()):
        return None
    rows = np.flatnonzero(ipip | gtp)
    off = f.l4[rows].copy()
    is_gtp = gtp[rows]
    if is_gtp.any():
        gr = rows[is_gtp]
        g = f.l4[gr] + 8
        # Optional fields (sequence number, N-PDU, next extension type) add 4 bytes.
        has_opt = (hdr[gr, g] & 0x07) != 0
        off[is_gtp] = g + 8 + np.where(has_opt, 4, 0)
    ver = hdr[rows, np.minimum(off, WINDOW - 1)] >> 4
    inner_eth = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
    keep = inner_eth != 0
    return rows[keep], off[keep], inner_eth[keep]


def header_window(batch: PacketBatch, width: int = WINDOW) -> U8:
    """Copy the first `width` bytes of every packet into an (n, width) array.

    Bytes past a packet's captured length are whatever follows it in the buffer (or zero):
    the decoder checks lengths against `caplen` instead of masking.
    """
    data = batch.data
    need = int(batch.offsets.max()) + width if len(batch) else 0
    if need > len(data):
        data = np.concatenate([data, np.zeros(need - len(data), dtype=np.uint8)])
    windows = np.lib.stride_tricks.sliding_window_view(data, width)
    return np.asarray(windows[batch.offsets])


def decode(batch: PacketBatch) -> Decoded:
    """Decode link, network and transport headers of every packet in `batch`."""
    n = len(batch)
    hdr = header_window(batch)
    caplen = batch.caplen.astype(np.int64, copy=False)
    lt = batch.linktype
    rows = np.arange(n, dtype=np.int64)

    ethertype = np.zeros(n, dtype=np.int64)
    l3 = np.zeros(n, dtype=np.int64)
    vlan_outer = np.full(n, -1, dtype=np.int64)
    vlan_inner = np.full(n, -1, dtype=np.int64)
    src_mac = np.zeros(n, dtype=np.uint64)
    dst_mac = np.zeros(n, dtype=np.uint64)

    eth = (lt == LINKTYPE_ETHERNET) & (caplen >= 14)
    if eth.any():
        r = rows[eth]
        ethertype[r] = _u16(hdr, r, np.full(len(r), 12))
        l3[r] = 14
        dst_mac[r] = _mac_at(hdr, r, 0)
        src_mac[r] = _mac_at(hdr, r, 6)
    sll = (lt == LINKTYPE_LINUX_SLL) & (caplen >= 16)
    if sll.any():
        r = rows[sll]
        ethertype[r] = _u16(hdr, r, np.full(len(r), 14))
        l3[r] = 16
        # Only the sender's address is in the cooked header (6 bytes when it is a MAC).
        halen = _u16(hdr, r, np.full(len(r), 4))
        mac = _mac_at(hdr, r, 6)
        src_mac[r] = np.where(halen == 6, mac, np.uint64(0))
    sll2 = (lt == LINKTYPE_LINUX_SLL2) & (caplen >= 20)
    if sll2.any():
        r = rows[sll2]
        ethertype[r] = _u16(hdr, r, np.zeros(len(r), dtype=np.int64))
        l3[r] = 20
        mac = _mac_at(hdr, r, 12)
        src_mac[r] = np.where(hdr[r, 11] == 6, mac, np.uint64(0))
    raw = np.isin(lt, (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2, LINKTYPE_IPV4, LINKTYPE_IPV6)) & (
        caplen >= 1
    )
    if raw.any():
        r = rows[raw]
        ver = hdr[r, 0] >> 4
        ethertype[r] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
    loop = np.isin(lt, (LINKTYPE_NULL, LINKTYPE_LOOP)) & (caplen >= 4)
    if loop.any():
        r = rows[loop]
        # The address family is in the capturing host's byte order (NULL) or network order
        # (LOOP); the value is small, so whichever end byte is non-zero holds it.
        fam = np.where(hdr[r, 0] != 0, hdr[r, 0], hdr[r, 3]).astype(np.int64)
        ethertype[r] = np.where(fam == 2, ETH_IPV4, np.where(np.isin(fam, (10, 23, 24, 28, 30)), ETH_IPV6, 0))
        l3[r] = 4

    # VLAN tags (802.1Q, 802.1ad, old QinQ): up to two in the header window.
    for depth in range(2):
        tagged = np.isin(ethertype, VLAN_TPIDS) & (caplen >= l3 + 4)
        if not tagged.any():
            break
        r = rows[tagged]
        vid = _u16(hdr, r, l3[r]) & 0xFFF
        if depth == 0:
            vlan_outer[r] = vid
        else:
            vlan_inner[r] = vid
        ethertype[r] = _u16(hdr, r, l3[r] + 2)
        l3[r] += 4
    _pppoe_mpls(hdr, caplen, rows, ethertype, l3)

    f = _L3(n)
    _decode_l3(hdr, caplen, rows[(ethertype == ETH_IPV4) | (ethertype == ETH_IPV6)], ethertype, l3, f)
    for _ in range(_MAX_TUNNELS):
        inner = _tunnel_payload(hdr, caplen, f)
        if inner is None:
            break
        r, inner_off, inner_eth = inner
        ethertype[r] = inner_eth
        l3[r] = inner_off
        f.reset(r)
        _decode_l3(hdr, caplen, r, ethertype, l3, f)

    is_ip, proto, l4, truncated, later_fragment = f.is_ip, f.proto, f.l4, f.truncated, f.later_fragment
    # Frames that claim IP but whose IP header is cut short.
    truncated |= np.isin(ethertype, (ETH_IPV4, ETH_IPV6)) & ~is_ip
    sport = np.zeros(n, dtype=np.int64)
    dport = np.zeros(n, dtype=np.int64)
    tcp_flags = np.zeros(n, dtype=np.uint8)
    icmp_type = np.full(n, -1, dtype=np.int64)
    icmp_code = np.full(n, -1, dtype=np.int64)
    payload = np.full(n, -1, dtype=np.int64)

    first = is_ip & ~later_fragment & ~truncated
    has_ports = first & np.isin(proto, (PROTO_TCP, PROTO_UDP, PROTO_SCTP))
    short = has_ports & (l4 + 4 > caplen)
    truncated |= short
    has_ports &= ~short
    if has_ports.any():
        r = rows[has_ports]
        sport[r] = _u16(hdr, r, l4[r])
        dport[r] = _u16(hdr, r, l4[r] + 2)
    tcp = has_ports & (proto == PROTO_TCP) & (l4 + 14 <= caplen) & (l4 + 14 <= WINDOW)
    if tcp.any():
        r = rows[tcp]
        tcp_flags[r] = hdr[r, l4[r] + 13]
        doff = (hdr[r, l4[r] + 12] >> 4).astype(np.int64) * 4
        payload[r] = l4[r] + doff
    udp = has_ports & (proto == PROTO_UDP)
    payload[udp] = l4[udp] + 8
    icmp = first & ((proto == PROTO_ICMP) | (proto == PROTO_ICMPV6)) & (l4 + 2 <= caplen)
    if icmp.any():
        r = rows[icmp]
        icmp_type[r] = hdr[r, l4[r]]
        icmp_code[r] = hdr[r, l4[r] + 1]
        payload[r] = l4[r] + 8
    ip_version, fragment, ip_len = f.ip_version, f.fragment, f.ip_len
    src_hi, src_lo, dst_hi, dst_lo = f.src_hi, f.src_lo, f.dst_hi, f.dst_lo

    return Decoded(
        n=n,
        ts_ns=batch.ts_ns,
        wirelen=batch.wirelen.astype(np.int64, copy=False),
        ok=first & ~truncated,
        is_ip=is_ip,
        fragment=fragment,
        later_fragment=later_fragment,
        truncated=truncated,
        ip_version=ip_version,
        proto=proto,
        src_hi=src_hi,
        src_lo=src_lo,
        dst_hi=dst_hi,
        dst_lo=dst_lo,
        sport=sport,
        dport=dport,
        tcp_flags=tcp_flags,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        ip_len=ip_len,
        l4_off=l4,
        payload_off=payload,
        vlan_outer=vlan_outer,
        vlan_inner=vlan_inner,
        src_mac=src_mac,
        dst_mac=dst_mac,
    )
