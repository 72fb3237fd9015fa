"""``device.exposed``: a watched device accepts a connection from the Internet.

A camera the Internet can reach is how Hikvision and Dahua devices are exploited (CVE-2021-36260 was used
against hundreds of thousands of exposed cameras) and enlisted in botnets; it usually means a port forward
or a UPnP mapping on the site router, or a public address (IPv6 with no inbound firewall). Nothing the
camera does on its own shows it: only someone from outside connecting, and the camera answering.

Judged on the device's first packet: when it answers (:class:`~monitor.events.ResponderSeen`), or at the
flow's start (:class:`~monitor.events.FlowStarted`) when its packet is the first seen (the client's was lost,
or the mirror shows only what the camera sends). The watched device is the side that did not open the
flow; the opener's address is off the site (not monitored, private, link-local or multicast, and not in the
device's own global IPv6 /64), is not one of the policy's viewers, and no allow rule covers it on the
device's port; and the device accepted:

- **TCP**: its first packet was a SYN-ACK, or, on a connection met mid-session, anything but a reset. When
  the opening was not seen, only a device port that is a service port (below 1024, or one a protocol
  module declares) counts: who opened a session between two high ports cannot be told.
- **UDP**: it answered on a discovery or management service cameras run (:data:`UDP_SERVICES`: SSDP,
  WS-Discovery, SADP, DHIP, the Xiongmai search port, mDNS, SNMP, NetBIOS, RTSP): the ones abused as DDoS
  reflectors. Other UDP (RTP to a viewer, P2P hole punching, NTP replies) is left to the stream and P2P rules.

One alert per device and service (transport and port) per re-alert window: an exposed camera is scanned by the
Internet all day, and each open port is its own fix at the router. A router that rewrites the source of
forwarded connections to its own address (hairpin NAT) hides the outside client: nothing to judge then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from monitor.alerts import HIGH, Alert, Rule
from monitor.decode import PROTO_TCP, PROTO_UDP, TCP_RST, TCP_SYN
from monitor.events import Event, FlowStarted, ResponderSeen
from monitor.evidence import snapshot
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe
from monitor.rules._common import peer_alert, protocol_name

DEVICE_EXPOSED = Rule(
    "device.exposed",
    "Watched device accepts connections from the Internet",
    HIGH,
    ("network", "intrusion_detection"),
    ("connection", "allowed"),
)
RULES = (DEVICE_EXPOSED,)

#: UDP services a camera answers that matter when the Internet can reach them (port -> what it is).
UDP_SERVICES = {
    137: "NetBIOS name service",
    161: "SNMP",
    554: "RTSP",
    1900: "SSDP (UPnP discovery)",
    3702: "WS-Discovery (ONVIF)",
    5353: "mDNS",
    34569: "the Xiongmai device search",
    37020: "Hikvision SADP",
    37810: "Dahua DHIP discovery",
}


def _same_link_v6(a: str, b: str) -> bool:
    """Two IPv6 addresses in one /64: a host of the site's own network that the policy does not list."""
    if ":" not in a or ":" not in b:
        return False
    return ipaddress.IPv6Address(a).packed[:8] == ipaddress.IPv6Address(b).packed[:8]


class ExposedRule(RuleModule):
    """Judges each flow at the device's first packet: did a watched device accept someone from outside?"""

    consumes = (FlowStarted, ResponderSeen)

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, FlowStarted):
            if event.flow.opener_is_src:
                return ()  # the client sent first: judged when the device answers
        elif not isinstance(event, ResponderSeen) or not event.flow.opener_is_src:
            return ()  # the device sent first: judged at the flow's start
        flow = event.flow
        proto = flow.proto
        if flow.copy or (proto != PROTO_TCP and proto != PROTO_UDP):
            return ()
        site = self.site
        client_is_src = flow.opener_is_src
        server = site.watched(flow, not client_is_src)
        if server is None:
            return ()
        cam = Side.of(flow, not client_is_src, server.mac)
        client_ip = cam.peer_ip
        if site.is_site_address(client_ip) or _same_link_v6(client_ip, cam.ip):
            return ()
        policy = site.policy
        transport = transport_name(proto)
        if policy.viewers and policy.is_viewer(client_ip):
            return ()
        if not site.leaves_site(client_ip, cam.port, transport, server.mac or cam.ip, event.ts_ns):
            return ()  # an allow rule names this peer for the device's port
        if not self._accepted(flow, client_is_src, cam.port):
            return ()
        # Named by the port, not by the flow's label: how much of the flow the analyzers had read by then
        # depends on the batch, and the alert must not.
        label = next(iter(site.port_labels(proto, cam.port)), "")
        named = protocol_name(label) if label else ""
        service = UDP_SERVICES[cam.port] if proto == PROTO_UDP else named
        port_txt = f"{transport}/{cam.port}"
        what = f"{port_txt} ({service})" if service else port_txt
        if proto == PROTO_TCP:
            did = f"accepted a connection from {client_ip}, on the Internet, on {what}"
        else:
            did = f"answered {client_ip}, on the Internet, on {what}"
        reflector = (
            " An answering UDP service is also a reflector for DDoS amplification."
            if proto == PROTO_UDP
            else ""
        )
        message = (
            f"{describe(server.device, cam.ip, cam.mac)} {did}: it can be reached from outside the site, "
            "through a port forward or UPnP mapping on the site router, or a public address. Cameras "
            "reachable from the Internet are how they get exploited (Hikvision CVE-2021-36260) and enlisted "
            f"in botnets.{reflector} Remove the forward or mapping (and disable UPnP on the router), and "
            "reach the device through the VMS or a VPN; list a remote viewer that must connect in the "
            "policy's viewers."
        )
        return (
            peer_alert(
                DEVICE_EXPOSED,
                flow,
                client_is_src,
                server,
                site.observer,
                event.ts_ns,
                message,
                ("exposed", transport, cam.port),
                protocol=label,
                fields=(("network.direction", "inbound"),),
                evidence=snapshot(flow, event.ts_ns),
            ),
        )

    def _accepted(self, flow: Flow, client_is_src: bool, port: int) -> bool:
        """Did the device accept on ``port``? False too when who opened the flow cannot be told."""
        if flow.proto == PROTO_UDP:
            return port in UDP_SERVICES
        # The device's first packet's flags (what it sent later depends on where batches end): it is the
        # responder, unless a session met mid-stream was oriented by its port and the device sent first.
        flags = flow.reply_flags if client_is_src else flow.first_flags
        if flags & TCP_SYN:
            return flow.opening_seen or self.site.is_service_port(PROTO_TCP, port)
        # Met mid-session (or a reset): between ports that do not say who serves, nothing is told.
        return not flags & TCP_RST and self.site.is_service_port(PROTO_TCP, port)
