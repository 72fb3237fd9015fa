"""The proposal from observations: support, wildcards with enough support, groups, flags, bounds."""

from __future__ import annotations

import pytest

from agents.learn.observe import ADDRESS, IN, NAME, OUT, Observations, UsageKey, service
from agents.learn.propose import DeviceInfo, LearnRefused, LearnSettings, propose
from monitor.alerts import Alert, Endpoint, Rule

NS = 1_000_000_000
T0 = 1_767_225_600 * NS
HIK = [f"44-19-b6-00-00-0{i}" for i in range(1, 5)]
DAHUA = ["3c-ef-8c-00-00-01"]
DEVICES = {
    **{
        d: DeviceInfo(d, "hikvision", "Hikvision", "DS-2CD2143G2-I", ips=(f"10.20.0.1{i}",))
        for i, d in enumerate(HIK)
    },
    DAHUA[0]: DeviceInfo(DAHUA[0], "dahua", "Dahua", None, ips=("10.20.0.50",)),
}
SETTINGS = LearnSettings(min_flows=3, min_span_s=600)


def use(
    obs: Observations,
    device: str,
    peer: str,
    port: int,
    transport: str = "tcp",
    *,
    kind: str = NAME,
    flows: int = 3,
    every_s: int = 400,
    answered: bool = True,
    allowed: str | None = None,
    addresses: tuple[str, ...] = (),
    direction: str = OUT,
) -> None:
    for i in range(flows):
        obs.record(
            UsageKey(device, direction, kind, peer, port, transport),
            T0 + i * every_s * NS,
            answered,
            allowed,
            addresses,
        )


def learned(obs: Observations, settings: LearnSettings = SETTINGS) -> dict[str, tuple[str, ...]]:
    proposal = propose(obs, DEVICES, settings)
    return {rule.name: tuple(d.peer for d in rule.destinations) for rule in proposal.rules}


def test_supported_destinations_are_learned_by_group_with_their_ports() -> None:
    obs = Observations()
    for dev in HIK[:2]:
        use(obs, dev, "vms.example.com", 443)
        use(obs, dev, "time.example.org", 123, "udp")
    use(obs, DAHUA[0], "198.51.100.20", 514, "udp", kind=ADDRESS)
    assert learned(obs) == {
        "learned: Dahua, 514/udp": ("198.51.100.20/32",),
        "learned: Hikvision DS-2CD2143G2-I, 123/udp": ("time.example.org",),
        "learned: Hikvision DS-2CD2143G2-I, 443/tcp": ("vms.example.com",),
    }


@pytest.mark.parametrize(
    ("flows", "every_s", "is_learned"),
    [(3, 400, True), (2, 400, False), (3, 100, False), (10, 1, False), (100, 7, True)],
)
def test_support_is_flows_over_a_span(flows: int, every_s: int, is_learned: bool) -> None:
    obs = Observations()
    use(obs, HIK[0], "vms.example.com", 443, flows=flows, every_s=every_s)
    proposal = propose(obs, DEVICES, SETTINGS)
    assert bool(proposal.rules) is is_learned
    if not is_learned:
        assert any(f.kind == "low-support" and "vms.example.com" in f.text for f in proposal.findings)


def test_sibling_names_become_a_wildcard_only_with_enough_support() -> None:
    obs = Observations()
    for i in range(4):
        use(obs, HIK[0], f"{i}.pool.ntp.example", 123, "udp", flows=3)
    assert learned(obs) == {"learned: Hikvision DS-2CD2143G2-I, 123/udp": ("*.pool.ntp.example",)}
    # Three siblings are not enough to generalise: each is judged on its own.
    obs = Observations()
    for i in range(3):
        use(obs, HIK[0], f"{i}.pool.ntp.example", 123, "udp", flows=3)
    assert learned(obs) == {
        "learned: Hikvision DS-2CD2143G2-I, 123/udp": tuple(f"{i}.pool.ntp.example" for i in range(3))
    }
    # Four siblings seen once each: not enough flows for a wildcard, and none is learned alone.
    obs = Observations()
    for i in range(4):
        use(obs, HIK[0], f"{i}.pool.ntp.example", 123, "udp", flows=1)
    assert learned(obs) == {}


def test_a_wildcard_never_covers_a_flagged_name_nor_a_top_level_domain() -> None:
    obs = Observations()
    for i in range(4):
        use(obs, HIK[0], f"n{i}.ezvizlife.com", 443)
    obs.flag_peer("litedev.ezvizlife.com", "dns.vendor_cloud")
    assert "*.ezvizlife.com" not in str(learned(obs))
    obs = Observations()
    for name in ("a.com", "b.com", "c.com", "d.com"):
        use(obs, HIK[0], name, 443)
    assert "*.com" not in str(learned(obs))  # two labels at least: no wildcard of a top-level domain


