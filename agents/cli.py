"""The `camwatch` command line (docs/design.md §4.1)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn, TextIO, cast

from monitor import __version__
from monitor.policy import SitePolicy
from monitor.validation import TOPIC_UNSAFE_RE, ValidationError, short, top_level_keys

if TYPE_CHECKING:
    from monitor.engine import Engine

log = logging.getLogger("camwatch")

EXIT_OK = 0
EXIT_INPUT = 1  # some input could not be read (everything readable was processed)
EXIT_USAGE = 2  # bad arguments or configuration: nothing was processed
EXIT_INTERNAL = 70  # a bug in camwatch (EX_SOFTWARE): one line, the traceback with -v
EXIT_PIPE = 141  # stdout's reader went away (128 + SIGPIPE, as a shell reports it)
MAX_FLOWS_LIMIT = 50_000_000  # the agent configuration's bound on limits.max_flows
MAX_BATCH = 1 << 20
DEFAULT_CONFIG = "/etc/camwatch/agent.yaml"


class CliError(Exception):
    """A one-line reason for a non-zero exit."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------------
# Files named on the command line: every problem is one line saying what, where and the fix.

_INPUT_FIX = {
    "capture": "name the capture files in it, e.g. {path}/*.pcap",
    "site policy": "name the policy file in it, e.g. {path}/site-policy.yaml",
    "configuration": "name the configuration file in it, e.g. {path}/agent.yaml",
    "configuration or policy": "name a file in it, e.g. {path}/agent.yaml",
}


def input_problem(path: str, what: str, exc: OSError) -> str:
    """One line for a file that cannot be read: which file, what is wrong, what to do."""
    code = exc.errno
    if code == errno.ENOENT:
        return f"{path}: no such {what} file; check the path"
    if code == errno.EISDIR:
        return f"{path}: is a directory, not a {what} file; " + _INPUT_FIX[what].format(path=path.rstrip("/"))
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"{path}: permission denied reading the {what} file; run camwatch as a user who may read it, "
            "or change its permissions"
        )
    if code == errno.ENOTDIR:
        return f"{path}: a part of the path is a file, not a directory; check the path"
    if code == errno.ELOOP:
        return f"{path}: too many symbolic links; check the path"
    return f"{path}: cannot read the {what} file: {exc.strerror or exc}"


def check_input(path: str, what: str) -> None:
    """CliError (one line) unless `path` can be opened for reading and is not a directory."""
    try:
        # O_NONBLOCK: a named pipe opens at once (a capture may come through one).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CliError(
            input_problem(path, what, exc), EXIT_INPUT if what == "capture" else EXIT_USAGE
        ) from None
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    if is_dir:
        raise CliError(
            input_problem(path, what, IsADirectoryError(errno.EISDIR, "Is a directory")),
            EXIT_INPUT if what == "capture" else EXIT_USAGE,
        )


def read_input(path: str, what: str) -> bytes:
    """The bytes of a file named on the command line; CliError (one line) if it cannot be read."""
    check_input(path, what)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(input_problem(path, what, exc)) from None


def output_problem(option: str, path: str, exc: OSError) -> str:
    """One line for an output file that cannot be written: the option, the file, what to do."""
    code = exc.errno
    where = f"{option} {path}"
    if code == errno.ENOENT:
        parent = os.path.dirname(path) or "."
        return f"{where}: the directory {parent} does not exist; create it first or write somewhere else"
    if code == errno.EISDIR:
        return f"{where}: is a directory; name a file in it, e.g. {path.rstrip('/')}/{_OUTPUT_NAMES[option]}"
    if code in (errno.EACCES, errno.EPERM):
        return f"{where}: permission denied; write somewhere you may, or change the permissions"
    if code == errno.ENOTDIR:
        return f"{where}: a part of the path is a file, not a directory; check the path"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}: no space left on the device; free some space or write somewhere else"
    if code == errno.EROFS:
        return f"{where}: the file system is read-only; write somewhere else"
    return f"{where}: cannot write: {exc.strerror or exc}"


