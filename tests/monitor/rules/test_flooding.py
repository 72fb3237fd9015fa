"""``device.flooding``: a watched device that floods one destination with new connections (a DDoS bot's SYN,
UDP and DNS floods), and the busy but normal traffic that is not that (a recorder reconnecting to its cameras,
a chatty camera, a slow port scan, which stays ``device.scanning``)."""

from __future__ import annotations

import random
import struct

import pytest

from lab import payloads, synth
from monitor.engine import Engine
from monitor.policy import SitePolicy
from monitor.rules import flooding
from tests.enginerun import run_frames
from tests.monitor.rules.test_video_on_a_trunk import _on_a_trunk
from tests.monitor.rules.traffic import ATTACKER, GW, HIK, MS, NS, POLICY, RECORDER, T0, Host, alerts, of_rule

RULE = "device.flooding"
VICTIM = "203.0.113.50"


def _syn_flood(n: int, dport: int | None = None, seed: int = 1, step_ns: int = MS) -> list[tuple[int, bytes]]:
    """Mirai's SYN flood: a bare SYN from a new source port (and, by default, a random destination port)."""
    r = random.Random(seed)
    return [
        (
            T0 + i * step_ns,
            synth.tcp4_frame(
                HIK.mac,
                GW.mac,
                HIK.ip,
                VICTIM,
                r.randrange(1024, 65535),
                dport if dport is not None else r.randrange(1, 65535),
                flags=synth.TCP_SYN,
                seq=r.getrandbits(32),
            ),
        )
        for i in range(n)
    ]


def _udp_flood(n: int, seed: int = 2, size: int = 512) -> list[tuple[int, bytes]]:
    """Mirai's UDP flood: a new source and destination port per packet, ``size`` random bytes."""
    r = random.Random(seed)
    return [
        (
            T0 + i * MS,
            synth.udp4_frame(
                HIK.mac,
                GW.mac,
                HIK.ip,
                VICTIM,
                r.randrange(1024, 65535),
                r.randrange(1, 65535),
                r.randbytes(size),
            ),
        )
        for i in range(n)
    ]


def test_a_syn_flood_over_random_ports_is_one_flood_not_a_scan() -> None:
    records = alerts(_syn_flood(2000))
    (a,) = of_rule(records, RULE)
    assert a["event"]["severity"] == 5 and a["source"]["ip"] == HIK.ip and a["device"]["id"] == HIK.mac_id  # type: ignore[index]
    assert a["destination"] == {"ip": VICTIM}
    flood = a["camwatch"]["flood"]  # type: ignore[index]
    assert flood["flows"] == flooding.FLOOD_FLOWS and flood["syns"] == flooding.FLOOD_FLOWS
    assert flood["transports"] == {"tcp": flooding.FLOOD_FLOWS} and flood["ports"] == flooding.MAX_PORTS
    assert "is flooding 203.0.113.50: 1,000 new connections to it in 1.0 s" in str(a["message"])
    assert "device.scanning" not in {r["rule"]["id"] for r in records}  # type: ignore[index]


