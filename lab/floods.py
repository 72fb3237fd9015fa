"""Floods for the engine's bounds (docs/design.md §6): traffic that makes one of its tables grow with input.

Each flood is a deterministic generator of ``(ts_ns, frame)`` on the demo site (`examples/site-policy.yaml`:
camera network 10.20.0.0/24, resolver 10.20.0.1, recorder 10.20.0.2); ``table_report(engine)`` says how big
each of the engine's tables is, its bound and what it evicted. `benchmarks/floods.py` runs them at full size
(1 million flows, 100,000 MACs, 1 million DNS names, 100,000 RTSP clients, 100,000 tunnelled RTSP sessions);
`tests/monitor/test_floods.py` at CI size.

- ``flows``: a watched camera sends one UDP datagram to each of ``n`` public destinations (20,000 new flows a
  second): the flow table, incidents in the alert gate, the camera's peers;
- ``macs``: ``n`` hosts of a watched vendor's OUI, each from its own MAC and address, say hello once (10,000
  a second): the inventory, address bindings, device.new timers, the vendor lookup caches;
- ``dns``: the site resolver answers a camera's lookups of ``n`` distinct names, each with its own address:
  the DNS resolutions table, the DNS flow's state;
- ``rtsp``: ``n`` clients off the site each open RTSP to a camera and ask for a stream (DESCRIBE, SETUP with a
  client port): flows, incidents, RTSP media expectations;
- ``tunnels``: ``n`` RTSP sessions tunnelled in HTTP, each with its own cookie, of which only the requests'
  half comes: the state their two connections share.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from lab import payloads, synth
from monitor.pcapfile import PacketBatch

NS = 1_000_000_000
START_NS = 1_764_000_000 * NS
CAMERA_MAC, CAMERA_IP = 0x4419B6000001, "10.20.0.11"
GATEWAY_MAC, RESOLVER_IP = 0x020000000001, "10.20.0.1"
HIK_OUI = 0x4419B6

Frames = Iterator[tuple[int, bytes]]


def _ip(a: int) -> bytes:
    return a.to_bytes(4, "big")


def _dotted(a: int) -> str:
    return ".".join(str(b) for b in _ip(a))


def _addr(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return a << 24 | b << 16 | c << 8 | d


def _frame(smac: int, dmac: int, src: int, dst: int, proto: int, l4: bytes) -> bytes:
    # No IP or UDP checksums: the engine does not verify them. TCP's it does (tcp_frame fills it in).
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, _ip(src), _ip(dst))
    return dmac.to_bytes(6, "big") + smac.to_bytes(6, "big") + b"\x08\x00" + ip + l4


def udp_frame(smac: int, dmac: int, src: int, dst: int, sport: int, dport: int, payload: bytes) -> bytes:
    return _frame(smac, dmac, src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def tcp_frame(
    smac: int,
    dmac: int,
    src: int,
    dst: int,
    sport: int,
    dport: int,
    flags: int,
    seq: int,
    ack: int,
    payload: bytes,
) -> bytes:
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    # The checksum: camwatch reads a segment whose checksum does not verify only once it is confirmed.
    pseudo = _ip(src) + _ip(dst) + struct.pack("!BBH", 0, 6, len(head) + len(payload))
    csum = synth.checksum(pseudo + head + payload)
    return _frame(smac, dmac, src, dst, 6, head[:16] + struct.pack("!H", csum) + head[18:] + payload)


SYN, SYN_ACK, ACK, PSH_ACK = 0x02, 0x12, 0x10, 0x18


def flows(n: int) -> Frames:
    """A watched camera opens a UDP flow to each of `n` public destinations."""
    cam = _addr(CAMERA_IP)
    base = _addr("100.64.0.0") + (1 << 22)  # public-looking space outside the RFC 6598 block: 100.68.0.0+
    for i in range(n):
        dst = base + (i >> 4)  # 16 ports per address: a million flows over 65,536 addresses
        yield (
            START_NS + i * 50_000,
            udp_frame(
                CAMERA_MAC, GATEWAY_MAC, cam, dst, 40_000 + (i % 16), 1000 + (i >> 4) % 60_000, b"x" * 20
            ),
        )


def macs(n: int) -> Frames:
    """`n` hosts with a watched vendor's OUI, each from its own MAC and address, send one datagram."""
    base = _addr("10.20.0.0")
    for i in range(n):
        mac = HIK_OUI << 24 | (0x100000 + i)
        src = base + 0x10000 + i  # 10.21.0.0 and up: each host its own address
        yield (
            START_NS + i * 100_000,
            udp_frame(mac, GATEWAY_MAC, src, _addr(RESOLVER_IP), 40_000, 123, bytes(48)),
        )