_OUTPUT_NAMES = {"--alerts": "alerts.jsonl", "--flows": "flows.jsonl", "--inventory": "inventory.json"}


@contextlib.contextmanager
def writing(option: str, path: str, code: int) -> Iterator[None]:
    """Turn an OSError of output `option` into a one-line CliError (a closed stdout pipe excepted)."""
    try:
        yield
    except BrokenPipeError:
        raise  # the reader of stdout went away: main() ends quietly
    except OSError as exc:
        raise CliError(output_problem(option, path, exc), code) from None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


# --------------------------------------------------------------------------------------------------
# Arguments


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where to read the usage (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _count(name: str, low: int, high: int, example: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{short(text)!r} is not a whole number; write e.g. {name} {example}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{value} is out of range; write a number from {low:,} to {high:,}, e.g. {name} {example}"
            )
        return value

    return parse


def _seconds(name: str, example: float) -> Callable[[str], float]:
    """An argparse type: a duration in seconds, finite and above zero."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 < value < 1e9:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(
                f"{short(text)!r} is not a number of seconds above 0; write e.g. {name} {example:g}"
            )
        return value

    return parse


def _mqtt_address(text: str) -> tuple[str, int]:
    """An argparse type: HOST:PORT."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{short(text)!r}: write HOST:PORT, e.g. --mqtt 10.77.0.1:1883")
    return host, int(port)


