"""``device.exposed``: a watched device accepts a connection from the Internet.

A camera the Internet can reach is how Hikvision and Dahua devices are exploited (CVE-2021-36260 was used
against hundreds of thousands of exposed cameras) and enlisted in botnets; it usually means a port forward
or a UPnP mapping on the site router, or a public address (IPv6 with no inbound firewall). Nothing the
camera does on its own shows it: only someone from outside connecting, and the camera answering.

Judged on the device's first packet: when it answers (:class:`~monitor.events.ResponderSeen`), or at the
flow's start (:class:`~monitor.events.FlowStarted`) when its packet is the first seen (the client's was lost,
or the mirror shows only what the camera sends); a mirror that shows only what the camera receives is judged
when the flow ends (:class:`~monitor.events.FlowEnded`): a client that went on past its SYN was answered.

- **Who**: the watched device is the side that did not open the flow. An address off the site is the
  device's own only when it claimed it (ARP, NDP, DHCP) or its make is a watched vendor's: otherwise the MAC
  is most likely a router not yet known as one, sending the Internet's answers.
- **From where**: the opener's address is off the site (not monitored, private, link-local or multicast,
  and not in the device's own global IPv6 /64), routable (not unspecified, loopback or reserved), and not
  one of the policy's viewers. Allow rules do not count: they say where devices may connect, not who may
  connect to them (a remote VMS that connects in is a viewer).
- **Accepted, TCP**: the device's first packet was a SYN-ACK, or, on a session met mid-stream, anything but
  a reset; a session met mid-stream counts only on a port below 1024, or on a port a protocol module
  declares when the client's is ephemeral (32768 and up): between other ports who opened it cannot be told.
  An FTP server's active-mode data connection (from its tcp/20, while the device has a control session to
  it) is the device's own upload.
- **Accepted, UDP**: it answered on a discovery or management service cameras run (:data:`UDP_SERVICES`:
  SSDP, WS-Discovery, SADP, DHIP, mDNS, SNMP, NetBIOS, RTSP): the ones abused as DDoS reflectors. Above port
  1023 the flow must be labelled that protocol: a P2P socket that happens to have one of those ports (they
  lie in the ephemeral range) is not the service. Other UDP (RTP, P2P hole punching, NTP replies) is left to
  the stream and P2P rules.

One alert per device and service (transport and port) per re-alert window: an exposed camera is scanned by
the Internet all day, and each open port is its own fix at the router. A router that rewrites the source of
forwarded connections to its own address (hairpin NAT) hides the outside client: nothing to judge then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from monitor.alerts import HIGH, NS, Alert, Rule
from monitor.decode import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN
from monitor.events import Event, FlowEnded, FlowStarted, ResponderSeen
from monitor.evidence import snapshot
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe
from monitor.rules._common import Bounded, peer_alert, protocol_name
from monitor.site import Site, Watched

DEVICE_EXPOSED = Rule(
    "device.exposed",
    "Watched device accepts connections from the Internet",
    HIGH,
    ("network", "intrusion_detection"),
    ("connection", "allowed"),
)
RULES = (DEVICE_EXPOSED,)

#: UDP services a camera answers that matter when the Internet can reach them: port -> (what it is, the
#: protocol label the flow must carry above port 1023, where the port alone does not say it). The Xiongmai
#: search port (udp/34569) is not here: no module reads that protocol yet, and the port is an ephemeral one.
UDP_SERVICES: Final[dict[int, tuple[str, str | None]]] = {
    137: ("NetBIOS name service", None),
    161: ("SNMP", None),
    554: ("RTSP", None),
    1900: ("SSDP, UPnP discovery", "ssdp"),
    3702: ("WS-Discovery, ONVIF", "wsd"),
    5353: ("mDNS", "mdns"),
    37020: ("Hikvision SADP", "sadp"),
    37810: ("Dahua DHIP discovery", "dhip"),
}

#: Ports a maker's firmware serves something else on than the port's usual protocol.
_VENDOR_PORTS: Final = {("hikvision", 8000): "the Hikvision SDK port (iVMS, Hik-Connect)"}

EPHEMERAL: Final = 32768
FTP_DATA_PORT: Final = 20
#: How long after a device opened an FTP control connection its server may connect back for data.
FTP_HOLD_NS: Final = 3600 * NS
MAX_FTP_SESSIONS: Final = 4096


@lru_cache(maxsize=4096)
def _unroutable(ip: str) -> bool:
    """An address no packet from the Internet carries: unspecified, loopback, reserved (240/4), site-local."""
    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified or addr.is_loopback or (addr.version == 4 and addr.is_reserved):
        return True
    return addr.version == 6 and addr in ipaddress.IPv6Network("fec0::/10")


def _same_link_v6(a: str, b: str) -> bool:
    """Two IPv6 addresses in one /64: a host of the site's own network that the policy does not list."""
    if ":" not in a or ":" not in b:
        return False
    return ipaddress.IPv6Address(a).packed[:8] == ipaddress.IPv6Address(b).packed[:8]


