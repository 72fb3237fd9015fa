"""RFC 8520 MUD files from a learning proposal: one per device model (or vendor) group.

Each file is the JSON of the ``ietf-mud`` container (``mud-version`` 1, ``mud-url``, ``last-update``,
``cache-validity``, ``is-supported``, ``systeminfo``, ``mfg-name``, ``model-name``, and the from-device and
to-device policies naming their access lists) and of the ``ietf-access-control-list`` ``acls`` they name:
one ACL per direction and IP version, each ACE accepting one kind of traffic. What the devices did is
described with the most abstract match that fits:

- a learned name: ``ietf-acldns:dst-dnsname`` (``src-dnsname`` for the replies), in both IP versions;
- DNS to the site's resolvers and NTP on the site: ``controller`` ``urn:ietf:params:mud:dns`` and
  ``urn:ietf:params:mud:ntp`` (RFC 8520 section 8's well-known classes);
- the site's viewers (recorder, VMS): ``my-controller``;
- another device of the same vendor: ``same-manufacturer``;
- anything else on the site (the monitored networks, private space when allowed): ``local-networks``;
- a learned network: ``destination-ipv4-network`` / ``destination-ipv6-network``.

Every flow opened by the device yields a from-device ACE and its mirror (the replies) in the to-device
ACL; every flow opened to it (the recorder pulling video) a to-device ACE and its mirror. TCP ACEs say
who initiated (``ietf-mud:direction-initiated``). Only supported, unflagged traffic is described: the
learned rules as proposed (support over the group), and what the base policy already allows or the site
opened to a device with the same thresholds per device and peer; traffic from off the site is left out.

A group with nothing to describe gets no file (a MUD file that lists nothing forbids the device everything);
:func:`build` says why for each such group.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from agents.learn.observe import ADDRESS, IN, NAME, OUT, Observations, Usage
from agents.learn.propose import DeviceInfo, Group, LearnSettings, Proposal, flagged
from monitor.policy import SitePolicy

__all__ = ["CACHE_VALIDITY_HOURS", "MudFiles", "build"]

CACHE_VALIDITY_HOURS: Final = 48
DNS_CONTROLLER: Final = "urn:ietf:params:mud:dns"
NTP_CONTROLLER: Final = "urn:ietf:params:mud:ntp"
_PROTOCOLS: Final = {"tcp": 6, "udp": 17}
_LOCAL_REASONS: Final = frozenset({"monitored network", "private"})
NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class _Peer:
    """Who the device talks to, as a MUD match: ``kind`` is dnsname, network, controller, my-controller,
    same-manufacturer or local-networks."""

    kind: str
    value: str = ""

    def match(self, source: bool, version: int) -> dict[str, Any]:
        """The ``ipvN`` and ``ietf-mud:mud`` parts of ``matches`` (``source``: the peer sends)."""
        if self.kind == "dnsname":
            return {f"ipv{version}": {f"ietf-acldns:{'src' if source else 'dst'}-dnsname": self.value}}
        if self.kind == "network":
            side = "source" if source else "destination"
            return {f"ipv{version}": {f"{side}-ipv{version}-network": self.value}}
        if self.kind == "controller":
            return {"ietf-mud:mud": {"controller": self.value}}
        return {"ietf-mud:mud": {self.kind: [None]}}  # YANG type empty, as JSON encodes it

    def versions(self) -> tuple[int, ...]:
        if self.kind == "network":
            return (ipaddress.ip_network(self.value).version,)
        return (4, 6)


@dataclass(frozen=True, slots=True)
class _Use:
    """Traffic to describe: the peer, the transport and the port on the side that was connected to, and
    who initiated it."""

    peer: _Peer
    transport: str  # "tcp", "udp", or "any"
    port: int | None
    initiated: str  # "from-device" or "to-device"


@dataclass(slots=True)
class MudFiles:
    """The MUD documents by file name, and the groups that got none with why (group label -> reason)."""

    files: dict[str, dict[str, Any]]
    without: dict[str, str]


def build(
    proposal: Proposal,
    obs: Observations,
    devices: Mapping[str, DeviceInfo],
    policy: SitePolicy,
    base_url: str,
    settings: LearnSettings,
    now: datetime | None = None,
) -> MudFiles:
    """The MUD documents, one per group of the proposal, and why each group without one has none."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    vendor_of = {ip: info.vendor for info in devices.values() for ip in info.ips if info.vendor}
    out = MudFiles({}, {})
    for key, group in sorted(proposal.groups.items()):
        uses = _learned_uses(proposal, key) + _observed_uses(group, obs, policy, vendor_of, settings)
        if not uses:
            out.without[group.label] = _why_none(group, obs, settings)
            continue
        url = base_url.rstrip("/") + f"/{group.slug}.json"
        out.files[f"{group.slug}.json"] = _document(group, uses, url, stamp, policy.site)
    return out


