"""A site as a real mirror port delivers it: a VLAN trunk with routed copies, a port mirrored twice,
sessions that were running before the capture started, IPv6 next to IPv4, and encrypted DNS.

The site: cameras on VLAN 10 (10.10.0.0/24, 2001:db8:10::/64), the recorder and the site resolver on
VLAN 20 (10.20.0.0/24), one router between them and the Internet (``ROUTER_MAC``, 10.10.0.1 and 10.20.0.1,
fe80::1). The mirror copies the trunk, so a packet routed from VLAN 10 to VLAN 20 is seen twice: from the
sender's MAC on VLAN 10, then from the router's MAC on VLAN 20 with a TTL one lower. The Internet uplink
is not mirrored. The port of ``CAM1`` is mirrored in both directions, so each of its frames is seen twice.

What each camera does (the truth the tests assert, ``EXPECTED_ALERTS``):

- CAM1 (Hikvision MAC): ARP and IPv6 neighbour discovery; is pulled over RTSP by the recorder (routed);
  looks up ``litedev.ezvizlife.com`` at the site resolver (routed) and connects to it on tcp/8666; opens
  TLS over IPv6 to a public address; asks ``dns.google`` over HTTPS (DNS over HTTPS).
- CAM2 (Dahua MAC): answers the recorder over RTSP with its ``Dahua Rtsp Server`` banner (routed); holds
  a TLS session to the vendor cloud that started before the capture (the first packet seen is the
  server's); opens DNS over TLS to 1.1.1.1.

No alert may name the router's MAC, each incident is raised once, and the router is not taken for a
camera.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from lab import payloads, synth

US = 1_000
MS = 1_000_000
S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z

ROUTER_MAC = "00:00:5e:00:01:01"
ROUTER_V10, ROUTER_V20, ROUTER_LL = "10.10.0.1", "10.20.0.1", "fe80::1"
CAMERA_VLAN, SERVER_VLAN = 10, 20


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    mac: str  # "" for a host beyond the router (the Internet)
    ip: str
    vlan: int | None  # None: not on a mirrored segment
    ip6: str | None = None


CAM1 = Host("cam1", "44:19:b6:00:10:11", "10.10.0.11", CAMERA_VLAN, "2001:db8:10::11")
CAM2 = Host("cam2", "3c:ef:8c:00:10:12", "10.10.0.12", CAMERA_VLAN)
RECORDER = Host("recorder", "00:11:32:00:20:05", "10.20.0.5", SERVER_VLAN)
RESOLVER = Host("resolver", "00:11:32:00:20:35", "10.20.0.53", SERVER_VLAN)
EZVIZ = Host("ezviz-cloud", "", "203.0.113.10", None)
DAHUA_CLOUD = Host("dahua-cloud", "", "203.0.113.20", None)
V6_SERVER = Host("v6-server", "", "2001:db8:ffff::10", None)
GOOGLE_DNS = Host("google-dns", "", "8.8.8.8", None)
CLOUDFLARE_DNS = Host("cloudflare-dns", "", "1.1.1.1", None)

POLICY_YAML = f"""\
site: mirror-site
monitored:
  networks: [10.10.0.0/24, "2001:db8:10::/64"]
resolvers: [{RESOLVER.ip}]
viewers: [{RECORDER.ip}]
allow:
  - name: site servers (recorder, resolver)
    to: [10.20.0.0/24]
