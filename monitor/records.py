"""Flow records (docs/design.md §4.3): ECS field names, frame bytes, Community ID."""

from __future__ import annotations

from typing import Any

from monitor.alerts import iso_timestamp
from monitor.flows import Flow
from monitor.iana import transport_name
from monitor.vendors.oui import format_mac

_PORTED = frozenset({6, 17, 132})


def flow_record(flow: Flow) -> dict[str, Any]:
    """The JSON-ready record of one ended flow; `source` is the sender of the first packet."""
    (s_ip, s_port), (d_ip, d_port) = flow.src, flow.dst
    (s_pk, s_by), (d_pk, d_by) = flow.src_counts, flow.dst_counts
    source: dict[str, Any] = {"ip": s_ip}
    destination: dict[str, Any] = {"ip": d_ip}
    if flow.proto in _PORTED:
        source["port"] = s_port
        destination["port"] = d_port
    if flow.src_mac:
        source["mac"] = format_mac(flow.src_mac)
    if flow.dst_mac:
        destination["mac"] = format_mac(flow.dst_mac)
    domain = flow.domain or flow.server_name
    if domain is not None:
        destination["domain"] = domain
    source.update(packets=s_pk, bytes=s_by)
    destination.update(packets=d_pk, bytes=d_by)
    network: dict[str, Any] = {
        "transport": transport_name(flow.proto),
        "type": "ipv4" if flow.ip_version == 4 else "ipv6",
        "iana_number": str(flow.proto),
        "packets": s_pk + d_pk,
        "bytes": s_by + d_by,
        "community_id": flow.community_id(),
    }
    if flow.protocol is not None:
        network["protocol"] = flow.protocol
    vlan_outer, vlan_inner = flow.key[0], flow.key[1]
    if vlan_outer >= 0:
        network["vlan"] = {"id": str(vlan_outer)}
    if vlan_inner >= 0:
        network["inner"] = {"vlan": {"id": str(vlan_inner)}}
    return {
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection", "end"],
            "start": iso_timestamp(flow.start_ns),
            "end": iso_timestamp(flow.last_ns),
            "duration": flow.last_ns - flow.start_ns,
            "reason": flow.end_reason,
        },
        "source": source,
        "destination": destination,
        "network": network,
    }