def _prefix_flood(n: int, hosts: list[str], seed: int = 6, step_ns: int = MS // 2) -> list[tuple[int, bytes]]:
    """Mirai's SYN flood at a prefix: each packet to one of ``hosts``, a new source port, a random port."""
    r = random.Random(seed)
    return [
        (
            T0 + i * step_ns,
            synth.tcp4_frame(
                HIK.mac, GW.mac, HIK.ip, hosts[i % len(hosts)], r.randrange(1024, 65535),
                r.randrange(1, 65535), flags=synth.TCP_SYN,
            ),
        )
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("hosts", [256, 3], ids=["random-hosts", "three-in-turn"])
def test_a_flood_at_a_prefix_is_one_flood_not_a_scan(hosts: int) -> None:
    # Each address stays under the threshold; the /24 does not. It was reported as a port scan of 255 hosts.
    r = random.Random(7)
    targets = [f"203.0.113.{r.randrange(256)}" for _ in range(3000)] if hosts == 256 else [
        "203.0.113.5", "203.0.113.9", "203.0.113.77"
    ]  # fmt: skip
    records = alerts(_prefix_flood(3000 if hosts == 256 else 1500, targets))  # 500 flows each of three
    (a,) = of_rule(records, RULE)
    flood = a["camwatch"]["flood"]  # type: ignore[index]
    assert flood["prefix"] == "203.0.113.0/24" and flood["addresses"] >= min(hosts, 200)
    assert "is flooding 203.0.113.0/24 (" in str(a["message"]) and str(a["destination"]["ip"]) in targets  # type: ignore[index]
    assert of_rule(records, "device.scanning") == []


NEIGHBOUR = "203.0.113.7"


def test_a_flood_at_one_address_is_not_also_its_prefixs() -> None:
    # The flood's target, and the camera's ordinary connections to a neighbour of it (its cloud, say).
    syn = synth.TCP_SYN
    frames = _syn_flood(2000) + [
        (T0 + i * 5 * MS, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, NEIGHBOUR, 2000 + i, 443, flags=syn))
        for i in range(400)
    ]
    (a,) = of_rule(alerts(frames), RULE)
    assert a["destination"] == {"ip": VICTIM} and "prefix" not in a["camwatch"]["flood"]  # type: ignore[index]


def test_a_flood_at_a_small_prefix_is_one_alert() -> None:
    # 16 hosts at 10,000 a second: each address passes the threshold too, but is its prefix's flood.
    (a,) = of_rule(
        alerts(_prefix_flood(20_000, [f"203.0.113.{16 + k}" for k in range(16)], step_ns=MS // 10)), RULE
    )
    assert a["camwatch"]["flood"]["prefix"] == "203.0.113.0/24"  # type: ignore[index]


def test_a_connect_scan_of_a_prefix_stays_a_scan() -> None:
    # nmap -sT: a new source port per attempt, a list of 68 ports over every host of a /24, shuffled.
    r = random.Random(2)
    pairs = [(f"198.18.7.{h}", port) for h in range(1, 255) for port in range(20, 88)]
    r.shuffle(pairs)
    frames = [
        (T0 + i * 2 * MS, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, ip, 32768 + i, port, flags=synth.TCP_SYN))
        for i, (ip, port) in enumerate(pairs[:3000])
    ]
    records = alerts(frames)
    assert of_rule(records, RULE) == [] and of_rule(records, "device.scanning")


def test_a_recorder_reconnecting_to_its_cameras_on_many_ports_is_no_flood() -> None:
    # A watched NVR after a reboot: 128 cameras of its /24, ten connections each within 8 s, to its web, SDK
    # and RTSP ports and to each session's RTP ports (RTSP over UDP): hundreds of ports, on the site.
    r = random.Random(4)
    nvr = Host("10.20.0.3", "44:19:b6:00:00:03")
    frames = []
    for k in range(1300):
        cam, t = f"10.20.0.{100 + k % 128}", T0 + int(r.random() * 8 * NS)
        port = (80, 80, 80, 80, 554, 8000)[k % 6] if k % 10 < 6 else 8200 + 2 * r.randrange(400)
        frame = synth.tcp4_frame(nvr.mac, GW.mac, nvr.ip, cam, 40000 + k, port, flags=synth.TCP_SYN)
        frames.append((t, frame))
    assert of_rule(alerts(frames), RULE) == []


def test_a_scan_through_nat64_is_no_flood_of_its_prefix() -> None:
    # 64:ff9b::/96 holds every IPv4 host in one /64: a connect scan of random IPv4 hosts through it is a scan.
    r = random.Random(6)
    cam6 = "2001:db8:20::11"

    def syn(i: int) -> bytes:
        dst = f"64:ff9b::{r.getrandbits(16):x}:{r.getrandbits(16):x}"
        segment = synth.tcp(cam6, dst, 32768 + i, r.randrange(20, 90), b"", flags=synth.TCP_SYN)
        return synth.ether(HIK.mac, GW.mac, 0x86DD, synth.ipv6(cam6, dst, 6, segment))

    records = alerts([(T0 + i * 2 * MS, syn(i)) for i in range(3000)])
    assert of_rule(records, RULE) == [] and of_rule(records, "device.scanning")


def test_a_udp_flood_and_a_flood_of_one_port() -> None:
    records = alerts(_udp_flood(1500))
    (a,) = of_rule(records, RULE)
    assert a["camwatch"]["flood"]["transports"] == {"udp": 1000}  # type: ignore[index]
    assert not of_rule(records, "device.scanning")
    (b,) = of_rule(alerts(_syn_flood(1200, dport=80)), RULE)
    assert b["destination"] == {"ip": VICTIM, "port": 80} and "all to tcp/80" in str(b["message"])


def _water_torture(domains: list[str], labels: int = 1) -> list[tuple[int, bytes]]:
    r = random.Random(3)
    prefix = ".".join(["{:x}"] * labels)
    return [
        (
            T0 + i * 2 * MS,
            synth.udp4_frame(
                HIK.mac,
                GW.mac,
                HIK.ip,
                GW.ip,
                r.randrange(1024, 65535),
                53,
                payloads.dns_query(
                    i & 0xFFFF,
                    prefix.format(*(r.getrandbits(40) for _ in range(labels)))
                    + "."
                    + domains[i % len(domains)],
                ),
            ),
        )
        for i in range(1500)
    ]


_RESOLVER_POLICY = "site: s\nmonitored: {networks: [10.20.0.0/24]}\nresolvers: [10.20.0.1]\n"


@pytest.mark.parametrize("labels", [1, 2])
def test_dns_water_torture_through_the_site_resolver(labels: int) -> None:
    policy = SitePolicy.from_yaml(_RESOLVER_POLICY, "p.yaml")
    (a,) = of_rule(run_frames(_water_torture(["victim.example"], labels), policy=policy)[2], RULE)
    message = str(a["message"])
    assert "is flooding 10.20.0.1 (on the site)" in message and "DNS water torture" in message
    # The victim is the domain's name servers, which the on-call engineer needs to name to the ISP.
    assert "random names under victim.example" in message
    assert a["camwatch"]["flood"]["domain"] == "victim.example"  # type: ignore[index]


def test_a_dns_flood_over_many_domains_names_none() -> None:
    policy = SitePolicy.from_yaml(_RESOLVER_POLICY, "p.yaml")
    domains = [f"d{k}.example" for k in range(20)]
    (a,) = of_rule(run_frames(_water_torture(domains), policy=policy)[2], RULE)
    assert "random names under the victim's domain" in str(a["message"])
    assert "domain" not in a["camwatch"]["flood"]  # type: ignore[index]


def test_busy_normal_traffic_is_no_flood() -> None:
    frames: list[tuple[int, bytes]] = []
    # A camera that looks up its cloud and connects to it ten times a second for a minute.
    for i in range(600):
        t = T0 + i * 100 * MS
        frames.append((t, synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, GW.ip, 20000 + i, 53, b"\x00" * 30)))
        frames.append(
            (t + MS, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, 30000 + i, 443, flags=synth.TCP_SYN))
        )
    # A watched recorder reconnecting to 64 cameras, twenty times each within ten seconds.
    nvr_mac = "44:19:b6:00:00:02"
    for k in range(20 * 64):
        cam = f"10.20.0.{100 + k % 64}"
        frame = synth.tcp4_frame(
            nvr_mac, "00:00:00:00:00:64", RECORDER.ip, cam, 40000 + k, 554, flags=synth.TCP_SYN
        )
        frames.append((T0 + k * 7 * MS, frame))
    assert of_rule(alerts(frames), RULE) == []


