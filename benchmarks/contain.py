#!/usr/bin/env python3
"""What containment's ruleset costs a forwarding gateway: latency and CPU at 50 cameras' traffic.

Namespaces (root): ``cam`` (the cameras: one address each), ``gw`` (forwards; the ruleset goes here),
``rec`` (the recorder, in another monitored network, so the video is routed through the gateway) and
``inet`` (where the blocked phone-home goes). Three conditions, measured in turns within one run:

- ``none``: no table at all in the gateway (no connection tracking either);
- ``conntrack``: a table with one rule that turns connection tracking on and accepts everything: what
  any gateway doing NAT already pays, the fair peer for a site gateway;
- ``camwatch``: the ruleset of ``camwatch contain render`` for a realistic plan (two monitored networks,
  five allow rules, a resolver, 50 more watched devices elsewhere, three quarantined addresses).

For each, two measurements:

1. **Load and latency.** Every camera sends RTP-like datagrams (``--packet-size`` bytes) to the recorder at
   ``--rate-mbit`` Mbit/s, and one datagram a second to a vendor cloud (dropped by the camwatch ruleset);
   meanwhile a probe on the first camera's address sends an echo request to the recorder every 5 ms and
   times the answer (both directions cross the gateway: the request as a watched device's packet, the
   answer as a never-block host's). Reported: the load actually sent, its CPU: the load generator's (its
   system time is the kernel's forwarding work, done in its context: veth to veth through the gateway,
   softirq included when the kernel has no separate IRQ time accounting) plus the ksoftirqd threads'
   (the part the kernel defers to them), and the probe's round-trip time (median, 99th percentile).
2. **Saturation.** One process sends ``--blast-packets`` datagrams from the 50 camera addresses as fast as
   it can; its CPU time (and ksoftirqd's) per packet is what forwarding one packet costs, and the
   difference between conditions is the ruleset's cost per packet.

Usage::

    sudo .venv/bin/python benchmarks/contain.py                 # 50 cameras, 2 Mbit/s each, 3 rounds
    sudo .venv/bin/python benchmarks/contain.py --smoke         # CI: everything once, tiny (no measurement)

A Markdown table on stdout, the figures as JSON (``--json``, default ``benchmarks/out/contain.json``).
The machine is shared: the rounds alternate the conditions so that background load hits each alike, and
the spread is reported.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.contain.nft import Nft  # noqa: E402
from agents.contain.plan import ContainmentPlan, Device  # noqa: E402
from agents.contain.render import TimedAddress, render_ruleset  # noqa: E402
from lab.netns import in_namespace  # noqa: E402
from monitor.policy import SitePolicy  # noqa: E402

CONDITIONS = ("none", "conntrack", "camwatch")
REC, CLOUD, ECHO_PORT, RTP_PORT, CLOUD_PORT = "10.89.0.2", "203.0.113.10", 7007, 5004, 8666
POLICY = """\
site: bench
monitored: {networks: [10.88.0.0/24, 10.89.0.0/24]}
resolvers: [10.89.0.53]
viewers: [10.89.0.2]
allow:
  - {name: ntp, to: [198.51.100.0/28], ports: [123/udp]}
  - {name: vms, to: [192.0.2.0/24]}
  - {name: api, to: [198.51.100.64/26], ports: [443/tcp, 8443/tcp]}
  - {name: syslog, to: [10.90.0.5/32], ports: [514/udp]}
  - {name: mgmt, to: [10.90.1.0/24], ports: [22/tcp, 161/udp]}
