"""``device.removed_seen``: a device the site's asset register lists as removed is on the network.

The removal programme marks a camera ``removed`` once it is off the network; if it still (or again) sends
anything, the register is wrong or the camera is back. Judged from every sign of life a MAC gives on its
own segment: a flow it opens, a reply it sends, an address it claims (ARP, NDP, DHCP). One incident per
device, raised again after the gate's re-alert window (a day) while it stays.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.events import AddressClaim, Event, FlowStarted, ResponderSeen
from monitor.rules import RuleModule
from monitor.vendors.oui import format_mac

DEVICE_REMOVED_SEEN = Rule(
    "device.removed_seen",
    "Device listed as removed in the asset register is on the network",
    3,
    ("network", "host"),
    ("info",),
)
RULES = (DEVICE_REMOVED_SEEN,)


class RemovedSeenRule(RuleModule):
    """Raises ``device.removed_seen`` when a MAC the register lists as removed sends."""

    consumes = (FlowStarted, ResponderSeen, AddressClaim)

    def judge(self, event: Event) -> Sequence[Alert]:
        register = self.site.register
        if not register.removed:  # the common case: one attribute read per event
            return ()
        if isinstance(event, FlowStarted):
            flow = event.flow
            mac, ip = self.site.side_mac(flow, True), flow.src[0]
        elif isinstance(event, ResponderSeen):
            flow = event.flow
            mac, ip = self.site.side_mac(flow, False), flow.dst[0]
        elif isinstance(event, AddressClaim):
            mac, ip = event.mac, event.ip
        else:
            return ()
        if mac not in register.removed:
            return ()
        return (self._alert(mac, ip, event.ts_ns),)

    def _alert(self, mac: int, ip: str, ts_ns: int) -> Alert:
        asset = self.site.register.get(mac)
        dev = self.site.inventory.get(mac)
        mac_str = format_mac(mac)
        label = f"'{asset.name}' " if asset is not None and asset.name else ""
        where = f" at {asset.location}" if asset is not None and asset.location else ""
        maker = dev.manufacturer if dev is not None and dev.manufacturer else "unknown vendor"
        observer = self.site.observer
        message = (
            f"Device {label}({mac_str}, {maker}){where} is listed as removed in the asset register but sent "
            f"traffic from {ip}: find it and take it off the network, or correct its status in the register."
        )
        return Alert(
            rule=DEVICE_REMOVED_SEEN,
            timestamp_ns=ts_ns,
            event_id=incident_id(DEVICE_REMOVED_SEEN.id, observer, mac_str),
            observer=observer,
            message=message,
            source=Endpoint(ip, None, mac_str),
            device_id=mac_str,
            manufacturer=dev.manufacturer if dev is not None else None,
        )
