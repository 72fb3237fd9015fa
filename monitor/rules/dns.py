"""``dns.vendor_cloud`` and ``dns.resolver_bypass``: what watched devices ask DNS, and whom."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Rule
from monitor.events import DnsQuery, Event
from monitor.rules import RuleModule, Side, describe, side_alert

DNS_VENDOR_CLOUD = Rule(
    "dns.vendor_cloud", "Camera looked up a vendor cloud or P2P domain", 3, ("network",), ("protocol",)
)
DNS_RESOLVER_BYPASS = Rule(
    "dns.resolver_bypass", "Camera used a DNS resolver that is not the site's", 3, ("network",), ("protocol",)
)
RULES = (DNS_VENDOR_CLOUD, DNS_RESOLVER_BYPASS)


class DnsRules(RuleModule):
    """Judges each DNS question a watched device sends."""

    consumes = (DnsQuery,)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, DnsQuery):
            return ()
        site = self.site
        watched = site.watched(event.flow, event.from_src)
        if watched is None:
            return ()
        dev = watched.device
        flow = event.flow
        out: list[Alert] = []
        side = Side.of(flow, event.from_src, watched.mac)
        name = event.name
        who = describe(dev, side.ip, side.mac)
        entry = site.clouds.match_domain(name)
        if entry is not None:
            message = (
                f"{who} looked up {name}, a {entry.vendor} {entry.kind} endpoint: it is trying to reach "
                f"the vendor's cloud; block the name at the site resolver and check the device's cloud/P2P "
                f"settings."
            )
            out.append(
                side_alert(
                    DNS_VENDOR_CLOUD,
                    flow,
                    side,
                    dev,
                    site.observer,
                    event.ts_ns,
                    message,
                    (name,),
                    domain=name,
                    protocol="dns",
                )
            )
        if flow.proto in (6, 17) and side.peer_port == 53:
            if site.policy.resolvers:
                bypass = not site.policy.is_resolver(side.peer_ip)
            else:
                # No resolvers configured: a watched device asking a public resolver directly is still
                # bypassing whatever the site runs.
                bypass = not site.is_site_address(side.peer_ip)
            if bypass:
                message = (
                    f"{who} sent DNS to {side.peer_ip}, not the site's resolver: it may have a hard-coded "
                    f"resolver; block outbound DNS except from the site resolver."
                )
                out.append(
                    side_alert(
                        DNS_RESOLVER_BYPASS,
                        flow,
                        side,
                        dev,
                        site.observer,
                        event.ts_ns,
                        message,
                        (side.peer_ip,),
                        protocol="dns",
                    )
                )
        return out
