"""Flow records out of the agent: throughput (records/s, CPU) and disk per camera per day.

    .venv/bin/python benchmarks/flow_outputs.py            # about 5 minutes on a 2-core machine
    .venv/bin/python benchmarks/flow_outputs.py --smoke    # CI: everything once, small (not a measurement)

Each measured run is a real agent (``camwatch run`` in a child process, ``capture.pcap`` at ``pace: fast``)
whose flow outputs are on: ``flows_file`` with ``flows_rotation``, and ``mqtt.flows`` to a real Mosquitto.
Two captures:

1. **A camera day** (``day``): 50 cameras for 24 hours of site time, each doing what a camera does all day,
   as :func:`camera_day` lists: a recorder's RTSP session with keep-alives, the RTP video and its RTCP, DNS
   every 5 minutes, NTP every hour, a cloud connection with a heartbeat a minute, SSDP announcements. The
   video is one RTP packet every 10 s, a stand-in for 25 frames a second: the flows, their records and their
   timeouts are those of a real stream (a record's size depends on its counters' digits only). Gives the flow
   records and the disk they take per camera per day.
2. **The worst case** (``short``): benchmarks/gen_short_flows.py, a site of nothing but short flows (about 5
   packets each), so the flow outputs work as hard as the engine lets them: records/s and CPU per record.

Peers in the same run: the same agent and capture with no flow output (what the outputs cost), and a plain
Python loop writing as many records to a file (``json.dumps`` + ``write``: the floor of any JSON-lines
writer). Wall time is from the child's start until its records are all written (metrics polled every
0.2 s) plus its shutdown; CPU is the child's user + system time (``wait4``).

Prints a Markdown table and writes ``benchmarks/out/flow_outputs.json``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_DIR = HERE / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from gen_short_flows import short_flow_packets  # noqa: E402

from lab import synth  # noqa: E402
from lab.payloads import dns_query  # noqa: E402
from monitor.pcapwrite import PcapWriter  # noqa: E402

NS = 1_000_000_000
T0 = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z
DAY_S = 86_400
REC_MAC, REC_IP = "00:11:32:00:00:02", "10.20.0.2"
GW_MAC, GW_IP = "02:00:00:00:00:01", "10.20.0.1"
CLOUD = "203.0.113.7"
MOSQUITTO = Path("/usr/sbin/mosquitto")


def cam(n: int) -> tuple[str, str]:
    return f"44:19:b6:00:{n >> 8:02x}:{n & 0xFF:02x}", f"10.20.{1 + n // 250}.{n % 250 + 1}"


def camera_day(n: int, seconds: int) -> Iterator[tuple[int, bytes]]:
    """Camera ``n``'s packets over ``seconds`` of site time, in time order."""
    mac, ip = cam(n)
    off = n * 7_919_000  # cameras do not all wake at the same instant
    events: list[tuple[int, bytes]] = []
    rtsp_c, rtsp_s = 50_000 + n, 554
    seq_c = seq_s = 1000
    keep = b"GET_PARAMETER rtsp://%s/ RTSP/1.0\r\nCSeq: 1\r\n\r\n" % ip.encode()
    ok = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"
    for t in range(0, seconds, 30):  # the recorder's keep-alive on its RTSP session
        ts = T0 + off + t * NS
        events.append((ts, synth.tcp4_frame(REC_MAC, mac, REC_IP, ip, rtsp_c, rtsp_s, seq=seq_c, ack=seq_s,
                                            flags=synth.TCP_ACK | synth.TCP_PSH, payload=keep)))  # fmt: skip
        seq_c += len(keep)
        events.append((ts + 2_000_000, synth.tcp4_frame(mac, REC_MAC, ip, REC_IP, rtsp_s, rtsp_c, seq=seq_s,
                                                        ack=seq_c, flags=synth.TCP_ACK | synth.TCP_PSH,
                                                        payload=ok)))  # fmt: skip
        seq_s += len(ok)
    rtp = synth.RtpTemplate(mac, REC_MAC, ip, REC_IP, 8000, 9000 + 2 * n, 1200, 0x1000 + n)
    for k, t in enumerate(range(5, seconds, 10)):  # the video (a stand-in rate, see the module's docstring)
        events.append((T0 + off + t * NS, rtp.frame(k, k * 900_000)))
    rtcp = bytes([0x80, 200, 0, 6]) + (0x1000 + n).to_bytes(4, "big") + bytes(20)
    for t in range(7, seconds, 30):  # RTCP sender reports
        events.append(
            (T0 + off + t * NS, synth.udp4_frame(mac, REC_MAC, ip, REC_IP, 8001, 9001 + 2 * n, rtcp))
        )
    for k, t in enumerate(range(11, seconds, 300)):  # DNS every 5 minutes, a new source port each time
        q = dns_query((n * 1000 + k) & 0xFFFF, "time.ys7.com" if k % 2 else "litedev.ezvizlife.com")
        port = 40_000 + k % 20_000
        events.append((T0 + off + t * NS, synth.udp4_frame(mac, GW_MAC, ip, GW_IP, port, 53, q)))
        events.append((T0 + off + t * NS + 1_000_000, synth.udp4_frame(GW_MAC, mac, GW_IP, ip, 53, port, q)))
    ntp = bytes([0x23]) + bytes(47)
    for t in range(13, seconds, 3600):  # NTP every hour
        events.append((T0 + off + t * NS, synth.udp4_frame(mac, GW_MAC, ip, GW_IP, 123, 123, ntp)))
        events.append((T0 + off + t * NS + 800_000, synth.udp4_frame(GW_MAC, mac, GW_IP, ip, 123, 123, ntp)))
    c_seq, s_seq, sport = 5000, 9000, 41_000 + n
    beat = b"\x00\x00\x00\x10heartbeat-v1\x00\x00"
    for t in range(17, seconds, 60):  # the cloud connection's heartbeat
        ts = T0 + off + t * NS
        events.append((ts, synth.tcp4_frame(mac, GW_MAC, ip, CLOUD, sport, 8666, seq=c_seq, ack=s_seq,
                                            flags=synth.TCP_ACK | synth.TCP_PSH, payload=beat)))  # fmt: skip
        c_seq += len(beat)
        events.append((ts + 40_000_000, synth.tcp4_frame(GW_MAC, mac, CLOUD, ip, 8666, sport, seq=s_seq,
                                                         ack=c_seq, flags=synth.TCP_ACK)))  # fmt: skip
    notify = (
        b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n"
    )
    for t in range(19, seconds, 1800):  # SSDP announcements
        events.append((T0 + off + t * NS, synth.udp4_frame(mac, "01:00:5e:7f:ff:fa", ip, "239.255.255.250",
                                                           1900, 1900, notify)))  # fmt: skip
    events.sort(key=lambda e: e[0])
    return iter(events)


