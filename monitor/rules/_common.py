"""What the attack and compromise rules share (a private module: ``monitor/registry.py`` skips ``_`` names).

- :func:`peer_alert`: an alert about a request that reached a watched device: the client that sent it is
  the ``source``, the device the ``destination`` and the ``device`` (as ``stream.unauthorized_client``);
- :func:`protocol_name`: how a message names a protocol label;
- :class:`Bounded`: a dict that forgets its least recently used entries past a bound, counting them
  (per-client and per-device state must stay flat under a flood of spoofed addresses).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, TypeVar

from monitor.alerts import Alert, Endpoint, Rule, incident_id
from monitor.evidence import Evidence
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.rules import Side
from monitor.site import Watched
from monitor.vendors.oui import format_mac

K = TypeVar("K")
V = TypeVar("V")

# Label -> (how a message names it, the port that identifies it when the name alone does not).
_NAMES = {
    "http": ("HTTP", ""),
    "rtsp": ("RTSP", ""),
    "rtsp-http": ("RTSP-over-HTTP", ""),
    "dvrip": ("Dahua DHIP/DVRIP", "tcp/37777"),
    "xm-telnetctl": ("the Xiongmai telnet enabler", "tcp/9530"),
    "xm-console": ("the HiSilicon debug console", "tcp/9527"),
    "telnet": ("telnet", ""),
    "tls": ("HTTPS/TLS", ""),
    "rtmp": ("RTMP", ""),
    "mqtt": ("MQTT", ""),
}


def protocol_name(label: str, *, with_port: bool = True, default: str | None = None) -> str:
    """``http`` -> ``HTTP``, ``dvrip`` -> ``Dahua DHIP/DVRIP (tcp/37777)`` (without the port when the message
    gives it already); an unknown label as it is, or ``default``."""
    known = _NAMES.get(label)
    if known is None:
        return label if default is None else default
    name, port = known
    return f"{name} ({port})" if with_port and port else name


def carried(protocol: str, flow: Flow) -> str:
    """``protocol`` as the flow carried it: ``rtsp-http`` for RTSP tunnelled in HTTP (the camera's web port),
    which restricting the RTSP port does not stop."""
    return "rtsp-http" if protocol == "rtsp" and flow.protocol == "rtsp-http" else protocol


def peer_alert(
    rule: Rule,
    flow: Flow,
    client_is_src: bool,
    device: Watched,
    observer: str,
    ts_ns: int,
    message: str,
    identity: tuple[object, ...],
    *,
    protocol: str | None = None,
    fields: tuple[tuple[str, Any], ...] = (),
    evidence: Evidence | None = None,
    start_ns: int | None = None,
) -> Alert:
    """An alert about what the client (the flow's ``client_is_src`` side) sent to the watched device.
    ``protocol`` defaults to the flow's label; ``""`` leaves it out (a judgement made before the label)."""
    client = Side.of(flow, client_is_src)
    cam = Side.of(flow, not client_is_src, device.mac)
    mac = format_mac(cam.mac) if cam.mac else None
    return Alert(
        rule=rule,
        timestamp_ns=ts_ns,
        event_id=incident_id(rule.id, observer, mac or cam.ip, *identity),
        observer=observer,
        message=message,
        source=Endpoint(client.ip, client.port),
        destination=Endpoint(cam.ip, cam.port, mac),
        transport=transport_name(flow.proto),
        protocol=(flow.protocol if protocol is None else protocol) or None,
        community_id=flow.community_id(),
        device_id=mac,
        manufacturer=device.device.manufacturer if device.device is not None else None,
        start_ns=start_ns,
        fields=fields,
        device_ip=cam.ip,
        evidence=evidence,
    )


class Bounded(Generic[K, V]):
    """A mapping that keeps its ``limit`` most recently used entries; ``evicted`` counts the others."""

    __slots__ = ("_items", "evicted", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()
        self.evicted = 0

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The entry, without making it the most recently used."""
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
            self.evicted += 1

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def items(self) -> list[tuple[K, V]]:
        """A copy of the entries, least recently used first."""
        return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
