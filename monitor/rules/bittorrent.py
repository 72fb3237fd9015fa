"""``device.bittorrent``: a watched device speaks BitTorrent (the DHT, uTP or the peer protocol).

No camera or recorder firmware does; P2P botnets do. Mozi (1.5 million routers and DVRs at its height) and
Hajime run their networks over the BitTorrent DHT: a bot asks its peers for the botnet's configuration and
updates there, and serves them. A watched device that sends a DHT message, uTP or a peer handshake is
infected (or someone installed a torrent client on a recorder's operating system). Judged on what the device
itself sends (:class:`~monitor.events.BitTorrentMessage` from its side): a DHT query that reaches it from
outside and goes unanswered says nothing about it. One alert per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from monitor.alerts import CRITICAL, Alert, Rule
from monitor.events import BitTorrentMessage, Event
from monitor.rules import RuleModule, Side, describe, side_alert
from monitor.rules._common import Bounded
from monitor.site import Site

DEVICE_BITTORRENT = Rule(
    "device.bittorrent",
    "Watched device speaks BitTorrent (a P2P botnet's network)",
    CRITICAL,
    ("network", "intrusion_detection", "malware"),
    ("connection", "protocol"),
)
RULES = (DEVICE_BITTORRENT,)

MAX_REPORTED: Final = 4096  # devices already reported, not rebuilt for each of their messages


class BitTorrentRule(RuleModule):
    """Reports the first BitTorrent message a watched device sends."""

    consumes = (BitTorrentMessage,)

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self._reported: Bounded[str, bool] = Bounded(MAX_REPORTED)

    def judge(self, event: Event) -> Sequence[Alert]:
        if not isinstance(event, BitTorrentMessage):
            return ()
        flow = event.flow
        if flow.copy:
            return ()
        watched = self.site.watched(flow, event.from_src)
        if watched is None:
            return ()
        side = Side.of(flow, event.from_src, watched.mac)
        key = watched.key(side.ip)
        if key in self._reported:
            return ()
        self._reported.put(key, True)
        who = describe(watched.device, side.ip, side.mac)
        message = (
            f"{who} speaks BitTorrent with {side.peer_ip} (it sent a {event.what}): no camera or recorder "
            "firmware does, and P2P botnets run their networks over its DHT (Mozi, Hajime). The device is "
            "infected: isolate it from the network, then reset it, update its firmware and change its "
            "password."
        )
        # A flow event: the engine attaches the flow's evidence (severity 4 and above).
        return (
            side_alert(
                DEVICE_BITTORRENT,
                flow,
                side,
                watched.device,
                self.site.observer,
                event.ts_ns,
                message,
                ("bittorrent",),
                protocol="bittorrent",
            ),
        )
