"""Tests for monitor.policy: the site policy model, its egress decision and its validation."""

from __future__ import annotations

import ipaddress
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.policy import (
    DEFAULT_WATCHED_VENDORS,
    KNOWN_VENDOR_KEYS,
    AllowRule,
    FieldProblem,
    PolicyError,
    SitePolicy,
)

# Exactly the example of docs/design.md §4.7, comments included.
POLICY_EXAMPLE = """\
site: depot-7
monitored:
  networks: [10.20.0.0/24]          # devices here are watched; traffic between these networks is site-internal
  vendors: [hikvision, dahua, ezviz, uniview, xiongmai]   # devices of these vendors are watched wherever they are
resolvers: [10.20.0.1]              # the site's DNS resolvers; DNS to anything else is a bypass
viewers: [10.20.0.2]                # who may pull video (RTSP) from watched devices: the recorder, the VMS
allow:                              # where watched devices may connect outside the monitored networks
  - name: recorder
    to: [10.20.0.2/32]
  - name: gateway services
    to: [10.20.0.1/32]
    ports: [53/udp, 123/udp]        # optional; default any port
"""  # noqa: E501  (verbatim from docs/design.md §4.7)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def problems_of(data: object) -> list[FieldProblem]:
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_mapping(data, source="test.yaml")
    return info.value.problems


def minimal(**extra: Any) -> dict[str, Any]:
    return {"site": "depot-7", "monitored": {"networks": ["10.20.0.0/24"]}, **extra}


def one_rule(**fields: Any) -> dict[str, Any]:
    """A minimal policy whose single allow rule has these fields on top of a valid name and 'to'."""
    return minimal(allow=[{"name": "a", "to": ["192.0.2.1"], **fields}])


# --------------------------------------------------------------------------------------------------
# Default policy


@pytest.mark.parametrize(
    ("ip", "allowed", "reason"),
    [
        ("10.1.2.3", True, "private"),
        ("172.16.0.1", True, "private"),
        ("172.31.255.254", True, "private"),
        ("192.168.1.10", True, "private"),
        ("100.64.0.1", True, "private"),
        ("fd12:3456::1", True, "private"),
        ("169.254.10.10", True, "link-local"),
        ("fe80::1", True, "link-local"),
        ("127.0.0.1", True, "loopback"),
        ("::1", True, "loopback"),
        ("ff02::fb", True, "multicast"),
        ("239.255.255.250", True, "multicast"),
        ("224.0.0.251", True, "multicast"),
        ("255.255.255.255", True, "broadcast"),
        ("203.0.113.7", False, None),
        ("8.8.8.8", False, None),
        ("114.114.114.114", False, None),
        ("172.32.0.1", False, None),  # just outside 172.16/12
        ("100.128.0.1", False, None),  # just outside 100.64/10
        ("2001:db8::1", False, None),
        ("2606:4700::1111", False, None),
    ],
)
def test_default_policy_egress_table(ip: str, allowed: bool, reason: str | None) -> None:
    assert SitePolicy.default().egress_allowed(ip, 443, "tcp") == (allowed, reason)


def test_default_policy_shape() -> None:
    policy = SitePolicy.default()
    assert policy.is_default
    assert policy.site == "default"
    assert policy.monitored_networks == ()
    assert policy.watched_vendors == DEFAULT_WATCHED_VENDORS
    assert policy.watched_vendors == {"hikvision", "dahua", "ezviz", "imou", "uniview", "xiongmai", "tiandy"}
    assert set(KNOWN_VENDOR_KEYS) >= DEFAULT_WATCHED_VENDORS
    assert policy.allow_private
    assert policy.resolvers == frozenset() and policy.viewers == frozenset()
    # No resolvers/viewers configured: nothing is a resolver or a viewer (callers check the sets).
    assert not policy.is_resolver("10.20.0.1")
    assert not policy.is_viewer("10.20.0.2")
    assert not policy.is_monitored_ip("10.20.0.11")


def test_default_policy_watches_by_vendor_only() -> None:
    policy = SitePolicy.default()
    assert policy.is_watched("10.20.0.11", "hikvision")
    assert policy.is_watched("192.168.1.5", "tiandy")
    assert not policy.is_watched("10.20.0.11", "axis")
    assert not policy.is_watched("10.20.0.11", None)


# --------------------------------------------------------------------------------------------------
# The docs/design.md §4.7 example


