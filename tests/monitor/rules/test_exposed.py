"""``device.exposed``: a watched device that accepts a connection from the Internet (a port forward, a UPnP
mapping, a public IPv6 address), and the site traffic that is not that: refusals, on-site clients, listed
viewers, the camera's own outbound connections, sessions between high ports met mid-stream."""

from __future__ import annotations

import ipaddress
import json
import struct

from lab import payloads, synth
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
DHIP_REPLY = payloads.dhip_reply("3c:ef:8c:00:00:12", DAHUA.ip, "IPC-HFW2431S", "SERIAL1", "V2.800")
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


def test_a_listed_viewer_may_connect_in_but_an_allow_rule_says_nothing_of_inbound() -> None:
    frames = exchange(T0, ATTACKER, HIK, 51000, 554, [GET])
    assert of_rule(run_frames(frames, policy=_policy(""))[2], RULE)  # what the viewer below changes
    viewer = SitePolicy.from_yaml(
        "site: s\nmonitored: {networks: [10.20.0.0/24]}\nviewers: [10.20.0.2, 198.51.100.66]\n", "p.yaml"
    )
    assert of_rule(run_frames(frames, policy=viewer)[2], RULE) == []
    # Allow rules say where devices may connect: a cloud range the camera may reach (where scanners rent
    # their machines too) does not make connections from it expected.
    allowed = _policy("allow:\n  - {name: cloud, to: [198.51.100.0/24]}\n")
    assert of_rule(run_frames(frames, policy=allowed)[2], RULE)


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
    reply = synth.udp4_frame(DAHUA.mac, GW.mac, DAHUA.ip, ATTACKER.ip, 37810, 50000, DHIP_REPLY)
    (a,) = of_rule(alerts([(T0, probe), (T0 + MS, reply)]), RULE)
    assert "udp/37810 (Dahua DHIP discovery)" in str(a["message"]) and "amplification" in str(a["message"])
    assert of_rule(alerts([(T0, probe)]), RULE) == []  # not answered
    # Media or hole punching on a high port is the stream and P2P rules' business.
    punch = synth.udp4_frame(GW.mac, DAHUA.mac, ATTACKER.ip, DAHUA.ip, 50000, 8200, b"\x80" * 20)
    back = synth.udp4_frame(DAHUA.mac, GW.mac, DAHUA.ip, ATTACKER.ip, 8200, 50000, b"\x80" * 20)
    assert of_rule(alerts([(T0, punch), (T0 + MS, back)]), RULE) == []
    # Nor is a P2P socket that happens to have the discovery port (37810 is in the ephemeral range): it
    # answers the peer's punch with something that is not DHIP.
    punch = synth.udp4_frame(
        GW.mac, DAHUA.mac, ATTACKER.ip, DAHUA.ip, 61234, 37810, b"\xf1\x41\x00\x14" + bytes(20)
    )
    back = synth.udp4_frame(
        DAHUA.mac, GW.mac, DAHUA.ip, ATTACKER.ip, 37810, 61234, b"\xf1\x42\x00\x14" + bytes(20)
    )
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
    reply = synth.udp4_frame(DAHUA.mac, GW.mac, DAHUA.ip, ATTACKER.ip, 37810, 50000, DHIP_REPLY)
    (b,) = of_rule(alerts([(T0, reply)]), RULE)
    assert b["destination"]["port"] == 37810  # type: ignore[index]


# A review of the rule (each failed before its fix) ---------------------------------------------------------

CAM6, GOOGLE6 = "2001:db8:20::11", "2a00:1450:4001:80b::200e"


def _arp_reply(t: int, mac: str, ip: str, to: Host) -> tuple[int, bytes]:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac_bytes(mac) + ipaddress.IPv4Address(ip).packed
    body += mac_bytes(to.mac) + ipaddress.IPv4Address(to.ip).packed
    return t, synth.ether(mac, to.mac, 0x0806, body)


def _tcp(
    t: int, a: Host, b: Host, sport: int, dport: int, flags: int, data: bytes = b""
) -> tuple[int, bytes]:
    return t, synth.tcp4_frame(a.mac, b.mac, a.ip, b.ip, sport, dport, data, flags=flags)


