"""The site policy: which devices are watched and where they may connect (docs/design.md §4.1, 4.7).

Pure: takes a parsed mapping or YAML text, never opens files. Validation collects *every* bad field
(with the reader of monitor/validation.py, which the agent configuration uses too) and raises one
:class:`PolicyError` naming each field path and its fix, so ``camwatch check-config`` can show the
whole list at once instead of one error per run.

Egress decision (:meth:`SitePolicy.egress_allowed`). A destination is allowed when it is

- on-link: multicast (224.0.0.0/4, ff00::/8), broadcast (255.255.255.255 and the directed broadcast of
  each monitored IPv4 network), loopback, link-local (169.254.0.0/16, fe80::/10): discovery and
  link traffic that cannot leave the site, never egress whatever the policy says;
- inside a monitored network: site-internal;
- private space (RFC 1918, RFC 6598 100.64.0.0/10, IPv6 ULA fc00::/7) when ``allow_private`` is true;
- covered by an allow rule: inside one of its networks, or resolved from one of its DNS names (exact
  or ``*.suffix``) by the device itself (the caller passes those names), and on one of its ports if
  the rule lists them.

Anything else is unexpected. The reason returned is the label of the longest matching prefix among
the first three (ties: on-link, then monitored), else the name of the first matching rule in policy
order. The first three share one precomputed table, so a lookup costs one dict probe per distinct
prefix length. The allow rules share another (:class:`_AllowIndex`, per IP version): per distinct
prefix length one dict probe, which finds the first rule of that network for any port and for the
asked port and transport; names likewise, one probe per label of each name. A lookup costs the same
with 100,000 overlapping rules as with three (issue 16: the rules used to be scanned one by one).

Improvements over docs/design.md §4.7 (kept compatible with its YAML):

- ``allow_private`` (new key). Without a policy file every private address is allowed (docs/design.md §4.1).
  With a policy file the site is described explicitly, so a camera talking to a private address outside
  the monitored networks *is* reported unless the policy says ``allow_private: true``.
- ``monitored.vendors`` left out means the default watch list (:data:`DEFAULT_WATCHED_VENDORS`), so a
  policy that only names its camera networks still watches cameras of those vendors elsewhere;
  ``vendors: []`` watches by network only.
- All multicast, not only link-scoped groups, counts as "not egress": multicast is not routed to the
  Internet unless a site sets that up on purpose.
- YAML problems carry the line and column of the offending value; duplicate YAML keys (which YAML
  otherwise resolves silently, last one wins) are reported.
"""

from __future__ import annotations

import difflib
import ipaddress
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, SupportsIndex, TypeAlias

from monitor.names import NameIndex, NameProblem, normalise_pattern
from monitor.validation import (
    CONTROL_RE,
    FieldProblem,
    Reader,
    ValidationError,
    child,
    describe,
    load_yaml,
    short,
)

__all__ = [
    "DEFAULT_WATCHED_VENDORS",
    "KNOWN_VENDOR_KEYS",
    "OEM_BRANDS",
    "POLICY_WORDS",
    "AllowRule",
    "FieldProblem",
    "IPAddress",
    "IPLike",
    "IPNetwork",
    "PolicyError",
    "SitePolicy",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
#: What the membership checks accept. An ``int`` needs the ``version`` argument (default 4); it is the
#: fast path, because decoded packets already hold addresses as integers.
IPLike: TypeAlias = int | str | IPAddress

#: Canonical vendor keys known to camwatch (the keys the inventory uses, docs/design.md §4.7).
KNOWN_VENDOR_KEYS: Final[tuple[str, ...]] = (
    "hikvision", "dahua", "ezviz", "imou", "uniview", "xiongmai", "tiandy",
    "huawei", "axis", "hanwha", "bosch", "milesight", "reolink",
)  # fmt: skip

#: OEM brands that sell another maker's cameras under their own name (docs/design.md §7): their devices
#: carry the maker's MACs and firmware, so the inventory names the maker. Key -> (brand, maker's key).
OEM_BRANDS: Final[Mapping[str, tuple[str, str]]] = {
    "lts": ("LTS", "hikvision"),
    "annke": ("Annke", "hikvision"),
    "lorex": ("Lorex", "dahua"),
    "amcrest": ("Amcrest", "dahua"),
}

#: Vendors watched wherever they are when no policy says otherwise: the makers whose devices are
#: documented to phone home to vendor clouds and P2P relays (docs/design.md §7).
DEFAULT_WATCHED_VENDORS: Final[frozenset[str]] = frozenset(
    {"hikvision", "dahua", "ezviz", "imou", "uniview", "xiongmai", "tiandy"}
)

DEFAULT_SITE: Final = "default"
#: How long after its TTL a DNS answer still explains a connection (``name_grace``): devices keep using
#: an address for a while after its TTL (their own caches, long-lived clients), and the address was
#: still the name's when they connect then.
DEFAULT_NAME_GRACE_S: Final = 3600.0
MAX_NAME_GRACE_S: Final = 7 * 86400.0

_MAX4: Final = (1 << 32) - 1
_MAX6: Final = (1 << 128) - 1

_VENDOR_KEY_RE: Final = re.compile(r"[a-z0-9_-]+")
_PORT_RE: Final = re.compile(r"([0-9]+)(?:\s*/\s*([A-Za-z0-9]+))?")
_HOSTNAME_RE: Final = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9*-]+(?:\.[A-Za-z0-9-]+)+\.?")
_TRANSPORTS: Final = ("tcp", "udp")

