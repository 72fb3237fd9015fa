"""``upnp.port_mapping``: a device searches for an Internet Gateway Device or asks for a port mapping."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Rule, endpoint
from monitor.events import Event, IgdSearch, PortMapping
from monitor.rules import RuleModule, Side, describe, side_alert

UPNP_PORT_MAPPING = Rule(
    "upnp.port_mapping",
    "Device searched for a UPnP gateway or asked for a port mapping",
    3,
    ("network",),
    ("protocol",),
)
RULES = (UPNP_PORT_MAPPING,)


class UpnpRule(RuleModule):
    """Judges SSDP IGD searches and SOAP port-mapping requests from watched devices."""

    consumes = (IgdSearch, PortMapping)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, IgdSearch | PortMapping):
            return ()
        watched = self.site.watched(event.flow, event.from_src)
        if watched is None:
            return ()
        side = Side.of(event.flow, event.from_src, watched.mac)
        who = describe(watched.device, side.ip, side.mac)
        identity: tuple[object, ...]
        if isinstance(event, PortMapping):
            if event.action == "DeletePortMapping":
                return ()  # removing a mapping closes a port (what a device does when its UPnP is turned off)
            # The ports are the mapping's identity: the vendor mapping its SDK port and a malware mapping
            # telnet on the same router are two incidents, each named.
            what = event.action
            if event.external_port is not None:
                proto = (event.protocol or "").lower()
                opened = f"{proto}/{event.external_port}" if proto else f"port {event.external_port}"
                to = event.internal_client or side.ip
                to_port = event.internal_port if event.internal_port is not None else event.external_port
                what = f"{event.action} of {opened} to {endpoint(to, to_port)}"
            client = event.internal_client
            opening = "itself" if client is None or client == side.ip else client
            message = (
                f"{who} asked the router at {side.peer_ip} for a UPnP port mapping ({what}): it is "
                f"opening {opening} to the Internet; disable UPnP on the device and on the router, and "
                f"remove the mapping."
            )
            identity = ("mapping", side.peer_ip, event.external_port, event.protocol)
            protocol = "upnp"
        else:
            message = (
                f"{who} searched for an Internet Gateway Device (UPnP): it is looking for a router that will "
                f"open ports for it; disable UPnP on the device and on the router."
            )
            identity, protocol = ("search",), "ssdp"
        return (
            side_alert(
                UPNP_PORT_MAPPING,
                event.flow,
                side,
                watched.device,
                self.site.observer,
                event.ts_ns,
                message,
                identity,
                protocol=protocol,
            ),
        )