"""

# (rule id, source ip, source mac, destination ip): every alert the capture must raise, once each.
EXPECTED_ALERTS = {
    ("device.new", CAM1.ip, CAM1.mac.replace(":", "-"), None),
    ("device.new", CAM2.ip, CAM2.mac.replace(":", "-"), None),
    ("device.new", ROUTER_V10, ROUTER_MAC.replace(":", "-"), None),
    ("dns.vendor_cloud", CAM1.ip, CAM1.mac.replace(":", "-"), RESOLVER.ip),
    ("egress.unexpected_destination", CAM1.ip, CAM1.mac.replace(":", "-"), EZVIZ.ip),
    ("egress.unexpected_destination", CAM1.ip6, CAM1.mac.replace(":", "-"), V6_SERVER.ip),
    ("egress.unexpected_destination", CAM1.ip, CAM1.mac.replace(":", "-"), GOOGLE_DNS.ip),
    ("dns.resolver_bypass", CAM1.ip, CAM1.mac.replace(":", "-"), GOOGLE_DNS.ip),
    ("egress.unexpected_destination", CAM2.ip, CAM2.mac.replace(":", "-"), DAHUA_CLOUD.ip),
    ("egress.unexpected_destination", CAM2.ip, CAM2.mac.replace(":", "-"), CLOUDFLARE_DNS.ip),
    ("dns.resolver_bypass", CAM2.ip, CAM2.mac.replace(":", "-"), CLOUDFLARE_DNS.ip),
}


@dataclass
class Mirror:
    """Builds the frames a trunk mirror shows for IP packets between hosts."""

    duplicated: frozenset[str] = frozenset({CAM1.name})  # hosts whose switch port is mirrored twice
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    _ident: int = 0

    def ip(self, t: int, src: Host, dst: Host, proto: int, l4: bytes, *, v6: bool = False) -> None:
        """One IP packet from src to dst, as the mirror sees it (zero, one or two segments, maybe twice)."""
        s_ip, d_ip = (src.ip6 or src.ip, dst.ip6 or dst.ip) if v6 else (src.ip, dst.ip)
        self._ident = (self._ident + 1) & 0xFFFF
        same_segment = src.vlan is not None and src.vlan == dst.vlan
        if src.vlan is not None:  # on the sender's segment: its own MAC, TTL untouched
            self._frame(
                t, src, src.mac, dst.mac if same_segment else ROUTER_MAC, s_ip, d_ip, proto, l4, 64, v6
            )
        if dst.vlan is not None and not same_segment:  # routed onto the receiver's segment, TTL one lower
            ttl = 63 if src.vlan is not None else 50
            self._frame(t + 40 * US, dst, ROUTER_MAC, dst.mac, s_ip, d_ip, proto, l4, ttl, v6)

    def _frame(
        self,
        t: int,
        on: Host,
        smac: str,
        dmac: str,
        s_ip: str,
        d_ip: str,
        proto: int,
        l4: bytes,
        ttl: int,
        v6: bool,
    ) -> None:
        if v6:
            frame = synth.ether(
                smac, dmac, 0x86DD, synth.ipv6(s_ip, d_ip, proto, l4, hop=ttl), (on.vlan or 0,)
            )
        else:
            packet = synth.ipv4(s_ip, d_ip, proto, l4, ttl=ttl, ident=self._ident)
            frame = synth.ether(smac, dmac, 0x0800, packet, (on.vlan or 0,))
        self.frames.append((t, frame))
        if on.name in self.duplicated:
            self.frames.append((t + 5 * US, frame))

    def udp(
        self, t: int, src: Host, dst: Host, sport: int, dport: int, data: bytes, *, v6: bool = False
    ) -> None:
        s_ip, d_ip = (src.ip6 or src.ip, dst.ip6 or dst.ip) if v6 else (src.ip, dst.ip)
        self.ip(t, src, dst, 17, synth.udp(s_ip, d_ip, sport, dport, data), v6=v6)

    def tcp_session(
        self,
        t: int,
        client: Host,
        server: Host,
        cport: int,
        sport: int,
        turns: list[tuple[bytes, bytes]],
        *,
        v6: bool = False,
        opening_seen: bool = True,
    ) -> int:
        """A TCP connection: handshake (unless it opened before the capture), request/response turns (a
        session met mid-way starts with the server's data), FIN both ways. Returns the time after it."""
        c_ip, s_ip = (client.ip6 or client.ip, server.ip6 or server.ip) if v6 else (client.ip, server.ip)
        seq = {True: 1000, False: 7000}  # by "sent by the client"
        clock = t

        def send(from_client: bool, flags: int, data: bytes = b"") -> None:
            nonlocal clock
            src, dst = (client, server) if from_client else (server, client)
            a, b = (c_ip, s_ip) if from_client else (s_ip, c_ip)
            ap, bp = (cport, sport) if from_client else (sport, cport)
            seg = synth.tcp(a, b, ap, bp, data, flags=flags, seq=seq[from_client], ack=seq[not from_client])
            self.ip(clock, src, dst, 6, seg, v6=v6)
            seq[from_client] += len(data) + (1 if flags & (synth.TCP_SYN | synth.TCP_FIN) else 0)
            clock += MS

        ack, psh = synth.TCP_ACK, synth.TCP_PSH | synth.TCP_ACK
        if opening_seen:
            send(True, synth.TCP_SYN)
            send(False, synth.TCP_SYN | ack)
            send(True, ack)
        for request, response in turns:
            if request:
                send(True, psh, request)
            if response:
                send(False, psh, response)
        send(True, synth.TCP_FIN | ack)
        send(False, synth.TCP_FIN | ack)
        send(True, ack)
        return clock


def arp(op: int, smac: str, sip: str, tmac: str, tip: str) -> bytes:
    return (
        struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
        + synth.mac_bytes(smac)
        + _v4(sip)
        + synth.mac_bytes(tmac)
        + _v4(tip)
    )


def _v4(ip: str) -> bytes:
    return bytes(int(x) for x in ip.split("."))


def icmp6(src: str, dst: str, body: bytes) -> bytes:
    """An ICMPv6 message (type and code are body's first bytes) with its checksum."""
    msg = body[:2] + b"\0\0" + body[4:]
    csum = synth.checksum(synth.pseudo_header(src, dst, 58, len(msg)) + msg)
    return msg[:2] + struct.pack("!H", csum) + msg[4:]


def ndp_router_advertisement(router_mac: str) -> bytes:
    return bytes([134, 0, 0, 0, 64, 0, 0x07, 0x08]) + bytes(8) + bytes([1, 1]) + synth.mac_bytes(router_mac)


def ndp_neighbor_advertisement(target: str, mac: str, router: bool = False) -> bytes:
    import ipaddress

    flags = 0x60 | (0x80 if router else 0)  # solicited, override
    return (
        bytes([136, 0, 0, 0, flags, 0, 0, 0])
        + ipaddress.IPv6Address(target).packed
        + bytes([2, 1])
        + synth.mac_bytes(mac)
    )


def tls_client_hello(host: str) -> bytes:
    """A TLS 1.2 record carrying a ClientHello with the server name ``host``."""
    name = host.encode()
    sni = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    body = b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", 2) + b"\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(sni)) + sni
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello


