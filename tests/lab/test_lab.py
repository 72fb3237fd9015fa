"""The camera lab on this host: namespaces, real RTSP video, the services, triggers and camwatch's verdict.

The live tests need root and `ip netns` and skip with the reason otherwise; they bring one lab up for the
module (own prefix, own directory) and always take it down. The schema and configuration tests run
anywhere.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents.capture.afpacket import RingSource
from agents.capture.pcap_source import PcapFileSource
from agents.config import load_config
from lab import payloads
from lab.camera import BEHAVIOURS
from lab.lab import Lab, LabError, preflight, require_packages
from lab.netns import lab_namespaces
from lab.topology import Control, LabDescription, LabEvent, default_description
from monitor.alerts import Alert
from monitor.analyzers import dns, stun
from monitor.analyzers.p2p import DahuaP2pMessage, EzvizXmlMessage
from monitor.engine import Engine, EngineConfig
from monitor.pcapwrite import PcapWriter
from monitor.policy import SitePolicy
from monitor.vendors.oui import VendorTable
from tests.agents.netns import exec_in, inside, skip_reason

PREFIX = f"cwt{os.getpid() % 1000}"
REPO = Path(__file__).resolve().parents[2]

# Opens each camera given as URL,TRANSPORT with PyAV, decodes a few frames, prints what it saw.
DECODE = """
import json, sys, av
out = []
for arg in sys.argv[1:]:
    url, transport = arg.split(",")
    options = {"rtsp_transport": transport, "analyzeduration": "500000"}
    with av.open(url, options=options, timeout=(5, 5)) as c:
        stream = c.streams.video[0]
        frames = []
        for frame in c.decode(stream):
            frames.append(frame)
            if len(frames) >= 4:
                break
        y = frames[-1].to_ndarray(format="gray")
        out.append({"url": url, "codec": stream.codec_context.name, "width": frames[-1].width,
                    "height": frames[-1].height, "mean": float(y.mean()), "std": float(y.std())})