def _gateway_name(text: str) -> str:
    """An argparse type: a gateway name as the agent configuration accepts it (one MQTT topic level)."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; write a name, e.g. --gateway gw-1")
    if TOPIC_UNSAFE_RE.search(text):
        suggestion = TOPIC_UNSAFE_RE.sub("-", text.strip()).strip("-") or "gw-1"
        raise argparse.ArgumentTypeError(
            f"'{short(text)}' contains '/', '+', '#', whitespace or control characters; use letters, "
            f"digits, '-', '_' or '.', e.g. --gateway {short(suggestion)}"
        )
    return text


def load_policy(path: str | None) -> SitePolicy:
    if path is None:
        return SitePolicy.default()
    data = read_input(path, "site policy")  # decoded by the policy: text that is not UTF-8 is a PolicyError
    policy = SitePolicy.from_yaml(data, source=path)
    for warning in policy.warnings:  # as load_config logs an agent configuration's warnings
        log.warning("%s: %s", path, warning)
    return policy


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="camwatch", description="Edge monitor for CCTV camera traffic.")
    p.add_argument("--version", action="version", version=f"camwatch {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    # -v is also read after the command (`camwatch replay x.pcap -v`); SUPPRESS keeps the one given first.
    verbose = _Parser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages to stderr"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "replay",
        parents=[verbose],
        help="run the engine over capture files",
        description="Run the engine over pcap and pcapng captures: alerts as JSON lines (stdout unless "
        "--alerts), a summary on stderr. Exit 0 done, 1 a capture could not be read (everything before the "
        "fault was processed) or an output could not be written, 2 bad arguments or policy.",
    )
    r.add_argument("pcaps", nargs="+", metavar="PCAP", help="pcap or pcapng files, processed in order")
    r.add_argument("--policy", metavar="FILE", help="site policy YAML (default: the built-in default policy)")
    r.add_argument("--alerts", metavar="FILE", default="-", help="alerts as JSON lines (default: stdout)")
    r.add_argument("--flows", metavar="FILE", help="write flow records as JSON lines")
    r.add_argument("--inventory", metavar="FILE", help="write the device inventory as a JSON array")
    r.add_argument(
        "--gateway",
        type=_gateway_name,
        default="replay",
        metavar="NAME",
        help="gateway name in the alerts' observer.name, <site>/<NAME> (default: replay)",
    )
    r.add_argument(
        "--max-flows",
        type=_count("--max-flows", 1, MAX_FLOWS_LIMIT, 200_000),
        default=200_000,
        metavar="N",
        help="bound on live flows; beyond it the least recently active is evicted (default: 200000)",
    )
    r.add_argument(
        "--batch-size",
        type=_count("--batch-size", 1, MAX_BATCH, 65536),
        default=65536,
        help=argparse.SUPPRESS,
    )

    c = sub.add_parser(
        "check-config",
        parents=[verbose],
        help="validate an agent configuration or a site policy file",
        description="Validate FILE, an agent configuration (the file `camwatch run --config` reads, with a "
        "capture section) or a site policy (the file `replay --policy` and policy_file read): every problem "
        "is named with its line and fix. Exit 0 valid, 2 invalid.",
    )
    c.add_argument("file", metavar="FILE", help="an agent configuration or a site policy (YAML)")

    # The commands whose parsers live with them take the plain type; the parsers they add are _Parser
    # instances all the same (one-line errors).
    plain_sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub)
    # `camwatch learn` (docs/learning.md): its arguments and its work live in agents/learn/command.py.
    from agents.learn.args import add_parser as add_learn_parser

    add_learn_parser(plain_sub)

    a = sub.add_parser(
        "run", parents=[verbose], help="run the gateway agent (live capture, metrics, MQTT alerts)"
    )
    a.add_argument(
        "--config",
        metavar="FILE",
        default=DEFAULT_CONFIG,
        help=f"agent configuration (default: {DEFAULT_CONFIG})",
    )
    _add_lab_parser(sub, verbose)
    # `report` and `inventory export` (agents/report/commands.py).
    from agents.report.commands import add_parsers as add_report_parsers

    add_report_parsers(plain_sub)
    _add_contain_parser(plain_sub)
    _verbose_everywhere(p)
    return p


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser's commands, (name, parser), one level down."""
    for action in parser._actions:  # argparse has no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    """`-v` after any command, however deep (`camwatch report ... -v`, `camwatch contain status -v`), as
    the README says; a parser that has it already keeps its own."""
    for _, sub in _subparsers(parser):
        if "-v" not in sub._option_string_actions:
            sub.add_argument(
                "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
            )
        _verbose_everywhere(sub)


def _misplaced_option(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """The error for a command's option written before the command (`camwatch --policy p replay x`),
    which argparse would report as an invalid command; None when there is no such option."""
    commands = dict(_subparsers(parser))
    for i, arg in enumerate(argv):
        if arg in commands:
            return None
        if not arg.startswith("-") or arg == "-" or arg in parser._option_string_actions:
            continue
        option = arg.split("=", 1)[0]
        later = [a for a in argv[i + 1 :] if a in commands]
        if later and option in commands[later[0]]._option_string_actions:
            return (
                f"{option} is an option of '{later[0]}', not of camwatch itself; put it after the command: "
                f"camwatch {later[0]} ... {option} ..."
            )
        return None
    return None


def _add_contain_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # `camwatch contain` (agents/contain/cli.py): its module imports only argparse at start-up.
    from agents.contain.cli import add_parser

    add_parser(sub)


def _add_lab_parser(sub: argparse._SubParsersAction[_Parser], verbose: _Parser) -> None:
    lab = sub.add_parser(
        "lab",
        parents=[verbose],
        help="the camera lab: simulated cameras in network namespaces (root; camwatch[lab])",
    )
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--dir", default="/run/camwatch-lab", help="lab directory (default: /run/camwatch-lab)"
        )
        parser.add_argument("--prefix", default="cwlab", help="namespace name prefix (default: cwlab)")
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages"
        )
        return parser

    up = common(lab_sub.add_parser("up", help="build the lab and start its cameras and services"))
    up.add_argument(
        "--trigger-every",
        type=_seconds("--trigger-every", 30),
        metavar="SECONDS",
        help="repeat every persona's misbehaviour (demo)",
    )
    up.add_argument("--agent", action="store_true", help="also run the agent in the gateway namespace")
    up.add_argument(
        "--mqtt", type=_mqtt_address, metavar="HOST:PORT", help="MQTT broker for the agent's alerts"
    )
    up.add_argument(
        "--no-probe", action="store_true", help="leave the stream_probe section out of agent.yaml"
    )
    up.add_argument(
        "--probe-interval",
        type=_seconds("--probe-interval", 30),
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
    trigger.add_argument(
        "names", nargs="*", metavar="NAME", help="cam1, cam2, cam3, cam4, office, attacker (default: all)"
    )
    pattern = common(lab_sub.add_parser("pattern", help="switch a camera's video pattern"))
    pattern.add_argument("camera", metavar="CAMERA")
    pattern.add_argument("pattern", choices=("normal", "frozen", "black", "covered"))


def main(argv: Sequence[str] | None = None) -> int:
    """The `camwatch` command. Whatever the input, the user reads one line per problem, never a traceback
    (a bug in camwatch says so in one line; `-v` shows its traceback)."""
    parser = _build_parser()
    misplaced = _misplaced_option(parser, sys.argv[1:] if argv is None else argv)
    if misplaced is not None:
        print(f"camwatch: error: {misplaced}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
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
        # One problem is one line; several are listed under a heading, one line each.
        sep = " " if len(exc.problems) == 1 else "\n"
        print(f"camwatch: invalid {exc.kind}:{sep}{exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"camwatch: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `camwatch replay x.pcap | head`: the reader had enough. Later writes (and the interpreter's
        # final flush) would raise again: stdout goes to /dev/null.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except Exception as exc:  # a bug: the user still gets one line, and -v the traceback
        log.debug("internal error", exc_info=True)
        text = " ".join(str(exc).split())[:300]
        print(
            f"camwatch: internal error: {type(exc).__name__}: {text} (a bug in camwatch; run the same "
            "command with -v for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return EXIT_USAGE


def _tune_gc() -> None:
    """The engine allocates many short-lived, acyclic objects (a flow and its analyzers' state per
    conversation), freed by reference counting; the cycle collector's default rhythm (every 700
    allocations) then costs a tenth of a many-short-flows replay. What is loaded at start-up is frozen
    out of its scans, and it runs less often; cycles are still collected. The rhythm is measured
    (benchmarks/README.md): on the 500,000-packet short-flows capture the collector took 1.2 s of 14 s
    every 50,000 allocations and 0.8 s every 200,000 (more of a flow's objects are freed before a scan
    reaches them), at the same peak memory."""
    import gc

    gc.freeze()
    gc.set_threshold(200_000, 20, 20)


def _is_agent_config(data: bytes) -> bool:
    # Keys are found even in a file that does not parse, so its syntax error is reported as the
    # agent configuration's, not as an invalid policy. A key of an agent section written at the top
    # (`interfaces:`) counts too: the agent's validator says where it belongs.
    from agents.config import AGENT_WORDS

    return bool(AGENT_WORDS & top_level_keys(data))


def check_config(path: str, out: TextIO) -> int:
    from agents.config import load_config  # not for `replay`: its start-up stays short

    if _is_agent_config(read_input(path, "configuration or policy")):
        config = load_config(path)  # logs its warnings
        from monitor.alerts import endpoint

        cap = config.capture
        source = f"pcap {cap.pcap}" if cap.pcap is not None else f"interfaces {', '.join(cap.interfaces)}"
        mqtt = (
            endpoint(config.mqtt.host, config.mqtt.port)
            if config.mqtt is not None
            else "none (alerts go to the log and alerts_file)"
        )
        out.write(
            f"{path}: OK: agent {config.observer}; {source}; "
            f"metrics on {endpoint(config.metrics.listen, config.metrics.port)}; mqtt {mqtt}; "
            f"state in {config.state_dir}\n"
        )
        policy = config.site_policy
        kind = ""
    else:
        policy = load_policy(path)
        # A file with only `site:` is a valid policy and an agent configuration missing its capture
        # section: say which it was read as.
        kind = " (read as a site policy; an agent configuration also has a 'capture:' section)"
    nets = ", ".join(str(n) for n in policy.monitored_networks) or "none"
    out.write(
        f"{path}: OK: site {policy.site}; monitored networks: {nets}; "
        f"watched vendors: {', '.join(sorted(policy.watched_vendors)) or 'none'}; "
        f"{len(policy.allow)} allow rule(s){kind}\n"
    )
    return EXIT_OK


def run_agent(config_path: str) -> int:
    import asyncio

    from agents.config import load_config
    from agents.privileges import PrivilegeError
    from agents.runtime import Agent

    check_input(config_path, "configuration")
    config = load_config(config_path)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    try:
        asyncio.run(Agent(config).run())
    except PrivilegeError as exc:
        raise CliError(f"{config_path}: {exc}", EXIT_INPUT) from None
    except BrokenPipeError:
        raise
    except OSError as exc:
        log.debug("the agent stopped", exc_info=True)
        raise CliError(agent_problem(config_path, exc), EXIT_INPUT) from None
    return EXIT_OK


def agent_problem(config_path: str, exc: OSError) -> str:
    """One line for a system error that stopped the agent: what failed and which setting to look at."""
    from agents.capture.afpacket import CaptureOpenError

    text = " ".join(str(exc).split())
    if isinstance(exc, CaptureOpenError):
        return (
            f"{text}; check capture.interfaces in {config_path} (`ip -br link` lists this host's interfaces)"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"{text}; another process listens on that address: change metrics.port in {config_path}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{text}; run the agent as root or with the capabilities docs/deployment.md lists, and check "
            f"the paths in {config_path}"
        )
    return f"the agent stopped: {text}"


def learn_command(args: argparse.Namespace, out: TextIO) -> int:
    """`camwatch learn`: agents/learn/command.py does the work; its errors are one line here."""
    from agents.learn.command import LearnError, run

    try:
        return run(args, out)
    except LearnError as exc:
        raise CliError(str(exc), exc.code) from exc


EXIT_LAB_DOWN = 3  # `lab status`: no lab (as `systemctl status` says a unit is not running)


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
            status = lab.up(
                trigger_every=args.trigger_every,
                agent=args.agent,
                mqtt=args.mqtt,
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
    # The engine (and numpy under it) is imported by the commands that run it, not by `--version`, `--help`
    # or `check-config`.
    from agents.capture.pcap_source import PcapFileSource
    from agents.progress import Progress
    from agents.sinks.lines import JsonLinesSink
    from monitor.engine import Engine, EngineConfig, Events
    from monitor.flows import FlowConfig
    from monitor.pcapfile import CaptureError
    from monitor.records import flow_record
    from monitor.vendors.oui import VendorTable

    policy = load_policy(args.policy)
    for path in args.pcaps:
        check_input(path, "capture")
    _check_outputs(args)
    config = EngineConfig(
        observer=f"{policy.site}/{args.gateway}", flows=FlowConfig(max_flows=args.max_flows)
    )
    engine = Engine(policy, VendorTable.load(), config)
    progress = Progress()
    started = time.monotonic()
    failures: list[str] = []
    with contextlib.ExitStack() as stack:
        # Every output is opened before the first packet: a bad path costs nothing but one line.
        alerts = JsonLinesSink(args.alerts)
        with writing("--alerts", args.alerts, EXIT_USAGE):
            stack.enter_context(alerts)
        flows: JsonLinesSink | _NullSink = _NullSink()
        if args.flows:
            flows = JsonLinesSink(args.flows)
            with writing("--flows", args.flows, EXIT_USAGE):
                stack.enter_context(flows)
        inventory: IO[str] | None = None
        if args.inventory:
            with writing("--inventory", args.inventory, EXIT_USAGE):
                inventory = stack.enter_context(open(args.inventory, "w", encoding="utf-8"))

        def emit(ev: Events) -> None:
            if ev.alerts:
                with writing("--alerts", args.alerts, EXIT_INPUT):
                    for alert in ev.alerts:
                        alerts.write(alert.to_record())
            if args.flows and ev.flows:
                with writing("--flows", args.flows, EXIT_INPUT):
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
            except BrokenPipeError:
                raise  # stdout's reader, not the capture
            except OSError as exc:
                failures.append(input_problem(path, "capture", exc))
        emit(engine.finish())
        progress.clear()
        if inventory is not None:
            with writing("--inventory", args.inventory, EXIT_INPUT):
                inventory.write(json.dumps(engine.inventory.records(), indent=1) + "\n")
        # Closing flushes: a full disk shows here, named after its option.
        for option, target, closing in (
            ("--inventory", args.inventory, inventory),
            ("--flows", args.flows, flows),
            ("--alerts", args.alerts, alerts),
        ):
            if closing is not None:
                with writing(option, target, EXIT_INPUT):
                    closing.close()
    if engine.stats.packets or not failures:  # a capture that gave nothing has only its error to say
        _summary(engine, time.monotonic() - started, sys.stderr)
    for failure in failures:
        print(f"camwatch: error: {failure}", file=sys.stderr)
    return EXIT_INPUT if failures else EXIT_OK


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse an output that is also an input (it would be emptied before it is read) or another output.
    A character device (/dev/null) may take several outputs: nothing is emptied or overwritten there."""
    outputs = [(o, p) for o, p in (("--alerts", args.alerts), ("--flows", args.flows), ("--inventory",
               args.inventory)) if p and p != "-" and not _is_char_device(p)]  # fmt: skip
    inputs = [("capture", p) for p in args.pcaps] + ([("--policy", args.policy)] if args.policy else [])
    for i, (option, path) in enumerate(outputs):
        for what, other in inputs + outputs[:i]:
            if _same_file(path, other):
                name = "a capture to read" if what == "capture" else f"the {what} file"
                raise CliError(f"{option} {path}: is also {name}; write each output to a file of its own")


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class _NullSink:
    """Where flow records go without --flows."""

    def write(self, record: object) -> None:
        return None

    def close(self) -> None:
        return None


