"""The containment plan: which sources are contained and where they may go, decided from the site policy."""

from __future__ import annotations

import ipaddress

import pytest

import monitor.policy as policy_module
from agents.contain.plan import (
    ON_LINK_NETWORKS,
    PRIVATE_NETWORKS,
    ContainmentError,
    ContainmentPlan,
    Device,
    NameAllow,
    devices_from_inventory,
    parse_address_or_network,
)
from monitor.policy import SitePolicy

ip = ipaddress.ip_address
net = ipaddress.ip_network

POLICY = SitePolicy.from_yaml(
    """
site: depot-7
monitored: {networks: [10.20.0.0/24, "fd20::/64"], vendors: [hikvision, dahua]}
resolvers: [10.20.0.1, 198.51.100.53]
viewers: [10.20.0.2]
allow:
  - {name: ntp, to: [198.51.100.0/24, 198.51.100.7/32], ports: [123/udp]}
  - {name: vms, to: [192.0.2.0/24, "2001:db8::/32"]}
  - {name: api, to: [198.51.100.128/25], ports: [443]}
"""
)


def test_sets_come_from_the_policy() -> None:
    plan = ContainmentPlan.build(POLICY)
    assert plan.site == "depot-7"
    assert plan.watched == (net("10.20.0.0/24"), net("fd20::/64"))
    assert set(plan.internal) >= {net("10.20.0.0/24"), net("224.0.0.0/4"), net("fe80::/10"), net("fd20::/64")}
    assert net("10.0.0.0/8") not in plan.internal  # allow_private is false
    assert plan.allow_any == (net("192.0.2.0/24"), net("2001:db8::/32"))
    # The /32 inside the /24 is merged away (nft refuses overlapping intervals); a bare port is tcp and udp.
    assert plan.allow_ports == (
        (net("198.51.100.128/25"), "tcp", 443),
        (net("198.51.100.0/24"), "udp", 123),
        (net("198.51.100.128/25"), "udp", 443),
    )
    assert (ip("198.51.100.53"), "udp", 53) in plan.resolvers and (
        ip("10.20.0.1"),
        "tcp",
        853,
    ) in plan.resolvers
    # The viewers and resolvers are always on the never-block list.
    assert plan.never_block == (net("10.20.0.1/32"), net("10.20.0.2/32"), net("198.51.100.53/32"))


def test_private_space_is_internal_when_the_policy_says_so() -> None:
    plan = ContainmentPlan.build(SitePolicy.default())
    assert set(PRIVATE_NETWORKS) <= set(plan.internal)
    assert plan.watched == ()  # no monitored network: only devices of watched vendors are contained


def test_the_fixed_ranges_are_the_policys() -> None:
    # The ruleset must call site-internal exactly what the detection calls not egress.
    assert {n for n, _ in policy_module._ON_LINK} == set(ON_LINK_NETWORKS)
    assert {n for n, _ in policy_module._PRIVATE_NETS} == set(PRIVATE_NETWORKS)


@pytest.mark.parametrize(
    ("address", "port", "transport"),
    [
        ("10.20.0.99", 80, "tcp"), ("10.20.1.5", 80, "tcp"), ("192.168.1.1", 80, "tcp"),
        ("203.0.113.7", 8666, "tcp"), ("198.51.100.7", 123, "udp"), ("198.51.100.7", 123, "tcp"),
        ("198.51.100.200", 443, "tcp"), ("198.51.100.200", 443, "udp"), ("198.51.100.200", 80, "tcp"),
        ("192.0.2.9", 1, "udp"), ("239.255.255.250", 1900, "udp"), ("255.255.255.255", 67, "udp"),
        ("169.254.1.1", 80, "tcp"), ("127.0.0.1", 80, "tcp"), ("2001:db8::1", 443, "tcp"),
        ("2001:db9::1", 443, "tcp"), ("fe80::1", 80, "tcp"), ("ff02::fb", 5353, "udp"),
        ("fd20::9", 554, "tcp"),
    ],
)  # fmt: skip
def test_a_watched_device_may_reach_what_the_policy_allows(address: str, port: int, transport: str) -> None:
    # Resolvers aside (the policy has no say on ports there: containment allows only DNS), the plan's
    # verdict for a watched device is the detection's egress verdict.
    plan = ContainmentPlan.build(POLICY)
    camera = ip("fd20::11") if ":" in address else ip("10.20.0.11")
    allowed, _ = POLICY.egress_allowed(address, port, transport, version=ip(address).version)
    assert plan.judge(camera, ip(address), transport, port).allowed == allowed