def test_a_slow_port_scan_of_one_host_stays_a_scan() -> None:
    records = alerts(_syn_flood(200, step_ns=20 * MS))
    assert of_rule(records, RULE) == [] and of_rule(records, "device.scanning")


def test_once_per_victim_the_same_on_a_trunk_and_in_any_batch() -> None:
    frames = _syn_flood(2500, dport=80)
    clean = of_rule(alerts(frames), RULE)
    assert len(clean) == 1
    for got in (of_rule(alerts(_on_a_trunk(frames)), RULE), of_rule(alerts(frames, batch_size=7), RULE)):
        # The routed copies are not counted again: the flood is reported at the same flow, at the same time.
        assert [_when(a) for a in got] == [_when(a) for a in clean]


def _when(alert: dict[str, object]) -> tuple[object, object]:
    return alert["@timestamp"], alert["camwatch"]["flood"]["flows"]  # type: ignore[index]


def test_the_state_stays_bounded_under_a_scan_of_random_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flooding, "MAX_PAIRS", 1000)
    r = random.Random(4)
    frames = [
        (
            T0 + i * MS,
            synth.tcp4_frame(
                HIK.mac, GW.mac, HIK.ip, f"198.18.{r.randrange(256)}.{r.randrange(256)}", 40000 + i, 23,
                flags=synth.TCP_SYN,
            ),
        )
        for i in range(5000)
    ]  # fmt: skip
    engine, _, records = run_frames(frames, policy=POLICY)
    assert of_rule(records, RULE) == []
    rule = _flooding(engine)
    assert len(rule.pairs) == 1000 and rule.pairs.evicted > 3000
    assert engine.evictions()["flood_pairs"] == rule.pairs.evicted


