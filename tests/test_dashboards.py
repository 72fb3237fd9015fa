"""The Grafana dashboards (dashboards/generate.py): the committed JSON is current, and every panel query
parses and returns data from a real Prometheus scraping a real agent running on the demo site capture."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from agents.config import AgentConfig
from agents.runtime import Agent
from lab import scenario
from lab.rtsp_server import RtspCameraServer
from lab.video import VideoSpec
from monitor.pcapwrite import pcap_bytes
from tests.agents.mosquitto import Mosquitto, free_port
from tests.agents.promserver import (
    SKIP_REASON,
    PrometheusServer,
    ScrapeTarget,
    prometheus_binary,
    running_prometheus,
)
from tests.enginerun import vendors

ROOT = Path(__file__).parents[1]
POLICY = ROOT / "examples" / "site-policy.yaml"
SITE, GATEWAY, LIVE_GATEWAY = "depot-7", "gw-1", "gw-lo"

# Families that exist only for a live interface (docs/metrics.md). The demo replays a pcap; a second agent
# captures live on the loopback interface so that they have series, which needs root (CAP_NET_RAW). Without
# it, their queries must still parse, only the "has a series" check is waived.
LIVE_ONLY = ("camwatch_capture_kernel_",)
CAN_CAPTURE_LIVE = os.geteuid() == 0


@dataclass(frozen=True)
class SiteTargets(ScrapeTarget):
    """One ``camwatch`` job with several targets (``address`` and ``labels`` the first one): Prometheus
    rejects two jobs with the same name, and the dashboards select ``job="camwatch"``."""

    more: tuple[tuple[str, Mapping[str, str]], ...] = ()

    def scrape_config(self, interval: str) -> dict[str, Any]:
        config = super().scrape_config(interval)
        config["static_configs"] += [{"targets": [a], "labels": dict(labels)} for a, labels in self.more]
        return config


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("camwatch_dashboards", ROOT / "dashboards" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_current() -> None:
    assert generator().main(["--check"]) == 0, "run: python dashboards/generate.py"


def test_every_dashboard_uses_the_provisioned_datasource() -> None:
    gen = generator()
    provisioning = (ROOT / "dashboards" / "provisioning" / "datasources" / "camwatch.yaml").read_text()
    assert f"uid: {gen.DATASOURCE_UID}" in provisioning
    for path in sorted((ROOT / "dashboards" / "json").glob("*.json")):
        assert list(gen.iter_exprs(json.loads(path.read_text()))), path.name


def substitute(expr: str, mac: str) -> str:
    values = {
        "site": SITE,
        "gateway": ".*",  # "All" (the variables' all_value): both gateways of the site
        "mac": mac,
        "__rate_interval": "1m",
        "__interval": "15s",
        "__range": "1h",
    }
    out = re.sub(r"\$(__\w+|\w+)", lambda m: values[m.group(1)], expr)
    assert "$" not in out, out
    return out


def demo_config(
    tmp_path: Path,
    capture: str,
    broker: Mosquitto,
    metrics_port: int,
    gateway: str = GATEWAY,
    probe: str = "",
) -> AgentConfig:
    # The removal programme's panels need a register: the demo's first camera is due (overdue), the second
    # listed as removed (it is seen: device.removed_seen), one spare never seen.
    register = tmp_path / "register.csv"
    register.write_text(
        "mac,name,location,owner,status,replace_by\n"
        f"{scenario.hik_mac(1)},Gate,North gate,Facilities,scheduled,2020-06-30\n"
        f"{scenario.hik_mac(2)},Yard,Yard east,Facilities,removed,2020-01-31\n"
        "44:19:b6:00:09:09,Spare,Store,,active,\n"
    )
    text = f"""
site: {SITE}
gateway: {gateway}
capture:
{capture}
policy_file: {POLICY}
metrics:
  listen: 127.0.0.1
  port: {metrics_port}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
