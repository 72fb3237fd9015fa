"""``device.flooding`` against what a review found (each test failed before its fix): a camera that is itself
flooded (stray SYN-ACKs, ACKs, DNS answers) is not the one flooding, nor scanning; a flood of the same target
days later is news again; a port scan of one host from one source port is a scan, not a flood; a flood that
straddles ten seconds is still within a sliding ten; a telnet scan that starts during a flood is still judged.
"""

from __future__ import annotations

import random

from lab import payloads, personas, synth
from tests.monitor.rules.test_flooding import _udp_flood
from tests.monitor.rules.traffic import GW, HIK, MS, NS, RECORDER, T0, alerts, of_rule

RULE = "device.flooding"
VICTIM = "203.0.113.50"  # on the Internet, its frames come through the gateway
Frames = list[tuple[int, bytes]]


def _dns_query(
    t: int, i: int, r: random.Random, dst: str = GW.ip, name: str | None = None
) -> tuple[int, bytes]:
    q = payloads.dns_query(i & 0xFFFF, name or f"{r.getrandbits(40):x}.victim.example")
    return (t, synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, dst, r.randrange(1024, 65535), 53, q))


def test_inbound_synack_flood_against_the_camera_is_not_the_camera_flooding() -> None:
    # Someone on the Internet sends SYN-ACKs (random ports) to a camera with a public/IPv6/DMZ address. The
    # camera is the victim; each SYN-ACK-first flow is oriented as opened by the camera.
    r = random.Random(1)
    frames = [
        (
            T0 + i * MS,
            synth.tcp4_frame(
                GW.mac, HIK.mac, VICTIM, HIK.ip, r.randrange(1, 65535), r.randrange(1, 65535),
                flags=synth.TCP_SYN | synth.TCP_ACK, seq=r.getrandbits(32),
            ),
        )
        for i in range(3000)
    ]  # fmt: skip
    assert of_rule(alerts(frames), RULE) == []


def _inbound_ack_flood(n: int) -> Frames:
    """Mirai's ACK flood at the camera (random ports both sides), each stray ACK answered with a RST."""
    r = random.Random(1)
    frames: Frames = []
    for i in range(n):
        sp, dp = r.randrange(1, 65535), r.randrange(1, 65535)
        frames.append(
            (T0 + i * MS, synth.tcp4_frame(GW.mac, HIK.mac, VICTIM, HIK.ip, sp, dp, seq=r.getrandbits(32)))
        )
        frames.append(
            (
                T0 + i * MS + 10_000,
                synth.tcp4_frame(HIK.mac, GW.mac, HIK.ip, VICTIM, dp, sp, flags=synth.TCP_RST),
            )
        )
    return frames


def test_inbound_ack_flood_against_the_camera_is_not_the_camera_flooding() -> None:
    # Mirai's ACK flood (random source and destination ports) aimed AT the camera; the camera's stack answers
    # each stray ACK with a RST. The port-rank orientation hands about a quarter of these flows to the camera.
    assert of_rule(alerts(_inbound_ack_flood(12_000)), RULE) == []


def test_inbound_ack_flood_against_the_camera_is_not_the_camera_scanning() -> None:
    # The same inbound ACK flood, 3 s of it: the flipped flows' RSTs (the camera's own answers) are read as
    # the "peer" refusing the camera: device.scanning says the victim camera port-scans its attacker.
    assert of_rule(alerts(_inbound_ack_flood(3000)), "device.scanning") == []


def test_dns_reflection_onto_the_camera_is_not_the_camera_flooding() -> None:
    # A DNS amplification attack whose victim is the camera: answers from one open resolver (udp/53) to random
    # camera ports. An answer met first is oriented as the camera's query.
    r = random.Random(1)
    answer = payloads.dns_answer(1, "x.example", "192.0.2.1") + bytes(400)
    frames = [
        (T0 + i * MS, synth.udp4_frame(GW.mac, HIK.mac, VICTIM, HIK.ip, 53, r.randrange(1024, 65535), answer))
        for i in range(3000)
    ]
    assert of_rule(alerts(frames), RULE) == []


def test_a_second_water_torture_days_later_is_reported_again() -> None:
    # Water torture through the site resolver, the camera's ordinary lookups every 10 min for two days (the
    # resolver stays among its 64 most recent destinations), then - reset, reinfected - water torture again.
    r = random.Random(1)
    frames = [_dns_query(T0 + i * 2 * MS, i, r) for i in range(1500)]
    frames += [_dns_query(T0 + 60 * NS + k * 600 * NS, k, r, name="time.example.com") for k in range(288)]
    t2 = T0 + 2 * 86_400 * NS
    frames += [_dns_query(t2 + i * 2 * MS, i, r) for i in range(1500)]
    assert len(of_rule(alerts(frames), RULE)) == 2


