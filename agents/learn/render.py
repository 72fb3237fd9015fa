"""The learned policy as YAML: the base policy, then the learned allow rules and devices, with comments.

The base policy's keys are written back as they were read (YAML comments of the base are not kept: the
file says which base it came from). Each learned rule is preceded by a comment naming its group, devices,
flows and first and last seen, and each destination carries its own; each added ``known_devices`` entry
says which device it is. The text is read back with the policy's own validation before anyone writes it:
what ``camwatch learn`` writes passes ``camwatch check-config``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import yaml

from agents.learn.propose import LearnedRule, Proposal
from monitor.alerts import iso_timestamp
from monitor.policy import SitePolicy
from monitor.validation import CONTROL_RE

__all__ = ["render_policy"]

#: The base policy's keys in the order they are written (allow and known_devices come last).
_ORDER: Final = ("site", "monitored", "resolvers", "viewers", "allow_private", "name_grace")
_WIDTH: Final = 110


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    return json.dumps(text, ensure_ascii=True)


def _comment(text: str) -> str:
    return CONTROL_RE.sub(" ", text)


def _dump(value: object, indent: int) -> list[str]:
    """Block style outside, flow style for the innermost lists (as people write policies)."""
    text = yaml.safe_dump(value, default_flow_style=None, sort_keys=False, allow_unicode=False, width=_WIDTH)
    if text.startswith(("{", "- {")):  # a collection of scalars only: keep its outer level a block
        text = yaml.safe_dump(
            value, default_flow_style=False, sort_keys=False, allow_unicode=False, width=_WIDTH
        )
    pad = " " * indent
    return [pad + line for line in text.rstrip("\n").split("\n")]


def _ports(rule: LearnedRule) -> str:
    assert rule.ports is not None
    return "[" + ", ".join(f"{port}/{transport}" for port, transport in sorted(rule.ports)) + "]"


def render_policy(
    base: Mapping[object, Any], proposal: Proposal, header: Sequence[str], base_rule_names: Sequence[str] = ()
) -> str:
    """The proposal's policy text; ``base`` is the base policy as parsed, ``header`` the opening comment
    lines. Raises RuntimeError if the result does not validate (a bug: nothing may be written then)."""
    lines = [f"# {_comment(line)}" for line in header]
    for key in _ORDER:
        if key in base and base[key] is not None:
            lines += _dump({key: base[key]}, 0)
    extra = [k for k in base if k not in _ORDER and k not in ("allow", "known_devices")]
    for other in extra:  # none today: every key of a valid policy is in _ORDER
        lines += _dump({other: base[other]}, 0)

    base_allow = base.get("allow")
    rules = list(base_allow) if isinstance(base_allow, list) else []
    if rules or proposal.rules:
        lines.append("allow:")
    if rules:
        lines.append("  # from the base policy")
        for rule in rules:
            dumped = _dump([rule], 2)
            lines += dumped
    taken = {name.casefold() for name in base_rule_names}
    for rule in proposal.rules:
        group = proposal.groups[rule.group]
        first = min(d.first_ns for d in rule.destinations)
        last = max(d.last_ns for d in rule.destinations)
        devices = sorted({dev for d in rule.destinations for dev in d.devices})
        shown = ", ".join(devices[:4]) + (f" and {len(devices) - 4} more" if len(devices) > 4 else "")
        lines.append(f"  # learned for {_comment(group.label)}: {len(devices)} device(s) ({shown}),")
        lines.append(
            f"  #   {rule.flows:,} flows, first seen {iso_timestamp(first)}, last seen {iso_timestamp(last)}"
        )
        name = rule.name
        n = 2
        while name.casefold() in taken:
            name, n = f"{rule.name} ({n})", n + 1
        taken.add(name.casefold())
        lines.append(f"  - name: {_q(name)}")
        lines.append("    to:")
        for d in rule.destinations:
            lines.append(f"      - {_q(d.peer)}  # {_comment(d.comment())}")
        if rule.ports is not None:
            lines.append(f"    ports: {_ports(rule)}")

    base_known = base.get("known_devices")
    known = list(base_known) if isinstance(base_known, list) else []
    known_macs = {_mac_key(k) for k in known if isinstance(k, str)}
    added = [d for d in proposal.known_devices if _mac_key(d.id) not in known_macs]
    if known or added:
        lines.append("known_devices:")
        for item in known:
            lines += _dump([item], 2)
        for info in added:
            lines.append(f"  - {_q(info.id)}  # learned: {_comment(info.describe())}")
    text = "\n".join(lines) + "\n"
    try:
        SitePolicy.from_yaml(text, source="<learned policy>")
    except ValueError as exc:
        raise RuntimeError(f"the learned policy does not validate (a bug in camwatch learn): {exc}") from exc
    return text


def _mac_key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch in "0123456789abcdef")