def test_resolvers_only_on_dns_ports() -> None:
    plan = ContainmentPlan.build(POLICY)
    camera, resolver = ip("10.20.0.11"), ip("198.51.100.53")
    assert plan.judge(camera, resolver, "udp", 53).reason == "resolver"
    assert plan.judge(camera, resolver, "tcp", 853).allowed
    assert not plan.judge(camera, resolver, "tcp", 443).allowed


def test_who_opened_decides() -> None:
    plan = ContainmentPlan.build(POLICY)
    camera, cloud, office = ip("10.20.0.11"), ip("203.0.113.7"), ip("10.30.0.5")
    blocked = plan.judge(camera, cloud, "tcp", 8666)
    assert (blocked.allowed, blocked.reason, blocked.device) == (False, "policy", camera)
    assert plan.judge(cloud, camera, "tcp", 554).reason == "not watched"  # the camera only replies
    assert plan.judge(office, cloud, "tcp", 443).reason == "not watched"
    assert plan.judge(ip("10.20.0.2"), cloud, "tcp", 443).reason == "never-block"  # the recorder, inside


def test_quarantine_leaves_only_never_block_hosts_and_viewers() -> None:
    plan = ContainmentPlan.build(POLICY)
    camera, recorder, gw, office = ip("10.20.0.11"), ip("10.20.0.2"), ip("10.20.0.1"), ip("10.20.0.50")
    q = {camera}
    assert plan.judge(camera, ip("192.0.2.9"), "tcp", 80, q).reason == "quarantine"
    assert plan.judge(camera, office, "tcp", 80, q).device == camera
    assert plan.judge(camera, recorder, "udp", 5004, q).allowed
    assert plan.judge(camera, gw, "udp", 53, q).allowed
    assert plan.judge(recorder, camera, "tcp", 554, q).allowed
    inbound = plan.judge(office, camera, "tcp", 554, q)
    assert (inbound.allowed, inbound.device) == (False, camera)


def test_devices_of_watched_vendors_elsewhere_are_contained_never_block_hosts_are_not() -> None:
    devices = [
        Device("44-19-b6-00-00-09", "hikvision", (ip("10.40.0.9"), ip("10.20.0.9"), ip("fe80::9"))),
        Device("00-11-22-33-44-55", "axis", (ip("10.40.0.10"),)),
        Device("3c-ef-8c-00-00-01", "dahua", (ip("192.0.2.5"),)),  # a Dahua NVR that is the site's VMS
        Device("3c-ef-8c-00-00-03", None, (ip("10.40.0.3"),)),
    ]
    plan = ContainmentPlan.build(POLICY, devices=devices, never_block=[net("192.0.2.5/32")])
    assert plan.watched == (net("10.20.0.0/24"), net("10.40.0.9/32"), net("fd20::/64"))
    assert [d.mac for d in plan.devices] == ["44-19-b6-00-00-09"]
    assert plan.devices[0].addresses == (ip("10.40.0.9"),)  # not the monitored or link-local one
    assert any("192.0.2.5" in w and "never-block" in w for w in plan.warnings)
    assert not plan.judge(ip("10.40.0.9"), ip("203.0.113.7"), "tcp", 443).allowed