def _supported(usage: Usage, settings: LearnSettings) -> bool:
    return usage.flows >= settings.min_flows and usage.last_ns - usage.first_ns >= settings.min_span_s * NS


def _why_none(group: Group, obs: Observations, settings: LearnSettings) -> str:
    """Why none of the group's traffic made an ACE, in words: each kind of traffic it had, counted."""
    members = set(group.devices)
    below = flagged_ = portless = off_site = other = 0
    for key, usage in obs.usages.items():
        if key.device not in members:
            continue
        if key.transport not in _PROTOCOLS:
            portless += 1
        elif flagged(obs, key, usage):
            flagged_ += 1
        elif not _supported(usage, settings):
            below += 1
        elif key.direction == IN:
            off_site += 1
        else:
            other += 1
    parts = [
        f"{n} {what}"
        for n, what in (
            (below, f"below the support asked ({settings.min_flows} flows over {settings.min_span_s:g} s)"),
            (flagged_, "flagged by a rule (see the findings)"),
            (portless, "without ports (ICMP and the like)"),
            (off_site, "opened from off the site (never described)"),
            (other, "not learned (see the findings)"),
        )
        if n
    ]
    if not parts:
        return "no TCP or UDP traffic of its devices was seen"
    total = below + flagged_ + portless + off_site + other
    return f"of its {total} peer/port pair(s), " + ", ".join(parts)


def _learned_uses(proposal: Proposal, group: str) -> list[_Use]:
    uses: list[_Use] = []
    for rule in proposal.rules:
        if rule.group != group:
            continue
        for d in rule.destinations:
            if d.kind != NAME:
                peers = [_Peer("network", d.peer)]
            elif d.peer.startswith("*."):
                # MUD names hosts (inet:host), not patterns: the names the wildcard stands for.
                peers = [_Peer("dnsname", name) for name in d.members]
            else:
                peers = [_Peer("dnsname", d.peer)]
            for peer in peers:
                if d.ports is None:
                    uses.append(_Use(peer, "any", None, "from-device"))
                else:
                    uses += [_Use(peer, t, p, "from-device") for p, t in sorted(d.ports)]
    return uses


def _observed_uses(
    group: Group, obs: Observations, policy: SitePolicy, vendor_of: Mapping[str, str], settings: LearnSettings
) -> list[_Use]:
    """What the group's devices did that the base policy already allows, and what was opened to them."""
    members = set(group.devices)
    uses: list[_Use] = []
    for key, usage in obs.usages.items():
        if key.device not in members or key.transport not in _PROTOCOLS:
            continue
        if not _supported(usage, settings):
            continue
        if flagged(obs, key, usage):
            continue
        if key.direction == OUT and usage.allowed is not None:
            if key.kind == NAME:
                peer = _Peer("dnsname", key.peer)
            else:
                peer = _classify(key.peer, key.port, key.transport, usage.allowed, policy, vendor_of, group)
            uses.append(_Use(peer, key.transport, key.port, "from-device"))
        elif key.direction == IN and key.kind == ADDRESS:
            allowed, reason = policy.egress_allowed(key.peer, key.port, key.transport)
            if not allowed or reason not in _LOCAL_REASONS:
                continue  # from off the site: never described
            peer = _classify(key.peer, 0, key.transport, reason, policy, vendor_of, group)
            uses.append(_Use(peer, key.transport, key.port, "to-device"))
    return uses


