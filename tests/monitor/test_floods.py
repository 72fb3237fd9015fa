"""Floods at CI size (lab/floods.py; benchmarks/floods.py runs them at full size): every table stays within
its bound, what it evicted is counted, and nothing the site should hear of is lost to a bound.

The bounds are lowered here (the same code paths, a few thousand packets instead of millions).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from lab import floods, personas
from lab.mirror import tls_client_hello
from monitor import analysis, site
from monitor import engine as engine_module
from monitor.alerts import AlertGate
from monitor.analysis import Resolutions
from monitor.engine import Engine, EngineConfig
from monitor.flows import FlowConfig
from monitor.policy import SitePolicy
from monitor.rules import device, stream_egress
from monitor.vendors.oui import VendorTable
from tests.monitor.rules.traffic import GW, HIK, MS

POLICY = SitePolicy.from_yaml(
    (Path(__file__).parents[2] / "examples" / "site-policy.yaml").read_bytes(), source="site-policy.yaml"
)
BOUND = 1000
TIMERS = 300


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setattr(site, "MAX_BINDINGS", BOUND)
    monkeypatch.setattr(analysis, "MAX_EXPECTED_MEDIA", 100)
    monkeypatch.setattr(analysis, "MAX_SHARED_STATES", 100)
    monkeypatch.setattr(device, "MAX_WAITING", 100)
    monkeypatch.setattr(stream_egress, "MAX_UPSTREAM_FLOWS", 100)
    monkeypatch.setattr(engine_module, "MAX_TIMERS", TIMERS)
    eng = Engine(POLICY, VendorTable.load(), EngineConfig(flows=FlowConfig(max_flows=BOUND), max_devices=500))
    eng.analysis.resolutions = Resolutions(BOUND)
    eng.gate = AlertGate(max_tracked=BOUND)
    return eng


def flood(engine: Engine, kind: str, n: int) -> Counter[str]:
    """The alerts raised, by rule: those that went out and those folded into their device's incident. Every
    table is within its bound after each batch, not only at the end (the timers are empty then)."""
    rules: Counter[str] = Counter()
    for batch in floods.as_batches(floods.FLOODS[kind](n), 512):
        rules.update(a.rule.id for a in engine.feed(batch).alerts)
        within_bounds(engine)
    rules.update(a.rule.id for a in engine.finish().alerts)
    rules.update(engine.gate.incidents.folded)
    return rules


def within_bounds(engine: Engine) -> dict[str, dict[str, int | None]]:
    report = floods.table_report(engine)
    over = {
        name: row
        for name, row in report.items()
        if row["bound"] is not None and (row["size"] or 0) > row["bound"]
    }
    assert not over, over
    return report


def test_distinct_flows(engine: Engine) -> None:
    alerts = flood(engine, "flows", 5000)
    # finish() ended every flow; the bound held while they came.
    assert engine.flows.stats.created == 5000 and engine.flows.stats.evicted == 5000 - BOUND
    report = within_bounds(engine)
    # Each of the 313 destinations (16 flows each) is one egress incident: all raised, none forgotten here.
    assert alerts["egress.unexpected_destination"] == 313 and report["incidents"]["evicted"] == 0
    upstream = report["upstream_flows"]
    # Followed while the bound allowed (a slot frees when a flow ends), counted beyond it.
    assert 0 < (upstream["evicted"] or 0) <= 5000 - 100


def test_distinct_macs(engine: Engine) -> None:
    n = 3000
    alerts = flood(engine, "macs", n)
    report = within_bounds(engine)
    # The hosts and the gateway they talk to (seen again after its own eviction): 500 kept, every other
    # one evicted and counted.
    assert report["devices"]["size"] == 500 and report["devices"]["evicted"] >= n + 1 - 500
    assert report["address_bindings"]["evicted"] == n - BOUND
    # Every new device is announced once, none lost: 100 after their grace period, the rest at once.
    assert alerts["device.new"] == n and report["device_announcements"]["evicted"] == n - 100


def test_timers_past_their_bound_decide_early_and_lose_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,000 new devices may wait for their grace, but only 50 timers: the earliest are announced before their
    # time, counted, and every device is still announced once.
    monkeypatch.setattr(engine_module, "MAX_TIMERS", 50)
    monkeypatch.setattr(device, "MAX_WAITING", 1000)
    config = EngineConfig(flows=FlowConfig(max_flows=BOUND), max_devices=5000)
    eng = Engine(POLICY, VendorTable.load(), config)
    peak = 0
    rules: Counter[str] = Counter()
    for batch in floods.as_batches(floods.macs(800), 64):
        rules.update(a.rule.id for a in eng.feed(batch).alerts)
        peak = max(peak, len(eng._waiting))
        assert len(eng._timers) <= 2 * 50  # with the stale entries of those taken early
    rules.update(a.rule.id for a in eng.finish().alerts)
    rules.update(eng.gate.incidents.folded)
    assert peak <= 50 < eng.evictions()["timers"]
    assert rules["device.new"] == 800 and eng.evictions()["device_announcements"] == 0


def test_a_short_wait_scheduled_behind_many_long_ones_is_not_decided_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A camera opens TLS to a cloud the policy allows by name; its ClientHello comes 20 ms later, and egress
    # rule waits up to 3 s for it. 800 new devices each wait 5 s for their announcement, past the 50 timers
    # allowed: the timers taken early are the ones scheduled first, not the 3 s wait, which is due first.
    monkeypatch.setattr(engine_module, "MAX_TIMERS", 50)
    monkeypatch.setattr(device, "MAX_WAITING", 1000)
    allowed = "  - name: cloud vms\n    to: [vms.cloudvms.example.com]\n    ports: [443/tcp]\n"
    text = (Path(__file__).parents[2] / "examples" / "site-policy.yaml").read_text() + allowed
    policy = SitePolicy.from_yaml(text, "site-policy.yaml")
    t = floods.START_NS + 60 * MS
    hello = tls_client_hello("vms.cloudvms.example.com")
    tls = personas.tcp_timeline(
        HIK.mac, GW.mac, HIK.ip, "198.18.5.5", 42000, 443, [(t + 20 * MS, True, hello)]
    )
    eng = Engine(policy, VendorTable.load(), EngineConfig(max_devices=5000))
    rules: Counter[str] = Counter()
    for batch in floods.as_batches(sorted([*tls, *floods.macs(800)]), 512):
        rules.update(a.rule.id for a in eng.feed(batch).alerts)
    rules.update(a.rule.id for a in eng.finish().alerts)
    rules.update(eng.gate.incidents.folded)
    assert eng.evictions()["timers"] > 0 and rules["device.new"] == 801  # the camera is new too
    assert rules["egress.unexpected_destination"] == 0


def test_distinct_dns_names(engine: Engine) -> None:
    flood(engine, "dns", 3000)
    report = within_bounds(engine)
    assert report["dns_resolutions"]["size"] == BOUND and report["dns_resolutions"]["evicted"] == 3000 - BOUND
    # The newest answers are the ones kept.
    assert engine.analysis.resolutions.name_for("198.18.11.183") == "n2999.flood.example"
    assert engine.analysis.resolutions.name_for("198.18.0.0") is None


def test_distinct_rtsp_clients(engine: Engine) -> None:
    n = 1500
    alerts = flood(engine, "rtsp", n)
    report = within_bounds(engine)
    # One unauthorized client each at least (DESCRIBE and SETUP raise the same incident: its repeat alerts
    # again only when the gate forgot it at its bound); the gate counted what it forgot.
    assert n <= alerts["stream.unauthorized_client"] <= 2 * n
    assert report["incidents"]["size"] == BOUND and report["incidents"]["evicted"] >= n - BOUND
    # Each SETUP announces two client ports (RTP and RTCP).
    media = report["media_expectations"]
    assert media["size"] == 100 and media["evicted"] == 2 * n - 100
    # Each pull's decision waits 5 s, answered or not: 7,500 at this rate, held to the bound.
    assert report["timers"]["evicted"] > 0


def test_distinct_tunnelled_rtsp_sessions(engine: Engine) -> None:
    n = 1500
    alerts = flood(engine, "tunnels", n)
    report = within_bounds(engine)
    # Each session's state is kept until 100 newer ones came (its answers' half would pair with it), then
    # forgotten and counted; every pull is still reported, once (its answer not seen).
    shared = report["shared_states"]
    assert shared["size"] == 100 and shared["evicted"] == n - 100
    assert alerts["stream.unauthorized_client"] == n and engine.analysis.stats.internal_errors == 0