def test_design_example_loads() -> None:
    policy = SitePolicy.from_yaml(POLICY_EXAMPLE, "depot.yaml")
    assert policy.site == "depot-7"
    assert not policy.is_default
    assert not policy.allow_private
    assert policy.monitored_networks == (ipaddress.ip_network("10.20.0.0/24"),)
    assert policy.watched_vendors == {"hikvision", "dahua", "ezviz", "uniview", "xiongmai"}
    assert policy.resolvers == {ipaddress.ip_address("10.20.0.1")}
    assert policy.viewers == {ipaddress.ip_address("10.20.0.2")}
    assert policy.allow == (
        AllowRule("recorder", (ipaddress.ip_network("10.20.0.2/32"),), None),
        AllowRule(
            "gateway services",
            (ipaddress.ip_network("10.20.0.1/32"),),
            frozenset({(53, "udp"), (123, "udp")}),
        ),
    )
    assert policy == SitePolicy.from_mapping(
        {
            "site": "depot-7",
            "monitored": {
                "networks": ["10.20.0.0/24"],
                "vendors": ["hikvision", "dahua", "ezviz", "uniview", "xiongmai"],
            },
            "resolvers": ["10.20.0.1"],
            "viewers": ["10.20.0.2"],
            "allow": [
                {"name": "recorder", "to": ["10.20.0.2/32"]},
                {"name": "gateway services", "to": ["10.20.0.1/32"], "ports": ["53/udp", "123/udp"]},
            ],
        }
    )


@pytest.mark.parametrize(
    ("ip", "allowed", "reason"),
    [
        ("10.20.0.77", True, "monitored network"),
        ("10.20.0.2", True, "monitored network"),  # inside the monitored network before any rule
        ("10.20.0.255", True, "broadcast"),  # directed broadcast of the monitored /24
        ("255.255.255.255", True, "broadcast"),
        ("239.255.255.250", True, "multicast"),  # SSDP / SADP
        ("239.255.255.251", True, "multicast"),  # DHIP
        ("ff02::fb", True, "multicast"),
        ("169.254.1.1", True, "link-local"),
        ("fe80::1", True, "link-local"),
        ("10.30.0.5", False, None),  # private but outside the site: explicit policy, no allow_private
        ("192.168.1.1", False, None),
        ("203.0.113.7", False, None),
        ("2001:db8::1", False, None),
    ],
)
def test_design_example_egress(ip: str, allowed: bool, reason: str | None) -> None:
    policy = SitePolicy.from_yaml(POLICY_EXAMPLE)
    assert policy.egress_allowed(ip, 8666, "tcp") == (allowed, reason)


def test_design_example_roles_and_watch() -> None:
    policy = SitePolicy.from_yaml(POLICY_EXAMPLE)
    assert policy.is_resolver("10.20.0.1") and not policy.is_resolver("8.8.8.8")
    assert policy.is_viewer("10.20.0.2") and not policy.is_viewer("10.20.0.3")
    assert policy.is_monitored_ip("10.20.0.11") and not policy.is_monitored_ip("10.21.0.11")
    assert policy.is_watched("10.20.0.11", None)  # by network
    assert policy.is_watched("192.168.5.5", "dahua")  # by vendor, anywhere
    assert not policy.is_watched("192.168.5.5", "tiandy")  # not on this site's list
    assert not policy.is_watched("192.168.5.5", None)


# --------------------------------------------------------------------------------------------------
# Allow rules, ports, private space


def ntp_policy(**extra: Any) -> SitePolicy:
    return SitePolicy.from_mapping(
        minimal(
            allow=[
                {"name": "ntp", "to": ["192.0.2.0/24", "2001:db8::/32"], "ports": ["123/udp"]},
                {"name": "vms", "to": ["198.51.100.10"], "ports": [443, "8443", "554/TCP"]},
                {"name": "partner", "to": ["203.0.113.0/28"]},
            ],
            **extra,
        )
    )


@pytest.mark.parametrize(
    ("ip", "port", "transport", "expected"),
    [
        ("192.0.2.5", 123, "udp", (True, "ntp")),
        ("192.0.2.5", 123, "tcp", (False, None)),
        ("192.0.2.5", 124, "udp", (False, None)),
        ("2001:db8::123", 123, "udp", (True, "ntp")),
        ("198.51.100.10", 443, "tcp", (True, "vms")),  # bare port: tcp and udp
        ("198.51.100.10", 443, "udp", (True, "vms")),
        ("198.51.100.10", 8443, "TCP", (True, "vms")),  # transport case does not matter
        ("198.51.100.10", 554, "tcp", (True, "vms")),
        ("198.51.100.10", 554, "udp", (False, None)),
        ("198.51.100.11", 443, "tcp", (False, None)),
        ("203.0.113.15", 31006, "tcp", (True, "partner")),  # no ports: any port, any transport
        ("203.0.113.15", 0, "icmp", (True, "partner")),
        ("203.0.113.16", 31006, "tcp", (False, None)),
    ],
)
def test_allow_rules_with_ports(
    ip: str, port: int, transport: str, expected: tuple[bool, str | None]
) -> None:
    assert ntp_policy().egress_allowed(ip, port, transport) == expected


