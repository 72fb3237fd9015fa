"""`upnp.port_mapping`: a device searches for an Internet Gateway Device or asks for a port mapping."""

from __future__ import annotations

from monitor.alerts import UPNP_PORT_MAPPING, Alert
from monitor.analysis import Observation
from monitor.detectors import Side, describe, side_alert
from monitor.devices import Device


def check_upnp(obs: Observation, dev: Device | None, observer: str) -> Alert:
    side = Side.of(obs.flow, obs.from_src)
    who = describe(dev, side.ip, side.mac)
    if obs.kind == "port_mapping":
        action = str(obs.data.get("action", "AddPortMapping"))
        message = (
            f"{who} asked the router at {side.peer_ip} for a UPnP port mapping ({action}): it is opening "
            f"itself to the Internet; disable UPnP on the device and on the router, and remove the mapping."
        )
        identity: tuple[object, ...] = ("mapping", side.peer_ip)
    else:
        message = (
            f"{who} searched for an Internet Gateway Device (UPnP): it is looking for a router that will "
            f"open ports for it; disable UPnP on the device and on the router."
        )
        identity = ("search",)
    return side_alert(
        UPNP_PORT_MAPPING,
        obs.flow,
        side,
        dev,
        observer,
        obs.ts_ns,
        message,
        identity,
        protocol="upnp" if obs.kind == "port_mapping" else "ssdp",
    )
