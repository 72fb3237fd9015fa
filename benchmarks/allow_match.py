"""Allow matching with many overlapping rules: the policy's index against the old scan, in one run.

    .venv/bin/python benchmarks/allow_match.py                 # 100,000 rules, 2,000 lookups, 3 runs
    .venv/bin/python benchmarks/allow_match.py --rules 10000 --lookups 50000
    .venv/bin/python benchmarks/allow_match.py --smoke          # CI: 2,000 rules, checks everything runs

Issue 16 found that ``SitePolicy.egress_allowed`` scanned the allow rules one by one for every new flow:
with 100,000 overlapping rules a replay ran at 31 packets/s. The peer here is that scan, rebuilt as it was
(``_OldScan``: the union of every rule's networks as a prefilter, then each rule in policy order: its
networks, then its ports). camwatch's row is today's ``egress_allowed`` (one dict probe per distinct
prefix length).

The rules overlap on purpose: rule *i* covers ``203.0.<i mod 256>.0/24``, ``203.0.0.0/16`` or
``0.0.0.0/0`` (by turns) with its own TCP port, so every destination of the lookups passes the prefilter and
most are covered by hundreds of rules, of which only the one with the right port (if any) allows it. The
lookups ask for addresses of 203.0.0.0/16 and ports drawn from the rules' and from outside them (an
unexpected destination: the scan reads every rule).

Two measurements, each tool run ``--runs`` times alternately:

1. **lookups**: ``egress_allowed`` on ``--lookups`` (address, port) pairs; both must give the same answers
   (checked first, on every pair).
2. **replay**: the engine over a capture of ``--flows`` short TCP flows from one watched camera, each a new
   flow to one of those destinations (the engine judges every new flow: the issue's case), once with the
   policy as it is and once with its ``egress_allowed`` replaced by the old scan. Both must raise the same
   alerts.

Prints a Markdown table; ``--json FILE`` (default ``benchmarks/out/allow_match.json``) keeps every run, the
parameters, the machine and its load.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.synth import TCP_ACK, TCP_SYN, tcp4_frame
from monitor.engine import Engine, EngineConfig
from monitor.pcapfile import CaptureParser, PacketBatch
from monitor.pcapwrite import pcap_bytes
from monitor.policy import AllowRule, IPLike, SitePolicy, _ip_key, _NetSet
from monitor.vendors.oui import VendorTable

NS = 1_000_000_000
T0 = 1_767_225_600 * NS
CAMERA_MAC, GATEWAY_MAC, CAMERA_IP = "44:19:b6:00:00:01", "02:00:00:00:00:01", "10.20.0.11"


def make_rules(count: int) -> tuple[AllowRule, ...]:
    """``count`` overlapping rules, each with its own TCP port (1024 + i)."""
    rules = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            net = ipaddress.ip_network(f"203.0.{i % 256}.0/24")
        elif kind == 1:
            net = ipaddress.ip_network("203.0.0.0/16")
        else:
            net = ipaddress.ip_network("0.0.0.0/0")
        rules.append(AllowRule(f"rule {i}", (net,), frozenset({(1024 + i % 64000, "tcp")})))
    return tuple(rules)


class _OldScan:
    """``egress_allowed`` as it was before the index: a prefilter, then every rule in order."""

    def __init__(self, policy: SitePolicy) -> None:
        self.policy = policy
        self.rules = [(rule.name, _NetSet(rule.networks), rule.ports) for rule in policy.allow]
        self.any = _NetSet(n for rule in policy.allow for n in rule.networks)

    def egress_allowed(
        self, dst_ip: IPLike, dst_port: int, transport: str, version: int = 4, names: Iterable[str] = ()
    ) -> tuple[bool, str | None]:
        ip, ver = _ip_key(dst_ip, version)
        label = self.policy._fixed.get(ip, ver)
        if label is not None:
            return True, label
        if self.any.contains(ip, ver):
            proto = transport.lower()
            for name, nets, ports in self.rules:
                if nets.contains(ip, ver) and (ports is None or (dst_port, proto) in ports):
                    return True, name
        return False, None


class _ScanningPolicy(SitePolicy):
    """The same policy whose ``egress_allowed`` is the old scan (the engine's peer)."""

    def egress_allowed(
        self, dst_ip: IPLike, dst_port: int, transport: str, version: int = 4, names: Iterable[str] = ()
    ) -> tuple[bool, str | None]:
        return _OldScan.egress_allowed(self._scan, dst_ip, dst_port, transport, version, names)  # type: ignore[attr-defined]


def scanning(policy: SitePolicy) -> SitePolicy:
    peer = _ScanningPolicy(
        site=policy.site,
        monitored_networks=policy.monitored_networks,
        watched_vendors=policy.watched_vendors,
        allow=policy.allow,
    )
    object.__setattr__(peer, "_scan", _OldScan(peer))  # type: ignore[misc]
    return peer


def lookups(count: int, rules: int, seed: int = 7) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        addr = f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        # Half inside the rules' ports (allowed by some rule), half outside (unexpected: a full scan).
        port = 1024 + rng.randrange(min(rules, 64000)) if rng.random() < 0.5 else 80
        out.append((addr, port))
    return out


def capture(flows: int, rules: int) -> list[PacketBatch]:
    """``flows`` new TCP flows (a SYN and its SYN-ACK) from one camera, one every millisecond."""
    frames: list[tuple[int, bytes]] = []
    for i, (dst, port) in enumerate(lookups(flows, rules, seed=11)):
        t = T0 + i * 1_000_000
        sport = 20000 + i % 40000
        frames.append((t, tcp4_frame(CAMERA_MAC, GATEWAY_MAC, CAMERA_IP, dst, sport, port, flags=TCP_SYN)))
        answer = tcp4_frame(GATEWAY_MAC, CAMERA_MAC, dst, CAMERA_IP, port, sport, flags=TCP_SYN | TCP_ACK)
        frames.append((t + 100_000, answer))
    parser = CaptureParser("allow-match", 65536)
    return [*parser.feed(pcap_bytes(frames)), *parser.flush()]


def time_lookups(fn: Callable[..., tuple[bool, str | None]], pairs: Sequence[tuple[str, int]]) -> float:
    started = time.perf_counter()
    for addr, port in pairs:
        fn(addr, port, "tcp")
    return time.perf_counter() - started


def time_replay(
    policy: SitePolicy, batches: list[PacketBatch], vendors: VendorTable
) -> tuple[float, list[str]]:
    engine = Engine(policy, vendors, EngineConfig(observer="bench/allow"))
    started = time.perf_counter()
    alerts: list[str] = []
    for batch in batches:
        alerts += [a.event_id for a in engine.feed(batch).alerts]
    alerts += [a.event_id for a in engine.finish().alerts]
    return time.perf_counter() - started, sorted(alerts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="allow matching: the index against the old scan")
    p.add_argument("--rules", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=2_000)
    p.add_argument("--flows", type=int, default=500, help="new flows in the replay capture (default 500)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="2,000 rules, 2,000 lookups, 200 flows, 1 run")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "allow_match.json")
    args = p.parse_args(argv)
    if args.smoke:
        args.rules, args.lookups, args.flows, args.runs = 2_000, 2_000, 200, 1
    load_before = os.getloadavg()
    policy = SitePolicy(
        site="bench", monitored_networks=(ipaddress.ip_network("10.20.0.0/24"),), allow=make_rules(args.rules)
    )
    peer = _OldScan(policy)
    pairs = lookups(args.lookups, args.rules)
    # Correctness first: the same answer for every lookup.
    differ = [
        (a, pt) for a, pt in pairs if policy.egress_allowed(a, pt, "tcp") != peer.egress_allowed(a, pt, "tcp")
    ]
    if differ:
        print(f"answers differ for {len(differ)} lookups, e.g. {differ[:3]}", file=sys.stderr)
        return 1
    allowed = sum(policy.egress_allowed(a, pt, "tcp")[0] for a, pt in pairs)
    results: dict[str, list[float]] = {"index": [], "scan": []}
    for run in range(args.runs):
        order = [("index", policy.egress_allowed), ("scan", peer.egress_allowed)]
        for name, fn in order if run % 2 == 0 else reversed(order):
            results[name].append(time_lookups(fn, pairs))
    vendors = VendorTable.load()
    batches = capture(args.flows, args.rules)
    packets = sum(len(b) for b in batches)
    replay: dict[str, list[float]] = {"index": [], "scan": []}
    alerts: dict[str, list[str]] = {}
    engines = [("index", policy), ("scan", scanning(policy))]
    for run in range(args.runs):
        for name, pol in engines if run % 2 == 0 else reversed(engines):
            seconds, ids = time_replay(pol, batches, vendors)
            replay[name].append(seconds)
            alerts[name] = ids
    if alerts["index"] != alerts["scan"]:
        print("the two engines raised different alerts", file=sys.stderr)
        return 1

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    rows = []
    for name, label in (("index", "camwatch egress_allowed (index)"), ("scan", "old scan in policy order")):
        lk, rp = median(results[name]), median(replay[name])
        rows.append(
            {
                "tool": label,
                "lookups_per_s": args.lookups / lk,
                "lookup_us": lk / args.lookups * 1e6,
                "replay_packets_per_s": packets / rp,
                "replay_s": rp,
            }
        )
    speedup = rows[0]["lookups_per_s"] / rows[1]["lookups_per_s"]
    n_alerts = len(alerts["index"])
    print(
        f"{args.rules:,} overlapping rules; {args.lookups:,} lookups ({allowed:,} allowed); "
        f"replay of {args.flows:,} new flows ({packets:,} packets), {n_alerts:,} alerts\n"
    )
    print("| matcher | lookups/s | µs per lookup | replay packets/s | replay s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['tool']} | {row['lookups_per_s']:,.0f} | {row['lookup_us']:,.2f} | "
            f"{row['replay_packets_per_s']:,.0f} | {row['replay_s']:.3f} |"
        )
    print(
        f"\nindex vs scan: {speedup:,.0f}x lookups, "
        f"{rows[0]['replay_packets_per_s'] / rows[1]['replay_packets_per_s']:,.0f}x replay"
    )
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "rules": args.rules,
        "lookups": args.lookups,
        "flows": args.flows,
        "packets": packets,
        "runs": args.runs,
        "allowed": allowed,
        "alerts": len(alerts["index"]),
        "results": rows,
        "lookup_runs": results,
        "replay_runs": replay,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
