"""A protocol handler run by itself: a Context that records what the handler reports, and a flow to feed.

For the analyzers whose protocol binding matters (HTTP/RTSP exchanges, Dahua logins, telnet): the handler
gets each segment as the analysis would give it (``from_src``, payload, capture time).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from monitor.events import Event
from monitor.flows import Flow
from monitor.protocol import Handler

T = TypeVar("T")


@dataclass
class RecordingContext:
    """A :class:`monitor.protocol.Context` that keeps what it is told."""

    events: list[Event] = field(default_factory=list)
    facts: list[tuple[bool, str, str]] = field(default_factory=list)
    states: dict[Hashable, object] = field(default_factory=dict)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def fact(self, flow: Flow, from_src: bool, kind: str, detail: str, **_: object) -> None:
        self.facts.append((from_src, kind, detail))

    def upgrade(self, flow: Flow, name: str) -> None:
        flow.protocol = name

    def resolved(self, ip: str, name: str, ts_ns: int) -> None:
        pass

    def handover(self, flow: Flow, name: str, from_src: bool, payload: bytes, ts_ns: int) -> None:
        from monitor.registry import protocols

        flow.protocol = name
        protocols().specs[name].handler(self, flow, from_src, payload, ts_ns)

    def shared(self, key: Hashable, cls: type[T]) -> T:
        value = self.states.get(key)
        if not isinstance(value, cls):
            value = self.states[key] = cls()
        return value

    def watched(self, flow: Flow) -> bool:
        return True  # every flow: the handlers report all they read

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def make_flow(src: str, sport: int, dst: str, dport: int, proto: int = 6, ts: int = 0) -> Flow:
    """A flow opened by ``src:sport`` (its first packet sent by the source)."""
    a, b = int(ipaddress.IPv4Address(src)), int(ipaddress.IPv4Address(dst))
    mapped = 0xFFFF_0000_0000
    if (a, sport) <= (b, dport):
        key = (0, 0, proto, 0, mapped | a, sport, 0, mapped | b, dport)
        return Flow(key, ts, True, 4)
    key = (0, 0, proto, 0, mapped | b, dport, 0, mapped | a, sport)
    return Flow(key, ts, False, 4)


def run(
    handler: Handler, flow: Flow, segments: Iterable[tuple[bool, bytes]], label: str, ts0: int = 0
) -> RecordingContext:
    """Feed the segments (``from_src``, payload) to the handler, 1 ms apart; the flow is labelled first."""
    ctx = RecordingContext()
    flow.protocol = label
    for i, (from_src, payload) in enumerate(segments):
        handler(ctx, flow, from_src, payload, ts0 + i * 1_000_000)
    return ctx