def _flooding(engine: Engine) -> flooding.FloodingRule:
    return next(m for m in engine._rule_modules if isinstance(m, flooding.FloodingRule))


def test_flows_over_ten_seconds_apart_start_a_new_count() -> None:
    # 999 flows, then 999 more 10 s later: never 1,000 in one window.
    frames = _syn_flood(999, dport=80) + [(t + 10 * NS, f) for t, f in _syn_flood(999, dport=80, seed=9)]
    assert of_rule(alerts(frames), RULE) == []


def test_a_flood_inside_one_flow_is_not_called_video() -> None:
    # A UDP flood with fixed ports (to udp/53: 1,000-byte datagrams, 1,000 a second for 12 s) is one flow:
    # stream.egress's sustained-rate check reports it, and no longer says "its video is leaving".
    frame = synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, 40000, 53, bytes(1000))
    (a,) = of_rule(alerts([(T0 + i * MS, frame) for i in range(12_000)]), "stream.egress")
    message = str(a["message"])
    assert "sustained flow of DNS" in message and "not video but a flood" in message
    assert "video is leaving" not in message


def _one_flow_flood(
    payload: int, per_second: int, seconds: float, tcp: bool = False
) -> list[tuple[int, bytes]]:
    """A watched camera's flood in one flow to the victim's port 40000 (Mirai's udpplain; stomp over TCP)."""
    if tcp:
        frame = synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, 41000, 40000, bytes(payload), flags=0x18)
        opening = [
            (T0, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, 41000, 40000, flags=synth.TCP_SYN)),
            (T0 + MS, synth.tcp4_frame(GW.mac, HIK.mac, VICTIM, HIK.ip, 40000, 41000, flags=0x12)),
        ]
    else:
        frame = synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, 41000, 40000, bytes(payload))
        opening = []
    gap = NS // per_second
    return opening + [(T0 + 2 * MS + i * gap, frame) for i in range(int(per_second * seconds))]


@pytest.mark.parametrize(
    ("payload", "tcp", "transport"), [(512, False, "UDP"), (768, True, "TCP")], ids=["udpplain", "stomp"]
)
def test_a_flood_of_small_packets_in_one_unlabelled_flow_is_called_a_flood(
    payload: int, tcp: bool, transport: str
) -> None:
    # One socket per target: device.flooding counts new flows and sees one; stream.egress's sustained-rate
    # check reports it, and with 3,000 packets of 500-800 bytes a second it says flood, not video.
    (a,) = of_rule(alerts(_one_flow_flood(payload, 3000, 11, tcp)), "stream.egress")
    message = str(a["message"])
    frame = payload + (54 if tcp else 42)  # the headers: Ethernet, IPv4, UDP or TCP
    shape = a["camwatch"]["flood"]
    assert shape["packet_rate"] == 3000 and frame - 1 <= shape["packet_bytes"] <= frame  # the SYN counts too
    assert f"3,000 packets a second of {shape['packet_bytes']} bytes on average in one {transport}" in message
    assert "this is a flood in one connection" in message and "video" not in message.split("Video")[0]