_TOP_KEYS: Final = (
    "site", "monitored", "resolvers", "viewers", "allow", "allow_private", "known_devices", "name_grace",
)  # fmt: skip
_MONITORED_KEYS: Final = ("networks", "vendors")
_RULE_KEYS: Final = ("name", "to", "ports")
# Mistakes difflib cannot guess: the key belongs elsewhere or has another name.
_KEY_HINTS: Final[Mapping[str, Mapping[str, str]]] = {
    "": {
        "networks": "put it under 'monitored:' as 'monitored.networks'",
        "vendors": "put it under 'monitored:' as 'monitored.vendors'",
        "name": "did you mean 'site'?",
        "dns": "did you mean 'resolvers'?",
        "allowlist": "did you mean 'allow'?",
        "devices": "did you mean 'known_devices'?",
        "assets": "did you mean 'known_devices'?",
        "grace": "did you mean 'name_grace'?",
        "dns_grace": "did you mean 'name_grace'?",
    },
    "allow[]": {
        "networks": "did you mean 'to'?",
        "destinations": "did you mean 'to'?",
        "dst": "did you mean 'to'?",
        "names": "put names in 'to' with the networks, e.g. to: [ntp.example.com]",
        "domains": "put names in 'to' with the networks, e.g. to: [ntp.example.com]",
        "port": "did you mean 'ports'?",
    },
}
#: Every top-level key a site policy has, or that its validator hints towards (a policy key misplaced at
#: the top): what marks a YAML document as a policy rather than an agent configuration.
POLICY_WORDS: Final[frozenset[str]] = frozenset(_TOP_KEYS) | frozenset(_KEY_HINTS[""])


# --------------------------------------------------------------------------------------------------
# Errors


class PolicyError(ValidationError[FieldProblem]):
    """One or more bad fields in a site policy; ``problems`` lists them all, in document order."""

    kind = "policy"

    def __init__(self, problems: Sequence[FieldProblem], source: str = "<policy>") -> None:
        super().__init__(problems, source)


# --------------------------------------------------------------------------------------------------
# Fast address membership


class _NetSet:
    """A set of networks answering "is this integer address inside?" in O(distinct prefix lengths).

    Networks are stored per IP version as ``(shift, {network >> shift})``: one shift and one set
    lookup per distinct prefix length, however many networks there are.
    """

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for net in networks:
            shift = net.max_prefixlen - net.prefixlen
            tables[net.version].setdefault(shift, set()).add(int(net.network_address) >> shift)
        self._v4 = tuple((s, frozenset(v)) for s, v in sorted(tables[4].items()))
        self._v6 = tuple((s, frozenset(v)) for s, v in sorted(tables[6].items()))

    def contains(self, ip: int, version: int) -> bool:
        # A plain loop: any() over a generator costs about twice as much on this hot path.
        for shift, nets in self._v4 if version == 4 else self._v6:  # noqa: SIM110
            if ip >> shift in nets:
                return True
        return False


class _NetMap:
    """Like :class:`_NetSet`, but each network carries a label; the longest matching prefix wins
    (and, for the same network, the label added last)."""

    __slots__ = ("_tables",)

    def __init__(self, labelled: Iterable[tuple[IPNetwork, str]]) -> None:
        tables: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        for net, label in labelled:
            shift = net.max_prefixlen - net.prefixlen
            tables[net.version].setdefault(shift, {})[int(net.network_address) >> shift] = label
        # Smallest shift first = longest prefix first.
        self._tables = {v: tuple(sorted(t.items())) for v, t in tables.items()}

    def get(self, ip: int, version: int) -> str | None:
        for shift, nets in self._tables[version]:
            label = nets.get(ip >> shift)
            if label is not None:
                return label
        return None


