"""``p2p.nat_traversal``: STUN/TURN or a vendor P2P protocol from a watched device leaves the site."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Rule
from monitor.events import Event, P2pSignal
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.vendors.fingerprints import display_name

P2P_NAT_TRAVERSAL = Rule("p2p.nat_traversal", "Camera started P2P / NAT traversal to outside the site", 4)
RULES = (P2P_NAT_TRAVERSAL,)

# What the person on call reads for each vendor protocol (the label itself stays in network.protocol), and
# whose service it talks to. A vendor protocol is the vendor's P2P service by construction; STUN/TURN is not:
# it is any ICE exchange (a WebRTC live view with a browser or a cloud peer, a STUN server), worded apart.
_VENDOR_PROTOCOLS = {
    "ezviz_xml": ('EZVIZ XML "STUN"', "EZVIZ's P2P service"),
    "dahua_dhget": ("Dahua Easy4IP (DHGET)", "Dahua's Easy4IP P2P service"),
    "dahua_ptcp": ("Dahua PTCP", "Dahua's Easy4IP P2P service"),
    "cs2_pppp": ("CS2 PPPP", "the CS2 Network P2P service (used by many white-label cameras)"),
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
        # A destination the policy allows by a name this device resolved is allowed here too (a VMS's TURN).
        transport = transport_name(flow.proto)
        if not site.leaves_site(side.peer_ip, side.peer_port, transport, side.mac or side.ip, event.ts_ns):
            return ()
        proto = event.protocol or "p2p"
        return (
            side_alert(
                P2P_NAT_TRAVERSAL,
                flow,
                side,
                watched.device,
                site.observer,
                event.ts_ns,
                p2p_message(event, describe(watched.device, side.ip, side.mac), side.peer_ip),
                (proto, side.peer_ip),
                protocol=proto,
            ),
        )


def p2p_message(event: P2pSignal, who: str, peer: str) -> str:
    """The alert's sentence: what the device does with whom, what it means, what to do."""
    serial = f" (device serial {event.serial})" if event.serial else ""
    if event.protocol == "stun":
        if event.message == "turn":
            what = f"is relaying traffic through the TURN server {peer}{serial}"
        else:
            what = f"is doing STUN/ICE NAT traversal with {peer}{serial}"
        return (
            f"{who} {what}: it is opening a path through the site's NAT for a peer-to-peer session (a WebRTC "
            "live view, a cloud app), so a peer on the Internet can reach it; disable remote/cloud access on "
            "the device and block STUN/TURN to the Internet at the firewall."
        )
    known = _VENDOR_PROTOCOLS.get(event.protocol)
    if known is not None:
        name, service = known
    else:
        vendor = display_name(event.vendor) if event.vendor else "the vendor"
        name, service = (f"{vendor} {event.protocol}", f"{vendor}'s P2P service")
    return (
        f"{who} is doing {name} NAT traversal with {peer}{serial}: it can be reached from the Internet "
        f"through {service}; disable P2P/cloud on the device and block the P2P servers at the firewall."
    )