def test_allow_rule_ports_representation() -> None:
    rules = ntp_policy().allow
    assert rules[0].ports == frozenset({(123, "udp")})
    assert rules[1].ports == frozenset(
        {(443, "tcp"), (443, "udp"), (8443, "tcp"), (8443, "udp"), (554, "tcp")}
    )
    assert rules[1].networks == (ipaddress.ip_network("198.51.100.10/32"),)  # a bare address is a /32
    assert rules[2].ports is None
    assert rules[0].allows("192.0.2.1", 123, "udp") and not rules[0].allows("192.0.2.1", 123, "tcp")


def test_allow_private_is_explicit_with_a_policy() -> None:
    assert ntp_policy().egress_allowed("10.30.0.5", 80, "tcp") == (False, None)
    opened = ntp_policy(allow_private=True)
    assert opened.allow_private
    assert opened.egress_allowed("10.30.0.5", 80, "tcp") == (True, "private")
    assert opened.egress_allowed("fd00::5", 80, "tcp") == (True, "private")
    assert opened.egress_allowed("10.20.0.5", 80, "tcp") == (True, "monitored network")  # longest prefix
    assert opened.egress_allowed("203.0.113.99", 80, "tcp") == (False, None)
    assert SitePolicy.from_mapping(minimal(allow_private=False)).egress_allowed("10.30.0.5", 80, "tcp") == (
        False,
        None,
    )


def test_directed_broadcast_only_for_networks_that_have_one() -> None:
    policy = SitePolicy.from_mapping(
        {"site": "s", "monitored": {"networks": ["10.20.0.0/24", "192.0.2.0/31", "198.51.100.7/32"]}}
    )
    assert policy.egress_allowed("10.20.0.255", 67, "udp") == (True, "broadcast")
    # /31 and /32 have no broadcast address, but they are monitored, hence internal anyway.
    assert policy.egress_allowed("192.0.2.1", 67, "udp") == (True, "monitored network")
    assert policy.egress_allowed("10.21.0.255", 67, "udp") == (False, None)


def test_vendors_default_and_explicit_empty() -> None:
    assert SitePolicy.from_mapping(minimal()).watched_vendors == DEFAULT_WATCHED_VENDORS
    policy = SitePolicy.from_mapping(
        {"site": "s", "monitored": {"networks": ["10.20.0.0/24"], "vendors": []}}
    )
    assert policy.watched_vendors == frozenset()
    assert not policy.is_watched("192.168.1.1", "hikvision")


def test_unknown_but_well_formed_vendor_is_allowed_and_listed() -> None:
    policy = SitePolicy.from_mapping(minimal(monitored={"vendors": ["hikvision", "acme-cam", "hikvison"]}))
    assert policy.watched_vendors == {"hikvision", "acme-cam", "hikvison"}
    assert policy.unknown_vendors == {"acme-cam", "hikvison"}


def test_ipv6_monitored_network() -> None:
    policy = SitePolicy.from_mapping({"site": "s", "monitored": {"networks": ["2001:db8:20::/64"]}})
    assert policy.is_monitored_ip("2001:db8:20::11")
    assert policy.egress_allowed("2001:db8:20::1", 80, "tcp") == (True, "monitored network")
    assert policy.egress_allowed("2001:db8:21::1", 80, "tcp") == (False, None)
    assert not policy.is_monitored_ip("10.20.0.1")


# --------------------------------------------------------------------------------------------------
# Address forms on the hot path


def test_int_str_and_object_addresses_agree() -> None:
    policy = SitePolicy.from_yaml(POLICY_EXAMPLE)
    for text in ["10.20.0.11", "10.21.0.11", "239.255.255.250", "203.0.113.7", "fe80::1", "2001:db8::1"]:
        obj = ipaddress.ip_address(text)
        as_int = int(obj)
        assert policy.is_monitored_ip(text) == policy.is_monitored_ip(obj)
        assert policy.is_monitored_ip(as_int, obj.version) == policy.is_monitored_ip(obj)
        assert policy.egress_allowed(as_int, 80, "tcp", obj.version) == policy.egress_allowed(text, 80, "tcp")
        assert policy.is_resolver(as_int, obj.version) == policy.is_resolver(obj)


def test_int_address_defaults_to_ipv4_and_version_matters() -> None:
    policy = SitePolicy.from_yaml(POLICY_EXAMPLE)
    v4 = int(ipaddress.IPv4Address("10.20.0.11"))
    assert policy.is_monitored_ip(v4)
    assert not policy.is_monitored_ip(v4, 6)  # ::a14:b is not in 10.20.0.0/24


