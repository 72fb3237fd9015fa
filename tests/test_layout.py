"""The package layout: `agents/` and `monitor/` are what runs on a gateway, the camera lab is the `lab`
package beside them. Nothing a gateway runs imports the lab, except `camwatch lab` itself (lazily, in its
subcommand), and without the lab's extra or package that command says in one line what to install."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import scenario
from monitor.pcapwrite import pcap_bytes

ROOT = Path(__file__).parents[1]
GATEWAY_PACKAGES = ("agents", "monitor")
#: The one place the gateway's code may import the lab: the `camwatch lab` subcommand, inside its function.
ALLOWED = (Path("agents/cli.py"), "lab_command")
IMPORTERS = frozenset({"import_module", "__import__", "find_spec"})


def _is_lab(module: str | None) -> bool:
    return module is not None and module.partition(".")[0] == "lab"


def _imports_lab_by_name(call: ast.Call) -> bool:
    """`importlib.import_module("lab...")`, `__import__("lab")`, `find_spec("lab.x")`."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    arg = call.args[0] if call.args else None
    return (
        name in IMPORTERS
        and isinstance(arg, ast.Constant)
        and isinstance(arg.value, str)
        and _is_lab(arg.value)
    )


def lab_imports(tree: ast.AST) -> Iterator[tuple[int, str | None]]:
    """(line, enclosing function or None) of each import of `lab` in a module: `import lab...`,
    `from lab... import`, and importlib calls with a literal `lab...` name."""

    def walk(node: ast.AST, function: str | None) -> Iterator[tuple[int, str | None]]:
        for child in ast.iter_child_nodes(node):
            if (
                (isinstance(child, ast.Import) and any(_is_lab(a.name) for a in child.names))
                or (isinstance(child, ast.ImportFrom) and child.level == 0 and _is_lab(child.module))
                or (isinstance(child, ast.Call) and _imports_lab_by_name(child))
            ):
                yield child.lineno, function
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            yield from walk(child, inner)

    return walk(tree, None)