# Destinations that can never be egress, whatever the policy says.
_ON_LINK: Final[tuple[tuple[IPNetwork, str], ...]] = tuple(
    (ipaddress.ip_network(cidr), label)
    for cidr, label in (
        ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("127.0.0.0/8", "loopback"),
        ("::1/128", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("fe80::/10", "link-local"),
    )
)
_PRIVATE_NETS: Final[tuple[tuple[IPNetwork, str], ...]] = tuple(
    (ipaddress.ip_network(cidr), "private")
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


@lru_cache(maxsize=4096)
def _parse_ip_text(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return int(address), address.version


def _ip_key(ip: object, version: int) -> tuple[int, int]:
    """``(integer address, version)`` for any accepted address form; ints skip object creation."""
    if type(ip) is int:
        if version == 4:
            if 0 <= ip <= _MAX4:
                return ip, 4
        elif version == 6:
            if 0 <= ip <= _MAX6:
                return ip, 6
        else:
            raise ValueError(f"IP version must be 4 or 6, got {version!r}")
        raise ValueError(f"{ip} is out of range for an IPv{version} address")
    if isinstance(ip, str):
        return _parse_ip_text(ip)
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return int(ip), ip.version
    if isinstance(ip, SupportsIndex) and not isinstance(ip, bool):  # numpy integers and the like
        return _ip_key(operator.index(ip), version)
    raise TypeError(f"expected an IP address as int, str or ipaddress object, got {type(ip).__name__}")


# --------------------------------------------------------------------------------------------------
# The model


# --------------------------------------------------------------------------------------------------
# Allow rules: which rule (the first in policy order) covers a destination


_NO_RULE: Final = 1 << 62  # larger than any rule index


def _port_key(port: int, transport: str) -> int:
    """One int per (port, transport) a rule can list (TCP and UDP); -1 for a transport without ports."""
    if transport == "tcp":
        return port << 1
    if transport == "udp":
        return (port << 1) | 1
    return -1


class _FirstRule:
    """For one network (or name) of the allow rules: the first rule listing it for any port, and per
    (port, transport) the first rule listing it with that port."""

    __slots__ = ("any", "ports")

    def __init__(self) -> None:
        self.any = _NO_RULE
        self.ports: dict[int, int] = {}

    def add(self, index: int, ports: frozenset[tuple[int, str]] | None) -> None:
        if ports is None:
            self.any = min(self.any, index)
            return
        for port, transport in ports:
            key = _port_key(port, transport)
            if self.ports.get(key, _NO_RULE) > index:
                self.ports[key] = index

    def first(self, key: int) -> int:
        hit = self.ports.get(key, _NO_RULE) if key >= 0 else _NO_RULE
        return hit if hit < self.any else self.any


class _AllowIndex:
    """The allow rules, indexed: per IP version ``(shift, {network >> shift: _FirstRule})`` for each
    distinct prefix length, and the rules' names in a :class:`~monitor.names.NameIndex`.

    :meth:`first` gives the index of the first rule covering a destination (``_NO_RULE`` if none): the
    smallest over every prefix length that matches, so exactly the rule a scan in policy order finds.
    """

    __slots__ = ("_name_any", "_name_ports", "_names", "_v4", "_v6")

    def __init__(self, rules: Sequence[AllowRule]) -> None:
        tables: dict[int, dict[int, dict[int, _FirstRule]]] = {4: {}, 6: {}}
        names: NameIndex[_FirstRule] = NameIndex()
        name_any = False
        name_ports: set[int] = set()
        for index, rule in enumerate(rules):
            for net in rule.networks:
                shift = net.max_prefixlen - net.prefixlen
                table = tables[net.version].setdefault(shift, {})
                key = int(net.network_address) >> shift
                entry = table.get(key)
                if entry is None:
                    entry = table[key] = _FirstRule()
                entry.add(index, rule.ports)
            for name in rule.names:
                names.setdefault(name, _FirstRule()).add(index, rule.ports)
                if rule.ports is None:
                    name_any = True
                else:
                    name_ports.update(_port_key(p, t) for p, t in rule.ports)
        self._v4 = tuple(sorted(tables[4].items()))
        self._v6 = tuple(sorted(tables[6].items()))
        self._names = names
        self._name_any = name_any
        self._name_ports = frozenset(name_ports)

    def first(self, ip: int, version: int, key: int) -> int:
        best = _NO_RULE
        for shift, table in self._v4 if version == 4 else self._v6:
            entry = table.get(ip >> shift)
            if entry is not None:
                found = entry.first(key)
                if found < best:
                    best = found
        return best

    def first_by_name(self, names: Iterable[str], key: int) -> int:
        best = _NO_RULE
        if not self._names:
            return best
        for name in names:
            for entry in self._names.matches(name):
                found = entry.first(key)
                if found < best:
                    best = found
        return best

    @property
    def has_names(self) -> bool:
        return bool(self._names)

    def names_name(self, name: str) -> bool:
        """Does some rule name ``name`` (exactly or by a wildcard), on whatever ports?"""
        return any(True for _ in self._names.matches(name))

    def names_may_allow(self, key: int) -> bool:
        """Could some name of the rules allow this (port, transport)?"""
        return self._name_any or key in self._name_ports


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


@dataclass(frozen=True, slots=True)
class AllowRule:
    """Watched devices may connect to ``networks``, and to the addresses they resolved from ``names``,
    on ``ports`` only if given.

    ``names`` holds canonical name patterns (``ntp.example.com``, ``*.example.com``: see
    :func:`monitor.names.normalise_pattern`). ``ports`` holds ``(port, transport)`` pairs with transport
    ``"tcp"`` or ``"udp"``; a bare port in the policy (``123``) stands for both. ``None`` means any port
    and any transport.
    """

    name: str
    networks: tuple[IPNetwork, ...]
    ports: frozenset[tuple[int, str]] | None = None
    names: tuple[str, ...] = ()
    _nets: _NetSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_nets", _NetSet(self.networks))

    def allows(
        self, dst_ip: IPLike, dst_port: int, transport: str, version: int = 4, names: Iterable[str] = ()
    ) -> bool:
        """True if this rule covers the destination (``names``: the names the device resolved it from).
        One rule at a time: :meth:`SitePolicy.egress_allowed` answers for the whole policy at once."""
        value, ver = _ip_key(dst_ip, version)
        proto = transport.lower()
        if self.ports is not None and (dst_port, proto) not in self.ports:
            return False
        return self._nets.contains(value, ver) or any(
            _name_matches(pattern, name) for pattern in self.names for name in names
        )


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """Which devices are watched and where they may connect. Build with :meth:`from_yaml`,
    :meth:`from_mapping` or :meth:`default`; direct construction skips validation."""

    site: str
    monitored_networks: tuple[IPNetwork, ...] = ()
    watched_vendors: frozenset[str] = DEFAULT_WATCHED_VENDORS
    #: The site's DNS resolvers. Empty means "not configured": there is no resolver rule, so callers
    #: must check ``policy.resolvers`` before treating ``not is_resolver(ip)`` as a bypass.
    resolvers: frozenset[IPAddress] = frozenset()
    #: Who may pull video. Empty means "not configured": there is no viewer rule.
    viewers: frozenset[IPAddress] = frozenset()
    allow: tuple[AllowRule, ...] = ()
    allow_private: bool = False
    #: The site's asset register: MAC addresses (as integers) that ``device.new`` does not announce.
    known_devices: frozenset[int] = frozenset()
    is_default: bool = False
    #: Seconds a DNS answer explains a connection after its TTL ran out (name-based allow rules).
    name_grace_s: float = DEFAULT_NAME_GRACE_S
    _monitored: _NetSet = field(init=False, repr=False, compare=False)
    _fixed: _NetMap = field(init=False, repr=False, compare=False)
    _allow_index: _AllowIndex = field(init=False, repr=False, compare=False)
    _resolver_keys: frozenset[tuple[int, int]] = field(init=False, repr=False, compare=False)
    _viewer_keys: frozenset[tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precompute integer forms once: the checks below run for every new flow.
        object.__setattr__(self, "_monitored", _NetSet(self.monitored_networks))
        # The allowed-whatever-the-port destinations go into one labelled map, so the hot path does
        # one lookup per distinct prefix length instead of one per category.
        fixed: list[tuple[IPNetwork, str]] = [(net, "monitored network") for net in self.monitored_networks]
        fixed += [
            (ipaddress.IPv4Network(net.broadcast_address), "broadcast")
            for net in self.monitored_networks
            # /31 and /32 have no broadcast address (RFC 3021): their last address is a host.
            if isinstance(net, ipaddress.IPv4Network) and net.prefixlen <= 30
        ]
        if self.allow_private:
            fixed[:0] = _PRIVATE_NETS  # first: a monitored network inside private space keeps its label
        fixed += _ON_LINK  # last: on a tie with a monitored network, the on-link label wins
        object.__setattr__(self, "_fixed", _NetMap(fixed))
        object.__setattr__(self, "_allow_index", _AllowIndex(self.allow))
        object.__setattr__(self, "_resolver_keys", frozenset((int(a), a.version) for a in self.resolvers))
        object.__setattr__(self, "_viewer_keys", frozenset((int(a), a.version) for a in self.viewers))

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def default(cls) -> SitePolicy:
        """The policy without a policy file (docs/design.md §4.1): watch the default vendors; private,
        link-local, loopback, multicast and broadcast destinations are expected, the rest is not."""
        return cls(
            site=DEFAULT_SITE, watched_vendors=DEFAULT_WATCHED_VENDORS, allow_private=True, is_default=True
        )

    @classmethod
    def from_mapping(cls, data: object, source: str = "<policy>") -> SitePolicy:
        """Validate a parsed policy (e.g. from YAML or JSON); raise :class:`PolicyError` listing
        every bad field."""
        reader = Reader()
        policy = cls.read(data, reader)
        if reader.problems or policy is None:
            raise PolicyError(reader.problems, source)
        return policy

    @classmethod
    def from_yaml(cls, text: str | bytes, source: str = "<policy>") -> SitePolicy:
        """Parse and validate YAML text (bytes must be UTF-8); problems carry their line and column."""
        try:
            document = load_yaml(text, source, "write a flat policy like docs/policy.md")
        except ValidationError as exc:  # a syntax error: nothing after it can be checked
            raise PolicyError([_alias_hint(p) for p in exc.problems], source) from exc
        reader = Reader(document)
        policy = cls.read(document.data, reader)
        found = [*document.duplicates, *reader.problems]
        if found or policy is None:
            # Document order reads best; problems without a position (a missing 'site') come first.
            raise PolicyError(sorted(found, key=lambda p: p.line or 0), source)
        return policy

    @classmethod
    def read(cls, data: object, reader: Reader) -> SitePolicy | None:
        """Validate ``data`` with ``reader``, which collects the problems (a view such as
        ``reader.at("policy")`` reads a policy nested in another document); ``None`` if any was found."""
        return _build(data, reader)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things that are valid but deserve a look, each ``<field>: <what>; <advice>``: vendor keys
        camwatch does not know, which are most likely typos. Every loader shows them the same way."""
        return tuple(
            f"monitored.vendors: '{key}' is not a vendor camwatch knows; {_unknown_vendor_advice(key)}"
            for key in sorted(self.unknown_vendors)
        )

    # -- queries (called once per new flow: keep them cheap) -------------------------------------

    @property
    def unknown_vendors(self) -> frozenset[str]:
        """Watched vendor keys that are not in :data:`KNOWN_VENDOR_KEYS` (allowed, but possibly a
        typo worth a warning: such a key matches no device the inventory knows)."""
        return self.watched_vendors - frozenset(KNOWN_VENDOR_KEYS)

    def is_monitored_ip(self, ip: IPLike, version: int = 4) -> bool:
        """True if ``ip`` is inside a monitored network (``version`` applies to int addresses)."""
        value, ver = _ip_key(ip, version)
        return self._monitored.contains(value, ver)

    def is_watched(self, ip: IPLike, vendor_key: str | None, version: int = 4) -> bool:
        """True if the device is in a monitored network or its vendor is on the watch list."""
        if vendor_key is not None and vendor_key in self.watched_vendors:
            return True
        value, ver = _ip_key(ip, version)
        return self._monitored.contains(value, ver)

    def egress_allowed(
        self,
        dst_ip: IPLike,
        dst_port: int,
        transport: str,
        version: int = 4,
        names: Iterable[str] = (),
    ) -> tuple[bool, str | None]:
        """May a watched device open a flow to this destination?

        ``names``: the DNS names the device resolved the destination from (and the flow's TLS server
        name), which the policy's name rules match. Returns ``(True, reason)`` with the name of the
        first allow rule covering it or one of ``"multicast"``, ``"broadcast"``, ``"monitored
        network"``, ``"loopback"``, ``"link-local"``, ``"private"``; ``(False, None)`` when the
        destination is unexpected. ``transport`` is e.g. ``"tcp"``.
        """
        ip, ver = _ip_key(dst_ip, version)
        label = self._fixed.get(ip, ver)
        if label is not None:
            return True, label
        if self.allow:
            index = self._allow_index
            key = _port_key(dst_port, transport.lower())
            first = index.first(ip, ver, key)
            if names:
                first = min(first, index.first_by_name(names, key))
            if first != _NO_RULE:
                return True, self.allow[first].name
        return False, None

    @property
    def has_name_rules(self) -> bool:
        """Some allow rule names destinations by DNS name."""
        return self._allow_index.has_names

    @property
    def name_grace_ns(self) -> int:
        """:attr:`name_grace_s` in nanoseconds."""
        return int(self.name_grace_s * 1_000_000_000)

    def allows_name(self, name: str) -> bool:
        """Does an allow rule name ``name`` (exactly or by a wildcard), on whatever ports: the site expects
        its devices to reach it."""
        return self._allow_index.names_name(name)

    def names_may_allow(self, dst_port: int, transport: str) -> bool:
        """Could a name (a DNS answer, a TLS server name) make this port and transport allowed? False
        when no name rule lists it: then waiting for a name is pointless."""
        return self._allow_index.names_may_allow(_port_key(dst_port, transport.lower()))

    def is_resolver(self, ip: IPLike, version: int = 4) -> bool:
        """True if ``ip`` is one of the site's resolvers (always False when none are configured)."""
        return _ip_key(ip, version) in self._resolver_keys

    def is_viewer(self, ip: IPLike, version: int = 4) -> bool:
        """True if ``ip`` is an allowed video viewer (always False when none are configured)."""
        return _ip_key(ip, version) in self._viewer_keys

    def is_known_device(self, mac: int) -> bool:
        """True if the MAC is in the site's asset register (``known_devices``)."""
        return mac in self.known_devices


def _alias_hint(problem: FieldProblem) -> FieldProblem:
    """YAML reads an unquoted ``*.example.com`` as an alias (``*name``) and fails: say how to write it."""
    if "scanning an alias" not in problem.problem:
        return problem
    return FieldProblem(
        problem.field,
        problem.problem,
        'quote a wildcard name: "*.example.com" (YAML reads a leading * as an alias)',
        problem.line,
        problem.column,
    )


# --------------------------------------------------------------------------------------------------
# Validation: each parser records its problems in the reader and returns None (or nothing) for a bad
# value, so one pass reports every bad field.


def _parse_site(value: object, reader: Reader) -> str | None:
    # Numbers (YAML reads `site: 007` as 7) get "quote it" with the text as written.
    text = reader.text({"site": value}, "", "site", None, "depot-7", plain=False)
    if text is None:
        return None
    if not text.strip():
        reader.add("site", "is empty", "write the site's name, e.g. site: depot-7")
        return None
    return reader.topic_segment("site", text)


def _parse_network(value: object, path: str, reader: Reader) -> IPNetwork | None:
    if not isinstance(value, str):
        reader.add(
            path,
            f"must be an IP network written as text, not {describe(value)}",
            "write it like 10.20.0.0/24 (or 10.20.0.5 for one host)",
        )
        return None
    text = value.strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError as exc:
        try:
            loose: IPNetwork | None = ipaddress.ip_network(text, strict=False)
        except ValueError:
            loose = None
        if loose is not None:
            host = text.split("/", 1)[0]
            reader.add(
                path,
                f"'{text}' has host bits set (the address is not the start of the network)",
                f"did you mean {loose}? (for the single host write {host})",
            )
        elif _HOSTNAME_RE.fullmatch(text):
            reader.add(
                path,
                f"'{short(text)}' is a host name; this list holds IP networks",
                "write IP networks, e.g. 10.20.0.0/24 (names are allowed in an allow rule's 'to')",
            )
        else:
            reader.add(
                path,
                f"'{short(text)}' is not an IP network ({short(str(exc), 80)})",
                "write an address with a prefix length, e.g. 10.20.0.0/24 or 2001:db8::/64",
            )
        return None


# Text that is meant as an address or network, not a name: digits, dots, a prefix, or IPv6 colons.
_IP_LIKE_RE: Final = re.compile(r"[0-9.]+(?:/.*)?|.*[:/].*")
_NAME_PORT_RE: Final = re.compile(r"([A-Za-z0-9*_.-]*[A-Za-z][A-Za-z0-9*_.-]*):([0-9]{1,5})")


def _parse_destination(value: object, path: str, reader: Reader) -> IPNetwork | str | None:
    """An allow rule's ``to`` entry: an IP network (a bare address is one host) or a DNS name pattern."""
    if not isinstance(value, str):
        reader.add(
            path,
            f"must be an IP network or a DNS name written as text, not {describe(value)}",
            "write it like 10.20.0.0/24, 10.20.0.5 or ntp.example.com",
        )
        return None
    text = value.strip()
    with_port = _NAME_PORT_RE.fullmatch(text)
    if with_port is not None:
        reader.add(
            path,
            f"'{short(text)}' has a port in it",
            f"write the name alone ({short(with_port.group(1))}) and its port under 'ports', e.g. "
            f"ports: [{with_port.group(2)}/tcp]",
        )
        return None
    if _IP_LIKE_RE.fullmatch(text):
        return _parse_network(value, path, reader)
    try:
        return normalise_pattern(text)
    except NameProblem as exc:
        reader.add(path, f"'{short(text)}' {exc.problem}", exc.fix)
        return None


def _parse_address(value: object, path: str, reader: Reader) -> IPAddress | None:
    if not isinstance(value, str):
        reader.add(
            path, f"must be an IP address written as text, not {describe(value)}", "write it like 10.20.0.1"
        )
        return None
    text = value.strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if "/" in text:
        reader.add(
            path,
            f"'{short(text)}' is a network; this list holds single addresses",
            f"write the address alone, e.g. {short(text.split('/', 1)[0])}",
        )
    else:
        reader.add(path, f"'{short(text)}' is not an IP address", "write it like 10.20.0.1 or 2001:db8::1")
    return None


_MAC_HEX = re.compile(r"[0-9a-f]{12}")


def _parse_mac(value: object, path: str, reader: Reader) -> int | None:
    fix = "write it like 44:19:b6:00:00:01 (44-19-b6-00-00-01 and 4419.b600.0001 are read too)"
    if not isinstance(value, str):
        reader.add(path, f"must be a MAC address written as text, not {describe(value)}", fix)
        return None
    digits = re.sub(r"[:.\-]", "", value.strip().lower())
    if not _MAC_HEX.fullmatch(digits):
        reader.add(path, f"'{short(value)}' is not a MAC address", fix)
        return None
    return int(digits, 16)


def _parse_port(value: object, path: str, reader: Reader) -> list[tuple[int, str]]:
    example = "write <port> or <port>/<tcp|udp>, e.g. 53/udp, 443/tcp or 123 (both)"
    if isinstance(value, bool) or not isinstance(value, int | str):
        reader.add(path, f"must be a port like 443/tcp, not {describe(value)}", example)
        return []
    text = str(value).strip()
    match = _PORT_RE.fullmatch(text)
    if match is None:
        if re.fullmatch(r"[0-9]+\s*[-:]\s*[0-9]+(?:\s*/\s*\w+)?", text):
            reader.add(
                path,
                f"'{short(text)}' is a port range; ranges are not supported",
                "list each port, e.g. [8000/tcp, 8001/tcp]",
            )
        else:
            reader.add(path, f"'{short(text)}' is not a port", example)
        return []
    digits, proto_text = match.group(1), match.group(2)
    # Compare the digit count before int(): a huge digit string would otherwise trip the int limit.
    port = int(digits) if len(digits) <= 5 else 0
    problems = False
    if not 1 <= port <= 65535:
        reader.add(path, f"port {short(digits)} is out of range", "use a port between 1 and 65535")
        problems = True
    proto = proto_text.lower() if proto_text is not None else None
    if proto is not None and proto not in _TRANSPORTS:
        reader.add(
            path,
            f"unknown transport '{short(proto_text)}'",
            f"use tcp or udp, e.g. {port if not problems else 53}/udp, or leave it off to allow both",
        )
        problems = True
    if problems:
        return []
    return [(port, proto)] if proto is not None else [(port, t) for t in _TRANSPORTS]


def _unknown_vendor_advice(key: str) -> str:
    """The fix for a watched vendor key camwatch does not know: an OEM brand's maker, the closest known key,
    or a look at the spelling."""
    if key in OEM_BRANDS:
        brand, maker = OEM_BRANDS[key]
        return (
            f"{brand} cameras are usually made by {maker.capitalize()} and carry its MACs, so camwatch "
            f"names them '{maker}': watch '{maker}' (as written it matches no device)"
        )
    close = difflib.get_close_matches(key, KNOWN_VENDOR_KEYS, n=1, cutoff=0.75)
    if close:
        return f"did you mean '{close[0]}'? (as written it matches no device)"
    return "check the spelling (it matches no device yet)"


def _parse_vendor(value: object, path: str, reader: Reader) -> str | None:
    if isinstance(value, str) and _VENDOR_KEY_RE.fullmatch(value):
        return value
    if not isinstance(value, str):
        reader.add(
            path,
            f"must be a vendor key, not {describe(value)}",
            "use the lowercase canonical key, e.g. 'hikvision'",
        )
        return None
    squashed = re.sub(r"[^a-z0-9_-]", "", value.strip().lower())
    if squashed in KNOWN_VENDOR_KEYS:
        fix = f"use the lowercase canonical key '{squashed}'"
    else:
        close = difflib.get_close_matches(squashed, KNOWN_VENDOR_KEYS, n=1, cutoff=0.6)
        fix = f"use the lowercase canonical key, e.g. '{close[0] if close else 'hikvision'}'"
    reader.add(path, f"'{short(value)}' is not a vendor key (lowercase letters, digits, '_' and '-')", fix)
    return None


def _parse_rule(value: object, path: str, reader: Reader) -> AllowRule | None:
    before = len(reader.problems)
    rule = reader.as_mapping(
        value, path, "a mapping with 'name' and 'to'", "{name: recorder, to: [10.20.0.2/32]}"
    )
    if rule is None:
        return None
    reader.keys(rule, path, _RULE_KEYS, _KEY_HINTS["allow[]"])

    name = rule.get("name")
    if name is None:
        reader.add(child(path, "name"), "is missing", "give the rule a name, e.g. name: recorder")
    elif not isinstance(name, str) or not name.strip() or CONTROL_RE.search(name):
        reader.add(
            child(path, "name"),
            f"must be a non-empty single line of text, not {describe(name)}",
            "write it like name: recorder",
        )

    destinations: list[IPNetwork | str] | None = None
    raw_to = rule.get("to")
    if raw_to is None:
        reader.add(
            child(path, "to"),
            "is missing",
            "list where the devices may connect, e.g. to: [10.20.0.2/32] or to: [ntp.example.com]",
        )
    elif isinstance(raw_to, list | tuple) and not raw_to:
        reader.add(
            child(path, "to"), "is empty", "list at least one network or name, e.g. to: [10.20.0.2/32]"
        )
    else:
        destinations = reader.items(raw_to, child(path, "to"), "[10.20.0.2/32]", _parse_destination)

    ports: frozenset[tuple[int, str]] | None = None
    raw_ports = rule.get("ports")
    if isinstance(raw_ports, list | tuple) and not raw_ports:
        reader.add(
            child(path, "ports"),
            "is empty, which would allow no port at all",
            "list ports, e.g. [53/udp], or leave 'ports' out to allow any port",
        )
    elif raw_ports is not None:
        parsed = reader.items(raw_ports, child(path, "ports"), "[53/udp, 443/tcp]", _parse_port)
        ports = frozenset(pair for pairs in parsed or () for pair in pairs)

    if len(reader.problems) != before or not isinstance(name, str) or destinations is None:
        return None
    networks = tuple(d for d in destinations if not isinstance(d, str))
    names = tuple(dict.fromkeys(d for d in destinations if isinstance(d, str)))
    return AllowRule(name=name.strip(), networks=networks, ports=ports, names=names)


def _parse_monitored(value: object, reader: Reader) -> tuple[list[IPNetwork], frozenset[str]]:
    """Monitored networks and watched vendors; vendors left out mean the default watch list."""
    networks: list[IPNetwork] = []
    vendors = DEFAULT_WATCHED_VENDORS
    section = reader.as_mapping(value, "monitored", "a mapping", "monitored: {networks: [10.20.0.0/24]}")
    if section is None:
        return networks, vendors
    reader.keys(section, "monitored", _MONITORED_KEYS, {})
    raw_networks, raw_vendors = section.get("networks"), section.get("vendors")
    if raw_networks is not None:
        networks = reader.items(raw_networks, "monitored.networks", "[10.20.0.0/24]", _parse_network) or []
    if raw_vendors is not None:
        parsed = reader.items(raw_vendors, "monitored.vendors", "[hikvision, dahua]", _parse_vendor)
        vendors = frozenset(parsed or ())
        if isinstance(raw_vendors, list | tuple) and not raw_vendors and not raw_networks:
            reader.add(
                "monitored",
                "watches nothing: no networks and an empty vendor list",
                "list camera networks under monitored.networks or vendors under monitored.vendors",
            )
    return networks, vendors


def _parse_rules(value: object, reader: Reader) -> list[AllowRule]:
    raw_rules = reader.as_list(value, "allow", "[{name: recorder, to: [10.20.0.2/32]}]")
    rules: list[AllowRule] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_rules or ()):
        path = f"allow[{index}]"
        rule = _parse_rule(raw, path, reader)
        if rule is not None:
            rules.append(rule)
        raw_name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(raw_name, str) and raw_name.strip():
            # Names go into alert messages; two rules with one name make an alert ambiguous.
            key = raw_name.strip().casefold()
            if key in seen:
                reader.add(
                    f"{path}.name",
                    f"'{short(raw_name.strip())}' is already the name of allow[{seen[key]}]",
                    "give each rule its own name (names are compared ignoring case)",
                )
            else:
                seen[key] = index
    return rules


def _build(data: object, reader: Reader) -> SitePolicy | None:
    """Validate ``data`` into a policy, recording every problem; ``None`` if any was found."""
    before = len(reader.problems)  # the reader may hold problems of an enclosing document already
    if data is None:
        reader.add("", "the policy is empty", "start it with 'site: <name>', e.g. site: depot-7")
        return None
    top = reader.as_mapping(data, "", "a mapping of policy keys", "'site: depot-7' on the first line")
    if top is None:
        return None
    reader.keys(top, "", _TOP_KEYS, _KEY_HINTS[""])

    site: str | None = None
    if top.get("site") is None:
        reader.add("site", "is missing; a policy file must name its site", "add a line like site: depot-7")
    else:
        site = _parse_site(top["site"], reader)

    networks: list[IPNetwork] = []
    vendors = DEFAULT_WATCHED_VENDORS
    if top.get("monitored") is not None:
        networks, vendors = _parse_monitored(top["monitored"], reader)

    resolvers: list[IPAddress] | None = []
    if top.get("resolvers") is not None:
        resolvers = reader.items(top["resolvers"], "resolvers", "[10.20.0.1]", _parse_address)
    viewers: list[IPAddress] | None = []
    if top.get("viewers") is not None:
        viewers = reader.items(top["viewers"], "viewers", "[10.20.0.2]", _parse_address)

    rules = _parse_rules(top["allow"], reader) if top.get("allow") is not None else []

    allow_private = reader.boolean(top, "", "allow_private", False, "write allow_private: true (no quotes)")
    name_grace = reader.seconds(top, "", "name_grace", DEFAULT_NAME_GRACE_S, 0, MAX_NAME_GRACE_S)

    known: list[int] | None = []
    if top.get("known_devices") is not None:
        example = "[44:19:b6:00:00:01]"
        known = reader.items(top["known_devices"], "known_devices", example, _parse_mac)

    if len(reader.problems) != before or site is None:
        return None
    return SitePolicy(
        site=site,
        monitored_networks=tuple(networks),
        watched_vendors=vendors,
        resolvers=frozenset(resolvers or ()),
        viewers=frozenset(viewers or ()),
        allow=tuple(rules),
        allow_private=allow_private,
        known_devices=frozenset(known or ()),
        is_default=False,
        name_grace_s=name_grace,
    )
