"""``device.exposed``: a watched device that accepts a connection from the Internet (a port forward, a UPnP
mapping, a public IPv6 address), and the site traffic that is not that: refusals, on-site clients, listed
viewers, the camera's own outbound connections, sessions between high ports met mid-stream."""

from __future__ import annotations

import json

from lab import synth
from lab.synth import mac_bytes
from monitor.policy import SitePolicy
from tests.enginerun import run_frames
from tests.monitor.rules.test_outbound_review import _tcp6_open
from tests.monitor.rules.test_video_on_a_trunk import _on_a_trunk
from tests.monitor.rules.traffic import (
    ATTACKER,
    DAHUA,
    GW,
    HIK,
    MS,
    NS,
    OFFICE,
    T0,
    Host,
    alerts,
    exchange,
    of_rule,
)

RULE = "device.exposed"
GW_MAC_BYTES, HIK_MAC_BYTES = mac_bytes(GW.mac), mac_bytes(HIK.mac)
GET = (b"GET / HTTP/1.1\r\nHost: cam\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")


def _policy(extra: str) -> SitePolicy:
    return SitePolicy.from_yaml(
        "site: s\nmonitored: {networks: [10.20.0.0/24]}\nviewers: [10.20.0.2]\n" + extra, "p.yaml"
    )


def test_a_camera_that_accepts_a_connection_from_the_internet() -> None:
    (a,) = of_rule(alerts(exchange(T0, ATTACKER, HIK, 51000, 80, [GET])), RULE)
    assert a["source"]["ip"] == ATTACKER.ip and a["destination"] == {  # type: ignore[index]
        "ip": HIK.ip,
        "port": 80,
        "mac": HIK.mac_id,
    }
    assert a["device"]["id"] == HIK.mac_id and a["network"]["direction"] == "inbound"  # type: ignore[index]
    assert a["event"]["severity"] == 4  # type: ignore[index]
    message = str(a["message"])
    assert "accepted a connection from 198.51.100.66, on the Internet, on tcp/80 (HTTP)" in message
    assert "port forward" in message


def test_a_half_open_scan_that_the_camera_answers_is_exposure_too() -> None:
    # masscan and Shodan's SYN scans never complete the handshake: the SYN-ACK is the answer that counts.
    syn = synth.tcp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 61000, 8000, flags=synth.TCP_SYN, seq=7)
    syn_ack = synth.tcp4_frame(
        HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 8000, 61000, flags=synth.TCP_SYN | synth.TCP_ACK, ack=8
    )
    rst = synth.tcp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 61000, 8000, flags=synth.TCP_RST, seq=8)
    (a,) = of_rule(alerts([(T0, syn), (T0 + MS, syn_ack), (T0 + 2 * MS, rst)]), RULE)
    assert a["destination"]["port"] == 8000  # type: ignore[index]


def test_a_refused_connection_is_no_exposure() -> None:
    syn = synth.tcp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 61000, 23, flags=synth.TCP_SYN, seq=7)
    rst = synth.tcp4_frame(
        HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 23, 61000, flags=synth.TCP_RST | synth.TCP_ACK, ack=8
    )
    assert of_rule(alerts([(T0, syn), (T0 + MS, rst)]), RULE) == []


def test_clients_on_the_site_are_not_the_internet() -> None:
    recorder = Host("10.20.0.2", "00:11:32:00:00:02")
    frames = exchange(T0, OFFICE, HIK, 51000, 80, [GET]) + exchange(T0 + NS, recorder, HIK, 51001, 554, [GET])
    assert of_rule(alerts(frames), RULE) == []


