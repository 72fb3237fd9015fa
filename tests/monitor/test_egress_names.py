"""Name-based allow rules in ``egress.unexpected_destination``: the DNS answers a device itself received
(for their TTL plus ``name_grace``) and, when only a name could allow a flow, its TLS server name."""

from __future__ import annotations

from collections import Counter

import pytest

from lab import personas, synth
from lab.mirror import tls_client_hello
from lab.payloads import dns_query
from lab.sitelife import a_record, cname_record, dns_response
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.enginerun import run_frames, vendors

NS = 1_000_000_000
MS = NS // 1000
T0 = 1_767_225_600 * NS
GW_MAC, GW_IP = "02:00:00:00:00:01", "10.20.0.1"
CAM1 = ("44:19:b6:00:00:01", "10.20.0.11")
CAM2 = ("44:19:b6:00:00:02", "10.20.0.12")
VMS, EDGE, VMS_IP = "vms.cloudvms.example.com", "edge.cdn.example.net", "203.0.113.21"

POLICY = SitePolicy.from_yaml(f"""
site: s
monitored: {{networks: [10.20.0.0/24]}}
resolvers: [{GW_IP}]
name_grace: 60
allow:
  - name: vms
    to: [{VMS}]
    ports: [443/tcp]
  - name: ntp
    to: ["*.pool.ntp.example"]
    ports: [123/udp]
""")

Frames = list[tuple[int, bytes]]


def lookup(
    t: int, cam: tuple[str, str], name: str, records: list[tuple[str, int, int, bytes]], sport: int
) -> Frames:
    return personas.udp_pair(
        t,
        cam[0],
        GW_MAC,
        cam[1],
        GW_IP,
        sport,
        53,
        dns_query(sport & 0xFFFF, name),
        dns_response(sport & 0xFFFF, name, records),
    )


def vms_answer(address: str = VMS_IP, ttl: int = 60) -> list[tuple[str, int, int, bytes]]:
    return [cname_record(VMS, EDGE, 300), a_record(EDGE, address, ttl)]


def https(
    t: int, cam: tuple[str, str], ip: str, sport: int, server_name: str | None, port: int = 443
) -> Frames:
    hello = tls_client_hello(server_name) if server_name else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    return personas.tcp_exchange(
        t, cam[0], GW_MAC, cam[1], ip, sport, port, [(hello, b"\x16\x03\x03\x00\x00")]
    )


def ntp(t: int, cam: tuple[str, str], ip: str, sport: int) -> Frames:
    return personas.udp_pair(t, cam[0], GW_MAC, cam[1], ip, sport, 123, bytes([0x23]) + bytes(47), None)


def egress(alerts: list[dict[str, object]]) -> list[tuple[str, str, int]]:
    out = []
    for a in alerts:
        rule = a["rule"]
        assert isinstance(rule, dict)
        if rule["id"] == "egress.unexpected_destination":
            src, dst = a["source"], a["destination"]
            assert isinstance(src, dict) and isinstance(dst, dict)
            out.append((str(src["ip"]), str(dst["ip"]), int(dst["port"])))
    return sorted(out)


def run(frames: Frames, policy: SitePolicy = POLICY, batch_size: int = 65536) -> list[dict[str, object]]:
    _, _, alerts = run_frames(sorted(frames), policy=policy, batch_size=batch_size)
    return alerts


def test_a_name_the_device_resolved_allows_the_address_it_got() -> None:
    frames = lookup(T0, CAM1, VMS, vms_answer(), 40000) + https(T0 + NS, CAM1, VMS_IP, 41000, None)
    assert egress(run(frames)) == []


def test_another_devices_answer_explains_nothing() -> None:
    frames = lookup(T0, CAM1, VMS, vms_answer(), 40000) + https(T0 + NS, CAM2, VMS_IP, 41000, None)
    assert egress(run(frames)) == [(CAM2[1], VMS_IP, 443)]


def test_an_answer_is_good_for_its_ttl_plus_the_grace() -> None:
    # TTL 60 s (the CNAME's 300 s does not extend the address's) + 60 s of grace.
    inside = lookup(T0, CAM1, VMS, vms_answer(), 40000) + https(T0 + 119 * NS, CAM1, VMS_IP, 41000, None)
    after = lookup(T0, CAM1, VMS, vms_answer(), 40000) + https(T0 + 121 * NS, CAM1, VMS_IP, 41000, None)
    assert egress(run(inside)) == []
    assert egress(run(after)) == [(CAM1[1], VMS_IP, 443)]


