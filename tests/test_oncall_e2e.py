"""On-call end to end: agent -> Prometheus (camwatch-rules.yml) -> Alertmanager -> webhook.

The agent runs in-process on the demo site replayed at its own pace, so its alert counters move between
two scrapes (they start at 0) and the `increase(...[10m]) > 0` rules fire within seconds. Prometheus is
started first, so it has a sample of every counter before the first alert is raised.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from agents.config import AgentConfig
from agents.runtime import Agent
from lab import scenario
from monitor.pcapwrite import pcap_bytes
from tests.agents.alerting import (
    ALERTMANAGER_SKIP_REASON,
    WebhookReceiver,
    alertmanager_binary,
    running_alerting_prometheus,
    running_alertmanager,
    webhook_config,
)
from tests.agents.promserver import SKIP_REASON, ScrapeTarget, free_port, prometheus_binary
from tests.enginerun import vendors

ROOT = Path(__file__).parents[1]
POLICY = ROOT / "examples" / "site-policy.yaml"
RULES = ROOT / "deploy" / "prometheus" / "camwatch-rules.yml"
LEAD_IN_SECONDS = 5.0
RUNBOOK = "https://github.com/camwatch/camwatch/blob/main/docs/runbooks/camera-egress.md"

pytestmark = [
    pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON),
    pytest.mark.skipif(alertmanager_binary() is None, reason=ALERTMANAGER_SKIP_REASON),
]


def agent_config(tmp_path: Path, pcap: Path, metrics_port: int) -> AgentConfig:
    # No mqtt section: alerts go to the log only; this test follows the metrics path.
    text = f"""
site: depot-7
gateway: gw-oncall
capture:
  pcap: {pcap}
  pace: realtime
policy_file: {POLICY}
metrics:
  listen: 127.0.0.1
  port: {metrics_port}
state_dir: {tmp_path / "state"}
run_as_user: null
"""
    return AgentConfig.from_yaml(text, "agent.yaml", base_dir=tmp_path)


def site_with_lead_in(seconds: float) -> list[tuple[int, bytes]]:
    """The demo site (12 s) after ``seconds`` of near silence: the capture's first packet, sent earlier.

    The first egress alerts come 2 s into the demo site; the lead-in gives Prometheus time to scrape the
    counters at 0 first, whatever the start-up time of the agent.
    """
    packets = list(scenario.site_packets(scenario.SiteShape(hik_cameras=2, seconds=12.0)))
    first_ts, first_frame = packets[0]
    return [(first_ts - int(seconds * 1e9), first_frame), *packets]


def is_camera_egress(alert: dict[str, Any]) -> bool:
    return bool(alert["labels"].get("alertname") == "CameraEgress" and alert.get("status") == "firing")


def test_camera_egress_reaches_the_webhook_with_labels_and_runbook(tmp_path: Path) -> None:
    pcap = tmp_path / "site.pcap"
    pcap.write_bytes(pcap_bytes(site_with_lead_in(LEAD_IN_SECONDS)))
    metrics_port = free_port()
    started = time.monotonic()

    async def run(
        hook: WebhookReceiver, prom_workdir: Path, am_url: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        target = ScrapeTarget(f"127.0.0.1:{metrics_port}", labels={"site": "depot-7", "gateway": "gw-oncall"})
        with running_alerting_prometheus(prom_workdir, [target], [RULES], am_url) as prom:
            agent = Agent(agent_config(tmp_path, pcap, metrics_port), vendors())
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop), name="agent")
            try:
                # Prometheus has the counter at 0 before the capture raises the first egress alert.
                await asyncio.to_thread(
                    prom.wait_for,
                    'camwatch_alerts_total{rule="egress.unexpected_destination"}',
                    lambda v: v == 0,
                    15,
                )
                try:
                    return await asyncio.to_thread(hook.wait_for_alert, is_camera_egress, 50)
                except AssertionError as exc:
                    raise AssertionError(
                        f"{exc}\nPrometheus alerts: {prom.alerts()}\nPrometheus log:\n{prom.log_tail()}"
                    ) from exc
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)

    with WebhookReceiver() as hook, running_alertmanager(tmp_path / "am", webhook_config(hook.url)) as am:
        notification, alert = asyncio.run(run(hook, tmp_path / "prom", am.url))
    elapsed = time.monotonic() - started

    labels = alert["labels"]
    assert labels["site"] == "depot-7"
    assert labels["gateway"] == "gw-oncall"
    assert labels["severity"] == "critical"
    assert labels["rule_id"] == "egress.unexpected_destination"
    assert alert["annotations"]["runbook_url"] == RUNBOOK
    assert "depot-7" in alert["annotations"]["summary"]
    assert notification["version"] == "4"
    assert notification["status"] == "firing"
    assert notification["receiver"] == "test-webhook"
    assert alert["generatorURL"].startswith("http://")
    assert elapsed < 75, f"took {elapsed:.0f} s"
