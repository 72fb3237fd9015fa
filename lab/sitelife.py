"""A camera site's normal life over hours or a day, for learning (``camwatch learn``, docs/learning.md).

The site (``LIFE_POLICY`` is its base policy: the camera network, the resolver, the recorder):

| host | MAC | IP | what it does |
|---|---|---|---|
| gateway | 02:00:00:00:00:01 | 10.20.0.1 | the site resolver; routes to the Internet |
| recorder | 00:11:32:00:00:02 (Synology) | 10.20.0.2 | pulls RTSP from every camera every 30 min |
| Hikvision cameras (model DS-2CD2143G2-I, SADP) | 44:19:b6:01:00:nn | 10.20.0.(10+n) | below |
| Dahua cameras (model IPC-HFW2431S-S-S2, DHIP) | 3c:ef:8c:01:00:nn | 10.20.0.(150+n) | below |

Every camera, each on its own phase:

- NTP: Hikvision looks up ``time.example.org`` and Dahua one of ``0-3.pool.ntp.example`` every 10 min,
  then asks that address over udp/123;
- the site's cloud VMS: looks up ``vms.cloudvms.example.com`` (a CNAME to ``edge.cdn-vms.example.net``,
  TTL 60 s) every 5 min, then opens TLS to it on tcp/443 with that server name;
- Hikvision only: syslog to 198.51.100.20 udp/514 every 15 min, by address (no DNS).

The addresses behind the names depend on ``epoch``: a later capture (``epoch=1``) sees the same names
resolve to other addresses, as CDNs and NTP pools do. Options add what learning must not absorb or what
must alert afterwards:

- ``phone_home``: Hikvision camera 0 looks up ``litedev.ezvizlife.com`` and connects on tcp/8666, Dahua
  camera 0 looks up ``www.easy4ipcloud.com`` and sends DHGET on udp/8800, every 10 min (vendor clouds);
- ``scan``: 20 min in, Hikvision camera 1 sends SYNs to 300 addresses of 198.18.0.0/15 on tcp/23;
- ``new_behaviours``: Hikvision camera 2 looks up ``telemetry.newcloud.example`` and connects to it on
  tcp/443; Dahua camera 1 connects to 198.51.100.66 tcp/8443; Hikvision camera 3 connects to its NTP
  server's address on tcp/443; Hikvision camera 1 searches for a UPnP gateway and asks it for a port
  mapping;
- ``video_pps``: each camera also streams RTP to the recorder at that rate (the bulk of a real site).

Deterministic and streamed in capture order (a day of 50 cameras never sits in memory). Public
addresses are from the documentation ranges; names under ``example`` domains, but the vendor clouds'.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lab import payloads, personas, synth
from lab.mirror import tls_client_hello

NS = 1_000_000_000
MS = NS // 1000
T0 = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z

GW_MAC, GW_IP = "02:00:00:00:00:01", "10.20.0.1"
REC_MAC, REC_IP = "00:11:32:00:00:02", "10.20.0.2"
HIK_MODEL, DAHUA_MODEL = "DS-2CD2143G2-I", "IPC-HFW2431S-S-S2"
NTP_NAME = "time.example.org"
POOL_NAMES = tuple(f"{i}.pool.ntp.example" for i in range(4))
VMS_NAME, VMS_EDGE = "vms.cloudvms.example.com", "edge.cdn-vms.example.net"
SYSLOG_IP = "198.51.100.20"
EZVIZ_NAME, EZVIZ_IP = "litedev.ezvizlife.com", "203.0.113.7"
EASY4IP_NAME, EASY4IP_IP = "www.easy4ipcloud.com", "198.51.100.9"
NEW_NAME, NEW_NAME_IP = "telemetry.newcloud.example", "192.0.2.77"
NEW_IP = "198.51.100.66"

LIFE_POLICY = f"""\
site: lifesite
monitored:
  networks: [10.20.0.0/24]
