"""Flow-key hash collisions in the flow table's numpy aggregation (`monitor/flows.py`).

A batch is grouped per flow by a 64-bit hash of the key; when two different keys of one batch share a
hash the table must notice and fall back to exact grouping, so that the flows stay apart with their own
counts. Two ways to force it: two real IPv6 keys built to collide under the real hash (the mixing is
linear in the address halves before the bijective finaliser, so one half can be solved for), and a hash
that maps every key to the same value, run over a corpus capture, which must give the same flows as the
real hash.
"""

from __future__ import annotations

import io
import ipaddress

import numpy as np
import pytest

from lab.synth import ether, ipv6, udp, udp4_frame
from monitor import flows as flows_module
from monitor.decode import decode
from monitor.flows import Flow, FlowConfig, FlowTable
from monitor.pcapfile import iter_batches
from monitor.pcapwrite import pcap_bytes
from tests.truth.paths import pcap

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
MASK = (1 << 64) - 1
MIX1 = int(flows_module._MIX1)
MIX3 = int(flows_module._MIX3)
B_ADDR = "fd00::1"  # the key's b side: above 2001:db8:: in key order, so the a side is the 2001:db8 host
PORTS = (40000, 5000)


def _colliding_hosts() -> tuple[str, str]:
    """Two 2001:db8::/32 addresses whose flows to B_ADDR on PORTS have the same key hash.

    The hash mixes ``a_lo * MIX1 ^ a_hi * MIX3 ^ <terms of b, ports, protocol, VLANs>`` before its
    finaliser; with b and the rest fixed, keys agree when ``a_lo * MIX1 ^ a_hi * MIX3`` does. MIX1 is odd,
    so it has an inverse modulo 2**64 and a_lo can be solved for any other a_hi."""
    hi1, lo1, hi2 = 0x20010DB800000001, 0x1, 0x20010DB800000002
    lo2 = ((lo1 * MIX1 & MASK) ^ (hi1 * MIX3 & MASK) ^ (hi2 * MIX3 & MASK)) * pow(MIX1, -1, 1 << 64) & MASK
    return (
        str(ipaddress.IPv6Address(hi1 << 64 | lo1)),
        str(ipaddress.IPv6Address(hi2 << 64 | lo2)),
    )


def _udp6(src: str, dst: str, sport: int, dport: int, size: int) -> bytes:
    return ether(
        "02:00:00:00:00:01",
        "02:00:00:00:00:02",
        0x86DD,
        ipv6(src, dst, 17, udp(src, dst, sport, dport, bytes(size))),
    )


def _feed(table: FlowTable, packets: list[tuple[int, bytes]], batch_size: int) -> list[Flow]:
    """All flows the table created, in creation order."""
    created: list[Flow] = []
    for batch in iter_batches(io.BytesIO(pcap_bytes(packets)), "test", batch_size):
        new, _ = table.update(decode(batch))
        created += new
    return created


def test_two_keys_with_the_same_hash_stay_two_flows() -> None:
    host1, host2 = _colliding_hosts()
    # Interleaved in one batch: host1 sends 3 packets of 100 bytes and gets 2 replies, host2 sends 5 of 300.
    packets: list[tuple[int, bytes]] = []
    for i in range(5):
        t = T0 + i * NS // 10
        if i < 3:
            packets.append((t, _udp6(host1, B_ADDR, *PORTS, 100)))
        packets.append((t + 1000, _udp6(host2, B_ADDR, *PORTS, 300)))
        if i < 2:
            packets.append((t + 2000, _udp6(B_ADDR, host1, *reversed(PORTS), 50)))
    table = FlowTable(FlowConfig())
    created = _feed(table, packets, batch_size=len(packets))
    assert table.stats.hash_collisions == 1  # the two keys did collide: the fallback ran
    assert [(f.src, f.dst, f.src_counts, f.dst_counts) for f in created] == [
        ((host1, 40000), (B_ADDR, 5000), (3, 3 * 162), (2, 2 * 112)),
        ((host2, 40000), (B_ADDR, 5000), (5, 5 * 362), (0, 0)),
    ]
    # A later batch (again colliding) adds to the same two flows.
    more = [(T0 + NS, _udp6(host2, B_ADDR, *PORTS, 300)), (T0 + NS + 1, _udp6(host1, B_ADDR, *PORTS, 100))]
    assert _feed(table, more, batch_size=2) == []
    assert table.stats.hash_collisions == 2
    assert [(f.packets, f.bytes) for f in created] == [(6, 4 * 162 + 2 * 112), (6, 6 * 362)]
    assert len(table) == 2


def _collide_everything(x: np.ndarray) -> np.ndarray:
    return np.zeros_like(x, dtype=np.uint64)


def _records(batch_size: int) -> tuple[list[tuple[object, ...]], int]:
    table = FlowTable(FlowConfig())
    ended: list[Flow] = []
    with pcap("ndpi/alexa-app.pcapng").open("rb") as stream:
        for batch in iter_batches(stream, "alexa-app.pcapng", batch_size):
            _, gone = table.update(decode(batch))
            ended += gone
    ended += table.flows()
    return sorted(
        (
            f.key,
            f.start_ns,
            f.last_ns,
            f.pkts_a,
            f.pkts_b,
            f.bytes_a,
            f.bytes_b,
            f.flags_a,
            f.flags_b,
            f.end_reason,
        )
        for f in ended
    ), table.stats.hash_collisions


@pytest.mark.parametrize("batch_size", [64, 4096])
def test_every_key_colliding_gives_the_same_flows(monkeypatch: pytest.MonkeyPatch, batch_size: int) -> None:
    real, real_collisions = _records(batch_size)
    monkeypatch.setattr(flows_module, "_mix", _collide_everything)
    forced, forced_collisions = _records(batch_size)
    assert real_collisions == 0 and forced_collisions > 0
    assert len(real) > 100
    assert forced == real


def test_keys_differing_only_in_their_vlans_stay_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact fallback compares the whole key: the same 5-tuple untagged, on VLAN 10, and on 10/20 and
    10/30 (QinQ) are four flows even when all hash alike."""
    monkeypatch.setattr(flows_module, "_mix", _collide_everything)
    src, dst = "192.0.2.1", "192.0.2.2"
    tags: list[tuple[int, ...]] = [(), (10,), (10, 20), (10, 30)]
    packets = [
        (T0 + i, udp4_frame("02:00:00:00:00:01", "02:00:00:00:00:02", src, dst, *PORTS, b"x", vlans=v))
        for i, v in enumerate(tags * 2)
    ]
    table = FlowTable(FlowConfig())
    created = _feed(table, packets, batch_size=len(packets))
    assert table.stats.hash_collisions == 1
    assert sorted((f.key[0], f.key[1], f.packets) for f in created) == [
        (-1, -1, 2),
        (10, -1, 2),
        (10, 20, 2),
        (10, 30, 2),
    ]