def gateway_modules() -> list[Path]:
    return sorted(p for pkg in GATEWAY_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_import_finder_sees_every_form() -> None:
    # The guard below is only as good as this: each way of importing the lab is found, others are not.
    source = (
        "import lab\n"
        "import os, lab.scenario as s\n"
        "from lab import synth\n"
        "from lab.lab import Lab\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('lab.video')\n"
        "    class C:\n"
        "        def g(self):\n"
        "            __import__('lab')\n"
        "import labels\n"
        "from .lab import x\n"
        "from monitor import lab\n"
        "importlib.import_module('labs')\n"
    )
    assert list(lab_imports(ast.parse(source))) == [
        (1, None),
        (2, None),
        (3, None),
        (4, None),
        (7, "f"),
        (10, "g"),
    ]


def test_gateway_code_does_not_import_the_lab() -> None:
    modules = gateway_modules()
    assert len(modules) > 20, modules  # the walk found the packages
    found = {
        (path.relative_to(ROOT), line, function)
        for path in modules
        for line, function in lab_imports(ast.parse(path.read_bytes(), str(path)))
    }
    stray = sorted((str(p), line) for p, line, function in found if (p, function) != ALLOWED)
    assert stray == [], f"gateway code imports the lab (only `camwatch lab` may, lazily): {stray}"
    # And the CLI's own import is there, inside the subcommand (not at module level: every command runs it).
    assert [(p, function) for p, _, function in found] == [ALLOWED]


def test_no_lab_code_is_left_under_agents() -> None:
    assert not (ROOT / "agents" / "lab").exists()
    lab_modules = {p.name for p in (ROOT / "lab").glob("*.py")} - {"__init__.py"}
    assert {"lab.py", "synth.py", "scenario.py", "rtsp_server.py", "webrtc.py"} <= lab_modules

    # A lab module copied back under agents/ (same file name, same docstring line) would be lab code there.
    def head(path: Path) -> tuple[str, str]:
        return path.name, path.read_text().partition("\n")[0]

    heads = {head(p) for p in (ROOT / "lab").glob("*.py")}
    copies = [str(p.relative_to(ROOT)) for p in (ROOT / "agents").rglob("*.py") if head(p) in heads]
    assert copies == [], copies
    # Tests mirror the packages: the lab's tests live in tests/lab.
    assert (
        not (ROOT / "tests" / "agents" / "lab").exists()
        and (ROOT / "tests" / "lab" / "test_lab.py").is_file()
    )


def test_the_distribution_carries_the_lab_with_its_own_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "lab*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "lab" in project["tool"]["mypy"]["packages"]
    extras = project["project"]["optional-dependencies"]
    names = {extra: {re.split(r"[\[<>=~!; ]", r)[0] for r in reqs} for extra, reqs in extras.items()}
    assert {"av", "aiortc"} <= names["lab"]
    # A gateway installs the agent (and maybe its stream probe): neither brings the lab's WebRTC stack.
    assert "aiortc" not in names["agent"] | names["stream"] | set(project["project"]["dependencies"])
    # deploy/install.sh installs `camwatch[$extras]`: every value it gives them leaves the lab out.
    installer = (ROOT / "deploy" / "install.sh").read_text()
    assert 'install --quiet "camwatch[$extras] @' in installer
    choices = re.findall(r'extras="([^"]*)"', installer)
    assert choices == ["agent", "agent,stream"], choices
    container = (ROOT / "deploy" / "container" / "Containerfile").read_text()
    assert '"/src[agent]"' in container


def camwatch_without(blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    """`camwatch ARGS` in a fresh interpreter where the `blocked` modules cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from agents.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


@pytest.mark.parametrize("command", ["status", "up", "trigger"])
def test_lab_without_its_extra_says_what_to_install(command: str, tmp_path: Path) -> None:
    done = camwatch_without(("av", "aiortc"), "lab", command, "--prefix", "cwnx", "--dir", str(tmp_path))
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [
        "camwatch: error: the camera lab needs av and aiortc: pip install 'camwatch[lab]' "
        "(scripts/demo installs them)"
    ]
    assert done.stdout == ""


def test_lab_without_its_package_says_what_to_install(tmp_path: Path) -> None:
    done = camwatch_without(("lab",), "lab", "status", "--prefix", "cwnx", "--dir", str(tmp_path))
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [
        "camwatch: error: the camera lab is not installed: pip install 'camwatch[lab]'"
    ]


def test_lab_down_needs_only_the_package(tmp_path: Path) -> None:
    # Tearing a lab down must work whatever was uninstalled since it came up.
    done = camwatch_without(("av", "aiortc"), "lab", "down", "--prefix", "cwnx", "--dir", str(tmp_path))
    assert done.returncode == 0, done
    assert done.stdout == "lab cwnx: nothing was running\n"


def test_other_commands_run_without_the_lab(tmp_path: Path) -> None:
    # What a gateway runs loads neither the lab nor its dependencies.
    policy = ROOT / "examples" / "site-policy.yaml"
    done = camwatch_without(("lab", "av", "aiortc"), "check-config", str(policy))
    assert done.returncode == 0, done
    assert ": OK: site " in done.stdout
    # A capture written here (the lab's scenario is test tooling), replayed where the lab cannot load.
    pcap, flows = tmp_path / "site.pcap", tmp_path / "flows.jsonl"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    done = camwatch_without(
        ("lab", "av", "aiortc"), "replay", str(pcap), "--alerts", "-", "--flows", str(flows)
    )
    assert done.returncode == 0, done
    assert flows.read_text().count("\n") >= 10 and '"rule"' in done.stdout


def test_every_gateway_module_imports_without_the_lab() -> None:
    # The runtime side of the AST guard above: a fresh interpreter where `lab` cannot be imported loads every
    # module of agents/ and monitor/.
    code = (
        "import importlib, pkgutil, sys\n"
        "sys.modules['lab'] = None\n"
        "n = 0\n"
        f"for pkg in {GATEWAY_PACKAGES!r}:\n"
        "    for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "        n += 1\n"
        "print(n)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    # Every module and subpackage (the top-level packages themselves are imported, not counted).
    assert int(done.stdout) == len(gateway_modules()) - len(GATEWAY_PACKAGES)
