"""Containment's metrics: the families docs/containment.md lists, counters that survive a reload of the
table, and the per-device cap."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.contain.metrics import ContainmentCollector, ContainmentStats

DOCS = Path(__file__).parents[3] / "docs" / "containment.md"


def scrape(stats: ContainmentStats) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(ContainmentCollector(stats))
    return {
        f"{s.name}{{{','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))}}}": s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }


def test_every_family_is_documented_with_its_type_and_labels() -> None:
    documented = {
        name: (kind, frozenset(re.findall(r"`(\w+)`", labels)))
        for name, kind, labels in re.findall(
            r"^\| `(camwatch_containment_\w+)` \| (\w+) \|([^|]*)\|", DOCS.read_text(), re.M
        )
    }
    stats = ContainmentStats("enforce", quarantine_limit=5)
    stats.count_apply("applied", 1_770_000_000.0)
    stats.count_device("44-19-b6-00-00-01", "blocked", 3)
    registry = CollectorRegistry()
    registry.register(ContainmentCollector(stats))
    exported = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        (name,) = {s.name for s in family.samples}
        exported[name] = (family.type, frozenset(k for s in family.samples for k in s.labels))
    assert exported == documented


def test_kernel_counters_stay_monotonic_across_reloads() -> None:
    stats = ContainmentStats("enforce")
    stats.kernel_counters({"dropped_policy": (10, 1000), "dropped_quarantine": (0, 0)})
    stats.kernel_counters({"dropped_policy": (15, 1500), "dropped_quarantine": (0, 0)})
    stats.before_reload({"dropped_policy": (17, 1700), "dropped_quarantine": (1, 60)})
    stats.kernel_counters(
        {"dropped_policy": (2, 200), "dropped_quarantine": (0, 0)}
    )  # a new table counts from 0
    m = scrape(stats)
    assert m["camwatch_containment_dropped_packets_total{reason=policy}"] == 19
    assert m["camwatch_containment_dropped_bytes_total{reason=policy}"] == 1900
    assert m["camwatch_containment_dropped_packets_total{reason=quarantine}"] == 1


def test_per_device_series_are_capped() -> None:
    stats = ContainmentStats("dry-run", max_device_series=2)
    for n, mac in enumerate(["a", "b", "c", "d", "a"]):
        stats.count_device(mac, "would_block", n + 1)
    m = scrape(stats)
    flows = {k: v for k, v in m.items() if k.startswith("camwatch_containment_device_flows_total")}
    assert flows == {
        "camwatch_containment_device_flows_total{action=would_block,mac=a}": 2,
        "camwatch_containment_device_flows_total{action=would_block,mac=b}": 1,
        "camwatch_containment_device_flows_total{action=would_block,mac=other}": 2,
    }
    assert m["camwatch_containment_device_packets_total{action=would_block,mac=other}"] == 3 + 4
    assert (
        m["camwatch_containment_mode{mode=dry-run}"] == 1
        and m["camwatch_containment_mode{mode=enforce}"] == 0
    )
    assert "camwatch_containment_last_apply_timestamp_seconds{}" not in m  # nothing applied yet