def test_the_camera_s_ipv6_connection_out_does_not_make_the_gateway_exposed() -> None:
    # The gateway owns 10.20.0.1 (monitored): its MAC is watched. Before it is known as a router, the
    # Internet server's IPv6 address behind its MAC is not the gateway's own, and the camera is no client.
    frames = [_arp_reply(T0, GW.mac, GW.ip, HIK)]
    frames += _tcp6_open(T0 + NS, HIK.mac, GW.mac, CAM6, GOOGLE6, 45000, 443)
    frames += [
        (T0 + NS + 4 * MS, synth.ether(GW.mac, HIK.mac, 0x86DD, synth.ipv6(GOOGLE6, CAM6, 6, synth.tcp(
            GOOGLE6, CAM6, 443, 45000, b"ok", flags=synth.TCP_ACK | synth.TCP_PSH, seq=5001, ack=1002)))),
    ]  # fmt: skip
    assert of_rule(alerts(frames), RULE) == []


def test_an_ftp_server_connecting_back_for_the_camera_s_own_upload() -> None:
    ftp = Host("203.0.113.21", GW.mac)
    control = exchange(
        T0, HIK, ftp, 44000, 21, [(b"PORT 10,20,0,11,175,201\r\n", b"200 PORT command successful\r\n")]
    )
    data = exchange(T0 + 50 * MS, ftp, HIK, 20, 45001, [(b"", b"")])
    assert of_rule(alerts(control + data), RULE) == []
    # Port 20 alone is no pass (nmap -g 20): without the camera's control connection it is exposure.
    assert of_rule(alerts(data), RULE)


def test_the_camera_s_own_session_met_mid_stream_from_a_declared_source_port() -> None:
    # Its registration to a remote VMS (tcp/7660), running when capture started, from source port 37777.
    vms = Host("203.0.113.30", GW.mac)
    out = _tcp(T0, HIK, vms, 37777, 7660, synth.TCP_ACK | synth.TCP_PSH, b"<keepalive/>")
    back = _tcp(T0 + MS, vms, HIK, 7660, 37777, synth.TCP_ACK | synth.TCP_PSH, b"<ok/>")
    assert of_rule(alerts([out, back]), RULE) == []
    assert of_rule(alerts([back, (T0 + 2 * MS, out[1])]), RULE) == []


def test_the_service_is_named_once_and_by_the_maker_s_port() -> None:
    (a,) = of_rule(
        alerts(exchange(T0, ATTACKER, DAHUA, 50000, 37777, [(b"\xa0" + bytes(31), b"\xb0" + bytes(31))])),
        RULE,
    )
    assert str(a["message"]).count("37777") == 1 and "tcp/37777 (Dahua DHIP/DVRIP)" in str(a["message"])
    # Hikvision's tcp/8000 is its SDK port, a binary protocol: not HTTP, though another module declares 8000.
    (b,) = of_rule(alerts(exchange(T0, ATTACKER, HIK, 51000, 8000, [(bytes(32), bytes(16))])), RULE)
    assert "tcp/8000 (the Hikvision SDK port" in str(b["message"]) and "protocol" not in b["network"]  # type: ignore[operator]


def test_unroutable_sources_are_not_the_internet() -> None:
    for src in ("0.0.0.0", "240.1.2.3"):
        client = Host(src, GW.mac)
        assert of_rule(alerts(exchange(T0, client, HIK, 50000, 80, [GET])), RULE) == [], src


def test_a_mirror_that_shows_only_what_the_camera_receives() -> None:
    # The client's SYN, its handshake ACK and its request: it sends those only once answered.
    frames = [f for f in exchange(T0, ATTACKER, HIK, 51000, 80, [GET]) if f[1][:6] == HIK_MAC_BYTES]
    assert len(frames) >= 3
    (a,) = of_rule(alerts(frames), RULE)
    assert "inferred" in str(a["message"]) and a["destination"]["port"] == 80  # type: ignore[index]
    # A SYN scan whose SYNs go unanswered (or whose answers are not copied) is not: it never goes on.
    syns = [_tcp(T0 + i * MS, ATTACKER, HIK, 51000, 80, synth.TCP_SYN) for i in range(3)]
    assert of_rule(alerts(syns), RULE) == []