def write_pcap(path: Path, frames: Iterator[tuple[int, bytes]], limit: int | None = None) -> int:
    writer = PcapWriter(1, snaplen=65535)
    count = 0
    with path.open("wb") as fh:
        fh.write(writer.header())
        stream = islice(frames, limit) if limit is not None else frames
        while chunk := list(islice(stream, 4096)):
            fh.write(b"".join(writer.record(ts, frame) for ts, frame in chunk))
            count += len(chunk)
    return count


def day_capture(path: Path, cameras: int, seconds: int) -> int:
    return write_pcap(
        path, heapq.merge(*(camera_day(n, seconds) for n in range(cameras)), key=lambda e: e[0])
    )


@dataclass
class Run:
    name: str
    capture: str
    packets: int
    records: int
    wall_s: float
    cpu_s: float
    disk_bytes: int
    files: int
    start_s: float = 0.0
    """Start-up until the first packets (not in wall_s)."""
    stop_s: float = 0.0
    """SIGTERM until the agent exited (in wall_s)."""

    @property
    def records_per_s(self) -> float:
        return self.records / self.wall_s if self.wall_s else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Family name -> the sum of its series, from the agent's /metrics."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                name = series.partition("{")[0]
                out[name] = out.get(name, 0.0) + float(value)
    return out


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def run_agent(
    workdir: Path, name: str, pcap: Path, packets: int, broker: int | None, file: bool, mqtt: bool
) -> Run:
    """One agent over ``pcap`` with the flow outputs asked for; the figures of :class:`Run`."""
    d = workdir / slug(name)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    port = free_port()
    config = [
        "site: bench", "gateway: gw-1", f"capture: {{pcap: {pcap}, pace: fast, batch_size: 4096}}",
        f"metrics: {{listen: 127.0.0.1, port: {port}}}", f"state_dir: {d / 'state'}", "run_as_user: null",
        # The cameras' networks; the short-flow office hosts are not watched (2,000 device.new alerts would
        # measure the alert path, not the flow outputs).
        "policy: {monitored: {networks: [10.20.0.0/16]}}",
    ]  # fmt: skip
    if broker is not None:
        flows = str(mqtt).lower()
        config.append(f"mqtt: {{host: 127.0.0.1, port: {broker}, flows: {flows}, inventory: false}}")
    if file:
        config += [f"flows_file: {d / 'flows.jsonl'}", "flows_rotation: {max_size: 64MiB, max_files: 1000}"]
    (d / "agent.yaml").write_text("\n".join(config) + "\n")
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "run", "--config", str(d / "agent.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=(d / "agent.log").open("wb"),
        cwd=ROOT,
    )
    done_at = first_at = None
    last = -1.0
    while True:
        time.sleep(0.2)
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)  # not Popen.poll: wait4 below needs the child
        if pid:
            raise SystemExit(f"{name}: the agent exited ({status}); see {d / 'agent.log'}")
        try:
            m = scrape(port)
        except OSError:
            continue
        seen = m.get("camwatch_capture_packets_total", 0.0)
        written = m.get("camwatch_output_records_written_total", 0.0) + m.get(
            "camwatch_mqtt_flows_published_total", 0.0
        )
        if seen and first_at is None:
            first_at = time.monotonic() - 0.1  # the packets began within the last poll
        if seen >= packets and written == last:
            done_at = time.monotonic()
            break
        last = written
    stop = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    end = time.monotonic()
    if status != 0 or done_at is None or first_at is None:
        raise SystemExit(f"{name}: the agent failed ({status}); see {d / 'agent.log'}")
    files = sorted(d.glob("flows*.jsonl"))
    records = sum(sum(1 for _ in f.open("rb")) for f in files)
    if not file and mqtt:  # what the agent published, from its log's last metrics is not kept: count below
        records = _published(d / "agent.log")
    # Processing: from the first packets to the last record written, plus the shutdown (it flushes the flows
    # still open); not the start-up (imports, the exporter), the same with or without flow outputs.
    wall = (done_at - first_at) + (end - stop)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(
        name, pcap.stem, packets, records, wall, cpu, sum(f.stat().st_size for f in files), len(files),
        start_s=first_at - start, stop_s=end - stop,
    )  # fmt: skip