@pytest.mark.parametrize(
    ("payload", "per_second"),
    [(1400, 2500), (900, 1500), (300, 300)],
    ids=["large packets fast", "small packets under 2,000 a second", "a sub-stream's rate"],
)
def test_unlabelled_video_shaped_flows_stay_video(payload: int, per_second: int) -> None:
    (a,) = of_rule(alerts(_one_flow_flood(payload, per_second, 11)), "stream.egress")
    assert "a sustained video-rate flow" in str(a["message"]) and "flood" not in a.get("camwatch", {})


def test_the_acknowledgements_of_a_fast_download_to_a_camera_are_no_flood() -> None:
    # An installer's client pushes firmware to the camera's tcp/8000: 3,000 segments of 1,400 bytes a second
    # in, 3,000 bare ACKs of 54 bytes out. The camera sends small packets fast, but it is receiving.
    opening = [
        (T0, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, 41000, 8000, flags=synth.TCP_SYN)),
        (T0 + MS, synth.tcp4_frame(GW.mac, HIK.mac, VICTIM, HIK.ip, 8000, 41000, flags=0x12)),
    ]
    data = synth.tcp4_frame(GW.mac, HIK.mac, VICTIM, HIK.ip, 8000, 41000, bytes(1400), flags=0x18)
    ack = synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, 41000, 8000)
    gap = NS // 3000
    frames = opening + [
        (T0 + 2 * MS + i * gap + k, f) for i in range(33_000) for k, f in ((0, data), (1000, ack))
    ]
    assert all("flood" not in a.get("camwatch", {}) for a in of_rule(alerts(frames), "stream.egress"))


def test_a_syn_flood_over_ipv6() -> None:
    cam6, victim6 = "2001:db8:20::11", "2001:db8:dead::50"
    r = random.Random(3)

    def syn(sport: int) -> bytes:
        segment = synth.tcp(cam6, victim6, sport, 443, b"", flags=synth.TCP_SYN, seq=r.getrandbits(32))
        return synth.ether(HIK.mac, GW.mac, 0x86DD, synth.ipv6(cam6, victim6, 6, segment))

    frames = [(T0 + i * MS, syn(r.randrange(1024, 65535))) for i in range(1500)]
    (a,) = of_rule(alerts(frames), RULE)
    assert a["destination"] == {"ip": victim6, "port": 443} and a["device"]["id"] == HIK.mac_id  # type: ignore[index]