def test_numpy_style_integers_are_accepted() -> None:
    class IndexLike:
        def __index__(self) -> int:
            return int(ipaddress.IPv4Address("10.20.0.11"))

    assert SitePolicy.from_yaml(POLICY_EXAMPLE).is_monitored_ip(IndexLike())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ip", "version", "error"),
    [
        ("not-an-ip", 4, ValueError),
        (-1, 4, ValueError),
        (1 << 32, 4, ValueError),
        (1 << 128, 6, ValueError),
        (1, 5, ValueError),
        (True, 4, TypeError),
        (1.5, 4, TypeError),
        (None, 4, TypeError),
    ],
)
def test_bad_addresses_raise_precise_errors(ip: object, version: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        SitePolicy.default().is_monitored_ip(ip, version)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Validation: each bad field gets its path and a fix


BAD_FIELDS: list[tuple[str, dict[Any, Any], str, str]] = [
    # (id, data, expected field path, text the fix must contain)
    ("networks as a string", minimal(monitored={"networks": "10.20.0.0/24"}), "monitored.networks",
     "write a list: [10.20.0.0/24]"),
    ("host bits set", minimal(monitored={"networks": ["10.20.0.5/24"]}), "monitored.networks[0]",
     "did you mean 10.20.0.0/24?"),
    ("bad prefix", minimal(monitored={"networks": ["10.20.0.0/33"]}), "monitored.networks[0]",
     "prefix length"),
    ("host name as monitored network", minimal(monitored={"networks": ["cams.example.com"]}),
     "monitored.networks[0]", "an allow rule's 'to'"),
    ("name with a port", minimal(allow=[{"name": "x", "to": ["cloud.example.com:8443"]}]),
     "allow[0].to[0]", "ports: [8443/tcp]"),
    ("wildcard inside a name", minimal(allow=[{"name": "x", "to": ["a*.example.com"]}]),
     "allow[0].to[0]", "*.example.com"),
    ("wildcard of a top-level domain", minimal(allow=[{"name": "x", "to": ["*.com"]}]),
     "allow[0].to[0]", "name a domain"),
    ("wildcard alone", minimal(allow=[{"name": "x", "to": ["*"]}]), "allow[0].to[0]", "0.0.0.0/0"),
    ("single-label name", minimal(allow=[{"name": "x", "to": ["recorder"]}]), "allow[0].to[0]",
     "ntp.example.com"),
    ("name with a space", minimal(allow=[{"name": "x", "to": ["ntp example.com"]}]), "allow[0].to[0]",
     "letters, digits and '-'"),
    ("name not ascii", minimal(allow=[{"name": "x", "to": ["zürich.example.com"]}]), "allow[0].to[0]",
     "xn--"),
    ("name with empty label", minimal(allow=[{"name": "x", "to": ["ntp..example.com"]}]), "allow[0].to[0]",
     "ntp.example.com"),
    ("name too long", minimal(allow=[{"name": "x", "to": [("a" * 60 + ".") * 5 + "com"]}]),
     "allow[0].to[0]", "ntp.example.com"),
    ("label too long", minimal(allow=[{"name": "x", "to": ["a" * 64 + ".example.com"]}]),
     "allow[0].to[0]", "ntp.example.com"),
    ("numeric last label", minimal(allow=[{"name": "x", "to": ["cam.10"]}]), "allow[0].to[0]",
     "203.0.113.0/24"),
    ("name_grace as text", minimal(name_grace="soon"), "name_grace", "1h"),
    ("name_grace too long", minimal(name_grace="30d"), "name_grace", "from 0s to 7d"),
    ("network as a number", minimal(monitored={"networks": [10]}), "monitored.networks[0]", "10.20.0.0/24"),
    ("bad resolver ip", minimal(resolvers=["10.20.0.300"]), "resolvers[0]", "10.20.0.1"),
    ("resolver as network", minimal(resolvers=["10.20.0.1/32"]), "resolvers[0]", "10.20.0.1"),
    ("viewers not a list", minimal(viewers="10.20.0.2"), "viewers", "write a list: [10.20.0.2]"),
    ("bad viewer ip", minimal(viewers=["10.20.0.2", "recorder"]), "viewers[1]", "10.20.0.1"),
    ("port out of range",
     minimal(allow=[{"name": "a", "to": ["192.0.2.1"]},
                    {"name": "b", "to": ["192.0.2.2"], "ports": [70000]}]),
     "allow[1].ports[0]", "between 1 and 65535"),
    ("port zero", one_rule(ports=["0/udp"]), "allow[0].ports[0]",
     "between 1 and 65535"),
    ("huge port digits", one_rule(ports=["9" * 5000]),
     "allow[0].ports[0]", "between 1 and 65535"),
    ("unknown transport", one_rule(ports=["53/icmp"]),
     "allow[0].ports[0]", "use tcp or udp"),
    ("port syntax", one_rule(ports=["http"]), "allow[0].ports[0]",
     "53/udp"),
    ("port range", one_rule(ports=["8000-8010/tcp"]),
     "allow[0].ports[0]", "list each port"),
    ("port as bool", one_rule(ports=[True]), "allow[0].ports[0]",
     "53/udp"),
    ("port as float", one_rule(ports=[53.0]), "allow[0].ports[0]",
     "53/udp"),
    ("empty ports", one_rule(ports=[]), "allow[0].ports",
     "leave 'ports' out"),
    ("ports not a list", one_rule(ports="53/udp"),
     "allow[0].ports", "write a list: [53/udp]"),
    ("unknown top-level key", minimal(alow=[]), "alow", "did you mean 'allow'?"),
    ("unknown key typo", minimal(resolver=["10.20.0.1"]), "resolver", "did you mean 'resolvers'?"),
    ("misplaced networks", {"site": "s", "networks": ["10.20.0.0/24"]}, "networks", "under 'monitored:'"),
    ("unknown monitored key", minimal(monitored={"network": ["10.20.0.0/24"]}), "monitored.network",
     "did you mean 'networks'?"),
    ("unknown rule key", one_rule(port=[53]), "allow[0].port",
     "did you mean 'ports'?"),
    ("rule with networks", one_rule(networks=["192.0.2.2"]),
     "allow[0].networks", "did you mean 'to'?"),
    ("non-string key", {"site": "s", 7: "x"}, "7", "remove it"),
    ("missing site", {"monitored": {"networks": ["10.20.0.0/24"]}}, "site", "site: depot-7"),
    ("empty site", {"site": "  "}, "site", "depot-7"),
    ("site with slash", {"site": "depot/7"}, "site", "'depot-7'"),
    ("site with plus", {"site": "depot+7"}, "site", "'depot-7'"),
    ("site with hash", {"site": "depot#7"}, "site", "'depot-7'"),
    ("site with space", {"site": "depot 7"}, "site", "'depot-7'"),
    ("site with newline", {"site": "depot\n7"}, "site", "'depot-7'"),
    ("site as number", {"site": 7}, "site", 'site: "7"'),
    ("site as list", {"site": ["a"]}, "site", "site: depot-7"),
    ("duplicate rule names",
     minimal(allow=[{"name": "recorder", "to": ["10.20.0.2"]}, {"name": "Recorder", "to": ["10.20.0.3"]}]),
     "allow[1].name", "its own name"),
    ("rule missing name", minimal(allow=[{"to": ["10.20.0.2"]}]), "allow[0].name", "name: recorder"),
    ("rule name not text", minimal(allow=[{"name": 5, "to": ["10.20.0.2"]}]), "allow[0].name",
     "name: recorder"),
    ("rule missing to", minimal(allow=[{"name": "a"}]), "allow[0].to", "to: [10.20.0.2/32]"),
    ("rule empty to", minimal(allow=[{"name": "a", "to": []}]), "allow[0].to", "at least one network"),
    ("rule not a mapping", minimal(allow=["10.20.0.2"]), "allow[0]", "name: recorder"),
    ("allow not a list", minimal(allow={"name": "a", "to": ["10.20.0.2"]}), "allow", "write a list"),
    ("vendor capitalised", minimal(monitored={"vendors": ["Hikvision"]}), "monitored.vendors[0]",
     "use the lowercase canonical key 'hikvision'"),
    ("vendor with space", minimal(monitored={"vendors": ["hik vision"]}), "monitored.vendors[0]",
     "use the lowercase canonical key 'hikvision'"),
    ("vendor unknown shape", minimal(monitored={"vendors": ["ACME Cam!"]}), "monitored.vendors[0]",
     "use the lowercase canonical key, e.g. "),
    ("vendor not text", minimal(monitored={"vendors": [3]}), "monitored.vendors[0]",
     "use the lowercase canonical key, e.g. 'hikvision'"),
    ("monitored not a mapping", minimal(monitored=["10.20.0.0/24"]), "monitored", "networks:"),
    ("watches nothing", {"site": "s", "monitored": {"vendors": []}}, "monitored", "monitored.networks"),
    ("allow_private as text", minimal(allow_private="yes"), "allow_private", "allow_private: true"),
    ("allow_private as number", minimal(allow_private=1), "allow_private", "allow_private: true"),
    ("known device not a MAC", minimal(known_devices=["44:19:b6:00:01"]), "known_devices[0]",
     "44:19:b6:00:00:01"),
    ("known device not text", minimal(known_devices=[441]), "known_devices[0]", "44:19:b6:00:00:01"),
    ("known_devices not a list", minimal(known_devices="44:19:b6:00:00:01"), "known_devices",
     "write a list"),
    ("asset register misnamed", minimal(devices=["44:19:b6:00:00:01"]), "devices",
     "did you mean 'known_devices'?"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "path", "fix"), [pytest.param(d, p, f, id=i) for i, d, p, f in BAD_FIELDS])
def test_each_bad_field_is_named_with_a_fix(data: dict[Any, Any], path: str, fix: str) -> None:
    problems = problems_of(data)
    assert [p.field for p in problems] == [path], problems
    assert fix in problems[0].fix, problems[0]
    assert problems[0].problem


@pytest.mark.parametrize(("data", "what"), [(None, "empty"), ([1, 2], "mapping"), ("site: x", "mapping")])
def test_top_level_must_be_a_mapping(data: object, what: str) -> None:
    problems = problems_of(data)
    assert len(problems) == 1 and problems[0].field == ""
    assert what in problems[0].problem
    assert "site: depot-7" in problems[0].fix


def test_all_problems_are_reported_at_once() -> None:
    data = {
        "site": "depot/7",
        "monitored": {"networks": "10.20.0.0/24", "vendors": ["Dahua", "ok-vendor"]},
        "resolvers": ["10.20.0.1", "dns.example"],
        "alow": [],
        "allow": [
            {"name": "a", "to": ["10.20.0.5/24"], "ports": [70000, "53/udp"]},
            {"name": "a", "to": ["192.0.2.1"]},
        ],
        "allow_private": "no",
    }
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_mapping(data, source="depot.yaml")
    error = info.value
    assert [p.field for p in error.problems] == [
        "alow",
        "site",
        "monitored.networks",
        "monitored.vendors[0]",
        "resolvers[1]",
        "allow[0].to[0]",
        "allow[0].ports[0]",
        "allow[1].name",
        "allow_private",
    ]
    lines = str(error).splitlines()
    assert len(lines) == len(error.problems)
    for line, problem in zip(lines, error.problems, strict=True):
        assert line == f"depot.yaml: {problem.field}: {problem.problem}; {problem.fix}"
    assert isinstance(error, ValueError)
    assert error.source == "depot.yaml"


def test_policy_error_pickles_and_needs_problems() -> None:
    error = PolicyError([FieldProblem("site", "is missing", "add it")], "p.yaml")
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == error.problems and str(copy) == str(error) == "p.yaml: site: is missing; add it"
    with pytest.raises(ValueError):
        PolicyError([])


def test_messages_stay_on_one_line() -> None:
    problems = problems_of({"site": "a\nb\x00", "allow": [{"name": "x\ny", "to": ["1.2.3.4\n"]}]})
    text = str(PolicyError(problems))
    assert len(text.splitlines()) == len(problems) == 2  # the stripped "1.2.3.4\n" is a valid network


# --------------------------------------------------------------------------------------------------
# YAML: syntax errors, positions, duplicate keys


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("site: a\nallow: [\n", 3, 1),  # unclosed flow list
        ("site: a\nmonitored:\n  networks: [10.20.0.0/24\n  vendors: [x]\n", 3, 13),
        ("site: a\n\tallow: []\n", 2, 1),  # tab indentation
        ("site: a\nsite: b: c\n", 2, 8),
        ("site: 2024-13-01\n", 1, 7),  # a value YAML cannot construct
        ("site: a\x07\n", 1, 8),  # a character YAML does not allow
        ("site: !!python/object:os.system x\n", 1, 7),  # unsafe tags are refused
        ("---\nsite: a\n---\nsite: b\n", 3, 1),  # two documents
    ],
)
def test_yaml_syntax_error_names_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_yaml(text, "bad.yaml")
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (line, column)
    assert problem.field == ""
    assert str(info.value).startswith(f"bad.yaml:{line}:{column}: invalid YAML")
    assert problem.fix


