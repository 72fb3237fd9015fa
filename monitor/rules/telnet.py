"""``device.telnet``: a watched device accepts or opens a telnet session.

Cameras and recorders have no business with telnet: one that accepts a session has had telnet turned
on (Xiongmai's tcp/9530 enabler, a Dahua debug setting, an infection), one that opens one is logging in
somewhere (Mirai-family malware spreading). Judged on the telnet server's first data
(:class:`~monitor.events.TelnetSession`): the connection was accepted and something answers. One
alert per device, direction and peer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from monitor.alerts import HIGH, Alert, Rule
from monitor.events import Event, TelnetSession
from monitor.evidence import snapshot
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.rules._common import peer_alert

DEVICE_TELNET = Rule(
    "device.telnet",
    "Watched device accepted or opened a telnet session",
    HIGH,
    ("network", "intrusion_detection"),
    ("connection", "protocol"),
)
RULES = (DEVICE_TELNET,)


class TelnetRule(RuleModule):
    """Judges each telnet session: the server watched (it accepts), or else the client (it opens)."""

    consumes = (TelnetSession,)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, TelnetSession):
            return ()
        site = self.site
        flow = event.flow
        server_is_src = event.from_src
        banner = f' (it printed "{event.banner}")' if event.banner else ""
        fields = (("camwatch.telnet.banner", event.banner),) if event.banner else ()
        evidence = snapshot(flow, event.ts_ns)
        server = site.watched(flow, server_is_src)
        if server is not None:
            client = Side.of(flow, not server_is_src)
            cam = Side.of(flow, server_is_src, server.mac)
            message = (
                f"{describe(server.device, cam.ip, cam.mac)} accepted a telnet session from {client.ip} on "
                f"tcp/{cam.port}{banner}: telnet should never be on; it is often switched on by an exploit "
                "(Xiongmai tcp/9530) or malware. Isolate the device, check its firmware and reset it."
            )
            return (
                peer_alert(
                    DEVICE_TELNET,
                    flow,
                    not server_is_src,
                    server,
                    site.observer,
                    event.ts_ns,
                    message,
                    ("accepts", client.ip),
                    protocol="telnet",
                    fields=(("network.direction", "inbound"), *fields),
                    evidence=evidence,
                ),
            )
        opener = site.watched(flow, not server_is_src)
        if opener is None:
            return ()
        side = Side.of(flow, not server_is_src, opener.mac)
        message = (
            f"{describe(opener.device, side.ip, side.mac)} opened a telnet session to {side.peer_ip} on "
            f"tcp/{side.peer_port}{banner}: a camera logging in over telnet is typical of Mirai-family "
            "malware spreading. Isolate the device and reset it."
        )
        alert = side_alert(
            DEVICE_TELNET,
            flow,
            side,
            opener.device,
            site.observer,
            event.ts_ns,
            message,
            ("opens", side.peer_ip),
            protocol="telnet",
        )
        return (replace(alert, fields=(("network.direction", "outbound"), *fields), evidence=evidence),)
