"""The agent under faults (issue 16): does it keep capturing, lose no alert, say what happened and recover?

Run as root (it mounts a small tmpfs for the state directory), with Mosquitto and Prometheus installed::

    .venv/bin/python benchmarks/agent_faults.py            # about 3 minutes
    .venv/bin/python benchmarks/agent_faults.py --smoke    # about 1 minute: the same faults, shorter

One real agent (`camwatch run`, a subprocess) replays a synthetic site capture in real time (video from four
cameras, plus a camera connecting to a new Internet address every 2 s: a new alert every 2 s), publishes
to a real Mosquitto with a persistent subscriber, writes ``alerts_file`` and its state on a 2 MB tmpfs, and
is scraped every second by a real Prometheus with basic auth. Meanwhile:

1. before it starts, its state and spool files are damaged: ``inventory.json`` nested 100,000 deep,
   ``incidents.json`` with ``Infinity``, ``outbox.sqlite3`` another program's database;
2. from the start, 500 idle connections (from 400 addresses), 40 connections trickling a header line
   every second (20 from one address, 20 from 20 others), and a client guessing passwords as fast as it can
   (from its own address) hit the metrics port;
3. the broker is killed (SIGKILL) and started again later;
4. the state directory's disk is filled up, and freed later.

Then it checks: every alert `camwatch replay` finds in the same capture reached the subscriber and
``alerts_file``; the capture advanced during every fault; every scrape of the real Prometheus succeeded;
and it shows the log lines and metrics that said what happened, and that it recovered (spool durable
again, state saved again). The figures go to stdout (Markdown) and ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab import scenario, synth  # noqa: E402
from monitor.pcapwrite import pcap_bytes  # noqa: E402
from tests.agents.mosquitto import Mosquitto, Subscriber  # noqa: E402
from tests.agents.promserver import ScrapeTarget, free_port, running_prometheus  # noqa: E402
from tests.agents.smalldisk import fill, small_disk  # noqa: E402

POLICY = ROOT / "examples" / "site-policy.yaml"
NS = 1_000_000_000
PASSWORD = "scrape-secret"


@dataclass(frozen=True)
class Timeline:
    """Seconds from the agent's start."""

    capture: float  # length of the capture, replayed in real time
    broker_down: float
    broker_up: float
    disk_full: float
    disk_free: float