def test_tab_error_says_use_spaces() -> None:
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_yaml("site: a\n\tallow: []\n")
    assert "spaces" in info.value.problems[0].fix


def test_yaml_field_problems_carry_positions() -> None:
    text = """\
site: depot-7
monitored:
  networks: [10.20.0.0/24]
allow:
  - name: recorder
    to: [10.20.0.2/32]
  - name: cloud
    to: [198.51.100.0/24]
    ports: [443/tcp, 70000]
  - name: missing-to
"""
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_yaml(text, "depot.yaml")
    problems = info.value.problems
    assert [(p.field, p.line, p.column) for p in problems] == [
        ("allow[1].ports[1]", 9, 22),
        ("allow[2].to", 10, 5),  # a missing field points at its rule
    ]
    assert str(info.value).splitlines()[0] == (
        "depot.yaml:9:22: allow[1].ports[1]: port 70000 is out of range; use a port between 1 and 65535"
    )


def test_yaml_duplicate_keys_are_reported() -> None:
    text = (
        "site: depot-7\nallow:\n  - {name: a, to: [192.0.2.1]}\n"
        "monitored: {networks: [10.20.0.0/24]}\nallow: []\n"
    )
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_yaml(text)
    (problem,) = info.value.problems
    assert (problem.field, problem.line, problem.column) == ("allow", 5, 1)
    assert "twice" in problem.problem


