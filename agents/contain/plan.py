"""What containment enforces, decided from the site policy: the plan the ruleset is rendered from.

Sans-I/O: a :class:`ContainmentPlan` is built from a :class:`~monitor.policy.SitePolicy`, the never-block
list and the inventory's devices, and holds every address set the nftables ruleset needs
(agents/contain/render.py) plus :meth:`ContainmentPlan.judge`, the same decision in Python, which the
agent uses to count what would be blocked in dry-run mode (and to log what is blocked in enforce mode)
from the flows it captures. A test checks the two agree on real packets (tests/agents/contain).

The decision, for a connection whose first packet goes from ``opener`` to ``responder``:

1. an opener on the never-block list (the recorder, resolvers, gateway, management hosts) passes;
2. a quarantined opener reaches only never-block hosts and viewers; a quarantined responder is reached
   only by them;
3. a watched opener (inside a monitored network, or a device of a watched vendor the inventory knows
   elsewhere) reaches only site-internal destinations (the monitored networks, on-link addresses, private
   space when the policy says ``allow_private``), the resolvers on the DNS ports, the allow rules (by
   address, and by name through addresses learned from DNS answers: :class:`NameAllow`);
4. anything else passes: containment restricts watched devices, it is not the site's firewall.

The responder's packets (replies) follow the connection: a recorder pulling video from a camera is the
opener, so the camera's video is a reply and passes.

A never-block host the policy does not let watched devices reach at all is an error
(:class:`ContainmentError`): it would be cut off from the cameras (a recorder in another VLAN without an
allow rule), which is never what the never-block list means.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, TypeAlias

from monitor.policy import IPAddress, IPNetwork, SitePolicy
from monitor.vendors.oui import format_mac

__all__ = [
    "DNS_PORTS",
    "ON_LINK_NETWORKS",
    "PRIVATE_NETWORKS",
    "ContainmentError",
    "ContainmentPlan",
    "Device",
    "NameAllow",
    "Verdict",
    "devices_from_inventory",
    "parse_address_or_network",
]

Port: TypeAlias = tuple[int, str]  # (port, "tcp" | "udp")

#: Where a site's resolvers are reached: DNS over UDP and TCP, DNS over TLS (RFC 7858).
DNS_PORTS: Final[tuple[Port, ...]] = ((53, "udp"), (53, "tcp"), (853, "tcp"))
#: Never egress whatever the policy says (monitor/policy.py's on-link destinations, the same list).
ON_LINK_NETWORKS: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in ("224.0.0.0/4", "ff00::/8", "255.255.255.255/32", "127.0.0.0/8", "::1/128", "169.254.0.0/16",
              "fe80::/10")
)  # fmt: skip
#: Site-internal when the policy says ``allow_private: true`` (monitor/policy.py's private space).
PRIVATE_NETWORKS: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
#: Verdict reasons, as logs and metrics say them.
REASONS: Final = (
    "never-block", "quarantine", "viewer", "reply", "site-internal", "resolver", "allow rule", "allow name",
    "not watched", "policy",
)  # fmt: skip


class ContainmentError(ValueError):
    """The plan cannot be made: each problem says what is wrong and how to fix it."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def parse_address_or_network(text: str) -> IPNetwork:
    """``10.0.0.5`` or ``10.0.0.0/24`` (host bits must be zero) as a network; ValueError says why not."""
    value = text.strip()
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"'{value}' is not an IP address or network ({exc})") from None
        raise ValueError(f"'{value}' has host bits set; did you mean {loose}?") from None


@dataclass(frozen=True, slots=True)
class NameAllow:
    """A name-based allow rule: watched devices may reach the addresses DNS gave for these names.

    ``patterns`` are exact names or ``*.suffix`` (every name strictly below the suffix), lower case, no
    trailing dot, as the vendor-cloud catalogue writes them; ``ports`` as :class:`~monitor.policy.AllowRule`
    (``None``: any port). The agent learns the addresses from the DNS answers it captures and calls
    ``Containment.learn(name, address, ttl)``; each stays allowed for the answer's TTL plus a grace period.
    """

    rule: str
    patterns: tuple[str, ...]
    ports: frozenset[Port] | None = None

    def matches(self, name: str) -> bool:
        """True if ``name`` (any case, trailing dot or not) is one of the patterns."""
        name = name.lower().rstrip(".")
        for pattern in self.patterns:
            if pattern.startswith("*."):
                if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                    return True
            elif name == pattern:
                return True
        return False


