"""Golden test: our flows, merged per unordered 5-tuple and VLAN, against nDPI's flow table.

nDPI (ndpiReader on a file) keeps one flow per key for the whole capture and counts whole frames
(wire length, link layer included): see tests/data/corpus/MANIFEST.md section 3.1. Differences
with a real reason are asserted, not skipped.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from pathlib import Path

import pytest

from agents.capture.pcap_source import PcapFileSource
from monitor.decode import decode
from monitor.flows import Flow
from tests.enginerun import NO_TIMEOUTS, run_engine
from tests.truth.ndpi import read_ndpi_out
from tests.truth.paths import ndpi_pairs

L4 = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 58: "ICMPV6", 132: "SCTP"}

Key = tuple[str, int | None, frozenset[tuple[str, int]]]


def ndpi_key(flow: Flow) -> Key:
    vlan_outer, vlan_inner = flow.key[0], flow.key[1]
    # ndpiReader keeps the innermost 802.1Q tag it walked past.
    vlan = vlan_inner if vlan_inner >= 0 else (vlan_outer if vlan_outer >= 0 else None)
    (s_ip, s_port), (d_ip, d_port) = flow.src, flow.dst
    return (L4.get(flow.proto, str(flow.proto)), vlan, frozenset({(s_ip, s_port), (d_ip, d_port)}))


def merged(flows: list[Flow]) -> dict[Key, list[int]]:
    out: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for f in flows:
        acc = out[ndpi_key(f)]
        acc[0] += f.packets
        acc[1] += f.bytes
    return out


def later_fragment_bytes(pcap: Path) -> dict[Key, int]:
    """Per nDPI key: the wire bytes of the non-first IP fragments of the datagrams whose first fragment
    opened it (nDPI discards them; camwatch reassembles the datagram and counts them in its flow)."""
    first: dict[tuple[bytes, bytes, int, bytes], Key] = {}
    later: dict[tuple[bytes, bytes, int, bytes], int] = defaultdict(int)
    for batch in PcapFileSource(pcap, 65536).batches():
        d = decode(batch)
        for i in (d.fragment & ~d.decapsulated).nonzero()[0].tolist():
            frame, l3 = batch.packet(i), int(d.l3_off[i])
            ip = frame[l3:]
            if d.ip_version[i] == 4:
                datagram = (ip[12:16], ip[16:20], ip[9], ip[4:6])
            else:
                datagram = (ip[8:24], ip[24:40], -1, _v6_fragment_id(ip))
            if d.later_fragment[i]:
                later[datagram] += int(d.wirelen[i])
            else:
                ends = {(_addr(datagram[0]), int(d.sport[i])), (_addr(datagram[1]), int(d.dport[i]))}
                vlan = int(d.vlan_inner[i]) if d.vlan_inner[i] >= 0 else int(d.vlan_outer[i])
                proto = int(d.proto[i])
                first[datagram] = (L4.get(proto, str(proto)), vlan if vlan >= 0 else None, frozenset(ends))
    out: dict[Key, int] = defaultdict(int)
    for datagram, size in later.items():
        if datagram in first:
            out[first[datagram]] += size
    return out


def _v6_fragment_id(ip: bytes) -> bytes:
    """The identification of an IPv6 fragment (hop-by-hop, routing and destination options before it)."""
    nh, pos = ip[6], 40
    while nh in (0, 43, 60):
        nh, pos = ip[pos], pos + (ip[pos + 1] + 1) * 8
    assert nh == 44
    return ip[pos + 4 : pos + 8]


def _addr(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


PAIRS = ndpi_pairs()


@pytest.mark.parametrize(("pcap", "out"), PAIRS, ids=[p.name for p, _ in PAIRS])
@pytest.mark.parametrize("timeouts", ["none", "default"])
def test_flows_match_ndpi(pcap: Path, out: Path, timeouts: str) -> None:
    truth = read_ndpi_out(out)
    engine, flows, _ = run_engine(pcap, NO_TIMEOUTS if timeouts == "none" else None)
    ours = merged(flows)
    # nDPI discards non-first IP fragments; camwatch reassembles them (monitor/defrag.py) and counts them in
    # the datagram's flow: taken out again to compare (every datagram of the corpus completes).
    assert engine.stats.defrag_timeouts == engine.stats.defrag_conflicts == engine.stats.defrag_evicted == 0
    for key, size in later_fragment_bytes(pcap).items():
        ours[key][1] -= size
    theirs = {f.key(): [f.packets, f.bytes] for f in truth.flows}
    # Every nDPI flow is ours with the same packets and bytes, and we have no extra flow.
    missing = {k: v for k, v in theirs.items() if k not in ours}
    extra = {k: v for k, v in ours.items() if k not in theirs}
    differ = {k: (ours[k], v) for k, v in theirs.items() if k in ours and ours[k] != v}
    assert not missing and not extra and not differ, (missing, extra, differ)
    # The packets nDPI leaves out of flows are exactly the non-IP frames, the non-first
    # fragments and the IP packets whose headers were cut short.
    st = engine.stats
    assert sum(v[0] for v in theirs.values()) == st.flow_packets
    assert st.packets == st.flow_packets + st.non_ip + st.later_fragments + st.truncated
