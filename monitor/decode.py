"""Vectorised L2-L4 header decoding of a packet batch.

Every packet's headers are decoded once, with numpy over the whole batch: the per-packet
Python cost is what limits a gateway, and the bulk of camera traffic (RTP video) only needs
the 5-tuple, the length and the timestamp. Link types: Ethernet (with 802.1Q/802.1ad/QinQ),
Linux SLL and SLL2, raw IPv4/IPv6, BSD loopback (NULL and LOOP), Apple PKTAP around any of these.
Looked through: PPPoE, MPLS, IP in IP, GTP-U, and the remote-mirror encapsulations (GRE, ERSPAN I/II/III,
VXLAN), whose inner Ethernet frame is decoded like a captured one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from monitor.iana import LOCAL_NETWORKS
from monitor.pcapfile import PacketBatch

# Bytes of each packet copied by header_window() (a helper for tools and tests; decode() gathers each
# layer at its own offset, so no header is limited by it).
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
LINKTYPE_PKTAP = 258

# The link types decode() reads; packets of any other are counted by link type (`undecoded_linktypes`).
SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_OLD,
        LINKTYPE_RAW_OLD2,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_PKTAP,
    }
)
_SUPPORTED_LT = np.array(sorted(SUPPORTED_LINKTYPES), dtype=np.uint16)
# Names of the link types a capture is likely to have (tcpdump.org/linktypes.html), for messages.
LINKTYPE_NAMES: dict[int, str] = {
    0: "BSD loopback",
    1: "Ethernet",
    6: "IEEE 802.5 Token Ring",
    8: "SLIP",
    9: "PPP",
    10: "FDDI",
    12: "raw IP",
    14: "raw IP",
    50: "PPP in HDLC framing",
    51: "PPPoE",
    101: "raw IP",
    104: "Cisco HDLC",
    105: "IEEE 802.11",
    107: "Frame Relay",
    108: "OpenBSD loopback",
    113: "Linux SLL",
    117: "OpenBSD pflog",
    119: "IEEE 802.11 Prism",
    127: "IEEE 802.11 radiotap",
    138: "Apple IP over IEEE 1394",
    143: "DOCSIS",
    163: "IEEE 802.11 AVS",
    187: "Bluetooth HCI H4",
    192: "PPI",
    195: "IEEE 802.15.4",
    201: "Bluetooth HCI H4 with direction",
    204: "PPP with direction",
    209: "Linux netlink",
    215: "IEEE 802.15.4 non-ASK PHY",
    220: "USB (Linux, mmapped)",
    228: "raw IPv4",
    229: "raw IPv6",
    230: "IEEE 802.15.4 without FCS",
    231: "D-Bus",
    249: "Linux netlink",
    251: "Bluetooth LE link layer",
    253: "Linux netlink",
    256: "Bluetooth LE link layer (pseudo-header)",
    258: "Apple PKTAP",
    276: "Linux SLL2",
    283: "IEEE 802.15.4 TAP",
    290: "Linux USB monitor",
}

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
IPV6_EXT_HEADERS = (0, 43, 44, 60, 51, 135, 139, 140)
_IPV6_EXT = np.array(IPV6_EXT_HEADERS, dtype=np.uint8)
# Headers walked per packet. RFC 8200 4.1 allows each type once (destination options twice), so a
# legitimate chain has at most 9 before the upper layer (an ESP or a shim6 header ends it); 8 covers every
# chain seen in practice (5 with a fragment between two destination options is common on the Internet).
# Each step runs only for the packets still walking, so a longer walk costs nothing for ordinary traffic;
# what is still unfinished after it is counted in `ext_overflow`, not as truncated.
IPV6_MAX_EXT = 8
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
    ext_overflow: BOOL  # IPv6 packet with more extension headers than we walk (IPV6_MAX_EXT)
    decapsulated: BOOL  # its fields are a tunnelled inner packet's (IP in IP, GTP-U, GRE, ERSPAN, VXLAN)
    undecoded_linktype: BOOL  # of a link type decode() does not read (not in SUPPORTED_LINKTYPES)
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
        self.ext_overflow = np.zeros(n, dtype=bool)
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
        for arr in (self.is_ip, self.truncated, self.ext_overflow, self.fragment, self.later_fragment):
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
        # An IPv4-mapped address (::ffff:a.b.c.d) is never on the wire (RFC 4291 2.5.5.2; Linux drops such a
        # packet): stored as camwatch stores IPv4, it would join the IPv4 flow of the same addresses, where an
        # attacker's decoy segment could hide a request the camera really received. Malformed, not a flow's.
        mapped = ((a[:, 0] == 0) & ((a[:, 1] >> 32) == 0xFFFF)) | (
            (a[:, 2] == 0) & ((a[:, 3] >> 32) == 0xFFFF)
        )
        if mapped.any():
            f.truncated[v6[mapped]] = True
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
    for _ in range(IPV6_MAX_EXT):
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
    # Still in the chain after the walk (a later fragment has no further header to find): either the
    # next header is cut by the snap length (truncated) or the chain is longer than we walk.
    unknown = np.isin(sub_nh, _IPV6_EXT) & ~f.later_fragment[er]
    cut = unknown & (sub_off + 8 > caplen[er])
    f.truncated[er[cut]] = True
    f.ext_overflow[er[unknown & ~cut]] = True
    nh[ext] = sub_nh
    off[ext] = sub_off


# `_tunnel_payload`'s inner type of a tunnel that carries a whole Ethernet frame (a remote mirror).
_ETHER_FRAME = -1
PROTO_GRE = 47
VXLAN_PORT = 4789  # IANA's; also AWS VPC Traffic Mirroring's
ETH_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame in GRE
ETH_ERSPAN_2 = 0x88BE  # ERSPAN type II (type I when GRE has no sequence number)
ETH_ERSPAN_3 = 0x22EB
_GRE_C, _GRE_R, _GRE_K, _GRE_S, _GRE_VER = 0x8000, 0x4000, 0x2000, 0x1000, 0x0007


def _gre(data: U8, offs: I64, caplen: I64, rows: I64, h: U8, l4: I64) -> tuple[I64, I64, BOOL]:
    """Inner offset and type (an ethertype, _ETHER_FRAME, or 0: not decoded) of GRE packets (rare), and which
    are plain GRE (an IP packet or an Ethernet frame inside, not ERSPAN).

    GRE (RFC 2784/2890): 4 bytes, then 4 for each of the checksum, key and sequence number its flags
    announce. Version 1 (PPTP's enhanced GRE, PPP inside) and source routing (RFC 1701, obsolete) stay
    GRE packets. ERSPAN type I is GRE 0x88BE without a sequence number and no header of its own; type II
    adds 8 bytes (version 1), type III (0x22EB) 12 bytes (version 2) and an 8-byte platform subheader
    when its O bit is set; type III's frame type says whether an Ethernet frame (0) or an IP packet (2)
    follows.
    """
    flags, ptype = _be16(h[:, 0:2]), _be16(h[:, 2:4])
    seq = (flags & _GRE_S) != 0
    off = l4 + 4 + 4 * (((flags & _GRE_C) != 0).astype(np.int64) + ((flags & _GRE_K) != 0) + seq)
    inner = np.select(
        [ptype == ETH_IPV4, ptype == ETH_IPV6, ptype == ETH_TEB], [ETH_IPV4, ETH_IPV6, _ETHER_FRAME], 0
    )
    erspan = np.flatnonzero((ptype == ETH_ERSPAN_2) | (ptype == ETH_ERSPAN_3))
    if erspan.size:
        eh = gather(data, offs[rows[erspan]] + off[erspan], 12)
        ver = eh[:, 0] >> 4
        v3 = ptype[erspan] == ETH_ERSPAN_3
        type1 = ~v3 & ~seq[erspan]
        type2 = ~v3 & seq[erspan] & (ver == 1)
        frame_type = (eh[:, 10] >> 2) & 0x1F
        type3 = v3 & (ver == 2) & ((frame_type == 0) | (frame_type == 2))
        hlen = np.where(type2, 8, np.where(type3, 12 + 8 * (eh[:, 11] & 0x01).astype(np.int64), 0))
        off[erspan] += hlen
        # 0 for an IP packet in type III: its version nibble tells which (see _tunnel_payload).
        inner[erspan] = np.where(type1 | type2 | (type3 & (frame_type == 0)), _ETHER_FRAME, 0)
        inner[erspan[type3 & (frame_type == 2)]] = _IP_BY_VERSION
    inner[((flags & (_GRE_R | _GRE_VER)) != 0) | (off > caplen[rows])] = 0
    plain = (inner != 0) & ((ptype == ETH_IPV4) | (ptype == ETH_IPV6) | (ptype == ETH_TEB))
    return off, inner, plain


_IP_BY_VERSION = -2  # the inner IP version is read from the packet


def _tunnel_payload(data: U8, offs: I64, caplen: I64, f: _L3, h4: U8) -> tuple[I64, I64, I64, BOOL] | None:
    """Rows carrying a tunnelled packet, with the inner header's offset and ethertype (_ETHER_FRAME: an
    Ethernet frame), and which are a tunnel a device could send of its own (IP in IP, plain GRE: what Mirai's
    GRE floods send; not a mirror's ERSPAN or VXLAN, nor GTP-U). IP in IP (4, 41), GTP-U, GRE (IP, Ethernet,
    ERSPAN) and VXLAN.

    Flows are keyed on the inner packet, as nDPI (with tunnel decoding) and Zeek do: the outer pair is the
    tunnel's or the mirror's infrastructure (a switch sending its mirror to the collector), not a device's.
    """
    first = f.is_ip & ~f.later_fragment & ~f.truncated & ~f.ext_overflow
    proto = f.proto
    ipip = first & ((proto == PROTO_IPIP) | (proto == PROTO_IPV6_IN_IP))
    gre = first & (proto == PROTO_GRE) & (f.l4 + 4 <= caplen)
    udp = first & (proto == PROTO_UDP) & (f.l4 + 16 <= caplen)
    dport = _be16(h4[:, 2:4])
    ports_gtp = (_be16(h4[:, 0:2]) == GTP_U_PORT) | (dport == GTP_U_PORT)
    # GTPv1-U G-PDU (message type 255) carrying a user packet.
    gtp = udp & ports_gtp & ((h4[:, 8] >> 5) == 1) & (h4[:, 9] == 0xFF)
    # VXLAN (RFC 7348): to port 4789 (the source port is a flow hash), the I flag set.
    vxlan = udp & (dport == VXLAN_PORT) & ((h4[:, 8] & 0x08) != 0)
    if not (ipip.any() or gtp.any() or gre.any() or vxlan.any()):
        return None
    rows = np.flatnonzero(ipip | gtp | gre | vxlan)
    l4, h = f.l4[rows], h4[rows]
    # IP in IP: the inner header follows. GTP-U: optional fields (sequence number, N-PDU, next extension
    # type) add 4 bytes. VXLAN: 8 bytes, then an Ethernet frame.
    off = l4.copy()
    inner = np.full(len(rows), _IP_BY_VERSION, dtype=np.int64)
    g = gtp[rows]
    off[g] += 16 + np.where((h[g, 8] & 0x07) != 0, 4, 0)
    v = vxlan[rows]
    off[v] += 16
    inner[v] = _ETHER_FRAME
    ownable = ipip[rows]
    gr = np.flatnonzero(gre[rows])
    if gr.size:
        off[gr], inner[gr], ownable[gr] = _gre(data, offs, caplen, rows[gr], h[gr], l4[gr])
    by_version = inner == _IP_BY_VERSION
    if by_version.any():
        first_byte = gather(data, offs[rows[by_version]] + off[by_version], 1)[:, 0]
        ver = np.where(off[by_version] < caplen[rows[by_version]], first_byte >> 4, 0)
        inner[by_version] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
    # An inner frame or packet cut by the snap length stays the outer packet (as with IP in IP).
    need = np.where(inner == _ETHER_FRAME, 14, 1)
    keep = (inner != 0) & (off + need <= caplen[rows])
    return rows[keep], off[keep], inner[keep], ownable[keep]


def _vlan_tags(data: U8, offs: I64, caplen: I64, ethertype: I64, l3: I64, outer: I64, inner: I64) -> None:
    """Up to two VLAN tags (802.1Q, 802.1ad, old QinQ) after the link header, for the rows of these arrays."""
    for depth in range(2):
        tagged = np.flatnonzero(np.isin(ethertype, VLAN_TPIDS) & (caplen >= l3 + 4))
        if not tagged.size:
            break
        tag = gather(data, offs[tagged] + l3[tagged], 4)
        (outer if depth == 0 else inner)[tagged] = _be16(tag[:, 0:2]) & 0xFFF
        ethertype[tagged] = _be16(tag[:, 2:4])
        l3[tagged] += 4


@dataclass(slots=True)
class _L2:
    """Link-layer fields, one entry per packet of the batch."""

    ethertype: I64
    l3: I64
    vlan_outer: I64
    vlan_inner: I64
    src_mac: U64
    dst_mac: U64


def _inner_ethernet(data: U8, offs: I64, caplen: I64, rows: I64, at: I64, l2: _L2) -> None:
    """Decode the Ethernet frame a mirror tunnel carries at `at` in each of `rows` (its MACs and VLAN
    tags are the mirrored devices'; the outer frame's are the mirror transport's), up to the IP header."""
    h = gather(data, offs[rows] + at, 14)
    l2.dst_mac[rows] = _mac(h[:, 0:6])
    l2.src_mac[rows] = _mac(h[:, 6:12])
    sub_offs, sub_cap = offs[rows], caplen[rows]
    et, l3 = _be16(h[:, 12:14]), at + 14
    outer = np.full(len(rows), -1, dtype=np.int64)
    inner = outer.copy()
    _vlan_tags(data, sub_offs, sub_cap, et, l3, outer, inner)
    if np.isin(et, (ETH_PPPOE_SESSION, *ETH_MPLS)).any():
        _pppoe_mpls(data, sub_offs, sub_cap, et, l3)
    l2.ethertype[rows], l2.l3[rows], l2.vlan_outer[rows], l2.vlan_inner[rows] = et, l3, outer, inner


def undecoded_message(counts: dict[int, int]) -> str:
    """One sentence for packets of link types camwatch does not decode (``EngineStats.undecoded_linktypes``):
    ``"3 packets of link type 127 (IEEE 802.11 radiotap) not decoded: camwatch reads Ethernet, ..."``."""
    parts = []
    for lt, n in sorted(counts.items()):
        name = LINKTYPE_NAMES.get(lt)
        parts.append(
            f"{n:,} packet{'s' if n != 1 else ''} of link type {lt}" + (f" ({name})" if name else "")
        )
    return (
        f"{', '.join(parts)} not decoded: camwatch reads Ethernet, Linux SLL/SLL2, raw IP, BSD loopback "
        "and Apple PKTAP"
    )


def _pktap(
    data: U8, offs: I64, caplen: I64, rows: I64, lt: npt.NDArray[np.uint16], h: U8
) -> tuple[I64, BOOL]:
    """Apple PKTAP (`tcpdump -i pktap` on macOS): a header whose length is its first 32-bit word, the record
    type (1: a packet) and the packet's own link type next (all little-endian, the capturing Mac's order).
    Rewrites `lt` and `h` for the rows it can read; returns the header lengths and the rows it cannot."""
    ph = gather(data, offs[rows], 12).view("<u4").astype(np.int64)
    plen, rectype, inner = ph[:, 0], ph[:, 1], ph[:, 2]
    good = (rectype == 1) & (plen >= 12) & (plen <= caplen[rows]) & np.isin(inner, _SUPPORTED_LT)
    good &= inner != LINKTYPE_PKTAP
    ok = rows[good]
    lt[ok] = inner[good]
    h[ok] = gather(data, offs[ok] + plen[good], h.shape[1])
    base = np.zeros(len(offs), dtype=np.int64)
    base[ok] = plen[good]
    bad = np.zeros(len(offs), dtype=bool)
    bad[rows[~good]] = True
    return base, bad


class TunnelOwners(Protocol):
    """Who sends tunnels of its own (kept as their outer packet, not looked through). Asked only of plain
    GRE and IP in IP that wrap packets from no site's address and go to an address off every site: once per
    distinct source MAC, then once per distinct sender address (at most `_MAX_ASKED` of each a batch, the
    busiest first)."""

    def mac(self, mac: int) -> bool:
        """The frame's source MAC is such a device's own."""
        ...

    def address(self, version: int, src: tuple[int, int]) -> bool:
        """The sender's address (the (hi, lo) halves of flow keys) is such a device's."""
        ...


# The IPv4 networks of a site's own hosts (LOCAL_NETWORKS, and loopback), whence the inner packets of its
# mirrors and VPNs come; as (network, prefix length). IPv6's (ULA, link-local) are read by `_site_v6`.
_SITE_V4 = tuple(
    (int(net.network_address), net.prefixlen)
    for net in map(ipaddress.IPv4Network, (*(n for n in LOCAL_NETWORKS if ":" not in n), "127.0.0.0/8"))
)
_MAX_ASKED = 64  # distinct MACs, and sender addresses, asked about per batch (the busiest first)


def _site_v4(addr: I64) -> BOOL:
    site = np.zeros(len(addr), dtype=bool)
    for net, bits in _SITE_V4:
        site |= (addr >> (32 - bits)) == (net >> (32 - bits))
    return site


def _site_v6(b0: I64, b1: I64) -> BOOL:
    """From an IPv6 address's first two bytes: ULA (fc00::/7) or link-local (fe80::/10)."""
    site: BOOL = ((b0 & 0xFE) == 0xFC) | ((b0 == 0xFE) & ((b1 & 0xC0) == 0x80))
    return site


def _foreign_inner_source(data: U8, offs: I64, caplen: I64, rows: I64, at: I64, inner: I64) -> BOOL:
    """Tunnelled packets whose source is no site's address (IPv4 not private, shared, loopback or link-local;
    IPv6 not ULA or link-local): what a GRE flood wraps (random addresses), never a mirror's packets or those
    of a site-to-site VPN, whose sources are the site's hosts. An Ethernet frame is read when it carries IP
    untagged; anything unreadable is not foreign."""
    ip = at.copy()
    version = np.zeros(len(rows), dtype=np.int64)
    version[inner == ETH_IPV4], version[inner == ETH_IPV6] = 4, 6
    frames = np.flatnonzero(inner == _ETHER_FRAME)
    if frames.size:
        et = _be16(gather(data, offs[rows[frames]] + at[frames] + 12, 2))
        version[frames] = np.where(et == ETH_IPV4, 4, np.where(et == ETH_IPV6, 6, 0))
        ip[frames] += 14
    head = gather(data, offs[rows] + ip, 24)
    whole = ip + np.where(version == 6, 40, 20) <= caplen[rows]
    v4 = whole & (version == 4) & ((head[:, 0] >> 4) == 4)
    v6 = whole & (version == 6) & ((head[:, 0] >> 4) == 6)
    src4 = head[:, 12:16].copy().view(">u4").reshape(-1).astype(np.int64)
    site6 = _site_v6(head[:, 8].astype(np.int64), head[:, 9].astype(np.int64))
    foreign: BOOL = (v4 & ~_site_v4(src4)) | (v6 & ~site6)
    return foreign


def _off_every_site(version: U8, hi: U64, lo: U64) -> BOOL:
    """Addresses no site owns or shares: not private, shared, loopback, link-local, ULA, multicast or the
    limited broadcast."""
    v4 = version == 4
    a4 = (lo & np.uint64(0xFFFFFFFF)).astype(np.int64)
    b0 = (hi >> np.uint64(56)).astype(np.int64)
    b1 = ((hi >> np.uint64(48)) & np.uint64(0xFF)).astype(np.int64)
    group4 = ((a4 >> 28) == 0xE) | (a4 == 0xFFFFFFFF)
    off: BOOL = np.where(v4, ~_site_v4(a4) & ~group4, ~_site_v6(b0, b1) & (b0 != 0xFF))
    return off


def _ask(keys: U64, ask: Callable[[int], bool]) -> BOOL:
    """``ask`` of each distinct key (given a row holding it), the `_MAX_ASKED` most frequent; others False."""
    distinct, first, which, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    verdict = np.zeros(len(distinct), dtype=bool)
    for k in np.argsort(-counts, kind="stable")[:_MAX_ASKED]:
        verdict[k] = ask(int(first[k]))
    out: BOOL = verdict[which.reshape(-1)]
    return out


def _own_tunnels(rows: I64, f: _L3, l2: _L2, owners: TunnelOwners) -> BOOL:
    """Which of the tunnel `rows` (wrapping packets from no site's address) stay their outer packet: sent to
    an address off every site, by a device `owners` names by its MAC or by its address."""
    kept = _off_every_site(f.ip_version[rows], f.dst_hi[rows], f.dst_lo[rows])
    if not kept.any():
        return kept
    macs = l2.src_mac[rows]
    by_mac = _ask(macs, lambda i: owners.mac(int(macs[i])))
    rest = kept & ~by_mac
    if rest.any():
        at = rows[rest]
        ver, hi, lo = f.ip_version[at], f.src_hi[at], f.src_lo[at]
        key = ((hi * _MIX) ^ lo) * _MIX + ver
        by_address = _ask(key, lambda i: owners.address(int(ver[i]), (int(hi[i]), int(lo[i]))))
        kept[np.flatnonzero(rest)[~by_address]] = False
    return kept


_MIX = np.uint64(0x9E3779B97F4A7C15)  # folds a sender's address into one key (wrapping arithmetic)


def decode(batch: PacketBatch, own_tunnel: TunnelOwners | None = None) -> Decoded:
    """Decode link, network and transport headers of every packet in `batch`.

    Tunnels and remote mirrors are looked through (`_tunnel_payload`), except the plain GRE and IP in IP that
    wrap packets from no site's address, go off every site, and whose sender `own_tunnel` names: those stay
    their outer packet.
    """
    n = len(batch)
    data = batch.data
    offs = batch.offsets
    caplen = batch.caplen.astype(np.int64, copy=False)
    lt = batch.linktype

    l2 = _L2(
        ethertype=np.zeros(n, dtype=np.int64),
        l3=np.zeros(n, dtype=np.int64),
        vlan_outer=np.full(n, -1, dtype=np.int64),
        vlan_inner=np.full(n, -1, dtype=np.int64),
        src_mac=np.zeros(n, dtype=np.uint64),
        dst_mac=np.zeros(n, dtype=np.uint64),
    )
    ethertype, l3, src_mac, dst_mac = l2.ethertype, l2.l3, l2.src_mac, l2.dst_mac

    # One gather covers the usual packet (untagged Ethernet, IPv4 without options, the first
    # 20 bytes of TCP/UDP); the rest take per-layer gathers below.
    h = gather(data, offs, _FASTW)
    h2 = h[:, :_L2W]
    all_eth = bool((lt == LINKTYPE_ETHERNET).all())
    undecoded = np.zeros(n, dtype=bool)
    base: I64 | None = None  # link header offset: PKTAP's header length, else 0
    lcap = caplen  # captured bytes from the link header on
    if not all_eth:
        undecoded = np.isin(lt, _SUPPORTED_LT, invert=True)
        pk = np.flatnonzero(lt == LINKTYPE_PKTAP)
        if pk.size:
            lt = lt.copy()
            base, bad = _pktap(data, offs, caplen, pk, lt, h)
            undecoded |= bad
            lcap = caplen - base
    eth = np.ones(n, dtype=bool) if all_eth else (lt == LINKTYPE_ETHERNET)
    eth &= lcap >= 14
    if eth.any():
        sel: slice | I64 = slice(None) if eth.all() else np.flatnonzero(eth)
        ethertype[sel] = _be16(h2[sel, 12:14])
        l3[sel] = 14
        dst_mac[sel] = _mac(h2[sel, 0:6])
        src_mac[sel] = _mac(h2[sel, 6:12])
    if not all_eth:
        sll = np.flatnonzero((lt == LINKTYPE_LINUX_SLL) & (lcap >= 16))
        if sll.size:
            ethertype[sll] = _be16(h2[sll, 14:16])
            l3[sll] = 16
            # Only the sender's address is in the cooked header (6 bytes when it is a MAC).
            src_mac[sll] = np.where(_be16(h2[sll, 4:6]) == 6, _mac(h2[sll, 6:12]), np.uint64(0))
        sll2 = np.flatnonzero((lt == LINKTYPE_LINUX_SLL2) & (lcap >= 20))
        if sll2.size:
            ethertype[sll2] = _be16(h2[sll2, 0:2])
            l3[sll2] = 20
            src_mac[sll2] = np.where(h2[sll2, 11] == 6, _mac(h2[sll2, 12:18]), np.uint64(0))
        raw_types = (LINKTYPE_RAW, LINKTYPE_RAW_OLD, LINKTYPE_RAW_OLD2, LINKTYPE_IPV4, LINKTYPE_IPV6)
        raw = np.flatnonzero(np.isin(lt, raw_types) & (lcap >= 1))
        if raw.size:
            ver = h2[raw, 0] >> 4
            ethertype[raw] = np.where(ver == 4, ETH_IPV4, np.where(ver == 6, ETH_IPV6, 0))
        loop = np.flatnonzero(np.isin(lt, (LINKTYPE_NULL, LINKTYPE_LOOP)) & (lcap >= 4))
        if loop.size:
            # The address family is in the capturing host's byte order (NULL) or network order
            # (LOOP); the value is small, so whichever end byte is non-zero holds it.
            fam = np.where(h2[loop, 0] != 0, h2[loop, 0], h2[loop, 3]).astype(np.int64)
            v6_fams = np.isin(fam, (10, 23, 24, 28, 30))
            ethertype[loop] = np.where(fam == 2, ETH_IPV4, np.where(v6_fams, ETH_IPV6, 0))
            l3[loop] = 4
        if base is not None:
            l3 += base

    _vlan_tags(data, offs, caplen, ethertype, l3, l2.vlan_outer, l2.vlan_inner)
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
    decapsulated = np.zeros(n, dtype=bool)
    for _ in range(_MAX_TUNNELS):
        inner = _tunnel_payload(data, offs, caplen, f, h4)
        if inner is None:
            break
        r, inner_off, inner_eth, ownable = inner
        if own_tunnel is not None and ownable.any():
            asked = np.flatnonzero(ownable)
            asked = asked[
                _foreign_inner_source(data, offs, caplen, r[asked], inner_off[asked], inner_eth[asked])
            ]
            if asked.size:
                through = np.ones(len(r), dtype=bool)
                through[asked[_own_tunnels(r[asked], f, l2, own_tunnel)]] = False
                r, inner_off, inner_eth = r[through], inner_off[through], inner_eth[through]
        if not r.size:
            break
        frames = inner_eth == _ETHER_FRAME
        if frames.any():
            _inner_ethernet(data, offs, caplen, r[frames], inner_off[frames], l2)
        ethertype[r[~frames]] = inner_eth[~frames]
        l3[r[~frames]] = inner_off[~frames]
        decapsulated[r] = True
        f.reset(r)
        _decode_l3(data, offs, caplen, r, ethertype, l3, f)
        h4[r] = gather(data, offs[r] + f.l4[r], _L4W)

    is_ip, proto, l4, truncated, later_fragment = f.is_ip, f.proto, f.l4, f.truncated, f.later_fragment
    # Frames that claim IP but whose IP header is cut short.
    truncated |= ((ethertype == ETH_IPV4) | (ethertype == ETH_IPV6)) & ~is_ip & ~f.ext_overflow
    first = is_ip & ~later_fragment & ~truncated & ~f.ext_overflow
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

    wirelen = batch.wirelen.astype(np.int64, copy=False)
    # A TSO/GRO super-frame (Linux BIG TCP) says IPv4 total length 0, or IPv6 payload length 0 past 64 kB: its
    # IP length is the rest of the frame, as Wireshark's TSO option reads it (else its IP bytes count 0).
    ip_len = f.ip_len
    ver = f.ip_version
    big = is_ip & (((ver == 4) & (ip_len == 0)) | ((ver == 6) & (ip_len == 40) & (wirelen - l3 > 65_575)))
    if big.any():
        ip_len[big] = wirelen[big] - l3[big]

    return Decoded(
        n=n,
        ts_ns=batch.ts_ns,
        wirelen=wirelen,
        ok=first & ~truncated,
        is_ip=is_ip,
        fragment=f.fragment,
        later_fragment=later_fragment,
        truncated=truncated,
        ext_overflow=f.ext_overflow,
        decapsulated=decapsulated,
        undecoded_linktype=undecoded,
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
        vlan_outer=l2.vlan_outer,
        vlan_inner=l2.vlan_inner,
        src_mac=src_mac,
        dst_mac=dst_mac,
        data=data,
        offsets=offs,
    )