"""
CONNTRACK_ONLY = """\
table inet cwbench {}
delete table inet cwbench
table inet cwbench {
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
    }
}
"""


def camera_ips(n: int) -> list[str]:
    return [f"10.88.0.{11 + i}" for i in range(n)]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def topology(cameras: int) -> Iterator[dict[str, str]]:
    tag = f"cwb{os.getpid() % 100_000}"
    ns = {role: f"{tag}-{role}" for role in ("gw", "cam", "rec", "inet")}
    try:
        for name in ns.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        subprocess.run(["ip", "netns", "exec", ns["gw"], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                       check=True, capture_output=True)  # fmt: skip
        legs = {
            "cam": ("cam0", "10.88.0.1/24", [f"{a}/24" for a in camera_ips(cameras)], "10.88.0.1"),
            "rec": ("rec0", "10.89.0.1/24", [f"{REC}/24"], "10.89.0.1"),
            "inet": ("inet0", "203.0.113.1/24", [f"{CLOUD}/24"], "203.0.113.1"),
        }
        for role, (port, gw_addr, addrs, via) in legs.items():
            ip(
                "link",
                "add",
                port,
                "netns",
                ns["gw"],
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns[role],
            )
            ip("-n", ns["gw"], "addr", "add", gw_addr, "dev", port)
            ip("-n", ns["gw"], "link", "set", port, "up")
            for addr in addrs:
                ip("-n", ns[role], "addr", "add", addr, "dev", "eth0")
            ip("-n", ns[role], "link", "set", "eth0", "up")
            ip("-n", ns[role], "route", "add", "default", "via", via)
        yield ns
    finally:
        for name in ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def udp_socket(ns: str, bind: tuple[str, int], rcvbuf: int | None = None) -> socket.socket:
    with in_namespace(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(bind)
    return sock


def child(work: Any, *args: Any) -> tuple[int, int]:
    """Fork ``work(write_fd, *args)``; returns (pid, read end of its result pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        code = 0
        try:
            work(w, *args)
        except BaseException:  # report and leave
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def result(pid: int, fd: int) -> dict[str, Any]:
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise RuntimeError(f"a benchmark process failed (status {status})")
    return json.loads(data)


def _cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def softirq_threads_cpu() -> float:
    """CPU seconds of the kernel's ksoftirqd threads so far: under load the kernel hands part of the
    forwarding to them instead of running it in the sender's context, and it must be counted too."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("ksoftirqd/"):
                continue
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def load_worker(
    w: int,
    socks: list[socket.socket],
    rate_pps: float,
    size: int,
    duration: float,
    cloud: list[socket.socket],
) -> None:
    """Paced: every 10 ms each camera's share of datagrams; one cloud datagram per camera per second."""
    payload = b"\x80" + bytes(size - 1)
    u0, s0 = _cpu()
    start = time.perf_counter()
    sent = tick = 0
    carry = 0.0
    while True:
        now = time.perf_counter()
        if now - start >= duration:
            break
        carry += rate_pps * 0.010
        burst = int(carry)
        carry -= burst
        for sock in socks:
            for _ in range(burst):
                try:
                    sock.sendto(payload, (REC, RTP_PORT))
                    sent += 1
                except OSError:
                    pass
        if tick % 100 == 0:
            for sock in cloud:
                with suppress(OSError):
                    sock.sendto(b"phone-home", (CLOUD, CLOUD_PORT))
        tick += 1
        next_tick = start + tick * 0.010
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.perf_counter() - start
    u1, s1 = _cpu()
    os.write(w, json.dumps({"sent": sent, "seconds": elapsed, "user": u1 - u0, "sys": s1 - s0}).encode())


def blast_worker(w: int, socks: list[socket.socket], packets: int, size: int) -> None:
    payload = b"\x80" + bytes(size - 1)
    u0, s0 = _cpu()
    start = time.perf_counter()
    n = len(socks)
    for i in range(packets):
        with suppress(OSError):
            socks[i % n].sendto(payload, (REC, RTP_PORT))
    elapsed = time.perf_counter() - start
    u1, s1 = _cpu()
    os.write(
        w, json.dumps({"packets": packets, "seconds": elapsed, "user": u1 - u0, "sys": s1 - s0}).encode()
    )


def echo_worker(w: int, sock: socket.socket) -> None:
    os.write(w, b'{"echo": true}')
    os.close(w)
    while True:
        data, peer = sock.recvfrom(64)
        sock.sendto(data, peer)


def probe(sock: socket.socket, duration: float, every: float = 0.005) -> list[float]:
    """Round-trip times in microseconds of echo requests sent every ``every`` seconds."""
    sock.settimeout(0.5)
    rtts: list[float] = []
    seq = 0
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        seq += 1
        sent = time.perf_counter_ns()
        sock.sendto(struct.pack("!QQ", seq, sent), (REC, ECHO_PORT))
        try:
            while True:
                data, _ = sock.recvfrom(64)
                got, stamp = struct.unpack("!QQ", data[:16])
                if got == seq:
                    rtts.append((time.perf_counter_ns() - stamp) / 1000)
                    break
        except TimeoutError:
            pass
        time.sleep(max(0.0, every - (time.perf_counter_ns() - sent) / 1e9))
    return rtts


def plan(cameras: int) -> ContainmentPlan:
    elsewhere = [Device(f"44-19-b6-00-01-{i:02x}", "hikvision", (ipaddress.ip_address(f"10.91.{i}.9"),))
                 for i in range(50)]  # fmt: skip
    del cameras
    return ContainmentPlan.build(SitePolicy.from_yaml(POLICY), devices=elsewhere)


def set_condition(nft: Nft, condition: str, ruleset: str) -> None:
    for table in ("cwbench", "camwatch"):
        nft.load(f"table inet {table} {{}}\ndelete table inet {table}\n")
    if condition == "conntrack":
        nft.load(CONNTRACK_ONLY)
    elif condition == "camwatch":
        nft.load(ruleset)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    cams = camera_ips(args.cameras)
    rate_pps = args.rate_mbit * 1e6 / 8 / args.packet_size
    out: dict[str, Any] = {
        "cameras": args.cameras,
        "rate_mbit_per_camera": args.rate_mbit,
        "packet_size": args.packet_size,
        "load_pps": round(rate_pps * args.cameras, 1),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "blast_packets": args.blast_packets,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "load_before": os.getloadavg()},
        "runs": {c: [] for c in CONDITIONS},
    }
    with topology(args.cameras) as ns:
        nft = Nft(("ip", "netns", "exec", ns["gw"], "nft"))
        the_plan = plan(args.cameras)
        quarantined = [TimedAddress(ipaddress.ip_address(f"10.88.0.{200 + i}"), 86400) for i in range(3)]
        ruleset = render_ruleset(the_plan, quarantined)
        out["ruleset_plan"] = the_plan.digest
        sink = udp_socket(ns["rec"], (REC, RTP_PORT), rcvbuf=4096)  # never read: the kernel drops on arrival
        cloud_sink = udp_socket(ns["inet"], (CLOUD, CLOUD_PORT), rcvbuf=4096)
        echo = udp_socket(ns["rec"], (REC, ECHO_PORT))
        echo_pid, echo_fd = child(echo_worker, echo)
        with os.fdopen(echo_fd, "rb") as fh:
            fh.read()  # the echo server is up
        try:
            for round_no in range(args.rounds):
                order = CONDITIONS if round_no % 2 == 0 else tuple(reversed(CONDITIONS))
                for condition in order:
                    set_condition(nft, condition, ruleset)
                    socks = [udp_socket(ns["cam"], (a, 0)) for a in cams]
                    cloud = [udp_socket(ns["cam"], (a, 0)) for a in cams]
                    probe_sock = udp_socket(ns["cam"], (cams[0], 0))
                    soft0 = softirq_threads_cpu()
                    pid, fd = child(load_worker, socks, rate_pps, args.packet_size, args.duration, cloud)
                    rtts = probe(probe_sock, args.duration)
                    load = result(pid, fd)
                    soft1 = softirq_threads_cpu()
                    pid, fd = child(blast_worker, socks, args.blast_packets, args.packet_size)
                    blast = result(pid, fd)
                    soft2 = softirq_threads_cpu()
                    state = nft.table() if condition == "camwatch" else None
                    for s in (*socks, *cloud, probe_sock):
                        s.close()
                    run = {
                        "round": round_no,
                        "load_sent_pps": load["sent"] / load["seconds"],
                        "load_cpu_sys_per_s": load["sys"] / load["seconds"],
                        "load_cpu_user_per_s": load["user"] / load["seconds"],
                        "load_cpu_per_s": (load["sys"] + load["user"] + soft1 - soft0) / load["seconds"],
                        "load_softirq_threads_per_s": (soft1 - soft0) / load["seconds"],
                        "loadavg_1m": os.getloadavg()[0],
                        "rtt_p50_us": statistics.median(rtts) if rtts else None,
                        "rtt_p99_us": _p99(rtts),
                        "probes": len(rtts),
                        "blast_pps": blast["packets"] / blast["seconds"],
                        "blast_sys_us_per_packet": blast["sys"] / blast["packets"] * 1e6,
                        "blast_cpu_us_per_packet": (blast["sys"] + blast["user"] + soft2 - soft1)
                        / blast["packets"]
                        * 1e6,
                        "blast_softirq_threads_s": soft2 - soft1,
                        "dropped_policy_packets": state.counters["dropped_policy"][0] if state else 0,
                    }
                    out["runs"][condition].append(run)
                    print(f"round {round_no + 1} {condition}: {json.dumps(_rounded(run))}", file=sys.stderr)
        finally:
            os.kill(echo_pid, signal.SIGKILL)
            os.waitpid(echo_pid, 0)
            sink.close()
            cloud_sink.close()
    out["machine"]["load_after"] = os.getloadavg()
    out["summary"] = summarise(out["runs"])
    return out


