"""The real agent (`agents.runtime.Agent`) with a stream probe and an alerts file.

- With a `stream_probe` section and a lab camera on loopback, the probe's alert takes the same path as
  the engine's (MQTT through the spool, the alerts file, `camwatch_alerts_total`) and the per-camera
  metrics are served.
- Without an `mqtt` section there is no broker and no spool: every alert goes to `alerts_file`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agents.config import AgentConfig
from agents.runtime import Agent
from lab import scenario
from monitor.pcapwrite import pcap_bytes
from tests.agents.mosquitto import MOSQUITTO, Mosquitto, Subscriber
from tests.agents.promserver import free_port
from tests.enginerun import vendors

ROOT = Path(__file__).parents[3]
POLICY = ROOT / "examples" / "site-policy.yaml"


def site_capture(path: Path, seconds: float) -> Path:
    shape = scenario.SiteShape(hik_cameras=2, seconds=seconds, video_pps=50)
    path.write_bytes(pcap_bytes(scenario.site_packets(shape)))
    return path


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto is not installed")
def test_the_agent_probes_a_camera_and_its_alert_takes_the_engines_path(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="the stream extra (PyAV) is not installed")
    pytest.importorskip("cv2", reason="the stream extra (opencv-python-headless) is not installed")
    rtsp = pytest.importorskip("lab.rtsp_server", reason="the lab's RTSP camera is not available")
    from lab.video import VideoSpec

    pcap = site_capture(tmp_path / "site.pcap", seconds=4.0)
    metrics_port = free_port()

    async def run() -> tuple[list[dict[str, Any]], str]:
        spec = VideoSpec(width=160, height=96, fps=10, gop=10)
        async with rtsp.RtspCameraServer(spec, host="127.0.0.1", port=0, pattern="black") as cam:
            with Mosquitto(tmp_path / "broker") as broker:
                text = f"""
site: depot-7
gateway: gw-probe
capture: {{pcap: {pcap}, pace: fast}}
policy_file: {POLICY}
metrics: {{listen: 127.0.0.1, port: {metrics_port}}}
mqtt: {{host: 127.0.0.1, port: {broker.port}}}
state_dir: state
alerts_file: alerts.jsonl
run_as_user: null
stream_probe:
  interval: 1s
  duration: 1s
  timeout: 6s
  cameras:
    - name: yard
      url: {cam.url("127.0.0.1")}
"""
                config = AgentConfig.from_yaml(text, "agent.yaml", base_dir=tmp_path)
                async with Subscriber(broker, "camwatch/+/+/alerts/#") as sub:
                    stop = asyncio.Event()
                    task = asyncio.create_task(Agent(config, vendors()).run(stop))
                    try:
                        await sub.wait_until(lambda m: any(b"stream.black" in r.payload for r in m), 30)
                        metrics = await asyncio.to_thread(scrape, metrics_port)
                    finally:
                        stop.set()
                        await asyncio.wait_for(task, 20)
                    return [json.loads(r.payload) for r in sub.messages], metrics

    published, metrics = asyncio.run(run())
    black = [a for a in published if a["rule"]["id"] == "stream.black"]
    assert len(black) == 1
    assert black[0]["observer"]["name"] == "depot-7/gw-probe" and Path(black[0]["file"]["path"]).is_file()
    # The same alerts, engine's and probe's, are in the alerts file (flushed per alert).
    in_file = lines(tmp_path / "alerts.jsonl")
    assert {a["event"]["id"] for a in published} <= {a["event"]["id"] for a in in_file}
    assert {a["rule"]["id"] for a in in_file} >= {"stream.black", "device.new"}
    # Metrics of the camera, and the probe's alert in the alert counter.
    assert 'camwatch_stream_up{camera="yard"} 1.0' in metrics
    assert 'camwatch_stream_image_problem{camera="yard",problem="black"} 1.0' in metrics
    assert 'camwatch_stream_info{camera="yard",codec="h264",height="96",width="160"} 1.0' in metrics
    assert 'camwatch_stream_probes_total{camera="yard",result="ok"}' in metrics
    assert 'camwatch_alerts_total{rule="stream.black"} 1.0' in metrics
    assert 'camwatch_alerts_total{rule="stream.unavailable"} 0.0' in metrics


def test_without_mqtt_every_alert_goes_to_the_alerts_file(tmp_path: Path) -> None:
    pcap = site_capture(tmp_path / "site.pcap", seconds=20.0)
    expected = 28  # the demo site with its site policy (tests/monitor/test_engine.py)
    port = free_port()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "alerts.jsonl").write_text('{"kept": "what was there before"}\n')
    config = AgentConfig.from_yaml(
        f"site: depot-7\ngateway: gw-file\ncapture: {{pcap: {pcap}, pace: fast}}\npolicy_file: {POLICY}\n"
        f"metrics: {{listen: 127.0.0.1, port: {port}}}\nstate_dir: state\nrun_as_user: null\n"
        "alerts_file: out/alerts.jsonl\n",
        "agent.yaml",
        base_dir=tmp_path,
    )
    assert config.mqtt is None and config.alerts_file == tmp_path / "out" / "alerts.jsonl"

    async def run() -> str:
        stop = asyncio.Event()
        task = asyncio.create_task(Agent(config, vendors()).run(stop))
        try:
            for _ in range(300):
                if len(lines(tmp_path / "out" / "alerts.jsonl")) >= expected + 1:
                    break
                await asyncio.sleep(0.1)
            return await asyncio.to_thread(scrape, port)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    metrics = asyncio.run(run())
    written = lines(tmp_path / "out" / "alerts.jsonl")
    assert written[0] == {"kept": "what was there before"}  # appended, never truncated
    alerts = written[1:]
    assert len(alerts) == expected and len({a["event"]["id"] for a in alerts}) == expected
    assert all(a["observer"]["name"] == "depot-7/gw-file" for a in alerts)
    # No broker, so no outbox that nothing would ever empty, and no MQTT or spool series.
    assert not (tmp_path / "state" / "outbox.sqlite3").exists()
    assert "camwatch_mqtt_" not in metrics and "camwatch_spool_" not in metrics
    assert "camwatch_stream_" not in metrics  # no stream_probe section
