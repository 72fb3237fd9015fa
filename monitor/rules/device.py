"""``device.new``: a device is first seen on a monitored network, or a device of a watched vendor anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.devices import Device
from monitor.events import DeviceWatched, Event
from monitor.rules import RuleModule
from monitor.site import Site

DEVICE_NEW = Rule("device.new", "New device on a monitored network", 2, ("network", "host"), ("info",))
RULES = (DEVICE_NEW,)

# A new device is announced this long (capture time) after it was first watched, with what the site
# learned of it by then: a camera's DHCP request, discovery reply or banner follows its first packet within
# seconds, and "unknown vendor" followed a second later by the real maker helps nobody.
GRACE_NS = 5_000_000_000
# Announcements waiting for their grace period, at most: a flood of spoofed MACs of a watched vendor (a
# mirror port can show a million a second) would otherwise hold one timer, and its evicted device, per MAC.
# Beyond it a new device is announced at once, with what is known of it then.
MAX_WAITING = 10_000


@dataclass(frozen=True, slots=True)
class AnnounceDevice(Event):
    """Time to announce a device first watched ``GRACE_NS`` earlier."""

    watched: DeviceWatched


class NewDeviceRule(RuleModule):
    """Announces each newly watched device, unless the site's asset register lists it."""

    consumes = (DeviceWatched, AnnounceDevice)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self.waiting = 0  # announcements scheduled and not yet made
        self.not_waited = 0  # devices announced at once because MAX_WAITING were waiting

    def evictions(self) -> dict[str, int]:
        return {"device_announcements": self.not_waited}

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, DeviceWatched):
            # A device in the site's asset register is watched like any other, just not "new".
            mac = event.device.mac
            if self.site.policy.is_known_device(mac) or mac in self.site.register:
                return ()
            if self.waiting < MAX_WAITING:
                self.waiting += 1
                self.site.schedule(AnnounceDevice(event.ts_ns + GRACE_NS, event))
                return ()
            self.not_waited += 1
            return self._announce(event, event.ts_ns)
        if not isinstance(event, AnnounceDevice):
            return ()
        self.waiting -= 1
        return self._announce(event.watched, event.ts_ns)

    def _announce(self, watched: DeviceWatched, ts_ns: int) -> Sequence[Alert]:
        dev = watched.device
        if dev.router and not dev.watched:
            return ()  # it only seemed to be on a monitored network: it forwards for the devices there
        return (new_device_alert(dev, watched.ip, ts_ns, self.site.observer, watched.why, watched.ts_ns),)


def new_device_alert(
    dev: Device, ip: str | None, ts_ns: int, observer: str, why: str, first_seen_ns: int | None = None
) -> Alert:
    """The alert for a newly watched device, raised at ``ts_ns``; ``why`` completes "watched because ..."."""
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
        start_ns=first_seen_ns,
    )
