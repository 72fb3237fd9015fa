"""`stream.unauthorized_client` and `stream.egress`: who pulls video and where it goes."""

from __future__ import annotations

from monitor.alerts import STREAM_EGRESS, STREAM_UNAUTHORIZED, Alert
from monitor.analysis import Observation
from monitor.detectors import Side, describe, is_site_address, leaves_site, side_alert
from monitor.devices import Device
from monitor.flows import Flow
from monitor.policy import SitePolicy

PULL_METHODS = frozenset({"DESCRIBE", "SETUP", "PLAY"})
# A sustained upstream flow at camera rate: at least this many bits per second for this long.
EGRESS_RATE_BPS = 500_000
EGRESS_MIN_SECONDS = 10.0


def allowed_viewer(policy: SitePolicy, ip: str) -> bool:
    if policy.viewers:
        return policy.is_viewer(ip)
    # No viewers configured: anyone on the site may watch; nobody outside it.
    return is_site_address(policy, ip)


def check_rtsp_request(
    obs: Observation, camera: Device | None, policy: SitePolicy, observer: str
) -> Alert | None:
    """A client's DESCRIBE/SETUP/PLAY to a watched camera (`camera` is the server side's device)."""
    if obs.data.get("method") not in PULL_METHODS:
        return None
    client = Side.of(obs.flow, obs.from_src)
    if allowed_viewer(policy, client.ip):
        return None
    cam = Side.of(obs.flow, not obs.from_src)
    message = (
        f"{client.ip} pulled video from {describe(camera, cam.ip, cam.mac)} with RTSP {obs.data['method']} "
        f"{obs.data.get('url', '')}: it is not an allowed viewer; check who this is and restrict RTSP on the "
        f"camera to the recorder."
    )
    return side_alert(
        STREAM_UNAUTHORIZED,
        obs.flow,
        cam,
        camera,
        observer,
        obs.ts_ns,
        message,
        (client.ip,),
        protocol="rtsp",
    )


def check_transport(
    obs: Observation, camera: Device | None, policy: SitePolicy, observer: str
) -> Alert | None:
    """An RTSP SETUP that sends the camera's RTP to an address outside the site."""
    transport = obs.data["transport"]
    dest = getattr(transport, "destination", None)
    if not dest or is_site_address(policy, dest) or allowed_viewer(policy, dest):
        return None
    cam = Side.of(obs.flow, not obs.from_src if obs.data.get("request") else obs.from_src)
    message = (
        f"RTSP told {describe(camera, cam.ip, cam.mac)} to send its video to {dest}, outside the site: "
        f"check the recorder/VMS configuration and block the camera's outbound RTP."
    )
    return side_alert(
        STREAM_EGRESS,
        obs.flow,
        cam,
        camera,
        observer,
        obs.ts_ns,
        message,
        ("rtsp-destination", dest),
        protocol="rtsp",
    )


# How the message names what the device sends, by protocol label.
_MEDIA_WORDS = {
    "srtp": "WebRTC media (DTLS-SRTP, as cloud live view and P2P viewing use)",
    "rtp": "RTP",
}


def check_media_flow(
    flow: Flow,
    sender_is_src: bool,
    dev: Device | None,
    policy: SitePolicy,
    observer: str,
    ts_ns: int,
    protocol: str | None = None,
) -> Alert | None:
    """Video (RTP, WebRTC's SRTP, or a sustained camera-rate upstream flow) from a watched device to outside
    the site; ``protocol`` names the media when it differs from the flow's label."""
    side = Side.of(flow, sender_is_src)
    from monitor.detectors.egress import transport_name

    transport = transport_name(flow.proto)
    if not leaves_site(policy, side.peer_ip, side.peer_port, transport) and (
        # Video to an allowed viewer on site, or a configured viewer (recorder/VMS) talking RTP to a camera
        # on site (keep-alives, the ONVIF audio back-channel).
        policy.is_viewer(side.ip) or allowed_viewer(policy, side.peer_ip)
    ):
        return None
    proto = protocol or flow.protocol
    what = _MEDIA_WORDS.get(proto or "", proto) or "a sustained video-rate flow"
    message = (
        f"{describe(dev, side.ip, side.mac)} is sending {what} to {side.peer_ip}, outside the site: its "
        f"video is leaving; block the destination and check the device's cloud/P2P settings."
    )
    return side_alert(
        STREAM_EGRESS, flow, side, dev, observer, ts_ns, message, ("media", side.peer_ip), protocol=proto
    )


def is_sustained_upstream(flow: Flow, sender_is_src: bool) -> bool:
    seconds = (flow.last_ns - flow.start_ns) / 1e9
    if seconds < EGRESS_MIN_SECONDS:
        return False
    _, sent = flow.src_counts if sender_is_src else flow.dst_counts
    return sent * 8 / seconds >= EGRESS_RATE_BPS
