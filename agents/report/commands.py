"""``camwatch report`` and ``camwatch inventory export`` (docs/report.md): their arguments and what they do.

``agents/cli.py`` registers the parsers with :func:`add_parsers` and calls :func:`report` or
:func:`inventory_export`; each returns the exit code and says what went wrong itself (one line on stderr):
0 done, 1 an input could not be used (named, with the fix), 2 bad arguments. Bad register rows are warnings:
the report is made from the good ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from agents.report.inputs import Inputs

__all__ = ["add_parsers", "inventory_export", "report"]

log = logging.getLogger("camwatch")

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``report`` and ``inventory export``."""
    r = sub.add_parser(
        "report",
        help="the phase-out ledger: DIR/ledger.csv and DIR/index.html (inventory, alerts, register)",
    )
    _sources(r)
    r.add_argument(
        "--flows", metavar="FILE", nargs="+", help="flow records (JSON lines), for the destinations"
    )
    r.add_argument(
        "--as-of", metavar="YYYY-MM-DD", type=_day, help="the day overdue is judged on (default: today, UTC)"
    )
    r.add_argument("--out", metavar="DIR", required=True, help="the directory to write (created if missing)")

    inv = sub.add_parser("inventory", help="the device inventory (export it for a CMDB, a SIEM, NetBox)")
    inv_sub = inv.add_subparsers(dest="inventory_command", required=True, metavar="INVENTORY_COMMAND")
    e = inv_sub.add_parser("export", help="the inventory as JSON, CSV or NetBox's device import CSV")
    _sources(e, alerts=False)
    e.add_argument("--format", choices=("json", "csv", "netbox"), default="json", help="(default: json)")
    e.add_argument("--out", metavar="FILE", default="-", help="where to write (default: stdout)")
    e.add_argument("--all", action="store_true", help="every device, not only the watched and listed ones")
    e.add_argument("--netbox-site", metavar="NAME", help="NetBox site (default: the site's name)")
    e.add_argument(
        "--netbox-role",
        metavar="ROLE",
        default="CCTV camera",
        help="NetBox role of camera and recorder makers' devices (routers: Router, others: Unclassified)",
    )


def _sources(p: argparse.ArgumentParser, alerts: bool = True) -> None:
    p.add_argument(
        "--inventory", metavar="FILE", help="an inventory: replay --inventory, inventory_file, state"
    )
    if alerts:
        p.add_argument("--alerts", metavar="FILE", nargs="+", help="alert records (JSON lines)")
    p.add_argument("--register", metavar="FILE", help="the asset register (CSV, docs/register.md)")
    p.add_argument("--config", metavar="FILE", help="an agent configuration: read its state and output files")
    p.add_argument("--site", metavar="NAME", help="the site's name on the page (default: the agent's site)")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date: write YYYY-MM-DD") from exc


def report(args: argparse.Namespace, err: TextIO | None = None) -> int:
    """``camwatch report``: write DIR/ledger.csv and DIR/index.html."""
    from agents.report.html import render
    from agents.report.ledger import build, to_csv

    err = err or sys.stderr
    inputs = _gather_or_say(args, err, with_alerts=True)
    if isinstance(inputs, int):
        return inputs
    as_of = args.as_of or datetime.now(UTC).date()
    ledger = build(inputs, as_of)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "ledger.csv", to_csv(ledger))
        _write(out / "index.html", render(ledger))
    except OSError as exc:
        err.write(f"camwatch: error: {out}: cannot write the report ({exc.strerror or exc})\n")
        return EXIT_INPUT
    if not ledger.rows:
        err.write(
            "camwatch: the ledger is empty: no watched device in the inventory and no device in the register "
            "(an empty site, or the wrong files)\n"
        )
    overdue = ledger.count("overdue", "yes")
    err.write(
        f"camwatch: {len(ledger.rows)} devices, {overdue} overdue; wrote {out / 'ledger.csv'} and "
        f"{out / 'index.html'}\n"
    )
    return EXIT_OK


