"""``camwatch learn``: propose a site policy from captures or from a learning agent's state.

    camwatch learn CAPTURE... --policy BASE.yaml --out LEARNED.yaml [--alerts FILE] [--mud DIR]
    camwatch learn --from-state /var/lib/camwatch --policy BASE.yaml --out LEARNED.yaml
    camwatch learn --relearn MAC [MAC...] --from-state /var/lib/camwatch

The base policy is validated first: a bad one is reported field by field and nothing is read or written.
The captures run through the whole engine with the base policy (the rules flag what must not be learned)
and a recorder beside the rules (``agents.learn.observe``). The proposal (``agents.learn.propose``) is
written as a complete policy (``agents.learn.render``) that ``check-config`` accepts; the findings are
printed, and with ``--alerts`` the alerts behind them are written as JSON lines. Every file is written
through a temporary file and renamed, and only once everything is ready: a refusal or an error leaves
nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agents.learn.mud import MudFiles
from agents.learn.mud import build as build_mud
from agents.learn.observe import Observations, rulebook_with
from agents.learn.propose import (
    DeviceInfo,
    LearnRefused,
    LearnSettings,
    Proposal,
    devices_from_inventory,
    propose,
)
from agents.learn.render import render_policy
from agents.learn.state import (
    LearningStateError,
    read_inventory_records,
    read_learning,
    request_relearn,
)
from monitor.alerts import iso_timestamp
from monitor.policy import SitePolicy
from monitor.validation import Reader, load_yaml

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INPUT = 1
EXIT_USAGE = 2


class LearnError(Exception):
    """A one-line reason to stop; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _duration(text: str) -> float:
    reader = Reader()
    # A bare number is seconds (``0``), as in the configuration; text needs a unit (90s, 10m, 1h, 1d).
    number = text.strip().isdigit()
    value = reader.seconds({"v": int(text) if number else text}, "", "v", -1.0, 0, 366 * 86400)
    if reader.problems or value < 0:
        raise LearnError(f"--min-span {text!r}: write a duration like 10m, 1h or 0")
    return value


@dataclass(slots=True)
class Learned:
    """What a run read: the observations, the devices, and a line saying where they came from."""

    observations: Observations
    devices: dict[str, DeviceInfo]
    source: str
    packets: int = 0


def run(args: argparse.Namespace, out: TextIO) -> int:
    """``camwatch learn`` (``args`` from :func:`add_parser`)."""
    if args.relearn:
        return _relearn(args, out)
    if args.policy is None:
        raise LearnError("--policy FILE is required: the base policy the learned rules are added to")
    if args.out is None:
        raise LearnError("--out FILE is required: where to write the learned policy")
    if bool(args.captures) == bool(args.from_state):
        raise LearnError("give either capture files or --from-state DIR (one source)")
    if args.min_flows < 1 or args.max_rules < 1:
        raise LearnError("--min-flows and --max-rules must be at least 1")
    if args.mud and not args.mud_url.startswith("https://"):
        raise LearnError(f"--mud-url {args.mud_url!r}: a MUD URL is an https:// URL (RFC 8520)")
    settings = LearnSettings(
        min_flows=args.min_flows, min_span_s=_duration(args.min_span), max_destinations=args.max_rules
    )
    policy, base = _base_policy(args.policy)
    _check_outputs(args)
    started = time.monotonic()
    learned = _from_state(Path(args.from_state)) if args.from_state else _from_captures(args, policy)
    try:
        proposal = propose(learned.observations, learned.devices, settings)
    except LearnRefused as exc:
        raise LearnError(f"nothing written: {exc}", EXIT_INPUT) from exc
    header = _header(args, learned, proposal, settings)
    text = render_policy(base, proposal, header, [r.name for r in policy.allow])
    mud = MudFiles({}, {})
    if args.mud:
        mud = build_mud(proposal, learned.observations, learned.devices, policy, args.mud_url, settings)
    # Everything is ready: now write (each file through a temporary file).
    _write_text(Path(args.out), text)
    if args.alerts:
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in learned.observations.findings)
        _write_text(Path(args.alerts), lines)
    if args.mud:
        folder = Path(args.mud)
        folder.mkdir(parents=True, exist_ok=True)
        for name, doc in mud.files.items():
            _write_text(folder / name, json.dumps(doc, indent=1) + "\n")
    _report(out, args, learned, proposal, mud, time.monotonic() - started)
    return EXIT_OK