resolvers: [{GW_IP}]
viewers: [{REC_IP}]
"""


@dataclass(frozen=True, slots=True)
class LifeShape:
    """Which site, how long, and what happens in it."""

    hik_cameras: int = 4
    dahua_cameras: int = 2
    seconds: float = 7200.0
    start_ns: int = T0
    epoch: int = 0
    phone_home: bool = True
    scan: bool = False
    new_behaviours: bool = False
    video_pps: float = 0.0


@dataclass(frozen=True, slots=True)
class Camera:
    index: int
    vendor: str  # "hikvision" or "dahua"
    n: int  # index within its vendor
    mac: str
    ip: str


def cameras(shape: LifeShape) -> list[Camera]:
    out = [
        Camera(i, "hikvision", i, f"44:19:b6:01:00:{i:02x}", f"10.20.0.{10 + i}")
        for i in range(shape.hik_cameras)
    ]
    out += [
        Camera(shape.hik_cameras + j, "dahua", j, f"3c:ef:8c:01:00:{j:02x}", f"10.20.0.{150 + j}")
        for j in range(shape.dahua_cameras)
    ]
    return out


def ntp_address(cam: Camera, k: int, epoch: int) -> str:
    """Where the camera's NTP name points in lookup ``k`` (a pool of four, other ones in another epoch)."""
    base = 10 if cam.vendor == "hikvision" else 100
    return f"192.0.2.{base + (cam.n + k) % 4 + 40 * epoch}"


def vms_address(cam: Camera, k: int, epoch: int) -> str:
    return f"203.0.113.{20 + (cam.index + k) % 8 + 40 * epoch}"


