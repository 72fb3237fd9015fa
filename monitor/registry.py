"""What camwatch knows: every protocol (``monitor/analyzers/*``) and every rule (``monitor/rules/*``).

Both are found by module, so adding a protocol or a rule is adding one module: an analyzer module
that ends with a ``PROTOCOLS`` tuple of :class:`~monitor.protocol.ProtocolSpec` (or, for a link-layer
protocol such as ARP, ``LINK_PROTOCOLS`` of :class:`~monitor.protocol.LinkSpec`), a rule module that
declares ``RULES`` (its rules' ids, names, severities) and, when the engine judges them, a
:class:`~monitor.rules.RuleModule` subclass naming the event types it consumes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import monitor.analyzers
import monitor.rules
from monitor.alerts import Rule
from monitor.decode import PROTO_TCP, PROTO_UDP
from monitor.protocol import LinkSpec, ProtocolSpec
from monitor.rules import RuleModule


def _modules(package: ModuleType) -> Iterator[ModuleType]:
    """The package's modules in name order (private ones, ``_x``, left out)."""
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{package.__name__}.{info.name}")


@dataclass(frozen=True, slots=True)
class Protocols:
    """The protocol specs, indexed the way the dispatcher asks."""

    specs: dict[str, ProtocolSpec]
    ports: dict[int, dict[int, tuple[str, ...]]]
    """Transport number -> port -> labels expected there (declaration order)."""
    guesses: dict[int, tuple[tuple[str, Callable[[bytes], bool]], ...]]
    """Transport number -> (label, sniff) in rank order: content guesses when the ports say nothing."""
    control: frozenset[str]
    after_label: dict[str, int]
    mux_rank: dict[str, int]
    link: dict[int, LinkSpec]
    """Ethertype -> the link-layer protocol (not IP) read there."""

    @classmethod
    def of(cls, specs: list[ProtocolSpec], link: list[LinkSpec] | None = None) -> Protocols:
        by_name: dict[str, ProtocolSpec] = {}
        for spec in specs:
            if spec.name in by_name:
                raise ValueError(f"protocol {spec.name} is declared twice")
            by_name[spec.name] = spec
        ports: dict[int, dict[int, tuple[str, ...]]] = {PROTO_UDP: {}, PROTO_TCP: {}}
        guesses: dict[int, tuple[tuple[str, Callable[[bytes], bool]], ...]] = {}
        for transport, port_attr, guess_attr in (
            (PROTO_UDP, "udp_ports", "udp_guess"),
            (PROTO_TCP, "tcp_ports", "tcp_guess"),
        ):
            table = ports[transport]
            ranked: list[tuple[int, str, Callable[[bytes], bool]]] = []
            for spec in specs:
                for port in getattr(spec, port_attr):
                    table[port] = (*table.get(port, ()), spec.name)
                rank = getattr(spec, guess_attr)
                sniff = (spec.tcp_sniff or spec.sniff) if transport == PROTO_TCP else spec.sniff
                if rank is not None and sniff is not None:
                    ranked.append((rank, spec.name, sniff))
            ranked.sort(key=lambda item: (item[0], item[1]))
            guesses[transport] = tuple((name, sniff) for _, name, sniff in ranked)
        for ip_proto in sorted({s.ip_protocol for s in specs if s.ip_protocol is not None}):
            over_ip = [s for s in specs if s.ip_protocol == ip_proto and s.ip_guess is not None and s.sniff]
            over_ip.sort(key=lambda s: (s.ip_guess or 0, s.name))
            guesses[ip_proto] = tuple((s.name, s.sniff) for s in over_ip if s.sniff is not None)
        link_by_type: dict[int, LinkSpec] = {}
        for lspec in link or ():
            if lspec.ethertype in link_by_type:
                raise ValueError(f"ethertype {lspec.ethertype:#06x} is declared twice")
            link_by_type[lspec.ethertype] = lspec
        return cls(
            specs=by_name,
            ports=ports,
            guesses=guesses,
            control=frozenset(s.name for s in specs if s.control),
            after_label={s.name: s.after_label for s in specs if s.after_label is not None},
            mux_rank={s.name: s.mux_rank for s in specs if s.mux_rank is not None},
            link=link_by_type,
        )


@cache
def protocols() -> Protocols:
    """Every protocol declared by a module of ``monitor/analyzers``."""
    specs: list[ProtocolSpec] = []
    link: list[LinkSpec] = []
    for module in _modules(monitor.analyzers):
        specs.extend(spec for spec in getattr(module, "PROTOCOLS", ()) if isinstance(spec, ProtocolSpec))
        link.extend(spec for spec in getattr(module, "LINK_PROTOCOLS", ()) if isinstance(spec, LinkSpec))
    return Protocols.of(specs, link)


@dataclass(frozen=True, slots=True)
class Rulebook:
    """Every rule (the catalogue) and the rule modules the engine runs."""

    rules: dict[str, Rule]
    modules: tuple[type[RuleModule], ...]


@cache
def rulebook() -> Rulebook:
    """Every rule declared by a module of ``monitor/rules``, and its judging class if it has one."""
    rules: dict[str, Rule] = {}
    modules: list[type[RuleModule]] = []
    for module in _modules(monitor.rules):
        for rule in getattr(module, "RULES", ()):
            if not isinstance(rule, Rule):
                continue
            if rule.id in rules:
                raise ValueError(f"rule {rule.id} is declared twice")
            rules[rule.id] = rule
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, RuleModule)
                and value is not RuleModule
                and value.__module__ == module.__name__
            ):
                modules.append(value)
    return Rulebook(rules, tuple(modules))


#: Rule id -> rule, for every rule camwatch can raise (the engine's and the stream probe's).
RULES: dict[str, Rule] = rulebook().rules
