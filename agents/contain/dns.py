"""The DNS side of containment: the vendor-cloud catalogue as a sinkhole for the site's resolver.

Sans-I/O text generators for `camwatch contain dns` (docs/containment.md, "DNS"):

- ``rpz``: a Response Policy Zone (zone ``camwatch.rpz.``) answering NXDOMAIN (``CNAME .``) for every name
  of the catalogue (monitor/vendors/data/clouds.yaml): exact names as they are, ``*.suffix`` as the RPZ
  wildcard (every name strictly below the suffix, as the catalogue means it);
- ``unbound``: the unbound.conf lines that load that zone for the watched devices only: a tag
  ``camwatch`` on the watched networks and hosts (``access-control`` + ``access-control-tag``), the RPZ
  limited to it (``tags:``); never-block hosts inside those networks get an ``access-control`` of their
  own without the tag (unbound uses the most specific netblock), so the recorder still resolves;
- ``dnsmasq``: ``address=/name/`` lines (NXDOMAIN). dnsmasq answers every client alike: run the instance
  that serves the camera VLAN with it, and note that ``address=/suffix/`` also covers the suffix itself.

A resolver sinkhole is a second line, not a replacement for the ruleset: a device with a hard-coded
resolver or address (Xiongmai's 8.8.8.8, endpoints handed out by IP) never asks the site's resolver.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from agents.contain.plan import ContainmentPlan
from monitor.policy import IPNetwork
from monitor.vendors.clouds import CloudCatalogue

__all__ = ["FORMATS", "RPZ_ZONE", "catalogue_names", "render_dnsmasq", "render_rpz", "render_unbound"]

FORMATS: Final = ("rpz", "unbound", "dnsmasq")
RPZ_ZONE: Final = "camwatch.rpz."
TAG: Final = "camwatch"
DEFAULT_ZONE_FILE: Final = "/etc/unbound/camwatch.rpz"


def catalogue_names(catalogue: CloudCatalogue) -> list[tuple[str, str]]:
    """(name, vendor) for every name of the catalogue, sorted; ``*.suffix`` kept as written."""
    names = {name: entry.vendor for entry in catalogue.entries for name in entry.domains}
    return sorted(names.items(), key=lambda item: (item[0].lstrip("*."), item[0]))


def render_rpz(catalogue: CloudCatalogue, serial: int = 1) -> str:
    """The RPZ zone file."""
    lines = [
        f"; camwatch vendor-cloud sinkhole (camwatch contain dns --format rpz), from {catalogue.origin}.",
        "; Every name answers NXDOMAIN (CNAME .). Regenerate after a catalogue update.",
        f"$ORIGIN {RPZ_ZONE}",
        "$TTL 300",
        f"@ IN SOA localhost. hostmaster.localhost. {serial} 3600 600 86400 300",
        "@ IN NS localhost.",
    ]
    for name, vendor in catalogue_names(catalogue):
        lines.append(f"{name} IN CNAME . ; {vendor}")
    return "\n".join(lines) + "\n"


def render_unbound(plan: ContainmentPlan, zone_file: str = DEFAULT_ZONE_FILE) -> str:
    """unbound.conf lines: the RPZ of :func:`render_rpz` for the plan's watched sources only."""
    out = [
        "# camwatch vendor-cloud sinkhole for watched devices (camwatch contain dns --format unbound).",
        f"# The zone: camwatch contain dns --format rpz > {zone_file}",
        "server:",
        f'    define-tag: "{TAG}"',
    ]
    for net in plan.watched:
        out.append(f"    access-control: {net} allow")
        out.append(f'    access-control-tag: {net} "{TAG}"')
    for net in _inside(plan.never_block, plan.watched):
        out.append(f"    access-control: {net} allow  # never-block: not sinkholed")
    out += [
        "rpz:",
        f"    name: {RPZ_ZONE}",
        f"    zonefile: {zone_file}",
        f'    tags: "{TAG}"',
        "    rpz-log: yes",
        f'    rpz-log-name: "{TAG}"',
    ]
    return "\n".join(out) + "\n"


def render_dnsmasq(catalogue: CloudCatalogue) -> str:
    """dnsmasq configuration lines answering NXDOMAIN for the catalogue's names."""
    out = [
        "# camwatch vendor-cloud sinkhole (camwatch contain dns --format dnsmasq): NXDOMAIN for every name.",
        "# dnsmasq answers every client alike: use it in the instance serving the camera VLAN only.",
        "# address=/example.com/ also covers example.com itself (the catalogue's *.example.com does not).",
    ]
    by_vendor: dict[str, list[str]] = {}
    for name, vendor in catalogue_names(catalogue):
        domain = name[2:] if name.startswith("*.") else name
        if domain not in by_vendor.setdefault(vendor, []):
            by_vendor[vendor].append(domain)
    for vendor, domains in sorted(by_vendor.items()):
        out.append(f"# {vendor}")  # comments on lines of their own: dnsmasq has no trailing comments
        out += [f"address=/{domain}/" for domain in domains]
    return "\n".join(out) + "\n"


def _inside(hosts: Iterable[IPNetwork], nets: Iterable[IPNetwork]) -> list[IPNetwork]:
    outer = list(nets)
    return [
        h
        for h in hosts
        if any(h.version == n.version and h != n and h.subnet_of(n) for n in outer)  # type: ignore[arg-type]
    ]