def test_an_nmap_style_port_scan_of_the_recorder_is_a_scan_not_a_flood() -> None:
    # A compromised camera SYN-scans the recorder (nmap/masscan: ONE source port, each destination port once,
    # 500 ports/s); the recorder answers every probe (RST, SYN-ACK on its open ports).
    r = random.Random(6)
    ports = list(range(1, 3001))
    r.shuffle(ports)
    frames: Frames = []
    for i, p in enumerate(ports):
        t = T0 + i * 2 * MS
        frames.append(
            (
                t,
                synth.tcp4_frame(
                    HIK.mac, GW.mac, HIK.ip, RECORDER.ip, 52111, p, flags=synth.TCP_SYN, seq=r.getrandbits(32)
                ),
            )
        )
        fl = synth.TCP_SYN | synth.TCP_ACK if p in (80, 443, 554, 8000) else synth.TCP_RST | synth.TCP_ACK
        frames.append(
            (t + MS // 2, synth.tcp4_frame(RECORDER.mac, HIK.mac, RECORDER.ip, HIK.ip, p, 52111, flags=fl))
        )
    records = alerts(frames)
    assert of_rule(records, "device.scanning") and not of_rule(records, RULE)


def test_water_torture_at_190_queries_a_second_for_10_s_is_a_flood() -> None:
    # The camera's ordinary lookup opens the resolver's window; 5 s later water torture runs for 10 s at 190
    # queries/s (1,900 flows; any 10-s span of it holds >= 1,000). The window splits it 951 + 949.
    r = random.Random(1)
    frames = [_dns_query(T0, 0, r, name="time.example.com")]
    frames += [_dns_query(T0 + 5 * NS + i * (NS // 190), i + 1, r) for i in range(1900)]
    assert of_rule(alerts(frames), RULE)


def test_a_mirai_telnet_scan_during_a_flood_is_still_reported() -> None:
    # A UDP flood at 1,000 flows/s for 40 s; 5 s in, Mirai's scanner SYNs random addresses on tcp/23 at
    # 160/s (5,600 unanswered addresses). The flood's flows fill the scanning rule's 4,096 attempts.
    frames = _udp_flood(40_000, seed=5, size=64)
    r = random.Random(5)
    for k in range(160 * 35):
        d = f"{r.randrange(1, 224)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"
        frames.append(
            (
                T0 + 5 * NS + k * (NS // 160) + 7,
                synth.tcp4_frame(
                    HIK.mac,
                    GW.mac,
                    HIK.ip,
                    d,
                    r.randrange(1024, 65535),
                    23,
                    flags=synth.TCP_SYN,
                    seq=r.getrandbits(32),
                ),
            )
        )
    records = alerts(frames)
    assert of_rule(records, RULE) and of_rule(records, "device.scanning")


def test_mirai_http_flood_over_kept_alive_connections() -> None:
    # attack_app_http: a few kept-alive connections, a new GET as soon as the answer is read. Here 50
    # connections, 10,000 GETs to one web server in about 10 s: 50 flows, never 1,000.
    req = (
        b"GET / HTTP/1.1\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64)\r\n"
        b"Host: www.victim.example\r\nConnection: keep-alive\r\nAccept: text/html\r\n\r\n"
    )
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello"
    frames: Frames = []
    for c in range(50):
        frames += personas.tcp_exchange(
            T0 + c * 200 * MS, HIK.mac, GW.mac, HIK.ip, VICTIM, 40000 + c, 80, [(req, resp)] * 200
        )
    (a,) = of_rule(alerts(frames), RULE)
    assert a["camwatch"]["flood"]["requests"] >= 1000 and "HTTP requests to it" in str(a["message"])  # type: ignore[index]
    assert a["source"]["ip"] == HIK.ip and a["destination"] == {"ip": VICTIM, "port": 80}


def test_a_recorder_polling_a_camera_s_snapshots_is_no_http_flood() -> None:
    # A watched recorder fetching one camera's JPEG snapshot 30 times a second over one connection, a minute.
    nvr_mac = "44:19:b6:00:00:02"
    cam = "10.20.0.30"
    get = b"GET /ISAPI/Streaming/channels/101/picture HTTP/1.1\r\nHost: cam\r\n\r\n"
    jpeg = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\n\xff\xd8\xff\xd9"
    frames = personas.tcp_exchange(
        T0, nvr_mac, "00:00:00:00:00:30", RECORDER.ip, cam, 41000, 80, [(get, jpeg)] * 1800
    )
    frames = [(T0 + i * 11 * MS, f) for i, (_, f) in enumerate(frames)]  # 1,800 requests over about 60 s
    assert of_rule(alerts(frames), RULE) == []
