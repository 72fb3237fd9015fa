"""Write a many-short-flows capture for the replay benchmark: the worst case beside gen_site's best.

    python benchmarks/gen_short_flows.py OUT.pcap --packets 1000000

gen_site's capture is camwatch's best case: 50 long RTP flows, where each flow's per-flow work (a key,
a record, the analyzers' look at its first packets) is spread over thousands of packets. This one is
the opposite: a site whose traffic is nothing but short exchanges, about 5 packets a flow, so a million
packets are about 190,000 flows, each one created, inspected, ended and written out. Flows start at a
steady 5,000 per second, from 2,000 hosts of 10.40.0.0/16 in turn, each on its next ephemeral port (no
5-tuple repeats within the timeouts), in a fixed mix of 20:

- 7 DNS lookups (UDP, query and answer) to the site resolver;
- 2 NTP exchanges (UDP, client request and server reply) with the site's time server;
- 9 short HTTP connections over TCP: handshake, a GET, a two-segment response, FIN both ways and the
  last ACK (9 packets); two in three to a camera's web server on site, one in three to the Internet;
- 2 pings (ICMP echo request and reply) to the next address of a sweep.

Everything is computed from the flow's index: the same parameters give the same bytes. Frames are
written in time order as they are made (flows overlap by a few tens of milliseconds), and the file
holds exactly N packets (the last flows may be cut). A sidecar `OUT.pcap.json` records the packet count
and parameters; a later call with the same parameters reuses the file (`gen_site.py`'s cache).
"""

from __future__ import annotations

import argparse
import heapq
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repository root holds the `agents` and `monitor` packages, and
# this directory gen_site (the capture writer and its cache, shared with the site capture).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_site import SNAPLEN, cached, write_capture

from lab.payloads import dns_answer, dns_query
from lab.synth import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    ether,
    icmp_echo,
    ipv4,
    tcp4_frame,
    udp4_frame,
)

# Bump when the traffic changes, so that cached captures are rebuilt.
GENERATOR_VERSION = 1
NS = 1_000_000_000
US = 1_000
T0 = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z
FLOWS_PER_SECOND = 5_000
HOSTS = 2_000
EPHEMERAL = (32_768, 60_999)
# The mix, one letter per flow in turn: D DNS, N NTP, H HTTP to a camera, X HTTP outside, P ping.
MIX = "DHDNHXDHPDHXDNHDHPXH"
RESOLVER, NTP_SERVER = "10.40.255.1", "10.40.255.2"
GATEWAY_MAC, RESOLVER_MAC, NTP_MAC = "02:40:ff:00:00:01", "02:40:ff:00:00:02", "02:40:ff:00:00:03"
CAMERAS = 50  # 10.40.254.1-50, Hikvision OUI
WEB_SERVERS = 200  # 203.0.113.1-200 (outside)


def parameters(packets: int) -> dict[str, Any]:
    """Everything that determines the file's content (the cache key)."""
    return {
        "generator": "benchmarks/gen_short_flows.py",
        "generator_version": GENERATOR_VERSION,
        "packets": packets,
        "flows_per_second": FLOWS_PER_SECOND,
        "hosts": HOSTS,
        "mix": MIX,
        "linktype": 1,
        "snaplen": SNAPLEN,
    }


Packets = list[tuple[int, bytes]]


