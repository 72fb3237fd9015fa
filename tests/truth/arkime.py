"""Reader for Arkime's `tests/pcap/<name>.test` files: `{"sessions3": [{"body": {...}}, ...]}`.

Each body is the session document Arkime indexed. Byte conventions: `source.bytes`, `destination.bytes`
and `network.bytes` are whole frames (link layer included); `client.bytes`/`server.bytes` are L4 payload.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Session = dict[str, Any]


def read_arkime_test(path: Path | str) -> list[Session]:
    """The session bodies of a `.test` file, in file order."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("sessions3"), list):
        raise ValueError(f"{path}: no sessions3 list")
    bodies: list[Session] = []
    for entry in doc["sessions3"]:
        body = entry.get("body") if isinstance(entry, dict) else None
        if not isinstance(body, dict):
            raise ValueError(f"{path}: session without a body object")
        bodies.append(body)
    return bodies


def _obj(session: Session, key: str) -> dict[str, Any]:
    value = session.get(key)
    return value if isinstance(value, dict) else {}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected an integer, got {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what}: expected a string, got {value!r}")
    return value


def source_ip(session: Session) -> str:
    """`source.ip`."""
    return _str(_obj(session, "source").get("ip"), "source.ip")


def source_port(session: Session) -> int:
    """`source.port` (0 for protocols without ports)."""
    return _int(_obj(session, "source").get("port", 0), "source.port")


def source_packets(session: Session) -> int:
    """`source.packets`."""
    return _int(_obj(session, "source").get("packets", 0), "source.packets")


def source_bytes(session: Session) -> int:
    """`source.bytes` (frames, link layer included)."""
    return _int(_obj(session, "source").get("bytes", 0), "source.bytes")


def destination_ip(session: Session) -> str:
    """`destination.ip`."""
    return _str(_obj(session, "destination").get("ip"), "destination.ip")


def destination_port(session: Session) -> int:
    """`destination.port` (0 for protocols without ports)."""
    return _int(_obj(session, "destination").get("port", 0), "destination.port")


def destination_packets(session: Session) -> int:
    """`destination.packets`."""
    return _int(_obj(session, "destination").get("packets", 0), "destination.packets")


def destination_bytes(session: Session) -> int:
    """`destination.bytes` (frames, link layer included)."""
    return _int(_obj(session, "destination").get("bytes", 0), "destination.bytes")


def network_packets(session: Session) -> int:
    """`network.packets` (both directions)."""
    return _int(_obj(session, "network").get("packets", 0), "network.packets")


def network_bytes(session: Session) -> int:
    """`network.bytes` (both directions, frames)."""
    return _int(_obj(session, "network").get("bytes", 0), "network.bytes")


def ip_protocol(session: Session) -> int:
    """`ipProtocol` (IP header protocol number)."""
    return _int(session.get("ipProtocol"), "ipProtocol")


def protocols(session: Session) -> list[str]:
    """`protocol`: the protocols Arkime detected, e.g. ["dns", "udp"]."""
    value = session.get("protocol", [])
    return [_str(v, "protocol[]") for v in value] if isinstance(value, list) else []


def community_id(session: Session) -> str | None:
    """`network.community_id` (absent for sessions without ports, e.g. IGMP, and for DHCP)."""
    value = _obj(session, "network").get("community_id")
    return _str(value, "network.community_id") if value is not None else None


def vlans(session: Session) -> list[int]:
    """VLAN ids: `network.vlan.id` (Arkime 5) or a top-level `vlan` (older); empty when untagged."""
    vlan = _obj(session, "network").get("vlan")
    value = vlan.get("id") if isinstance(vlan, dict) else session.get("vlan")
    if value is None:
        return []
    return [_int(v, "vlan") for v in (value if isinstance(value, list) else [value])]


def dns_query_hosts(session: Session) -> list[str]:
    """`dns[].queryHost`, one per DNS transaction (Arkime >= 5 stores a list; older a single object)."""
    dns = session.get("dns")
    items = dns if isinstance(dns, list) else [dns] if isinstance(dns, dict) else []
    hosts: list[str] = []
    for item in items:
        value = item.get("queryHost") if isinstance(item, dict) else None
        if isinstance(value, list):
            hosts.extend(_str(v, "dns.queryHost") for v in value)
        elif value is not None:
            hosts.append(_str(value, "dns.queryHost"))
    return hosts