def test_name_rules_keep_their_ports() -> None:
    frames = lookup(T0, CAM1, VMS, vms_answer(), 40000) + https(T0 + NS, CAM1, VMS_IP, 41000, None, port=8443)
    assert egress(run(frames)) == [(CAM1[1], VMS_IP, 8443)]


def test_a_wildcard_covers_names_below_it_not_the_domain_itself() -> None:
    below = lookup(T0, CAM1, "2.pool.ntp.example", [a_record("2.pool.ntp.example", "192.0.2.12", 600)], 40000)
    below += ntp(T0 + NS, CAM1, "192.0.2.12", 40001)
    apex = lookup(T0, CAM1, "pool.ntp.example", [a_record("pool.ntp.example", "192.0.2.13", 600)], 40000)
    apex += ntp(T0 + NS, CAM1, "192.0.2.13", 40001)
    assert egress(run(below)) == []
    assert egress(run(apex)) == [(CAM1[1], "192.0.2.13", 123)]


def test_the_tls_server_name_allows_a_flow_nobody_resolved() -> None:
    allowed = https(T0, CAM1, "198.51.100.5", 41000, VMS)
    other = https(T0, CAM1, "198.51.100.6", 41001, "other.example.com")
    alerts = run(allowed + other)
    assert egress(alerts) == [(CAM1[1], "198.51.100.6", 443)]
    (alert,) = [
        a for a in alerts if a["rule"] == {"id": "egress.unexpected_destination", "name": a["rule"]["name"]}
    ]  # type: ignore[index]
    # Raised at the flow's start, naming the server it asked for.
    assert alert["@timestamp"] == "2026-01-01T00:00:00.000Z"
    assert alert["destination"] == {"ip": "198.51.100.6", "port": 443, "domain": "other.example.com"}  # type: ignore[comparison-overlap]
    assert "other.example.com" in str(alert["message"])


def test_a_flow_waits_for_its_server_name_only_when_a_name_could_allow_it() -> None:
    def feed(frames: Frames) -> list[list[str]]:
        engine = Engine(POLICY, vendors(), EngineConfig(observer="s/t"))
        out = []
        for ts, frame in frames:
            parser = CaptureParser("x", 16)
            (batch,) = [*parser.feed(pcap_bytes([(ts, frame)])), *parser.flush()]
            out.append([a.rule.id for a in engine.feed(batch).alerts])
        return out

    syn = synth.tcp4_frame(CAM1[0], GW_MAC, CAM1[1], "198.51.100.6", 41000, 443, flags=synth.TCP_SYN)
    ping = synth.udp4_frame(CAM2[0], GW_MAC, CAM2[1], GW_IP, 40000, 53, dns_query(1, "x.example.com"))
    # 443/tcp: a name rule lists it, so the flow waits 3 s for a ClientHello that never comes.
    assert feed([(T0, syn), (T0 + 2 * NS, ping), (T0 + 4 * NS, ping)]) == [
        [],
        [],
        ["egress.unexpected_destination"],
    ]
    # 8443/tcp: no name rule lists it: judged on its first packet, as without name rules.
    syn8443 = synth.tcp4_frame(CAM1[0], GW_MAC, CAM1[1], "198.51.100.6", 41000, 8443, flags=synth.TCP_SYN)
    assert feed([(T0, syn8443)]) == [["egress.unexpected_destination"]]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_name_rules_do_not_depend_on_batch_sizes(batch_size: int) -> None:
    frames = lookup(T0, CAM1, VMS, vms_answer(), 40000)
    frames += https(T0 + 500 * MS, CAM1, VMS_IP, 41000, None)
    frames += https(T0 + 600 * MS, CAM2, VMS_IP, 41001, None)
    frames += https(T0 + 700 * MS, CAM2, "198.51.100.5", 41002, VMS)
    frames += https(T0 + 800 * MS, CAM2, "198.51.100.6", 41003, "nope.example.com")
    reference = run(frames)
    assert Counter(egress(run(frames, batch_size=batch_size))) == Counter(egress(reference))
    assert egress(reference) == [(CAM2[1], "198.51.100.6", 443), (CAM2[1], VMS_IP, 443)]