def _gre_flood(
    n: int, *, ethernet: bool = False, seed: int = 5, sender: str = HIK.ip, random_source: bool = False
) -> list[tuple[int, bytes]]:
    """Mirai's greip (an IP packet inside) or greeth (an Ethernet frame inside) from the camera to the victim,
    2,000 packets a second: an inner source address drawn once per attack (here a public one, as all but 1%
    of draws are), a random inner destination, MACs and UDP ports per packet. Variants draw the inner source
    per packet (``random_source``)."""
    r = random.Random(seed)
    src = "45.33.12.7"
    out = []
    for i in range(n):
        dst = ".".join(str(r.randrange(1, 255)) for _ in range(4))
        if random_source:
            src = ".".join(str(r.randrange(1, 255)) for _ in range(4))
        packet = synth.ipv4(
            src, dst, 17, synth.udp(src, dst, r.randrange(1, 65535), r.randrange(1, 65535), bytes(64))
        )
        if ethernet:
            macs = synth.mac_bytes(r.getrandbits(46) << 2) + synth.mac_bytes(r.getrandbits(46) << 2)
            gre = struct.pack("!HH", 0, 0x6558) + macs + b"\x08\x00" + packet
        else:
            gre = struct.pack("!HH", 0, 0x0800) + packet
        out.append(
            (T0 + i * MS // 2, synth.ether(HIK.mac, GW.mac, 0x0800, synth.ipv4(sender, VICTIM, 47, gre)))
        )
    return out


@pytest.mark.parametrize("ethernet", [False, True], ids=["greip", "greeth"])
def test_a_gre_flood_is_the_cameras_own_flood(ethernet: bool) -> None:
    # Looked through as a mirror's tunnel, its random inner addresses made the camera a router and the flood
    # 3,000 strangers' flows, and nothing was reported as a flood.
    engine, flows, records = run_frames(_gre_flood(3000, ethernet=ethernet), policy=POLICY)
    (a,) = of_rule(records, RULE)
    assert a["source"] == {"ip": HIK.ip, "mac": HIK.mac_id} and a["destination"] == {"ip": VICTIM}  # type: ignore[comparison-overlap]
    assert a["device"]["id"] == HIK.mac_id and a["network"]["transport"] == "gre"  # type: ignore[index]
    assert a["camwatch"]["flood"]["packets"] >= flooding.FLOOD_FLOWS  # type: ignore[index]
    assert "GRE packets to it in 1." in str(a["message"]) and "a GRE flood" in str(a["message"])
    assert [(f.proto, f.src[0], f.dst[0]) for f in flows] == [(47, HIK.ip, VICTIM)]
    assert engine.site.routers == set() and engine.stats.decapsulated == 0
    assert [r["source"]["ip"] for r in of_rule(records, "device.new")] == [HIK.ip]  # type: ignore[index]


@pytest.mark.parametrize("sender", [HIK.ip, "198.51.100.64"], ids=["monitored", "unlisted-public"])
def test_a_flood_drawing_its_inner_source_per_packet(sender: str) -> None:
    # About 1% of the draws are private: those packets look like a VPN's and are looked through, and their
    # sources behind the camera's MAC make the site model take it for a router. The camera is still the
    # flood's sender, by its monitored address or, at an address the policy does not list, by its make.
    engine, flows, records = run_frames(
        _gre_flood(3000, sender=sender, random_source=True), policy=POLICY, batch_size=512
    )
    (a,) = of_rule(records, RULE)
    assert a["source"]["ip"] == sender and a["camwatch"]["flood"]["packets"] >= flooding.FLOOD_FLOWS  # type: ignore[index]
    assert 0 < engine.stats.decapsulated < 60 and len(flows) == 1 + engine.stats.decapsulated


def _ping(i: int, src: Host, dst: Host, reply: bool = False) -> bytes:
    icmp = synth.icmp_echo(7, i, reply=reply)
    return synth.ether(src.mac, dst.mac, 0x0800, synth.ipv4(src.ip, dst.ip, 1, icmp))


@pytest.mark.parametrize("batch_size", [1, 7, 256, 65536])
def test_a_gre_flood_is_reported_once_in_any_batch(batch_size: int) -> None:
    (a,) = of_rule(alerts(_gre_flood(3000), batch_size=batch_size), RULE)
    assert a["destination"] == {"ip": VICTIM} and "GRE packets to it" in str(a["message"])


def test_a_slow_tunnel_read_in_one_batch_is_no_flood() -> None:
    # Half an hour of one GRE packet a second arrives in one batch: its 1,800 packets were sent over 1,800 s.
    frames = [(T0 + i * NS, f) for i, (_, f) in enumerate(_gre_flood(1800))]
    assert of_rule(alerts(frames), RULE) == []


def test_a_long_flood_is_followed_while_a_prefix_flood_churns_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A GRE flood at the victim (500 packets a second), beside one at random hosts of a /16 (a new flow each
    # packet) that fills the followed flows' table many times over: the victim's flow, active, stays in it.
    monkeypatch.setattr(flooding, "MAX_PACKET_FLOWS", 8)
    r = random.Random(8)
    victim = _gre_flood(1500)
    frames = [(T0 + i * 2 * MS, f) for i, (_, f) in enumerate(victim)]
    for i in range(15_000):
        dst = f"198.18.{r.randrange(256)}.{r.randrange(1, 255)}"
        inner = synth.ipv4("45.33.12.7", dst, 17, synth.udp("45.33.12.7", dst, 1, 2, bytes(32)))
        gre = struct.pack("!HH", 0, 0x0800) + inner
        frames.append(
            (T0 + i * MS // 5 + 1, synth.ether(HIK.mac, GW.mac, 0x0800, synth.ipv4(HIK.ip, dst, 47, gre)))
        )
    engine, _, records = run_frames(sorted(frames, key=lambda f: f[0]), policy=POLICY, batch_size=256)
    assert [a["destination"]["ip"] for a in of_rule(records, RULE)] == [VICTIM]  # type: ignore[index]
    assert _flooding(engine).packet_flows.evicted > 10_000


@pytest.mark.parametrize("pinged_first", [True, False])
@pytest.mark.parametrize("requests_seen", [True, False])
def test_a_camera_answering_a_ping_flood_is_not_the_flooder(requests_seen: bool, pinged_first: bool) -> None:
    # Its echo replies fall in the flow its own earlier ping started (an ICMP flow key has no identifier).
    attacker = Host(ATTACKER.ip, GW.mac)
    frames = [(T0 - NS, _ping(0, HIK, attacker))] if pinged_first else []
    frames += [(T0 + i * MS + MS // 10, _ping(i, HIK, attacker, reply=True)) for i in range(3000)]
    if requests_seen:
        frames += [(T0 + i * MS, _ping(i, attacker, HIK)) for i in range(3000)]
    assert of_rule(alerts(frames), RULE) == []


@pytest.mark.parametrize("victim_replies", [True, False])
@pytest.mark.parametrize("batch_size", [1, 256, 65536])
def test_a_ping_flood_is_counted_by_the_camera_s_echo_requests(victim_replies: bool, batch_size: int) -> None:
    # 3,000 echo requests 1 ms apart (a new identifier each, as flood tools send): one ICMP flow.
    victim = Host(VICTIM, GW.mac)
    frames = [(T0 + i * MS, _ping(i, HIK, victim)) for i in range(3000)]
    if victim_replies:
        frames += [(T0 + i * MS + MS // 10, _ping(i, victim, HIK, reply=True)) for i in range(3000)]
    (a,) = of_rule(alerts(sorted(frames), batch_size=batch_size), RULE)
    assert a["destination"] == {"ip": VICTIM} and a["source"]["ip"] == HIK.ip  # type: ignore[index]
    assert "ICMP echo requests to it in" in str(a["message"]) and "a ping flood" in str(a["message"])
    assert a["camwatch"]["flood"]["packets"] >= flooding.FLOOD_FLOWS  # type: ignore[index]


def test_a_ping_flood_after_an_idle_ping_in_the_same_batch() -> None:
    # A ping two minutes before the flood, in one batch: the flow table replays that key packet by packet (its
    # idle gap ends the first flow), and counts the flood's echo requests there too.
    victim = Host(VICTIM, GW.mac)
    frames = [(T0 - 120 * NS, _ping(0, HIK, victim))] + [
        (T0 + i * MS, _ping(i, HIK, victim)) for i in range(3000)
    ]
    (a,) = of_rule(alerts(frames), RULE)
    assert "ICMP echo requests to it" in str(a["message"]) and a["destination"] == {"ip": VICTIM}


def test_a_ping_flood_over_ipv6() -> None:
    cam6, victim6 = "2001:db8:20::11", "2001:db8:dead::50"
    policy = SitePolicy.from_yaml("site: s\nmonitored: {networks: [2001:db8:20::/64]}\n", "p")

    def ping6(i: int) -> bytes:
        body = struct.pack("!BBHHH", 128, 0, 0, 7, i) + b"camwatch"
        return synth.ether(HIK.mac, GW.mac, 0x86DD, synth.ipv6(cam6, victim6, 58, body))

    _, _, records = run_frames([(T0 + i * MS, ping6(i)) for i in range(3000)], policy=policy)
    (a,) = of_rule(records, RULE)
    assert "ICMP echo requests" in str(a["message"]) and a["destination"] == {"ip": victim6}  # type: ignore[index]


def test_a_camera_s_health_pings_are_no_flood() -> None:
    # An NVR-style check: one ping a second to each of 20 hosts for a minute, answered.
    frames = []
    for second in range(60):
        for h in range(20):
            peer = Host(f"203.0.113.{h + 1}", GW.mac)
            frames.append((T0 + second * NS + h * MS, _ping(second, HIK, peer)))
            frames.append((T0 + second * NS + h * MS + MS // 2, _ping(second, peer, HIK, reply=True)))
    assert of_rule(alerts(frames), RULE) == []


def test_a_sustained_gre_flood_is_not_called_video() -> None:
    # 12 s of greip at 1,000 packets a second: the flood, and stream.egress's sustained-rate check, which no
    # longer says "its video is leaving" of a protocol without ports.
    packet = synth.ipv4("1.2.3.4", "5.6.7.8", 17, synth.udp("1.2.3.4", "5.6.7.8", 1, 2, bytes(512)))
    frame = synth.ether(
        HIK.mac, GW.mac, 0x0800, synth.ipv4(HIK.ip, VICTIM, 47, struct.pack("!HH", 0, 0x0800) + packet)
    )
    records = alerts([(T0 + i * MS, frame) for i in range(12_000)])
    (flood,) = of_rule(records, RULE)
    assert flood["camwatch"]["flood"]["packets"] == 10_000  # type: ignore[index]
    (a,) = of_rule(records, "stream.egress")
    message = str(a["message"])
    assert "sustained flow of GRE" in message and "not video but a flood" in message
    assert "video is leaving" not in message


@pytest.mark.parametrize("kind", ["greip", "prefix"])
def test_a_flood_in_a_tunnel_or_at_a_prefix_on_a_trunk(kind: str) -> None:
    # The trunk shows each packet twice (the routed copy on the servers' VLAN) and some three times.
    r = random.Random(7)
    frames = (
        _gre_flood(3000)
        if kind == "greip"
        else _prefix_flood(3000, [f"203.0.113.{r.randrange(256)}" for _ in range(3000)])
    )
    ((clean,), (trunk,)) = (of_rule(alerts(f), RULE) for f in (frames, _on_a_trunk(frames)))
    if kind == "greip":
        assert trunk["destination"] == clean["destination"] == {"ip": VICTIM}
    else:
        assert str(trunk["destination"]["ip"]).startswith("203.0.113.")  # type: ignore[index]
    assert {k: trunk["camwatch"]["flood"].get(k) for k in ("prefix", "transports")} == {  # type: ignore[index]
        k: clean["camwatch"]["flood"].get(k)
        for k in ("prefix", "transports")  # type: ignore[index]
    }


def test_a_gre_flood_over_ipv6() -> None:
    # The camera (by its make: its global address is in no monitored network) wraps random IPv4 packets in GRE
    # over IPv6 to its victim.
    cam6, victim6 = "2001:db8:20::11", "2001:db8:dead::50"
    frames = []
    for t, frame in _gre_flood(3000):
        gre = frame[14 + 20 :]
        frames.append((t, synth.ether(HIK.mac, GW.mac, 0x86DD, synth.ipv6(cam6, victim6, 47, gre))))
    engine, flows, records = run_frames(frames, policy=POLICY)
    (a,) = of_rule(records, RULE)
    assert a["source"]["ip"] == cam6 and a["destination"] == {"ip": victim6}  # type: ignore[index]
    assert [(f.proto, f.dst[0]) for f in flows] == [(47, victim6)] and engine.stats.decapsulated == 0
