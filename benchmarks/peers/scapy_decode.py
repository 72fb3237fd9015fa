"""Peer: decode packets with scapy (`PcapReader`, IP/IPv6 and TCP/UDP layers); no flow table.

    python benchmarks/peers/scapy_decode.py PCAP [--limit N]

scapy dissects every layer into Python objects and runs about 100x slower than a dpkt loop, so
only the first N packets (default 50,000) are decoded: the output says it is a subset. Prints
one JSON line on stdout with the packets decoded and the seconds spent in the loop (the
orchestrator's figure is whole-process wall time, which also counts scapy's slow import).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapReader


def decode(path: str, limit: int) -> dict[str, object]:
    started = time.perf_counter()
    packets = ip_packets = l4_packets = total_bytes = 0
    # Accumulate something from each layer so that the field accesses are not dead code.
    port_sum = 0
    with PcapReader(path) as reader:
        for pkt in reader:
            if packets >= limit:
                break
            packets += 1
            total_bytes += pkt.wirelen or len(pkt)
            if IP in pkt:
                ip = pkt[IP]
            elif IPv6 in pkt:
                ip = pkt[IPv6]
            else:
                continue
            ip_packets += 1
            _addrs = (ip.src, ip.dst)
            l4 = ip.getlayer(TCP) or ip.getlayer(UDP)
            if l4 is not None:
                l4_packets += 1
                port_sum += l4.sport + l4.dport
    return {
        "tool": "scapy",
        "subset": True,
        "limit": limit,
        "note": f"scapy decoded only the first {limit:,} packets of the capture",
        "packets": packets,
        "bytes": total_bytes,
        "ip_packets": ip_packets,
        "l4_packets": l4_packets,
        "port_sum": port_sum,
        "loop_seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="scapy decoding peer (a subset of the capture)")
    p.add_argument("pcap")
    p.add_argument("--limit", type=int, default=50_000, help="packets to decode (default 50000)")
    args = p.parse_args(argv)
    print(json.dumps(decode(args.pcap, args.limit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
