"""``stream.unauthorized_client``: who pulls video from a watched camera.

The client sent the request, so it is the alert's ``source``; the camera is the ``destination`` and the
``device``.

The message says what happened, which takes the camera's answer: a client that got its stream (a 2xx to
DESCRIBE, SETUP or PLAY) pulled video, and is reported at once; one that only got 401s was refused, and
is reported ``HOLD_NS`` after its first request with how often it asked (a Digest retry that then
succeeds within that time is a pull). ``event.outcome`` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from monitor.alerts import NS, Alert, Endpoint, Rule, incident_id
from monitor.events import AppResponse, Event, StreamRequest
from monitor.evidence import snapshot
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe
from monitor.rules._common import Bounded, carried
from monitor.site import Site, Watched
from monitor.vendors.oui import format_mac

STREAM_UNAUTHORIZED = Rule(
    "stream.unauthorized_client", "Video stream requested by a client that is not an allowed viewer", 4
)
RULES = (STREAM_UNAUTHORIZED,)

PULL_METHODS = frozenset({"DESCRIBE", "SETUP", "PLAY"})
#: How long a refused client is watched for a later success before it is reported as refused.
HOLD_NS: Final = 5 * NS
MAX_PENDING: Final = 4096


@dataclass(slots=True)
class _Pull:
    """What one client asked of one camera, and what it got."""

    first: StreamRequest
    camera: Watched
    requests: int = 1
    statuses: list[int] = field(default_factory=list)
    running: bool = False
    """Met mid-session: a request in a session already set up (a keep-alive), on a connection whose start
    was not seen (capture started, or the mirror was re-plumbed, while the client was pulling)."""


@dataclass(frozen=True, slots=True)
class DecidePull(Event):
    """Time to report the pull of ``key`` (camera, client) if it never succeeded."""

    key: tuple[str, str]


class UnauthorizedClientRule(RuleModule):
    """Judges RTSP requests that pull video from a watched camera (their receiver), by the answers."""

    consumes = (StreamRequest, AppResponse, DecidePull)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self._pulls: Bounded[tuple[str, str], _Pull] = Bounded(MAX_PENDING)
        # (camera, client) pairs reported as served: a later refusal of the same client says nothing new.
        self._served: Bounded[tuple[str, str], bool] = Bounded(MAX_PENDING)
        # Connections whose client announced (or recorded) a stream: its SETUPs with mode=record push.
        self._announced: Bounded[int, bool] = Bounded(MAX_PENDING)

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, StreamRequest):
            self._request(event)
        elif isinstance(event, AppResponse):
            return self._answer(event)
        elif isinstance(event, DecidePull):
            pull = self._pulls.pop(event.key)
            if pull is not None and self._served.get(event.key) is None:
                return (self._alert(pull, event.ts_ns, None),)
        return ()

    def _key(
        self, event: StreamRequest | AppResponse, camera_is_src: bool, camera: Watched
    ) -> tuple[str, str]:
        flow = event.flow
        cam_ip, client_ip = (flow.src[0], flow.dst[0]) if camera_is_src else (flow.dst[0], flow.src[0])
        return (camera.key(cam_ip), client_ip)

    def _request(self, event: StreamRequest) -> None:
        method = event.method.upper()
        if event.push:
            if method != "SETUP":
                self._announced.put(id(event.flow), True)  # ANNOUNCE, RECORD: the client pushes its video
                return
            if self._announced.get(id(event.flow)) is not None:
                return  # a SETUP with mode=record after the client announced its stream: a push, not a pull
            # A SETUP with mode=record and no ANNOUNCE is no push: many servers ignore mode= and stream after
            # a SETUP with a Range (live555): judged as a pull, by the camera's answer.
        running = method not in PULL_METHODS
        if running and (event.session is None or event.flow.opening_seen):
            return  # OPTIONS, GET_PARAMETER...: a pull is judged by its DESCRIBE/SETUP/PLAY, when seen
        site = self.site
        camera = site.watched(event.flow, not event.from_src)
        if camera is None:
            return
        client = Side.of(event.flow, event.from_src)
        if site.allowed_viewer(client.ip):
            return
        key = self._key(event, not event.from_src, camera)
        pull = self._pulls.get(key)
        if pull is not None:
            pull.requests += 1
            return
        self._pulls.put(key, _Pull(event, camera, running=running))
        site.schedule(DecidePull(event.ts_ns + HOLD_NS, key))

    def _answer(self, event: AppResponse) -> Sequence[Alert]:
        request = event.request
        if event.protocol != "rtsp" or request is None:
            return ()
        camera = self.site.watched(event.flow, event.from_src)
        if camera is None or event.status is None:
            return ()
        key = self._key(event, event.from_src, camera)
        pull = self._pulls.get(key)
        if pull is None or (request.method.upper() not in PULL_METHODS and not pull.running):
            return ()
        pull.statuses.append(event.status)
        if 200 <= event.status < 300:
            self._pulls.pop(key)
            self._served.put(key, True)
            return (self._alert(pull, event.ts_ns, request.method),)
        return ()

    def _alert(self, pull: _Pull, ts_ns: int, served: str | None) -> Alert:
        event, camera = pull.first, pull.camera
        site = self.site
        client = Side.of(event.flow, event.from_src)
        cam = Side.of(event.flow, not event.from_src, camera.mac)
        who = describe(camera.device, cam.ip, cam.mac)
        refused = [s for s in pull.statuses if s in (401, 403)]
        tunnelled = carried("rtsp", event.flow) == "rtsp-http"
        # Tunnelled in HTTP, the pull came through the camera's web port: closing RTSP's does not stop it.
        asked = f"RTSP {event.method} {event.url}"
        if tunnelled:
            asked += f" tunnelled in HTTP (tcp/{cam.port})"
        fix = "RTSP and its HTTP tunnelling" if tunnelled else "RTSP"
        if served is not None and pull.running:
            outcome = "success"
            what = (
                f"was already pulling video from {who} when camwatch began watching the connection: its "
                f"{asked} in a running session was answered"
            )
        elif served is not None:
            outcome = "success"
            # The request answered may be a later one than the first asked (SETUP after DESCRIBE): named then.
            answered = "" if served == event.method else f" its {served}"
            what = f"pulled video from {who}: it asked with {asked} and was served{answered}"
        elif pull.statuses and len(refused) == len(pull.statuses):
            outcome = "failure"
            codes = "/".join(str(s) for s in sorted(set(refused)))
            what = (
                f"asked {who} for video with {asked} ({pull.requests} requests) and was refused each time "
                f"({codes}), so it got no video"
            )
        elif pull.statuses:
            outcome = "failure"
            codes = ", ".join(str(s) for s in pull.statuses[:5])
            what = f"asked {who} for video with {asked} and got no stream (answers {codes})"
        else:
            outcome = "unknown"
            what = f"asked {who} for video with {asked} (the camera's answer was not seen)"
        message = (
            f"{client.ip} {what}: it is not an allowed viewer; check who this is and restrict {fix} on the "
            "camera to the recorder."
        )
        # The client sent the request: it is the alert's source, the camera its destination (and the device).
        mac = format_mac(cam.mac) if cam.mac else None
        # A pull is its own incident: one reported after a refusal of the same client (a password typed after
        # a 401, a wrong path first) is not held back as a repeat of "refused".
        identity: tuple[str, ...] = (mac or cam.ip, client.ip)
        if outcome == "success":
            identity += ("served",)
        flow = event.flow
        return Alert(
            rule=STREAM_UNAUTHORIZED,
            timestamp_ns=ts_ns,
            event_id=incident_id(STREAM_UNAUTHORIZED.id, site.observer, *identity),
            observer=site.observer,
            message=message,
            source=Endpoint(client.ip, client.port),
            destination=Endpoint(cam.ip, cam.port, mac),
            transport=transport_name(flow.proto),
            protocol="rtsp",
            community_id=flow.community_id(),
            device_id=mac,
            manufacturer=camera.device.manufacturer if camera.device is not None else None,
            start_ns=event.ts_ns if ts_ns != event.ts_ns else None,
            fields=(("event.outcome", outcome),),
            device_ip=cam.ip,
            evidence=snapshot(flow, ts_ns),
        )
