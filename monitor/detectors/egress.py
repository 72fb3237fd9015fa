"""`egress.unexpected_destination`: a watched device opens a flow outside its allowlist."""

from __future__ import annotations

from monitor.alerts import EGRESS_UNEXPECTED, Alert, Endpoint, incident_id
from monitor.decode import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from monitor.devices import Device
from monitor.flows import Flow
from monitor.policy import SitePolicy
from monitor.vendors.oui import format_mac

TRANSPORTS = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "ipv6-icmp", 132: "sctp"}


def transport_name(proto: int) -> str:
    return TRANSPORTS.get(proto, str(proto))


def check_flow(flow: Flow, opener: Device | None, policy: SitePolicy, observer: str) -> Alert | None:
    """Alert when the opener of `flow` is watched and the responder is not allowed."""
    if flow.opener_is_src:
        (o_ip, o_port), (r_ip, r_port), o_mac = flow.src, flow.dst, flow.src_mac
    else:
        (o_ip, o_port), (r_ip, r_port), o_mac = flow.dst, flow.src, flow.dst_mac
    vendor = opener.vendor if opener is not None else None
    if not policy.is_watched(o_ip, vendor):
        return None
    transport = transport_name(flow.proto)
    allowed, _reason = policy.egress_allowed(r_ip, r_port, transport)
    if allowed:
        return None
    mac = format_mac(o_mac) if o_mac else None
    who = _describe(opener, o_ip, mac)
    port_txt = f"{transport}/{r_port}" if flow.proto in (PROTO_TCP, PROTO_UDP, 132) else transport
    dest = r_ip if flow.domain is None else f"{r_ip} ({flow.domain})"  # the DNS name, from before the flow
    message = (
        f"{who} opened {port_txt} to {dest}, which is outside its allowlist: check whether this "
        f"device may reach that destination and block it at the site firewall if not."
    )
    return Alert(
        rule=EGRESS_UNEXPECTED,
        timestamp_ns=flow.start_ns,
        event_id=incident_id(EGRESS_UNEXPECTED.id, observer, mac or o_ip, r_ip, r_port, transport),
        observer=observer,
        message=message,
        source=Endpoint(o_ip, o_port if flow.proto in (PROTO_TCP, PROTO_UDP, 132) else None, mac),
        destination=Endpoint(
            r_ip, r_port if flow.proto in (PROTO_TCP, PROTO_UDP, 132) else None, None, flow.domain
        ),
        transport=transport,
        # Judged on the flow's first packet: its protocol is not known yet (and must not depend on
        # how much of the flow the engine had seen when it ran).
        protocol=None,
        community_id=flow.community_id(),
        device_id=mac,
        manufacturer=opener.manufacturer if opener is not None else None,
    )


def _describe(dev: Device | None, ip: str, mac: str | None) -> str:
    maker = dev.manufacturer if dev is not None and dev.manufacturer else "Watched"
    return f"{maker} device {ip}" + (f" ({mac})" if mac else "")