def dns(n: int) -> Frames:
    """The site resolver answers a camera's lookups of `n` distinct names, each with its own address."""
    cam, resolver = _addr(CAMERA_IP), _addr(RESOLVER_IP)
    answer_base = _addr("198.18.0.0")
    for i in range(n):
        name = f"n{i}.flood.example"
        txid = i & 0xFFFF
        sport = 20_000 + (i % 40_000)  # ports come back: flows are reused as on a busy resolver
        ts = START_NS + i * 20_000
        yield ts, udp_frame(CAMERA_MAC, GATEWAY_MAC, cam, resolver, sport, 53, payloads.dns_query(txid, name))
        answer = payloads.dns_answer(txid, name, _dotted(answer_base + i))
        yield ts + 1_000_000, udp_frame(GATEWAY_MAC, CAMERA_MAC, resolver, cam, 53, sport, answer)


def rtsp(n: int) -> Frames:
    """`n` clients off the site each open RTSP to a camera: handshake, DESCRIBE, SETUP with a client port."""
    cam = _addr(CAMERA_IP)
    client_base = _addr("198.51.0.0")
    url = f"rtsp://{CAMERA_IP}/Streaming/Channels/101"
    describe_ok = payloads.rtsp_response(1, "Hikvision-Webs")
    for i in range(n):
        client = client_base + i
        port = 30_000 + (i % 30_000)
        ts = START_NS + i * 200_000
        c2s = (client, cam, port, 554)
        s2c = (cam, client, 554, port)
        describe = payloads.rtsp_request("DESCRIBE", url, 1)
        setup = payloads.rtsp_request(
            "SETUP",
            url + "/trackID=1",
            2,
            f"Transport: RTP/AVP;unicast;client_port={port + 2}-{port + 3}\r\n",
        )
        yield ts, tcp_frame(GATEWAY_MAC, CAMERA_MAC, *c2s, SYN, 1000, 0, b"")
        yield ts + 1000, tcp_frame(CAMERA_MAC, GATEWAY_MAC, *s2c, SYN_ACK, 5000, 1001, b"")
        yield ts + 2000, tcp_frame(GATEWAY_MAC, CAMERA_MAC, *c2s, PSH_ACK, 1001, 5001, describe)
        yield (
            ts + 3000,
            tcp_frame(CAMERA_MAC, GATEWAY_MAC, *s2c, PSH_ACK, 5001, 1001 + len(describe), describe_ok),
        )
        seq = 1001 + len(describe)
        yield (
            ts + 4000,
            tcp_frame(GATEWAY_MAC, CAMERA_MAC, *c2s, PSH_ACK, seq, 5001 + len(describe_ok), setup),
        )


def tunnels(n: int) -> Frames:
    """`n` RTSP sessions tunnelled in HTTP, each its own cookie: a client off the site opens the requests'
    half (the POST) to a camera's web port and sends a DESCRIBE in base64; the answers' half never comes."""
    cam = _addr(CAMERA_IP)
    client_base = _addr("198.51.0.0")
    path = "/Streaming/Channels/101"
    describe = base64.b64encode(payloads.rtsp_request("DESCRIBE", f"rtsp://{CAMERA_IP}{path}", 1))
    for i in range(n):
        client = client_base + i % 60_000
        port = 30_000 + (i % 30_000)
        ts = START_NS + i * 200_000
        c2s = (client, cam, port, 80)
        s2c = (cam, client, 80, port)
        post = payloads.rtsp_tunnel_post(path, f"flood{i}") + describe
        yield ts, tcp_frame(GATEWAY_MAC, CAMERA_MAC, *c2s, SYN, 1000, 0, b"")
        yield ts + 1000, tcp_frame(CAMERA_MAC, GATEWAY_MAC, *s2c, SYN_ACK, 5000, 1001, b"")
        yield ts + 2000, tcp_frame(GATEWAY_MAC, CAMERA_MAC, *c2s, PSH_ACK, 1001, 5001, post)


FLOODS: dict[str, Callable[[int], Frames]] = {
    "flows": flows, "macs": macs, "dns": dns, "rtsp": rtsp, "tunnels": tunnels,
}  # fmt: skip
# What "n" counts in each flood at full size: 1 million flows, 100,000 MACs, 1 million names, 100,000 clients,
# 100,000 tunnelled RTSP sessions.
FULL_SIZE = {"flows": 1_000_000, "macs": 100_000, "dns": 1_000_000, "rtsp": 100_000, "tunnels": 100_000}


