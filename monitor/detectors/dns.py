"""`dns.vendor_cloud` and `dns.resolver_bypass`: what watched devices ask DNS, and whom."""

from __future__ import annotations

from monitor.alerts import DNS_RESOLVER_BYPASS, DNS_VENDOR_CLOUD, Alert
from monitor.analysis import Observation
from monitor.detectors import Side, describe, is_site_address, side_alert
from monitor.devices import Device
from monitor.policy import SitePolicy
from monitor.vendors.clouds import CloudCatalogue


def check_query(
    obs: Observation, dev: Device | None, policy: SitePolicy, clouds: CloudCatalogue, observer: str
) -> list[Alert]:
    """Alerts for one DNS query sent by a watched device (the caller checks it is watched)."""
    out: list[Alert] = []
    side = Side.of(obs.flow, obs.from_src)
    name: str = obs.data["name"]
    who = describe(dev, side.ip, side.mac)
    entry = clouds.match_domain(name)
    if entry is not None:
        out.append(
            side_alert(
                DNS_VENDOR_CLOUD,
                obs.flow,
                side,
                dev,
                observer,
                obs.ts_ns,
                f"{who} looked up {name}, a {entry.vendor} {entry.kind} endpoint: it is trying to reach "
                f"the vendor's cloud; block the name at the site resolver and check the device's cloud/P2P "
                f"settings.",
                (name,),
                domain=name,
                protocol="dns",
            )
        )
    if obs.flow.proto in (6, 17) and side.peer_port == 53:
        if policy.resolvers:
            bypass = not policy.is_resolver(side.peer_ip)
        else:
            # No resolvers configured: a watched device asking a public resolver directly is
            # still bypassing whatever the site runs.
            bypass = not is_site_address(policy, side.peer_ip)
        if bypass:
            out.append(
                side_alert(
                    DNS_RESOLVER_BYPASS,
                    obs.flow,
                    side,
                    dev,
                    observer,
                    obs.ts_ns,
                    f"{who} sent DNS to {side.peer_ip}, not the site's resolver: it may have a hard-coded "
                    f"resolver; block outbound DNS except from the site resolver.",
                    (side.peer_ip,),
                    protocol="dns",
                )
            )
    return out