def test_a_listed_viewer_or_an_allow_rule_may_connect_in() -> None:
    frames = exchange(T0, ATTACKER, HIK, 51000, 554, [GET])
    assert of_rule(run_frames(frames, policy=_policy(""))[2], RULE)  # what the two policies below change
    viewer = SitePolicy.from_yaml(
        "site: s\nmonitored: {networks: [10.20.0.0/24]}\nviewers: [10.20.0.2, 198.51.100.66]\n", "p.yaml"
    )
    assert of_rule(run_frames(frames, policy=viewer)[2], RULE) == []
    allowed = _policy("allow:\n  - {name: remote vms, to: [198.51.100.0/24], ports: [554/tcp]}\n")
    assert of_rule(run_frames(frames, policy=allowed)[2], RULE) == []
    other_port = _policy("allow:\n  - {name: remote vms, to: [198.51.100.0/24], ports: [443/tcp]}\n")
    assert of_rule(run_frames(frames, policy=other_port)[2], RULE)


def test_the_camera_s_own_connections_out_are_not_exposure() -> None:
    cloud = Host("203.0.113.80", GW.mac)
    frames = exchange(T0, HIK, cloud, 40000, 443, [(b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x03\x00\x02ok")])
    records = alerts(frames)
    assert of_rule(records, "egress.unexpected_destination") and of_rule(records, RULE) == []


def test_a_session_met_mid_stream() -> None:
    # Running when capture started: no SYN. On the camera's RTSP port it is exposure; between two high ports
    # who opened it cannot be told, and nothing is said.
    def midstream(cam_port: int, peer_port: int, cam_first: bool = False) -> list[tuple[int, bytes]]:
        inbound = synth.tcp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, peer_port, cam_port, b"x", seq=100)
        outbound = synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, cam_port, peer_port, b"y", ack=101)
        first, second = (outbound, inbound) if cam_first else (inbound, outbound)
        return [(T0, first), (T0 + MS, second)]

    (a,) = of_rule(alerts(midstream(554, 50000)), RULE)
    assert a["destination"]["port"] == 554 and "tcp/554 (RTSP)" in str(a["message"])  # type: ignore[index]
    assert a["source"]["ip"] == ATTACKER.ip  # type: ignore[index]
    # The camera's video met first: the session is still the outside client's, on the camera's port.
    (b,) = of_rule(alerts(midstream(554, 50000, cam_first=True)), RULE)
    assert b["source"]["ip"] == ATTACKER.ip and b["destination"]["port"] == 554  # type: ignore[index]
    assert of_rule(alerts(midstream(40000, 50000)), RULE) == []


def test_an_ack_probe_the_camera_resets_is_no_exposure_of_that_port() -> None:
    # nmap's ACK scan: a reset is the answer of any port, open or closed; it says nothing of a service.
    probe = synth.tcp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 61000, 80, flags=synth.TCP_ACK, seq=9)
    reset = synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 80, 61000, flags=synth.TCP_RST, seq=9)
    assert of_rule(alerts([(T0, probe), (T0 + MS, reset)]), RULE) == []
    # Met the other way round (the camera's reset first, then the client's retransmission): still a reset.
    again = synth.tcp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 61000, 80, b"x", seq=9)
    assert of_rule(alerts([(T0, reset), (T0 + MS, again)]), RULE) == []


def test_udp_discovery_answered_to_the_internet() -> None:
    probe = synth.udp4_frame(GW.mac, DAHUA.mac, ATTACKER.ip, DAHUA.ip, 50000, 37810, b"\x20\x00\x00\x00" * 8)
    reply = synth.udp4_frame(DAHUA.mac, GW.mac, DAHUA.ip, ATTACKER.ip, 37810, 50000, b"\x20" * 200)
    (a,) = of_rule(alerts([(T0, probe), (T0 + MS, reply)]), RULE)
    assert "udp/37810 (Dahua DHIP discovery)" in str(a["message"]) and "amplification" in str(a["message"])
    assert of_rule(alerts([(T0, probe)]), RULE) == []  # not answered
    # Media or hole punching on a high port is the stream and P2P rules' business.
    punch = synth.udp4_frame(GW.mac, DAHUA.mac, ATTACKER.ip, DAHUA.ip, 50000, 8200, b"\x80" * 20)
    back = synth.udp4_frame(DAHUA.mac, GW.mac, DAHUA.ip, ATTACKER.ip, 8200, 50000, b"\x80" * 20)
    assert of_rule(alerts([(T0, punch), (T0 + MS, back)]), RULE) == []


