"""``p2p.nat_traversal``: STUN/TURN or a vendor P2P protocol from a watched device leaves the site."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Rule
from monitor.events import Event, P2pSignal
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe, side_alert

P2P_NAT_TRAVERSAL = Rule("p2p.nat_traversal", "Camera started P2P / NAT traversal to outside the site", 4)
RULES = (P2P_NAT_TRAVERSAL,)

# What the person on call reads for each protocol label (the label itself stays in network.protocol).
_NAMES = {
    "stun": "STUN/ICE",
    "turn": "TURN",
    "ezviz_xml": 'EZVIZ XML "STUN"',
    "dahua_dhget": "Dahua Easy4IP (DHGET)",
    "dahua_ptcp": "Dahua PTCP",
    "cs2_pppp": "CS2 PPPP",
}


class P2pRule(RuleModule):
    """Judges each NAT-traversal or P2P message a watched device sends."""

    consumes = (P2pSignal,)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, P2pSignal):
            return ()
        site = self.site
        watched = site.watched(event.flow, event.from_src)
        if watched is None:
            return ()
        flow = event.flow
        side = Side.of(flow, event.from_src, watched.mac)
        if not site.leaves_site(side.peer_ip, side.peer_port, transport_name(flow.proto)):
            return ()
        proto = event.protocol or "p2p"
        vendor = event.vendor
        what = _NAMES.get(proto) or (f"{vendor} {proto}" if vendor else proto)
        serial = event.serial
        message = (
            f"{describe(watched.device, side.ip, side.mac)} is doing {what} NAT traversal with {side.peer_ip}"
            + (f" (device serial {serial})" if serial else "")
            + ": it can be reached from the Internet through the vendor's P2P service; disable P2P/cloud on "
            "the device and block the P2P servers at the firewall."
        )
        return (
            side_alert(
                P2P_NAT_TRAVERSAL,
                flow,
                side,
                watched.device,
                site.observer,
                event.ts_ns,
                message,
                (proto, side.peer_ip),
                protocol=proto,
            ),
        )
