"""The metrics: every component's collector (agent, engine, capture sources, outbox, MQTT sink, stream
probe, asset register, syslog sink, rotating flow file, MQTT data link) on a fresh registry, the catalogue
checked against docs/metrics.md, the per-device series cap, the HTTP(S) endpoint with basic auth, and a
real Prometheus scraping it (tests/agents/promserver.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gzip
import http.client
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from agents.capture.running import CaptureCollector, RunningSource
from agents.capture.source import CaptureStats
from agents.collectors import (
    AgentCollector,
    DeviceSummary,
    EngineCollector,
    EngineReading,
    ExternalTraffic,
    StateSaves,
)
from agents.config import BasicAuthConfig, MetricsConfig, Rotation, SyslogSettings
from agents.exports import RegisterCollector
from agents.incidents import IncidentCollector
from agents.learn.mode import LearningCollector, LearningReading
from agents.probe.metrics import StreamCollector, StreamStats
from agents.sinks.evidence import EvidenceSink, RingReading
from agents.sinks.jsonl import FileOutputsCollector, JsonLinesFile
from agents.sinks.mqtt import AlertPublisher, MqttSettings
from agents.sinks.mqtt_data import MqttDataLink
from agents.sinks.outbox import Outbox
from agents.sinks.prometheus import ExporterCollector, ExporterStats, MetricsServer
from agents.sinks.rotating import RotatingFile
from agents.sinks.syslog import SyslogSink
from lab import scenario
from monitor.alerts import NS, Alert, Endpoint, Incidents, Rule
from monitor.pcapfile import PacketBatch
from monitor.pcapwrite import pcap_bytes
from monitor.policy import SitePolicy
from monitor.register import AssetRegister
from monitor.registry import RULES
from tests.agents.promserver import (
    SKIP_REASON,
    ScrapeTarget,
    https_get,
    prometheus_binary,
    running_prometheus,
)
from tests.enginerun import run_engine

ROOT = Path(__file__).parents[2]
EXPLOIT = Rule("exploit.attempt", "exploit", 5)

DOCS = ROOT / "docs" / "metrics.md"
OPENSSL = shutil.which("openssl")
CAMERA = "44-19-b6-00-00-01"
START = 1_770_000_000.0


def exploit_alert(mac: str) -> Alert:
    """An alert about the device ``mac`` (its incident opens with it)."""
    return Alert(
        EXPLOIT, 1_700_000_000 * NS, f"e{mac}", "depot-7/gw-1", "m", Endpoint("10.0.0.5"), device_id=mac
    )


# --------------------------------------------------------------------------------------------------
# Helpers


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names) from the catalogue table in docs/metrics.md."""
    rows = re.findall(r"^\| `(camwatch_\w+)` \| (\w+) \|([^|]*)\|", DOCS.read_text(), re.MULTILINE)
    assert rows, "no catalogue table in docs/metrics.md"
    return {name: (kind, frozenset(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


class KernelCounted:
    """A live capture source as the capture collector sees it: only its kernel counters are read."""

    def __init__(self, interface: str, kernel_packets: int, kernel_drops: int) -> None:
        self.counters = CaptureStats(interface, kernel_packets=kernel_packets, kernel_drops=kernel_drops)

    def batches(self) -> Iterator[PacketBatch]:
        return iter(())

    def stats(self) -> CaptureStats:
        return self.counters

    def close(self) -> None:
        return None


def full_reading(**changes: object) -> EngineReading:
    """An engine reading where every engine family has at least one series."""
    reading = EngineReading(
        packets_truncated=1,
        packets_non_ip=2,
        packets_later_fragments=3,
        packets_undecoded={127: 5},
        packets_ipv6_ext_overflow=1,
        packets_decapsulated=6,
        defrag={"reassembled": 2, "conflict": 1},
        analyzer_packets={"dns": 10, "rtsp": 4},
        analyzer_parse_errors=1,
        flows_active=12,
        flows_created=40,
        flows_ended={"idle": 20, "active_timeout": 1, "closed": 7},
        flows_evicted=0,
        devices=(
            DeviceSummary(CAMERA, "hikvision", True, "scheduled"),
            DeviceSummary("3c-ef-8c-00-00-02", "dahua", True),
            DeviceSummary("00-11-22-33-44-55", "unknown", False),
        ),
        external={CAMERA: ExternalTraffic(5000, 800, 40, 10)},
        alerts_suppressed=4,
        evictions={"incidents": 2, "dns_resolutions": 0},
    )
    return dataclasses.replace(reading, **changes)  # type: ignore[arg-type]


ENTRANCE = StreamStats(
    up=True, fps=14.9, bitrate=600_000.0, keyframe_interval=2.0, codec="h264", width=640, height=360,
    problems={"black": False, "covered": False, "frozen": True}, last_probe=1_770_000_100.0,
    probe_duration=5.5, probes_ok=3, probes_failed=1,
)  # fmt: skip


class Site:
    """Every component the agent has metrics for, in a known state the tests change between scrapes:
    real capture-source records, a real outbox with the MQTT sink's channel, a real (unstarted) MQTT sink."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.alerts: dict[str, int] = {"egress.unexpected_destination": 2, "device.new": 3}
        self.state = StateSaves(failures=1, last_success=START + 60)
        self.eth1 = KernelCounted("eth1", 105, 5)
        self.sources = [
            RunningSource("eth1", self.eth1, live=True, packets=100, bytes=64_000),
            RunningSource(
                "eth2", KernelCounted("eth2", 7, 0), live=True, packets=7, bytes=700, finished=True
            ),
        ]
        self.reading = full_reading()
        self.streams = {"entrance": ENTRANCE}
        self.exporter = ExporterStats(open=3, auth_failures=7, throttled=2)
        self.alerts_file = JsonLinesFile("alerts_file", directory / "alerts.jsonl")
        self.exporter.closed["header_timeout"] = 4
        self.learning = LearningReading({"learning": 3, "enforcing": 2}, {"dns.vendor_cloud": 1}, 12, 0)
        self.outbox = Outbox.open(directory / "outbox.sqlite3")
        self.spool = self.outbox.channel("mqtt", 100, 1 << 20)
        self.spool.put(b"x" * 900, key="waiting", route="camwatch/depot-7/gw-1/alerts/3")
        settings = MqttSettings(host="127.0.0.1", site="depot-7", gateway="gw-1")
        self.publisher = AlertPublisher(settings, self.spool)
        self.publisher.connected = True
        self.publisher.published_total, self.publisher.publish_failures_total = 5, 1
        self.publisher.reconnects_total = 2
        self.incidents = Incidents()
        self.incidents.group(exploit_alert(CAMERA))
        self.incidents.folded = {"egress.unexpected_destination": 4}
        self.evidence = EvidenceSink(directory / "evidence", rings=lambda: RingReading(9, 4096, 2, 1))
        self.register = AssetRegister.parse(
            "mac,name,location,status,replace_by,owner\n"
            f"{CAMERA},Gate,North gate,scheduled,2026-03-31,Facilities\n"
            "44-19-b6-00-00-09,Yard,Yard,removed,2026-01-31,\n"
            "44-19-b6-00-00-0a,Door,,active,2026-02-28,\n"
            "not-a-mac,,,,,\n"
        )
        self.syslog = SyslogSink(
            SyslogSettings(host="127.0.0.1", protocol="tcp"), self.outbox.channel("syslog", 100, 1 << 20)
        )
        self.syslog.sent_total, self.syslog.send_failures_total = 3, 1
        self.flows_file = RotatingFile(directory / "flows.jsonl", Rotation(max_size=1 << 20), "flows_file")
        self.flows_file.write([b"{}"])
        self.data = MqttDataLink(settings)
        self.data.flows_published, self.data.inventory_published = 4, 1

    def registry(self, cap: int = 500) -> CollectorRegistry:
        """A fresh registry with every component's collector, as the agent registers them."""
        registry = CollectorRegistry()
        registry.register(AgentCollector(START, lambda: self.alerts, lambda: self.state))
        registry.register(CaptureCollector(self.sources))
        registry.register(
            EngineCollector(
                lambda: self.reading, flows_limit=200_000, devices_limit=50_000, max_device_series=cap
            )
        )
        registry.register(self.outbox.collector())
        registry.register(self.publisher.collector())
        registry.register(StreamCollector(lambda: self.streams))
        registry.register(IncidentCollector(self.incidents))
        registry.register(self.evidence.collector())
        registry.register(RegisterCollector(lambda: self.register, lambda: date(2026, 3, 1)))
        registry.register(self.syslog.collector())
        registry.register(self.flows_file.collector())
        registry.register(self.data.collector())
        registry.register(ExporterCollector(self.exporter))
        registry.register(FileOutputsCollector([self.alerts_file]))
        registry.register(LearningCollector(lambda: self.learning))  # only with a learning: section
        return registry

    def close(self) -> None:
        self.flows_file.close()
        self.outbox.close()
        asyncio.run(self.alerts_file.close())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    parts = Site(tmp_path)
    yield parts
    parts.close()


def minimal_registry() -> CollectorRegistry:
    """Only the agent's own collector (for the HTTP tests)."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(START, dict))
    return registry


def engine_registry(read: Callable[[], EngineReading], cap: int = 500) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(EngineCollector(read, max_device_series=cap))
    return registry


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted label items: value} from the text exposition format."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def device_series(samples: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> dict[str, float]:
    """mac -> external bytes out, from one scrape."""
    return {
        dict(labels)["mac"]: value
        for labels, value in samples["camwatch_device_external_bytes_total"].items()
        if dict(labels)["direction"] == "out"
    }


def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def server(site: Site) -> Iterator[MetricsServer]:
    srv = MetricsServer(site.registry(), "127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with openssl."""
    if OPENSSL is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "metrics.crt", directory / "metrics.key"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


# --------------------------------------------------------------------------------------------------
# The catalogue


def test_every_documented_metric_is_exported_with_its_type_and_labels(site: Site) -> None:
    docs = documented()
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(site.registry()).decode())}
    exported: dict[str, tuple[str, frozenset[str]]] = {}
    for family in families.values():
        names = {s.name for s in family.samples}
        assert len(names) == 1, names  # one series name per family: no _created, no histograms
        (name,) = names
        labels = frozenset(k for s in family.samples for k in s.labels)
        exported[name] = (family.type, labels)
    # The text format has no info type: an info metric is a gauge there.
    for name in [n for n, (kind, _) in docs.items() if kind == "info"]:
        assert exported.pop(name)[0] == "gauge" and docs[name][1] == families[name].samples[0].labels.keys()
        docs.pop(name)
    assert exported == docs


def test_naming_rules_of_design_2_4(site: Site) -> None:
    samples = scrape(site.registry())
    families = list(text_string_to_metric_families(generate_latest(site.registry()).decode()))
    for family in families:
        assert family.name.startswith("camwatch_"), family.name
        for sample in family.samples:
            # Counters end in _total; nothing else does.
            assert (family.type == "counter") == sample.name.endswith("_total"), sample.name
            # Site and gateway come from the scrape; destinations are never labels.
            assert not set(sample.labels) & {
                "site",
                "gateway",
                "ip",
                "port",
                "destination",
                "flow",
                "flow_id",
            }
    assert samples["camwatch_build_info"][(("python", pytest.importorskip("platform").python_version()),
                                           ("version", "0.1.0"))] == 1  # fmt: skip
    assert samples["camwatch_start_time_seconds"][()] == START
    assert samples["camwatch_capture_kernel_drops_total"][(("interface", "eth1"),)] == 5
    assert samples["camwatch_capture_up"][(("interface", "eth2"),)] == 0  # a live source that ended
    assert samples["camwatch_up"][()] == 1  # ... without an error
    assert samples["camwatch_devices"] == {
        (("status", "unregistered"), ("vendor", "dahua"), ("watched", "true")): 1,
        (("status", "scheduled"), ("vendor", "hikvision"), ("watched", "true")): 1,
        (("status", "unregistered"), ("vendor", "unknown"), ("watched", "false")): 1,
    }
    # The register on 2026-03-01: the door (due 2026-02-28) is overdue, the removed yard camera is not.
    assert samples["camwatch_replacements_overdue"][()] == 1
    assert samples["camwatch_register_assets"] == {
        (("status", "active"),): 1,
        (("status", "scheduled"),): 1,
        (("status", "removed"),): 1,
    }
    assert samples["camwatch_register_problems"][()] == 1
    gate = (("location", "North gate"), ("mac", CAMERA), ("name", "Gate"), ("owner", "Facilities"),
            ("replace_by", "2026-03-31"), ("status", "scheduled"))  # fmt: skip
    assert samples["camwatch_asset_info"][gate] == 1
    assert samples["camwatch_syslog_sent_total"][()] == 3
    assert samples["camwatch_output_records_written_total"][(("output", "flows_file"),)] == 1
    assert samples["camwatch_output_disk_bytes"][(("output", "flows_file"),)] == 3
    assert samples["camwatch_mqtt_flows_published_total"][()] == 4
    assert samples["camwatch_flows_ended_total"][(("reason", "closed"),)] == 7
    assert samples["camwatch_flows_limit"][()] == 200_000
    assert samples["camwatch_alerts_suppressed_total"][()] == 4
    assert samples["camwatch_spool_bytes"][()] == 900
    assert samples["camwatch_spool_alerts"][()] == 1
    assert samples["camwatch_mqtt_connected"][()] == 1
    assert samples["camwatch_mqtt_reconnects_total"][()] == 2


def test_every_rule_has_an_alert_series_from_the_start() -> None:
    registry = CollectorRegistry()
    registry.register(AgentCollector(START, dict))
    rules = {
        dict(labels)["rule"]: value for labels, value in scrape(registry)["camwatch_alerts_total"].items()
    }
    assert rules == dict.fromkeys(RULES, 0.0)
    # A rule the catalogue does not know yet still shows up.
    registry = CollectorRegistry()
    registry.register(AgentCollector(START, lambda: {"exploit.hikvision_cve_2021_36260": 1}))
    samples = scrape(registry)
    assert samples["camwatch_alerts_total"][(("rule", "exploit.hikvision_cve_2021_36260"),)] == 1


def test_a_capture_file_has_no_kernel_series_and_a_failed_source_is_down() -> None:
    replay = RunningSource("x.pcap", KernelCounted("x.pcap", 0, 0), live=False, packets=3, finished=True)
    failed = RunningSource("eth3", KernelCounted("eth3", 9, 1), live=True, error="the interface went away")
    registry = CollectorRegistry()
    registry.register(CaptureCollector([replay]))
    samples = scrape(registry)
    assert "camwatch_capture_kernel_drops_total" not in samples
    assert samples["camwatch_capture_packets_total"] == {(("interface", "x.pcap"),): 3}
    assert samples["camwatch_capture_up"] == {(("interface", "x.pcap"),): 0}  # ended: not reading any more
    assert samples["camwatch_capture_finished"] == {(("interface", "x.pcap"),): 1}
    assert samples["camwatch_up"][()] == 1  # ... which is not a failure
    registry = CollectorRegistry()
    registry.register(CaptureCollector([replay, failed]))
    samples = scrape(registry)
    assert samples["camwatch_up"][()] == 0
    assert samples["camwatch_capture_up"][(("interface", "eth3"),)] == 0
    assert samples["camwatch_capture_kernel_drops_total"] == {(("interface", "eth3"),): 1}


def test_optional_components_have_no_series_when_absent() -> None:
    registry = CollectorRegistry()
    registry.register(AgentCollector(START, dict))
    registry.register(CaptureCollector([]))
    registry.register(EngineCollector(full_reading))
    samples = scrape(registry)
    assert not [n for n in samples if n.startswith(("camwatch_mqtt_", "camwatch_spool_", "camwatch_stream_"))]
    # Without configured bounds, no limit series.
    assert "camwatch_flows_limit" not in samples and "camwatch_devices_limit" not in samples


def test_openmetrics_exposition_parses(site: Site) -> None:
    # Prometheus asks for OpenMetrics: the info type and counter suffixes must come out right there too.
    text = generate_openmetrics(site.registry()).decode()  # type: ignore[no-untyped-call]
    families = {f.name: f for f in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    assert families["camwatch_build"].type == "info"
    assert families["camwatch_capture_bytes"].type == "counter"
    assert families["camwatch_capture_bytes"].unit == "bytes"
    assert families["camwatch_capture_bytes"].samples[0].name == "camwatch_capture_bytes_total"


def test_registration_reads_no_component(site: Site) -> None:
    """describe() names every family without collecting, and two collectors of one family clash."""

    def boom() -> NoReturn:
        raise AssertionError("a component was read at registration")

    collectors: list[Any] = [
        AgentCollector(START, boom, boom),
        CaptureCollector(BoomList()),
        EngineCollector(boom),
        StreamCollector(boom),
        LearningCollector(boom),
        site.outbox.collector(),
        site.publisher.collector(),
        IncidentCollector(site.incidents),
        EvidenceSink(site.directory / "evidence2", rings=boom).collector(),
        RegisterCollector(boom, boom),
        site.syslog.collector(),
        site.flows_file.collector(),
        site.data.collector(),
        ExporterCollector(BoomStats()),
        FileOutputsCollector(BoomFiles()),
    ]
    registry = CollectorRegistry()
    names: set[str] = set()
    for collector in collectors:
        names |= {m.name for m in collector.describe()}
        registry.register(collector)
    assert {"camwatch_flows_active", "camwatch_mqtt_connected", "camwatch_spool_near_full"} <= names
    # Every documented family (an info family's series has "_info" after its name).
    assert {re.sub(r"_(total|info)$", "", name) for name in documented()} <= names
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(EngineCollector(full_reading))


class BoomStats(ExporterStats):
    def __getattribute__(self, name: str) -> Any:
        raise AssertionError("the endpoint's counters were read at registration")


class BoomFiles(list[JsonLinesFile]):
    def __iter__(self) -> Iterator[JsonLinesFile]:
        raise AssertionError("the output files were read at registration")


class BoomList(list[RunningSource]):
    def __iter__(self) -> Iterator[RunningSource]:
        raise AssertionError("the capture sources were read at registration")


class CountingLock:
    """A lock that records how often it was taken, and whether it was held when the engine was read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0
        self.held = False

    def __enter__(self) -> bool:
        self._lock.__enter__()
        self.taken += 1
        self.held = True
        return True

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.held = False
        self._lock.__exit__(et, ev, tb)


# --------------------------------------------------------------------------------------------------
# The per-device series cap


def traffic(n: int) -> dict[str, ExternalTraffic]:
    """n devices; device i sent (i + 1) * 1000 bytes."""
    return {f"02-00-00-00-00-{i:02x}": ExternalTraffic((i + 1) * 1000, i, i + 1, i) for i in range(n)}


def test_device_series_are_capped_and_the_rest_summed_into_other() -> None:
    external = traffic(10)
    devices = tuple(DeviceSummary(mac, "hikvision", True) for mac in external)
    samples = scrape(engine_registry(lambda: EngineReading(external=external, devices=devices), cap=3))
    out = device_series(samples)
    top = ["02-00-00-00-00-09", "02-00-00-00-00-08", "02-00-00-00-00-07"]
    assert sorted(out) == sorted([*top, "other"])
    assert out["other"] == sum((i + 1) * 1000 for i in range(7))
    assert sum(out.values()) == sum(t.bytes_out for t in external.values())
    assert samples["camwatch_device_series_dropped"][()] == 7
    labels = {dict(k)["mac"]: dict(k)["vendor"] for k in samples["camwatch_device_external_packets_total"]}
    assert labels == {**dict.fromkeys(top, "hikvision"), "other": "other"}
    # 4 series per device (bytes/packets x in/out), never more than the cap + 1 devices.
    assert len(samples["camwatch_device_external_bytes_total"]) == 2 * 4


def test_cap_zero_puts_every_device_in_other() -> None:
    samples = scrape(engine_registry(lambda: EngineReading(external=traffic(5)), cap=0))
    assert device_series(samples) == {"other": 15000}
    assert samples["camwatch_device_series_dropped"][()] == 5


def test_a_flood_of_spoofed_macs_adds_no_series_and_counters_never_go_down() -> None:
    state = {"external": traffic(3)}
    registry = engine_registry(lambda: EngineReading(external=state["external"]), cap=3)
    first = device_series(scrape(registry))
    assert set(first) == {*traffic(3), "other"}
    # Thousands of spoofed MACs with a packet each: the three real devices keep their series.
    flood = {f"06-00-00-00-{i >> 8:02x}-{i & 255:02x}": ExternalTraffic(60, 0, 1, 0) for i in range(5000)}
    state["external"] = {**traffic(3), **flood}
    second = device_series(scrape(registry))
    assert set(second) == set(first)
    assert second["other"] == 5000 * 60
    # A big newcomer displaces the smallest device; "other" keeps growing, nothing decreases.
    big = {"0a-00-00-00-00-01": ExternalTraffic(10_000_000, 0, 10_000, 0)}
    grown = {mac: t._replace(bytes_out=t.bytes_out + 500) for mac, t in traffic(3).items()}
    state["external"] = {**grown, **flood, **big}
    third = device_series(scrape(registry))
    assert "0a-00-00-00-00-01" in third and "02-00-00-00-00-00" not in third
    assert third["other"] >= second["other"]
    assert third["0a-00-00-00-00-01"] == 10_000_000  # new since the last scrape: not counted elsewhere
    # The displaced device's further traffic goes to "other", whose increase is exactly that.
    state["external"] = {
        **grown,
        **flood,
        **big,
        "02-00-00-00-00-00": ExternalTraffic(1000 + 500 + 77, 0, 1, 0),
    }
    fourth = device_series(scrape(registry))
    assert fourth["other"] - third["other"] == 77
    for mac in set(third) & set(fourth):
        assert fourth[mac] >= third[mac]


def test_similar_devices_do_not_swap_series_at_every_scrape() -> None:
    state = {
        "external": {"02-00-00-00-00-01": ExternalTraffic(1000), "02-00-00-00-00-02": ExternalTraffic(900)}
    }
    registry = engine_registry(lambda: EngineReading(external=state["external"]), cap=1)
    assert set(device_series(scrape(registry))) == {"02-00-00-00-00-01", "other"}
    state["external"] = {
        "02-00-00-00-00-01": ExternalTraffic(1000),
        "02-00-00-00-00-02": ExternalTraffic(1500),
    }
    assert set(device_series(scrape(registry))) == {"02-00-00-00-00-01", "other"}  # less than twice as much
    state["external"] = {
        "02-00-00-00-00-01": ExternalTraffic(1000),
        "02-00-00-00-00-02": ExternalTraffic(2500),
    }
    assert set(device_series(scrape(registry))) == {"02-00-00-00-00-02", "other"}


def test_vendor_label_values_are_bounded() -> None:
    devices = tuple(
        DeviceSummary(f"02-00-00-00-{i >> 8:02x}-{i & 255:02x}", f"vendor{i}", False) for i in range(300)
    )
    samples = scrape(engine_registry(lambda: EngineReading(devices=devices)))
    vendors = {dict(k)["vendor"] for k in samples["camwatch_devices"]}
    assert len(vendors) == 65 and "other" in vendors
    assert sum(samples["camwatch_devices"].values()) == 300


# --------------------------------------------------------------------------------------------------
# From a real engine


def test_the_engine_collector_reads_an_engine_that_saw_the_demo_site_under_its_lock(tmp_path: Path) -> None:
    pcap = tmp_path / "demo.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    policy = SitePolicy.from_yaml((ROOT / "examples" / "site-policy.yaml").read_text())
    engine, _, alerts = run_engine(pcap, policy=policy)
    reading = EngineReading.of(engine)
    assert reading.flows_created == engine.flows.stats.created > 0
    assert len(reading.devices) == len(engine.inventory) > 0
    assert reading.alerts_suppressed == engine.gate.suppressed
    assert reading.external, "the demo site has cameras talking to the Internet"
    assert all(re.fullmatch(r"([0-9a-f]{2}-){5}[0-9a-f]{2}", mac) for mac in reading.external)
    lock = CountingLock()
    collector = EngineCollector.of_engine(
        engine, lock, flows_limit=1000, devices_limit=100, max_device_series=2
    )
    registry = CollectorRegistry()
    registry.register(collector)
    assert lock.taken == 0  # registering does not read the engine
    samples = scrape(registry)
    assert lock.taken == 1 and not lock.held  # one short hold per scrape, released
    assert samples["camwatch_flows_total"][()] == engine.flows.stats.created
    assert samples["camwatch_flows_limit"][()] == 1000 and samples["camwatch_devices_limit"][()] == 100
    assert sum(samples["camwatch_analyzer_packets_total"].values()) == sum(
        engine.analysis.stats.by_protocol.values()
    )
    watched = sum(v for k, v in samples["camwatch_devices"].items() if dict(k)["watched"] == "true")
    assert watched == sum(1 for d in engine.inventory if d.watched) > 0
    assert len(alerts) > 0
    assert sum(device_series(samples).values()) == sum(t.bytes_out for t in reading.external.values())
    # Every bounded table has its eviction series from the start (tests/monitor/test_floods.py fills them).
    assert samples["camwatch_table_evictions_total"] == {
        (("table", t),): n for t, n in engine.evictions().items()
    }
    assert {"devices", "dns_resolutions", "incidents", "upstream_flows"} <= set(engine.evictions())


# --------------------------------------------------------------------------------------------------
# The HTTP endpoint


def test_metrics_endpoint_and_landing_page(server: MetricsServer) -> None:
    status, headers, body = get(server.url)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "camwatch_flows_active" in names
    status, headers, body = get(server.url.replace("/metrics", "/"))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="metrics"' in body and b"0.1.0" in body
    assert get(server.url.replace("/metrics", "/nope"))[0] == 404
    status, _, body = get(server.url, method="HEAD")
    assert status == 200 and body == b""


def test_openmetrics_and_gzip_when_asked(server: MetricsServer) -> None:
    status, headers, body = get(
        server.url,
        {
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            "Accept-Encoding": "gzip",
        },
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    families = {f.name for f in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    assert families >= {"camwatch_build", "camwatch_alerts"}


def test_keep_alive_serves_several_scrapes_on_one_connection(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.status == 200 and b"camwatch_up" in resp.read()
    finally:
        conn.close()


def test_a_failing_collector_answers_500_and_the_server_keeps_serving() -> None:
    calls = {"n": 0}

    def flaky() -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine lock timeout")
        return {}

    registry = CollectorRegistry()
    registry.register(AgentCollector(START, flaky))
    with MetricsServer(registry, "127.0.0.1", 0) as srv:
        assert get(srv.url)[0] == 500
        assert get(srv.url)[0] == 200


def test_basic_auth(tmp_path: Path, site: Site) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret: with spaces\n")
    password_file.chmod(0o600)
    config = MetricsConfig(
        listen="127.0.0.1", port=0, basic_auth=BasicAuthConfig("prometheus", password_file)
    )
    with MetricsServer.from_config(config, site.registry(), process_metrics=False) as srv:
        status, headers, _ = get(srv.url)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith('Basic realm="camwatch"')
        assert get(srv.url.replace("/metrics", "/"))[0] == 401  # the landing page too
        assert get(srv.url, basic("prometheus", "wrong"))[0] == 401
        assert get(srv.url, basic("other", "s3cret: with spaces"))[0] == 401
        assert get(srv.url, {"Authorization": "Basic !!!not-base64"})[0] == 401
        assert get(srv.url, {"Authorization": "Bearer s3cret"})[0] == 401
        status, _, body = get(srv.url, basic("prometheus", "s3cret: with spaces"))
        assert status == 200 and b"camwatch_up" in body


def test_from_config_registers_process_metrics(site: Site) -> None:
    config = MetricsConfig(listen="127.0.0.1", port=0)
    with MetricsServer.from_config(config, site.registry()) as srv:
        _, _, body = get(srv.url)
    assert b"process_resident_memory_bytes" in body and b"camwatch_flows_total" in body


def test_tls(certificate: tuple[Path, Path], site: Site) -> None:
    cert, key = certificate
    with MetricsServer(
        site.registry(),
        "127.0.0.1",
        0,
        tls_cert_file=cert,
        tls_key_file=key,
        basic_auth=("u", "p"),
    ) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        status, body = https_get(srv.url, cert, basic("u", "p"))
        assert status == 200 and b"camwatch_capture_packets_total" in body
        assert https_get(srv.url, cert)[0] == 401
        # Plain HTTP to the TLS port gets no metrics, and the server survives it.
        with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
            urllib.request.urlopen(srv.url.replace("https:", "http:"), timeout=5).read()
        # An untrusted certificate is refused by a verifying client.
        with pytest.raises(urllib.error.URLError) as info:
            urllib.request.urlopen(srv.url, timeout=5, context=ssl.create_default_context())
        assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
        # A client that connects and says nothing does not block other scrapes (the handshake runs
        # off the accept loop).
        with socket.create_connection(("127.0.0.1", srv.port)):
            assert https_get(srv.url, cert, basic("u", "p"))[0] == 200


def test_a_renewed_certificate_is_picked_up(
    tmp_path: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agents.sinks.prometheus._TlsFiles.CHECK_SECONDS", 0.0)
    cert, key = tmp_path / "m.crt", tmp_path / "m.key"
    shutil.copy(certificate[0], cert)
    shutil.copy(certificate[1], key)
    with MetricsServer(minimal_registry(), "127.0.0.1", 0, tls_cert_file=cert, tls_key_file=key) as srv:
        assert https_get(srv.url, certificate[0])[0] == 200
        assert OPENSSL is not None
        subprocess.run(
            [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=renewed",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        os.utime(cert, (time.time() + 5, time.time() + 5))  # a new mtime even within the same clock tick
        assert https_get(srv.url, cert)[0] == 200  # trusted with the new certificate only
        with pytest.raises(urllib.error.URLError):
            https_get(srv.url, certificate[0])


def connect_from(address: str, port: int) -> socket.socket:
    """A TCP connection to the endpoint from ``address`` (any 127.x.y.z is this host's)."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_total(srv: MetricsServer, reason: str) -> int:
    return srv.stats.closed[reason]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


class Trickler(threading.Thread):
    """A client that never finishes its request head: a header line now and then, and a new connection
    as soon as the server closes one (as the attack of issue 16 did, every 10 s; here every 0.2 s)."""

    def __init__(self, address: str, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.address, self.port, self.stop_event = address, port, stop
        self.connections = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                with connect_from(self.address, self.port) as sock:
                    self.connections += 1
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                    while not self.stop_event.wait(0.2):
                        sock.sendall(b"X-Slow: 1\r\n")
            except OSError:  # closed by the server: connect again
                continue


def test_slow_and_idle_connections_never_starve_the_scrapes() -> None:
    """40 connections trickling a header line (from one address and from 20) and 500 idle ones (from one
    address and from 400): every scrape is answered, and the endpoint says what it closed."""
    stop = threading.Event()
    idle: list[socket.socket] = []
    with MetricsServer(minimal_registry(), "127.0.0.1", 0) as srv:
        tricklers = [Trickler("127.0.0.1", srv.port, stop) for _ in range(20)]
        tricklers += [Trickler(f"127.2.0.{n + 1}", srv.port, stop) for n in range(20)]
        try:
            for t in tricklers:
                t.start()
            idle += [connect_from("127.0.0.1", srv.port) for _ in range(100)]
            idle += [connect_from(f"127.1.{n // 200}.{n % 200 + 1}", srv.port) for n in range(400)]
            codes = []
            for _ in range(30):
                with urllib.request.urlopen(srv.url, timeout=10) as resp:
                    codes.append(resp.status)
            assert codes == [200] * 30
            # A scrape from an address that also holds idle connections gets through too.
            with urllib.request.urlopen(srv.url, timeout=10) as resp:
                assert resp.status == 200
            # At most 256 open at once (16 from one address): of the 570 connections (500 idle, 40
            # tricklers, 30 scrapes), the others are closed to make room (or at their deadline on a slow
            # machine). The kernel completes a connection before the server accepts it: on a busy machine
            # the last idle ones are accepted (and others evicted for them) after the scrapes, so wait.
            deadline = time.monotonic() + 30
            while True:
                closed = scrape_registry(srv)["camwatch_metrics_connections_closed_total"]
                made_room = closed[(("reason", "evicted"),)] + closed[(("reason", "header_timeout"),)]
                if made_room >= 570 - 256 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            stop.set()
            for sock in idle:
                sock.close()
        assert made_room >= 570 - 256
        assert closed[(("reason", "full"),)] == 0  # nobody was refused: waiting connections made room


def scrape_registry(srv: MetricsServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    registry.register(srv.collector())
    return scrape(registry)


def test_a_connection_that_never_completes_its_request_is_closed_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("agents.sinks.prometheus.HEAD_TIMEOUT", 0.3)
    with MetricsServer(minimal_registry(), "127.0.0.1", 0) as srv, caplog.at_level(logging.WARNING):
        with socket.create_connection(("127.0.0.1", srv.port)) as silent:
            silent.settimeout(30)
            assert silent.recv(100) == b""  # closed by the server, nothing sent
        with socket.create_connection(("127.0.0.1", srv.port)) as slow:
            slow.settimeout(30)
            slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            assert slow.recv(100) == b""
        assert srv.stats.closed["header_timeout"] == 2
        assert get(srv.url)[0] == 200
    lines = [r.getMessage() for r in caplog.records if "without a complete request" in r.getMessage()]
    assert len(lines) == 1  # one line a minute at most, however many


def test_one_client_gets_a_bounded_number_of_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.sinks.prometheus.MAX_PER_CLIENT", 3)
    with MetricsServer(minimal_registry(), "127.0.0.1", 0) as srv:
        held = [connect_from("127.3.0.1", srv.port) for _ in range(3)]
        try:
            wait_until(lambda: srv.stats.open == 3, "the connections were never accepted")
            # A fourth from that client: it replaces the client's oldest waiting connection.
            extra = connect_from("127.3.0.1", srv.port)
            held.append(extra)
            wait_until(lambda: srv.stats.closed["evicted"] == 1, "no connection was replaced")
            held[0].settimeout(30)
            assert held[0].recv(100) == b""  # the oldest was closed
            assert srv.stats.open == 3
            # While the client's connections are all being answered it gets no more (not testable without
            # a client that stalls mid-answer); another client is not affected at all.
            assert get(srv.url)[0] == 200
        finally:
            for sock in held:
                sock.close()


def test_when_full_the_oldest_unanswered_connection_makes_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.sinks.prometheus.MAX_CONNECTIONS", 4)
    with MetricsServer(minimal_registry(), "127.0.0.1", 0) as srv:
        kept = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)  # answered once, kept alive
        kept.request("GET", "/metrics")
        assert kept.getresponse().read()
        idle = [connect_from(f"127.4.0.{n + 1}", srv.port) for n in range(3)]
        try:
            wait_until(lambda: srv.stats.open == 4, "not all accepted")
            assert get(srv.url)[0] == 200  # a new connection: the oldest one never answered made room
            assert srv.stats.closed["evicted"] == 1
            idle[0].settimeout(30)
            assert idle[0].recv(100) == b""
            kept.request("GET", "/metrics")  # the answered connection is still there
            assert kept.getresponse().status == 200
        finally:
            kept.close()
            for sock in idle:
                sock.close()


def test_wrong_passwords_are_throttled_per_client(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("right\n")
    config = MetricsConfig(listen="127.0.0.1", port=0, basic_auth=BasicAuthConfig("prom", password_file))
    with (
        MetricsServer.from_config(config, minimal_registry(), process_metrics=False) as srv,
        caplog.at_level(logging.WARNING),
    ):
        attacker = [request_from("127.5.0.1", srv.port, basic("prom", f"guess{n}")) for n in range(50)]
        assert attacker[:5] == [401] * 5  # a few tries, then no more password checks from that address
        assert attacker[5:] == [429] * 45
        assert request_from("127.5.0.1", srv.port, basic("prom", "right")) == 429  # not even the right one
        assert request_from("127.5.0.2", srv.port, basic("prom", "right")) == 200  # others are not affected
        assert request_from("127.5.0.2", srv.port, {}) == 401  # no credentials: not a guess, not counted
        assert request_from("127.5.0.2", srv.port, basic("prom", "right")) == 200
        samples = scrape_registry(srv)
    assert samples["camwatch_metrics_auth_failures_total"][()] == 6
    assert samples["camwatch_metrics_requests_throttled_total"][()] == 46
    (line,) = [r.getMessage() for r in caplog.records if "wrong passwords from" in r.getMessage()]
    assert "127.5.0.1" in line and "429" in line


def request_from(address: str, port: int, headers: dict[str, str]) -> int:
    with contextlib.closing(
        http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(address, 0))
    ) as conn:
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
        return response.status


def test_start_binds_in_the_caller_and_reports_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        srv = MetricsServer(minimal_registry(), "127.0.0.1", port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            srv.start()
    srv = MetricsServer(minimal_registry(), "127.0.0.1", 0)
    srv.start()
    try:
        assert srv.port != 0
        with socket.create_connection(("127.0.0.1", srv.port)):
            pass  # accepting right after start(): the socket was bound and listening
    finally:
        srv.stop()
        srv.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1)


def test_ipv6_listen() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with MetricsServer(minimal_registry(), "::1", 0) as srv:
            assert srv.url.startswith("http://[::1]:")
            assert get(srv.url)[0] == 200
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")


# --------------------------------------------------------------------------------------------------
# A real Prometheus


needs_prometheus = pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)


@needs_prometheus
def test_real_prometheus_scrapes_the_documented_metrics_and_sees_them_move(
    tmp_path: Path, site: Site
) -> None:
    with (
        MetricsServer(site.registry(), "127.0.0.1", 0) as srv,
        running_prometheus(tmp_path / "prom", [ScrapeTarget(f"127.0.0.1:{srv.port}")]) as prom,
    ):
        eth1 = 'camwatch_capture_packets_total{job="camwatch", interface="eth1"}'
        prom.wait_for(eth1, lambda v: v == 100)
        assert prom.value('up{job="camwatch"}') == 1
        # Every documented metric is stored, under its documented name.
        stored = {
            r["metric"]["__name__"] for r in prom.query('count by (__name__) ({__name__=~"camwatch_.+"})')
        }
        assert stored == set(documented())
        # Site and gateway come from the scrape configuration, not from the exporter.
        (series,) = prom.query(eth1)
        assert series["metric"]["site"] == "test-site" and series["metric"]["gateway"] == "gw-test"
        # More packets and a new alert: Prometheus sees both move.
        before = prom.value('camwatch_alerts_total{rule="stream.egress"}')
        assert before == 0
        site.alerts = {**site.alerts, "stream.egress": 1}
        site.sources[0].packets, site.sources[0].bytes = 250, 160_000
        site.eth1.counters = CaptureStats("eth1", kernel_packets=260, kernel_drops=10)
        prom.wait_for(eth1, lambda v: v == 250)
        prom.wait_for('camwatch_alerts_total{rule="stream.egress"}', lambda v: v == 1)
        assert prom.value('increase(camwatch_alerts_total{rule="stream.egress"}[1m])') > 0  # type: ignore[operator]
        assert prom.value('camwatch_capture_kernel_drops_total{interface="eth1"}') == 10
        info = prom.query("camwatch_build_info")
        assert info[0]["metric"]["version"] == "0.1.0"


@needs_prometheus
def test_real_prometheus_scrapes_over_tls_with_basic_auth(
    tmp_path: Path, certificate: tuple[Path, Path], site: Site
) -> None:
    cert, key = certificate
    password_file = tmp_path / "scrape.password"
    password_file.write_text("correct horse\n")
    password_file.chmod(0o600)
    config = MetricsConfig(
        listen="127.0.0.1",
        port=0,
        tls_cert_file=cert,
        tls_key_file=key,
        basic_auth=BasicAuthConfig("prometheus", password_file),
    )
    good = ScrapeTarget(
        "", job="good", scheme="https", basic_auth=("prometheus", password_file), ca_file=cert
    )
    bad_password = tmp_path / "bad.password"
    bad_password.write_text("wrong\n")
    bad = dataclasses.replace(good, job="bad", basic_auth=("prometheus", bad_password))
    with MetricsServer.from_config(config, site.registry()) as srv:
        address = f"127.0.0.1:{srv.port}"
        targets = [dataclasses.replace(good, address=address), dataclasses.replace(bad, address=address)]
        with running_prometheus(tmp_path / "prom", targets) as prom:
            prom.wait_for('camwatch_flows_active{job="good"}', lambda v: v == 12)
            prom.wait_for('up{job="bad"}', lambda v: v == 0)
            assert prom.value('camwatch_flows_active{job="bad"}') is None
            assert prom.value('process_resident_memory_bytes{job="good"}') > 0  # type: ignore[operator]


def test_stream_probe_series_follow_each_cameras_last_probe() -> None:
    streams = {
        "entrance": ENTRANCE,
        "yard": StreamStats(),  # configured, not probed yet
        "gate": StreamStats(
            up=False, fps=0.0, bitrate=0.0, codec="hevc", width=1920, height=1080,
            last_probe=1_770_000_200.0, probe_duration=15.0, probes_ok=2, probes_failed=5,
        ),
    }  # fmt: skip
    samples = scrape(stream_registry(streams))

    def by_camera(name: str) -> dict[str, float]:
        return {dict(labels)["camera"]: value for labels, value in samples.get(name, {}).items()}

    assert by_camera("camwatch_stream_up") == {"entrance": 1.0, "gate": 0.0}
    assert by_camera("camwatch_stream_frames_per_second") == {"entrance": 14.9, "gate": 0.0}
    assert by_camera("camwatch_stream_keyframe_interval_seconds") == {"entrance": 2.0}
    assert by_camera("camwatch_stream_probe_duration_seconds") == {"entrance": 5.5, "gate": 15.0}
    assert samples["camwatch_stream_probes_total"][(("camera", "yard"), ("result", "ok"))] == 0
    assert samples["camwatch_stream_probes_total"][(("camera", "gate"), ("result", "failed"))] == 5
    # The picture of a camera that is down cannot be judged: no verdict rather than a false "fine".
    assert samples["camwatch_stream_image_problem"] == {
        (("camera", "entrance"), ("problem", p)): float(p == "frozen") for p in ("black", "covered", "frozen")
    }
    # What the camera served when it was last up.
    assert samples["camwatch_stream_info"] == {
        (("camera", "entrance"), ("codec", "h264"), ("height", "360"), ("width", "640")): 1.0,
        (("camera", "gate"), ("codec", "hevc"), ("height", "1080"), ("width", "1920")): 1.0,
    }
    # Cameras not probed yet have only their probe counters.
    assert set(scrape(stream_registry({"yard": StreamStats()}))) == {"camwatch_stream_probes_total"}


def stream_registry(streams: dict[str, StreamStats]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StreamCollector(lambda: streams))
    return registry


def test_open_incidents_are_series_by_device_and_incident_except_for_learning_devices() -> None:
    """One series per open incident, labelled with the id its alerts carry (what Alertmanager groups on);
    a device that learns has none (its alerts do not page)."""
    book = Incidents()
    recorder = "3c-ef-8c-00-00-02"
    sent = [book.group(exploit_alert(mac)) for mac in (CAMERA, recorder)]
    ids = {a.device_id: a.incident.id for a in sent if a is not None and a.incident is not None}
    quiet_camera: Callable[[str], bool] = {CAMERA}.__contains__
    for quiet, expected in ((None, {CAMERA, recorder}), (quiet_camera, {recorder})):
        registry = CollectorRegistry()
        registry.register(IncidentCollector(book, quiet=quiet))
        samples = scrape(registry)
        want = {(("device", d), ("incident", ids[d])) for d in expected}
        assert samples["camwatch_incident_severity"] == dict.fromkeys(want, 5.0)
        assert samples["camwatch_incident_alerts"] == dict.fromkeys(want, 1.0)


def test_frames_the_engine_could_not_read_are_counted_by_link_type(tmp_path: Path) -> None:
    # A real engine over a capture of one 802.11 radiotap frame (link type 127), and its scrape.
    import struct

    from agents.collectors import EngineCollector
    from tests.enginerun import run_engine

    frame = b"\x00\x00\x08\x00\x00\x00\x00\x00" + b"\x08\x00" + bytes(30)
    path = tmp_path / "wifi.pcap"
    path.write_bytes(
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 127)
        + struct.pack("<IIII", 1, 0, len(frame), len(frame))
        + frame
    )
    engine, _, _ = run_engine(path)
    registry = CollectorRegistry()
    registry.register(EngineCollector(lambda: EngineReading.of(engine)))
    samples = scrape(registry)
    assert samples["camwatch_packets_undecoded_total"] == {(("linktype", "127"),): 1.0}
    assert samples["camwatch_packets_non_ip_total"] == {(): 0.0}
    assert samples["camwatch_packets_decapsulated_total"] == {(): 0.0}
