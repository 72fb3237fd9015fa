"""``stream.unauthorized_client``: who pulls video from a watched camera."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import Alert, Rule
from monitor.events import Event, StreamRequest
from monitor.rules import RuleModule, Side, describe, side_alert

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
        return (
            side_alert(
                STREAM_UNAUTHORIZED,
                event.flow,
                cam,
                camera.device,
                site.observer,
                event.ts_ns,
                message,
                (client.ip,),
                protocol="rtsp",
            ),
        )
