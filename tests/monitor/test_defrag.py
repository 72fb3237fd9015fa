"""IPv4 reassembly (monitor/defrag.py) and what it changes in the engine: a request or a DNS message split
into IP fragments is read whole; a capture without fragments takes the old path."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from lab import synth
from lab.payloads import dns_query
from monitor.defrag import Defragmenter, LinkIds, Packet
from monitor.engine import Engine
from monitor.flows import Flow
from tests.enginerun import run_engine, run_frames
from tests.monitor import test_egress_names as names
from tests.monitor.rules.traffic import ATTACKER, HIK, POLICY, of_rule
from tests.monitor.test_evasion import CPORT, EXPLOIT, A, P, _connection, _raw

NS = 1_000_000_000
MS = NS // 1000
T0 = 1_700_000_000 * NS
CAM_MAC, GW_MAC = "44:19:b6:00:00:01", "02:00:00:00:00:01"  # a Hikvision camera, its gateway
CAM_IP, PUBLIC_DNS = "10.20.0.11", "8.8.8.8"
CLOUD = "litedev.ezvizlife.com"
LINK: LinkIds = (-1, -1, 0, 0)
Frames = list[tuple[int, bytes]]


def fragments(ip: bytes, sizes: list[int]) -> list[bytes]:
    """The IPv4 packet ``ip`` (20-byte header) cut into fragments of these payload sizes (the rest last)."""
    head, payload = ip[:20], ip[20:]
    out, off = [], 0
    for size in [*sizes, len(payload) - sum(sizes)]:
        more = 0x2000 if off + size < len(payload) else 0
        h = bytearray(head)
        struct.pack_into("!HHH", h, 2, 20 + size, struct.unpack_from("!H", head, 4)[0], more | off // 8)
        h[10:12] = b"\0\0"
        h[10:12] = struct.pack("!H", synth.checksum(bytes(h)))
        out.append(bytes(h) + payload[off : off + size])
        off += size
    return out


def dns_ip(ident: int = 77) -> bytes:
    udp = synth.udp(CAM_IP, PUBLIC_DNS, 40000, 53, dns_query(0x1234, CLOUD))
    return synth.ipv4(CAM_IP, PUBLIC_DNS, 17, udp, ident=ident)


def eth(ip: bytes) -> bytes:
    return synth.ether(CAM_MAC, GW_MAC, 0x0800, ip)


# ---------------------------------------------------------------- the Defragmenter alone


def _feed(df: Defragmenter, frames: list[bytes], t: int = T0) -> list[tuple[bool, list[Packet]]]:
    return [df.add(LINK, f, 14, t + i * MS, t + i * MS, len(f) + 4, 1) for i, f in enumerate(frames)]


@pytest.mark.parametrize("reverse", [False, True])
def test_fragments_in_any_order_make_the_unfragmented_packet(reverse: bool) -> None:
    ip = dns_ip()
    frames = [eth(f) for f in fragments(ip, [16, 16])]
    df = Defragmenter()
    results = _feed(df, frames[::-1] if reverse else frames)
    assert all(taken for taken, _ in results)
    assert [len(out) for _, out in results] == [0, 0, 1]
    (packet,) = results[-1][1]
    # The unfragmented frame byte for byte (the same IP id; no MF, offset 0; new total length and checksum).
    assert packet.frame == eth(ip)
    assert packet.ts_ns == T0 + 2 * MS and packet.linktype == 1
    assert packet.wirelen == sum(len(f) + 4 for f in frames)
    assert (df.stats.reassembled, len(df), df.held_bytes) == (1, 0, 0)


def test_the_df_bit_is_kept_and_the_checksum_is_right() -> None:
    ip = bytearray(dns_ip())
    frames = [bytearray(eth(f)) for f in fragments(bytes(ip), [24])]
    for f in frames:
        f[14 + 6] |= 0x40  # DF with MF: nonsense on the wire, but it must survive as it was
        f[14 + 10 : 14 + 12] = b"\0\0"
    (_, _), (_, (packet,)) = _feed(Defragmenter(), [bytes(f) for f in frames])
    header = packet.frame[14:34]
    assert struct.unpack_from("!H", header, 6)[0] == 0x4000
    assert synth.checksum(header) == 0
    assert packet.frame[34:] == bytes(ip[20:])


def test_a_mirrors_duplicates_are_ignored() -> None:
    frames = [eth(f) for f in fragments(dns_ip(), [16, 16])]
    df = Defragmenter()
    results = _feed(df, [frames[0], frames[0], frames[1], frames[1], frames[2]])
    assert [len(out) for _, out in results] == [0, 0, 0, 0, 1]
    assert results[-1][1][0].frame == eth(dns_ip())
    assert results[-1][1][0].wirelen == sum(len(f) + 4 for f in frames)  # each fragment once
    assert df.stats.conflicts == 0
    # An overlap with the same bytes is a duplicate too.
    ip = dns_ip()
    df = Defragmenter()
    overlap = fragments(ip, [16, 24])[1]  # bytes 16..40
    results = _feed(df, [eth(f) for f in [*fragments(ip, [16, 16])[:2], overlap, fragments(ip, [32])[1]]])
    assert results[-1][1][0].frame == eth(ip) and df.stats.conflicts == 0


def test_an_overlap_with_different_bytes_drops_the_datagram_and_releases_its_first_fragment() -> None:
    ip = dns_ip()
    first, second, third = (eth(f) for f in fragments(ip, [16, 16]))
    liar = bytearray(second)
    liar[-1] ^= 0xFF
    df = Defragmenter()
    results = _feed(df, [first, second, bytes(liar), third])
    assert results[2] == (True, [Packet(first, T0, len(first) + 4, 1)])  # the first fragment, unchanged
    # The datagram's later fragments pass through as before reassembly (the engine keeps them).
    assert results[3] == (False, [])
    assert (df.stats.conflicts, df.stats.reassembled, df.held_bytes) == (1, 0, 0)
    # Until its deadline: then the key is free again.
    assert df.expire(T0 + 31 * NS) == []
    assert _feed(df, [first, second, third], T0 + 32 * NS)[-1][1][0].frame == eth(ip)


def test_a_fragment_past_the_last_ones_end_drops_the_datagram() -> None:
    first, _, third = (eth(f) for f in fragments(dns_ip(), [16, 16]))
    beyond = fragments(dns_ip() + bytes(64), [48])[1]  # the same datagram, 64 bytes longer
    df = Defragmenter()
    results = _feed(df, [first, third, eth(beyond)])
    assert results[2][1] == [Packet(first, T0, len(first) + 4, 1)] and df.stats.oversized == 1


def test_a_datagram_not_completed_in_30_s_releases_its_first_fragment() -> None:
    first, second, _ = (eth(f) for f in fragments(dns_ip(), [16, 16]))
    df = Defragmenter()
    _feed(df, [first, second])
    assert df.next_deadline() == T0 + 30 * NS
    assert df.expire(T0 + 30 * NS) == []  # not before its deadline has passed
    assert df.expire(T0 + 30 * NS + 1) == [(T0 + 30 * NS, Packet(first, T0, len(first) + 4, 1))]
    assert (df.stats.timeouts, df.stats.released, len(df), df.held_bytes) == (1, 1, 0, 0)
    # Only later fragments held: nothing to release.
    _feed(df, [second], T0 + 40 * NS)
    assert df.expire(T0 + 80 * NS) == [] and df.stats.timeouts == 2


def test_the_bounds_evict_the_oldest_datagram_and_release_its_first_fragment() -> None:
    frames = [[eth(f) for f in fragments(dns_ip(ident), [16, 16])] for ident in range(3)]
    df = Defragmenter(max_datagrams=2)
    outs = [df.add(LINK, frames[i][0], 14, T0 + i, T0 + i, 100, 1) for i in range(3)]
    assert outs[2] == (True, [Packet(frames[0][0], T0, 100, 1)])
    assert (df.stats.evicted, len(df)) == (1, 2)
    # The byte bound: the held first fragments (frame and payload) count.
    df = Defragmenter(max_bytes=2 * (len(frames[0][0]) + 16))
    outs = [df.add(LINK, frames[i][0], 14, T0 + i, T0 + i, 100, 1) for i in range(3)]
    assert outs[2] == (True, [Packet(frames[0][0], T0, 100, 1)])
    assert df.stats.evicted == 1 and df.held_bytes <= df.max_bytes
    assert [p.frame for p in df.flush()] == [frames[1][0], frames[2][0]]
    # The size bound: a datagram reaching past 65,535 bytes.
    far = bytearray(frames[0][1])
    struct.pack_into("!H", far, 14 + 6, 0x2000 | (65_520 // 8))
    df = Defragmenter()
    _feed(df, [frames[0][0]])
    assert df.add(LINK, bytes(far), 14, T0, T0, 100, 1)[1] == [
        Packet(frames[0][0], T0, len(frames[0][0]) + 4, 1)
    ]
    assert df.stats.oversized == 1


def test_a_fragment_not_captured_whole_is_left_as_it_is() -> None:
    first = eth(fragments(dns_ip(), [16, 16])[0])
    assert Defragmenter().add(LINK, first[:-1], 14, T0, T0, len(first), 1) == (False, [])


# ---------------------------------------------------------------- in the engine


def _rules(records: list[dict[str, object]]) -> list[str]:
    return sorted(str(r["rule"]["id"]) for r in records)  # type: ignore[index]


def _labels(flows: list[Flow]) -> list[tuple[str, str]]:
    return sorted((str(f.key), f.protocol or "") for f in flows)


@pytest.mark.parametrize("order", ["in order", "reverse", "duplicated"])
def test_a_cameras_dns_query_in_fragments_is_read(order: str) -> None:
    whole = [(T0, eth(dns_ip()))]
    pieces = [eth(f) for f in fragments(dns_ip(), [16, 16])]
    if order == "reverse":
        pieces.reverse()
    elif order == "duplicated":
        pieces = [p for p in pieces for _ in range(2)]
    split = [(T0 + i * MS, p) for i, p in enumerate(pieces)]
    engine, flows, alerts = run_frames(split)
    _, whole_flows, whole_alerts = run_frames(whole)
    assert [f.protocol for f in flows] == ["dns"]
    assert _rules(alerts) == _rules(whole_alerts)
    assert {"dns.vendor_cloud", "dns.resolver_bypass"} <= set(_rules(alerts))
    # One packet in its flow, of the bytes its fragments took on the wire (each duplicate once).
    assert (flows[0].packets, flows[0].bytes) == (1, sum(len(f) for f in set(pieces)))
    assert whole_flows[0].bytes == len(whole[0][1])
    st = engine.stats
    assert (st.packets, st.fragments, st.later_fragments, st.flow_packets) == (
        len(pieces),
        len(pieces),
        len(pieces) - (2 if order == "duplicated" else 1),
        2 if order == "duplicated" else 1,
    )
    assert st.defrag_reassembled == 1


def _fragmented_exploit(sizes: list[int]) -> Frames:
    def build(seq: int) -> list[tuple[int, bytes]]:
        ip = _raw(ATTACKER.ip, HIK.ip, CPORT, 80, EXPLOIT, P | A, seq, 5001)
        return [(seq + len(EXPLOIT), f) for f in fragments(ip, sizes)]

    return _connection(build)


@pytest.mark.parametrize("sizes", [[24], [24, 16], [8, 8, 8]])
def test_an_exploit_request_in_ip_fragments_is_read(sizes: list[int]) -> None:
    # The first fragment carries the TCP header and at most 4 bytes of the request (none with 8 bytes).
    _, _, records = run_frames(_fragmented_exploit(sizes), policy=POLICY)
    assert len(of_rule(records, "exploit.attempt")) == 1


def test_the_addresses_in_a_dns_answers_later_fragments_are_read() -> None:
    # 80 addresses: a 3-fragment answer; the camera then connects to one in the third fragment.
    addresses = [f"203.0.113.{i + 1}" for i in range(80)]
    lookup = names.fragmented_lookup(names.T0, names.CAM1, names.VMS, addresses, 40000)
    assert len(lookup) == 1 + 3
    late = names.https(names.T0 + NS, names.CAM1, "203.0.113.78", 41000, None)
    stranger = names.https(names.T0 + NS, names.CAM1, "203.0.113.200", 41001, None)
    assert names.egress(names.run(lookup + late)) == []
    # Nothing is guessed: an address the answer does not hold is still unexpected.
    assert names.egress(names.run(lookup + late + stranger)) == [(names.CAM1[1], "203.0.113.200", 443)]


def _mixed() -> Frames:
    """Fragments of every kind among other traffic: in order, reverse, duplicated, conflicting, one never
    completed (released after 30 s while the capture goes on), a fragmented exploit."""
    out: Frames = []
    ip = dns_ip()
    good = [eth(f) for f in fragments(ip, [16, 16])]
    out += [(T0 + i * MS, f) for i, f in enumerate(good)]
    out += [(T0 + 10 * MS + i * MS, eth(f)) for i, f in enumerate(reversed(fragments(dns_ip(78), [8, 8])))]
    dup = [eth(f) for f in fragments(dns_ip(79), [16])]
    out += [(T0 + 20 * MS + i * MS, f) for i, f in enumerate([dup[0], dup[0], dup[1], dup[1]])]
    liar = bytearray(eth(fragments(dns_ip(80), [16, 16])[1]))
    liar[-2] ^= 0xFF
    conflict = [eth(f) for f in fragments(dns_ip(80), [16, 16])]
    out += [(T0 + 30 * MS + i * MS, f) for i, f in enumerate([conflict[0], bytes(liar), *conflict[1:]])]
    out += [(T0 + 40 * MS, eth(fragments(dns_ip(81), [16, 16])[0]))]  # never completed
    out += [(T0 + (i + 1) * NS, eth(dns_ip(200 + i))) for i in range(40)]  # a lookup a second: time goes on
    out += [(t + 2 * NS, f) for t, f in _fragmented_exploit([24, 16])]
    return sorted(out, key=lambda f: f[0])


def test_records_do_not_depend_on_batch_size() -> None:
    results = []
    for batch_size in (1, 2, 3, 7, 65536):
        engine, flows, alerts = run_frames(_mixed(), policy=POLICY, batch_size=batch_size)
        st = engine.stats
        counts = (st.defrag_reassembled, st.defrag_conflicts, st.defrag_timeouts, st.defrag_evicted)
        shown = sorted(
            (str(f.key), f.protocol or "", f.packets, f.bytes, f.start_ns, f.last_ns) for f in flows
        )
        results.append((shown, alerts, counts, engine.analysis.stats.packets))
    assert all(r == results[0] for r in results[1:])
    # Timed out: the datagram never completed, and the duplicate of the duplicated datagram's last fragment,
    # which came after it was complete (a new datagram, as the receiver would see it too).
    assert results[0][2] == (4, 1, 2, 0)
    assert len(of_rule(results[0][1], "exploit.attempt")) == 1


def test_a_datagram_still_held_at_the_end_puts_its_first_fragment_in_its_flow() -> None:
    engine, flows, _ = run_frames([(T0, eth(fragments(dns_ip(), [16, 16])[0]))])
    assert [(f.packets, f.key[2]) for f in flows] == [(1, 17)]
    assert engine.stats.defrag_timeouts == 0 and engine.defrag.stats.released == 1 and len(engine.defrag) == 0


CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "pcaps"


def test_a_capture_without_fragments_takes_the_old_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object) -> None:
        raise AssertionError("a batch without fragments was rebuilt")

    monkeypatch.setattr(Engine, "_defragment", never)
    engine, flows, _ = run_engine(CORPUS / "arkime" / "dns-wiresharkrepo.pcap", batch_size=7)
    assert flows and engine.stats.fragments == 0


def test_a_quiet_live_source_times_a_pending_datagram_out() -> None:
    # Only the first fragment of a camera's DNS query arrives, then nothing: the agent's tick, 31 s later,
    # gives the first fragment to its flow as camwatch did before reassembly (the flow is not lost).
    from monitor.engine import EngineConfig
    from monitor.pcapfile import CaptureParser
    from monitor.pcapwrite import pcap_bytes
    from monitor.policy import SitePolicy
    from tests.enginerun import vendors

    first = eth(fragments(dns_ip(), [16, 16])[0])
    parser = CaptureParser("frames", 1024)
    (batch,) = [*parser.feed(pcap_bytes([(T0, first)])), *parser.flush()]
    engine = Engine(SitePolicy.default(), vendors(), EngineConfig())
    engine.feed(batch)
    assert len(engine.flows) == 0 and engine.stats.defrag_timeouts == 0  # held
    engine.tick(T0 + 29 * NS)
    assert len(engine.flows) == 0  # not yet
    engine.tick(T0 + 31 * NS)
    assert engine.stats.defrag_timeouts == 1 and len(engine.flows) == 1


def test_a_trunk_mirrors_routed_copy_reassembles_on_its_own_and_is_judged_once() -> None:
    # A trunk mirror sees the camera's fragmented DNS query twice: as sent (camera -> gateway) and as routed
    # (gateway -> upstream, TTL one less, other MACs). Each copy is its own datagram (its MACs are in the
    # key); the engine then judges the conversation once, as for the unfragmented pair.
    udp = synth.udp(CAM_IP, PUBLIC_DNS, 40000, 53, dns_query(0x1234, CLOUD))
    sent = synth.ipv4(CAM_IP, PUBLIC_DNS, 17, udp, ident=77)
    routed = synth.ipv4(CAM_IP, PUBLIC_DNS, 17, udp, ident=77, ttl=63)
    upstream = "02:00:00:00:00:99"

    def frames(split: bool) -> Frames:
        out: Frames = []
        for i, (ip, src, dst) in enumerate(((sent, CAM_MAC, GW_MAC), (routed, GW_MAC, upstream))):
            pieces = fragments(ip, [16, 16]) if split else [ip]
            out += [(T0 + i * MS + j, synth.ether(src, dst, 0x0800, p)) for j, p in enumerate(pieces)]
        return out

    engine, flows, alerts = run_frames(frames(True))
    _, whole_flows, whole_alerts = run_frames(frames(False))
    assert engine.stats.defrag_reassembled == 2
    assert _rules(alerts) == _rules(whole_alerts) and "dns.vendor_cloud" in _rules(alerts)
    assert _labels(flows) == _labels(whole_flows)


# ---------------------------------------------------------------- IPv6 (RFC 8200 4.5)

CAM6, DNS6, ATTACKER6 = "fd00:20::11", "2001:4860:4860::8888", "2001:db8:66::66"
HOP_BY_HOP = 0
# A hop-by-hop options header of 8 bytes (next header filled in), PadN padding only.
HBH_BODY = bytes([1, 4, 0, 0, 0, 0])


def ipv6_packet(src: str, dst: str, nh: int, upper: bytes, hop_by_hop: bool = False) -> bytes:
    """An unfragmented IPv6 packet, with a hop-by-hop header before its upper layer if asked."""
    if hop_by_hop:
        return synth.ipv6(src, dst, HOP_BY_HOP, bytes([nh, 0]) + HBH_BODY + upper)
    return synth.ipv6(src, dst, nh, upper)


def fragments6(ip6: bytes, sizes: list[int], ident: int = 0x0102_0304) -> list[bytes]:
    """``ip6`` (from :func:`ipv6_packet`) cut into fragments of these fragmentable-part sizes (the rest last):
    the unfragmentable part (the IPv6 header, a hop-by-hop header) in each, then the fragment header."""
    nh = ip6[6]
    unfrag = 40 + (8 if nh == HOP_BY_HOP else 0)
    upper_nh = ip6[40] if nh == HOP_BY_HOP else nh
    body = ip6[unfrag:]
    out, off = [], 0
    for size in [*sizes, len(body) - sum(sizes)]:
        more = 1 if off + size < len(body) else 0
        head = bytearray(ip6[:unfrag])
        if nh == HOP_BY_HOP:
            head[40] = 44
        else:
            head[6] = 44
        struct.pack_into("!H", head, 4, unfrag - 40 + 8 + size)
        frag = struct.pack("!BBHI", upper_nh, 0, off | more, ident)
        out.append(bytes(head) + frag + body[off : off + size])
        off += size
    return out


def eth6(ip6: bytes, src: str = CAM_MAC, dst: str = GW_MAC) -> bytes:
    return synth.ether(src, dst, 0x86DD, ip6)


def dns_ip6(hop_by_hop: bool = False) -> bytes:
    udp = synth.udp(CAM6, DNS6, 40000, 53, dns_query(0x1234, CLOUD))
    return ipv6_packet(CAM6, DNS6, 17, udp, hop_by_hop)


@pytest.mark.parametrize("hop_by_hop", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_ipv6_fragments_make_the_unfragmented_packet(reverse: bool, hop_by_hop: bool) -> None:
    ip6 = dns_ip6(hop_by_hop)
    frames = [eth6(f) for f in fragments6(ip6, [16, 16])]
    df = Defragmenter()
    results = _feed(df, frames[::-1] if reverse else frames)
    assert all(taken for taken, _ in results) and [len(out) for _, out in results] == [0, 0, 1]
    (packet,) = results[-1][1]
    # The fragment header taken out, the header before it naming UDP again, the payload length set.
    assert packet.frame == eth6(ip6)
    assert packet.wirelen == sum(len(f) + 4 for f in frames)
    assert (df.stats.reassembled, len(df), df.held_bytes) == (1, 0, 0)


def test_ipv6_and_ipv4_datagrams_with_the_same_id_and_link_are_kept_apart() -> None:
    v6 = [eth6(f) for f in fragments6(dns_ip6(), [16], ident=77)]
    v4 = [eth(f) for f in fragments(dns_ip(77), [16])]
    df = Defragmenter()
    results = _feed(df, [v6[0], v4[0], v4[1], v6[1]])
    assert [p.frame for _, out in results for p in out] == [eth(dns_ip(77)), eth6(dns_ip6())]
    # Two datagrams of one camera that differ only in their IPv6 id are two datagrams.
    other = [eth6(f) for f in fragments6(dns_ip6(), [16], ident=78)]
    results = _feed(df, [v6[0], other[0], other[1], v6[1]])
    assert [len(out) for _, out in results] == [0, 0, 1, 1] and df.stats.conflicts == 0


def test_an_ipv6_atomic_fragment_is_a_whole_datagram() -> None:
    (atomic,) = fragments6(dns_ip6(), [])  # offset 0, M 0 (RFC 6946)
    assert Defragmenter().add(LINK, eth6(atomic), 14, T0, T0, 100, 1) == (False, [])


def test_ipv6_conflicts_and_oversize_give_the_datagram_up() -> None:
    first, second, third = (eth6(f) for f in fragments6(dns_ip6(), [16, 16]))
    liar = bytearray(second)
    liar[-1] ^= 0xFF
    df = Defragmenter()
    results = _feed(df, [first, second, bytes(liar), third])
    assert results[2] == (True, [Packet(first, T0, len(first) + 4, 1)]) and results[3] == (False, [])
    assert df.stats.conflicts == 1
    # A fragment whose offset puts its end past the 65,535 bytes of an IPv6 payload length.
    far = bytearray(second)
    struct.pack_into("!H", far, 14 + 40 + 2, (65_528 & 0xFFF8) | 1)
    df = Defragmenter()
    assert df.add(LINK, first, 14, T0, T0, 100, 1) == (True, [])
    assert df.add(LINK, bytes(far), 14, T0, T0, 100, 1)[1] == [Packet(first, T0, 100, 1)]
    assert df.stats.oversized == 1


@pytest.mark.parametrize("bad", ["cut", "no fragment header", "odd size", "unknown header first"])
def test_ipv6_packets_that_cannot_be_placed_are_left_as_they_are(bad: str) -> None:
    first = bytearray(eth6(fragments6(dns_ip6(), [16])[0]))
    if bad == "cut":
        frame = bytes(first[:-1])
    elif bad == "no fragment header":
        frame = eth6(dns_ip6())
    elif bad == "odd size":
        struct.pack_into("!H", first, 14 + 4, 8 + 15)  # a non-last fragment not a multiple of 8
        frame = bytes(first[: 14 + 40 + 8 + 15])
    else:
        first[14 + 6] = 50  # ESP: the fragment header is not reachable
        frame = bytes(first)
    assert Defragmenter().add(LINK, frame, 14, T0, T0, 100, 1) == (False, [])


@pytest.mark.parametrize("order", ["in order", "reverse", "duplicated"])
def test_a_cameras_ipv6_dns_query_in_fragments_is_read(order: str) -> None:
    whole = [(T0, eth6(dns_ip6(hop_by_hop=True)))]
    pieces = [eth6(f) for f in fragments6(dns_ip6(hop_by_hop=True), [16, 16])]
    if order == "reverse":
        pieces.reverse()
    elif order == "duplicated":
        pieces = [p for p in pieces for _ in range(2)]
    engine, flows, alerts = run_frames([(T0 + i * MS, p) for i, p in enumerate(pieces)])
    _, whole_flows, whole_alerts = run_frames(whole)
    assert [f.protocol for f in flows] == ["dns"] and _labels(flows) == _labels(whole_flows)
    assert _rules(alerts) == _rules(whole_alerts) and "dns.vendor_cloud" in _rules(alerts)
    assert (flows[0].packets, flows[0].bytes) == (1, sum(len(f) for f in set(pieces)))
    assert engine.stats.defrag_reassembled == 1 and engine.stats.fragments == len(pieces)


def _ipv6_exploit(split: bool) -> Frames:
    """An attacker's HTTP request to a watched camera over IPv6; ``split``: its data segment in IPv6
    fragments of 16 bytes (the first carries only 16 of the TCP header's 20 bytes)."""
    out: Frames = []
    cseq, sseq = 1000, 5000

    def send(src: str, dst: str, sport: int, dport: int, data: bytes, fl: int, seq: int, ack: int) -> None:
        ip6 = ipv6_packet(src, dst, 6, synth.tcp(src, dst, sport, dport, data, flags=fl, seq=seq, ack=ack))
        macs = (ATTACKER.mac, HIK.mac) if src == ATTACKER6 else (HIK.mac, ATTACKER.mac)
        pieces = fragments6(ip6, [16] * ((len(ip6) - 40) // 16 - 1)) if split and data else [ip6]
        out.extend((T0 + len(out) * MS, eth6(p, *macs)) for p in pieces)

    A_, S_, F_, P_ = synth.TCP_ACK, synth.TCP_SYN, synth.TCP_FIN, synth.TCP_PSH
    send(ATTACKER6, CAM6, CPORT, 80, b"", S_, cseq, 0)
    send(CAM6, ATTACKER6, 80, CPORT, b"", S_ | A_, sseq, cseq + 1)
    send(ATTACKER6, CAM6, CPORT, 80, b"", A_, cseq + 1, sseq + 1)
    send(ATTACKER6, CAM6, CPORT, 80, EXPLOIT, P_ | A_, cseq + 1, sseq + 1)
    end = cseq + 1 + len(EXPLOIT)
    send(CAM6, ATTACKER6, 80, CPORT, b"HTTP/1.1 200 OK\r\n\r\n", P_ | A_, sseq + 1, end)
    send(ATTACKER6, CAM6, CPORT, 80, b"", F_ | A_, end, sseq + 20)
    return out


def test_an_exploit_request_in_ipv6_fragments_is_read() -> None:
    engine, _, split = run_frames(_ipv6_exploit(True), policy=POLICY)
    _, _, whole = run_frames(_ipv6_exploit(False), policy=POLICY)
    assert engine.stats.defrag_reassembled == 2 and engine.stats.later_fragments > 3  # request, answer
    assert len(of_rule(whole, "exploit.attempt")) == 1
    assert _rules(split) == _rules(whole)


# ---------------------------------------------------------------- against Zeek's ground truth

ZEEK_FRAG = CORPUS / "zeek" / "ipv6-fragmented-dns.pcap"
ZEEK_TRUTH = CORPUS.parent / "truth" / "zeek" / "ipv6-fragmented-dns.pcap" / "core.ipv6-frag"


def _after_reassembly(pcap: Path) -> list[bytes]:
    """Every IP packet of ``pcap`` as the engine's flow table gets it: fragments given to a Defragmenter,
    the datagrams it completes (from their IP header on) in their place."""
    from monitor.decode import decode
    from monitor.pcapfile import iter_batches

    df, out = Defragmenter(), []
    with pcap.open("rb") as stream:
        for batch in iter_batches(stream, pcap.name):
            d = decode(batch)
            for i in range(len(batch)):
                frame, l3 = batch.packet(i), int(d.l3_off[i])
                if not d.fragment[i]:
                    out.append(frame[l3:])
                    continue
                taken, packets = df.add(LINK, frame, l3, int(batch.ts_ns[i]), int(batch.ts_ns[i]), 0, 1)
                assert taken
                out += [p.frame[l3:] for p in packets]
    assert df.flush() == []  # nothing held whose first fragment came
    return out


def test_a_real_ipv6_fragmented_dns_answer_is_what_zeek_reassembled() -> None:
    # A 3,238-byte DNS answer over IPv6 in three fragments (Netalyzr's TXT padding test; Zeek's core.ipv6-frag
    # test). Zeek prints every packet after its reassembly; ours must be the same packets, and the answer's
    # TXT strings those of its dns.log.
    import ipaddress

    from monitor.analyzers import dns
    from tests.truth.zeek import read_ip6_udp_prints, read_zeek_log, txt_strings

    ours = _after_reassembly(ZEEK_FRAG)
    theirs = read_ip6_udp_prints(ZEEK_TRUTH / "output")
    seen = [
        (
            struct.unpack_from("!H", p, 4)[0], p[6], p[7],
            str(ipaddress.IPv6Address(p[8:24])), str(ipaddress.IPv6Address(p[24:40])),
            *struct.unpack_from("!HHH", p, 40),
        )
        for p in ours
    ]  # fmt: skip
    assert seen == [
        (t.length, t.next_header, t.hop_limit, t.src, t.dst, t.sport, t.dport, t.udp_length) for t in theirs
    ]
    assert all(t.exts == "" for t in theirs) and max(t.length for t in theirs) == 3238
    rows = read_zeek_log(ZEEK_TRUTH / "dns.log").rows
    (row,) = [row for row in rows if row["trans_id"] == "40849" and row["answers"]]
    (answer,) = row["answers"]  # type: ignore[misc]
    big = dns.parse(max(ours, key=len)[48:])
    assert not big.partial and big.id == 40849
    (record,) = big.answers
    assert list(record.txt) == txt_strings(answer) and len(record.txt) > 15


def test_the_real_ipv6_fragmented_capture_gives_one_flow_packet_per_datagram() -> None:
    from monitor.pcapfile import iter_batches

    # The capture also holds the last fragment of an earlier answer whose other fragments were never
    # captured: it stays a later fragment, outside every flow.
    with ZEEK_FRAG.open("rb") as stream:
        frames = [(b.packet(i), int(b.wirelen[i])) for b in iter_batches(stream, "z") for i in range(len(b))]
    answer_id, query = struct.pack("!I", 2), struct.pack("!H", 51851)
    # The answer's fragments (its fragment header's id) and the queries (their UDP source port).
    expected = sum(wire for f, wire in frames if answer_id == f[58:62] or query == f[54:56])
    engine, flows, _ = run_engine(ZEEK_FRAG)
    st = engine.stats
    assert (st.defrag_reassembled, st.defrag_conflicts, st.later_fragments) == (1, 0, 3)
    (flow,) = [f for f in flows if 51851 in (f.key[5], f.key[8])]
    # The query, its retransmission and the answer read whole as one packet, of all its fragments' bytes.
    assert (flow.packets, flow.bytes, flow.protocol) == (3, expected, "dns")


@settings(max_examples=400, deadline=None)
@given(
    data=hs.binary(min_size=0, max_size=120),
    version=hs.sampled_from([4, 6]),
    chain=hs.lists(hs.sampled_from([0, 43, 44, 51, 60, 17]), max_size=4),
    length=hs.one_of(hs.none(), hs.integers(0, 400)),
)
def test_any_bytes_after_an_ip_version_are_taken_or_left_never_an_error(
    data: bytes, version: int, chain: list[int], length: int | None
) -> None:
    # A header chain of random extension headers, then random bytes, the IP length right or any: add() must
    # place it or leave it.
    head = bytearray(40 if version == 6 else 20)
    head[0] = version << 4 | (5 if version == 4 else 0)
    body = b"".join(bytes([nh, len(data) % 3]) + data[:6].ljust(6, b"\0") for nh in chain)
    if version == 6:
        head[6] = chain[0] if chain else 44
        struct.pack_into("!H", head, 4, len(body) + len(data) if length is None else length)
    else:
        total = 20 + len(data) if length is None else length
        struct.pack_into("!HHH", head, 2, total, 9, 0x2000 | (len(data) % 5))
    frame = eth(bytes(head) + body + data)
    df = Defragmenter()
    taken, packets = df.add(LINK, frame, 14, T0, T0, len(frame), 1)
    assert isinstance(taken, bool) and (taken or packets == [])
    assert all(isinstance(p, Packet) for p in [*packets, *df.flush()])


# ---------------------------------------------------------------- inside a remote mirror or tunnel


@pytest.mark.parametrize("kind", ["erspan2", "erspan3", "vxlan", "gre-teb", "gre-ip"])
@pytest.mark.parametrize("version", [4, 6])
def test_fragments_inside_a_remote_mirror_are_reassembled(kind: str, version: int) -> None:
    # A switch sends its mirror to the collector in ERSPAN, VXLAN or GRE: the camera's fragmented DNS query
    # inside is read whole, as it is from a local SPAN port.
    from tests.monitor import test_tunnels as tun

    wrap = {
        "erspan2": tun.erspan2,
        "erspan3": tun.erspan3,
        "vxlan": tun.vxlan,
        "gre-teb": lambda f: tun.gre(0x6558, f),
        "gre-ip": lambda f: tun.gre(0x0800 if version == 4 else 0x86DD, f[14:]),
    }[kind]
    if version == 4:
        local = [eth(f) for f in fragments(dns_ip(), [16, 16])]
    else:
        local = [eth6(f) for f in fragments6(dns_ip6(), [16, 16])]
    engine, flows, alerts = run_frames([(T0 + i * MS, wrap(f)) for i, f in enumerate(local)])
    _, local_flows, local_alerts = run_frames([(T0 + i * MS, f) for i, f in enumerate(local)])
    assert engine.stats.decapsulated == 3 and engine.stats.defrag_reassembled == 1
    assert _labels(flows) == _labels(local_flows) and [f.protocol for f in flows] == ["dns"]
    if kind == "gre-ip":
        return  # an IP packet in GRE carries no MAC: no device, so no alert (the flow is the camera's)
    assert _rules(alerts) == _rules(local_alerts) and "dns.vendor_cloud" in _rules(alerts)


def test_an_exploit_request_in_ip_fragments_inside_erspan_is_read() -> None:
    from tests.monitor import test_tunnels as tun

    frames = [(t, tun.erspan2(f)) for t, f in _fragmented_exploit([8, 8, 8])]
    engine, _, records = run_frames(frames, policy=POLICY)
    assert engine.stats.defrag_reassembled == 1
    assert len(of_rule(records, "exploit.attempt")) == 1
