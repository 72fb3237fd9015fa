"""The agent configuration's ``containment`` section: defaults, every check, and the fixes it gives."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from agents.config import AgentConfig, ConfigError, ConfigProblem

ROOT = Path(__file__).parents[3]
BASE = """\
site: depot-7
capture: {interfaces: [eth1]}
run_as_user: null
policy:
  monitored: {networks: [10.20.0.0/24]}
  resolvers: [10.20.0.1]
  viewers: [10.20.0.2]
"""


def config(extra: str, tmp_path: Path, base: str = BASE) -> AgentConfig:
    return AgentConfig.from_yaml(base + textwrap.dedent(extra), "agent.yaml", tmp_path)


def problems(extra: str, tmp_path: Path, base: str = BASE) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        config(extra, tmp_path, base)
    return info.value.problems


def test_off_by_default_with_safe_defaults(tmp_path: Path) -> None:
    c = config("", tmp_path).containment
    assert (c.mode, c.active, c.never_block, c.check_interval, c.audit_file) == ("off", False, (), 10.0, None)
    assert c.quarantine.auto_rules == frozenset() and c.quarantine.max_devices == 5
    assert c.quarantine.durations == (3600.0, 21600.0, 86400.0)


def test_a_full_section(tmp_path: Path) -> None:
    c = config(
        """
        containment:
          mode: enforce
          never_block: [10.20.0.5, 10.20.0.128/28]
          check_interval: 30s
          audit_file: audit.jsonl
          name_grace: 10m
          quarantine:
            auto_rules: [p2p.nat_traversal, stream.egress]
            durations: [30m, 2h]
            window: 2d
            max_devices: 3
        """,
        tmp_path,
    ).containment
    assert c.mode == "enforce" and c.active
    assert c.never_block == (ipaddress.ip_network("10.20.0.5/32"), ipaddress.ip_network("10.20.0.128/28"))
    assert (c.check_interval, c.name_grace, c.audit_file) == (30.0, 600.0, tmp_path / "audit.jsonl")
    q = c.quarantine
    assert q.auto_rules == {"p2p.nat_traversal", "stream.egress"}
    assert (q.durations, q.window, q.max_devices) == ((1800.0, 7200.0), 172800.0, 3)


def test_an_unquoted_off_is_off_and_a_typo_is_named(tmp_path: Path) -> None:
    assert config("containment: {mode: off}\n", tmp_path).containment.mode == "off"
    (p,) = problems("containment: {mode: enforced}\n", tmp_path)
    assert p.field == "containment.mode" and "did you mean 'enforce'?" in p.fix


@pytest.mark.parametrize(
    ("extra", "field", "text"),
    [
        ("containment: {never_block: [10.20.0.5/24]}", "containment.never_block[0]",
         "did you mean 10.20.0.0/24?"),
        ("containment: {never_block: [recorder]}", "containment.never_block[0]", "not an IP address"),
        ("containment: {never_block: 10.20.0.5}", "containment.never_block", "write a list: [10.20.0.5]"),
        ("containment: {quarantine: {auto_rules: [p2p.nat_travresal]}}",
         "containment.quarantine.auto_rules[0]", "did you mean 'p2p.nat_traversal'?"),
        ("containment: {quarantine: {durations: []}}", "containment.quarantine.durations", "at least one"),
        ("containment: {quarantine: {durations: [5s]}}", "containment.quarantine.durations[0]",
         "out of range"),
        ("containment: {quarantine: {max_devices: 0}}", "containment.quarantine.max_devices", "out of range"),
        ("containment: {auto_rules: [stream.egress]}", "containment.auto_rules",
         "put it under 'quarantine:'"),
        ("containment: {whitelist: [10.20.0.5]}", "containment.whitelist", "did you mean 'never_block'?"),
    ],
)  # fmt: skip
def test_bad_values_name_the_field_and_the_fix(extra: str, field: str, text: str, tmp_path: Path) -> None:
    found = problems(extra + "\n", tmp_path)
    assert [p.field for p in found] == [field]
    assert text in found[0].problem + found[0].fix, found[0].describe()


def test_a_never_block_host_the_policy_would_cut_off_is_a_problem(tmp_path: Path) -> None:
    (p,) = problems("containment: {mode: dry-run, never_block: [10.30.0.5]}\n", tmp_path)
    assert p.field == "containment.never_block"
    assert p.problem.startswith("never_block 10.30.0.5/32: watched devices could not reach it")
    assert "add it to an allow rule" in p.fix
    # Off, nothing is checked against the policy.
    assert config("containment: {mode: off, never_block: [10.30.0.5]}\n", tmp_path).containment.mode == "off"


def test_enforce_with_a_privilege_drop_is_a_problem(tmp_path: Path) -> None:
    base = BASE.replace("run_as_user: null\n", "run_as_user: camwatch\n")
    (p,) = problems("containment: {mode: enforce}\n", tmp_path, base)
    assert p.field == "containment.mode" and "CAP_NET_ADMIN" in p.problem and "run_as_user: null" in p.fix
    # dry-run needs no privileges to change anything.
    assert config("containment: {mode: dry-run}\n", tmp_path, base).containment.mode == "dry-run"


def test_every_containment_key_is_documented() -> None:
    docs = (ROOT / "docs" / "config.md").read_text()
    documented = set(re.findall(r"^\| `(containment[a-z_.]*)` \|", docs, re.MULTILINE))
    section = yaml.safe_load(
        "containment: {mode: off, never_block: [], check_interval: 1, audit_file: a, name_grace: 1, "
        "quarantine: {auto_rules: [], durations: [], window: 1, max_devices: 1}}"
    )["containment"]
    keys = {f"containment.{k}" for k in section} | {
        f"containment.quarantine.{k}" for k in section["quarantine"]
    }
    assert keys | {"containment"} == documented