FULL = Timeline(capture=150.0, broker_down=5.0, broker_up=25.0, disk_full=10.0, disk_free=80.0)
SMOKE = Timeline(capture=50.0, broker_down=4.0, broker_up=12.0, disk_full=6.0, disk_free=16.0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# The capture and what it should raise


def build_capture(path: Path, seconds: float) -> int:
    """The demo site for ``seconds``, plus camera 1 opening HTTPS to a new address every 2 s from 14 s on."""
    shape = scenario.SiteShape(hik_cameras=2, seconds=seconds, video_pps=50)
    frames = list(scenario.site_packets(shape))
    cam_mac, cam_ip = scenario.hik_mac(1), scenario.hik_ip(1)
    extra = []
    t = shape.start_ns + 14 * NS
    k = 0
    while t < shape.start_ns + int((seconds - 4) * NS):
        k += 1
        dst = f"198.51.{100 + k // 250}.{k % 250 + 1}"
        syn = synth.tcp4_frame(
            cam_mac, scenario.GW_MAC, cam_ip, dst, 45000 + k, 443, b"", flags=synth.TCP_SYN
        )
        extra.append((t, syn))
        t += 2 * NS
    frames = sorted(frames + extra, key=lambda f: f[0])
    path.write_bytes(pcap_bytes(frames))
    return len(frames)


def expected_alerts(pcap: Path, gateway: str, out: Path) -> dict[str, str]:
    """event.id -> rule.id of every alert `camwatch replay` raises for the capture."""
    subprocess.run(
        [sys.executable, "-m", "agents.cli", "replay", str(pcap), "--policy", str(POLICY),
         "--gateway", gateway, "--alerts", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return {a["event"]["id"]: a["rule"]["id"] for a in map(json.loads, out.read_text().splitlines())}


# --------------------------------------------------------------------------------------------------
# Damage done while the agent is stopped


def damage_state(state: Path) -> None:
    state.mkdir(parents=True)
    (state / "inventory.json").write_text('{"version": 1, "devices": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (state / "incidents.json").write_text('{"version": 1, "incidents": [["x", Infinity]]}')
    with contextlib.closing(sqlite3.connect(state / "outbox.sqlite3")) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('not an outbox')")
        db.commit()


# --------------------------------------------------------------------------------------------------
# The attack on the metrics port


@dataclass
class Attack:
    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    idle: list[socket.socket] = field(default_factory=list)
    trickle_connections: int = 0
    guesses: dict[int, int] = field(default_factory=dict)  # status -> count
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(500):
            address = "127.0.0.4" if n < 100 else f"127.1.{n // 200}.{n % 200 + 1}"
            with contextlib.suppress(OSError):
                self.idle.append(_connect(address, self.port))
        for n in range(40):
            address = "127.0.0.2" if n < 20 else f"127.2.0.{n - 19}"
            self._spawn(self._trickle, address)
        self._spawn(self._guess, "127.0.0.3")

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _trickle(self, address: str) -> None:
        while not self.stop.is_set():
            try:
                with _connect(address, self.port) as sock:
                    self.trickle_connections += 1
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                    while not self.stop.wait(1.0):
                        sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                self.stop.wait(0.05)

    def _guess(self, address: str) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            auth = base64.b64encode(f"prometheus:guess-{n}".encode()).decode()
            try:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=10, source_address=(address, 0)
                )
                conn.request("GET", "/metrics", headers={"Authorization": f"Basic {auth}"})
                status = conn.getresponse().status
                conn.close()
            except OSError:
                status = 0
            self.guesses[status] = self.guesses.get(status, 0) + 1

    def end(self) -> None:
        self.stop.set()
        for sock in self.idle:
            sock.close()
        for thread in self.threads:
            thread.join(timeout=15)


def _connect(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


# --------------------------------------------------------------------------------------------------
# Running it


def scrape(port: int) -> str:
    auth = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Basic {auth}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name)}(?:{{{re.escape(labels)}}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def run(smoke: bool, workdir: Path) -> dict[str, Any]:
    timeline = SMOKE if smoke else FULL
    pcap = workdir / "site.pcap"
    packets = build_capture(pcap, timeline.capture)
    expected = expected_alerts(pcap, "gw-faults", workdir / "expected.jsonl")
    log(f"capture: {packets} packets over {timeline.capture:g} s; replay raises {len(expected)} alerts")
    report: dict[str, Any] = {"smoke": smoke, "timeline": timeline.__dict__, "packets": packets}
    report["expected_alerts"] = len(expected)
    password = workdir / "metrics.password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    metrics_port = free_port()
    with small_disk(workdir / "disk", "2m") as disk:
        state = disk / "state"
        damage_state(state)
        broker = Mosquitto(workdir / "broker", persistence=True)
        broker.start()
        config = workdir / "agent.yaml"
        config.write_text(
            f"site: depot-7\ngateway: gw-faults\ncapture: {{pcap: {pcap}, pace: realtime}}\n"
            f"policy_file: {POLICY}\nmetrics: {{listen: 127.0.0.1, port: {metrics_port}, basic_auth: "
            f"{{username: prometheus, password_file: {password}}}}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\nstate_dir: {state}\nrun_as_user: null\n"
            f"alerts_file: {disk / 'alerts.jsonl'}\n"
        )
        agent_log = workdir / "agent.log"
        subscriber = Subscriber(
            broker, "camwatch/+/+/alerts/#", client_id="faults-subscriber", persistent=True
        )
        async with subscriber:
            await asyncio.sleep(1.5)  # the broker saves the subscriber's session (autosave every second)
            with agent_log.open("wb") as out:
                agent = subprocess.Popen(
                    [sys.executable, "-m", "agents.cli", "run", "--config", str(config)],
                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            started = time.monotonic()
            attack = Attack(metrics_port)
            prom_dir = workdir / "prom"
            target = ScrapeTarget(
                f"127.0.0.1:{metrics_port}", basic_auth=("prometheus", password), labels={"site": "depot-7"}
            )
            try:
                with running_prometheus(prom_dir, [target]) as prom:
                    await until(lambda: _up(metrics_port), 30, "the agent never served metrics")
                    attack_start = time.time()
                    await asyncio.to_thread(attack.start)
                    log(f"attack: {len(attack.idle)} idle connections open, 40 tricklers, a password guesser")
                    marks: dict[str, float] = {}

                    async def at(offset: float) -> None:
                        await asyncio.sleep(max(0.0, started + offset - time.monotonic()))

                    await at(timeline.broker_down)
                    assert broker._proc is not None
                    broker._proc.kill()
                    broker._proc.wait()
                    broker._proc = None
                    marks["broker_down"] = time.time()
                    log("broker killed (SIGKILL)")
                    await at(timeline.disk_full)
                    filler = await asyncio.to_thread(fill, disk)
                    marks["disk_full"] = time.time()
                    log("state disk full")
                    await at(timeline.broker_up)
                    broker.start()
                    marks["broker_up"] = time.time()
                    log("broker started again")
                    await at(timeline.disk_free)
                    filler.unlink()
                    marks["disk_free"] = time.time()
                    log("state disk freed")
                    await until(
                        lambda: (
                            metric(scrape(metrics_port), "camwatch_capture_finished", f'interface="{pcap}"')
                            == 1
                        ),
                        timeline.capture + 60,
                        "the capture never finished",
                    )
                    marks["capture_end"] = time.time()
                    log("capture finished")

                    def delivered() -> set[str]:
                        return {json.loads(r.payload)["event"]["id"] for r in subscriber.messages}

                    with contextlib.suppress(AssertionError):
                        await subscriber.wait_until(lambda m: set(expected) <= delivered(), 90)
                    # The outbox tries its file again at the next alert after 30 s; the state is saved every
                    # minute: wait for both to say they recovered (or give up and report it).
                    await until(lambda: metric(scrape(metrics_port), "camwatch_spool_durable") == 1, 90, None)
                    await until(
                        lambda: (
                            (metric(scrape(metrics_port), "camwatch_state_last_save_timestamp_seconds") or 0)
                            > marks["disk_free"]
                        ),
                        90,
                        None,
                    )
                    await asyncio.sleep(2.5)  # two more scrapes by Prometheus
                    final = scrape(metrics_port)
                    end = time.time()
                    report["prometheus"] = prometheus_figures(prom, attack_start, end, marks)
            finally:
                await asyncio.to_thread(attack.end)
                agent.send_signal(signal.SIGTERM)
                try:
                    code = await asyncio.to_thread(agent.wait, 60)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    code = -9
            messages = list(subscriber.messages)
        broker.stop()
        alerts_file = [
            json.loads(line)
            for line in (disk / "alerts.jsonl").read_text().splitlines()
            if line.endswith("}")
        ]
        aside = sorted(p.name for p in state.iterdir() if ".damaged-" in p.name or ".corrupt-" in p.name)
    published = [json.loads(r.payload)["event"]["id"] for r in messages]
    in_file = [a["event"]["id"] for a in alerts_file if "event" in a]
    text = agent_log.read_text(errors="replace")
    report.update(
        exit_code=code,
        delivered_unique=len(set(published)),
        delivered_total=len(published),
        missing_over_mqtt=sorted(set(expected) - set(published)),
        in_alerts_file_unique=len(set(in_file)),
        missing_in_alerts_file=sorted(set(expected) - set(in_file)),
        extra_alerts=sorted({*published} - set(expected)),
        set_aside=aside,
        guesses=dict(sorted(attack.guesses.items())),
        trickle_connections=attack.trickle_connections,
        log_lines=summarise_log(text),
        tracebacks=text.count("Traceback"),
        final_metrics={
            f"{name}{{{labels}}}" if labels else name: metric(final, name, labels)
            for name, labels in [
                ("camwatch_spool_durable", ""),
                ("camwatch_state_save_failures_total", ""),
                ("camwatch_mqtt_connected", ""),
                ("camwatch_mqtt_reconnects_total", ""),
                ("camwatch_spool_alerts", ""),
                ("camwatch_spool_dropped_total", ""),
                ("camwatch_output_records_lost_total", 'output="alerts_file"'),
                ("camwatch_output_records_waiting", 'output="alerts_file"'),
                ("camwatch_metrics_auth_failures_total", ""),
                ("camwatch_metrics_requests_throttled_total", ""),
                ("camwatch_metrics_connections_closed_total", 'reason="evicted"'),
                ("camwatch_metrics_connections_closed_total", 'reason="header_timeout"'),
                ("camwatch_metrics_connections_closed_total", 'reason="client_limit"'),
                ("camwatch_metrics_connections_closed_total", 'reason="full"'),
                ("camwatch_capture_packets_total", f'interface="{pcap}"'),
                ("camwatch_capture_finished", f'interface="{pcap}"'),
            ]
        },
    )
    return report


async def until(check: Any, timeout: float, what: str | None) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await asyncio.to_thread(check):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            if what is not None:
                raise RuntimeError(what)
            return False
        await asyncio.sleep(0.25)


def _up(port: int) -> bool:
    return "camwatch_up" in scrape(port)


def prometheus_figures(prom: Any, start: float, end: float, marks: dict[str, float]) -> dict[str, Any]:
    """What the real Prometheus saw: its scrapes during the attack, and the capture during each fault."""
    window = max(1, int(end - start))

    def at(expr: str, when: float) -> float | None:
        result = prom.api("query", query=expr, time=f"{when:.3f}")["result"]
        return float(result[0]["value"][1]) if result else None

    scrapes = at(f'count_over_time(up{{job="camwatch"}}[{window}s])', end)
    ok = at(f'sum_over_time(up{{job="camwatch"}}[{window}s])', end)
    figures: dict[str, Any] = {"scrapes_during_attack": scrapes, "scrapes_ok": ok}
    faults = {
        "broker down": (marks["broker_down"], marks["broker_up"]),
        "disk full": (marks["disk_full"], marks["disk_free"]),
    }
    for name, (begin, finish) in faults.items():
        seconds = max(1, int(finish - begin))
        figures[f"packets captured while {name}"] = at(
            f"increase(camwatch_capture_packets_total[{seconds}s])", finish
        )
        figures[f"alerts counted while {name}"] = at(
            f"sum(increase(camwatch_alerts_total[{seconds}s]))", finish
        )
    durable = prom.api(
        "query_range", query="camwatch_spool_durable", start=f"{start:.3f}", end=f"{end:.3f}", step="1"
    )["result"]
    values = [(float(t), float(v)) for t, v in durable[0]["values"]] if durable else []
    figures["spool_durable_min"] = min((v for _, v in values), default=None)
    back = [t for t, v in values if v == 1 and t > marks["disk_free"]]
    figures["spool_durable_again_after_free_s"] = round(back[0] - marks["disk_free"], 1) if back else None
    return figures


PATTERNS = {
    "damaged state set aside": r"is damaged \(",
    "outbox moved aside": r"outbox .* is unusable \(.*moved to",
    "mqtt: broker unreachable (WARNING)": r"WARNING: mqtt: .*retrying in",
    "mqtt: connected again after an outage": r"mqtt: connected to .* after",
    "outbox fell back to memory": r"keeping records in memory",
    "outbox durable again": r"can be used again",
    "state save failed": r"cannot save state",
    "alerts_file cannot be written": r"alerts_file: cannot write",
    "alerts_file writes again": r"alerts_file: writing to .* again",
    "metrics: notices": r"metrics: .*flooding",
    "metrics: password lockouts": r"wrong passwords from",
    "capture end of file": r"end of the file after",
}


def summarise_log(text: str) -> dict[str, int]:
    return {name: len(re.findall(pattern, text)) for name, pattern in PATTERNS.items()}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# camwatch agent under faults{' (smoke)' if report['smoke'] else ''}",
        "",
        f"Capture: {report['packets']:,} packets in {report['timeline']['capture']:g} s (real time); "
        f"`camwatch replay` raises {report['expected_alerts']} alerts.",
        "",
        "| check | result |",
        "|---|---|",
        "| alerts delivered over MQTT (unique / total) | "
        f"{report['delivered_unique']} / {report['delivered_total']} |",
        f"| expected alerts missing over MQTT | {len(report['missing_over_mqtt'])} |",
        f"| expected alerts missing in alerts_file | {len(report['missing_in_alerts_file'])} |",
        f"| files set aside at start | {', '.join(report['set_aside']) or 'none'} |",
        f"| agent exit code after SIGTERM | {report['exit_code']} |",
        f"| tracebacks in the agent's log | {report['tracebacks']} |",
        f"| password guesses (status: count) | {report['guesses']} |",
        f"| trickling connections made | {report['trickle_connections']} |",
    ]
    for name, value in report.get("prometheus", {}).items():
        lines.append(f"| Prometheus: {name} | {value} |")
    for name, value in report["log_lines"].items():
        lines.append(f"| log lines: {name} | {value} |")
    for name, value in report["final_metrics"].items():
        lines.append(f"| at the end: {name} | {value} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a shorter timeline (about a minute)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, captures)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(
            "agent_faults.py: run as root (it mounts a small tmpfs for the state directory)", file=sys.stderr
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="camwatch-faults-"))
    try:
        report = asyncio.run(run(args.smoke, workdir))
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        else:
            log(f"work directory kept: {workdir}")
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    ok = (
        not report["missing_over_mqtt"]
        and not report["missing_in_alerts_file"]
        and report["exit_code"] == 0
        and report["tracebacks"] == 0
        and report["prometheus"]["scrapes_ok"] == report["prometheus"]["scrapes_during_attack"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
