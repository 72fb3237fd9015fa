"""`p2p.nat_traversal`: STUN/TURN or a vendor P2P protocol from a watched device leaves the site."""

from __future__ import annotations

from monitor.alerts import P2P_NAT_TRAVERSAL, Alert
from monitor.analysis import Observation
from monitor.detectors import Side, describe, leaves_site, side_alert
from monitor.detectors.egress import transport_name
from monitor.devices import Device
from monitor.policy import SitePolicy

# What the person on call reads for each protocol label (the label itself stays in network.protocol).
_NAMES = {
    "stun": "STUN/ICE",
    "turn": "TURN",
    "ezviz_xml": 'EZVIZ XML "STUN"',
    "dahua_dhget": "Dahua Easy4IP (DHGET)",
    "dahua_ptcp": "Dahua PTCP",
    "cs2_pppp": "CS2 PPPP",
}


def check_p2p(obs: Observation, dev: Device | None, policy: SitePolicy, observer: str) -> Alert | None:
    side = Side.of(obs.flow, obs.from_src)
    if not leaves_site(policy, side.peer_ip, side.peer_port, transport_name(obs.flow.proto)):
        return None
    proto = obs.data.get("protocol") or "p2p"
    vendor = obs.data.get("vendor")
    what = _NAMES.get(proto) or (f"{vendor} {proto}" if vendor else proto)
    serial = obs.data.get("serial")
    message = (
        f"{describe(dev, side.ip, side.mac)} is doing {what} NAT traversal with {side.peer_ip}"
        + (f" (device serial {serial})" if serial else "")
        + ": it can be reached from the Internet through the vendor's P2P service; disable P2P/cloud on the "
        "device and block the P2P servers at the firewall."
    )
    return side_alert(
        P2P_NAT_TRAVERSAL,
        obs.flow,
        side,
        dev,
        observer,
        obs.ts_ns,
        message,
        (proto, side.peer_ip),
        protocol=proto,
    )