def test_yaml_missing_site_and_empty_document() -> None:
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_yaml("monitored: {networks: [10.20.0.0/24]}\n")
    assert [p.field for p in info.value.problems] == ["site"]
    for empty in ["", "# only a comment\n", "---\n"]:
        with pytest.raises(PolicyError) as info:
            SitePolicy.from_yaml(empty, "p.yaml")
        assert str(info.value).startswith("p.yaml: the policy is empty;")


def test_yaml_quirks_are_explained() -> None:
    # `site: 007` is a number in YAML, `allow_private: "true"` is text: both get a fix that says so.
    with pytest.raises(PolicyError) as info:
        SitePolicy.from_yaml('site: 007\nallow_private: "true"\nmonitored: {networks: [10.20.0.0/24]}\n')
    assert [(p.field, p.fix) for p in info.value.problems] == [
        ("site", 'quote it: site: "007"'),  # as written: YAML reads 007 as the integer 7
        ("allow_private", "write allow_private: true (no quotes)"),
    ]


def test_yaml_bytes_must_be_utf8_and_flat() -> None:
    assert SitePolicy.from_yaml(POLICY_EXAMPLE.encode()) == SitePolicy.from_yaml(POLICY_EXAMPLE)
    for data, message in [
        ("site: dépôt-7\n".encode("latin-1"), "p.yaml:1:8: is not UTF-8 text"),
        (POLICY_EXAMPLE.encode("utf-16"), "p.yaml: is UTF-16 text, not UTF-8; save it as UTF-8"),
        (
            b"site: a\nallow: " + b"[" * 100_000 + b"]" * 100_000,
            "p.yaml:2:107: the YAML is nested",
        ),
    ]:
        with pytest.raises(PolicyError) as info:
            SitePolicy.from_yaml(data, "p.yaml")
        assert str(info.value).startswith(message) and len(str(info.value).splitlines()) == 1


