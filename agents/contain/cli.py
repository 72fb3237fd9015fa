"""`camwatch contain`: render, apply, status, quarantine, release, remove, dns (docs/containment.md).

    camwatch contain render --policy FILE [--inventory FILE] [--config FILE] [--never-block ADDR]... [--json]
    camwatch contain apply [--config FILE]
    camwatch contain status [--config FILE] [--json]
    camwatch contain quarantine DEVICE --reason TEXT [--for DURATION] [--config FILE]
    camwatch contain release DEVICE [--reason TEXT] [--config FILE]
    camwatch contain remove [--reason TEXT] [--config FILE]
    camwatch contain dns --format rpz|unbound|dnsmasq [--policy FILE | --config FILE] [--inventory FILE]

Exit status: 0 done; 1 refused or failed (the reason on stderr, nothing changed), or for ``status`` a
table that does not match the configuration; 2 bad arguments or configuration. Every change goes to the
audit log with the user who ran the command (``cli:<user>``). Only argparse is imported here at start-up:
the other commands of `camwatch` do not pay for this one.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from agents.config import AgentConfig
    from agents.contain.control import Controller
    from agents.contain.plan import ContainmentPlan, Device

__all__ = ["ContainError", "add_parser", "contain_command"]

DEFAULT_CONFIG = "/etc/camwatch/agent.yaml"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class ContainError(Exception):
    """A one-line reason for a non-zero exit."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `camwatch contain` and its commands."""
    p = sub.add_parser(
        "contain", help="containment on a forwarding gateway: the policy enforced with nftables (root)"
    )
    cs = p.add_subparsers(dest="contain_command", required=True, metavar="CONTAIN_COMMAND")

    def config(parser: argparse.ArgumentParser, required: bool = True) -> None:
        parser.add_argument(
            "--config",
            metavar="FILE",
            default=DEFAULT_CONFIG if required else None,
            help=f"agent configuration (default: {DEFAULT_CONFIG})"
            if required
            else "agent configuration (its containment section: never_block)",
        )

    r = cs.add_parser("render", help="print the nftables ruleset (an `nft -f` script) for a policy")
    r.add_argument("--policy", metavar="FILE", help="site policy (default: the configuration's)")
    r.add_argument("--inventory", metavar="FILE", help="inventory JSON: devices watched by vendor elsewhere")
    config(r, required=False)
    r.add_argument(
        "--never-block", action="append", default=[], metavar="ADDR", help="never blocked (repeat)"
    )
    r.add_argument("--json", action="store_true", help="print the plan's address sets as JSON instead")
    config(cs.add_parser("apply", help="load the ruleset now (enforce) or check it (dry-run)"))
    st = cs.add_parser("status", help="mode, loaded ruleset, counters, quarantines, last changes")
    config(st)
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    q = cs.add_parser("quarantine", help="quarantine a device (MAC or address) now")
    q.add_argument("device", metavar="DEVICE")
    q.add_argument("--reason", required=True, help="why (goes to the audit log)")
    q.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30m, 2h (default: escalation)")
    config(q)
    rel = cs.add_parser("release", help="end a device's quarantine now")
    rel.add_argument("device", metavar="DEVICE")
    rel.add_argument("--reason", default="released by an operator", help="why (goes to the audit log)")
    config(rel)
    rm = cs.add_parser("remove", help="remove the ruleset: containment off until `contain apply`")
    rm.add_argument("--reason", default="removed by an operator", help="why (goes to the audit log)")
    config(rm)
    d = cs.add_parser("dns", help="a resolver sinkhole for the vendor-cloud catalogue")
    d.add_argument("--format", required=True, choices=("rpz", "unbound", "dnsmasq"))
    d.add_argument("--policy", metavar="FILE", help="site policy (unbound: who is watched)")
    d.add_argument("--inventory", metavar="FILE", help="inventory JSON (unbound: watched devices elsewhere)")
    d.add_argument("--zone-file", default="/etc/unbound/camwatch.rpz", help="unbound: where the RPZ is")
    config(d, required=False)


def contain_command(args: argparse.Namespace, out: TextIO) -> int:
    """Run one `camwatch contain` command; errors are printed as one line and give the exit status."""
    try:
        handler = _COMMANDS[args.contain_command]
        return handler(args, out)
    except ContainError as exc:
        print(f"camwatch: error: {exc}", file=sys.stderr)
        return exc.code


# -- the commands -----------------------------------------------------------------------------------


def _render(args: argparse.Namespace, out: TextIO) -> int:
    from agents.contain.render import render_ruleset

    plan = _plan_from_args(args)
    for warning in plan.warnings:
        print(f"camwatch: warning: {warning}", file=sys.stderr)
    if args.json:
        out.write(json.dumps({"digest": plan.digest, **plan.to_json()}, indent=1) + "\n")
    else:
        out.write(render_ruleset(plan))
    return EXIT_OK


