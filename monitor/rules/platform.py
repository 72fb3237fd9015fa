"""``platform.registration``: a watched device registers to a video management platform outside the site.

GB/T 28181 (SIP) and Hikvision's EHome/ISUP are how a camera or recorder joins a remote platform ("Platform
Access" in their menus): the device connects out, registers with its code, and the platform can then ask for
live video, play back recordings and change settings through that connection, with no port forward. On a site
whose video stays inside, a device registered to an outside platform is remote control of the camera, by
whoever runs the platform (a vendor's, an installer's, an attacker's). A platform the site runs, or one the
policy allows, is not reported. One alert per device, protocol and platform address.
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts import HIGH, Alert, Rule, endpoint
from monitor.analyzers.sip import gb_type
from monitor.events import Event, PlatformRegistration
from monitor.iana import transport_name
from monitor.rules import RuleModule, Side, describe, side_alert

PLATFORM_REGISTRATION = Rule(
    "platform.registration",
    "Camera registered to a video platform outside the site",
    HIGH,
    ("network",),
    ("connection", "protocol"),
)
RULES = (PLATFORM_REGISTRATION,)

_NAMES = {"gb28181": "GB/T 28181", "ehome": "Hikvision EHome/ISUP"}
_SETTING = {"gb28181": "GB28181", "ehome": "EHome/ISUP"}


class PlatformRule(RuleModule):
    """Judges each platform-access request a watched device sends."""

    consumes = (PlatformRegistration,)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, PlatformRegistration):
            return ()
        site, flow = self.site, event.flow
        # Only what the device itself sends: anyone on the Internet can send a camera a REGISTER or an INVITE
        # (a SIP scanner, a branch camera registering to the site's own platform), and its codes and firmware
        # are the sender's. A device registered before camwatch started still sends its keep-alives.
        watched = site.watched(flow, event.from_src)
        if watched is None:
            return ()
        side = Side.of(flow, event.from_src, watched.mac)
        transport = transport_name(flow.proto)
        if not site.leaves_site(side.peer_ip, side.peer_port, transport, side.mac or side.ip, event.ts_ns):
            return ()
        device_id, platform_id = event.sender_id, event.peer_id
        name = _NAMES.get(event.protocol, event.protocol)
        where = endpoint(side.peer_ip, side.peer_port)
        what = (
            f"is registering with a {name} video platform at {where}"
            if event.message == "REGISTER"
            else f"is in a {name} session ({event.message}) with a video platform at {where}"
        )
        said = []
        if device_id:
            kind = gb_type(device_id) if event.protocol == "gb28181" else None
            said.append(f"device code {device_id}" + (f", a {kind}" if kind else ""))
        if platform_id:
            said.append(f"platform code {platform_id}")
        if event.firmware:
            said.append(f"firmware {event.firmware}")
        detail = f" ({'; '.join(said)})" if said else ""
        message = (
            f"{describe(watched.device, side.ip, side.mac)} {what}, outside the site{detail}: that platform "
            "can ask for its live video and recordings and change its settings, over a connection the device "
            "opened. Unless it is the site's own platform (then allow it in the policy), turn off Platform "
            f"Access ({_SETTING.get(event.protocol, event.protocol)}) on the device and block the "
            "destination."
        )
        fields = [
            ("camwatch.platform.protocol", event.protocol),
            ("camwatch.platform.message", event.message),
        ]
        for key, value in (
            ("device_id", device_id),
            ("platform_id", platform_id),
            ("firmware", event.firmware),
            ("agent", event.agent),
        ):
            if value:
                fields.append((f"camwatch.platform.{key}", value))
        return (
            side_alert(
                PLATFORM_REGISTRATION,
                flow,
                side,
                watched.device,
                site.observer,
                event.ts_ns,
                message,
                (event.protocol, side.peer_ip),
                protocol=flow.protocol or event.protocol,
                fields=tuple(fields),
            ),
        )
