"""The allow rules' index gives exactly the answer of a scan of the rules in policy order (issue 16).

The reference below reads each rule as docs/policy.md says it: inside one of its networks or resolved from
one of its names, and on one of its ports if it lists any; the first such rule in policy order names the
reason. Networks, names and ports come from small sets so that rules overlap a lot.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.policy import AllowRule, IPAddress, IPNetwork, SitePolicy

_NETWORKS = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/0",
        "203.0.0.0/16",
        "203.0.113.0/24",
        "203.0.113.0/28",
        "203.0.113.8/29",
        "203.0.113.4/32",
        "203.0.113.5/32",
        "198.51.100.0/24",
        "::/0",
        "2001:db8::/32",
        "2001:db8::/64",
        "2001:db8::4/128",
    )
]
_ADDRESSES = [
    ipaddress.ip_address(a)
    for a in (
        "203.0.113.4",
        "203.0.113.5",
        "203.0.113.9",
        "203.0.113.200",
        "203.0.7.1",
        "198.51.100.1",
        "192.0.2.1",
        "2001:db8::4",
        "2001:db8::5",
        "2001:db8:1::1",
        "2a00::1",
    )
]
_PATTERNS = [
    "a.example.com",
    "*.example.com",
    "b.a.example.com",
    "*.a.example.com",
    "example.com",
    "*.other.org",
]
_NAMES = [
    "a.example.com",
    "b.a.example.com",
    "c.example.com",
    "example.com",
    "x.other.org",
    "other.org",
    "z.net",
]
_PORTS = [(53, "udp"), (53, "tcp"), (123, "udp"), (443, "tcp"), (8443, "tcp")]

_rule = st.tuples(
    st.lists(st.sampled_from(_NETWORKS), max_size=3),
    st.lists(st.sampled_from(_PATTERNS), max_size=2, unique=True),
    st.one_of(st.none(), st.frozensets(st.sampled_from(_PORTS), min_size=1, max_size=3)),
).filter(lambda r: bool(r[0] or r[1]))


def _policy(specs: list[tuple[list[IPNetwork], list[str], frozenset[tuple[int, str]] | None]]) -> SitePolicy:
    rules = tuple(
        AllowRule(f"rule {i}", tuple(nets), ports, tuple(names))
        for i, (nets, names, ports) in enumerate(specs)
    )
    return SitePolicy(site="s", allow=rules, watched_vendors=frozenset())


def _reference(
    policy: SitePolicy, addr: IPAddress, port: int, transport: str, names: list[str]
) -> tuple[bool, str | None]:
    def name_ok(pattern: str, name: str) -> bool:
        return name.endswith(pattern[1:]) if pattern.startswith("*.") else name == pattern

    for rule in policy.allow:
        if rule.ports is not None and (port, transport) not in rule.ports:
            continue
        if any(addr.version == n.version and addr in n for n in rule.networks) or any(
            name_ok(p, n) for p in rule.names for n in names
        ):
            return True, rule.name
    return False, None


@settings(max_examples=600, deadline=None)
@given(
    st.lists(_rule, min_size=1, max_size=25),
    st.sampled_from(_ADDRESSES),
    st.sampled_from([53, 123, 443, 8443, 8080]),
    st.sampled_from(["tcp", "udp", "TCP", "sctp", "icmp"]),
    st.lists(st.sampled_from(_NAMES), max_size=3),
)
def test_the_index_answers_like_a_scan_in_policy_order(
    specs: list[tuple[list[IPNetwork], list[str], frozenset[tuple[int, str]] | None]],
    addr: IPAddress,
    port: int,
    transport: str,
    names: list[str],
) -> None:
    policy = _policy(specs)
    expected = _reference(policy, addr, port, transport.lower(), names)
    assert policy.egress_allowed(addr, port, transport, names=names) == expected
    assert policy.egress_allowed(int(addr), port, transport, addr.version, names) == expected
    # Each rule alone agrees with the reference too.
    for rule in policy.allow:
        alone = _reference(
            _policy([(list(rule.networks), list(rule.names), rule.ports)]),
            addr,
            port,
            transport.lower(),
            names,
        )[0]
        assert rule.allows(addr, port, transport, names=names) == alone
    # Could a name allow this port at all? Only if some name rule lists it (or any port).
    key_ports = [r.ports for r in policy.allow if r.names]
    assert policy.names_may_allow(port, transport) == any(
        p is None or (port, transport.lower()) in p for p in key_ports
    )


def test_many_overlapping_rules_answer_with_the_first() -> None:
    # 1,000 rules that all cover 203.0.113.7: the first that lists the port wins, whatever the prefix.
    specs: list[tuple[list[IPNetwork], list[str], frozenset[tuple[int, str]] | None]] = []
    for i in range(1000):
        net = ipaddress.ip_network(f"203.0.113.7/{32 - i % 25}", strict=False)
        specs.append(([net], [], frozenset({(1000 + i, "tcp")})))
    policy = _policy(specs)
    assert policy.egress_allowed("203.0.113.7", 1500, "tcp") == (True, "rule 500")
    assert policy.egress_allowed("203.0.113.7", 1500, "udp") == (False, None)
    assert policy.egress_allowed("203.0.113.7", 2000, "tcp") == (False, None)
