"""A capture source's life in the real agent: a failing source is restarted with backoff (one log line per
failure, ``camwatch_capture_restarts_total``, ``camwatch_capture_up`` back to 1, one ``agent.capture_failed``
alert per outage), and a capture file that ends is said to have ended, its flows written."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.capture.running import RunningSource, failure_alert, restart_delay
from agents.capture.source import CaptureStats
from agents.config import AgentConfig
from agents.runtime import Agent
from lab import scenario
from monitor.pcapfile import CaptureParser, PacketBatch
from monitor.pcapwrite import pcap_bytes
from monitor.registry import RULES
from tests.agents.promserver import free_port
from tests.enginerun import vendors

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"


def site_batches(seconds: float = 4.0) -> list[PacketBatch]:
    shape = scenario.SiteShape(hik_cameras=1, seconds=seconds, video_pps=20)
    parser = CaptureParser("site", batch_size=64)
    return [*parser.feed(pcap_bytes(scenario.site_packets(shape))), *parser.flush()]


class FlakySource:
    """A live-like source: the first ``fail_reads`` calls of batches() yield a few batches and raise; after
    that it yields the rest and then idles (empty batches) until closed, as a quiet interface does."""

    def __init__(self, batches: list[PacketBatch], fail_reads: int) -> None:
        self._batches = list(batches)
        self.fail_reads = fail_reads
        self.reads = 0
        self._closed = threading.Event()

    def batches(self) -> Iterator[PacketBatch]:
        self.reads += 1
        if self.reads <= self.fail_reads:
            for _ in range(2):
                if self._batches:
                    yield self._batches.pop(0)
            raise OSError(100, "Network is down")
        while self._batches and not self._closed.is_set():
            yield self._batches.pop(0)
        while not self._closed.wait(0.02):
            yield no_packets()

    def stats(self) -> CaptureStats:
        return CaptureStats("flaky0")

    def close(self) -> None:
        self._closed.set()


def no_packets() -> PacketBatch:
    """What an idle live source yields now and then."""
    empty = np.zeros(0, dtype=np.int64)
    return PacketBatch(np.zeros(0, dtype=np.uint8), empty, empty, empty, empty, np.zeros(0, dtype=np.uint16))


class AgentWith(Agent):
    """The real agent, reading ``source`` instead of an interface (no root, no namespace needed)."""

    def __init__(self, config: AgentConfig, source: Any) -> None:
        super().__init__(config, vendors())
        self._test_source = source

    def _open_sources(self) -> None:
        self.sources.append(RunningSource("flaky0", self._test_source, live=True))


def config(
    tmp_path: Path, port: int, capture: str = "{interfaces: [flaky0]}", extra: str = ""
) -> AgentConfig:
    return AgentConfig.from_yaml(
        f"site: depot-7\ngateway: gw-flaky\ncapture: {capture}\npolicy_file: {POLICY}\n"
        f"metrics: {{listen: 127.0.0.1, port: {port}}}\nstate_dir: state\nrun_as_user: null\n"
        f"alerts_file: alerts.jsonl\n{extra}",
        "agent.yaml",
        base_dir=tmp_path,
    )


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def alerts(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(_quietly, check):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def _quietly(check: Callable[[], bool]) -> bool:
    """``check()``, False while the endpoint is not listening yet (the agent starts it after containment)."""
    try:
        return check()
    except OSError:
        return False


@pytest.fixture
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarts after 0.05 s instead of about a second (the policy itself is tested below)."""
    monkeypatch.setattr("agents.runtime.RESTART_INITIAL_SECONDS", 0.05)
    monkeypatch.setattr("agents.runtime.RESTART_MAX_SECONDS", 0.2)


def test_the_backoff_doubles_up_to_its_cap_and_is_jittered() -> None:
    lows = [restart_delay(n, 1.0, 60.0, rand=lambda: 0.0) for n in range(1, 10)]
    highs = [restart_delay(n, 1.0, 60.0, rand=lambda: 1.0) for n in range(1, 10)]
    assert lows == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert highs == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert restart_delay(10_000, 1.0, 60.0, rand=lambda: 1.0) == 60.0  # no overflow after a long outage