def test_addresses_of_one_network_become_the_network_only_when_answered() -> None:
    obs = Observations()
    for i in range(5):
        use(obs, HIK[0], f"203.0.113.{10 + i}", 443, kind=ADDRESS)
    assert learned(obs) == {"learned: Hikvision DS-2CD2143G2-I, 443/tcp": ("203.0.113.0/24",)}
    # The same pattern unanswered (SYNs nobody answers: a sweep) is not generalised.
    obs = Observations()
    for i in range(5):
        use(obs, HIK[0], f"203.0.113.{10 + i}", 443, kind=ADDRESS, answered=False)
    assert learned(obs)["learned: Hikvision DS-2CD2143G2-I, 443/tcp"] == tuple(
        f"203.0.113.{10 + i}/32" for i in range(5)
    )
    # Never over a flagged address.
    obs.flag_peer("203.0.113.99", "p2p.nat_traversal")
    for i in range(5):
        use(obs, HIK[1], f"203.0.113.{10 + i}", 443, kind=ADDRESS)
    assert "203.0.113.0/24" not in str(learned(obs))


def test_many_ports_of_one_destination_become_any_port() -> None:
    obs = Observations()
    for port in range(8000, 8008):
        use(obs, HIK[0], "nas.example.com", port)
    (rule,) = propose(obs, DEVICES, SETTINGS).rules
    assert rule.ports is None and rule.name.endswith("any port")
    obs = Observations()
    for port in range(8000, 8007):
        use(obs, HIK[0], "nas.example.com", port)
    (rule,) = propose(obs, DEVICES, SETTINGS).rules
    assert rule.ports == frozenset((p, "tcp") for p in range(8000, 8007))


def test_flagged_peers_devices_and_scanning_ports_are_never_learned() -> None:
    obs = Observations()
    use(obs, HIK[0], "litedev.ezvizlife.com", 8666)
    use(obs, HIK[0], "cdn.example.net", 443, addresses=("203.0.113.7",))  # resolved to a flagged address
    use(obs, HIK[1], "10.20.0.1", 49152, kind=ADDRESS)
    use(obs, HIK[2], "ok.example.com", 443)
    use(obs, HIK[3], "198.51.100.1", 23, kind=ADDRESS)
    obs.flag_peer("litedev.ezvizlife.com", "dns.vendor_cloud")
    obs.flag_peer("203.0.113.7", "p2p.nat_traversal")
    obs.flag_peer(service("10.20.0.1", 49152, "tcp"), "upnp.port_mapping")
    obs.flagged_devices[HIK[2]] = {"exploit.attempt"}
    obs.scans[(HIK[3], 23, "tcp")] = 32
    proposal = propose(obs, DEVICES, SETTINGS)
    assert proposal.rules == []
    kinds = sorted(f.kind for f in proposal.findings)
    assert kinds == ["device", "flagged", "flagged", "flagged", "scan"]
    assert HIK[2] not in {d.id for d in proposal.known_devices}
    assert {d.id for d in proposal.known_devices} == set(DEVICES) - {HIK[2]}


def test_alerts_flag_what_they_name_but_not_learnings_own_input() -> None:
    obs = Observations()
    rule = Rule("p2p.nat_traversal", "P2P", 4)
    alert = Alert(
        rule,
        T0,
        "id",
        "s/g",
        "m",
        Endpoint("10.20.0.11", 4000, HIK[0]),
        Endpoint("198.51.100.9", 8800),
        "udp",
        device_id=HIK[0],
    )
    obs.note_alert(alert, lambda mac: ("10.20.0.11",), lambda ip: ip.startswith("10."))
    assert obs.flagged_peers == {"198.51.100.9": {"p2p.nat_traversal"}} and len(obs.findings) == 1
    upnp = Alert(
        Rule("upnp.port_mapping", "UPnP", 3),
        T0,
        "id2",
        "s/g",
        "m",
        Endpoint("10.20.0.11", 4000, HIK[0]),
        Endpoint("10.20.0.1", 49152),
        "tcp",
        device_id=HIK[0],
    )
    obs.note_alert(upnp, lambda mac: ("10.20.0.11",), lambda ip: ip.startswith("10."))
    assert obs.flagged_peers[service("10.20.0.1", 49152, "tcp")] == {"upnp.port_mapping"}  # only that service
    dns = Alert(
        Rule("dns.vendor_cloud", "cloud", 3),
        T0,
        "id3",
        "s/g",
        "m",
        Endpoint("10.20.0.11", 4000, HIK[0]),
        Endpoint("10.20.0.1", 53, None, "litedev.ezvizlife.com"),
        "udp",
        device_id=HIK[0],
    )
    obs.note_alert(dns, lambda mac: ("10.20.0.11",), lambda ip: ip.startswith("10."))
    assert (
        "litedev.ezvizlife.com" in obs.flagged_peers
        and service("10.20.0.1", 53, "udp") not in obs.flagged_peers
    )
    egress = Alert(
        Rule("egress.unexpected_destination", "egress", 3),
        T0,
        "id4",
        "s/g",
        "m",
        Endpoint("10.20.0.11", 4000, HIK[0]),
        Endpoint("192.0.2.1", 443),
        "tcp",
        device_id=HIK[0],
    )
    obs.note_alert(egress)
    assert "192.0.2.1" not in obs.flagged_peers and len(obs.findings) == 3
    scan = Alert(
        Rule("device.scanning", "scan", 4),
        T0,
        "id5",
        "s/g",
        "m",
        Endpoint("10.20.0.11", None, HIK[0]),
        device_id=HIK[0],
    )
    obs.note_alert(scan)
    assert obs.flagged_devices == {HIK[0]: {"device.scanning"}}