@dataclass(frozen=True, slots=True)
class Device:
    """A device of the inventory: its MAC, vendor key and the addresses it sends from."""

    mac: str
    vendor: str | None
    addresses: tuple[IPAddress, ...]


def devices_from_inventory(records: Iterable[Mapping[str, object]]) -> list[Device]:
    """Devices from inventory records: the §4.4 inventory (``replay --inventory``, ``inventory_file``)
    or the agent's state file (MAC as an integer); entries without a usable MAC or address are skipped."""
    devices: list[Device] = []
    for record in records:
        mac = record.get("mac")
        if isinstance(mac, int) and not isinstance(mac, bool):
            mac_text = format_mac(mac)
        elif isinstance(mac, str) and mac:
            mac_text = mac.lower().replace(":", "-")
        else:
            continue
        vendor = record.get("vendor")
        ips = record.get("ips")
        addresses: list[IPAddress] = []
        for ip in ips if isinstance(ips, list) else ():
            try:
                addresses.append(ipaddress.ip_address(str(ip)))
            except ValueError:
                continue
        devices.append(Device(mac_text, vendor if isinstance(vendor, str) else None, tuple(addresses)))
    return devices


@dataclass(frozen=True, slots=True)
class Verdict:
    """What containment does with a connection: ``allowed``, why (one of :data:`REASONS`), and whose
    packets would be dropped (``device``: the opener for ``policy``, the quarantined end for
    ``quarantine``; None when allowed)."""

    allowed: bool
    reason: str
    detail: str = ""
    device: IPAddress | None = None


class _Nets:
    """Membership in a set of networks, per version (a handful of networks: a linear scan is enough
    here, this runs once per ended flow, never per packet)."""

    __slots__ = ("_nets",)

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        self._nets = tuple(nets)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(ip.version == n.version and ip in n for n in self._nets)