class ExposedRule(RuleModule):
    """Judges each flow at the device's first packet: did a watched device accept someone from outside?"""

    consumes = (FlowStarted, ResponderSeen, FlowEnded)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        # (device key, FTP server) -> when the device last opened a control connection to it.
        self._ftp: Bounded[tuple[str, str], int] = Bounded(MAX_FTP_SESSIONS)

    def evictions(self) -> dict[str, int]:
        return {"ftp_sessions": self._ftp.evicted}

    def judge(self, event: Event) -> Sequence[Alert]:
        flow = event.flow if isinstance(event, FlowStarted | ResponderSeen | FlowEnded) else None
        if flow is None or flow.copy or (flow.proto != PROTO_TCP and flow.proto != PROTO_UDP):
            return ()
        if isinstance(event, FlowStarted):
            if flow.opener_is_src:
                self._note_ftp(flow)
                return ()  # the client sent first: judged when the device answers
            inferred = False
        elif isinstance(event, ResponderSeen):
            if not flow.opener_is_src:
                return ()  # the device sent first: judged at the flow's start
            inferred = False
        else:
            if not self._answer_unseen(flow):
                return ()
            inferred = True
        return self._judge(flow, event.ts_ns, inferred)

    def _note_ftp(self, flow: Flow) -> None:
        """A watched device opening an FTP control connection (its snapshot upload): the server may connect
        back for data (active mode)."""
        if flow.proto != PROTO_TCP or flow.dst[1] != 21:
            return
        opener = self.site.watched(flow, True)
        if opener is not None:
            self._ftp.put((opener.key(flow.src[0]), flow.dst[0]), flow.start_ns)

    @staticmethod
    def _answer_unseen(flow: Flow) -> bool:
        """At its end, a TCP flow whose responder never showed a packet, but whose opener opened it with a
        SYN and went on with ACKs: the answer was there, the mirror did not copy it."""
        if flow.proto != PROTO_TCP or not flow.opener_is_src or flow.dst_counts[0]:
            return False
        opener_flags = flow.flags_a if flow.a_sent_first else flow.flags_b
        return flow.first_flags & (TCP_SYN | TCP_ACK) == TCP_SYN and bool(opener_flags & TCP_ACK)

    def _judge(self, flow: Flow, ts_ns: int, inferred: bool) -> Sequence[Alert]:
        site = self.site
        client_is_src = flow.opener_is_src
        server = site.watched(flow, not client_is_src)
        if server is None:
            return ()
        cam = Side.of(flow, not client_is_src, server.mac)
        client_ip = cam.peer_ip
        if site.is_site_address(client_ip) or _same_link_v6(client_ip, cam.ip) or _unroutable(client_ip):
            return ()
        if not site.is_site_address(cam.ip) and not self._owns(server, cam.ip):
            return ()  # the Internet's address behind a router's MAC: not a device of the site
        policy = site.policy
        if policy.viewers and policy.is_viewer(client_ip):
            return ()
        proto = flow.proto
        transport = transport_name(proto)
        # Named by the port (and the maker), never by how much of the flow the analyzers had read by then,
        # which depends on the batch.
        if proto == PROTO_UDP:
            named = self._udp_service(flow, cam.port)
        else:
            named = self._tcp_service(flow, client_is_src, cam, server, inferred)
        if named is None:
            return ()
        service, label = named
        if proto == PROTO_TCP and cam.peer_port == FTP_DATA_PORT and cam.port >= 1024:
            opened = self._ftp.get((server.key(cam.ip), client_ip))
            if opened is not None and ts_ns - opened <= FTP_HOLD_NS:
                return ()  # active-mode FTP: the server connects back for the device's own upload
        what = f"{transport}/{cam.port} ({service})" if service else f"{transport}/{cam.port}"
        if proto == PROTO_TCP:
            did = f"accepted a connection from {client_ip}, on the Internet, on {what}"
        else:
            did = f"answered {client_ip}, on the Internet, on {what}"
        seen = (
            " (inferred: the mirror copies none of the device's packets, but the client went on past its "
            "SYN, which it does only once answered)"
            if inferred
            else ""
        )
        reflector = (
            " An answering UDP service is also a reflector for DDoS amplification."
            if proto == PROTO_UDP
            else ""
        )
        message = (
            f"{describe(server.device, cam.ip, cam.mac)} {did}{seen}: it can be reached from outside the "
            "site, through a port forward or UPnP mapping on the site router, or a public address. Cameras "
            "reachable from the Internet are how they get exploited (Hikvision CVE-2021-36260) and enlisted "
            f"in botnets.{reflector} Remove the forward or mapping (and disable UPnP on the router), and "
            "reach the device through the VMS or a VPN; a remote viewer that must connect in goes in the "
            "policy's viewers."
        )
        return (
            peer_alert(
                DEVICE_EXPOSED,
                flow,
                client_is_src,
                server,
                site.observer,
                ts_ns,
                message,
                ("exposed", transport, cam.port),
                protocol=label,
                fields=(("network.direction", "inbound"),),
                evidence=snapshot(flow, ts_ns),
            ),
        )

    def _owns(self, server: Watched, ip: str) -> bool:
        """Is the off-site address ``ip`` the watched device's own (not the Internet's, behind a router)?"""
        dev = server.device
        if self.site.claimed(ip, server.mac):
            return True
        return dev is not None and dev.vendor is not None and dev.vendor in self.site.policy.watched_vendors

    def _udp_service(self, flow: Flow, port: int) -> tuple[str, str] | None:
        """(what the device answered on ``port``, its label), or None when it is not a listed service."""
        known = UDP_SERVICES.get(port)
        if known is None:
            return None
        name, label = known
        if label is None:
            return name, next(iter(self.site.port_labels(PROTO_UDP, port)), "")
        if flow.protocol != label:
            return None  # a P2P or media socket that happens to have a discovery port (all are ephemeral)
        return name, label

    def _tcp_service(
        self, flow: Flow, client_is_src: bool, cam: Side, server: Watched, inferred: bool
    ) -> tuple[str, str] | None:
        """(what the device accepted on its port, "" when it has no name; its label), or None when it did
        not accept, or when who opened the flow cannot be told."""
        port = cam.port
        service_port = self.site.is_service_port(PROTO_TCP, port)
        if not inferred:
            # The device's first packet's flags (what it sent later depends on where batches end): it is the
            # responder, unless a session met mid-stream was oriented by its port and the device sent first.
            flags = flow.reply_flags if client_is_src else flow.first_flags
            if flags & TCP_SYN:
                if not flow.opening_seen and not service_port:
                    return None
            elif flags & TCP_RST or not service_port or (port >= 1024 and cam.peer_port < EPHEMERAL):
                # Met mid-session (or refused). Between ports that do not say who serves, nothing is told: a
                # declared high port counts only against an ephemeral client port (the device's own session
                # out of a source port that happens to be declared, to a server's registered port, is not).
                return None
        dev = server.device
        vendor_name = _VENDOR_PORTS.get((dev.vendor, port)) if dev is not None and dev.vendor else None
        if vendor_name is not None:
            return vendor_name, ""  # not the port's usual protocol: no label
        label = next(iter(self.site.port_labels(PROTO_TCP, port)), "")
        return protocol_name(label, with_port=False, default=label.upper()), label
