"""``stream.egress``: a watched camera's video leaves the site or goes to a non-viewer.

Five ways video is seen leaving: an RTSP SETUP whose Transport sends the RTP elsewhere; a watched device
pushing its stream to an RTSP or RTMP server (ANNOUNCE, RECORD, SETUP with ``mode=record``; publish), at any
bitrate;
RTP announced by a SETUP, or (S)RTP the analyzers recognise, sent by a watched device to outside the site;
and a sustained camera-rate upstream flow (P2P media over PPPP/PTCP/relays, unlabelled streaming, video
interleaved in RTSP) to outside the site or to an on-site host that is not a viewer, judged once per second
of capture time while the flow runs and again when it ends. Who sends the media
decides, not who opened the flow: both ICE peers send checks, a viewer "punches" its NAT first.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from monitor.alerts import Alert, Rule, endpoint
from monitor.decode import (
    PROTO_GRE,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_IPIP,
    PROTO_IPV6_IN_IP,
    PROTO_TCP,
    PROTO_UDP,
)
from monitor.events import (
    AppResponse,
    Clock,
    Event,
    FlowEnded,
    FlowStarted,
    MediaSeen,
    StreamRequest,
    StreamTransport,
)
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.rules._common import Bounded
from monitor.site import Site

STREAM_EGRESS = Rule("stream.egress", "Camera video is leaving the site or going to a non-viewer", 4)
RULES = (STREAM_EGRESS,)

# A sustained upstream flow at camera rate: at least this many bits per second for this long.
EGRESS_RATE_BPS = 500_000
EGRESS_MIN_SECONDS = 10.0
NS = 1_000_000_000
MAX_UPSTREAM_FLOWS = 10_000  # external flows of watched devices followed at once (a flood must not grow it)
MAX_ASKED = 4096  # SETUPs asking for an outside destination, waiting for the camera's answer
#: How long a SETUP's answer is waited for before the request alone is judged ("answer not seen").
ANSWER_HOLD_NS = 5 * NS


@dataclass(frozen=True, slots=True)
class DecideTransport(Event):
    """Time to judge the SETUP of ``key`` (its flow) by its request if no answer came."""

    key: int
    asked_ns: int


# Web management (a browser on the camera's UI, a plugin or firmware download, a VMS polling ISAPI) to a host
# on the site: bulk, not video, whatever its rate; video over HTTP says so by its content type (http.py).
_MANAGEMENT: Final = frozenset({"http", "tls"})

# Labels that never carry video: a sustained video-rate flow of one of them is a flood (a DDoS bot's UDP flood
# aimed at a DNS or NTP port) or data hidden in the protocol (a DNS tunnel), and the message says so.
_NOT_VIDEO: Final = frozenset(
    {
        "dhcp", "dhcpv6", "dhip", "dns", "llmnr", "mdns", "mqtt", "ndp", "netbios-ns", "ntp", "rtcp", "sadp",
        "ehome", "sip", "ssdp", "telnet", "wsd", "xm-console", "xm-telnetctl",
    }
)  # fmt: skip

# IP protocols without ports that never carry a camera's video: tunnels (a watched device's own, which the
# decoder does not look through: GRE, IP in IP) and ICMP. Not IPsec (ESP, AH): an encrypted tunnel may carry a
# camera's video to a remote recorder.
_NOT_VIDEO_TRANSPORTS: Final = frozenset({PROTO_GRE, PROTO_IPIP, PROTO_IPV6_IN_IP, PROTO_ICMP, PROTO_ICMPV6})

# An unlabelled flow of small packets at a rate no camera's video has is a flood inside one flow (Mirai's
# udpplain and stomp keep one socket per target, so device.flooding, which counts new flows, does not see it).
# Video goes in packets near the MTU (RTP carries each frame in fragments of 1,000-1,400 bytes): a 16 Mbit/s
# 4K stream is about 1,500 packets a second of 1,300 bytes on average; a bot's default payload is 512 bytes
# (768 in stomp).
FLOOD_PPS: Final = 2_000
FLOOD_MAX_PACKET_BYTES: Final = 1_000


def flood_shape(flow: Flow, sender_is_src: bool) -> tuple[int, int] | None:
    """(packets a second, bytes a packet) the side sent, when that is a flood's shape rather than video's."""
    if flow.protocol is not None or flow.proto not in (PROTO_UDP, PROTO_TCP):
        return None
    seconds = (flow.last_ns - flow.start_ns) / 1e9
    packets, sent = flow.src_counts if sender_is_src else flow.dst_counts
    _, received = flow.dst_counts if sender_is_src else flow.src_counts
    if seconds <= 0 or not packets or sent <= received:
        return None  # the bulk comes from the other side: a download's acknowledgements are no flood
    rate, size = round(packets / seconds), sent // packets
    return (rate, size) if rate >= FLOOD_PPS and size <= FLOOD_MAX_PACKET_BYTES else None


# How the message names what the device sends, by protocol label.
_MEDIA_WORDS = {
    "srtp": "WebRTC media (DTLS-SRTP, as cloud live view and P2P viewing use)",
    "rtp": "RTP",
    "rtsp": "video interleaved in an RTSP connection",
    "rtsp-http": "video interleaved in RTSP tunnelled in HTTP",
    "http": "video over HTTP (an MJPEG or video answer)",
}


def is_sustained_upstream(flow: Flow, sender_is_src: bool) -> bool:
    """That side has sent at camera rate for long enough."""
    seconds = (flow.last_ns - flow.start_ns) / 1e9
    if seconds < EGRESS_MIN_SECONDS:
        return False
    _, sent = flow.src_counts if sender_is_src else flow.dst_counts
    return sent * 8 / seconds >= EGRESS_RATE_BPS


class StreamEgressRule(RuleModule):
    """Follows where watched devices' media goes."""

    consumes = (
        StreamTransport,
        StreamRequest,
        AppResponse,
        DecideTransport,
        MediaSeen,
        FlowStarted,
        Clock,
        FlowEnded,
    )

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        # Flows between a watched device and outside the site, until judged for sustained upstream video:
        # id(flow) -> (flow, the site side is the source). Small: dropped once judged or ended.
        self._upstream: dict[int, tuple[Flow, bool]] = {}
        self._judged_ns = 0
        self.not_followed = 0  # external flows of watched devices not followed: MAX_UPSTREAM_FLOWS were
        # SETUPs asking for an outside destination, until the camera's answer says whether it was granted.
        self._asked: Bounded[int, StreamTransport] = Bounded(MAX_ASKED)

    def evictions(self) -> dict[str, int]:
        return {"upstream_flows": self.not_followed}

    def judge(self, event: Event) -> Sequence[Alert]:
        if isinstance(event, FlowStarted):
            return self._started(event.flow)
        if isinstance(event, MediaSeen):
            return self._media(event.flow, event.from_src, event.ts_ns, event.protocol)
        if isinstance(event, StreamTransport):
            return self._transport(event)
        if isinstance(event, StreamRequest):
            return self._push(event) if event.push else ()
        if isinstance(event, AppResponse):
            return self._answer(event) if self._asked else ()
        if isinstance(event, DecideTransport):
            return self._undecided(event)
        if isinstance(event, Clock):
            return self._judge_upstream(event.ts_ns)
        if isinstance(event, FlowEnded):
            return self._ended(event.flow)
        return ()

    def _started(self, flow: Flow) -> Sequence[Alert]:
        site = self.site
        s_site, d_site = site.is_site_address(flow.src[0]), site.is_site_address(flow.dst[0])
        sender: bool | None = None  # the side followed as a possible sender of video: the flow's source?
        if s_site != d_site:
            sender = s_site if site.watched(flow, s_site) is not None else None
        elif s_site:
            # On the site: a watched device's flow to a host that may not view its video (an office PC) is
            # judged while it runs too, not only when it ends (an interleaved pull can last for days).
            for side in (True, False):
                peer = (flow.dst if side else flow.src)[0]
                if site.watched(flow, side) is not None and not site.allowed_viewer(peer):
                    sender = side
                    break
        if sender is not None:
            if len(self._upstream) < MAX_UPSTREAM_FLOWS:
                self._upstream[id(flow)] = (flow, sender)
            else:
                self.not_followed += 1
        if flow.protocol == "rtp":  # announced by an RTSP SETUP: the camera is the media's sender
            camera_is_src = flow.media_from_src
            return self._media(flow, True if camera_is_src is None else camera_is_src, flow.start_ns)
        return ()

    def _transport(self, event: StreamTransport) -> Sequence[Alert]:
        """An RTSP SETUP that sends the camera's RTP to an address outside the site, judged by the camera's
        answer: a refused SETUP (401, 461) sends nothing, and a camera may answer with the destination it
        really streams to (live555 ignores a client's ``destination=`` unless allowed)."""
        site = self.site
        key = id(event.flow)
        if event.request:
            if site.watched(event.flow, not event.client_is_src) is None:
                return ()
            if self._off_site(event.transport.destination) is not None:
                self._asked.put(key, event)
                site.schedule(DecideTransport(event.ts_ns + ANSWER_HOLD_NS, key, event.ts_ns))
            return ()
        asked = self._asked.pop(key)
        if event.transport.destination is None and asked is not None:
            # The answer names no destination: the one asked for stands.
            return self._destination_alert(asked, event.ts_ns, answered=True)
        return self._destination_alert(event, event.ts_ns, answered=True)

    def _answer(self, event: AppResponse) -> Sequence[Alert]:
        """The answer to a SETUP whose Transport asked for an outside destination, without a Transport of its
        own: a 2xx grants the request's, anything else refuses it."""
        request = event.request
        if event.protocol != "rtsp" or request is None or request.method.upper() != "SETUP":
            return ()
        asked = self._asked.pop(id(event.flow))
        if asked is None or event.status is None or not 200 <= event.status < 300:
            return ()
        return self._destination_alert(asked, event.ts_ns, answered=True)

    def _undecided(self, event: DecideTransport) -> Sequence[Alert]:
        asked = self._asked.get(event.key)
        if asked is None or asked.ts_ns != event.asked_ns:
            return ()  # answered (or replaced by a later SETUP, whose own decision comes)
        self._asked.pop(event.key)
        return self._destination_alert(asked, event.ts_ns, answered=False)

    def _off_site(self, dest: str | None) -> str | None:
        """``dest`` when video sent there leaves the site (not a viewer); a name is not judged here: camwatch
        cannot tell where it points, and the video's own flows are judged by address when they start."""
        site = self.site
        if not dest or site.is_site_address(dest) or site.allowed_viewer(dest):
            return None
        return dest

    def _destination_alert(self, event: StreamTransport, ts_ns: int, answered: bool) -> Sequence[Alert]:
        site = self.site
        cam_is_src = not event.client_is_src
        camera = site.watched(event.flow, cam_is_src)
        dest = self._off_site(event.transport.destination)
        if camera is None or dest is None:
            return ()
        cam = Side.of(event.flow, cam_is_src, camera.mac)
        unseen = "" if answered else " (the camera's answer was not seen)"
        message = (
            f"RTSP told {describe(camera.device, cam.ip, cam.mac)} to send its video to {dest}, outside the "
            f"site{unseen}: check the recorder/VMS configuration and block the camera's outbound RTP."
        )
        # The video's destination is the Transport's, not the RTSP client's address.
        rtp_port = event.transport.client_port[0] if event.transport.client_port else 0
        to = Side(cam.ip, cam.port, cam.mac, dest, rtp_port)
        alert = side_alert(
            STREAM_EGRESS,
            event.flow,
            to,
            camera.device,
            site.observer,
            ts_ns,
            message,
            ("rtsp-destination", dest),
            protocol="rtsp",
        )
        if not rtp_port:
            alert = dataclasses.replace(alert, destination=dataclasses.replace(alert.destination, port=None))
        return (alert,)

    def _push(self, event: StreamRequest) -> Sequence[Alert]:
        """A watched device, as an RTSP client, pushes its stream to the server: its video goes there whatever
        the bitrate (a substream below the sustained-upload rate included)."""
        protocol = "rtmp" if event.flow.protocol == "rtmp" else "rtsp"
        how = f"{protocol.upper()} {event.method if protocol == 'rtmp' else event.method.upper()}"
        return self._media(event.flow, event.from_src, event.ts_ns, protocol, how)

    def _media(
        self,
        flow: Flow,
        sender_is_src: bool,
        ts_ns: int,
        protocol: str | None = None,
        push: str | None = None,
    ) -> Sequence[Alert]:
        """Video from a watched device to outside the site; ``protocol`` names the media when it differs
        from the flow's label."""
        site = self.site
        watched = site.watched(flow, sender_is_src)
        if watched is None:
            return ()
        side = Side.of(flow, sender_is_src, watched.mac)
        transport = transport_name(flow.proto)
        if not site.leaves_site(side.peer_ip, side.peer_port, transport) and (
            # Video to an allowed viewer on site, or a configured viewer (recorder/VMS) talking RTP to a
            # camera on site (keep-alives, the ONVIF audio back-channel), or to a multicast group: multicast
            # is not egress (docs/policy.md), and the group's receivers are on the camera's own network.
            site.policy.is_viewer(side.ip)
            or site.allowed_viewer(side.peer_ip)
            or ipaddress.ip_address(side.peer_ip).is_multicast
        ):
            return ()
        proto = protocol or flow.protocol
        where = "which is not an allowed viewer" if site.is_site_address(side.peer_ip) else "outside the site"
        who = describe(watched.device, side.ip, side.mac)
        shape = flood_shape(flow, sender_is_src) if push is None and protocol is None else None
        fields: tuple[tuple[str, object], ...] = ()
        if shape is not None:
            rate, size = shape
            fields = (("camwatch.flood.packet_rate", rate), ("camwatch.flood.packet_bytes", size))
            message = (
                f"{who} is sending {rate:,} packets a second of {size:,} bytes on average in one "
                f"{transport.upper()} flow to {endpoint(side.peer_ip, side.peer_port)}, {where}, that no "
                f"analyzer recognises. Video comes in packets of 1,000 bytes or more, under {FLOOD_PPS:,} a "
                "second: this is a flood in one connection (a denial-of-service attack by malware on the "
                "device: Mirai's udpplain or stomp). Isolate the device, then reset it and update its "
                "firmware."
            )
        elif push is not None:
            message = (
                f"{who} is pushing its video stream to the {(protocol or 'rtsp').upper()} server "
                f"{endpoint(side.peer_ip, side.peer_port)}, {where} ({push}): its video is leaving; block "
                "the destination and check the device's streaming/platform settings."
            )
        elif proto in _NOT_VIDEO or (proto is None and flow.proto in _NOT_VIDEO_TRANSPORTS):
            label = (proto or transport).upper()
            why = f"no {label} exchange is that large" if proto else f"a camera has no {label} to send"
            message = (
                f"{who} is sending a sustained flow of {label} (0.5 Mbit/s or more for 10 s) to "
                f"{side.peer_ip}, {where}: {why}. It is not video but a flood (a denial-of-service attack by "
                "malware on the device) or data hidden in the protocol (a tunnel). Isolate the device, then "
                "reset it and update its firmware."
            )
        else:
            what = _MEDIA_WORDS.get(proto or "", proto) or "a sustained video-rate flow"
            if site.is_site_address(side.peer_ip):
                # On the site but not a viewer (another office network): not a leak to the Internet.
                message = (
                    f"{who} is sending {what} to {side.peer_ip}, which is not an allowed viewer: check who "
                    "receives its video, and add it to the viewers or restrict the camera's streaming."
                )
            else:
                message = (
                    f"{who} is sending {what} to {side.peer_ip}, outside the site: its video is leaving; "
                    "block the destination and check the device's cloud/P2P settings."
                )
        return (
            side_alert(
                STREAM_EGRESS,
                flow,
                side,
                watched.device,
                site.observer,
                ts_ns,
                message,
                ("media", side.peer_ip),
                protocol=proto,
                fields=fields,
            ),
        )

    def _judge_upstream(self, now_ns: int) -> Sequence[Alert]:
        # Once per second of capture time: a P2P media session (PPPP, PTCP, a relay) can last for hours,
        # so it is judged while it runs, not only when it ends.
        if not self._upstream or now_ns - self._judged_ns < NS:
            return ()
        self._judged_ns = now_ns
        out: list[Alert] = []
        for key, (flow, site_is_src) in list(self._upstream.items()):
            if self._management(flow, site_is_src):
                continue
            if is_sustained_upstream(flow, site_is_src):
                del self._upstream[key]
                out.extend(self._media(flow, site_is_src, flow.last_ns))
        return out

    def _management(self, flow: Flow, sender_is_src: bool) -> bool:
        """Web management to a host on the site: not judged by its rate."""
        peer = (flow.dst if sender_is_src else flow.src)[0]
        return flow.protocol in _MANAGEMENT and self.site.is_site_address(peer)

    def _ended(self, flow: Flow) -> Sequence[Alert]:
        self._upstream.pop(id(flow), None)
        camera_is_src = flow.media_from_src if flow.protocol == "rtp" else None
        out: list[Alert] = []
        for sender_is_src in (True, False):
            sent, _ = flow.src_counts if sender_is_src else flow.dst_counts
            if camera_is_src is not None and sender_is_src != camera_is_src:
                continue  # the viewer's side of announced RTP: its NAT "punch" packets, not video
            # RTP this side sent, or unlabelled bulk at camera rate.
            if self._management(flow, sender_is_src):
                continue
            if sent and (flow.protocol == "rtp" or is_sustained_upstream(flow, sender_is_src)):
                out.extend(self._media(flow, sender_is_src, flow.start_ns))
        return out
