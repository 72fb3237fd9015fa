"""Issue 6 end to end: the camera lab, the agent in its gateway namespace, a real Mosquitto.

`camwatch lab up` builds the namespaces and starts the simulated cameras (real RTSP/H.264, vendor
personas, WebRTC live view), the recorder and the office PC; the agent captures on the gateway's camera
bridge and publishes to a broker in the same namespace. After a trigger, each persona's misbehaviour must
raise the rules it lists (events.jsonl) within 10 seconds, over MQTT, naming the right device; the
well-behaved camera raises nothing. The stream probe reports what the cameras serve and catches a camera
switched to a frozen or black picture. Root only.

Issue 12: an attacker on the "internet" exploits and password-guesses an infected Xiongmai DVR (cam4), which
scans like Mirai; their alerts arrive over MQTT with the vulnerability, the outcome, the counts, one incident
id, and evidence pcaps without the passwords.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.camera import BEHAVIOURS
from lab.lab import Lab
from tests.agents.mosquitto import MOSQUITTO, free_port
from tests.agents.mqttsub import NamespaceSubscriber
from tests.agents.netns import inside, skip_reason

ROOT = Path(__file__).parents[2]
ARRIVAL_LIMIT = 10.0  # seconds from a misbehaviour to its alerts (issue 6)
# Rules that hold their alert back on purpose (docs/design.md §4.2): password guessing is reported 10 s after
# the burst crossed its threshold, with its count; the limit counts from the behaviour's start.
HELD = {"auth.bruteforce": 10.0}
LabRun = tuple[Lab, NamespaceSubscriber, Path]  # what the lab_run fixture yields


def _missing_extras() -> str | None:
    try:
        import aiortc  # noqa: F401
        import av  # noqa: F401
        import cv2  # noqa: F401
    except ImportError as exc:
        return (
            f"the lab needs the lab, agent and stream extras (pip install camwatch[lab,agent,stream]): {exc}"
        )
    return None


pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto is not installed"),
    pytest.mark.skipif(_missing_extras() is not None, reason=_missing_extras() or ""),
]


def canonical_mac(mac: str) -> str:
    return re.sub(r"[^0-9a-f]", "", mac.lower())


def involves(alert: dict[str, object], ip: str, mac: str) -> bool:
    """Does the alert name this device (as its device, or as either end)?"""
    mac = canonical_mac(mac)
    device = alert.get("device") or {}
    ends = [alert.get("source") or {}, alert.get("destination") or {}]
    if isinstance(device, dict) and canonical_mac(str(device.get("id", ""))) == mac:
        return True
    return any(isinstance(e, dict) and (e.get("ip") == ip or canonical_mac(str(e.get("mac", ""))) == mac)
               for e in ends)  # fmt: skip


def scrape(ns: str, url: str) -> str:
    with inside(ns), urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    """The lab up, the broker and the agent running in the gateway namespace, a subscriber connected."""
    tmp = tmp_path_factory.mktemp("lab-e2e")
    lab = Lab(f"cwe{os.getpid() % 1000}", tmp / "lab")
    port = free_port()
    broker: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[str] | None = None
    sub: NamespaceSubscriber | None = None
    try:
        lab.up(mqtt=("127.0.0.1", port), probe=True, probe_interval=4)
        desc = lab.description()
        gw = desc.gateway.namespace
        # Probe often so that two bad probes in a row (the image rules' hysteresis) fit in the test.
        config_path = lab.paths.agent_config
        config = yaml.safe_load(config_path.read_text())
        assert config["stream_probe"]["interval"] == "4s"
        config["stream_probe"].update({"duration": "2s", "concurrency": 3})
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen(["ip", "netns", "exec", gw, str(MOSQUITTO), "-c", str(conf)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        command = ["ip", "netns", "exec", gw, sys.executable, "-m", "agents.cli", "run", "--config",
                   str(config_path)]  # fmt: skip
        agent = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        sub = NamespaceSubscriber(gw, port, client_id="lab-e2e")
        deadline = time.monotonic() + 20
        while not sub.online():
            assert agent.poll() is None, agent.stdout.read() if agent.stdout else ""
            assert time.monotonic() < deadline, "the agent never came online"
            time.sleep(0.1)
        yield lab, sub, config_path
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.communicate()
        if sub is not None:
            sub.close()
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=10)
        lab.down()


def test_each_misbehaviour_raises_its_alerts_within_10_seconds(lab_run: LabRun) -> None:
    lab, sub, _ = lab_run
    desc = lab.description()
    before = len(sub.arrivals())
    # The recorder reconnects to every camera (as after its reboot) while the agent watches: its RTSP
    # sessions and RTP set-up are normal site traffic and must raise nothing.
    lab.restart("rec")
    lab.trigger()
    # Every behaviour logs its line when it is done (the live view streams for ~15 s).
    behaviours = set(BEHAVIOURS)  # every behaviour of lab/camera.py
    deadline = time.monotonic() + 45
    while {e.behaviour for e in lab.events()} < behaviours:
        assert time.monotonic() < deadline, sorted(e.behaviour for e in lab.events())
        time.sleep(0.5)
    events = lab.events()
    failures = [f"{e.behaviour}: {e.detail['error']}" for e in events if "error" in e.detail]
    assert failures == [], failures
    # Let the last alerts of the last behaviour travel (password guessing's is held 10 s after its burst).
    deadline = time.monotonic() + ARRIVAL_LIMIT + HELD["auth.bruteforce"]
    while time.monotonic() < deadline and not any(
        a["rule"]["id"] == "auth.bruteforce" for _, a in sub.arrivals()
    ):  # type: ignore[index]
        time.sleep(0.5)
    time.sleep(1.0)

    alerts = sub.arrivals()[before:]
    for event in events:
        for rule in event.expect:
            arrivals = [at for at, a in alerts
                        if a["rule"]["id"] == rule and at >= event.ts and involves(a, event.ip, event.mac)]  # type: ignore[index]  # fmt: skip
            # An incident alerts once: the first behaviour that caused it carries the alert.
            earlier = [at for at, a in alerts if a["rule"]["id"] == rule and involves(a, event.ip, event.mac)]  # type: ignore[index]
            assert arrivals or earlier, f"{event.behaviour} ({event.camera}) raised no {rule}"
            first = min(arrivals or earlier)
            if arrivals:
                limit = ARRIVAL_LIMIT + HELD.get(rule, 0.0)
                assert first - event.ts <= limit, (event.behaviour, rule, first - event.ts)

    # Each camera raised only rules its behaviours list (no false positives on the lab's devices).
    for cam in desc.cameras:
        mine = {a["rule"]["id"] for _, a in alerts if involves(a, cam.ip, cam.mac)}  # type: ignore[index]
        expected = {r for e in events if e.camera == cam.name for r in e.expect}
        assert mine <= expected, (cam.name, sorted(mine - expected))
    well_behaved = [c for c in desc.cameras if c.persona not in {e.behaviour.split(".")[0] for e in events
                                                                   if e.expect}]  # fmt: skip
    assert well_behaved, "the lab has no well-behaved camera"
    for cam in well_behaved:
        raised = [a["rule"]["id"] for _, a in sub.arrivals() if involves(a, cam.ip, cam.mac)]  # type: ignore[index]
        assert raised == [], (cam.name, raised)
    assert {a["observer"]["name"] for _, a in alerts} == {f"lab/{desc.gateway.namespace}"}  # type: ignore[index]
    # Every alert since the agent started is about a misbehaving camera: none names the recorder, the
    # office PC or the gateway as the device at fault.
    culprits = {canonical_mac(c.mac) for c in desc.cameras if c not in well_behaved}
    devices = {canonical_mac(str(a.get("device", {}).get("id", ""))) for _, a in sub.arrivals()}  # type: ignore[attr-defined]
    assert devices <= culprits, sorted(devices - culprits)


def test_stream_probe_reports_what_the_lab_cameras_serve(lab_run: LabRun) -> None:
    lab, _, _ = lab_run
    desc = lab.description()
    gw = desc.gateway
    url = f"http://{gw.bridge_ip}:10108/metrics"
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = scrape(gw.namespace, url)
        if all(metric(text, "camwatch_stream_up", camera=c.name) == 1 for c in desc.cameras):
            break
        time.sleep(1)
    for cam in desc.cameras:
        assert metric(text, "camwatch_stream_up", camera=cam.name) == 1, (cam.name, text[-2000:])
        v = cam.video
        info = metric(text, "camwatch_stream_info", camera=cam.name, codec="h264", width=str(v.width),
                      height=str(v.height))  # fmt: skip
        assert info == 1, (cam.name, [line for line in text.splitlines() if "stream_info" in line])
        fps = metric(text, "camwatch_stream_frames_per_second", camera=cam.name)
        assert fps is not None and abs(fps - v.fps) <= 0.1 * v.fps, (cam.name, fps, v.fps)
        bitrate = metric(text, "camwatch_stream_bitrate_bits_per_second", camera=cam.name)
        assert bitrate is not None and bitrate > 0


def test_stream_probe_catches_a_frozen_and_a_black_camera(lab_run: LabRun) -> None:
    lab, sub, _ = lab_run
    desc = lab.description()
    frozen, black = desc.cameras[1], desc.cameras[2]
    before = len(sub.arrivals())
    lab.set_pattern(frozen.name, "frozen")
    lab.set_pattern(black.name, "black")
    try:
        want = {(frozen.name, "stream.frozen"), (black.name, "stream.black")}
        deadline = time.monotonic() + 60
        got: set[tuple[str, str]] = set()
        while not want <= got:
            assert time.monotonic() < deadline, f"only {sorted(got)} after 60 s"
            time.sleep(0.5)
            for _, a in sub.arrivals()[before:]:
                for cam in (frozen, black):
                    if involves(a, cam.ip, cam.mac) and str(a["rule"]["id"]).startswith("stream."):  # type: ignore[index]
                        got.add((cam.name, str(a["rule"]["id"])))  # type: ignore[index]
        assert got == want, sorted(got)
        for _, a in sub.arrivals()[before:]:
            path = (a.get("file") or {}).get("path")  # type: ignore[union-attr]
            if a["rule"]["id"] in {"stream.frozen", "stream.black"}:  # type: ignore[index]
                assert path and Path(path).is_file() and Path(path).read_bytes()[:2] == b"\xff\xd8", a
    finally:
        lab.set_pattern(frozen.name, "normal")
        lab.set_pattern(black.name, "normal")


def _attack_alerts(lab: Lab, sub: NamespaceSubscriber) -> list[dict[str, object]]:
    """The alerts about the infected DVR, once its scan and the attacker's behaviours are done."""
    wanted = {"xiongmai.scanning", "attacker.exploits", "attacker.password_guessing"}
    if not wanted <= {e.behaviour for e in lab.events()}:
        lab.trigger(["cam4", "attacker"])
    deadline = time.monotonic() + 60
    rules = {
        "exploit.attempt",
        "device.telnet",
        "auth.bruteforce",
        "auth.default_credentials",
        "device.scanning",
    }
    dvr = lab.description().camera("cam4")
    while True:
        mine = [a for _, a in sub.arrivals() if involves(a, dvr.ip, dvr.mac)]
        if rules <= {str(a["rule"]["id"]) for a in mine} and wanted <= {e.behaviour for e in lab.events()}:  # type: ignore[index]
            time.sleep(1.0)  # the last exploit alerts of the round
            return [a for _, a in sub.arrivals() if involves(a, dvr.ip, dvr.mac)]
        assert time.monotonic() < deadline, sorted({str(a["rule"]["id"]) for a in mine})  # type: ignore[index]
        time.sleep(0.5)