def as_batches(frames: Iterable[tuple[int, bytes]], size: int = 4096) -> Iterator[PacketBatch]:
    """Ethernet frames in batches of `size`, as a capture source hands them to the engine."""
    chunk: list[tuple[int, bytes]] = []
    for item in frames:
        chunk.append(item)
        if len(chunk) == size:
            yield _batch(chunk)
            chunk = []
    if chunk:
        yield _batch(chunk)


def _batch(items: list[tuple[int, bytes]]) -> PacketBatch:
    lengths = np.fromiter((len(f) for _, f in items), dtype=np.int64, count=len(items))
    offsets = np.zeros(len(items), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return PacketBatch(
        data=np.frombuffer(b"".join(f for _, f in items), dtype=np.uint8),
        offsets=offsets,
        caplen=lengths,
        wirelen=lengths.copy(),
        ts_ns=np.fromiter((t for t, _ in items), dtype=np.int64, count=len(items)),
        linktype=np.ones(len(items), dtype=np.uint16),
    )


def table_report(engine: Any) -> dict[str, dict[str, int | None]]:
    """Every table of the engine that grows with input: its size, its bound and how many entries it evicted
    (None where entries leave by time, not by eviction). Reads the engine from outside: test tooling."""
    from monitor import engine as engine_module
    from monitor import site as site_module
    from monitor.analysis import MAX_EXPECTED_MEDIA, MAX_SHARED_STATES
    from monitor.rules.device import MAX_WAITING, NewDeviceRule
    from monitor.rules.stream_egress import MAX_UPSTREAM_FLOWS, StreamEgressRule

    site, analysis, inventory = engine.site, engine.analysis, engine.inventory
    rules = {type(module): module for module in engine._rule_modules}
    upstream = rules.get(StreamEgressRule)
    evicted = engine.evictions()
    devices = list(inventory)
    vendors = inventory._vendors

    def row(size: int, bound: int | None, evicted: int | None) -> dict[str, int | None]:
        return {"size": size, "bound": bound, "evicted": evicted}

    return {
        "flows": row(len(engine.flows), engine.config.flows.max_flows, engine.flows.stats.evicted),
        "devices": row(len(inventory), engine.config.max_devices, evicted["devices"]),
        "device_ips (largest)": row(max((len(d.ips) for d in devices), default=0), 16, None),
        "device_peers (largest)": row(max((len(d.peers) for d in devices), default=0), 1024, None),
        "device_evidence (largest)": row(max((len(d.evidence) for d in devices), default=0), 64, None),
        "dns_resolutions": row(
            len(analysis.resolutions._names), analysis.resolutions._max, evicted["dns_resolutions"]
        ),
        "media_expectations": row(
            len(analysis.expected_media), MAX_EXPECTED_MEDIA, evicted["media_expectations"]
        ),
        "shared_states": row(len(analysis.shared_states), MAX_SHARED_STATES, evicted["shared_states"]),
        "incidents": row(len(engine.gate._last), engine.gate._max, evicted["incidents"]),
        "upstream_flows": row(
            len(upstream._upstream) if upstream else 0, MAX_UPSTREAM_FLOWS, evicted.get("upstream_flows", 0)
        ),
        "external_devices": row(
            len(site.external), site_module.MAX_EXTERNAL_DEVICES, evicted["external_traffic"]
        ),
        "address_bindings": row(len(site.bindings), site_module.MAX_BINDINGS, evicted["address_bindings"]),
        "routers": row(len(site.routers), site_module.MAX_ROUTERS, evicted["routers"]),
        "router_addresses": row(len(site.router_ips), site_module.MAX_ROUTERS, None),
        "pending_facts": row(
            len(site._pending_facts), site_module.MAX_PENDING_FACTS, evicted["pending_facts"]
        ),
        "recent_flows": row(len(site._recent), site_module.MAX_RECENT_FLOWS, None),
        "on_site_memo": row(len(site._on_site), site_module.MAX_BINDINGS, None),
        "timers": row(len(engine._waiting), engine_module.MAX_TIMERS, evicted["timers"]),
        "timer_heap": row(len(engine._timers), 2 * engine_module.MAX_TIMERS, None),
        "device_announcements": row(
            getattr(rules.get(NewDeviceRule), "waiting", 0),
            MAX_WAITING,
            evicted.get("device_announcements", 0),
        ),
        "vendor_cache": row(vendors.cache_usage(), 2 * vendors.cache_size, None),
    }