def _host(i: int) -> tuple[str, str, int]:
    """Client address, MAC and source port of flow `i`."""
    h = i % HOSTS
    span = EPHEMERAL[1] - EPHEMERAL[0] + 1
    port = EPHEMERAL[0] + (i // HOSTS) % span
    return f"10.40.{h // 250}.{h % 250 + 1}", f"02:40:00:00:{h >> 8:02x}:{h & 0xFF:02x}", port


def _dns(i: int, t: int, ip: str, mac: str, port: int) -> Packets:
    name = f"host{i % 9973}.example.com"
    answer = f"198.51.100.{i % 250 + 1}"
    rtt = (300 + 37 * (i % 11)) * US
    return [
        (t, udp4_frame(mac, RESOLVER_MAC, ip, RESOLVER, port, 53, dns_query(i & 0xFFFF, name))),
        (
            t + rtt,
            udp4_frame(RESOLVER_MAC, mac, RESOLVER, ip, 53, port, dns_answer(i & 0xFFFF, name, answer)),
        ),
    ]


def _ntp(i: int, t: int, ip: str, mac: str, port: int) -> Packets:
    stamp = struct.pack("!II", (t // NS + 2_208_988_800) & 0xFFFFFFFF, i & 0xFFFFFFFF)
    request = bytes([0x23]) + bytes(39) + stamp  # v4, client
    reply = bytes([0x24, 2, 6, 0xEC]) + bytes(20) + stamp + stamp + stamp  # v4, server, stratum 2
    return [
        (t, udp4_frame(mac, NTP_MAC, ip, NTP_SERVER, port, 123, request)),
        (t + 500 * US, udp4_frame(NTP_MAC, mac, NTP_SERVER, ip, 123, port, reply)),
    ]


def _http(i: int, t: int, ip: str, mac: str, port: int, outside: bool) -> Packets:
    if outside:
        server, smac, rtt = f"203.0.113.{i % WEB_SERVERS + 1}", GATEWAY_MAC, (18_000 + 97 * (i % 13)) * US
        path, banner = f"/api/v1/items/{i % 997}", "nginx"
    else:
        c = i % CAMERAS
        server, smac, rtt = f"10.40.254.{c + 1}", f"44:19:b6:00:01:{c:02x}", (700 + 53 * (i % 7)) * US
        path, banner = "/ISAPI/System/status", "App-webs/"
    body = b"<status>" + b"x" * 1100 + b"</status>"
    request = f"GET {path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: office/1.0\r\n\r\n".encode()
    head = f"HTTP/1.1 200 OK\r\nServer: {banner}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    response = head + body
    first, second = response[:700], response[700:]
    c_seq, s_seq = 1_000 + i % 50_000, 7_000 + i % 50_000
    ack_delay = 40 * US

    def c(at: int, flags: int, data: bytes = b"") -> tuple[int, bytes]:
        return at, tcp4_frame(mac, smac, ip, server, port, 80, data, flags=flags, seq=c_seq, ack=s_seq)

    def s(at: int, flags: int, data: bytes = b"") -> tuple[int, bytes]:
        return at, tcp4_frame(smac, mac, server, ip, 80, port, data, flags=flags, seq=s_seq, ack=c_seq)

    out = [c(t, TCP_SYN)]
    out.append(s(t + rtt, TCP_SYN | TCP_ACK))
    c_seq += 1
    s_seq += 1
    at = t + rtt + ack_delay
    out.append(c(at, TCP_ACK))
    out.append(c(at + ack_delay, TCP_PSH | TCP_ACK, request))
    c_seq += len(request)
    at += ack_delay + rtt
    out.append(s(at, TCP_ACK, first))
    s_seq += len(first)
    out.append(s(at + ack_delay, TCP_PSH | TCP_ACK, second))
    s_seq += len(second)
    at += 2 * ack_delay
    out.append(c(at, TCP_FIN | TCP_ACK))
    c_seq += 1
    out.append(s(at + rtt, TCP_FIN | TCP_ACK))
    s_seq += 1
    out.append(c(at + rtt + ack_delay, TCP_ACK))
    return out


def _ping(i: int, t: int, ip: str, mac: str) -> Packets:
    # A monitoring sweep: each round a host pings the next address of 10.40.128.0/17, so the same pair
    # (ICMP flows have no ports) does not come back within the idle timeout.
    k = (i // HOSTS) % 25_000
    target = f"10.40.{128 + k // 250}.{k % 250 + 1}"
    tmac = f"02:40:80:00:{k >> 8:02x}:{k & 0xFF:02x}"
    ident, seq = i & 0xFFFF, 1
    return [
        (t, ether(mac, tmac, 0x0800, ipv4(ip, target, 1, icmp_echo(ident, seq)))),
        (t + 400 * US, ether(tmac, mac, 0x0800, ipv4(target, ip, 1, icmp_echo(ident, seq, reply=True)))),
    ]


def flow_packets(i: int) -> Packets:
    """The packets of flow `i`, in time order."""
    t = T0 + i * NS // FLOWS_PER_SECOND // US * US
    ip, mac, port = _host(i)
    kind = MIX[(i + i // HOSTS) % len(MIX)]  # each host goes through the mix in turn
    if kind == "D":
        return _dns(i, t, ip, mac, port)
    if kind == "N":
        return _ntp(i, t, ip, mac, port)
    if kind == "P":
        return _ping(i, t, ip, mac)
    return _http(i, t, ip, mac, port, outside=kind == "X")


def short_flow_packets() -> Iterator[tuple[int, bytes]]:
    """Every flow's packets merged in time order (endless: cut it at the size you want)."""
    pending: list[tuple[int, int, bytes]] = []  # (time, sequence number: ties in making order, frame)
    made = 0
    i = 0
    while True:
        start = T0 + i * NS // FLOWS_PER_SECOND // US * US
        # Flows start in order, so nothing made later can come before this flow's start.
        while pending and pending[0][0] < start:
            ts, _, frame = heapq.heappop(pending)
            yield ts, frame
        for ts, frame in flow_packets(i):
            heapq.heappush(pending, (ts, made, frame))
            made += 1
        i += 1


def generate(out: Path, packets: int) -> dict[str, Any]:
    return write_capture(out, parameters(packets), short_flow_packets(), packets, "the short-flow generator")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, metavar="OUT.pcap")
    p.add_argument("--packets", type=int, default=1_000_000, help="packets to write (default 1000000)")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching file exists")
    args = p.parse_args(argv)
    if args.packets < 1:
        p.error("--packets must be >= 1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta = None if args.force else cached(args.out, parameters(args.packets))
    verb = "reused"
    if meta is None:
        meta = generate(args.out, args.packets)
        verb = "wrote"
    print(
        f"gen_short_flows: {verb} {args.out} ({meta['packets']:,} packets, {meta['file_bytes']:,} bytes, "
        f"{meta['capture_seconds']:.1f} s of traffic) in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