def test_attacks_on_the_dvr_arrive_over_mqtt_as_one_incident(lab_run: LabRun) -> None:
    lab, sub, _ = lab_run
    desc = lab.description()
    dvr = desc.camera("cam4")
    attacker = desc.services.attacker
    alerts = _attack_alerts(lab, sub)
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        by_rule.setdefault(str(a["rule"]["id"]), []).append(a)  # type: ignore[index]

    exploits = {a["camwatch"]["exploit"]["matcher"]: a for a in by_rule["exploit.attempt"]}
    assert set(exploits) >= {"hikvision-weblanguage", "hikvision-auth-param", "dahua-netkeyboard",
                             "xiongmai-telnet-enabler"}, sorted(exploits)  # fmt: skip
    cves = {a.get("vulnerability", {}).get("id") for a in by_rule["exploit.attempt"]}
    assert {"CVE-2021-36260", "CVE-2017-7921", "CVE-2021-33044"} <= cves
    assert exploits["xiongmai-telnet-enabler"]["event"]["outcome"] == "success"  # the DVR answered Open:OK
    assert exploits["hikvision-weblanguage"]["event"]["outcome"] == "failure"  # 404: not this vendor
    for a in by_rule["exploit.attempt"]:
        assert (
            a["event"]["severity"] == 5
            and a["source"]["ip"] == attacker
            and a["device"]["id"] == dvr.mac.replace(":", "-")
        )

    (telnet,) = by_rule["device.telnet"]
    assert telnet["network"]["direction"] == "inbound" and telnet["destination"]["port"] == 23
    assert "login" in telnet["camwatch"]["telnet"]["banner"]

    (guessing,) = by_rule["auth.bruteforce"]
    assert guessing["camwatch"]["bruteforce"]["failures"] >= 10 and guessing["source"]["ip"] == attacker
    assert guessing["event"]["outcome"] == "success"  # the factory password then worked

    (default,) = by_rule["auth.default_credentials"]
    assert (
        default["camwatch"]["default_credential"]["id"] == "xiongmai-admin"
        and default["user"]["name"] == "admin"
    )
    assert default["event"]["outcome"] == "success"

    (scan,) = by_rule["device.scanning"]
    assert scan["event"]["severity"] == 5 and scan["source"]["ip"] == dvr.ip
    assert scan["camwatch"]["scan"]["mirai"] >= 3 and scan["camwatch"]["scan"]["telnet"] >= 3
    # The rest folded into the scan: the rule's cap (3) and the other telnet port's first (alerts.py).
    assert len(by_rule.get("egress.unexpected_destination", [])) <= 4

    # One incident: every alert about the DVR carries the same id.
    assert len({a["camwatch"]["incident"]["id"] for a in alerts}) == 1, [
        a["camwatch"]["incident"] for a in alerts
    ]

    # Evidence: the pcaps the alerts name exist and hold no password or Authorization value.
    secrets = [base64.b64encode(f"admin:guess{i:02d}".encode()) for i in range(15)]
    secrets += [base64.b64encode(b"admin:"), b"xc3511", b"Not Used"]
    for a in [*by_rule["exploit.attempt"], guessing, default, scan, telnet]:
        path = Path(a["file"]["path"])
        data = path.read_bytes()
        assert data[:4] == b"\x0a\x0d\x0d\x0a" and len(data) > 200, path  # pcapng
        assert not [s for s in secrets if s in data], (a["rule"]["id"], path)
    assert all(s.decode("latin-1") not in json.dumps(alerts) for s in secrets)