def _base_policy(path: str) -> tuple[SitePolicy, dict[Any, Any]]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise LearnError(f"{path}: cannot read the base policy: {exc.strerror or exc}") from exc
    policy = SitePolicy.from_yaml(raw, source=path)  # a PolicyError names every bad field; nothing is written
    data = load_yaml(raw, path).data
    if not isinstance(data, dict):  # from_yaml accepted it, so it is a mapping
        raise LearnError(f"{path}: the base policy is not a mapping")
    return policy, data


def _check_outputs(args: argparse.Namespace) -> None:
    """Outputs whose directory does not exist are refused before hours of reading."""
    for flag, value in (("--out", args.out), ("--alerts", args.alerts)):
        if value is None:
            continue
        path = Path(value)
        if path.is_dir():
            raise LearnError(f"{flag} {value}: is a directory; name a file")
        if not path.parent.is_dir():
            raise LearnError(f"{flag} {value}: the directory {path.parent} does not exist")
    if args.mud and Path(args.mud).exists() and not Path(args.mud).is_dir():
        raise LearnError(f"--mud {args.mud}: exists and is not a directory")


def _from_captures(args: argparse.Namespace, policy: SitePolicy) -> Learned:
    from agents.capture.pcap_source import PcapFileSource
    from monitor.engine import Engine, EngineConfig
    from monitor.pcapfile import CaptureError
    from monitor.vendors.oui import VendorTable, parse_mac

    for path in args.captures:
        if not Path(path).is_file():
            raise LearnError(f"{path}: no such capture file", EXIT_INPUT)
    obs = Observations()
    engine = Engine(
        policy,
        VendorTable.load(),
        EngineConfig(observer=f"{policy.site}/{args.gateway}"),
        rules=rulebook_with(obs),
    )

    def device_ips(mac: str) -> Sequence[str]:
        try:
            dev = engine.inventory.get(parse_mac(mac))
        except ValueError:
            return ()
        return dev.ips if dev is not None else ()

    def take(alerts: Sequence[Any]) -> None:
        for alert in alerts:
            obs.note_alert(alert, device_ips, engine.site.is_site_address)

    for path in args.captures:
        try:
            for batch in PcapFileSource(path).batches():
                take(engine.feed(batch).alerts)
        except CaptureError as exc:
            raise LearnError(f"nothing written: {exc}", EXIT_INPUT) from exc
        except OSError as exc:
            raise LearnError(
                f"nothing written: {path}: cannot read: {exc.strerror or exc}", EXIT_INPUT
            ) from exc
    take(engine.finish().alerts)
    devices = devices_from_inventory(engine.inventory.records())
    n = len(args.captures)
    return Learned(obs, devices, f"{n} capture{'s' if n != 1 else ''}", engine.stats.packets)


def _from_state(state_dir: Path) -> Learned:
    from monitor.devices import Inventory
    from monitor.vendors.oui import VendorTable

    if not state_dir.is_dir():
        raise LearnError(_no_state_dir(state_dir), EXIT_INPUT)
    try:
        doc = read_learning(state_dir)
        inventory_state = read_inventory_records(state_dir)
    except LearningStateError as exc:
        raise LearnError(str(exc), EXIT_INPUT) from exc
    if doc is None:
        raise LearnError(
            f"{state_dir}: no learning state (learning.json): is the agent running with a learning: section "
            "and this state_dir?",
            EXIT_INPUT,
        )
    try:
        obs = Observations.from_json(doc.get("observations"))
    except ValueError as exc:
        raise LearnError(f"{state_dir}/learning.json: {exc}", EXIT_INPUT) from exc
    inventory = Inventory(VendorTable.load())
    inventory.restore(inventory_state)
    return Learned(obs, devices_from_inventory(inventory.records()), f"the agent state in {state_dir}")


