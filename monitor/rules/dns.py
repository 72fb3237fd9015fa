"""``dns.vendor_cloud`` and ``dns.resolver_bypass``: what watched devices ask DNS, and whom.

DNS in every form a camera may use counts for the bypass: UDP or TCP to a resolver that is not the site's,
DNS over TLS (port 853), and DNS over HTTPS to a well-known public resolver, known by its TLS server name
or its address (``monitor/vendors/data/resolvers.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Rule
from monitor.decode import PROTO_TCP, PROTO_UDP
from monitor.events import DnsQuery, Event, FlowStarted, TlsServerName
from monitor.flows import Flow
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.site import Site
from monitor.vendors.fingerprints import display_name
from monitor.vendors.resolvers import public_resolvers

DNS_VENDOR_CLOUD = Rule(
    "dns.vendor_cloud", "Camera looked up a vendor cloud or P2P domain", 3, ("network",), ("protocol",)
)
DNS_RESOLVER_BYPASS = Rule(
    "dns.resolver_bypass", "Camera used a DNS resolver that is not the site's", 3, ("network",), ("protocol",)
)
RULES = (DNS_VENDOR_CLOUD, DNS_RESOLVER_BYPASS)

# How a message names each kind of the vendor-cloud catalogue ("an endpoint of the EZVIZ cloud").
_KIND_NAMES = {
    "cloud": "cloud",
    "api": "cloud API",
    "p2p": "P2P service",
    "relay": "relay service",
    "ntp": "time service",
    "update": "update service",
    "telemetry": "telemetry service",
}

DOT_PORT = 853
HTTPS_PORT = 443


class DnsRules(RuleModule):
    """Judges each DNS question a watched device sends, and every encrypted DNS flow it opens."""

    consumes = (DnsQuery, FlowStarted, TlsServerName)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self.resolvers = public_resolvers()

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, DnsQuery):
            return self._query(event)
        if isinstance(event, FlowStarted):
            return self._encrypted_flow(event.flow)
        if isinstance(event, TlsServerName):
            provider = self.resolvers.by_name(event.name)
            if provider is None:
                return ()
            return self._bypass(
                event.flow, event.from_src, event.ts_ns, f"DNS over HTTPS ({provider}, {event.name})"
            )
        return ()

    def _query(self, event: DnsQuery) -> Sequence[Alert]:
        site = self.site
        watched = site.watched(event.flow, event.from_src)
        if watched is None:
            return ()
        dev = watched.device
        flow = event.flow
        out: list[Alert] = []
        side = Side.of(flow, event.from_src, watched.mac)
        name = event.name
        entry = site.clouds.match_domain(name)
        # A vendor cloud the site allows by name (its cloud VMS, the firmware service) is expected: no
        # warning for looking it up (the connections are judged by the allow rules as ever).
        if entry is not None and not site.policy.allows_name(name):
            who = describe(dev, side.ip, side.mac)
            # Asked of the site's resolver, the name can be blocked there; asked of another (a hard-coded
            # public resolver), blocking it there does nothing: the device's DNS is blocked at the firewall.
            via_site = (
                site.policy.is_resolver(side.peer_ip)
                if site.policy.resolvers
                else site.is_site_address(side.peer_ip)
            )
            block = (
                "block the name at the site resolver"
                if via_site
                else f"it asked {side.peer_ip}, not the site's resolver: block its outbound DNS and the "
                "name at the firewall"
            )
            message = (
                f"{who} looked up {name}, an endpoint of the {display_name(entry.vendor)} "
                f"{_KIND_NAMES.get(entry.kind, entry.kind)}: it is trying to reach the "
                f"vendor's cloud; {block}, and check the device's cloud/P2P settings."
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
        if flow.proto in (PROTO_TCP, PROTO_UDP) and side.port != 53:
            # Whatever the port: a resolver that also answers on 443 or 5353 (OpenDNS does) is still not the
            # site's, and a question the device sends there bypasses it. From port 53 the device is a DNS
            # server (whatever its QR bit says), not a client of one.
            what = "DNS" if side.peer_port == 53 else f"DNS to port {side.peer_port}"
            out.extend(self._bypass(flow, event.from_src, event.ts_ns, what))
        return out

    def _encrypted_flow(self, flow: Flow) -> Sequence[Alert]:
        if flow.proto not in (PROTO_TCP, PROTO_UDP):
            return ()
        opener_is_src = flow.opener_is_src
        (r_ip, r_port) = flow.dst if opener_is_src else flow.src
        if r_port == DOT_PORT:
            what = "DNS over TLS (port 853)"
        elif r_port == HTTPS_PORT and (provider := self.resolvers.by_address(r_ip)) is not None:
            what = f"DNS over HTTPS ({provider})"
        else:
            return ()
        return self._bypass(flow, opener_is_src, flow.start_ns, what, protocol=None)

    def _resolver_host(self, flow: Flow, sender_is_src: bool) -> bool:
        """The peer, on the site, is a listed resolver by another of its addresses: the same MAC as a listed
        resolver's address (the gateway's link-local IPv6 address, which router advertisements hand out as
        the DNS server, RFC 8106). Only on the site: a routed peer has the router's MAC."""
        site = self.site
        peer_ip = (flow.dst if sender_is_src else flow.src)[0]
        if not site.is_site_address(peer_ip):
            return False
        peer_mac = site.side_mac(flow, not sender_is_src)
        if not peer_mac:
            return False
        for resolver in site.policy.resolvers:
            bound = site.bindings.get(str(resolver))
            if bound is not None and bound[0] == peer_mac:
                return True
        return False

    def _bypass(
        self, flow: Flow, sender_is_src: bool, ts_ns: int, what: str, protocol: str | None = "dns"
    ) -> Sequence[Alert]:
        """``dns.resolver_bypass`` when the sender is watched and its resolver is not the site's."""
        site = self.site
        watched = site.watched(flow, sender_is_src)
        if watched is None:
            return ()
        side = Side.of(flow, sender_is_src, watched.mac)
        if site.policy.is_resolver(side.ip):
            return ()  # the site's own resolver forwarding upstream: its job, not a bypass
        if site.policy.resolvers:
            listed = site.policy.is_resolver(side.peer_ip) or self._resolver_host(flow, sender_is_src)
            bypass = not listed
        else:
            # No resolvers configured: a watched device asking a public resolver directly is still bypassing
            # whatever the site runs.
            bypass = not site.is_site_address(side.peer_ip)
        if not bypass:
            return ()
        who = describe(watched.device, side.ip, side.mac)
        if site.is_site_address(side.peer_ip):
            # A resolver on the site the policy does not list (a second one DHCP hands out): not a hard-coded
            # public resolver; the policy may be what is missing.
            message = (
                f"{who} sent {what} to {side.peer_ip}, a resolver on the site the policy does not list: add "
                "it to the policy's resolvers if it is the site's, else find out why the device uses it."
            )
        else:
            message = (
                f"{who} sent {what} to {side.peer_ip}, not the site's resolver: it may have a hard-coded "
                "resolver; block outbound DNS (ports 53 and 853, and the public DNS-over-HTTPS resolvers) "
                "except from the site resolver."
            )
        return (
            side_alert(
                DNS_RESOLVER_BYPASS,
                flow,
                side,
                watched.device,
                site.observer,
                ts_ns,
                message,
                (side.peer_ip,),
                protocol=protocol or flow.protocol,
            ),
        )
