"""The agent configuration's output files: ``flows_file`` and ``inventory_file`` beside ``alerts_file``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agents.config import AgentConfig, ConfigError, ConfigProblem

MINIMAL = "site: depot-7\ncapture:\n  interfaces: [eth1]\nstate_dir: state\n"


def config(text: str, tmp_path: Path) -> AgentConfig:
    return AgentConfig.from_yaml(textwrap.dedent(text), "agent.yaml", tmp_path)


def problems(text: str, tmp_path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        config(text, tmp_path)
    return info.value.problems


def test_outputs_are_off_by_default_and_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    cfg = config(MINIMAL, tmp_path)
    assert (cfg.alerts_file, cfg.flows_file, cfg.inventory_file) == (None, None, None)
    cfg = config(MINIMAL + "flows_file: flows.jsonl\ninventory_file: state/devices.json\n", tmp_path)
    assert cfg.flows_file == tmp_path / "flows.jsonl"
    assert cfg.inventory_file == tmp_path / "state" / "devices.json"  # state_dir is created at start-up


@pytest.mark.parametrize("key", ["flows_file", "inventory_file"])
def test_an_output_in_a_missing_directory_or_on_a_directory_is_refused(tmp_path: Path, key: str) -> None:
    (problem,) = problems(MINIMAL + f"{key}: nowhere/out.json\n", tmp_path)
    assert problem.field == key
    assert "the directory of 'nowhere/out.json' does not exist" in problem.problem
    assert str(tmp_path / "nowhere") in problem.fix
    (tmp_path / "adir").mkdir()
    (problem,) = problems(MINIMAL + f"{key}: adir\n", tmp_path)
    assert (problem.field, problem.problem) == (key, "'adir' exists and is not a regular file")
    (problem,) = problems(MINIMAL + f"{key}: [a, b]\n", tmp_path)
    assert problem.field == key and "must be a path" in problem.problem


def test_two_outputs_in_one_file_are_refused(tmp_path: Path) -> None:
    found = problems(
        MINIMAL + "alerts_file: out.jsonl\nflows_file: ./out.jsonl\ninventory_file: out.jsonl\n", tmp_path
    )
    assert [(p.field, p.problem) for p in found] == [
        ("flows_file", "is the same file as alerts_file"),
        ("inventory_file", "is the same file as alerts_file"),
    ]
    assert found[0].fix == "give each output a file of its own"
    assert found[0].line == 6  # positioned in the file like every other problem


@pytest.mark.parametrize("name", ["inventory.json", "incidents.json", "outbox.sqlite3", "stream_probe.json"])
def test_an_output_cannot_be_one_of_the_agents_state_files(tmp_path: Path, name: str) -> None:
    (tmp_path / "state").mkdir()
    found = problems(
        MINIMAL + f"inventory_file: state/{name}\nflows_file: state/../state/{name}.x\n", tmp_path
    )
    assert [(p.field, p.problem) for p in found] == [
        ("inventory_file", f"'{name}' in state_dir is one of the agent's own state files")
    ]
    assert found[0].fix == "name another file, e.g. devices.json"
    # The same name elsewhere is fine.
    assert config(MINIMAL + f"inventory_file: {name}\n", tmp_path).inventory_file == tmp_path / name


def test_misspelled_output_keys_name_the_right_one(tmp_path: Path) -> None:
    found = problems(MINIMAL + "flows: f.jsonl\ninventory: d.json\nflow_file: f.jsonl\n", tmp_path)
    assert [(p.field, p.fix.split(" (")[0]) for p in found] == [
        ("flows", "did you mean 'flows_file'?"),
        ("inventory", "did you mean 'inventory_file'?"),
        ("flow_file", "did you mean 'flows_file'?"),
    ]
