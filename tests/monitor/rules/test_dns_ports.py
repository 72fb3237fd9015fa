"""DNS is judged wherever it goes: a camera asking a resolver on an odd port (OpenDNS answers on 443 and 5353)
bypasses the site's resolver as surely as on 53; real mDNS and LLMNR on the link are not DNS to a resolver."""

from __future__ import annotations

import pytest

from lab import synth
from lab.payloads import dns_query
from tests.monitor.rules.traffic import GW, HIK, T0, alerts

CLOUD = "litedev.ezvizlife.com"
OPENDNS = "208.67.222.222"


def _ask(dst: str, port: int, dst_mac: str = GW.mac) -> list[tuple[int, bytes]]:
    query = dns_query(0x4242, CLOUD)
    return [(T0, synth.udp4_frame(HIK.mac, dst_mac, HIK.ip, dst, 40000, port, query))]


def _rules(frames: list[tuple[int, bytes]]) -> set[str]:
    return {str(a["rule"]["id"]) for a in alerts(frames)}  # type: ignore[index]


@pytest.mark.parametrize("port", [53, 443, 5353, 5355, 40053])
def test_dns_to_an_outside_resolver_on_any_port_is_a_bypass(port: int) -> None:
    assert {"dns.resolver_bypass", "dns.vendor_cloud"} <= _rules(_ask(OPENDNS, port))


@pytest.mark.parametrize(
    ("group", "port", "mac"),
    [("224.0.0.251", 5353, "01:00:5e:00:00:fb"), ("224.0.0.252", 5355, "01:00:5e:00:00:fc")],
)
def test_link_local_multicast_name_queries_are_not_a_bypass(group: str, port: int, mac: str) -> None:
    assert not {"dns.resolver_bypass", "dns.vendor_cloud"} & _rules(_ask(group, port, mac))


@pytest.mark.parametrize("cut", [2, 7])
def test_dns_over_tcp_is_read_across_segments(cut: int) -> None:
    # RFC 7766 8: the 2-byte length may come alone, or a message span segments.
    from tests.monitor.rules.traffic import Host, exchange

    query = dns_query(0x4242, CLOUD)
    framed = len(query).to_bytes(2, "big") + query
    resolver = Host(OPENDNS, GW.mac)
    frames = exchange(T0, HIK, resolver, 40000, 53, [(framed[:cut], b""), (framed[cut:], b"")])
    assert {"dns.resolver_bypass", "dns.vendor_cloud"} <= _rules(frames)


def test_a_vendor_cloud_the_policy_allows_by_name_is_looked_up_without_a_warning() -> None:
    # The site runs its cameras with the vendor's firmware service on purpose: "*.hik-connect.com" allowed.
    from monitor.policy import SitePolicy
    from tests.enginerun import run_frames

    name = "upgrade.hik-connect.com"
    frames = [(T0, synth.udp4_frame(HIK.mac, GW.mac, HIK.ip, GW.ip, 40000, 53, dns_query(1, name)))]
    base = "site: s\nmonitored: {networks: [10.20.0.0/24]}\nresolvers: [10.20.0.1]\n"
    allowing = SitePolicy.from_yaml(
        base + 'allow:\n  - {name: firmware, to: ["*.hik-connect.com"], ports: [443/tcp]}\n'
    )
    rules = {str(a["rule"]["id"]) for a in run_frames(frames, policy=SitePolicy.from_yaml(base))[2]}  # type: ignore[index]
    assert "dns.vendor_cloud" in rules
    rules = {str(a["rule"]["id"]) for a in run_frames(frames, policy=allowing)[2]}  # type: ignore[index]
    assert "dns.vendor_cloud" not in rules


def test_dns_over_tcp_met_mid_stream_starts_afresh() -> None:
    # A stream whose first bytes are no message's start (a session met mid-stream reads the middle of one
    # as a length that never completes): the next query, a whole message in its segment, is read.
    from tests.monitor.rules.traffic import Host, exchange

    query = dns_query(0x4242, CLOUD)
    framed = len(query).to_bytes(2, "big") + query
    resolver = Host(OPENDNS, GW.mac)
    tail = b"\x7f\xff" + bytes(40)  # "a 32,767-byte message" that is only the middle of one
    frames = exchange(T0, HIK, resolver, 40000, 53, [(tail, b""), (framed, b"")])
    assert {"dns.resolver_bypass", "dns.vendor_cloud"} <= _rules(frames)
