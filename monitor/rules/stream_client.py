"""``stream.unauthorized_client``: who pulls video from a watched camera.

The client sent the request, so it is the alert's ``source``; the camera is the ``destination`` and the
``device``.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.events import Event, StreamRequest
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe
from monitor.vendors.oui import format_mac

STREAM_UNAUTHORIZED = Rule(
    "stream.unauthorized_client", "Video stream requested by a client that is not an allowed viewer", 4
)
RULES = (STREAM_UNAUTHORIZED,)

PULL_METHODS = frozenset({"DESCRIBE", "SETUP", "PLAY"})


class UnauthorizedClientRule(RuleModule):
    """Judges RTSP requests that pull video from a watched camera (the request's receiver)."""

    consumes = (StreamRequest,)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, StreamRequest) or event.method not in PULL_METHODS:
            return ()
        site = self.site
        camera = site.watched(event.flow, not event.from_src)
        if camera is None:
            return ()
        client = Side.of(event.flow, event.from_src)
        if site.allowed_viewer(client.ip):
            return ()
        cam = Side.of(event.flow, not event.from_src, camera.mac)
        message = (
            f"{client.ip} pulled video from {describe(camera.device, cam.ip, cam.mac)} with RTSP "
            f"{event.method} {event.url}: it is not an allowed viewer; check who this is and restrict RTSP "
            f"on the camera to the recorder."
        )
        # The client sent the request: it is the alert's source, the camera its destination (and the device).
        mac = format_mac(cam.mac) if cam.mac else None
        flow = event.flow
        return (
            Alert(
                rule=STREAM_UNAUTHORIZED,
                timestamp_ns=event.ts_ns,
                event_id=incident_id(STREAM_UNAUTHORIZED.id, site.observer, mac or cam.ip, client.ip),
                observer=site.observer,
                message=message,
                source=Endpoint(client.ip, client.port),
                destination=Endpoint(cam.ip, cam.port, mac),
                transport=transport_name(flow.proto),
                protocol="rtsp",
                community_id=flow.community_id(),
                device_id=mac,
                manufacturer=camera.device.manufacturer if camera.device is not None else None,
            ),
        )
