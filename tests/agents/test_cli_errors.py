"""Bad input at the command line gets one line, never a traceback: `camwatch` run as a user runs it.

Each case is a real `camwatch` process given one bad argument or file. It must exit non-zero with exactly one
line on stderr that names what is wrong, where (the option or the file) and the fix, and no traceback.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import scenario
from monitor.pcapwrite import pcap_bytes

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"

# prctl(PR_CAPBSET_DROP) and the capabilities that let root read any file.
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _as_an_ordinary_reader() -> None:
    """In the child, before exec: root gives up reading files regardless of their mode, so a chmod 000 file
    is unreadable to it as to any user (the test runs as root in CI)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def camwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        preexec_fn=_as_an_ordinary_reader,
    )


@dataclass(frozen=True)
class Case:
    """A command line (``{name}`` stands for a file of the fixture) and what its one line must say."""

    args: tuple[str, ...]
    code: int
    says: tuple[str, ...]  # what is wrong, where and the fix: each must be in the line


CASES = {
    # arguments
    "max-flows-0": Case(("replay", "{pcap}", "--max-flows", "0"), 2, ("--max-flows", "out of range", "1 to")),
    "max-flows-text": Case(
        ("replay", "{pcap}", "--max-flows", "many"), 2, ("--max-flows", "not a whole number", "e.g.")
    ),
    "batch-size-0": Case(
        ("replay", "{pcap}", "--batch-size", "0"), 2, ("--batch-size", "out of range", "1 to")
    ),
    "gateway-slash": Case(
        ("replay", "{pcap}", "--gateway", "gw/1"), 2, ("--gateway", "'gw/1'", "e.g. --gateway gw-1")
    ),
    "gateway-empty": Case(("replay", "{pcap}", "--gateway", ""), 2, ("--gateway", "is empty", "e.g.")),
    "no-capture": Case(("replay",), 2, ("PCAP", "required", "--help")),
    "unknown-option": Case(("replay", "{pcap}", "--alrets", "x"), 2, ("--alrets", "unrecognized", "--help")),
    "unknown-command": Case(("replya", "{pcap}"), 2, ("replya", "invalid choice", "replay")),
    "trigger-negative": Case(
        ("lab", "up", "--trigger-every", "-5"), 2, ("--trigger-every", "above 0", "e.g.")
    ),
    "probe-interval-nan": Case(
        ("lab", "up", "--probe-interval", "nan"), 2, ("--probe-interval", "above 0", "e.g.")
    ),
    "mqtt-no-port": Case(("lab", "up", "--mqtt", "broker"), 2, ("--mqtt", "HOST:PORT", "e.g.")),
    "lab-prefix": Case(("lab", "status", "--prefix", "a/b"), 1, ("a/b",)),
    # outputs
    "alerts-missing-dir": Case(
        ("replay", "{pcap}", "--alerts", "{missing}/alerts.jsonl"),
        2,
        ("--alerts", "{missing}", "does not exist", "create it"),
    ),
    "flows-directory": Case(
        ("replay", "{pcap}", "--flows", "{dir}"),
        2,
        ("--flows", "{dir}", "is a directory", "{dir}/flows.jsonl"),
    ),
    "inventory-directory": Case(
        ("replay", "{pcap}", "--inventory", "{dir}"),
        2,
        ("--inventory", "{dir}", "is a directory", "{dir}/inventory.json"),
    ),
    "inventory-in-a-file": Case(
        ("replay", "{pcap}", "--inventory", "{pcap}/inv.json"), 2, ("--inventory", "not a directory", "path")
    ),
    "output-is-the-capture": Case(
        ("replay", "{pcap}", "--flows", "{pcap}"), 2, ("--flows", "{pcap}", "capture", "a file of its own")
    ),
    "two-outputs-one-file": Case(
        ("replay", "{pcap}", "--flows", "{dir}/x.json", "--inventory", "{dir}/x.json"),
        2,
        ("--inventory", "--flows", "a file of its own"),
    ),
    "alerts-unwritable": Case(
        ("replay", "{pcap}", "--alerts", "{unreadable}"), 2, ("--alerts", "{unreadable}", "permission denied")
    ),
    # captures
    "capture-missing": Case(
        ("replay", "{missing}"), 1, ("{missing}", "no such capture file", "check the path")
    ),
    "capture-directory": Case(("replay", "{dir}"), 1, ("{dir}", "is a directory", "{dir}/*.pcap")),
    "capture-unreadable": Case(
        ("replay", "{unreadable}"), 1, ("{unreadable}", "permission denied", "a user who may read it")
    ),
    "capture-empty": Case(("replay", "{empty}"), 1, ("{empty}", "empty input", "offset 0")),
    "capture-not-a-capture": Case(("replay", "{text}"), 1, ("{text}", "not a pcap or pcapng file")),
    # policies
    "policy-missing": Case(
        ("replay", "{pcap}", "--policy", "{missing}"), 2, ("{missing}", "no such site policy")
    ),
    "policy-directory": Case(("replay", "{pcap}", "--policy", "{dir}"), 2, ("{dir}", "is a directory")),
    "policy-unreadable": Case(
        ("replay", "{pcap}", "--policy", "{unreadable}"), 2, ("{unreadable}", "permission denied")
    ),
    "policy-latin-1": Case(
        ("replay", "{pcap}", "--policy", "{latin1}"), 2, ("{latin1}", "not UTF-8", "UTF-8")
    ),
    "policy-utf-16": Case(("replay", "{pcap}", "--policy", "{utf16}"), 2, ("{utf16}", "UTF-16", "UTF-8")),
    "policy-deep": Case(("replay", "{pcap}", "--policy", "{deep}"), 2, ("{deep}", "nested too deeply")),
    "policy-typo": Case(
        ("replay", "{pcap}", "--policy", "{typo}"), 2, ("{typo}", "alow", "did you mean 'allow'")
    ),
    "policy-is-a-capture": Case(("replay", "{pcap}", "--policy", "{pcap}"), 2, ("{pcap}", "not UTF-8")),
    # check-config and run
    "check-missing": Case(("check-config", "{missing}"), 2, ("{missing}", "no such", "check the path")),
    "check-directory": Case(("check-config", "{dir}"), 2, ("{dir}", "is a directory", "{dir}/agent.yaml")),
    "check-unreadable": Case(("check-config", "{unreadable}"), 2, ("{unreadable}", "permission denied")),
    "check-yaml-syntax": Case(
        ("check-config", "{syntax}"), 2, ("configuration", "{syntax}:2:", "invalid YAML")
    ),
    "check-agent-key": Case(
        ("check-config", "{agent_typo}"), 2, ("{agent_typo}", "metrics.prot", "did you mean 'port'")
    ),
    "run-missing": Case(("run", "--config", "{missing}"), 2, ("{missing}", "no such configuration file")),
    "run-directory": Case(("run", "--config", "{dir}"), 2, ("{dir}", "is a directory", "{dir}/agent.yaml")),
    "run-unreadable": Case(("run", "--config", "{unreadable}"), 2, ("{unreadable}", "permission denied")),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("cli-errors")
    paths = {
        "pcap": base / "one.pcap",
        "dir": base / "adir",
        "missing": base / "missing",
        "unreadable": base / "unreadable",
        "empty": base / "empty.pcap",
        "text": base / "notes.txt",
        "latin1": base / "latin1.yaml",
        "utf16": base / "utf16.yaml",
        "deep": base / "deep.yaml",
        "typo": base / "typo.yaml",
        "syntax": base / "syntax.yaml",
        "agent_typo": base / "agent.yaml",
    }
    paths["pcap"].write_bytes(pcap_bytes(list(scenario.site_packets(scenario.demo_shape()))[:1]))
    paths["dir"].mkdir()
    paths["unreadable"].write_text("site: depot-7\n")
    paths["unreadable"].chmod(0)
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("meeting notes, not a capture\n")
    paths["latin1"].write_bytes("site: dépôt\n".encode("latin-1"))
    paths["utf16"].write_bytes("site: depot\n".encode("utf-16"))
    paths["deep"].write_bytes(b"site: a\nallow: " + b"[" * 100_000 + b"]" * 100_000)
    paths["typo"].write_text("site: depot-7\nalow: []\n")
    paths["syntax"].write_text("site: depot-7\ncapture: [eth1\nmetrics: {port: 1}\n")
    paths["agent_typo"].write_text("site: depot-7\ncapture: {interfaces: [eth1]}\nmetrics: {prot: 9100}\n")
    return {name: str(path) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(name: str, files: dict[str, str], tmp_path: Path) -> None:
    case = CASES[name]
    res = camwatch(*(arg.format(**files) for arg in case.args), cwd=tmp_path)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == case.code, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    for part in case.says:
        assert part.format(**files) in lines[0], lines[0]
    assert res.stdout == ""


def test_the_unreadable_file_is_unreadable(files: dict[str, str], tmp_path: Path) -> None:
    """The cases above read a chmod 000 file as a user who cannot (root included): check that holds."""
    res = subprocess.run(
        [sys.executable, "-c", f"open({files['unreadable']!r}).read()"],
        capture_output=True,
        text=True,
        preexec_fn=_as_an_ordinary_reader,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode != 0 and "PermissionError" in res.stderr


def test_a_closed_stdout_pipe_ends_quietly(files: dict[str, str], tmp_path: Path) -> None:
    """`camwatch replay big.pcap | head -1`: the reader leaves; camwatch stops without a traceback."""
    from lab import floods

    # 1,250 egress incidents: far more alert lines than a pipe holds (64 kB), so camwatch is still writing
    # when the reader leaves, however fast it ran (the demo's 14 kB could all be written before).
    big = tmp_path / "big.pcap"
    big.write_bytes(pcap_bytes(list(floods.flows(20_000))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "replay", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert first.startswith(b"{") and "Traceback" not in err and "Exception" not in err


def test_a_full_disk_while_writing_is_one_line(files: dict[str, str], tmp_path: Path) -> None:
    demo = tmp_path / "demo.pcap"
    demo.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    res = camwatch("replay", str(demo), "--flows", "/dev/full", cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        "camwatch: error: --flows /dev/full: no space left on the device; free some space or write "
        "somewhere else"
    ]


def test_verbose_after_the_command(files: dict[str, str], tmp_path: Path) -> None:
    res = camwatch("replay", files["pcap"], "-v", cwd=tmp_path)
    assert res.returncode == 0 and "DEBUG" in res.stderr
    quiet = camwatch("replay", files["pcap"], cwd=tmp_path)
    assert quiet.returncode == 0 and "DEBUG" not in quiet.stderr


def test_several_outputs_may_go_to_dev_null(files: dict[str, str], tmp_path: Path) -> None:
    # Nothing is emptied or overwritten on a character device: benchmarks/replay.py times a replay so.
    res = camwatch("replay", files["pcap"], "--flows", "/dev/null", "--alerts", "/dev/null", cwd=tmp_path)
    assert res.returncode == 0 and "camwatch:" in res.stderr and "error" not in res.stderr