def _collapse(nets: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    """The smallest equal list, IPv4 first: nested and adjacent networks merged (an nftables interval
    set refuses overlapping elements; the ruleset also reads better)."""
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def _host(ip: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(ip)


@dataclass(frozen=True, slots=True)
class ContainmentPlan:
    """The address sets of the ruleset. Build it with :meth:`build`; direct construction skips the checks."""

    site: str
    #: Sources that are contained: the monitored networks and watched devices elsewhere (hosts).
    watched: tuple[IPNetwork, ...]
    #: Destinations that are site-internal for a watched device.
    internal: tuple[IPNetwork, ...]
    #: Allow rules without ports.
    allow_any: tuple[IPNetwork, ...]
    #: Allow rules with ports: (network, transport, port), collapsed per (transport, port).
    allow_ports: tuple[tuple[IPNetwork, str, int], ...]
    #: The resolvers on the DNS ports.
    resolvers: tuple[tuple[IPAddress, str, int], ...]
    never_block: tuple[IPNetwork, ...]
    viewers: tuple[IPAddress, ...]
    names: tuple[NameAllow, ...] = ()
    #: Watched devices outside the monitored networks (from the inventory), for reports.
    devices: tuple[Device, ...] = ()
    warnings: tuple[str, ...] = ()
    _allow_rules: tuple[tuple[str, tuple[IPNetwork, ...], frozenset[Port] | None], ...] = field(
        default=(), repr=False, compare=False
    )
    _sets: dict[str, _Nets] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: the agent judges every ended flow of a watched device with them.
        sets = {
            "never": _Nets(self.never_block),
            "watched": _Nets(self.watched),
            "internal": _Nets(self.internal),
            "allow_any": _Nets(self.allow_any),
        }
        object.__setattr__(self, "_sets", sets)

    @classmethod
    def build(
        cls,
        policy: SitePolicy,
        *,
        never_block: Iterable[IPNetwork] = (),
        devices: Iterable[Device] = (),
        names: Iterable[NameAllow] | None = None,
    ) -> ContainmentPlan:
        """The plan for ``policy``; ``never_block`` adds to the policy's viewers and resolvers (always on
        the list); ``devices`` are the inventory's (only those of watched vendors outside the monitored
        networks add to what is contained); ``names`` default to the policy's name-based allow rules.

        Raises :class:`ContainmentError` when a never-block host is out of the watched devices' reach."""
        monitored = _Nets(policy.monitored_networks)
        internal = [*policy.monitored_networks, *ON_LINK_NETWORKS]
        if policy.allow_private:
            internal += PRIVATE_NETWORKS
        allow_any: list[IPNetwork] = []
        by_port: dict[tuple[str, int], list[IPNetwork]] = {}
        for rule in policy.allow:
            if rule.ports is None:
                allow_any += rule.networks
            else:
                for port, transport in rule.ports:
                    by_port.setdefault((transport, port), []).extend(rule.networks)
        allow_ports = tuple(
            (net, transport, port)
            for (transport, port), nets in sorted(by_port.items())
            for net in _collapse(nets)
        )
        resolvers = tuple(
            (ip, transport, port)
            for ip in sorted(policy.resolvers, key=_sort_key)
            for port, transport in DNS_PORTS
        )
        blocked_never = [
            *never_block,
            *(_host(ip) for ip in policy.viewers),
            *(_host(ip) for ip in policy.resolvers),
        ]
        never = _collapse(blocked_never)
        never_set = _Nets(never)
        warnings: list[str] = []
        watched_hosts: list[IPNetwork] = []
        extra_devices: list[Device] = []
        for device in devices:
            if device.vendor is None or device.vendor not in policy.watched_vendors:
                continue
            outside = tuple(
                ip
                for ip in device.addresses
                if ip not in monitored and not ip.is_unspecified and ip not in _Nets(ON_LINK_NETWORKS)
            )
            kept = tuple(ip for ip in outside if ip not in never_set)
            for ip in outside:
                if ip in never_set:
                    warnings.append(
                        f"device {device.mac} ({device.vendor}) uses {ip}, which is on the never-block "
                        "list: that address is not contained"
                    )
            if kept:
                watched_hosts += (_host(ip) for ip in kept)
                extra_devices.append(Device(device.mac, device.vendor, kept))
        name_rules = tuple(names) if names is not None else _policy_names(policy)
        plan = cls(
            site=policy.site,
            watched=_collapse([*policy.monitored_networks, *watched_hosts]),
            internal=_collapse(internal),
            allow_any=_collapse(allow_any),
            allow_ports=allow_ports,
            resolvers=resolvers,
            never_block=never,
            viewers=tuple(sorted(policy.viewers, key=_sort_key)),
            names=name_rules,
            devices=tuple(extra_devices),
            warnings=tuple(warnings),
            _allow_rules=tuple((r.name, r.networks, r.ports) for r in policy.allow),
        )
        problems = [
            f"never_block {net}: watched devices could not reach it under the policy (it is outside the "
            "monitored networks, not a resolver and in no allow rule), so containment would cut it off "
            f"from the cameras; add it to an allow rule (e.g. {{name: recorder, to: [{net}]}}) or its "
            "network to monitored.networks"
            for net in never
            if not plan._reachable(net)
        ]
        if problems:
            raise ContainmentError(problems)
        for net in never:
            for mon in policy.monitored_networks:
                if net.version == mon.version and mon.subnet_of(net):  # type: ignore[arg-type]
                    warnings.append(
                        f"never_block {net} covers the whole monitored network {mon}: nothing there is "
                        "contained"
                    )
        return plan if not warnings else _with_warnings(plan, warnings)

    # -- the decision -----------------------------------------------------------------------------

    def judge(
        self,
        opener: IPAddress,
        responder: IPAddress,
        transport: str,
        port: int,
        quarantined: Container[IPAddress] = (),
        learned: Container[tuple[str, IPAddress]] = (),
    ) -> Verdict:
        """What the ruleset does with a connection ``opener`` -> ``responder`` (``transport`` "tcp", "udp",
        or another IANA keyword; ``port`` the responder's, 0 without ports). ``learned`` holds the
        (name rule, address) pairs learned from DNS answers."""
        sets = self._sets
        never = sets["never"]
        if opener in never:
            return Verdict(True, "never-block")
        if opener in quarantined:
            if responder in never:
                return Verdict(True, "never-block")
            if responder in self.viewers:
                return Verdict(True, "viewer")
            return Verdict(False, "quarantine", "the opener is quarantined", opener)
        if responder in quarantined:
            if responder in never:  # never quarantined (refused), but the ruleset would let it pass
                return Verdict(True, "never-block")
            if opener in self.viewers:
                return Verdict(True, "viewer")
            return Verdict(False, "quarantine", "the responder is quarantined", responder)
        if opener not in sets["watched"]:
            return Verdict(True, "not watched")
        if responder in sets["internal"]:
            return Verdict(True, "site-internal")
        transport = transport.lower()
        if (responder, transport, port) in self.resolvers:
            return Verdict(True, "resolver")
        if responder in sets["allow_any"]:
            return Verdict(True, "allow rule", self._rule_name(responder, transport, port))
        for net, proto, rule_port in self.allow_ports:
            if proto == transport and rule_port == port and responder in net:
                return Verdict(True, "allow rule", self._rule_name(responder, transport, port))
        for rule in self.names:
            if (rule.rule, responder) in learned and (rule.ports is None or (port, transport) in rule.ports):
                return Verdict(True, "allow name", rule.rule)
        return Verdict(False, "policy", "not an allowed destination", opener)

    def _rule_name(self, ip: IPAddress, transport: str, port: int) -> str:
        for name, nets, ports in self._allow_rules:
            if ip in _Nets(nets) and (ports is None or (port, transport) in ports):
                return name
        return ""

    def _reachable(self, net: IPNetwork) -> bool:
        """Can a watched device reach ``net`` on at least one port?"""

        def within(nets: Iterable[IPNetwork]) -> bool:
            return any(net.version == n.version and net.subnet_of(n) for n in nets)  # type: ignore[arg-type]

        if within(self.internal) or within(self.allow_any) or within(n for n, _, _ in self.allow_ports):
            return True
        return net.num_addresses == 1 and net.network_address in {ip for ip, _, _ in self.resolvers}

    # -- identity ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        """Every set, as text: what the digest covers and what ``contain render --json`` shows."""
        return {
            "site": self.site,
            "watched": [str(n) for n in self.watched],
            "internal": [str(n) for n in self.internal],
            "allow_any": [str(n) for n in self.allow_any],
            "allow_ports": [f"{n} {t}/{p}" for n, t, p in self.allow_ports],
            "resolvers": [f"{ip} {t}/{p}" for ip, t, p in self.resolvers],
            "never_block": [str(n) for n in self.never_block],
            "viewers": [str(ip) for ip in self.viewers],
            "names": [
                {
                    "rule": r.rule,
                    "patterns": list(r.patterns),
                    "ports": None if r.ports is None else [f"{p}/{t}" for p, t in sorted(r.ports)],
                }
                for r in self.names
            ],
        }

    @property
    def digest(self) -> str:
        """A short hash of the sets: the same plan gives the same digest (the ruleset's identity)."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sort_key(ip: IPAddress) -> tuple[int, int]:
    return ip.version, int(ip)


def _with_warnings(plan: ContainmentPlan, warnings: list[str]) -> ContainmentPlan:
    return replace(plan, warnings=tuple(dict.fromkeys(warnings)))


def _policy_names(policy: SitePolicy) -> tuple[NameAllow, ...]:
    """The policy's name-based allow rules: each allow rule with names (docs/containment.md, "Name-based
    allow rules") becomes a :class:`NameAllow`."""
    rules: list[NameAllow] = []
    for rule in policy.allow:
        names = getattr(rule, "names", None)
        if names:
            patterns = tuple(str(n).lower().rstrip(".") for n in names)
            rules.append(NameAllow(rule.name, patterns, rule.ports))
    return tuple(rules)
