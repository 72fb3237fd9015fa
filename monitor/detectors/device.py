"""`device.new`: a device not in the inventory appears on a monitored network."""

from __future__ import annotations

from monitor.alerts import DEVICE_NEW, Alert, Endpoint, incident_id
from monitor.devices import Device


def new_device_alert(dev: Device, ip: str | None, ts_ns: int, observer: str, why: str) -> Alert:
    """The alert for a newly watched device; `why` completes "watched because ..."."""
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