@pytest.mark.parametrize("where", ["source", "engine"])
def test_a_failing_capture_is_restarted_says_so_once_and_runs_again(
    tmp_path: Path, quick_restarts: None, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    port = free_port()
    batches = site_batches()
    source = FlakySource(batches, fail_reads=2 if where == "source" else 0)
    agent = AgentWith(config(tmp_path, port), source)
    if where == "engine":  # the engine raises on two batches (as the DHCP packet of issue 16 made it do)
        feed, calls = agent.engine.feed, {"n": 0}

        def failing_feed(batch: PacketBatch) -> Any:
            calls["n"] += 1
            if calls["n"] in (3, 4):
                raise OverflowError("int too big to convert")
            return feed(batch)

        agent.engine.feed = failing_feed  # type: ignore[method-assign]

    async def run() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            # Every batch read at last: the source is up again after two restarts.
            await until(lambda: not source._batches and not task.done(), "the source never recovered")
            await until(lambda: scrape(port)["camwatch_capture_up"][(("interface", "flaky0"),)] == 1, "down")
            return await asyncio.to_thread(scrape, port)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    with caplog.at_level(logging.INFO, logger="agents.runtime"):
        samples = asyncio.run(run())
    assert samples["camwatch_capture_restarts_total"] == {(("interface", "flaky0"),): 2}
    assert samples["camwatch_up"][()] == 1
    assert samples["camwatch_alerts_total"][(("rule", "agent.capture_failed"),)] == 1
    failed = [r for r in caplog.records if "capture flaky0 failed" in r.getMessage()]
    assert len(failed) == 2 and all(r.levelno == logging.ERROR for r in failed)
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in failed)  # one line each
    reason = "OSError: [Errno 100] Network is down" if where == "source" else "OverflowError: int too big"
    assert reason in failed[0].getMessage() and "restarting it in" in failed[0].getMessage()
    assert any("capture flaky0: reading again after" in r.getMessage() for r in caplog.records)
    # One alert for the outage (the second failure belongs to it), in the alert path like any other.
    (alert,) = [a for a in alerts(tmp_path / "alerts.jsonl") if a["rule"]["id"] == "agent.capture_failed"]
    assert alert["event"]["severity"] == RULES["agent.capture_failed"].severity == 4
    assert alert["observer"] == {"name": "depot-7/gw-flaky", "ingress": {"interface": {"name": "flaky0"}}}
    assert alert["camwatch"]["capture"]["error"].startswith(reason.split(":")[0])
    assert "restarts it in" in alert["message"] and "flaky0" in alert["message"]
    # The packets of the batches the source delivered were all fed (a lost batch only on an engine failure).
    fed = agent.engine.stats.packets
    total = sum(len(b) for b in batches)
    assert fed == total if where == "source" else 0 < fed < total


def test_an_outage_alert_has_a_stable_id_per_incident() -> None:
    from agents.capture.running import Outage

    st = RunningSource("eth1", FlakySource([], 0), live=True, outage=Outage(1_770_000_000_000_000_000))
    first = failure_alert(st, "s/g", "OSError: x", 1.0, now_ns=1_770_000_001_000_000_000)
    again = failure_alert(st, "s/g", "OSError: y", 2.0, now_ns=1_770_000_009_000_000_000)
    assert first["event"]["id"] == again["event"]["id"]
    assert first["event"]["start"] == "2026-02-02T02:40:00.000Z"
    st.outage = Outage(1_770_000_100_000_000_000)
    assert failure_alert(st, "s/g", "OSError: x", 1.0)["event"]["id"] != first["event"]["id"]


def test_a_capture_file_that_ends_says_so_and_writes_its_flows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pcap = tmp_path / "site.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(hik_cameras=1, seconds=3.0))))
    port = free_port()
    cfg = config(tmp_path, port, capture=f"{{pcap: {pcap}, pace: fast}}", extra="flows_file: flows.jsonl\n")
    agent = Agent(cfg, vendors())

    async def run() -> tuple[dict[str, dict[tuple[tuple[str, str], ...], float]], list[str]]:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            label = (("interface", str(pcap)),)
            await until(lambda: scrape(port)["camwatch_capture_finished"][label] == 1, "never finished")
            # While the agent still runs: every flow ended and written, nothing left in the table.
            await until(lambda: (tmp_path / "flows.jsonl").exists(), "no flows file")
            await until(lambda: len(agent.engine.flows) == 0, "flows still active")
            await asyncio.sleep(0.2)  # the flow records reach the file (written by the sink's task)
            written = (tmp_path / "flows.jsonl").read_text().splitlines()
            return await asyncio.to_thread(scrape, port), written
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    with caplog.at_level(logging.INFO, logger="agents.runtime"):
        samples, written = asyncio.run(run())
    label = (("interface", str(pcap)),)
    assert samples["camwatch_capture_up"][label] == 0 and samples["camwatch_capture_finished"][label] == 1
    assert samples["camwatch_up"][()] == 1  # ended, not failed
    assert samples["camwatch_flows_active"][()] == 0
    assert written and {json.loads(line)["event"]["reason"] for line in written} >= {"end"}
    ends = [r for r in caplog.records if "end of the file after" in r.getMessage()]
    assert len(ends) == 1 and str(pcap) in ends[0].getMessage()
    # Stopping the agent afterwards adds nothing: the flows were all written at the end of the file.
    assert (tmp_path / "flows.jsonl").read_text().splitlines() == written


def test_a_global_ipv6_network_not_in_the_policy_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.monitor.test_site_ipv6 import T0, address, lookup

    pcap = tmp_path / "v6.pcap"
    frames = [
        f for i in range(3) for f in lookup(T0 + i * 10**9, address("2001:db8:20:1::/64", 0x11 + i), 40000)
    ]
    pcap.write_bytes(pcap_bytes(frames))
    port = free_port()
    agent = Agent(config(tmp_path, port, capture=f"{{pcap: {pcap}, pace: fast}}"), vendors())

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            label = (("interface", str(pcap)),)
            await until(lambda: scrape(port)["camwatch_capture_finished"][label] == 1, "never finished")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    with caplog.at_level(logging.WARNING, logger="agents.runtime"):
        asyncio.run(run())
    said = [r.getMessage() for r in caplog.records if "no monitored network holds" in r.getMessage()]
    assert len(said) == 1 and "2001:db8:20:1::/64" in said[0]
