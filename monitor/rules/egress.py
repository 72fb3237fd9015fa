"""``egress.unexpected_destination``: a watched device opens a flow outside its allowlist."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.decode import PROTO_SCTP, PROTO_TCP, PROTO_UDP
from monitor.events import Event, FlowStarted
from monitor.iana import transport_name
from monitor.rules import RuleModule, describe
from monitor.vendors.oui import format_mac

EGRESS_UNEXPECTED = Rule("egress.unexpected_destination", "Camera connected to an unexpected destination", 3)
RULES = (EGRESS_UNEXPECTED,)

_PORTED = (PROTO_TCP, PROTO_UDP, PROTO_SCTP)


class EgressRule(RuleModule):
    """Judged on each flow's first packet: who opened it, and where to."""

    consumes = (FlowStarted,)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, FlowStarted):
            return ()
        flow = event.flow
        site = self.site
        opener_is_src = flow.opener_is_src
        if opener_is_src:
            (o_ip, o_port), (r_ip, r_port) = flow.src, flow.dst
        else:
            (o_ip, o_port), (r_ip, r_port) = flow.dst, flow.src
        o_mac = site.side_mac(flow, opener_is_src)
        opener = site.inventory.get(o_mac) if o_mac else None
        if not site.policy.is_watched(o_ip, opener.vendor if opener is not None else None):
            return ()
        transport = transport_name(flow.proto)
        allowed, _reason = site.policy.egress_allowed(r_ip, r_port, transport)
        if allowed:
            return ()
        ported = flow.proto in _PORTED
        mac = format_mac(o_mac) if o_mac else None
        port_txt = f"{transport}/{r_port}" if ported else transport
        dest = (
            r_ip if flow.domain is None else f"{r_ip} ({flow.domain})"
        )  # the DNS name, from before the flow
        message = (
            f"{describe(opener, o_ip, o_mac)} opened {port_txt} to {dest}, which is outside its allowlist: "
            f"check whether this device may reach that destination and block it at the site firewall if not."
        )
        return (
            Alert(
                rule=EGRESS_UNEXPECTED,
                timestamp_ns=flow.start_ns,
                event_id=incident_id(
                    EGRESS_UNEXPECTED.id, site.observer, mac or o_ip, r_ip, r_port, transport
                ),
                observer=site.observer,
                message=message,
                source=Endpoint(o_ip, o_port if ported else None, mac),
                destination=Endpoint(r_ip, r_port if ported else None, None, flow.domain),
                transport=transport,
                # Judged on the flow's first packet: its protocol is not known yet (and must not depend on
                # how much of the flow the engine had seen when it ran).
                protocol=None,
                community_id=flow.community_id(),
                device_id=mac,
                manufacturer=opener.manufacturer if opener is not None else None,
            ),
        )