def test_a_never_block_host_the_policy_cuts_off_is_an_error() -> None:
    with pytest.raises(ContainmentError) as caught:
        ContainmentPlan.build(POLICY, never_block=[net("10.30.0.5/32"), net("192.0.2.7/32")])
    (problem,) = caught.value.problems
    assert problem.startswith("never_block 10.30.0.5/32: watched devices could not reach it")
    assert "add it to an allow rule" in problem
    # Reachable on some port is enough (a host of an allow rule with ports).
    ContainmentPlan.build(POLICY, never_block=[net("198.51.100.130/32")])


def test_a_never_block_network_covering_a_monitored_network_is_flagged() -> None:
    plan = ContainmentPlan.build(POLICY, never_block=[net("10.20.0.0/24")])
    assert any("covers the whole monitored network 10.20.0.0/24" in w for w in plan.warnings)


def test_the_digest_changes_with_the_sets_only() -> None:
    a = ContainmentPlan.build(POLICY)
    assert a.digest == ContainmentPlan.build(POLICY).digest and len(a.digest) == 16
    b = ContainmentPlan.build(POLICY, devices=[Device("44-19-b6-00-00-09", "hikvision", (ip("10.40.0.9"),))])
    assert a.digest != b.digest


def test_name_rules_match_exact_names_and_strictly_below_a_wildcard() -> None:
    rule = NameAllow("cdn", ("ntp.example.com", "*.cdn.example.net"), frozenset({(443, "tcp")}))
    assert rule.matches("NTP.example.com.") and rule.matches("a.b.cdn.example.net")
    assert not rule.matches("cdn.example.net") and not rule.matches("xcdn.example.net")
    plan = ContainmentPlan.build(POLICY, names=[rule])
    camera, address = ip("10.20.0.11"), ip("203.0.113.80")
    assert not plan.judge(camera, address, "tcp", 443).allowed
    learned = {("cdn", address)}
    assert plan.judge(camera, address, "tcp", 443, learned=learned).reason == "allow name"
    assert not plan.judge(camera, address, "tcp", 80, learned=learned).allowed


def test_name_rules_come_from_allow_rules_with_names() -> None:
    assert ContainmentPlan.build(POLICY).names == ()
    policy = SitePolicy.from_yaml(
        """
site: s
monitored: {vendors: [hikvision]}
allow:
  - {name: cdn, to: ["*.Example.com.", 192.0.2.0/24]}
  - {name: vms, to: [vms.cloud.example], ports: [443/tcp]}
"""
    )
    plan = ContainmentPlan.build(policy)
    assert plan.names == (
        NameAllow("cdn", ("*.example.com",), None),
        NameAllow("vms", ("vms.cloud.example",), frozenset({(443, "tcp")})),
    )
    assert plan.allow_any == (net("192.0.2.0/24"),)  # the rule's networks stay address rules


def test_inventory_records_in_both_forms() -> None:
    records = [
        {"mac": "44:19:B6:00:00:01", "vendor": "hikvision", "ips": ["10.40.0.9", "not an ip"]},
        {"mac": 0x3CEF8C000001, "vendor": "dahua", "ips": ["10.40.0.2"]},
        {"mac": None, "ips": ["10.40.0.3"]},
    ]
    devices = devices_from_inventory(records)
    assert devices == [
        Device("44-19-b6-00-00-01", "hikvision", (ip("10.40.0.9"),)),
        Device("3c-ef-8c-00-00-01", "dahua", (ip("10.40.0.2"),)),
    ]


def test_never_block_entries_parse_with_precise_errors() -> None:
    assert parse_address_or_network("10.0.0.5") == net("10.0.0.5/32")
    assert parse_address_or_network(" 10.0.0.0/24 ") == net("10.0.0.0/24")
    with pytest.raises(ValueError, match=r"has host bits set; did you mean 10\.0\.0\.0/24\?"):
        parse_address_or_network("10.0.0.5/24")
    with pytest.raises(ValueError, match="is not an IP address or network"):
        parse_address_or_network("recorder.local")