def test_model_groups_that_behave_the_same_merge_into_their_vendor() -> None:
    devices = dict(DEVICES)
    devices[HIK[3]] = DeviceInfo(HIK[3], "hikvision", "Hikvision", "DS-2CD2347G2-LU", ips=("10.20.0.13",))
    obs = Observations()
    for dev in HIK:
        use(obs, dev, "vms.example.com", 443)
    proposal = propose(obs, devices, SETTINGS)
    assert [r.name for r in proposal.rules] == [
        "learned: Hikvision (DS-2CD2143G2-I, DS-2CD2347G2-LU), 443/tcp"
    ]
    assert sorted(proposal.groups["hikvision"].devices) == HIK
    # Different behaviour: the models stay apart.
    use(obs, HIK[3], "extra.example.com", 443)
    assert len(propose(obs, devices, SETTINGS).rules) == 2


def test_output_is_bounded_wildcarded_or_refused() -> None:
    obs = Observations()
    # 2,000 answered addresses in 8 networks, each used a few times: they wildcard into 8 networks.
    for i in range(2000):
        use(obs, HIK[0], f"198.51.{100 + i % 8}.{i // 8 + 1}", 443, kind=ADDRESS, flows=1)
        use(obs, HIK[0], f"198.51.{100 + i % 8}.{i // 8 + 1}", 443, kind=ADDRESS, flows=3, every_s=300)
    proposal = propose(obs, DEVICES, LearnSettings(max_destinations=50))
    assert proposal.destinations == 8
    # 2,000 distinct names, each supported: refused, naming the device.
    obs = Observations()
    for i in range(2000):
        use(obs, DAHUA[0], f"host{i}.d{i}.example.com", 443)
    with pytest.raises(LearnRefused, match=DAHUA[0]):
        propose(obs, DEVICES, LearnSettings(max_destinations=1000))


def test_observations_are_bounded_and_say_who_was_dropped() -> None:
    obs = Observations(max_usages=10)
    for i in range(15):
        use(obs, HIK[0], f"h{i}.example.com", 443, flows=1)
    assert len(obs.usages) == 10 and obs.dropped == 5 and obs.dropped_by_device == {HIK[0]: 5}
    findings = propose(obs, DEVICES, SETTINGS).findings
    assert any(f.kind == "dropped" and HIK[0] in f.text for f in findings)


def test_the_scan_detector_counts_addresses_per_port_per_window() -> None:
    obs = Observations()
    for i in range(31):
        obs.note_fanout(HIK[0], f"198.18.0.{i}", 23, "tcp", T0 + i * NS)
    assert obs.scans == {}
    obs.note_fanout(HIK[0], "198.18.0.200", 23, "tcp", T0 + 40 * NS)
    assert obs.scans == {(HIK[0], 23, "tcp"): 32}
    # Spread over hours, the same addresses are not a scan.
    obs = Observations()
    for i in range(40):
        obs.note_fanout(HIK[1], f"198.18.0.{i}", 23, "tcp", T0 + i * 700 * NS)
    assert obs.scans == {}


def test_observations_survive_their_json() -> None:
    obs = Observations()
    use(obs, HIK[0], "vms.example.com", 443, addresses=("203.0.113.5",))
    use(obs, HIK[0], "10.20.0.2", 554, kind=ADDRESS, direction=IN)
    obs.flag_peer("198.51.100.9", "p2p.nat_traversal")
    obs.flagged_devices[HIK[1]] = {"exploit.attempt"}
    obs.scans[(HIK[2], 23, "tcp")] = 32
    back = Observations.from_json(obs.to_json())
    assert back.usages == obs.usages and back.flagged_peers == obs.flagged_peers
    assert back.flagged_devices == obs.flagged_devices and back.scans == obs.scans
    assert (back.first_ns, back.last_ns) == (obs.first_ns, obs.last_ns)
    with pytest.raises(ValueError, match="version"):
        Observations.from_json({"version": 99})
    with pytest.raises(ValueError, match="damaged"):
        Observations.from_json({**obs.to_json(), "usages": [["too", "short"]]})
