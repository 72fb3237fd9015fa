"""A synthetic camera site: the demo capture and the benchmark capture.

The site (addresses match `examples/site-policy.yaml`):

| host | MAC (vendor from the OUI) | IP | behaviour |
|---|---|---|---|
| gateway | 02:00:00:00:00:01 (local) | 10.20.0.1 | DNS and NTP for the site |
| recorder | 00:11:32:00:00:02 (Synology) | 10.20.0.2 | pulls RTSP from every camera |
| Hikvision cameras | 44:19:b6:00:01:nn | 10.20.0.(10+n) | video to the recorder; camera 1 phones home |
| Dahua camera | 3c:ef:8c:00:02:01 | 10.20.0.40 | video; P2P registration on udp/8800 to a public address |
| Axis camera | 00:40:8c:00:03:01 | 10.20.0.41 | video only: well behaved |
| stray Hikvision | 44:19:b6:00:09:01 | 10.30.0.5 | off the camera network, talks to a public server |
| office PC | 00:14:22:00:04:01 (Dell) | 10.30.0.20 | browses the web: not watched |

Public addresses are from the documentation ranges (RFC 5737).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from lab import payloads, personas, synth

NS = 1_000_000_000

GW_MAC, GW_IP = "02:00:00:00:00:01", "10.20.0.1"
REC_MAC, REC_IP = "00:11:32:00:00:02", "10.20.0.2"
DAHUA_MAC, DAHUA_IP = "3c:ef:8c:00:02:01", "10.20.0.40"
AXIS_MAC, AXIS_IP = "00:40:8c:00:03:01", "10.20.0.41"
STRAY_MAC, STRAY_IP = "44:19:b6:00:09:01", "10.30.0.5"
PC_MAC, PC_IP = "00:14:22:00:04:01", "10.30.0.20"
EZVIZ_CLOUD = "203.0.113.7"
EASY4IP = "198.51.100.9"
STRAY_DEST = "203.0.113.50"
WEB = "192.0.2.80"


def hik_mac(n: int) -> str:
    return f"44:19:b6:00:01:{n:02x}"


def hik_ip(n: int) -> str:
    return f"10.20.0.{10 + n}"


@dataclass(frozen=True, slots=True)
class SiteShape:
    """How big the synthetic site is."""

    hik_cameras: int = 2
    seconds: float = 20.0
    video_pps: int = 50  # RTP packets per second per camera
    start_ns: int = 1_764_000_000 * NS


def _dns_query(txid: int, name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def _tcp_session(
    t: int, cmac: str, smac: str, cip: str, sip: str, cport: int, sport: int, request: bytes, reply: bytes
) -> list[tuple[int, bytes]]:
    """A short, complete TCP exchange: handshake, request, reply, FIN both ways."""
    ms = NS // 1000

    def c(off: int, fl: int, data: bytes = b"") -> tuple[int, bytes]:
        return t + off * ms, synth.tcp4_frame(cmac, smac, cip, sip, cport, sport, data, flags=fl)

    def s(off: int, fl: int, data: bytes = b"") -> tuple[int, bytes]:
        return t + off * ms, synth.tcp4_frame(smac, cmac, sip, cip, sport, cport, data, flags=fl)

    A, S, F, P = synth.TCP_ACK, synth.TCP_SYN, synth.TCP_FIN, synth.TCP_PSH
    return [
        c(0, S),
        s(1, S | A),
        c(2, A),
        c(3, P | A, request),
        s(5, P | A, reply),
        c(6, A),
        c(7, F | A),
        s(8, F | A),
        c(9, A),
    ]


def control_events(shape: SiteShape) -> list[tuple[int, bytes]]:
    """The low-rate traffic of the site: RTSP setup, DNS, NTP, phone-home, office browsing."""
    t0 = shape.start_ns
    out: list[tuple[int, bytes]] = []
    cams = [(hik_mac(n), hik_ip(n)) for n in range(1, shape.hik_cameras + 1)]
    cams += [(DAHUA_MAC, DAHUA_IP), (AXIS_MAC, AXIS_IP)]
    servers = ["Hikvision-Webs"] * shape.hik_cameras + ["Dahua Rtsp Server", "AXIS Media Server"]
    for i, (mac, ip) in enumerate(cams):
        t = t0 + i * NS // 100
        # The recorder pulls each camera's stream: the SETUP announces the RTP ports that follow.
        out += personas.rtsp_session(
            t, REC_MAC, mac, REC_IP, ip, 50000 + i, servers[i], 9000 + 2 * i, 8000 + 2 * i
        )
        # DNS and NTP to the site's own resolver and time server: allowed.
        q = _dns_query(0x1000 + i, "time.site.internal")
        out.append((t + NS // 10, synth.udp4_frame(mac, GW_MAC, ip, GW_IP, 40000 + i, 53, q)))
        out.append((t + NS // 10 + NS // 1000, synth.udp4_frame(GW_MAC, mac, GW_IP, ip, 53, 40000 + i, q)))
        ntp = bytes([0x23]) + bytes(47)
        out.append((t + NS // 5, synth.udp4_frame(mac, GW_MAC, ip, GW_IP, 123, 123, ntp)))
    # Camera 1 phones home repeatedly: one incident, one alert.
    hello = b"POST /api/device/register HTTP/1.1\r\nHost: litedev.ezvizlife.com\r\n\r\n"
    for k in range(3):
        t = t0 + (2 + k * 5) * NS
        out += _tcp_session(
            t, hik_mac(1), GW_MAC, hik_ip(1), EZVIZ_CLOUD, 41000 + k, 8666, hello, b"HTTP/1.1 200 OK\r\n\r\n"
        )
    # Dahua Easy4IP-style registration on udp/8800.
    dh = payloads.dhget("/probe/p2psrv", 1)
    for k in range(3):
        out.append(
            (t0 + (3 + k * 4) * NS, synth.udp4_frame(DAHUA_MAC, GW_MAC, DAHUA_IP, EASY4IP, 42000, 8800, dh))
        )
    # A Hikvision camera on the office network reaches a public HTTPS server.
    out += _tcp_session(
        t0 + 4 * NS, STRAY_MAC, GW_MAC, STRAY_IP, STRAY_DEST, 43000, 443, b"\x16\x03\x01", b"\x16\x03\x03"
    )
    # The office PC browses the web: not a watched device.
    out += _tcp_session(t0 + 5 * NS, PC_MAC, GW_MAC, PC_IP, WEB, 44000, 443, b"\x16\x03\x01", b"\x16\x03\x03")
    return out


def persona_events(shape: SiteShape) -> list[tuple[int, bytes]]:
    """Discovery, phone-home and stream misuse by the vendor personas (see lab/personas.py)."""
    t0 = shape.start_ns + 6 * NS
    p = personas
    ms = p.MS
    out: list[tuple[int, bytes]] = []
    cam1, cam1_ip = hik_mac(1), hik_ip(1)
    cam2, cam2_ip = hik_mac(2), hik_ip(2)
    # Discovery replies: who the devices are (model, serial, firmware).
    sadp = p.sadp_probe_match(
        cam2, cam2_ip, "DS-2CD2143G2-I", "DS-2CD2143G2-I20240101AAWRJ00000002", "V5.7.3"
    )
    out.append((t0, synth.udp4_frame(cam2, p.MCAST_MAC, cam2_ip, "239.255.255.250", 37020, 37020, sadp)))
    dhip = p.dhip_reply(DAHUA_MAC, DAHUA_IP, "IPC-HFW2431S-S-S2", "7K0123PAZ00001", "2.800.0000000.25.R")
    out.append(
        (
            t0 + 10 * ms,
            synth.udp4_frame(DAHUA_MAC, p.DHIP_MCAST_MAC, DAHUA_IP, "239.255.255.251", 37810, 37810, dhip),
        )
    )
    wsd = p.wsd_probe_match(
        "urn:uuid:axis-0001", f"http://{AXIS_IP}/onvif/device_service", "AXIS", "P3265-LV"
    )
    out.append(
        (t0 + 20 * ms, synth.udp4_frame(AXIS_MAC, p.MCAST_MAC, AXIS_IP, "239.255.255.250", 3702, 3702, wsd))
    )
    # EZVIZ phone-home by name, then XML "STUN" and UPnP.
    q = "litedev.ezvizlife.com"
    out += p.udp_pair(
        shape.start_ns + 1500 * ms,
        cam1,
        GW_MAC,
        cam1_ip,
        GW_IP,
        40100,
        53,
        p.dns_query(0x2001, q),
        p.dns_answer(0x2001, q, EZVIZ_CLOUD),
    )
    xml = payloads.ezviz_nat_query("Q00000001", "10.20.0.11", 40112)
    out += p.udp_pair(t0 + 2 * NS, cam1, GW_MAC, cam1_ip, p.EZVIZ_STUN, 40112, 6002, xml, None)
    search = payloads.igd_search()
    out.append(
        (t0 + 3 * NS, synth.udp4_frame(cam1, p.MCAST_MAC, cam1_ip, "239.255.255.250", 40200, 1900, search))
    )
    soap = payloads.add_port_mapping(GW_IP, cam1_ip)
    out += p.tcp_exchange(
        t0 + 3 * NS + 100 * ms,
        cam1,
        GW_MAC,
        cam1_ip,
        GW_IP,
        40300,
        49152,
        [(soap, b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 0\r\n\r\n")],
    )
    # Dahua Easy4IP: the cloud by name (its DHGET on udp/8800 is in control_events).
    q = "www.easy4ipcloud.com"
    out += p.udp_pair(
        shape.start_ns + 2500 * ms,
        DAHUA_MAC,
        GW_MAC,
        DAHUA_IP,
        GW_IP,
        40400,
        53,
        p.dns_query(0x2002, q),
        p.dns_answer(0x2002, q, EASY4IP),
    )
    # Xiongmai: hard-coded public resolvers.
    q = "pub-cfg.secu100.net"
    for k, resolver in enumerate(("114.114.114.114", "8.8.8.8")):
        out += p.udp_pair(
            t0 + (5 + k) * NS,
            p.XM_MAC,
            GW_MAC,
            p.XM_IP,
            resolver,
            40500 + k,
            53,
            p.dns_query(0x2003 + k, q),
            p.dns_answer(0x2003 + k, q, "203.0.113.99"),
        )
    # The recorder opens the Xiongmai camera's web page: its banner says who made it.
    page = b"HTTP/1.1 200 OK\r\nServer: uc-httpd 1.0.0\r\nContent-Length: 0\r\n\r\n"
    out += p.tcp_exchange(
        t0 + 6500 * ms,
        REC_MAC,
        p.XM_MAC,
        REC_IP,
        p.XM_IP,
        47000,
        80,
        [(b"GET / HTTP/1.1\r\nHost: 10.20.0.42\r\n\r\n", page)],
    )
    # A stranger on the office network pulls camera 2's stream description.
    out += p.rtsp_session(
        t0 + 7 * NS, PC_MAC, cam2, PC_IP, cam2_ip, 45000, "Hikvision-Webs", 0, 0, ("DESCRIBE",)
    )
    # An off-site client sets up camera 2's stream; the camera then sends RTP to it.
    out += p.rtsp_session(
        t0 + 8 * NS,
        GW_MAC,
        cam2,
        p.OFFSITE_VIEWER,
        cam2_ip,
        46000,
        "Hikvision-Webs",
        6970,
        8200,
        ("SETUP", "PLAY"),
    )
    rtp = synth.RtpTemplate(cam2, GW_MAC, cam2_ip, p.OFFSITE_VIEWER, 8200, 6970, 1200, 0xBEEF)
    out += [(t0 + 9 * NS + k * 20 * ms, rtp.frame(k, k * 3600)) for k in range(50)]
    return out


def video_streams(shape: SiteShape) -> Iterator[tuple[int, bytes]]:
    """RTP from every camera to the recorder, merged in time order."""
    cams = [(hik_mac(n), hik_ip(n)) for n in range(1, shape.hik_cameras + 1)]
    cams += [(DAHUA_MAC, DAHUA_IP), (AXIS_MAC, AXIS_IP)]
    period = NS // shape.video_pps
    end = shape.start_ns + int(shape.seconds * NS)
    # Frame sizes of a typical H.264 stream: a full-size packet most of the time, smaller
    # ends of frames in between (mean about 1 kB).
    sizes = (1400, 1400, 1400, 1400, 1400, 600, 300)

    def stream(i: int, mac: str, ip: str) -> Iterator[tuple[int, bytes]]:
        templates = [
            synth.RtpTemplate(mac, REC_MAC, ip, REC_IP, 8000 + 2 * i, 9000 + 2 * i, s, 0x1000 + i)
            for s in sizes
        ]
        t = shape.start_ns + NS // 2 + i * 997_000
        seq = 0
        while t < end:
            yield t, templates[seq % len(templates)].frame(seq, seq * 1800)
            seq += 1
            t += period

    yield from heapq.merge(*(stream(i, mac, ip) for i, (mac, ip) in enumerate(cams)), key=lambda e: e[0])


def site_packets(shape: SiteShape, personas_on: bool = True) -> Iterator[tuple[int, bytes]]:
    """Every packet of the site, in time order (with the vendor personas unless told not to)."""
    events = control_events(shape) + (persona_events(shape) if personas_on else [])
    control = sorted(events, key=lambda e: e[0])
    yield from heapq.merge(control, video_streams(shape), key=lambda e: e[0])


def demo_shape() -> SiteShape:
    return SiteShape(hik_cameras=2, seconds=20.0, video_pps=50)


def benchmark_shape(packets: int) -> SiteShape:
    """About `packets` packets from 48 Hikvision cameras (50 cameras in all) at 400 packets/s each."""
    cameras, pps = 50, 400
    return SiteShape(hik_cameras=cameras - 2, seconds=packets / (cameras * pps), video_pps=pps)