state_dir: {tmp_path / gateway / "state"}
run_as_user: null
asset_register: {register}
{probe}"""
    return AgentConfig.from_yaml(text, "agent.yaml", base_dir=tmp_path)


def check_queries(prom: PrometheusServer, exprs: dict[str, list[str]]) -> list[str]:
    """The queries without a series (and those that fail to parse raise)."""
    macs = prom.query(f'camwatch_device_external_bytes_total{{site="{SITE}", mac!="other"}}')
    assert macs, "no device with external traffic in the demo"
    mac = sorted(s["metric"]["mac"] for s in macs)[0]
    empty = []
    for name, queries in exprs.items():
        for expr in queries:
            result = prom.query(substitute(expr, mac))
            if not result and (CAN_CAPTURE_LIVE or not any(f in expr for f in LIVE_ONLY)):
                empty.append(f"{name}: {expr}")
    return empty


@pytest.mark.skipif(prometheus_binary() is None, reason=SKIP_REASON)
@pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(), reason="mosquitto is not installed")
def test_every_panel_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    gen = generator()
    exprs = {
        path.name: list(gen.iter_exprs(json.loads(path.read_text())))
        for path in sorted((ROOT / "dashboards" / "json").glob("*.json"))
    }
    variables = {
        path.name: [
            v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            for v in json.loads(path.read_text())["templating"]["list"]
        ]
        for path in sorted((ROOT / "dashboards" / "json").glob("*.json"))
    }
    pcap = tmp_path / "site.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(hik_cameras=2, seconds=12.0))))

    async def run() -> list[str]:
        # A lab camera for the stream-probe panels (camwatch_stream_*).
        camera = RtspCameraServer(VideoSpec(width=160, height=96, fps=10, gop=10), host="127.0.0.1", port=0)
        with Mosquitto(tmp_path / "broker") as broker:
            await camera.start()
            port = free_port()
            replay = f"  pcap: {pcap}\n  pace: realtime"
            probe = (
                "stream_probe:\n  interval: 5s\n  duration: 2s\n  cameras:\n"
                f"    - name: gate\n      url: {camera.url('127.0.0.1')}\n"
            )
            agents = [Agent(demo_config(tmp_path, replay, broker, port, probe=probe), vendors())]
            more: list[tuple[str, Mapping[str, str]]] = []
            if CAN_CAPTURE_LIVE:
                live_port = free_port()
                live = demo_config(tmp_path, "  interfaces: [lo]", broker, live_port, LIVE_GATEWAY)
                agents.append(Agent(live, vendors()))
                more.append((f"127.0.0.1:{live_port}", {"site": SITE, "gateway": LIVE_GATEWAY}))
            labels = {"site": SITE, "gateway": GATEWAY}
            targets = [SiteTargets(f"127.0.0.1:{port}", labels=labels, more=tuple(more))]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(agent.run(stop)) for agent in agents]
            try:
                with running_prometheus(tmp_path / "prom", targets) as prom:
                    # Wait for the demo's stream alerts and enough samples for rate() over 1m.
                    await asyncio.to_thread(
                        prom.wait_for,
                        'sum(camwatch_alerts_total{rule=~"stream[.].*"})',
                        lambda v: v >= 1,
                        30,
                    )
                    deadline = time.monotonic() + 20
                    empty: list[str] = ["not run"]
                    while empty and time.monotonic() < deadline:
                        empty = await asyncio.to_thread(check_queries, prom, exprs)
                        if empty:
                            await asyncio.sleep(1)
                    for name, queries in variables.items():
                        for q in queries:
                            m = re.fullmatch(r"label_values\((.*), (\w+)\)", q)
                            assert m, (name, q)
                            series = await asyncio.to_thread(prom.query, substitute(m.group(1), ""))
                            assert any(m.group(2) in s["metric"] for s in series), (name, q)
                    return empty
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 20)
                await camera.close()

    start = time.monotonic()
    empty = asyncio.run(run())
    assert empty == [], "panels without data:\n" + "\n".join(empty)
    assert time.monotonic() - start < 90
