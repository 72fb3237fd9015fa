"""The nftables script of a plan: its shape, and that real nft takes it (checked in a namespace)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator

import pytest

from agents.contain.nft import Nft, NftError
from agents.contain.plan import ContainmentPlan, Device, NameAllow
from agents.contain.render import (
    COMMENT_RE,
    LearnedAddress,
    TimedAddress,
    delete_elements,
    name_elements,
    quarantine_elements,
    render_remove,
    render_ruleset,
)
from monitor.policy import SitePolicy
from tests.agents.contain.conftest import nft_skip_reason
from tests.agents.contain.gateway_site import POLICY

ip = ipaddress.ip_address
PLAN = ContainmentPlan.build(SitePolicy.from_yaml(POLICY))
DUAL = ContainmentPlan.build(
    SitePolicy.from_yaml(
        """
site: 'dépôt"7'
monitored: {networks: [10.20.0.0/24, "fd20::/64"]}
resolvers: ["fd20::1", 10.20.0.1]
viewers: ["fd20::2"]
allow:
  - {name: v6 api, to: ["2001:db8::/48"], ports: [443/tcp, 123]}
  - {name: v6 any, to: ["2001:db8:1::/48"]}
"""
    )
)
CDN = NameAllow("cdn", ("*.cdn.example",), frozenset({(443, "tcp"), (80, "tcp")}))
ANY = NameAllow("any", ("ntp.example",), None)


@pytest.fixture(scope="module")
def nft() -> Iterator[Nft]:
    """nft in a namespace of its own (nothing forwards there: only the scripts are tried)."""
    reason = nft_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"cwr{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield Nft(("ip", "netns", "exec", name, "nft"))
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_the_script_replaces_one_table_and_names_the_plan() -> None:
    script = render_ruleset(PLAN)
    lines = [line for line in script.splitlines() if not line.startswith("#")]
    assert lines[:3] == ["table inet camwatch {}", "delete table inet camwatch", "table inet camwatch {"]
    assert script.count("table inet camwatch {\n") == 1 and "table ip " not in script
    match = COMMENT_RE.search(script)
    assert match is not None and match.groups() == (PLAN.digest, "cwtest")
    # The site name is made safe for the comment (a quote or space cannot break the script).
    assert f"plan {DUAL.digest} site d-p-t-7" in render_ruleset(DUAL)
    assert "hook forward priority filter; policy accept;" in script
    assert script.count(" drop\n") == 3  # policy, and quarantine both ways: nothing else drops


def test_elements_are_written_as_nft_lists_them() -> None:
    script = render_ruleset(PLAN)
    assert "elements = { 10.91.0.0/24, 10.92.0.0/24 }" in script  # watched
    assert "198.51.100.7 . tcp . 8443, 198.51.100.7 . udp . 123" in script
    assert "198.51.100.53 . udp . 53, 198.51.100.53 . tcp . 53, 198.51.100.53 . tcp . 853" in script
    assert "elements = { 203.0.113.20 }" in script
    dual = render_ruleset(DUAL)
    assert "2001:db8::/48 . tcp . 123, 2001:db8::/48 . tcp . 443, 2001:db8::/48 . udp . 123" in dual
    assert "elements = { fd20::1 . udp . 53, fd20::1 . tcp . 53, fd20::1 . tcp . 853 }" in dual


def test_quarantined_and_learned_addresses_are_carried_with_their_time_left() -> None:
    script = render_ruleset(
        PLAN,
        [
            TimedAddress(ip("10.91.0.12"), 99.2),
            TimedAddress(ip("10.91.0.12"), 10),
            TimedAddress(ip("10.91.0.13"), 0),
        ],
        [LearnedAddress(CDN, ip("203.0.113.80"), 30), LearnedAddress(ANY, ip("2001:db8::8"), 0.2)],
    )
    assert "elements = { 10.91.0.12 timeout 100s }" in script  # one element, the longest; none at 0
    assert "203.0.113.80 . tcp . 80 timeout 30s, 203.0.113.80 . tcp . 443 timeout 30s" in script
    assert "elements = { 2001:db8::8 timeout 1s }" in script  # rounded up, never 0


def test_the_scripts_load_into_real_nftables(nft: Nft) -> None:
    many = ContainmentPlan.build(
        SitePolicy.from_yaml(POLICY),
        devices=[
            # Odd addresses: nothing merges, 3000 elements.
            Device(
                f"44-19-b6-00-{i >> 8:02x}-{i & 255:02x}",
                "hikvision",
                (ip(f"10.50.{i >> 7}.{(i & 127) * 2 + 1}"),),
            )
            for i in range(3000)
        ],
    )
    for plan in (PLAN, DUAL, many, ContainmentPlan.build(SitePolicy.default())):
        script = render_ruleset(
            plan, [TimedAddress(ip("10.91.0.12"), 60)], [LearnedAddress(CDN, ip("2001:db8::8"), 5)]
        )
        nft.check(script)
        nft.load(script)
        nft.load(script)  # and again: the script replaces what it loaded
        state = nft.table()
        assert state is not None and state.digest == plan.digest
        if plan is many:
            listed = nft._run(["list", "set", "inet", "camwatch", "watched_v4"])
            assert listed.count("10.50.") == 3000


def test_element_scripts_set_replace_and_delete(nft: Nft) -> None:
    nft.load(render_ruleset(PLAN))
    nft.load(quarantine_elements([ip("10.91.0.12"), ip("fd00::12")], 600))
    nft.load(quarantine_elements([ip("10.91.0.12")], 30))  # a new time replaces the old one
    state = nft.table()
    assert state is not None
    times = {str(e.address): e.expires for e in state.elements("quarantine")}
    assert set(times) == {"10.91.0.12", "fd00::12"} and times["10.91.0.12"] <= 30 < times["fd00::12"]  # type: ignore[operator]
    nft.load(delete_elements("quarantine", [ip("10.91.0.12"), ip("10.91.0.99")]))  # one of them was not there
    assert [str(e.address) for e in nft.table().elements("quarantine")] == ["fd00::12"]  # type: ignore[union-attr]
    nft.load(name_elements(CDN, ip("203.0.113.80"), 40))
    nft.load(name_elements(ANY, ip("203.0.113.81"), 40))
    state = nft.table()
    assert state is not None
    ports = sorted((str(e.address), e.transport, e.port) for e in state.elements("names_ports"))
    assert ports == [("203.0.113.80", "tcp", 80), ("203.0.113.80", "tcp", 443)]
    assert [str(e.address) for e in state.elements("names_any")] == ["203.0.113.81"]


def test_remove_works_whether_or_not_the_table_is_there(nft: Nft) -> None:
    nft.load(render_ruleset(PLAN))
    nft.load(render_remove())
    assert nft.table() is None
    nft.load(render_remove())
    assert nft.table() is None
    with pytest.raises(NftError, match="syntax error"):
        nft.check("table inet camwatch { chain x { drop drop } }\n")