def test_ipv6_from_the_internet_and_from_the_camera_s_own_network() -> None:
    cam_v6 = "2001:db8:20::11"

    def inbound(peer: str) -> list[tuple[int, bytes]]:
        # _tcp6_open's opener is its first host: here the peer connects to the camera's web port.
        return _tcp6_open(T0, GW.mac, HIK.mac, peer, cam_v6, 51000, 443)

    (a,) = of_rule(alerts(inbound("2001:db8:dead::5")), RULE)
    assert a["source"]["ip"] == "2001:db8:dead::5" and a["device"]["id"] == HIK.mac_id  # type: ignore[index]
    # A host of the camera's own /64 is on the site even when the policy lists only the IPv4 network.
    assert of_rule(alerts(inbound("2001:db8:20::99")), RULE) == []


def test_one_alert_per_port_however_many_scanners() -> None:
    frames: list[tuple[int, bytes]] = []
    for i in range(5):
        scanner = Host(f"198.51.100.{70 + i}", GW.mac)
        frames += exchange(T0 + i * NS, scanner, HIK, 51000 + i, 80, [GET])
    frames += exchange(T0 + 10 * NS, ATTACKER, HIK, 52000, 554, [GET])
    got = of_rule(alerts(frames), RULE)
    assert sorted(a["destination"]["port"] for a in got) == [80, 554]  # type: ignore[index]


def test_a_trunk_mirror_reports_it_once() -> None:
    frames = exchange(T0, ATTACKER, HIK, 51000, 80, [GET])
    clean = of_rule(alerts(frames), RULE)
    trunk = of_rule(alerts(_on_a_trunk(frames)), RULE)
    assert len(clean) == 1 and len(trunk) == 1
    assert json.dumps(trunk[0]["destination"]) == json.dumps(clean[0]["destination"])


def test_the_answer_is_the_device_s_first_packet_whatever_the_batch() -> None:
    # Met mid-session: the camera answers with data and resets the connection later. Judged on its first
    # packet (it accepted), not on all it sent in the batch that held its first: one packet at a time and the
    # whole capture in one batch agree.
    frames = [
        (T0, synth.tcp4_frame(GW.mac, HIK.mac, ATTACKER.ip, HIK.ip, 61000, 80, b"GET", seq=9)),
        (T0 + MS, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 80, 61000, b"HTTP", ack=12)),
        (T0 + 2 * MS, synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, ATTACKER.ip, 80, 61000, flags=synth.TCP_RST)),
    ]
    assert len(of_rule(alerts(frames, batch_size=1), RULE)) == len(of_rule(alerts(frames), RULE)) == 1


def test_a_mirror_that_shows_only_what_the_camera_sends() -> None:
    # A SPAN port set to copy one direction: the camera's SYN-ACK and its answers, never the client's packets.
    frames = [f for f in exchange(T0, ATTACKER, HIK, 51000, 80, [GET]) if f[1][:6] == GW_MAC_BYTES]
    assert frames and all(f[1][6:12] == HIK_MAC_BYTES for f in frames)
    (a,) = of_rule(alerts(frames), RULE)
    assert a["source"]["ip"] == ATTACKER.ip and a["destination"]["port"] == 80  # type: ignore[index]
    # A Dahua discovery answer to the Internet, its request unseen: the service port says who asked.
    reply = synth.udp4_frame(DAHUA.mac, GW.mac, DAHUA.ip, ATTACKER.ip, 37810, 50000, b"\x20" * 200)
    (b,) = of_rule(alerts([(T0, reply)]), RULE)
    assert b["destination"]["port"] == 37810  # type: ignore[index]