def _apply(args: argparse.Namespace, out: TextIO) -> int:
    from agents.contain.render import LearnedAddress

    config = _config(args.config)
    if not config.containment.active:
        raise ContainError(
            f"{args.config}: containment.mode is off: set it to enforce (or dry-run, to check the ruleset)",
            EXIT_USAGE,
        )
    controller = _controller(config)
    plan = _plan(config, _state_devices(config))
    # Addresses the agent learned for name rules stay allowed through this reload.
    learned: list[LearnedAddress] = []
    state = _table(controller)
    if state is not None:
        from agents.contain.plan import NameAllow

        for kind in ("names_any", "names_ports"):
            for e in state.elements(kind):
                if e.expires is not None:
                    ports = None if e.port is None else frozenset({(e.port, e.transport or "tcp")})
                    learned.append(LearnedAddress(NameAllow("learned", (), ports), e.address, e.expires))
    result = controller.apply(plan, _actor(), "camwatch contain apply", learned)
    # The outcome says the mode (applied: enforce; dry-run: checked only); the reason says the rest.
    text = f"apply {result.outcome}: plan {plan.digest}: {result.record.reason}\n"
    if result.outcome in ("applied", "dry-run"):
        out.write(text)
        return EXIT_OK
    sys.stderr.write(f"camwatch: {text}")
    return EXIT_REFUSED


def _status(args: argparse.Namespace, out: TextIO) -> int:
    from agents.contain.audit import last_records

    config = _config(args.config)
    controller = _controller(config)
    mode = config.containment.mode
    state = _table(controller)
    try:
        expected: str | None = _plan(config, _state_devices(config)).digest
        plan_error = None
    except ContainError as exc:
        expected, plan_error = None, str(exc)
    now = time.time()
    book = controller.book()
    active = sorted((e for e in book.active.values() if e.until > now), key=lambda e: e.since)
    kernel_q = {str(e.address): e.expires for e in state.elements("quarantine")} if state is not None else {}
    removed = controller.files.read_removed()
    problems: list[str] = []
    if mode == "enforce" and state is None:
        problems.append(
            "mode is enforce but camwatch's table is not loaded"
            + (" (removed with `camwatch contain remove`: run `camwatch contain apply`)" if removed else "")
        )
    elif mode == "enforce" and state is not None and state.digest != expected:
        problems.append(
            f"the loaded plan {state.digest} is not this configuration's ({expected}): the agent applies it "
            "within check_interval, or run `camwatch contain apply`"
        )
    elif mode != "enforce" and state is not None:
        problems.append(
            f"mode is {mode} but camwatch's table is loaded and enforcing: `camwatch contain remove`"
        )
    if plan_error:
        problems.append(plan_error)
    for entry in active:
        for address in entry.addresses:
            if mode == "enforce" and state is not None and str(address) not in kernel_q:
                problems.append(f"{entry.device} {address} is quarantined in the book but not in the kernel")
    report: dict[str, Any] = {
        "mode": mode,
        "config": str(args.config),
        "loaded": state is not None,
        "plan": state.digest if state is not None else None,
        "expected_plan": expected,
        "dropped": {
            name.removeprefix("dropped_"): {"packets": p, "bytes": b}
            for name, (p, b) in (state.counters.items() if state is not None else ())
        },
        "quarantined": [
            {
                **e.to_json(),
                "remaining": round(e.until - now),
                "kernel_expires": kernel_q.get(str(e.addresses[0])),
            }
            for e in active
        ],
        "quarantine_limit": config.containment.quarantine.max_devices,
        "learned_name_addresses": len(state.elements("names_any")) + len(state.elements("names_ports"))
        if state is not None
        else 0,
        "removed": removed,
        "recent": [r.to_json() for r in last_records(controller.files.audit, 5)],
        "problems": problems,
    }
    if args.json:
        out.write(json.dumps(report, indent=1) + "\n")
    else:
        out.write(_status_text(report))
    return EXIT_OK if not problems else EXIT_REFUSED