def _p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _rounded(run: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def med(condition: str, key: str) -> float:
        values = [r[key] for r in runs[condition] if r[key] is not None]
        return statistics.median(values) if values else float("nan")

    def spread(condition: str, key: str) -> tuple[float, float]:
        values = [r[key] for r in runs[condition] if r[key] is not None]
        return (min(values), max(values)) if values else (float("nan"), float("nan"))

    keys = ("load_sent_pps", "load_cpu_sys_per_s", "load_cpu_per_s", "rtt_p50_us", "rtt_p99_us", "blast_pps",
            "blast_sys_us_per_packet", "blast_cpu_us_per_packet")  # fmt: skip
    table = {c: {k: med(c, k) for k in keys} for c in CONDITIONS}
    ranges = {c: {k: spread(c, k) for k in keys} for c in CONDITIONS}

    def ratio(key: str, base: str) -> float:
        below = table[base][key]
        return table["camwatch"][key] / below if below else float("nan")

    ratios = {
        base: {
            "rtt_p50": ratio("rtt_p50_us", base),
            "rtt_p99": ratio("rtt_p99_us", base),
            "load_cpu": ratio("load_cpu_per_s", base),
            "blast_cpu_per_packet": ratio("blast_cpu_us_per_packet", base),
            "blast_pps": ratio("blast_pps", base),
            "added_cpu_us_per_packet": table["camwatch"]["blast_cpu_us_per_packet"]
            - table[base]["blast_cpu_us_per_packet"],
        }
        for base in ("none", "conntrack")
    }
    return {"median": table, "range": ranges, "camwatch_vs": ratios}


def report(out: dict[str, Any]) -> str:
    s = out["summary"]
    lines = [
        f"Containment ruleset cost: {out['cameras']} cameras x {out['rate_mbit_per_camera']:g} Mbit/s "
        f"({out['load_pps']:,.0f} packets/s of {out['packet_size']} bytes) through the gateway, "
        f"{out['rounds']} round(s) of {out['duration_s']:g} s; saturation {out['blast_packets']:,} packets.",
        "",
        "| condition | load sent pkt/s | load CPU s/s | RTT p50 µs | RTT p99 µs | saturation pkt/s "
        "| CPU µs/packet |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CONDITIONS:
        m, r = s["median"][c], s["range"][c]
        lines.append(
            f"| {c} | {m['load_sent_pps']:,.0f} | {m['load_cpu_per_s']:.3f} "
            f"({r['load_cpu_per_s'][0]:.3f}-{r['load_cpu_per_s'][1]:.3f}) "
            f"| {m['rtt_p50_us']:.0f} ({r['rtt_p50_us'][0]:.0f}-{r['rtt_p50_us'][1]:.0f}) "
            f"| {m['rtt_p99_us']:.0f} ({r['rtt_p99_us'][0]:.0f}-{r['rtt_p99_us'][1]:.0f}) "
            f"| {m['blast_pps']:,.0f} "
            f"| {m['blast_cpu_us_per_packet']:.2f} ({r['blast_cpu_us_per_packet'][0]:.2f}-"
            f"{r['blast_cpu_us_per_packet'][1]:.2f}) |"
        )
    lines.append("")
    for base, ratio in s["camwatch_vs"].items():
        lines.append(
            f"camwatch vs {base}: RTT p50 x{ratio['rtt_p50']:.2f}, p99 x{ratio['rtt_p99']:.2f}; CPU of the "
            f"load x{ratio['load_cpu']:.2f}; CPU per packet at saturation "
            f"x{ratio['blast_cpu_per_packet']:.2f} ({ratio['added_cpu_us_per_packet']:+.2f} µs); "
            f"saturation rate x{ratio['blast_pps']:.2f}"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cameras", type=int, default=50)
    p.add_argument("--rate-mbit", type=float, default=2.0, help="video per camera (default 2 Mbit/s)")
    p.add_argument("--packet-size", type=int, default=1200)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per condition and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--blast-packets", type=int, default=300_000)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "contain.json")
    p.add_argument("--smoke", action="store_true", help="everything once, tiny: checks it runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.cameras, args.duration, args.rounds, args.blast_packets = 5, 1.0, 1, 2000
    if os.geteuid() != 0:
        print("benchmarks/contain.py needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    out = measure(args)
    out["smoke"] = bool(args.smoke)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(report(out), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