def inventory_export(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``camwatch inventory export``."""
    from agents.report.export import select, to_csv, to_json, to_netbox

    err = err or sys.stderr
    inputs = _gather_or_say(args, err, with_alerts=False)
    if isinstance(inputs, int):
        return inputs
    devices = select(inputs.devices, inputs.register, args.all)
    if args.format == "netbox":
        site = args.netbox_site or inputs.site
        if not site:
            err.write(
                "camwatch: error: NetBox needs a site: give --netbox-site NAME (or --site, or --config)\n"
            )
            return EXIT_USAGE
        text = to_netbox(devices, site, args.netbox_role)
    else:
        text = to_json(devices) if args.format == "json" else to_csv(devices)
    try:
        if args.out == "-":
            (out or sys.stdout).write(text)
        else:
            _write(Path(args.out), text)
    except OSError as exc:
        err.write(f"camwatch: error: {args.out}: cannot write ({exc.strerror or exc})\n")
        return EXIT_INPUT
    if not devices:
        err.write(
            "camwatch: no device to export (none watched or listed in the register; --all for every one)\n"
        )
    return EXIT_OK


class _Usage(Exception):
    """Arguments that do not make a report."""


def _gather_or_say(args: argparse.Namespace, err: TextIO, *, with_alerts: bool) -> Inputs | int:
    """The inputs, or the exit code after saying in one line what is wrong with them."""
    from agents.report.inputs import InputError

    try:
        return _gather(args, with_alerts=with_alerts)
    except _Usage as exc:
        err.write(f"camwatch: error: {exc}\n")
        return EXIT_USAGE
    except InputError as exc:
        err.write(f"camwatch: error: {exc}\n")
        return EXIT_INPUT


def _gather(args: argparse.Namespace, *, with_alerts: bool) -> Inputs:
    from agents.report.inputs import (
        InputError,
        Inputs,
        apply_containment,
        containment_states,
        read_alerts,
        read_flows,
        read_inventory,
        read_register,
        rotated,
        state_inventory,
    )

    inputs = Inputs()
    inventory: Path | None = Path(args.inventory) if args.inventory else None
    alerts = [Path(p) for p in (getattr(args, "alerts", None) or ())]
    flows = [Path(p) for p in (getattr(args, "flows", None) or ())]
    register = Path(args.register) if args.register else None
    site = args.site or ""
    containment: dict[str, str] | None = None
    if args.config:
        from agents.config import ConfigError, load_config

        try:
            config = load_config(args.config, warnings_level=logging.DEBUG)  # the agent's warnings: -v
        except ConfigError as exc:
            raise InputError(
                args.config, "is not a valid agent configuration", str(exc).replace("\n", "; ")
            ) from exc
        site = site or config.site
        if inventory is None:
            # The inventory file the agent replaces every minute, else its saved state.
            inventory = config.inventory_file
            if inventory is None or not inventory.is_file():
                inventory = state_inventory(config.state_dir)
                if not inventory.exists():
                    # Most often a fresh install: the path is the agent's own, it has not saved there yet.
                    raise InputError(
                        inventory,
                        "does not exist yet: this configuration's agent has not saved its inventory there",
                        "start the agent (it saves every minute) and try again, or give --inventory FILE",
                    )
        if not alerts and config.alerts_file is not None and config.alerts_file.is_file():
            alerts = [config.alerts_file]
        if not flows and config.flows_file is not None:
            flows = rotated(config.flows_file)
        register = register or config.asset_register
        if config.containment.active:
            from agents.contain.files import ContainmentFiles

            book = ContainmentFiles.at(config.state_dir, config.containment.audit_file).book
            containment = containment_states(config.containment.mode, book, datetime.now(UTC).timestamp())
    if inventory is None:
        raise _Usage(
            "give --inventory FILE and --alerts FILE, or --config FILE of an agent"
            if with_alerts
            else "give --inventory FILE, or --config FILE of an agent"
        )
    if with_alerts and not alerts and not args.config:
        raise _Usage("give --alerts FILE (the alerts of the same site and period as the inventory)")
    inputs.devices = read_inventory(inventory)
    if containment is not None:
        apply_containment(inputs.devices, containment)
    inputs.sources["inventory"] = str(inventory)
    if alerts:
        inputs.alerts, skipped = read_alerts(alerts)
        inputs.skipped_lines += skipped
        inputs.sources["alerts"] = ", ".join(str(p) for p in alerts)
    if flows:
        inputs.flows, skipped = read_flows(flows)
        inputs.skipped_lines += skipped
        inputs.sources["flows"] = ", ".join(str(p) for p in flows)
    if register is not None:
        inputs.register = read_register(register)
        inputs.sources["register"] = str(register)
    inputs.site = site
    return inputs


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)