def _status_text(r: dict[str, Any]) -> str:
    lines = [f"containment: mode {r['mode']} ({r['config']})"]
    if r["loaded"]:
        same = (
            "matches the configuration"
            if r["plan"] == r["expected_plan"]
            else "differs from the configuration"
        )
        lines.append(f"ruleset: loaded, plan {r['plan']} ({same})")
        lines.append(
            "dropped: "
            + ", ".join(
                f"{k} {v['packets']} packets ({v['bytes']} bytes)" for k, v in sorted(r["dropped"].items())
            )
        )
    else:
        lines.append("ruleset: not loaded")
    if r["removed"]:
        when = r["removed"].get("at")
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) if isinstance(when, int | float) else "?"
        lines.append(
            f"removed by {r['removed'].get('by')} at {at}: the agent applies again after `contain apply`"
        )
    lines.append(f"quarantined: {len(r['quarantined'])} of at most {r['quarantine_limit']}")
    for q in r["quarantined"]:
        lines.append(
            f"  {q['device']} {', '.join(q['addresses'])}: {q['remaining'] // 60} min left, "
            f"level {q['level']}, by {q['actor']}: {q['reason']}"
        )
    lines.append(f"name rules: {r['learned_name_addresses']} learned addresses")
    if r["recent"]:
        lines.append("last changes:")
        for rec in r["recent"]:
            device = f" {rec['device']}" if rec.get("device") else ""
            lines.append(
                f"  {rec['@timestamp']} {rec['action']}{device} {rec['outcome']} by {rec['actor']}: "
                f"{rec['reason']}"
            )
    lines += [f"problem: {p}" for p in r["problems"]]
    return "\n".join(lines) + "\n"


def _quarantine(args: argparse.Namespace, out: TextIO) -> int:
    import ipaddress

    config = _config(args.config)
    if not config.containment.active:
        raise ContainError(f"{args.config}: containment.mode is off: nothing to quarantine into", EXIT_USAGE)
    seconds = _duration(args.duration) if args.duration else None
    device, addresses = _resolve_device(config, args.device)
    if not addresses:
        raise ContainError(f"no address of {args.device} is known: give one of its IP addresses")
    plan = _plan(config, ())
    controller = _controller(config)
    record = controller.quarantine(
        plan,
        device,
        [ipaddress.ip_address(a) for a in addresses],
        _actor(),
        args.reason,
        automatic=False,
        seconds=seconds,
    )
    return _report(record, out)


def _release(args: argparse.Namespace, out: TextIO) -> int:
    config = _config(args.config)
    record = _controller(config).release(args.device, _actor(), args.reason)
    return _report(record, out)


def _remove(args: argparse.Namespace, out: TextIO) -> int:
    config = _config(args.config)
    record = _controller(config).remove(_actor(), args.reason)
    return _report(record, out)


def _dns(args: argparse.Namespace, out: TextIO) -> int:
    from agents.contain.dns import render_dnsmasq, render_rpz, render_unbound
    from monitor.vendors.clouds import CloudCatalogue

    if args.format == "rpz":
        out.write(render_rpz(CloudCatalogue.load(), serial=int(time.time())))
    elif args.format == "dnsmasq":
        out.write(render_dnsmasq(CloudCatalogue.load()))
    else:
        out.write(render_unbound(_plan_from_args(args, never_block=()), args.zone_file))
    return EXIT_OK


_COMMANDS = {
    "render": _render,
    "apply": _apply,
    "status": _status,
    "quarantine": _quarantine,
    "release": _release,
    "remove": _remove,
    "dns": _dns,
}


# -- helpers ----------------------------------------------------------------------------------------


def _report(record: Any, out: TextIO) -> int:
    """``<action> [<device>] <outcome>[ until <time>]: <reason>``: on stdout when done (exit 0), on stderr
    when refused or failed (exit 1), where the reason starts with the cause (``_because`` in control.py)."""
    when = ""
    if record.expires:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.expires))
        when = f", would last until {until}" if record.outcome == "dry-run" else f" until {until}"
    device = f" {record.device}" if record.device else ""
    text = f"{record.action}{device} {record.outcome}{when}: {record.reason}\n"
    if record.outcome in ("applied", "unchanged", "dry-run"):
        out.write(text)
        return EXIT_OK
    sys.stderr.write(f"camwatch: {text}")
    return EXIT_REFUSED


def _actor() -> str:
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"cli:{user}"


def _config(path: str) -> AgentConfig:
    from agents.config import load_config

    if not Path(path).is_file():
        raise ContainError(f"{path}: no such configuration file (see docs/containment.md)", EXIT_USAGE)
    # The agent's own warnings (run_as_user, ...) are `run`'s and `check-config`'s to give, not every contain
    # command's; -v shows them.
    return load_config(path, warnings_level=logging.DEBUG)  # a ConfigError: reported by `camwatch` (exit 2)


def _controller(config: AgentConfig) -> Controller:
    from agents.contain.audit import AuditLog
    from agents.contain.control import Controller
    from agents.contain.files import ContainmentFiles
    from agents.contain.nft import Nft, has_net_admin

    if not has_net_admin():
        raise ContainError("camwatch contain needs root (CAP_NET_ADMIN for nft): run it with sudo")
    nft = Nft()
    if not nft.available():
        raise ContainError("nft is not installed: apt-get install nftables")
    files = ContainmentFiles.at(config.state_dir, config.containment.audit_file)
    audit = AuditLog(files, config.observer)
    return Controller(files, nft, audit, config.containment.mode, config.containment.quarantine)