def _published(log: Path) -> int:
    """Flow records the MQTT data link published, from the agent's shutdown line."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "mqtt data: stopped:" in line:
            return int(line.split("stopped:")[1].split()[0])
    return 0


def plain_writer(workdir: Path, records: int, sample: Path) -> Run:
    """The floor: ``json.dumps`` and ``write`` of ``records`` records like the agent's, in this process."""
    template = json.loads(sample.open().readline()) if sample.exists() else {"n": 0}
    out = workdir / "plain.jsonl"
    t0, c0 = time.monotonic(), time.process_time()
    with out.open("w") as fh:
        for n in range(records):
            template["event"] = {**template.get("event", {}), "n": n}
            fh.write(json.dumps(template, separators=(",", ":")) + "\n")
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    return Run("plain json.dumps + write (peer)", "-", 0, records, wall, cpu, out.stat().st_size, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=50)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--short-packets", type=int, default=300_000)
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    p.add_argument("--smoke", action="store_true", help="small and once (CI): not a measurement")
    args = p.parse_args(argv)
    if args.smoke:
        args.cameras, args.hours, args.short_packets = 3, 1.0, 5_000
    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="camwatch-flowbench-", dir=args.out_dir))
    load_before = os.getloadavg()
    seconds = int(args.hours * 3600)
    day = work / "day.pcap"
    day_packets = day_capture(day, args.cameras, seconds)
    short = work / "short.pcap"
    short_packets = write_pcap(short, short_flow_packets(), args.short_packets)
    print(f"captures: day {day_packets:,} packets, short {short_packets:,} packets", file=sys.stderr)
    broker_proc = None
    broker_port = None
    if MOSQUITTO.exists():
        broker_port = free_port()
        conf = work / "mosquitto.conf"
        conf.write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker_proc = subprocess.Popen([str(MOSQUITTO), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.5)
    try:
        mq = broker_port is not None
        runs = [
            run_agent(work, "day: flows_file + mqtt.flows", day, day_packets, broker_port, True, mq),
            run_agent(work, "day: no flow output", day, day_packets, broker_port, False, False),
            run_agent(work, "short: flows_file + mqtt.flows", short, short_packets, broker_port, True, mq),
            run_agent(work, "short: no flow output", short, short_packets, broker_port, False, False),
            run_agent(work, "short: flows_file only", short, short_packets, broker_port, True, False),
            run_agent(work, "short: mqtt.flows only", short, short_packets, broker_port, False, mq),
        ]
    finally:
        if broker_proc is not None:
            broker_proc.terminate()
            broker_proc.wait(10)
    runs.append(plain_writer(work, runs[2].records, work / slug(runs[4].name) / "flows.jsonl"))
    day_run, short_run, short_base = runs[0], runs[2], runs[3]
    per_camera_day = day_run.disk_bytes / args.cameras * (DAY_S / seconds)
    records_camera_day = day_run.records / args.cameras * (DAY_S / seconds)
    extra_cpu = short_run.cpu_s - short_base.cpu_s
    file_only, mqtt_only, plain_run = runs[4], runs[5], runs[6]
    per_file = (file_only.cpu_s - short_base.cpu_s) / max(file_only.records, 1) * 1e6
    per_mqtt = (mqtt_only.cpu_s - short_base.cpu_s) / max(mqtt_only.records, 1) * 1e6
    print("| run | packets | flow records | wall s | records/s | CPU s | flow files |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r.name} | {r.packets:,} | {r.records:,} | {r.wall_s:.2f} | {r.records_per_s:,.0f} | "
              f"{r.cpu_s:.2f} | {r.disk_bytes / 1e6:.1f} MB in {r.files} |")  # fmt: skip
    print()
    print(
        f"Per camera per day: {records_camera_day:,.0f} flow records, {per_camera_day / 1e3:,.0f} kB of flow "
        f"files ({args.cameras} cameras, {args.hours:g} h of site time)."
    )
    if short_run.records:
        plain = plain_run.cpu_s / max(plain_run.records, 1) * 1e6
        print(
            f"CPU per flow record beyond the engine: both {extra_cpu / short_run.records * 1e6:.1f} µs, "
            f"flows_file {per_file:.1f} µs, mqtt.flows {per_mqtt:.1f} µs; the plain writer {plain:.1f} µs."
        )
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "cameras": args.cameras,
        "hours": args.hours,
        "runs": [{**asdict(r), "records_per_s": r.records_per_s} for r in runs],
        "per_camera_day": {"records": records_camera_day, "bytes": per_camera_day},
        "output_cpu_us_per_record": extra_cpu / short_run.records * 1e6 if short_run.records else None,
        "flows_file_cpu_us_per_record": (file_only.cpu_s - short_base.cpu_s)
        / max(file_only.records, 1)
        * 1e6,
        "mqtt_flows_cpu_us_per_record": (mqtt_only.cpu_s - short_base.cpu_s)
        / max(mqtt_only.records, 1)
        * 1e6,
        "mqtt": broker_port is not None,
    }
    (args.out_dir / "flow_outputs.json").write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