def _classify(
    ip: str,
    port: int,
    transport: str,
    reason: str | None,
    policy: SitePolicy,
    vendor_of: Mapping[str, str],
    group: Group,
) -> _Peer:
    if port == 53 and policy.is_resolver(ip):
        return _Peer("controller", DNS_CONTROLLER)
    local = reason in _LOCAL_REASONS
    if port == 123 and transport == "udp" and local:
        return _Peer("controller", NTP_CONTROLLER)
    if policy.is_viewer(ip):
        return _Peer("my-controller")
    if group.vendor is not None and vendor_of.get(ip) == group.vendor:
        return _Peer("same-manufacturer")
    if local:
        return _Peer("local-networks")
    address = ipaddress.ip_address(ip)
    return _Peer("network", str(ipaddress.ip_network(address)))


def _ace(name: str, use: _Use, version: int, reply: bool) -> dict[str, Any]:
    """One ACE: the traffic (``reply``: its answers, in the other ACL)."""
    to_device = use.initiated == "to-device"
    # The peer sends when the device is connected to... or when these are the replies of the peer.
    peer_sends = to_device != reply
    matches: dict[str, Any] = use.peer.match(peer_sends, version)
    ip_key = f"ipv{version}"
    if use.transport in _PROTOCOLS:
        matches.setdefault(ip_key, {})["protocol"] = _PROTOCOLS[use.transport]
        l4: dict[str, Any] = {}
        if use.transport == "tcp":
            l4["ietf-mud:direction-initiated"] = use.initiated
        if use.port is not None:
            # The connected-to port: the destination of the requests, the source of the replies.
            l4["source-port" if reply else "destination-port"] = {"operator": "eq", "port": use.port}
        matches[use.transport] = l4
    return {"name": name, "matches": matches, "actions": {"forwarding": "accept"}}


def _document(group: Group, uses: list[_Use], url: str, stamp: str, site: str) -> dict[str, Any]:
    unique = list(dict.fromkeys(uses))
    prefix = f"camwatch-{group.slug}"[:48]
    acls: dict[str, list[dict[str, Any]]] = {}
    for version in (4, 6):
        frm, to = f"{prefix}-v{version}fr", f"{prefix}-v{version}to"
        acls[frm], acls[to] = [], []
        for n, use in enumerate(unique):
            if version not in use.peer.versions():
                continue
            ask, answer = (to, frm) if use.initiated == "to-device" else (frm, to)
            acls[ask].append(_ace(f"ace{n}-{'todev' if ask == to else 'frdev'}", use, version, reply=False))
            acls[answer].append(
                _ace(f"ace{n}-{'todev' if answer == to else 'frdev'}r", use, version, reply=True)
            )
    names = [name for name, aces in acls.items() if aces]
    mud: dict[str, Any] = {
        "mud-version": 1,
        "mud-url": url,
        "last-update": stamp,
        "cache-validity": CACHE_VALIDITY_HOURS,
        "is-supported": True,
        "systeminfo": f"{group.label} (learned by camwatch at site {site})",
    }
    if group.manufacturer:
        mud["mfg-name"] = group.manufacturer
    if group.model:
        mud["model-name"] = group.model
    mud["from-device-policy"] = {
        "access-lists": {"access-list": [{"name": n} for n in names if n.endswith("fr")]}
    }
    mud["to-device-policy"] = {
        "access-lists": {"access-list": [{"name": n} for n in names if n.endswith("to")]}
    }
    return {
        "ietf-mud:mud": mud,
        "ietf-access-control-list:acls": {
            "acl": [
                {"name": name, "type": f"ipv{name[-3]}-acl-type", "aces": {"ace": acls[name]}}
                for name in names
            ]
        },
    }
