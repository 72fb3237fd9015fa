"""Peer: the straightforward dpkt loop that builds camwatch's flow table.

    python benchmarks/peers/dpkt_flows.py PCAP [--flows-out FILE]

One packet at a time: `dpkt.pcap.Reader`, `dpkt.ethernet.Ethernet` (802.1Q/QinQ tags from dpkt's
own parsing), IPv4/IPv6, TCP/UDP ports, ICMP and other protocols with ports 0. Flows are
bidirectional, keyed (vlan outer, vlan inner, IP protocol, lower (ip, port), higher (ip, port)),
with per-direction packets and frame bytes, and the same life rules as `monitor.flows`:

* idle timeout: TCP 300 s, UDP and others 60 s; active timeout 1800 s;
* TCP close on RST or FIN from both sides; a closed flow lingers 5 s (the last ACK still
  belongs to it) and a SYN without ACK after the close starts a new flow.

Frame bytes: camwatch counts the pcap record's original length, but dpkt's Reader only hands
out the captured buffer, so `len(buf)` is used. That is exact when no frame was cut by the
snap length (true of the generated benchmark capture, snaplen 256 KiB); frames as long as the
snap length may have been cut and are counted in `maybe_truncated`.

Timestamps are dpkt's float seconds: microsecond resolution survives (doubles hold ~0.4 µs at
today's epoch), which is enough for second-scale timeouts.

Prints one JSON line on stdout: flows, packets, bytes (and the breakdown).
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
from typing import Any, TextIO

import dpkt

TCP_IDLE = 300.0
OTHER_IDLE = 60.0  # UDP and everything else
ACTIVE = 1800.0
CLOSE_LINGER = 5.0
SWEEP_EVERY = 1.0  # seconds of capture time between sweeps of idle flows

PROTO_TCP, PROTO_UDP = 6, 17
FIN, SYN, RST, ACK = dpkt.tcp.TH_FIN, dpkt.tcp.TH_SYN, dpkt.tcp.TH_RST, dpkt.tcp.TH_ACK

Endpoint = tuple[bytes, int]
Key = tuple[int, int, int, Endpoint, Endpoint]


class Flow:
    """One bidirectional flow; side a is the lower (address, port) of the key."""

    __slots__ = (
        "a_first",
        "bytes_a",
        "bytes_b",
        "closed",
        "fin_a",
        "fin_b",
        "key",
        "last",
        "pkts_a",
        "pkts_b",
        "start",
    )

    def __init__(self, key: Key, ts: float, a_first: bool) -> None:
        self.key = key
        self.start = self.last = ts
        self.a_first = a_first
        self.pkts_a = self.pkts_b = self.bytes_a = self.bytes_b = 0
        self.fin_a = self.fin_b = False
        self.closed: float | None = None


def _ip_str(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def flow_record(flow: Flow, reason: str) -> dict[str, Any]:
    """A compact record for cross-checking against camwatch's flow output."""
    vo, vi, proto, a, b = flow.key
    src, dst = (a, b) if flow.a_first else (b, a)
    s_counts = (flow.pkts_a, flow.bytes_a) if flow.a_first else (flow.pkts_b, flow.bytes_b)
    d_counts = (flow.pkts_b, flow.bytes_b) if flow.a_first else (flow.pkts_a, flow.bytes_a)
    return {
        "proto": proto,
        "vlan": [vo, vi],
        "src": [_ip_str(src[0]), src[1], *s_counts],
        "dst": [_ip_str(dst[0]), dst[1], *d_counts],
        "start": flow.start,
        "end": flow.last,
        "reason": reason,
    }