def tls_application_data(size: int) -> bytes:
    return b"\x17\x03\x03" + struct.pack("!H", size) + bytes(size)


def site_frames() -> list[tuple[int, bytes]]:
    """The whole capture, in capture order."""
    m = Mirror()
    t = T0
    # Link layer: the cameras find their router (ARP on VLAN 10, NDP), the servers theirs (VLAN 20).
    for host, gw in ((CAM1, ROUTER_V10), (CAM2, ROUTER_V10), (RECORDER, ROUTER_V20), (RESOLVER, ROUTER_V20)):
        request = arp(1, host.mac, host.ip, "00:00:00:00:00:00", gw)
        reply = arp(2, ROUTER_MAC, gw, host.mac, host.ip)
        m.frames.append((t, synth.ether(host.mac, "ff:ff:ff:ff:ff:ff", 0x0806, request, (host.vlan or 0,))))
        m.frames.append((t + 100 * US, synth.ether(ROUTER_MAC, host.mac, 0x0806, reply, (host.vlan or 0,))))
        t += MS
    ra = icmp6(ROUTER_LL, "ff02::1", ndp_router_advertisement(ROUTER_MAC))
    m.frames.append(
        (
            t,
            synth.ether(
                ROUTER_MAC,
                "33:33:00:00:00:01",
                0x86DD,
                synth.ipv6(ROUTER_LL, "ff02::1", 58, ra, hop=255),
                (CAMERA_VLAN,),
            ),
        )
    )
    na = icmp6(CAM1.ip6 or "", "ff02::1", ndp_neighbor_advertisement(CAM1.ip6 or "", CAM1.mac))
    m.frames.append(
        (
            t + MS,
            synth.ether(
                CAM1.mac,
                "33:33:00:00:00:01",
                0x86DD,
                synth.ipv6(CAM1.ip6 or "", "ff02::1", 58, na, hop=255),
                (CAMERA_VLAN,),
            ),
        )
    )
    t += 10 * MS

    # The recorder pulls CAM1 and CAM2 over RTSP (VLAN 20 -> VLAN 10, routed both ways).
    for cam, banner, port in ((CAM1, "Hikvision-Webs", 40001), (CAM2, "Dahua Rtsp Server", 40002)):
        url = f"rtsp://{cam.ip}/Streaming/Channels/101"
        turns = [
            (payloads.rtsp_request("OPTIONS", url, 1), payloads.rtsp_response(1, banner)),
            (
                payloads.rtsp_request("DESCRIBE", url, 2, "Accept: application/sdp\r\n"),
                payloads.rtsp_response(2, banner, "Content-Type: application/sdp\r\n", payloads.SDP_H264),
            ),
        ]
        t = m.tcp_session(t, RECORDER, cam, port, 554, turns) + 10 * MS

    # CAM1 phones home: the name at the site resolver (routed), then the cloud (the uplink is not mirrored).
    m.udp(t, CAM1, RESOLVER, 41000, 53, payloads.dns_query(0x1111, "litedev.ezvizlife.com"))
    m.udp(
        t + 2 * MS, RESOLVER, CAM1, 53, 41000, payloads.dns_answer(0x1111, "litedev.ezvizlife.com", EZVIZ.ip)
    )
    t = m.tcp_session(t + 10 * MS, CAM1, EZVIZ, 42000, 8666, [(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n", b"")])
    # ... and over IPv6 to a public server.
    t = m.tcp_session(
        t + 10 * MS, CAM1, V6_SERVER, 42001, 443, [(tls_client_hello("v6.example.com"), b"")], v6=True
    )
    # ... and asks a public resolver over HTTPS.
    t = m.tcp_session(t + 10 * MS, CAM1, GOOGLE_DNS, 42002, 443, [(tls_client_hello("dns.google"), b"")])

    # CAM2's cloud session was open before the capture: the first packet seen is the cloud's.
    t = m.tcp_session(
        t + 10 * MS,
        CAM2,
        DAHUA_CLOUD,
        43000,
        443,
        [(b"", tls_application_data(200)), (tls_application_data(120), tls_application_data(300))],
        opening_seen=False,
    )
    # ... and its resolver is DNS over TLS.
    t = m.tcp_session(
        t + 10 * MS, CAM2, CLOUDFLARE_DNS, 43001, 853, [(tls_client_hello("one.one.one.one"), b"")]
    )
    m.frames.sort(key=lambda item: item[0])
    return m.frames