def _labels(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_response(txid: int, question: str, records: list[tuple[str, int, int, bytes]]) -> bytes:
    """A response to ``question`` with ``records`` as (owner, type, ttl, rdata), names uncompressed."""
    body = _labels(question) + struct.pack("!HH", 1, 1)
    for owner, rtype, ttl, rdata in records:
        body += _labels(owner) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return struct.pack("!HHHHHH", txid, 0x8180, 1, len(records), 0, 0) + body


def a_record(owner: str, address: str, ttl: int) -> tuple[str, int, int, bytes]:
    return owner, 1, ttl, bytes(int(x) for x in address.split("."))


def cname_record(owner: str, target: str, ttl: int) -> tuple[str, int, int, bytes]:
    return owner, 5, ttl, _labels(target)


Frames = list[tuple[int, bytes]]


class _Builder:
    """The exchanges a camera takes part in, as frames."""

    def __init__(self, shape: LifeShape) -> None:
        self.shape = shape
        self._txid = 0

    def txid(self) -> int:
        self._txid = (self._txid + 1) & 0xFFFF
        return self._txid

    def lookup(
        self, t: int, cam: Camera, sport: int, question: str, records: list[tuple[str, int, int, bytes]]
    ) -> Frames:
        txid = self.txid()
        return personas.udp_pair(
            t,
            cam.mac,
            GW_MAC,
            cam.ip,
            GW_IP,
            sport,
            53,
            payloads.dns_query(txid, question),
            dns_response(txid, question, records),
        )

    def tls(self, t: int, cam: Camera, sport: int, ip: str, port: int, server_name: str) -> Frames:
        hello = tls_client_hello(server_name)
        reply = b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"  # a (short) ServerHello record
        return personas.tcp_exchange(t, cam.mac, GW_MAC, cam.ip, ip, sport, port, [(hello, reply)])


def _sport(cam: Camera, k: int, salt: int) -> int:
    return 20000 + (cam.index * 977 + k * 131 + salt * 7919) % 40000


def behaviours(
    shape: LifeShape, cam: Camera, b: _Builder
) -> list[tuple[int, int, Callable[[int, int], Frames]]]:
    """(first time, period, exchange(t, k)) for each periodic behaviour of a camera."""
    epoch = shape.epoch
    phase = (cam.index * 7919 % 600) * NS // 10 + cam.index * 13 * MS
    out: list[tuple[int, int, Callable[[int, int], Frames]]] = []

    def ntp(t: int, k: int) -> Frames:
        name = NTP_NAME if cam.vendor == "hikvision" else POOL_NAMES[(cam.n + k) % 4]
        address = ntp_address(cam, k, epoch)
        frames = b.lookup(t, cam, _sport(cam, k, 1), name, [a_record(name, address, 600)])
        request, reply = bytes([0x23]) + bytes(47), bytes([0x24]) + bytes(47)
        frames += personas.udp_pair(t + 20 * MS, cam.mac, GW_MAC, cam.ip, address, 123, 123, request, reply)
        return frames

    def vms(t: int, k: int) -> Frames:
        address = vms_address(cam, k, epoch)
        records = [cname_record(VMS_NAME, VMS_EDGE, 300), a_record(VMS_EDGE, address, 60)]
        frames = b.lookup(t, cam, _sport(cam, k, 2), VMS_NAME, records)
        return frames + b.tls(t + 30 * MS, cam, _sport(cam, k, 3), address, 443, VMS_NAME)

    def syslog(t: int, k: int) -> Frames:
        line = f"<134>camera {cam.mac}: heartbeat {k}".encode()
        return [(t, synth.udp4_frame(cam.mac, GW_MAC, cam.ip, SYSLOG_IP, 514, 514, line))]

    def pulled(t: int, k: int) -> Frames:
        server = "Hikvision-Webs" if cam.vendor == "hikvision" else "Dahua Rtsp Server"
        return personas.rtsp_session(
            t, REC_MAC, cam.mac, REC_IP, cam.ip, _sport(cam, k, 4), server, 0, 0, ("DESCRIBE",)
        )

    out += [(phase, 600 * NS, ntp), (phase + 37 * NS, 300 * NS, vms), (phase + 91 * NS, 1800 * NS, pulled)]
    if cam.vendor == "hikvision":
        out.append((phase + 123 * NS, 900 * NS, syslog))

    if shape.phone_home and cam.n == 0 and cam.vendor == "hikvision":

        def ezviz(t: int, k: int) -> Frames:
            frames = b.lookup(t, cam, _sport(cam, k, 5), EZVIZ_NAME, [a_record(EZVIZ_NAME, EZVIZ_IP, 600)])
            hello = b"POST /api/device/register HTTP/1.1\r\nHost: litedev.ezvizlife.com\r\n\r\n"
            frames += personas.tcp_exchange(
                t + 20 * MS,
                cam.mac,
                GW_MAC,
                cam.ip,
                EZVIZ_IP,
                _sport(cam, k, 6),
                8666,
                [(hello, b"HTTP/1.1 200 OK\r\n\r\n")],
            )
            return frames

        out.append((phase + 200 * NS, 600 * NS, ezviz))
    if shape.phone_home and cam.n == 0 and cam.vendor == "dahua":

        def easy4ip(t: int, k: int) -> Frames:
            frames = b.lookup(
                t, cam, _sport(cam, k, 7), EASY4IP_NAME, [a_record(EASY4IP_NAME, EASY4IP_IP, 600)]
            )
            frames.append(
                (
                    t + 20 * MS,
                    synth.udp4_frame(
                        cam.mac,
                        GW_MAC,
                        cam.ip,
                        EASY4IP_IP,
                        _sport(cam, k, 8),
                        8800,
                        payloads.dhget("/probe/p2psrv", k + 1),
                    ),
                )
            )
            return frames

        out.append((phase + 210 * NS, 600 * NS, easy4ip))
    if shape.new_behaviours and cam.vendor == "hikvision" and cam.n == 2:

        def telemetry(t: int, k: int) -> Frames:
            frames = b.lookup(t, cam, _sport(cam, k, 9), NEW_NAME, [a_record(NEW_NAME, NEW_NAME_IP, 300)])
            return frames + b.tls(t + 20 * MS, cam, _sport(cam, k, 10), NEW_NAME_IP, 443, NEW_NAME)

        out.append((phase + 300 * NS, 600 * NS, telemetry))
    if shape.new_behaviours and cam.vendor == "dahua" and cam.n == 1:

        def new_address(t: int, k: int) -> Frames:
            return personas.tcp_exchange(
                t,
                cam.mac,
                GW_MAC,
                cam.ip,
                NEW_IP,
                _sport(cam, k, 11),
                8443,
                [(b"\x16\x03\x01", b"\x16\x03\x03")],
            )

        out.append((phase + 310 * NS, 900 * NS, new_address))
    if shape.new_behaviours and cam.vendor == "hikvision" and cam.n == 3:

        def new_port(t: int, k: int) -> Frames:
            # The NTP name this camera resolved a moment ago, on another port.
            address = ntp_address(cam, k, epoch)
            frames = b.lookup(t, cam, _sport(cam, k, 12), NTP_NAME, [a_record(NTP_NAME, address, 600)])
            return frames + b.tls(t + 20 * MS, cam, _sport(cam, k, 13), address, 443, NTP_NAME)

        out.append((phase + 320 * NS, 900 * NS, new_port))
    return out


def one_off(shape: LifeShape, cam: Camera, b: _Builder) -> Frames:
    """What happens once: discovery replies at the start, the scan, the UPnP request."""
    t0 = shape.start_ns + cam.index * 10 * MS
    frames: Frames = []
    if cam.vendor == "hikvision":
        sadp = payloads.sadp_probe_match(
            cam.mac, cam.ip, HIK_MODEL, f"{HIK_MODEL}20250101AAWR{cam.index:08d}", "V5.7.3"
        )
        frames.append(
            (t0, synth.udp4_frame(cam.mac, personas.MCAST_MAC, cam.ip, "239.255.255.250", 37020, 37020, sadp))
        )
    else:
        dhip = payloads.dhip_reply(cam.mac, cam.ip, DAHUA_MODEL, f"7K0{cam.index:08d}", "2.800.0000000.25.R")
        frames.append(
            (
                t0,
                synth.udp4_frame(
                    cam.mac, personas.DHIP_MCAST_MAC, cam.ip, "239.255.255.251", 37810, 37810, dhip
                ),
            )
        )
    if shape.scan and cam.vendor == "hikvision" and cam.n == 1:
        start = shape.start_ns + 1200 * NS
        for i in range(300):
            target = f"198.18.{i // 200}.{i % 200 + 1}"
            frames.append(
                (
                    start + i * 10 * MS,
                    synth.tcp4_frame(cam.mac, GW_MAC, cam.ip, target, 30000 + i, 23, flags=synth.TCP_SYN),
                )
            )
    if shape.new_behaviours and cam.vendor == "hikvision" and cam.n == 1:
        t = shape.start_ns + 400 * NS
        search = payloads.igd_search()
        frames.append(
            (t, synth.udp4_frame(cam.mac, personas.MCAST_MAC, cam.ip, "239.255.255.250", 40200, 1900, search))
        )
        soap = payloads.add_port_mapping(GW_IP, cam.ip)
        frames += personas.tcp_exchange(
            t + 100 * MS,
            cam.mac,
            GW_MAC,
            cam.ip,
            GW_IP,
            40300,
            49152,
            [(soap, b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 0\r\n\r\n")],
        )
    return frames


def _video(shape: LifeShape, cams: list[Camera]) -> Iterator[tuple[int, bytes]]:
    if shape.video_pps <= 0:
        return
    period = int(NS / shape.video_pps)
    end = shape.start_ns + int(shape.seconds * NS)
    templates = [
        synth.RtpTemplate(
            cam.mac,
            REC_MAC,
            cam.ip,
            REC_IP,
            8000 + 2 * cam.index,
            9000 + 2 * cam.index,
            200,
            0x1000 + cam.index,
        )
        for cam in cams
    ]

    def stream(i: int) -> Iterator[tuple[int, bytes]]:
        t = shape.start_ns + NS + i * 3 * MS
        seq = 0
        while t < end:
            yield t, templates[i].frame(seq, seq * 3000)
            seq += 1
            t += period

    yield from heapq.merge(*(stream(i) for i in range(len(cams))), key=lambda e: e[0])


def site_life(shape: LifeShape) -> Iterator[tuple[int, bytes]]:
    """Every frame of the site over ``shape.seconds``, in capture order."""
    b = _Builder(shape)
    cams = cameras(shape)
    end = shape.start_ns + int(shape.seconds * NS)
    schedule: list[tuple[int, int, int, int, Callable[[int, int], Frames]]] = []
    seq = 0
    for cam in cams:
        for first, period, exchange in behaviours(shape, cam, b):
            schedule.append((shape.start_ns + first, seq, 0, period, exchange))
            seq += 1
    heapq.heapify(schedule)
    pending: Frames = []
    for cam in cams:
        for frame in one_off(shape, cam, b):
            heapq.heappush(pending, frame)

    def control() -> Iterator[tuple[int, bytes]]:
        while schedule and schedule[0][0] < end:
            t, order, k, period, exchange = heapq.heappop(schedule)
            # Frames of earlier exchanges before this one starts are final: nothing later comes before them.
            while pending and pending[0][0] < t:
                yield heapq.heappop(pending)
            for frame in exchange(t, k):
                heapq.heappush(pending, frame)
            heapq.heappush(schedule, (t + period, order, k + 1, period, exchange))
        while pending:
            frame = heapq.heappop(pending)
            if frame[0] < end:
                yield frame

    yield from heapq.merge(control(), _video(shape, cams), key=lambda e: e[0])
