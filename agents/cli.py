"""The `camwatch` command line (docs/design.md §4.1)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from agents.capture.pcap_source import PcapFileSource
from agents.progress import Progress
from agents.sinks.lines import JsonLinesSink
from monitor import __version__
from monitor.engine import Engine, EngineConfig, Events
from monitor.flows import FlowConfig
from monitor.pcapfile import CaptureError
from monitor.policy import SitePolicy
from monitor.records import flow_record
from monitor.validation import ValidationError, top_level_keys
from monitor.vendors.oui import VendorTable

log = logging.getLogger("camwatch")

EXIT_OK = 0
EXIT_INPUT = 1  # some input could not be read (everything readable was processed)
EXIT_USAGE = 2  # bad arguments or configuration: nothing was processed
DEFAULT_CONFIG = "/etc/camwatch/agent.yaml"
# Top-level keys that make a YAML file an agent configuration rather than a site policy.
AGENT_KEYS = frozenset(
    {
        "capture",
        "metrics",
        "mqtt",
        "state_dir",
        "run_as_user",
        "limits",
        "timeouts",
        "policy",
        "policy_file",
        "gateway",
    }
)


class CliError(Exception):
    """A one-line reason for a non-zero exit."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def load_policy(path: str | None) -> SitePolicy:
    if path is None:
        return SitePolicy.default()
    try:
        data = Path(path).read_bytes()  # decoded by the policy: text that is not UTF-8 is a PolicyError
    except OSError as exc:
        raise CliError(f"{path}: cannot read policy: {exc.strerror or exc}") from exc
    policy = SitePolicy.from_yaml(data, source=path)
    for warning in policy.warnings:  # as load_config logs an agent configuration's warnings
        log.warning("%s: %s", path, warning)
    return policy


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camwatch", description="Edge monitor for CCTV camera traffic.")
    p.add_argument("--version", action="version", version=f"camwatch {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("replay", help="run the engine over capture files")
    r.add_argument("pcaps", nargs="+", metavar="PCAP", help="pcap or pcapng files, processed in order")
    r.add_argument("--policy", metavar="FILE", help="site policy YAML (default: the built-in default policy)")
    r.add_argument("--alerts", metavar="FILE", default="-", help="alerts as JSON lines (default: stdout)")
    r.add_argument("--flows", metavar="FILE", help="write flow records as JSON lines")
    r.add_argument("--inventory", metavar="FILE", help="write the device inventory as a JSON array")
    r.add_argument("--gateway", default="replay", help="gateway name in observer.name (default: replay)")
    r.add_argument("--max-flows", type=int, default=200_000, help="bound on live flows (default: 200000)")
    r.add_argument("--batch-size", type=int, default=65536, help=argparse.SUPPRESS)

    c = sub.add_parser("check-config", help="validate an agent configuration or a site policy file")
    c.add_argument("file", metavar="FILE")

    # `camwatch learn` (docs/learning.md): its arguments and its work live in agents/learn/command.py.
    from agents.learn.args import add_parser as add_learn_parser

    add_learn_parser(sub)

    a = sub.add_parser("run", help="run the gateway agent (live capture, metrics, MQTT alerts)")
    a.add_argument(
        "--config",
        metavar="FILE",
        default=DEFAULT_CONFIG,
        help=f"agent configuration (default: {DEFAULT_CONFIG})",
    )
    _add_lab_parser(sub)
    # `report` and `inventory export` (agents/report/commands.py).
    from agents.report.commands import add_parsers as add_report_parsers

    add_report_parsers(sub)
    _add_contain_parser(sub)
    return p


def _add_contain_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # `camwatch contain` (agents/contain/cli.py): its module imports only argparse at start-up.
    from agents.contain.cli import add_parser

    add_parser(sub)


def _add_lab_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser(
        "lab", help="the camera lab: simulated cameras in network namespaces (root; camwatch[lab])"
    )
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--dir", default="/run/camwatch-lab", help="lab directory (default: /run/camwatch-lab)"
        )
        parser.add_argument("--prefix", default="cwlab", help="namespace name prefix (default: cwlab)")
        return parser

    up = common(lab_sub.add_parser("up", help="build the lab and start its cameras and services"))
    up.add_argument(
        "--trigger-every", type=float, metavar="SECONDS", help="repeat every persona's misbehaviour (demo)"
    )
    up.add_argument("--agent", action="store_true", help="also run the agent in the gateway namespace")
    up.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT broker for the agent's alerts")
    up.add_argument(
        "--no-probe", action="store_true", help="leave the stream_probe section out of agent.yaml"
    )
    up.add_argument(
        "--probe-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often the agent's stream probe opens each camera (default: 30)",
    )
    up.add_argument(
        "--contain",
        choices=("dry-run", "enforce"),
        help="run the agent with containment in this mode (implies --agent; docs/containment.md)",
    )
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    common(lab_sub.add_parser("down", help="stop every lab process and delete the namespaces"))
    status = common(lab_sub.add_parser("status", help="what runs; exit 0 ok, 1 broken, 3 down"))
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    trigger = common(lab_sub.add_parser("trigger", help="make cameras (and the office PC) misbehave once"))
    trigger.add_argument("names", nargs="*", metavar="NAME", help="cam1, cam2, cam3, office (default: all)")
    pattern = common(lab_sub.add_parser("pattern", help="switch a camera's video pattern"))
    pattern.add_argument("camera", metavar="CAMERA")
    pattern.add_argument("pattern", choices=("normal", "frozen", "black", "covered"))


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command in ("replay", "run"):
        _tune_gc()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="camwatch: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "replay":
            return replay(args)
        if args.command == "check-config":
            return check_config(args.file, sys.stdout)
        if args.command == "run":
            return run_agent(args.config)
        if args.command == "lab":
            return lab_command(args, sys.stdout)
        if args.command == "report":
            from agents.report.commands import report

            return report(args)
        if args.command == "inventory":
            from agents.report.commands import inventory_export

            return inventory_export(args)
        if args.command == "learn":
            return learn_command(args, sys.stdout)
        if args.command == "contain":
            from agents.contain.cli import contain_command

            return contain_command(args, sys.stdout)
    except ValidationError as exc:  # an agent configuration or a site policy
        print(f"camwatch: invalid {exc.kind}:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"camwatch: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


def _tune_gc() -> None:
    """The engine allocates many short-lived, acyclic objects (a flow and its analyzers' state per
    conversation), freed by reference counting; the cycle collector's default rhythm (every 700
    allocations) then costs a tenth of a many-short-flows replay. What is loaded at start-up is frozen
    out of its scans, and it runs less often; cycles are still collected."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _is_agent_config(path: str) -> bool:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False  # let the policy loader report it precisely
    # Keys are found even in a file that does not parse, so its syntax error is reported as the
    # agent configuration's, not as an invalid policy.
    return bool(AGENT_KEYS & top_level_keys(data))


def check_config(path: str, out: TextIO) -> int:
    from agents.config import load_config  # not for `replay`: its start-up stays short

    if _is_agent_config(path):
        config = load_config(path)  # logs its warnings
        cap = config.capture
        source = f"pcap {cap.pcap}" if cap.pcap is not None else f"interfaces {', '.join(cap.interfaces)}"
        mqtt = (
            f"{config.mqtt.host}:{config.mqtt.port}"
            if config.mqtt is not None
            else "none (alerts go to the log and alerts_file)"
        )
        out.write(
            f"{path}: OK: agent {config.observer}; {source}; "
            f"metrics on {config.metrics.listen}:{config.metrics.port}; mqtt {mqtt}; "
            f"state in {config.state_dir}\n"
        )
        policy = config.site_policy
    else:
        policy = load_policy(path)
    nets = ", ".join(str(n) for n in policy.monitored_networks) or "none"
    out.write(
        f"{path}: OK: site {policy.site}; monitored networks: {nets}; "
        f"watched vendors: {', '.join(sorted(policy.watched_vendors)) or 'none'}; "
        f"{len(policy.allow)} allow rule(s)\n"
    )
    return EXIT_OK


def run_agent(config_path: str) -> int:
    import asyncio

    from agents.config import load_config
    from agents.runtime import Agent

    if not Path(config_path).is_file():
        raise CliError(
            f"{config_path}: no such configuration file (see docs/config.md and examples/agent.yaml)"
        )
    config = load_config(config_path)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    asyncio.run(Agent(config).run())
    return EXIT_OK


def learn_command(args: argparse.Namespace, out: TextIO) -> int:
    """`camwatch learn`: agents/learn/command.py does the work; its errors are one line here."""
    from agents.learn.command import LearnError, run

    try:
        return run(args, out)
    except LearnError as exc:
        raise CliError(str(exc), exc.code) from exc


EXIT_LAB_DOWN = 3  # `lab status`: no lab (as `systemctl status` says a unit is not running)


def _mqtt_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CliError(f"--mqtt {text!r}: write HOST:PORT, e.g. 10.77.0.1:1883")
    return host, int(port)


def lab_command(args: argparse.Namespace, out: TextIO) -> int:
    """`camwatch lab up|down|status|trigger|pattern`: the camera lab (`pip install 'camwatch[lab]'`)."""
    # The one import of the lab from agents/ (tests/test_layout.py holds it to that): a gateway runs without
    # the lab's dependencies, and may run without its package.
    try:
        from lab.lab import Lab, LabError, require_packages
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "lab":
            raise  # a broken install or a bug, not a missing lab (its extra is checked below)
        raise CliError("the camera lab is not installed: pip install 'camwatch[lab]'") from None

    # `down` tears a lab down whatever is installed (iproute2 suffices); the rest need the lab extra.
    if args.lab_command != "down":
        try:
            require_packages()
        except LabError as exc:
            raise CliError(str(exc)) from None
    try:
        lab = Lab(args.prefix, args.dir)
        if args.lab_command == "up":
            mqtt = _mqtt_address(args.mqtt) if args.mqtt else None
            status = lab.up(
                trigger_every=args.trigger_every,
                agent=args.agent,
                mqtt=mqtt,
                probe=not args.no_probe,
                probe_interval=args.probe_interval,
                contain=args.contain,
            )
            out.write((json.dumps(status.to_json(), indent=1) if args.json else status.text()) + "\n")
            return EXIT_OK
        if args.lab_command == "down":
            done = lab.down()
            out.write("\n".join(done) + "\n" if done else f"lab {args.prefix}: nothing was running\n")
            return EXIT_OK
        if args.lab_command == "status":
            status = lab.status()
            out.write((json.dumps(status.to_json(), indent=1) if args.json else status.text()) + "\n")
            return EXIT_OK if status.ok else EXIT_INPUT if status.up else EXIT_LAB_DOWN
        if args.lab_command == "trigger":
            counts = lab.trigger(args.names)
            out.write("".join(f"triggered {name} (#{n})\n" for name, n in counts.items()))
            out.write(f"events: {lab.paths.events}\n")
            return EXIT_OK
        if args.lab_command == "pattern":
            lab.set_pattern(args.camera, args.pattern)
            out.write(f"{args.camera}: pattern {args.pattern}\n")
            return EXIT_OK
    except LabError as exc:
        raise CliError(str(exc), EXIT_INPUT) from None
    return EXIT_USAGE


def replay(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    for path in args.pcaps:
        if not Path(path).is_file():
            raise CliError(f"{path}: no such capture file", EXIT_INPUT)
    config = EngineConfig(
        observer=f"{policy.site}/{args.gateway}", flows=FlowConfig(max_flows=args.max_flows)
    )
    engine = Engine(policy, VendorTable.load(), config)
    progress = Progress()
    started = time.monotonic()
    failures: list[str] = []
    with (
        JsonLinesSink(args.alerts) as alerts,
        JsonLinesSink(args.flows) if args.flows else _NullSink() as flows,
    ):

        def emit(ev: Events) -> None:
            for alert in ev.alerts:
                alerts.write(alert.to_record())
            if args.flows:
                for flow in ev.flows:
                    flows.write(flow_record(flow))

        for path in args.pcaps:
            source = PcapFileSource(path, args.batch_size)

            def show(done: int, total: int, name: str = path) -> None:
                progress.update(name, done, total, engine.stats.packets)

            try:
                for batch in source.batches(show):
                    emit(engine.feed(batch))
            except CaptureError as exc:
                failures.append(str(exc))
            except OSError as exc:
                failures.append(f"{path}: cannot read: {exc.strerror or exc}")
        emit(engine.finish())
    progress.clear()
    if args.inventory:
        Path(args.inventory).write_text(
            json.dumps(engine.inventory.records(), indent=1) + "\n", encoding="utf-8"
        )
    _summary(engine, time.monotonic() - started, sys.stderr)
    for failure in failures:
        print(f"camwatch: error: {failure}", file=sys.stderr)
    return EXIT_INPUT if failures else EXIT_OK


class _NullSink:
    def __enter__(self) -> _NullSink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, record: object) -> None:
        return None


def _summary(engine: Engine, seconds: float, out: TextIO) -> None:
    st = engine.stats
    vendors = Counter(d.manufacturer or "unknown" for d in engine.inventory)
    by_vendor = ", ".join(f"{name} {n}" for name, n in vendors.most_common()) or "none"
    by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(st.alerts.items())) or "none"
    by_severity = _by_severity(st.alerts)
    fs = engine.flows.stats
    rate = st.packets / seconds if seconds > 0 else 0.0
    out.write(
        f"camwatch: {st.packets:,} packets ({st.bytes:,} bytes, {st.non_ip:,} non-IP, "
        f"{st.later_fragments:,} later fragments, {st.truncated:,} truncated) in {seconds:.2f} s "
        f"({rate:,.0f} packets/s)\n"
        f"camwatch: {fs.created:,} flows ({fs.evicted:,} evicted at the bound)\n"
        f"camwatch: {len(engine.inventory):,} devices: {by_vendor}\n"
        f"camwatch: {sum(st.alerts.values()):,} alerts{by_severity}: {by_rule}"
        f" ({engine.gate.suppressed:,} repeats suppressed)\n"
    )


def _by_severity(alerts: dict[str, int]) -> str:
    """`` (2 high, 14 warning, 8 info)``: the alerts by severity, highest first (empty without alerts)."""
    from monitor.alerts import severity_name
    from monitor.registry import RULES

    counts: Counter[int] = Counter()
    for rule, n in alerts.items():
        counts[RULES[rule].severity if rule in RULES else 0] += n
    parts = [f"{n:,} {severity_name(sev)}" for sev, n in sorted(counts.items(), reverse=True) if n]
    return f" ({', '.join(parts)})" if parts else ""


if __name__ == "__main__":
    sys.exit(main())
