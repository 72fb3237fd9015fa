"""The shape of the code: no import cycles, one module per protocol and per rule, events consumed.

Imports are read from the source with ``ast`` (every ``import``, including those inside functions;
imports under ``if TYPE_CHECKING:`` are left out: they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import monitor.events as events_module
from monitor.events import Event, FlowEvent
from monitor.registry import RULES, protocols, rulebook
from monitor.rules import RuleModule

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("monitor", "agents")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(imported name, level) of every import that can run; ``from x import y`` yields x and x.y."""

    def walk(node: ast.AST) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from (item for stmt in child.orelse for item in walk_stmt(stmt))
                continue
            yield from walk_stmt(child)

    def walk_stmt(node: ast.AST) -> Iterator[tuple[str, int]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            yield base, node.level
            for alias in node.names:
                yield f"{base}.{alias.name}" if base else alias.name, node.level
        yield from walk(node)

    yield from walk(tree)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    modules = {
        _module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if ".venv" not in p.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        edges: set[str] = set()
        for target, level in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if level:
                base = package.split(".")
                base = base[: len(base) - (level - 1)]
                target = ".".join([*base, target] if target else base)
            if target in modules and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_monitor_and_agents() -> None:
    graph = import_graph()
    assert graph.get("monitor.engine")  # the graph is really read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    # Function-level imports count: a -> b at module level, b -> a inside a function.
    b = ast.parse("def f():\n    import monitor.a\n")
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import monitor.a\n")
    assert [n for n, _ in _runtime_imports(b)] == ["monitor.a"]
    assert [n for n, _ in _runtime_imports(typed)] == ["typing", "typing.TYPE_CHECKING"]
    assert cycles({"monitor.a": {"monitor.b"}, "monitor.b": {"monitor.a"}}) == [["monitor.a", "monitor.b"]]
    assert cycles({"monitor.a": {"monitor.b"}, "monitor.b": set()}) == []


def test_every_protocol_is_one_module_with_a_complete_spec() -> None:
    reg = protocols()
    assert {"dns", "http", "rtsp", "tls", "stun", "dtls", "srtp", "rtp", "rtcp", "mqtt"} <= set(reg.specs)
    declared_by: dict[str, str] = {}
    for spec in reg.specs.values():
        declared_by[spec.name] = spec.handler.__module__
        assert spec.handler.__module__.startswith("monitor.analyzers."), spec.name
        for kind in spec.emits:
            assert issubclass(kind, Event), (spec.name, kind)
    # Every port and guess names a declared protocol.
    for table in reg.ports.values():
        for names in table.values():
            assert set(names) <= set(reg.specs)
    for guesses in reg.guesses.values():
        assert {name for name, _ in guesses} <= set(reg.specs)


def test_every_rule_is_declared_once_and_judged_rules_consume_events() -> None:
    book = rulebook()
    assert set(RULES) == set(book.rules)
    assert {"egress.unexpected_destination", "device.new", "stream.egress", "stream.covered"} <= set(RULES)
    for module in book.modules:
        assert issubclass(module, RuleModule)
        assert module.consumes, module
        for kind in module.consumes:
            assert issubclass(kind, Event)


def _event_types() -> set[type[Event]]:
    return {
        v
        for v in vars(events_module).values()
        if isinstance(v, type) and issubclass(v, Event) and v not in (Event, FlowEvent)
    }


def test_every_event_type_is_consumed() -> None:
    """An event nobody consumes is dead weight: the engine's own routes and the rules cover them all."""
    from monitor.engine import Engine
    from monitor.policy import SitePolicy
    from monitor.vendors.oui import VendorTable

    engine = Engine(SitePolicy.default(), VendorTable.load())
    routed = set(engine._routes)
    missing = _event_types() - routed
    assert missing == set(), sorted(t.__name__ for t in missing)


def test_every_emitted_event_type_is_consumed_by_a_rule_or_the_site() -> None:
    from monitor.engine import Engine
    from monitor.events import StreamTransport
    from monitor.policy import SitePolicy
    from monitor.vendors.oui import VendorTable

    reg = protocols()
    emitted = {kind for spec in reg.specs.values() for kind in spec.emits}
    emitted |= {kind for spec in reg.link.values() for kind in spec.emits}
    engine = Engine(SitePolicy.default(), VendorTable.load())
    assert emitted - set(engine._routes) == set()
    # StreamTransport feeds both the media expectations and a rule.
    assert StreamTransport in engine._site_routes and StreamTransport in engine._rule_routes


def _repository_texts() -> Iterator[tuple[Path, str]]:
    skip = {".venv", ".git", "corpus", "out", "node_modules"}
    for suffix in ("*.py", "*.md", "*.yml", "*.yaml", "*.sh", "*.toml"):
        for path in ROOT.rglob(suffix):
            if not skip.intersection(path.relative_to(ROOT).parts):
                yield path, path.read_text(encoding="utf-8", errors="replace")


def test_every_document_cited_is_in_the_repository() -> None:
    import re

    cited = re.compile(r"\b((?:docs|deploy|examples|dashboards)/[\w./-]+\.(?:md|ya?ml|json))\b")
    missing = []
    for path, text in _repository_texts():
        if path != Path(__file__) and re.search(r"\bDESIGN(?:\.md| \d| section)", text):
            missing.append(f"{path.relative_to(ROOT)} cites the old shared DESIGN.md")
        for match in cited.finditer(text):
            target = match.group(1).rstrip(".")
            if "*" not in target and not (ROOT / target).exists():
                missing.append(f"{path.relative_to(ROOT)} cites {target}")
    assert (ROOT / "docs" / "design.md").is_file()
    assert missing == []