def test_unknown_vendors_are_warnings_of_the_policy_itself() -> None:
    policy = SitePolicy.from_yaml("site: a\nmonitored: {vendors: [hikvison, dahua, acme, lorex, lts]}\n")
    unknown = "monitored.vendors: '{}' is not a vendor camwatch knows; "
    assert policy.warnings == (
        unknown.format("acme") + "check the spelling (it matches no device yet)",
        # One letter off a known key: the key it most likely is.
        unknown.format("hikvison") + "did you mean 'hikvision'? (as written it matches no device)",
        # An OEM brand: its cameras are the maker's, and the inventory names the maker.
        unknown.format("lorex") + "Lorex cameras are usually made by Dahua and carry its MACs, so camwatch "
        "names them 'dahua': watch 'dahua' (as written it matches no device)",
        unknown.format("lts") + "LTS cameras are usually made by Hikvision and carry its MACs, so camwatch "
        "names them 'hikvision': watch 'hikvision' (as written it matches no device)",
    )
    assert SitePolicy.from_yaml(POLICY_EXAMPLE).warnings == () == SitePolicy.default().warnings


def test_yaml_ipv6_in_flow_lists_and_anchors() -> None:
    text = """\
site: lab
monitored:
  networks: &cams [10.20.0.0/24, fd00:20::/64]
allow:
  - name: peers
    to: *cams
  - name: mdns
    to: [ff02::fb/128]
"""
    policy = SitePolicy.from_yaml(text)
    assert policy.is_monitored_ip("fd00:20::5")
    assert policy.allow[0].networks == policy.monitored_networks