def run(path: str, records: TextIO | None) -> dict[str, Any]:
    flows: dict[Key, Flow] = {}
    created = packets = total_bytes = 0
    flow_packets = flow_bytes = non_ip = truncated = later_fragments = maybe_truncated = 0
    next_sweep = 0.0

    def end(flow: Flow, reason: str) -> None:
        del flows[flow.key]
        if records is not None:
            records.write(json.dumps(flow_record(flow, reason)) + "\n")

    with open(path, "rb") as f:
        pcap = dpkt.pcap.Reader(f)
        snaplen = pcap.snaplen
        for ts, buf in pcap:
            packets += 1
            wirelen = len(buf)
            total_bytes += wirelen
            if wirelen >= snaplen:
                maybe_truncated += 1

            # Expire idle and lingering flows now and then, so the table stays bounded.
            if ts >= next_sweep:
                next_sweep = ts + SWEEP_EVERY
                for old in list(flows.values()):
                    idle = TCP_IDLE if old.key[2] == PROTO_TCP else OTHER_IDLE
                    if ts - old.last > idle:
                        end(old, "idle")
                    elif old.closed is not None and ts - old.closed > CLOSE_LINGER:
                        end(old, "closed")

            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except dpkt.UnpackError:
                truncated += 1
                continue
            tags: list[Any] = getattr(eth, "vlan_tags", [])
            vo = tags[0].id if tags else -1
            vi = tags[1].id if len(tags) > 1 else -1
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                if ip.offset:  # a later fragment has no L4 header: no flow
                    later_fragments += 1
                    continue
                proto = ip.p
            elif isinstance(ip, dpkt.ip6.IP6):
                frag = ip.extension_hdrs.get(44)
                if frag is not None and frag.frag_off:
                    later_fragments += 1
                    continue
                proto = ip.p
            else:
                if eth.type in (dpkt.ethernet.ETH_TYPE_IP, dpkt.ethernet.ETH_TYPE_IP6) or (
                    tags and tags[-1].type in (dpkt.ethernet.ETH_TYPE_IP, dpkt.ethernet.ETH_TYPE_IP6)
                ):
                    truncated += 1  # claims IP but dpkt could not parse the header
                else:
                    non_ip += 1
                continue

            l4 = ip.data
            flags = 0
            if isinstance(l4, dpkt.tcp.TCP):
                sport, dport, flags = l4.sport, l4.dport, l4.flags
            elif isinstance(l4, dpkt.udp.UDP):
                sport, dport = l4.sport, l4.dport
            elif proto in (PROTO_TCP, PROTO_UDP):
                # dpkt left the segment as bytes (a first fragment, or a short header): the
                # ports are still there if 4 bytes are.
                if len(l4) < 4:
                    truncated += 1
                    continue
                sport, dport = struct.unpack("!HH", l4[:4])
                if proto == PROTO_TCP and len(l4) >= 14:
                    flags = l4[13]
            else:
                sport = dport = 0  # ICMP, ICMPv6 and the rest: no ports

            src: Endpoint = (ip.src, sport)
            dst: Endpoint = (ip.dst, dport)
            from_a = src <= dst
            key: Key = (vo, vi, proto, src, dst) if from_a else (vo, vi, proto, dst, src)
            flow_packets += 1
            flow_bytes += wirelen

            flow: Flow | None = flows.get(key)
            if flow is not None:
                idle = TCP_IDLE if proto == PROTO_TCP else OTHER_IDLE
                if ts - flow.last > idle:
                    end(flow, "idle")
                    flow = None
                elif ts - flow.start > ACTIVE:
                    end(flow, "active")
                    flow = None
                elif flow.closed is not None and (
                    ts - flow.closed > CLOSE_LINGER or flags & (SYN | ACK) == SYN
                ):
                    end(flow, "closed")
                    flow = None
            if flow is None:
                flow = flows[key] = Flow(key, ts, from_a)
                created += 1
            if ts > flow.last:
                flow.last = ts
            if from_a:
                flow.pkts_a += 1
                flow.bytes_a += wirelen
            else:
                flow.pkts_b += 1
                flow.bytes_b += wirelen
            if proto == PROTO_TCP and flow.closed is None:
                if flags & RST:
                    flow.closed = ts
                elif flags & FIN:
                    if from_a:
                        flow.fin_a = True
                    else:
                        flow.fin_b = True
                    if flow.fin_a and flow.fin_b:
                        flow.closed = ts

    for old in list(flows.values()):
        end(old, "end")
    return {
        "tool": "dpkt",
        "flows": created,
        "packets": packets,
        "bytes": total_bytes,
        "flow_packets": flow_packets,
        "flow_bytes": flow_bytes,
        "non_ip": non_ip,
        "truncated": truncated,
        "later_fragments": later_fragments,
        "maybe_truncated": maybe_truncated,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="dpkt flow-table peer of `camwatch replay`")
    p.add_argument("pcap")
    p.add_argument("--flows-out", metavar="FILE", help="also write every flow as a JSON line (for checks)")
    args = p.parse_args(argv)
    if args.flows_out:
        with open(args.flows_out, "w", encoding="utf-8") as out:
            result = run(args.pcap, out)
    else:
        result = run(args.pcap, None)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
