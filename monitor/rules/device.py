"""``device.new``: a device is first seen on a monitored network, or a device of a watched vendor anywhere."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.devices import Device
from monitor.events import DeviceWatched, Event
from monitor.rules import RuleModule

DEVICE_NEW = Rule("device.new", "New device on a monitored network", 2, ("network", "host"), ("info",))
RULES = (DEVICE_NEW,)


class NewDeviceRule(RuleModule):
    """Announces each newly watched device, unless the site's asset register lists it."""

    consumes = (DeviceWatched,)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, DeviceWatched):
            return ()
        # A device in the site's asset register is watched like any other, just not "new".
        if self.site.policy.is_known_device(event.device.mac):
            return ()
        return (new_device_alert(event.device, event.ip, event.ts_ns, self.site.observer, event.why),)


def new_device_alert(dev: Device, ip: str | None, ts_ns: int, observer: str, why: str) -> Alert:
    """The alert for a newly watched device; ``why`` completes "watched because ..."."""
    mac = dev.mac_str
    maker = dev.manufacturer or "unknown vendor"
    message = (
        f"New device {ip or 'with no address seen yet'} ({mac}, {maker}) appeared and is watched "
        f"because {why}: confirm it is an expected installation and record it in the site's asset register."
    )
    return Alert(
        rule=DEVICE_NEW,
        timestamp_ns=ts_ns,
        event_id=incident_id(DEVICE_NEW.id, observer, mac),
        observer=observer,
        message=message,
        source=Endpoint(ip, None, mac),
        device_id=mac,
        manufacturer=dev.manufacturer,
    )