def test_docs_examples_load() -> None:
    """Every ```yaml block in docs/policy.md is a valid policy (bad examples use ```text)."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        SitePolicy.from_yaml(block, "docs/policy.md")


# --------------------------------------------------------------------------------------------------
# Property tests: validation never fails with anything but PolicyError


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        ["10.20.0.0/24", "10.20.0.5/24", "fe80::/10", "::1", "53/udp", "123", "443/tcp", "0/udp", "hikvision",
         "Dahua", "depot-7", "a/b", "", " ", "8000-8010/tcp", "999999999999", "1.2.3.4", "x.example"]
    ),
)  # fmt: skip
_keys = st.one_of(
    st.sampled_from(
        ["site", "monitored", "networks", "vendors", "resolvers", "viewers", "allow", "allow_private", "name",
         "to", "ports"]
    ),
    st.text(max_size=8),
    st.integers(),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(_keys, children, max_size=5),
    ),
    max_leaves=25,
)
_policies = st.fixed_dictionaries(
    {},
    optional={
        "site": _values,
        "monitored": st.one_of(
            _values,
            st.fixed_dictionaries({}, optional={"networks": _values, "vendors": _values}),
        ),
        "resolvers": _values,
        "viewers": _values,
        "allow": st.one_of(
            _values,
            st.lists(
                st.fixed_dictionaries({}, optional={"name": _values, "to": _values, "ports": _values}),
                max_size=3,
            ),
        ),
        "allow_private": _values,
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_values, _policies, st.dictionaries(_keys, _values, max_size=6)))
def test_random_mappings_raise_only_policy_error(data: object) -> None:
    try:
        policy = SitePolicy.from_mapping(data)
    except PolicyError as error:
        assert error.problems
        assert len(str(error).splitlines()) == len(error.problems)
        return
    # Whatever was accepted answers queries without error.
    policy.egress_allowed("203.0.113.7", 443, "tcp")
    policy.is_watched("10.20.0.11", "hikvision")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_yaml_text_raises_only_policy_error(text: str) -> None:
    try:
        SitePolicy.from_yaml(text)
    except PolicyError as error:
        assert error.problems


_INTERESTING = [
    ipaddress.ip_network(n, strict=False)
    for n in ["10.20.0.0/23", "10.0.0.0/8", "172.0.0.0/10", "192.168.0.0/16", "100.0.0.0/8", "127.0.0.0/8",
              "169.254.0.0/16", "224.0.0.0/3", "255.255.255.0/24", "192.0.2.0/24", "198.51.100.0/28",
              "203.0.113.0/27", "fc00::/6", "fe80::/8", "ff00::/8", "::/120", "2001:db8::/32"]
]  # fmt: skip
_addresses = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address),
    st.builds(
        lambda net, offset: net[offset % net.num_addresses],
        st.sampled_from(_INTERESTING),
        st.integers(min_value=0, max_value=2**32),
    ),
)


def reference_egress(
    policy: SitePolicy, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, transport: str
) -> bool:
    """The egress rules read straight from docs/policy.md, with ipaddress and no precomputation."""

    def inside(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        return net.version == addr.version and addr in net

    private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]
    return (
        addr.is_multicast
        or addr.is_loopback
        or addr.is_link_local
        or addr == ipaddress.ip_address("255.255.255.255")
        or any(
            addr == n.broadcast_address
            for n in policy.monitored_networks
            if n.version == 4 and n.prefixlen <= 30
        )
        or any(inside(n) for n in policy.monitored_networks)
        or (policy.allow_private and any(inside(ipaddress.ip_network(n)) for n in private))
        or any(
            inside(n) and (rule.ports is None or (port, transport) in rule.ports)
            for rule in policy.allow
            for n in rule.networks
        )
    )


@settings(max_examples=500)
@given(_addresses, st.sampled_from([(123, "udp"), (123, "tcp"), (443, "tcp"), (8443, "udp"), (554, "udp")]))
def test_egress_matches_a_slow_reference(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port_transport: tuple[int, str]
) -> None:
    """The precomputed integer tables agree with a plain reading of the rules, for every input form."""
    port, transport = port_transport
    for policy in (SitePolicy.default(), ntp_policy(), ntp_policy(allow_private=True)):
        expected = reference_egress(policy, addr, port, transport)
        assert policy.egress_allowed(addr, port, transport)[0] == expected
        assert policy.egress_allowed(str(addr), port, transport)[0] == expected
        assert policy.egress_allowed(int(addr), port, transport, addr.version)[0] == expected
        assert policy.is_monitored_ip(int(addr), addr.version) == any(
            n.version == addr.version and addr in n for n in policy.monitored_networks
        )


def test_known_devices_accept_common_mac_spellings() -> None:
    policy = SitePolicy.from_mapping(
        minimal(known_devices=["44:19:B6:00:00:01", "3c-ef-8c-00-00-02", "accc.8e00.0003"])
    )
    assert policy.is_known_device(0x4419B6000001)
    assert policy.is_known_device(0x3CEF8C000002)
    assert policy.is_known_device(0xACCC8E000003)
    assert not policy.is_known_device(0x4419B6000004)
    assert not SitePolicy.default().is_known_device(0x4419B6000001)
