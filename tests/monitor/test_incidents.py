"""Incidents (monitor/alerts.py): a device's alerts grouped under one id, caps that fold the rest, a scan that
absorbs its own connections; and, through the engine, one camera's phone-home as one incident."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lab import scenario
from monitor.alerts import (
    CAP_PER_DEVICE,
    CAP_PER_RULE,
    CRITICAL,
    NS,
    Alert,
    AlertGate,
    Endpoint,
    Incidents,
    Rule,
    incident_id,
)
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from tests.enginerun import run_engine

T0 = 1_700_000_000 * NS
EGRESS = Rule("egress.unexpected_destination", "egress", 3)
DNS = Rule("dns.vendor_cloud", "dns", 3)
SCAN = Rule("device.scanning", "scan", CRITICAL, absorbs=("egress.unexpected_destination",))
EXPLOIT = Rule("exploit.attempt", "exploit", CRITICAL)


def alert(rule: Rule, ts: int, what: object, device: str | None = "44-19-b6-00-00-01") -> Alert:
    return Alert(
        rule=rule,
        timestamp_ns=ts,
        event_id=incident_id(rule.id, "s/g", device, what),
        observer="s/g",
        message="m",
        source=Endpoint("10.0.0.5"),
        device_id=device,
    )


def test_alerts_of_one_device_share_one_incident_and_others_do_not() -> None:
    book = Incidents()
    a = book.group(alert(DNS, T0, "litedev.ezvizlife.com"))
    b = book.group(alert(EGRESS, T0 + NS, "203.0.113.7"))
    c = book.group(alert(EGRESS, T0 + NS, "203.0.113.7", device="3c-ef-8c-00-00-02"))
    assert a is not None and b is not None and c is not None
    assert a.incident is not None and b.incident is not None and c.incident is not None
    assert a.incident.id == b.incident.id != c.incident.id
    assert (a.incident.alerts, b.incident.alerts) == (1, 2)
    record = b.to_record()
    assert record["camwatch"]["incident"] == {
        "id": a.incident.id,
        "start": "2023-11-14T22:13:20.000Z",
        "alerts": 2,
        "folded": 0,
    }


def test_incident_ids_do_not_depend_on_time_of_processing_only_on_the_first_alert() -> None:
    first = Incidents().group(alert(DNS, T0, "x"))
    again = Incidents().group(alert(DNS, T0, "x"))
    assert first is not None and again is not None and first.incident == again.incident


def test_a_quiet_hour_ends_the_incident() -> None:
    book = Incidents()
    a = book.group(alert(DNS, T0, "x"))
    b = book.group(alert(DNS, T0 + 3601 * NS, "y"))
    assert a is not None and b is not None and a.incident is not None and b.incident is not None
    assert a.incident.id != b.incident.id and b.incident.alerts == 1


def test_caps_fold_a_storm_and_count_it() -> None:
    book = Incidents()
    passed = [book.group(alert(EGRESS, T0 + i, f"203.0.113.{i}")) for i in range(50)]
    sent = [p for p in passed if p is not None]
    assert len(sent) == CAP_PER_RULE and book.folded == {EGRESS.id: 50 - CAP_PER_RULE}
    # Another rule still gets through, and says how much was folded so far.
    dns = book.group(alert(DNS, T0 + 100, "a"))
    assert dns is not None and dns.incident is not None and dns.incident.folded == 50 - CAP_PER_RULE
    # The device cap holds across rules: past it, only a rule's first alert goes out, repeats are folded.
    rules = [Rule(f"r.{i}", "r", 3) for i in range(20)]
    first = [book.group(alert(r, T0 + 200, "z")) for r in rules]
    again = [book.group(alert(r, T0 + 201, "y")) for r in rules]
    assert all(f is not None for f in first)
    assert sum(a is not None for a in again) == max(CAP_PER_DEVICE - CAP_PER_RULE - 1 - len(rules), 0)
    assert book.folded["r.0"] == 1 and sum(book.folded.values()) == 50 - CAP_PER_RULE + len(rules)
    # Critical alerts are never folded.
    exploit = book.group(alert(EXPLOIT, T0 + 300, "e"))
    assert exploit is not None and exploit.incident is not None
    # After the window, the caps start again.
    later = book.group(alert(EGRESS, T0 + 601 * NS, "203.0.113.200"))
    assert later is not None and later.incident is not None and later.incident.id == dns.incident.id


def test_critical_alerts_do_not_use_up_the_device_s_cap() -> None:
    """An attack's exploit alerts (critical, several) leave room for what follows them (the lab's DVR: four
    exploits, a scan, then password guessing)."""
    book = Incidents()
    exploits = [book.group(alert(EXPLOIT, T0 + i, f"e{i}")) for i in range(2 * CAP_PER_DEVICE)]
    assert all(e is not None for e in exploits)
    high = [book.group(alert(Rule("r.x", "r", 4), T0 + 100 + i, f"z{i}")) for i in range(CAP_PER_RULE)]
    assert all(h is not None for h in high) and book.folded == {}


def test_a_scan_absorbs_the_device_s_egress_alerts() -> None:
    book = Incidents()
    assert book.group(alert(EGRESS, T0, "203.0.113.1")) is not None
    scan = book.group(alert(SCAN, T0 + NS, "scan"))
    assert scan is not None
    after = [book.group(alert(EGRESS, T0 + 2 * NS + i, f"198.51.100.{i}")) for i in range(5)]
    assert after == [None] * 5 and book.folded[EGRESS.id] == 5
    # Only that device's.
    other = book.group(alert(EGRESS, T0 + 3 * NS, "203.0.113.1", device="3c-ef-8c-00-00-02"))
    assert other is not None


def _egress(ts: int, ip: str, port: int) -> Alert:
    return replace(alert(EGRESS, ts, (ip, port)), destination=Endpoint(ip, port))


def test_a_new_destination_port_is_news_past_the_rules_cap() -> None:
    # The vendor phone-home uses up the egress budget on 443; a reverse shell on 4444 and a miner on 3333
    # minutes later still go out (once each), more phone-home does not.
    book = Incidents()
    home = [book.group(_egress(T0 + i * NS, f"203.0.113.{i}", 443)) for i in range(6)]
    assert sum(h is not None for h in home) == CAP_PER_RULE
    hostile = [book.group(_egress(T0 + 180 * NS + port, "198.51.100.66", port)) for port in (4444, 3333)]
    assert all(h is not None for h in hostile)
    again = [book.group(_egress(T0 + 200 * NS + port, "198.51.100.67", port)) for port in (4444, 443)]
    assert again == [None, None]


def test_a_scan_absorbs_egress_for_its_window_only() -> None:
    # A reverse shell twenty minutes after the scan (the incident still open: alerts every few minutes) is
    # not the scan's connection.
    book = Incidents()
    assert book.group(alert(SCAN, T0, "scan")) is not None
    assert book.group(_egress(T0 + 60 * NS, "203.0.113.9", 23)) is None
    for minute in (5, 10, 15):
        book.group(alert(DNS, T0 + minute * 60 * NS, f"q{minute}"))
    shell = book.group(_egress(T0 + 20 * 60 * NS, "198.51.100.66", 4444))
    assert shell is not None and shell.incident is not None and shell.incident.alerts >= 2


def test_open_incidents_are_those_with_an_alert_in_the_last_idle_time_with_their_highest_severity() -> None:
    book = Incidents()
    first = book.group(alert(DNS, T0, "x"))
    book.group(alert(EXPLOIT, T0 + NS, "y"))
    for i in range(10):  # folded past the caps: not counted as sent
        book.group(alert(EGRESS, T0 + 2 * NS + i, f"203.0.113.{i}"))
    other = book.group(alert(EGRESS, T0 + 3 * NS, "z", device="3c-ef-8c-00-00-02"))
    assert first is not None and first.incident is not None and other is not None
    (cam, recorder) = book.still_open()
    assert (cam.device, cam.id, cam.severity) == ("44-19-b6-00-00-01", first.incident.id, CRITICAL)
    assert (cam.alerts, cam.folded) == (2 + CAP_PER_RULE, 10 - CAP_PER_RULE)
    assert (recorder.device, recorder.severity, recorder.alerts) == ("3c-ef-8c-00-00-02", 3, 1)
    # An hour later the camera's incident is over, and only the recorder's new one is open.
    book.group(alert(DNS, T0 + 3 * NS + 3600 * NS, "w", device="3c-ef-8c-00-00-02"))
    assert [i.device for i in book.still_open()] == ["3c-ef-8c-00-00-02"]


def test_alerts_without_a_device_pass_without_an_incident() -> None:
    passed = Incidents().group(alert(DNS, T0, "x", device=None))
    assert passed is not None and passed.incident is None and "camwatch" not in passed.to_record()


def test_the_incident_book_is_bounded() -> None:
    book = Incidents(max_devices=100)
    for i in range(1000):
        book.group(alert(DNS, T0 + i, "x", device=f"02-00-00-00-{i >> 8:02x}-{i & 255:02x}"))
    assert len(book._open) == 100 and book.opened == 1000


def test_the_gate_suppresses_repeats_before_grouping() -> None:
    gate = AlertGate()
    a = alert(DNS, T0, "x")
    assert gate.let_through(a) is not None and gate.let_through(a) is None
    assert gate.suppressed == 1 and gate.incidents.folded == {}


def test_one_camera_phone_home_is_one_incident(tmp_path: Path) -> None:
    """The demo site: each misbehaving camera's alerts (DNS, egress, P2P, UPnP) carry one incident id."""
    policy = SitePolicy.from_yaml(
        (Path(__file__).parents[2] / "examples" / "site-policy.yaml").read_text(), "site-policy.yaml"
    )
    path = tmp_path / "demo.pcap"
    path.write_bytes(pcap_bytes(list(scenario.site_packets(scenario.demo_shape()))))
    _, _, alerts = run_engine(path, policy=policy)
    by_device: dict[str, set[str]] = {}
    for a in alerts:
        device = a.get("device", {}).get("id")  # type: ignore[attr-defined]
        by_device.setdefault(device, set()).add(a["camwatch"]["incident"]["id"])  # type: ignore[index]
    cam1 = "44-19-b6-00-01-01"
    cam1_rules = {a["rule"]["id"] for a in alerts if a.get("device", {}).get("id") == cam1}  # type: ignore[attr-defined, index]
    assert {"dns.vendor_cloud", "egress.unexpected_destination", "p2p.nat_traversal"} <= cam1_rules
    assert all(len(ids) == 1 for ids in by_device.values()), by_device
    assert len(set().union(*by_device.values())) == len(by_device)