def _table(controller: Controller) -> Any:
    from agents.contain.nft import NftError

    try:
        return controller.table()
    except NftError as exc:
        raise ContainError(f"cannot read camwatch's table: {exc}") from exc


def _plan(config: AgentConfig, devices: Sequence[Device]) -> ContainmentPlan:
    from agents.contain.plan import ContainmentError, ContainmentPlan

    try:
        return ContainmentPlan.build(
            config.site_policy, never_block=config.containment.never_block, devices=devices
        )
    except ContainmentError as exc:
        raise ContainError(str(exc), EXIT_USAGE) from exc


def _plan_from_args(args: argparse.Namespace, never_block: Sequence[str] | None = None) -> ContainmentPlan:
    """The plan of `render` and `dns`: --policy (or the configuration's policy), --never-block and the
    configuration's never_block, --inventory."""
    from agents.contain.plan import ContainmentError, ContainmentPlan, parse_address_or_network
    from monitor.policy import SitePolicy

    config = _config(args.config) if args.config else None
    if args.policy:
        try:
            data = Path(args.policy).read_bytes()
        except OSError as exc:
            raise ContainError(
                f"{args.policy}: cannot read policy: {exc.strerror or exc}", EXIT_USAGE
            ) from exc
        policy = SitePolicy.from_yaml(data, args.policy)  # a PolicyError is reported by `camwatch` (exit 2)
    elif config is not None:
        policy = config.site_policy
    else:
        raise ContainError("give the site policy: --policy FILE (or --config FILE)", EXIT_USAGE)
    nets = list(config.containment.never_block) if config is not None else []
    for text in never_block if never_block is not None else getattr(args, "never_block", []):
        try:
            nets.append(parse_address_or_network(text))
        except ValueError as exc:
            raise ContainError(f"--never-block {exc}", EXIT_USAGE) from None
    devices = _inventory_devices(Path(args.inventory)) if args.inventory else []
    try:
        return ContainmentPlan.build(policy, never_block=nets, devices=devices)
    except ContainmentError as exc:
        raise ContainError(str(exc), EXIT_USAGE) from exc


def _inventory_devices(path: Path) -> list[Device]:
    """Devices from an inventory file: the §4.4 array (``replay --inventory``, ``inventory_file``) or the
    agent's ``inventory.json`` state file."""
    from agents.contain.plan import devices_from_inventory

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContainError(f"{path}: no such inventory file", EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        raise ContainError(f"{path}: not an inventory (JSON array of devices): {exc}", EXIT_USAGE) from None
    records = data.get("devices") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise ContainError(
            f"{path}: not an inventory (a JSON array of devices, docs/design.md §4.4)", EXIT_USAGE
        )
    return devices_from_inventory(r for r in records if isinstance(r, dict))


def _state_devices(config: AgentConfig) -> list[Device]:
    """The devices of the agent's saved inventory (``<state_dir>/inventory.json``), if any."""
    path = Path(config.state_dir) / "inventory.json"
    if not path.is_file():
        return []
    try:
        return _inventory_devices(path)
    except ContainError as exc:
        print(
            f"camwatch: warning: {exc}; watched devices outside the monitored networks are left out",
            file=sys.stderr,
        )
        return []


def _resolve_device(config: AgentConfig, text: str) -> tuple[str, list[str]]:
    """(device name for the book, its addresses) from a MAC or an address, with the saved inventory."""
    import ipaddress

    devices = _state_devices(config)
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        mac = text.strip().lower().replace(":", "-")
        if len(mac) != 17 or mac.count("-") != 5:
            raise ContainError(
                f"{text!r} is neither a MAC (44-19-b6-00-00-01) nor an IP address", EXIT_USAGE
            ) from None
        found = next((d for d in devices if d.mac == mac), None)
        return mac, [str(a) for a in found.addresses] if found is not None else []
    owner = next((d for d in devices if ip in d.addresses), None)
    if owner is None:
        return f"ip:{ip}", [str(ip)]
    return owner.mac, sorted({str(ip), *map(str, owner.addresses)})


def _duration(text: str) -> float:
    from monitor.validation import Reader

    reader = Reader()
    value = reader.seconds({"for": text}, "", "for", 0.0, 60, 30 * 86400)
    if reader.problems:
        p = reader.problems[0]
        raise ContainError(f"--for {p.problem}; {p.fix}", EXIT_USAGE)
    return value