def _summary(engine: Engine, seconds: float, out: TextIO) -> None:
    from monitor.decode import undecoded_message
    from monitor.site import unlisted_message

    st = engine.stats
    vendors = Counter(d.manufacturer or "unknown" for d in engine.inventory)
    by_vendor = ", ".join(f"{name} {n}" for name, n in vendors.most_common()) or "none"
    by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(st.alerts.items())) or "none"
    by_severity = _by_severity(st.alerts)
    fs = engine.flows.stats
    rate = st.packets / seconds if seconds > 0 else 0.0
    # What was not read as IP is always shown; the rarer counts only when there are any.
    unread = [
        f"{st.non_ip:,} non-IP",
        _n(st.later_fragments, "later fragment"),
        f"{st.truncated:,} truncated",
    ]
    if st.defrag_reassembled:
        unread.append(f"{_n(st.defrag_reassembled, 'datagram')} reassembled")
    if st.ipv6_ext_overflow:
        unread.append(f"{st.ipv6_ext_overflow:,} with over 8 IPv6 extension headers")
    if st.decapsulated:
        unread.append(f"{st.decapsulated:,} read inside tunnels")
    alerts = sum(st.alerts.values())
    out.write(
        f"camwatch: {_n(st.packets, 'packet')} ({_n(st.bytes, 'byte')}, {', '.join(unread)}) "
        f"in {seconds:.2f} s ({rate:,.0f} packets/s)\n"
        f"camwatch: {_n(fs.created, 'flow')} ({fs.evicted:,} evicted at the bound)\n"
        f"camwatch: {_n(len(engine.inventory), 'device')}: {by_vendor}\n"
        f"camwatch: {_n(alerts, 'alert')}{by_severity}: {by_rule}"
        f" ({engine.gate.suppressed:,} repeats suppressed)\n"
    )
    if st.undecoded_linktypes:
        # Not an error (what could be read was), but no analyst may read "0 alerts" as a clean capture.
        out.write(f"camwatch: warning: {undecoded_message(st.undecoded_linktypes)}\n")
    if engine.site.unlisted_prefixes:
        out.write(f"camwatch: warning: {unlisted_message(engine.site.unlisted_prefixes)}\n")


def _n(count: int, noun: str) -> str:
    """``1 packet``, ``2 packets``, ``1,024 bytes``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


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