print(json.dumps(out))
"""


# --- anywhere: the description, events, control files and generated configurations --------------------


def test_lab_json_round_trips_and_errors_name_the_field() -> None:
    desc = default_description("cwx", "/tmp/cwx", trigger_every=30.0)
    assert LabDescription.parse(json.loads(json.dumps(desc.to_json()))) == desc
    assert len(desc.namespaces) == 8 and all(ns.startswith("cwx-") for ns in desc.namespaces)
    assert all(
        len(name) <= 15 for name in ("br-cam", "office0", "inet0", *(f"p-{c}" for c in desc.camera_names))
    )
    doc = desc.to_json()
    cams = doc["cameras"]
    assert isinstance(cams, list)
    cams[1]["ip"] = "10.77.0.300"
    with pytest.raises(ValueError, match=r"cameras\[1\]\.ip: '10.77.0.300' is not an IPv4 address"):
        LabDescription.parse(doc)
    cams[1]["ip"] = "10.77.0.12"
    cams[0]["persona"] = "uniview"
    with pytest.raises(
        ValueError, match=r"cameras\[0\]\.persona: 'uniview' is not one of ezviz, dahua, axis, xiongmai"
    ):
        LabDescription.parse(doc)
    del cams[0]["persona"]
    with pytest.raises(ValueError, match=r"cameras\[0\]\.persona: missing"):
        LabDescription.parse(doc)
    with pytest.raises(ValueError, match="prefix 'Bad-Prefix' is not valid"):
        default_description("Bad-Prefix")


def test_lab_json_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: not JSON"):
        LabDescription.load(path)
    with pytest.raises(ValueError, match="cannot read the lab description"):
        LabDescription.load(tmp_path / "missing.json")


def test_events_and_control_files(tmp_path: Path) -> None:
    event = LabEvent(
        1.5, "cam1", "10.77.0.11", "44:19:b6:77:00:11", "ezviz.upnp", BEHAVIOURS["ezviz.upnp"], {"a": 1}
    )
    event.append_to(tmp_path / "events.jsonl")
    event.append_to(tmp_path / "events.jsonl")
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [LabEvent.parse(line) for line in lines] == [event, event]
    with pytest.raises(ValueError, match=r"event\.expect: must be a list"):
        LabEvent.parse(lines[0].replace('["upnp.port_mapping"]', '"upnp.port_mapping"'))
    control = Control().with_trigger().with_trigger()
    control.dump(tmp_path / "c.json")
    assert Control.load(tmp_path / "c.json") == Control("normal", 2)
    assert Control.load(tmp_path / "none.json") == Control()
    (tmp_path / "c.json").write_text('{"pattern": "sepia", "trigger": 1}')
    with pytest.raises(
        ValueError, match=r"control\.pattern: 'sepia' is not one of normal, frozen, black, covered"
    ):
        Control.load(tmp_path / "c.json")


def test_generated_policy_and_agent_config_are_valid(tmp_path: Path) -> None:
    lab = Lab("cwx", tmp_path)
    desc = default_description("cwx", str(tmp_path))
    lab._write_files(desc, ("10.77.0.1", 1883), probe=True)
    policy = SitePolicy.from_yaml(lab.paths.policy.read_text(), source=str(lab.paths.policy))
    assert policy.site == "lab" and policy.resolvers and policy.is_viewer("10.77.0.2")
    assert all(policy.is_known_device(int(mac.replace(":", ""), 16)) for mac in desc.macs)
    config = load_config(str(lab.paths.agent_config))
    assert config.capture.interfaces == ("br-cam",)
    assert config.mqtt is not None and (config.mqtt.host, config.mqtt.port) == ("10.77.0.1", 1883)
    assert config.stream_probe is not None
    assert [c.url for c in config.stream_probe.cameras] == [c.url for c in desc.cameras]
    assert config.alerts_file == tmp_path / "alerts.jsonl"
    # Without the probe the gateway is no viewer, and the section is left out.
    lab._write_files(desc, None, probe=False)
    config = load_config(str(lab.paths.agent_config))
    assert config.stream_probe is None and config.mqtt is None
    policy = SitePolicy.from_yaml(lab.paths.policy.read_text(), source=str(lab.paths.policy))
    assert not policy.is_viewer("10.77.0.1")


def test_lab_up_without_root_says_so_in_one_line(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "agents.cli",
        "lab",
        "up",
        "--prefix",
        "cwnr",
        "--dir",
        str(tmp_path / "lab"),
    ]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "camwatch: error: the camera lab needs root (network namespaces): run it with sudo or as root"
    ]


# --- live: one lab for the module ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    the_lab = Lab(PREFIX, tmp_path_factory.mktemp("camlab"))
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


def camwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def lab_args(lab: Lab) -> list[str]:
    return ["--prefix", lab.prefix, "--dir", str(lab.directory)]


def decode(ns: str, *targets: str) -> list[dict[str, object]]:
    proc = exec_in(ns, sys.executable, "-c", DECODE, *targets, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert isinstance(result, list)
    return result


def test_status_reports_a_healthy_lab(lab: Lab) -> None:
    status = lab.status()
    assert status.ok, status.problems
    assert sorted(p.name for p in status.processes) == [
        "attacker", "cam1", "cam2", "cam3", "cam4", "gw", "inet", "office", "rec"
    ]  # fmt: skip
    assert all(p.alive and p.ready for p in status.processes)
    proc = camwatch("lab", "status", "--json", *lab_args(lab))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["state"] == "ok" and report["problems"] == []
    assert [c["rtsp"] for c in report["cameras"]] == ["ok", "ok", "ok", "ok"]
    assert f"ip netns exec {PREFIX}-gw camwatch run --config" in report["agent_command"]


def test_up_twice_fails_clearly_and_leaves_the_lab_running(lab: Lab) -> None:
    with pytest.raises(
        LabError, match=f"lab {PREFIX} is already up .*run `camwatch lab down --prefix {PREFIX}`"
    ):
        Lab(PREFIX, lab.directory).up()
    with pytest.raises(LabError, match=f"belongs to lab {PREFIX}, which is up: use another --dir"):
        Lab(f"{PREFIX}b", lab.directory).up()
    assert lab.status().ok


def test_every_camera_decodes_from_the_office_through_the_gateway(lab: Lab) -> None:
    desc = lab.description()
    seen = decode(desc.office.namespace, *(f"{c.url},{c.transport}" for c in desc.cameras))
    for cam, got in zip(desc.cameras, seen, strict=True):
        assert (got["codec"], got["width"], got["height"]) == ("h264", cam.video.width, cam.video.height)
        assert isinstance(got["std"], float) and got["std"] > 20, "the normal pattern has contrast"


def test_recorder_pulls_every_camera_continuously(lab: Lab) -> None:
    def packets() -> dict[str, int]:
        state = json.loads(lab.paths.state("rec").read_text())
        return {name: cam["packets"] for name, cam in state["cameras"].items() if cam["connected"]}

    deadline = time.monotonic() + 20
    first: dict[str, int] = {}
    while time.monotonic() < deadline and len(first) < 4:
        first = packets()
        time.sleep(0.2)
    assert sorted(first) == ["cam1", "cam2", "cam3", "cam4"]
    later = first
    while time.monotonic() < deadline and not all(later[n] > first[n] for n in first):
        time.sleep(0.5)
        later = packets()
    assert all(later[n] > first[n] for n in first), (first, later)
    transports = {c["name"]: c["recorder_transport"] for c in lab.status().cameras}
    assert transports == {"cam1": "udp", "cam2": "tcp", "cam3": "tcp", "cam4": "tcp"}


def test_recorder_reconnects_when_a_camera_restarts(lab: Lab) -> None:
    def cam3() -> dict[str, object]:
        state = json.loads(lab.paths.state("rec").read_text())
        entry = state["cameras"]["cam3"]
        assert isinstance(entry, dict)
        return entry

    before = cam3()
    lab.restart("cam3")
    deadline = time.monotonic() + 20
    after = cam3()
    while time.monotonic() < deadline and not (after["connected"] and after["connects"] > before["connects"]):
        time.sleep(0.2)
        after = cam3()
    assert after["connected"] and isinstance(after["connects"], int) and isinstance(before["connects"], int)
    assert after["connects"] == before["connects"] + 1
    assert lab.status().ok


def _udp_ask(
    ns: str, dest: tuple[str, int], payload: bytes, timeout: float = 3.0
) -> tuple[bytes, tuple[str, int]]:
    with inside(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.bind(("0.0.0.0", 0))
        sock.sendto(payload, dest)
        data, _ = sock.recvfrom(65535)
        return data, sock.getsockname()


def test_services_answer_a_camera(lab: Lab) -> None:
    desc = lab.description()
    cam = desc.camera("cam1")
    svc = desc.services
    # Site resolver: garbage first (it must survive), then a vendor cloud name and an unknown one.
    with inside(cam.namespace):
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with junk:
        junk.sendto(b"\xff" * 30, (svc.resolver, 53))
    answer, _ = _udp_ask(
        cam.namespace, (svc.resolver, 53), payloads.dns_query(0x1234, "litedev.ezvizlife.com")
    )
    assert [r.value for r in dns.parse(answer).answers] == ["203.0.113.20"]
    answer, _ = _udp_ask(cam.namespace, (svc.resolver, 53), payloads.dns_query(0xABCD, "www.example.org"))
    assert dns.parse(answer).rcode == 3
    # STUN on the "internet" sees the camera's own address: the lab routes without NAT.
    request = stun.build(stun.METHOD_BINDING, stun.CLASS_REQUEST, b"lab-test-tid")
    answer, local = _udp_ask(cam.namespace, (svc.stun, svc.stun_port), request)
    msg = stun.parse(answer)
    assert isinstance(msg, stun.StunMessage) and msg.message_class == stun.CLASS_SUCCESS
    assert msg.xor_mapped_address is not None
    assert (msg.xor_mapped_address.ip, msg.xor_mapped_address.port) == (cam.ip, local[1])
    # The vendor P2P servers answer.
    answer, _ = _udp_ask(
        desc.camera("cam2").namespace,
        (svc.easy4ip, svc.easy4ip_port),
        b"DHGET /probe/p2psrv HTTP/1.1\r\nCSeq: 3\r\n\r\n",
    )
    assert DahuaP2pMessage.parse(answer).status == 200
    query = b'<?xml version="1.0"?><Request><Command>NatQuery</Command><DevSerial>Q1</DevSerial></Request>'
    answer, local = _udp_ask(cam.namespace, (svc.ezviz_cloud, svc.ezviz_stun_port), query)
    assert ("NatIP", cam.ip) in EzvizXmlMessage.parse(answer).elements


@dataclass
class Capture:
    """AF_PACKET capture on the gateway's camera bridge, in a thread."""

    ns: str
    interface: str
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        with inside(self.ns):
            self.source = RingSource(self.interface).open()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for batch in self.source.batches():
                for i in range(len(batch)):
                    self.frames.append((int(batch.ts_ns[i]), batch.packet(i)))
        except BaseException as exc:
            self.error = exc

    def stop(self) -> list[tuple[int, bytes]]:
        self.source.close()
        self.thread.join(5)
        if self.error is not None:
            raise self.error
        return list(self.frames)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ipv4(frame: bytes) -> tuple[str, str, str, str, int] | None:
    """(src mac, dst mac, src ip, dst ip, protocol) of an untagged IPv4 frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    return (
        _mac(frame[6:12]),
        _mac(frame[0:6]),
        socket.inet_ntoa(frame[26:30]),
        socket.inet_ntoa(frame[30:34]),
        frame[23],
    )


def test_bridge_capture_sees_camera_to_recorder_unicast(lab: Lab) -> None:
    desc = lab.description()
    rec = desc.recorder
    capture = Capture(desc.gateway.namespace, desc.gateway.bridge)
    deadline = time.monotonic() + 10
    want = {(c.mac, c.ip, 17 if c.transport == "udp" else 6) for c in desc.cameras}
    got: set[tuple[str, str, int]] = set()
    while time.monotonic() < deadline and not want <= got:
        time.sleep(0.2)
        for _, frame in list(capture.frames):
            head = _ipv4(frame)
            if head and head[1] == rec.mac and head[3] == rec.ip:
                got.add((head[0], head[2], head[4]))
    capture.stop()
    # Frames forwarded between two bridge ports (camera -> recorder), not addressed to the gateway.
    assert want <= got, f"missing {want - got}"


def test_trigger_logs_events_and_camwatch_raises_exactly_the_expected_alerts(
    lab: Lab, tmp_path: Path
) -> None:
    desc = lab.description()
    capture = Capture(desc.gateway.namespace, desc.gateway.bridge)
    started = time.time()
    assert lab.trigger() == {"cam1": 1, "cam2": 1, "cam3": 1, "cam4": 1, "office": 1, "attacker": 1}
    expected = set(BEHAVIOURS)  # every behaviour of lab/camera.py
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and {e.behaviour for e in lab.events()} < expected:
        time.sleep(0.3)
    time.sleep(1.0)  # the last packets of the last behaviour
    frames = capture.stop()
    events = lab.events()
    assert {e.behaviour for e in events} == expected
    for event in events:
        assert event.ts >= started - 1 and event.expect == BEHAVIOURS[event.behaviour]
        assert "error" not in event.detail, (event.behaviour, event.detail)
        assert event.mac == desc.camera(event.camera).mac and event.ip == desc.camera(event.camera).ip

    # What camwatch makes of the bridge traffic, with the lab's own policy.
    pcap = tmp_path / "bridge.pcap"
    writer = PcapWriter(nanosecond=True)
    with pcap.open("wb") as fh:
        fh.write(writer.header())
        for ts, frame in frames:
            fh.write(writer.record(ts, frame))
    policy = SitePolicy.from_yaml(lab.paths.policy.read_text(), source=str(lab.paths.policy))
    engine = Engine(policy, VendorTable.load(), EngineConfig(observer="lab/test"))
    alerts: list[Alert] = []
    for batch in PcapFileSource(str(pcap), 4096).batches():
        alerts += engine.feed(batch).alerts
    alerts += engine.finish().alerts
    by_device: dict[str, set[str]] = {}
    for alert in alerts:
        by_device.setdefault(alert.device_id or "?", set()).add(alert.rule.id)
    for event in events:
        raised = by_device.get(event.mac.replace(":", "-"), set())
        assert set(event.expect) <= raised, (event.behaviour, event.expect, raised)
    # The well-behaved camera and the lab's other devices raise nothing; the personas nothing unexpected.
    allowed = {e.mac.replace(":", "-"): set() for e in events}
    for event in events:
        allowed[event.mac.replace(":", "-")] |= set(event.expect)
    assert by_device == {mac: rules for mac, rules in allowed.items() if rules}


def test_pattern_switch_takes_effect(lab: Lab) -> None:
    desc = lab.description()
    cam = desc.camera("cam3")
    lab.set_pattern(cam.name, "black")
    (black,) = decode(desc.recorder.namespace, f"{cam.url},tcp")
    lab.set_pattern(cam.name, "normal")
    (normal,) = decode(desc.recorder.namespace, f"{cam.url},tcp")
    assert isinstance(black["mean"], float) and isinstance(black["std"], float)
    assert black["mean"] < 25 and black["std"] < 3, black
    assert isinstance(normal["std"], float) and normal["std"] > 20, normal
    with pytest.raises(LabError, match="pattern 'sepia' is not one of normal, frozen, black, covered"):
        lab.set_pattern(cam.name, "sepia")
    with pytest.raises(LabError, match="no camera cam9"):
        lab.set_pattern("cam9", "black")
    with pytest.raises(LabError, match="no cam9 in lab"):
        lab.trigger(["cam9"])


def test_down_removes_everything_and_is_idempotent(lab: Lab) -> None:
    pids = [p.pid for p in lab.status().processes]
    done = lab.down()
    assert any(line.startswith("deleted namespace") for line in done)
    assert lab_namespaces(PREFIX) == []
    assert all(pid is not None and not Path(f"/proc/{pid}").exists() for pid in pids)
    assert lab.down() == []
    proc = camwatch("lab", "status", *lab_args(lab))
    assert proc.returncode == 3 and ": down" in proc.stdout
    assert camwatch("lab", "down", *lab_args(lab)).returncode == 0


def test_lab_up_without_the_extras_names_them() -> None:
    # Checked first, before root and namespaces: a field engineer learns which extra to install.
    with pytest.raises(LabError, match=r"camwatch_no_such_module: pip install 'camwatch\[lab\]'"):
        preflight({"camwatch_no_such_module": "lab"})
    # Each missing package names its extra, each extra once, in the order of the packages.
    missing = {"camwatch_no_a": "lab", "camwatch_no_b": "agent", "camwatch_no_c": "lab", "json": "stream"}
    with pytest.raises(LabError) as info:
        require_packages(missing)
    assert str(info.value) == (
        "the camera lab needs camwatch_no_a and camwatch_no_b and camwatch_no_c: "
        "pip install 'camwatch[lab,agent]' (scripts/demo installs them)"
    )
    require_packages({"json": "lab"})  # present: nothing to say
