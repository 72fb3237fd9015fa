"""Evidence pcaps (agents/sinks/evidence.py): written before the other sinks see the alert, named in
file.path, readable as pcapng by camwatch's own reader, within their bounds, and never a file.path without
a file; then a real agent run over a capture with an attack, writing the files its alerts name."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from agents.config import AgentConfig
from agents.runtime import Agent
from agents.sinks.evidence import EvidenceSink, RingReading, pcapng_evidence
from lab import attacks, personas
from monitor.evidence import Evidence, Packet
from monitor.pcapfile import CaptureParser
from monitor.pcapwrite import pcap_bytes
from tests.agents.mosquitto import free_port
from tests.enginerun import vendors

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
FRAMES = personas.tcp_exchange(
    T0,
    "02:00:00:00:00:09",
    "44:19:b6:00:00:11",
    "198.51.100.66",
    "10.20.0.11",
    40000,
    80,
    [(attacks.http_request("GET", "/", "cam"), attacks.http_response(200, b"ok"))],
)


def evidence(n: int = 4) -> Evidence:
    return Evidence(
        tuple(Packet(ts, frame, len(frame), 1, f"packet {i}") for i, (ts, frame) in enumerate(FRAMES[:n]))
    )


def record(
    event_id: str = "0123456789abcdef0123456789abcdef", ts: str = "2026-02-02T10:00:00.123Z"
) -> dict[str, object]:
    return {"@timestamp": ts, "event": {"id": event_id}, "rule": {"id": "exploit.attempt"}, "message": "m"}


def read_back(path: Path) -> list[tuple[int, bytes]]:
    parser = CaptureParser(path.name, 1000)
    batches = [*parser.feed(path.read_bytes()), *parser.flush()]
    return [(int(b.ts_ns[i]), b.packet(i)) for b in batches for i in range(len(b))]


def test_the_file_is_named_in_the_record_and_written_before_other_sinks(tmp_path: Path) -> None:
    sink = EvidenceSink(tmp_path / "ev")
    rec = record()
    sink.attach(rec, evidence())
    path = Path(rec["file"]["path"])  # type: ignore[index]
    assert (
        path.parent == tmp_path / "ev"
        and path.name == "20260202T100000-exploit.attempt-0123456789abcdef0123456789abcdef.pcapng"
    )
    assert not path.exists()  # attach() does no I/O: it runs under the engine lock
    asyncio.run(sink.submit(rec))
    assert read_back(path) == [(ts, frame) for ts, frame in FRAMES[:4]]
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    data = path.read_bytes()
    assert b"packet 3" in data and b"camwatch exploit.attempt 0123456789abcdef0123456789abcdef: m" in data
    assert sink.counters.files_written == 1 and sink.counters.files == 1


def test_alerts_without_evidence_and_other_files_are_left_alone(tmp_path: Path) -> None:
    sink = EvidenceSink(tmp_path / "ev")
    rec = record()
    sink.attach(rec, None)
    assert "file" not in rec
    snapshot = {**record(), "file": {"path": "/var/lib/camwatch/snapshots/cam/x.jpg"}}
    asyncio.run(sink.submit(snapshot))  # the stream probe's snapshot: not ours
    assert snapshot["file"] == {"path": "/var/lib/camwatch/snapshots/cam/x.jpg"}


def test_unwritable_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    sink = EvidenceSink(tmp_path / "ev")
    rec = record()
    sink.attach(rec, evidence())
    (tmp_path / "ev").rmdir()
    (tmp_path / "ev").write_text("a file where the directory was")
    asyncio.run(sink.submit(rec))
    assert "file" not in rec and sink.counters.write_errors == 1


def test_bounds_delete_the_oldest(tmp_path: Path) -> None:
    clock = [time.time()]
    sink = EvidenceSink(tmp_path / "ev", max_files=3, max_age_s=3600, clock=lambda: clock[0])
    for i in range(5):
        rec = record(f"{i:032x}", f"2026-02-02T10:00:0{i}.000Z")
        sink.attach(rec, evidence())
        asyncio.run(sink.submit(rec))
        clock[0] += 1
    names = sorted(p.name for p in (tmp_path / "ev").iterdir())
    assert len(names) == 3 and names[0].startswith("20260202T100002")
    assert sink.counters.deleted["count"] == 2
    size = sink.counters.bytes
    small = EvidenceSink(tmp_path / "ev", max_bytes=size // 2, max_age_s=3600, clock=lambda: clock[0])
    assert small.counters.files < 3 and small.counters.deleted["size"] >= 1  # applied to what it found
    clock[0] += 7200
    small.expire()
    assert small.counters.files == 0 and small.counters.deleted["age"] >= 1
    assert not list((tmp_path / "ev").glob("*.pcapng"))


def test_a_file_is_bounded_and_keeps_the_trigger() -> None:
    big = Evidence(
        (
            *(Packet(T0 + i, bytes(1500), 1500, 1, "n") for i in range(100)),
            Packet(T0 + 999, b"T" * 60, 60, 1, "trigger"),
        )
    )
    data = pcapng_evidence(big, "c", 16 * 1024)
    assert len(data) <= 16 * 1024 and b"trigger" in data and b"T" * 60 in data


def test_pending_evidence_is_bounded(tmp_path: Path) -> None:
    from agents.sinks import evidence as module

    sink = EvidenceSink(tmp_path / "ev")
    for i in range(module.MAX_PENDING + 5):
        sink.attach(record(f"{i:032x}"), evidence(1))
    assert sink.counters.dropped == 5


def test_the_collector(tmp_path: Path) -> None:
    sink = EvidenceSink(
        tmp_path / "ev", rings=lambda: RingReading(packets=7, bytes=4096, rings=2, forgotten=1)
    )
    rec = record()
    sink.attach(rec, evidence())
    asyncio.run(sink.submit(rec))
    registry = CollectorRegistry()
    registry.register(sink.collector())
    text = generate_latest(registry).decode()
    for line in (
        "camwatch_evidence_files_written_total 1.0",
        "camwatch_evidence_files 1.0",
        "camwatch_evidence_packets_recorded_total 7.0",
        "camwatch_evidence_ring_bytes 4096.0",
        'camwatch_evidence_files_deleted_total{reason="age"} 0.0',
    ):
        assert line in text, line


def test_a_real_agent_writes_the_files_its_alerts_name(tmp_path: Path) -> None:
    """A capture with a Hikvision exploit and a Mirai scan, replayed by the agent: every alert of severity 4+
    names a pcapng that exists and holds the packets; the alerts file (a later sink) already has the path."""
    frames = list(FRAMES)
    put = attacks.http_request("PUT", "/SDK/webLanguage", "10.20.0.11", body=attacks.weblanguage_body("id"))
    frames += personas.tcp_exchange(
        T0 + NS,
        "02:00:00:00:00:09",
        "44:19:b6:00:00:11",
        "198.51.100.66",
        "10.20.0.11",
        40001,
        80,
        [(put, attacks.http_response(500))],
    )
    frames += [
        (
            T0 + 2 * NS + i * 10_000_000,
            attacks.mirai_syn(
                "44:19:b6:00:00:11", "02:00:00:00:00:09", "10.20.0.11", f"203.0.113.{i + 1}", 41000 + i
            ),
        )
        for i in range(40)
    ]
    frames += [(T0 + 30 * NS, FRAMES[0][1])]  # time passes: the scan's check and the holds are due
    pcap = tmp_path / "attack.pcap"
    pcap.write_bytes(pcap_bytes(sorted(frames)))
    config = AgentConfig.from_yaml(
        f"site: depot-7\ngateway: gw-ev\ncapture: {{pcap: {pcap}, pace: fast}}\npolicy_file: {POLICY}\n"
        f"metrics: {{listen: 127.0.0.1, port: {free_port()}}}\nstate_dir: state\nrun_as_user: null\n"
        "alerts_file: alerts.jsonl\nevidence: {max_files: 50}\n",
        "agent.yaml",
        base_dir=tmp_path,
    )
    assert config.evidence is not None and config.evidence.dir == tmp_path / "state" / "evidence"

    async def run() -> None:
        agent = Agent(config, vendors())
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        deadline = time.monotonic() + 30
        while agent.engine.stats.packets < len(frames):
            assert time.monotonic() < deadline and not task.done(), "the capture was not read"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(run())
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    severe = [a for a in alerts if a["event"]["severity"] >= 4]
    assert {a["rule"]["id"] for a in severe} == {"exploit.attempt", "device.scanning", "device.exposed"}
    for a in severe:
        path = Path(a["file"]["path"])
        assert path.is_file() and path.parent == tmp_path / "state" / "evidence"
        # An exposure is judged at the device's answer: the client's SYN and the device's SYN-ACK.
        assert len(read_back(path)) >= (2 if a["rule"]["id"] == "device.exposed" else 3)
    assert all("file" not in a for a in alerts if a["event"]["severity"] < 4)
    scan = next(a for a in severe if a["rule"]["id"] == "device.scanning")
    assert len(read_back(Path(scan["file"]["path"]))) >= 16  # a sample of the scan's SYNs
