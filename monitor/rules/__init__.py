"""Rules: one module per rule (or per family of rules judged from the same events).

A rule module declares ``RULES``, the rules it raises (id, name, severity, category: the ids are a
contract, docs/design.md lists them), and a :class:`RuleModule` subclass that names the event types
it ``consumes``; ``monitor/registry.py`` finds both, and the engine hands each event, in capture
order, to the rule modules that consume its type. Rules raised outside the engine (the stream probe's)
are declared the same way, without a judging class.

Shared here: building an alert about one side of a flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.devices import Device
from monitor.events import Event
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.site import Site
from monitor.vendors.oui import format_mac

_PORTED = frozenset({6, 17, 132})


class RuleModule:
    """Judges the events of the types in ``consumes`` and returns the alerts they raise."""

    consumes: ClassVar[tuple[type[Event], ...]] = ()

    def __init__(self, site: Site) -> None:
        self.site = site

    def judge(self, event: Event) -> Sequence[Alert]:
        """The alerts this event raises (the engine's gate drops repeats of an incident)."""
        raise NotImplementedError

    def evictions(self) -> dict[str, int]:
        """What this module's bounded tables refused or forgot, by table (docs/design.md §6)."""
        return {}


@dataclass(frozen=True, slots=True)
class Side:
    """One end of a flow as a rule sees it: the device that acts, and the peer."""

    ip: str
    port: int
    mac: int
    peer_ip: str
    peer_port: int

    @classmethod
    def of(cls, flow: Flow, sender_is_src: bool, mac: int | None = None) -> Side:
        """That side of the flow; ``mac`` is its host's MAC when the site model resolved it (the frame's
        MAC may be a router's)."""
        me, peer = (flow.src, flow.dst) if sender_is_src else (flow.dst, flow.src)
        if mac is None:
            mac = flow.src_mac if sender_is_src else flow.dst_mac
        return cls(me[0], me[1], mac, peer[0], peer[1])


def describe(dev: Device | None, ip: str, mac: int) -> str:
    """How a message names a watched device: maker, address and MAC."""
    maker = dev.manufacturer if dev is not None and dev.manufacturer else "Watched"
    return f"{maker} device {ip}" + (f" ({format_mac(mac)})" if mac else "")


def side_alert(
    rule: Rule,
    flow: Flow,
    side: Side,
    dev: Device | None,
    observer: str,
    ts_ns: int,
    message: str,
    identity: tuple[object, ...],
    *,
    domain: str | None = None,
    protocol: str | None = None,
    fields: tuple[tuple[str, Any], ...] = (),
) -> Alert:
    """An alert about ``side`` (the device acting) towards its peer on ``flow``; ``fields`` are more ECS
    fields by dotted name."""
    mac = format_mac(side.mac) if side.mac else None
    ported = flow.proto in _PORTED
    return Alert(
        rule=rule,
        timestamp_ns=ts_ns,
        event_id=incident_id(rule.id, observer, mac or side.ip, *identity),
        observer=observer,
        message=message,
        source=Endpoint(side.ip, side.port if ported else None, mac),
        destination=Endpoint(side.peer_ip, side.peer_port if ported else None, None, domain or flow.domain),
        transport=transport_name(flow.proto),
        protocol=protocol or flow.protocol,
        community_id=flow.community_id(),
        device_id=mac,
        manufacturer=dev.manufacturer if dev is not None else None,
        fields=fields,
    )
