"""The replay demo's files and what it prints.

`python -m lab.demo OUT.pcap` writes the demo site capture; `python -m lab.demo --show ALERTS INVENTORY`
prints the alerts `camwatch replay` wrote (time, severity, rule, message) and the devices it found, with why
each is named after its maker. `lab/demo_live.py` prints its alerts the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from lab import scenario
from monitor.alerts import SEVERITY_NAMES
from monitor.alerts import severity_name as severity_word
from monitor.pcapwrite import PcapWriter

# Brands sold under another maker's hardware: a camera of the brand carries the maker's MAC blocks and
# firmware, so camwatch names the maker (docs/design.md §7). Brand key -> (brand, maker, why).
OEM_BRANDS = {
    "ezviz": (
        "EZVIZ",
        "Hikvision",
        "EZVIZ is Hikvision's consumer brand: its cameras carry Hikvision MAC blocks and firmware (SADP, the "
        "Hikvision-Webs banner) and use the EZVIZ cloud, so camwatch names the maker, Hikvision",
    ),
    "imou": (
        "Imou",
        "Dahua",
        "Imou is Dahua's consumer brand: its cameras run Dahua firmware and use Dahua's Easy4IP P2P cloud",
    ),
}


SEVERITIES = tuple(SEVERITY_NAMES[number] for number in sorted(SEVERITY_NAMES, reverse=True))
"""Every severity name an alert can carry (``monitor.alerts.SEVERITY_NAMES``), the most severe first."""
SEVERITY_WIDTH = max(map(len, SEVERITIES))


def severity_name(alert: Mapping[str, Any]) -> str:
    """The name of the alert's ``event.severity`` (one of :data:`SEVERITIES`), ``?`` without one."""
    severity = alert.get("event", {}).get("severity")
    return severity_word(severity) if isinstance(severity, int) else "?"


def alert_line(alert: Mapping[str, Any]) -> str:
    """One alert for a terminal: time, severity, rule and the message (what happened and what to do)."""
    when = str(alert.get("@timestamp", ""))[11:23]  # HH:MM:SS.mmm of the capture
    return f"{when}  {severity_name(alert):<{SEVERITY_WIDTH}}  {alert['rule']['id']:<30} {alert['message']}"


def write_demo(path: Path) -> int:
    """Write the demo capture (deterministic: the same bytes every time); returns the packet count."""
    writer = PcapWriter()
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(writer.header())
        for ts, frame in scenario.site_packets(scenario.demo_shape()):
            fh.write(writer.record(ts, frame))
            count += 1
    return count


def show(alerts: Iterable[Mapping[str, Any]], inventory: Iterable[Mapping[str, Any]], out: TextIO) -> None:
    """Print the replay's alerts and its watched devices, explaining OEM names where the alerts use them."""
    alerts = list(alerts)
    out.write(f"Alerts (severity: {', '.join(SEVERITIES[:-1])} or {SEVERITIES[-1]}):\n")
    for alert in alerts:
        out.write(f"  {alert_line(alert)}\n")
    counts = {name: sum(severity_name(a) == name for a in alerts) for name in SEVERITIES}
    out.write(f"  {len(alerts)} alerts: " + ", ".join(f"{n} {name}" for name, n in counts.items()) + "\n")
    out.write("\nWatched devices (who made them, and how camwatch knows):\n")
    for dev in inventory:
        if not dev.get("watched"):
            continue
        evidence = ", ".join(dict.fromkeys(str(e.get("kind")) for e in dev.get("evidence", []))) or "none"
        maker = dev.get("manufacturer") or "unknown maker"
        ips = ", ".join(dev.get("ips", [])[:2])
        out.write(f"  {ips:<12} {dev.get('mac')}  {maker} (evidence: {evidence})\n")
    for brand, maker, why in OEM_BRANDS.values():
        # Say why a device the alerts call by its maker talks to its brand's cloud.
        if any(brand in str(a.get("message")) and f"{maker} device" in str(a.get("message")) for a in alerts):
            out.write(f"\nWhy '{maker} device' when the traffic says {brand}: {why}.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the camwatch demo site capture, or show a replay's.")
    parser.add_argument("out", type=Path, nargs="?", help="where to write the demo capture")
    parser.add_argument(
        "--show",
        nargs=2,
        type=Path,
        metavar=("ALERTS", "INVENTORY"),
        help="print a replay's alerts and devices",
    )
    args = parser.parse_args(argv)
    if args.show:
        alerts_path, inventory_path = args.show
        alerts = [json.loads(line) for line in alerts_path.read_text(encoding="utf-8").splitlines() if line]
        show(alerts, json.loads(inventory_path.read_text(encoding="utf-8")), sys.stdout)
        return 0
    if args.out is None:
        parser.error("give OUT.pcap to write the capture, or --show ALERTS INVENTORY")
    count = write_demo(args.out)
    sys.stderr.write(f"wrote {args.out} ({count} packets)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
