"""Detectors: one module per rule family. Shared here: building an alert about one side of a flow."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.devices import Device, is_local_ip
from monitor.flows import Flow
from monitor.policy import SitePolicy
from monitor.vendors.oui import format_mac

_PORTED = frozenset({6, 17, 132})


@dataclass(frozen=True, slots=True)
class Side:
    """One end of a flow as a detector sees it: the device that acts, and the peer."""

    ip: str
    port: int
    mac: int
    peer_ip: str
    peer_port: int

    @classmethod
    def of(cls, flow: Flow, sender_is_src: bool) -> Side:
        me, peer = (flow.src, flow.dst) if sender_is_src else (flow.dst, flow.src)
        mac = flow.src_mac if sender_is_src else flow.dst_mac
        return cls(me[0], me[1], mac, peer[0], peer[1])


def is_watched(policy: SitePolicy, dev: Device | None, ip: str) -> bool:
    if dev is not None and dev.watched:
        return True
    return policy.is_watched(ip, dev.vendor if dev is not None else None)


def leaves_site(policy: SitePolicy, ip: str, port: int, transport: str) -> bool:
    """True when traffic to ip:port is not allowed by the policy (outside the site's allowlist)."""
    allowed, _ = policy.egress_allowed(ip, port, transport)
    return not allowed


def is_site_address(policy: SitePolicy, ip: str) -> bool:
    """On the site: a monitored network, a private or link-local address, multicast or broadcast."""
    if policy.is_monitored_ip(ip) or is_local_ip(ip):
        return True
    addr = ipaddress.ip_address(ip)
    return addr.is_multicast or ip == "255.255.255.255"


def describe(dev: Device | None, ip: str, mac: int) -> str:
    maker = dev.manufacturer if dev is not None and dev.manufacturer else "Watched"
    return f"{maker} device {ip}" + (f" ({format_mac(mac)})" if mac else "")


def side_alert(
    rule: Rule,
    flow: Flow,
    side: Side,
    dev: Device | None,
    observer: str,
    ts_ns: int,
    message: str,
    identity: tuple[object, ...],
    *,
    domain: str | None = None,
    protocol: str | None = None,
) -> Alert:
    """An alert about `side` (the device acting) towards its peer on `flow`."""
    mac = format_mac(side.mac) if side.mac else None
    ported = flow.proto in _PORTED
    from monitor.detectors.egress import transport_name

    return Alert(
        rule=rule,
        timestamp_ns=ts_ns,
        event_id=incident_id(rule.id, observer, mac or side.ip, *identity),
        observer=observer,
        message=message,
        source=Endpoint(side.ip, side.port if ported else None, mac),
        destination=Endpoint(side.peer_ip, side.peer_port if ported else None, None, domain or flow.domain),
        transport=transport_name(flow.proto),
        protocol=protocol or flow.protocol,
        community_id=flow.community_id(),
        device_id=mac,
        manufacturer=dev.manufacturer if dev is not None else None,
    )