def _relearn(args: argparse.Namespace, out: TextIO) -> int:
    if not args.from_state:
        raise LearnError("--relearn needs --from-state DIR: the state directory of the agent that learns")
    # The same mistakes cost the same exit status as without --relearn (docs/learning.md): a state
    # directory that cannot be used is an input (1), a MAC that is not one a bad argument (2).
    state_dir = Path(args.from_state)
    if not state_dir.is_dir():
        raise LearnError(_no_state_dir(state_dir), EXIT_INPUT)
    try:
        macs = request_relearn(state_dir, list(args.relearn))
    except LearningStateError as exc:
        raise LearnError(str(exc), EXIT_INPUT) from exc
    except ValueError as exc:
        raise LearnError(str(exc)) from exc
    except OSError as exc:
        raise LearnError(
            f"{args.from_state}: cannot write the request: {exc.strerror or exc}", EXIT_INPUT
        ) from exc
    for mac in macs:
        out.write(
            f"{mac}: asked to learn again; the agent starts within a minute (at its next state save) and "
            "forgets what it learned of this device before\n"
        )
    return EXIT_OK


def _no_state_dir(state_dir: Path) -> str:
    return f"{state_dir}: no such state directory: give the agent's state_dir (e.g. /var/lib/camwatch)"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise LearnError(f"{path}: cannot write: {exc.strerror or exc}", EXIT_INPUT) from exc


def _span(proposal: Proposal) -> str:
    if proposal.first_ns is None or proposal.last_ns is None:
        return "no traffic of watched devices"
    return f"{iso_timestamp(proposal.first_ns)} .. {iso_timestamp(proposal.last_ns)}"


def _header(
    args: argparse.Namespace, learned: Learned, proposal: Proposal, settings: LearnSettings
) -> list[str]:
    return [
        f"Learned by camwatch learn from {learned.source} ({_span(proposal)}), base policy {args.policy}.",
        f"Support asked: {settings.min_flows} flows over {settings.min_span_s:g} s; "
        f"{proposal.destinations} destination(s) learned in {len(proposal.rules)} rule(s).",
        "Review every learned rule and the findings before applying it (docs/learning.md).",
    ]


def _report(
    out: TextIO,
    args: argparse.Namespace,
    learned: Learned,
    proposal: Proposal,
    mud: MudFiles,
    seconds: float,
) -> None:
    write: Callable[[str], int] = out.write
    packets = f", {learned.packets:,} packets" if learned.packets else ""
    write(f"camwatch learn: {learned.source}{packets} ({_span(proposal)}) in {seconds:.1f} s\n")
    write(
        f"camwatch learn: {len(proposal.device_group)} device(s) in {len(proposal.groups)} group(s); "
        f"{len(proposal.known_devices)} in known_devices\n"
    )
    write(
        f"camwatch learn: {proposal.destinations} destination(s) learned in {len(proposal.rules)} rule(s) "
        f"-> {args.out}\n"
    )
    for rule in proposal.rules:
        write(f"  {rule.name}: {', '.join(d.peer for d in rule.destinations)}\n")
    if proposal.findings:
        write(f"findings: {len(proposal.findings)} (not learned: decide what each is)\n")
        for finding in proposal.findings:
            write(f"  [{finding.kind}] {finding.text}\n")
    if args.alerts:
        n = len(learned.observations.findings)
        write(f"camwatch learn: {n} alert(s) behind the findings -> {args.alerts}\n")
    if args.mud:
        write(f"camwatch learn: {len(mud.files)} MUD file(s) -> {args.mud}\n")
        if mud.without:
            write(
                f"no MUD file for {len(mud.without)} group(s): nothing supported and unflagged to describe "
                "(a MUD file listing nothing would forbid its devices everything)\n"
            )
            for label, why in mud.without.items():
                write(f"  [no-mud] {label}: {why}\n")