def test_without_name_rules_nothing_changes() -> None:
    policy = SitePolicy.from_yaml("site: s\nmonitored: {networks: [10.20.0.0/24]}\n")
    assert not policy.has_name_rules
    frames = lookup(T0, CAM1, VMS, vms_answer(), 40000) + https(T0 + NS, CAM1, VMS_IP, 41000, VMS)
    assert egress(run(frames, policy)) == [(CAM1[1], VMS_IP, 443)]


def test_flows_beyond_the_name_wait_bound_are_judged_at_once_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 connections to 443/tcp of an address no answer explained, none sending a ClientHello: only their
    # server name could allow them. 2 may wait for it; the other 3 are judged at once, and counted.
    from monitor.rules import egress as egress_rule

    monkeypatch.setattr(egress_rule, "MAX_WAITING", 2)
    frames: Frames = []
    for i in range(5):
        frames += https(T0 + i * MS, CAM1, f"198.51.100.{i + 1}", 40_000 + i, None)
    engine, _, alerts = run_frames(frames, policy=POLICY)
    # All unexpected in the end (the waiting ones after their wait); past 3 the device's incident folds them.
    raised = len(egress(alerts)) + engine.gate.incidents.folded.get("egress.unexpected_destination", 0)
    assert raised == 5
    assert engine.evictions()["name_waits"] == 3 and engine.evictions()["resolved_names"] == 0


def fragmented_lookup(t: int, cam: tuple[str, str], name: str, addresses: list[str], sport: int) -> Frames:
    """A lookup whose answer (one A record per address, 40 bytes each) is larger than a 1500-byte MTU: the
    resolver's datagram goes out in IPv4 fragments of 1480 bytes; only the first carries the UDP header."""
    query = synth.udp4_frame(cam[0], GW_MAC, cam[1], GW_IP, sport, 53, dns_query(sport & 0xFFFF, name))
    answer = dns_response(sport & 0xFFFF, name, [a_record(name, ip, 60) for ip in addresses])
    datagram = synth.udp(GW_IP, cam[1], 53, sport, answer)
    frames = [(t, query)]
    for off in range(0, len(datagram), 1480):
        more = 0x2000 if off + 1480 < len(datagram) else 0
        packet = synth.ipv4(GW_IP, cam[1], 17, datagram[off : off + 1480], ident=9, frag=more | off // 8)
        frames.append((t + 2 * MS, synth.ether(GW_MAC, cam[0], 0x0800, packet)))
    return frames


def test_an_answer_in_fragments_allows_every_address_it_holds() -> None:
    # 120 addresses: 4842 bytes of DNS, 4 fragments; the first holds the question and 35 whole records (the
    # 36th is cut): camwatch reassembles the datagram (monitor/defrag.py), so the records of the later
    # fragments allow their addresses too.
    addresses = [f"203.0.113.{i + 1}" for i in range(120)]
    lookup_frames = fragmented_lookup(T0, CAM1, VMS, addresses, 40000)
    assert len(lookup_frames) == 1 + 4
    first = https(T0 + NS, CAM1, "203.0.113.1", 41000, None)
    last_whole = https(T0 + NS, CAM1, "203.0.113.35", 41001, None)
    past_the_first_fragment = https(T0 + NS, CAM1, "203.0.113.100", 41002, None)
    # An address the answer does not hold stays unexplained (nothing is guessed).
    unseen = https(T0 + NS, CAM1, "203.0.113.200", 41003, None)
    frames = lookup_frames + first + last_whole + past_the_first_fragment + unseen
    assert egress(run(frames)) == [(CAM1[1], "203.0.113.200", 443)]


def test_a_truncated_answer_cut_inside_a_record_allows_its_whole_records() -> None:
    # A resolver that set TC and cut the datagram in the middle of the third record, leaving the counts.
    records = [a_record(VMS, f"203.0.113.{i + 1}", 60) for i in range(3)]
    answer = bytearray(dns_response(40000, VMS, records))
    answer[2:4] = (0x8380).to_bytes(2, "big")  # QR, TC, RD, RA
    frames = personas.udp_pair(
        T0, CAM1[0], GW_MAC, CAM1[1], GW_IP, 40000, 53, dns_query(40000, VMS), bytes(answer[:-6])
    )
    frames += https(T0 + NS, CAM1, "203.0.113.2", 41000, None)
    frames += https(T0 + NS, CAM1, "203.0.113.3", 41001, None)
    assert egress(run(frames)) == [(CAM1[1], "203.0.113.3", 443)]
