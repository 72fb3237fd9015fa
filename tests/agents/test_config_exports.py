"""The configuration of the exports: flows_rotation, syslog, asset_register, mqtt.flows, mqtt.inventory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agents import cli
from agents.config import AgentConfig, ConfigError, ConfigProblem, Rotation
from tests.agents.mosquitto import make_tls_files

MINIMAL = "site: depot-7\ngateway: gw-1\ncapture:\n  interfaces: [eth1]\nstate_dir: state\n"


def config(text: str, tmp_path: Path) -> AgentConfig:
    return AgentConfig.from_yaml(textwrap.dedent(text), "agent.yaml", tmp_path)


def problems(text: str, tmp_path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        config(text, tmp_path)
    found: list[ConfigProblem] = info.value.problems
    return [(p.field, p.problem, p.fix) for p in found]


def test_defaults(tmp_path: Path) -> None:
    cfg = config(MINIMAL + "flows_file: flows.jsonl\nmqtt: {host: broker}\n", tmp_path)
    assert cfg.flows_rotation == Rotation(max_size=64 << 20, max_files=16, max_age=None)
    assert (cfg.syslog, cfg.asset_register) == (None, None)
    assert cfg.mqtt is not None and (cfg.mqtt.flows, cfg.mqtt.inventory) == (False, True)


def test_flows_rotation_is_read_and_can_be_turned_off(tmp_path: Path) -> None:
    cfg = config(
        MINIMAL + "flows_file: flows.jsonl\nflows_rotation: {max_size: 8MiB, max_files: 4, max_age: 7d}\n",
        tmp_path,
    )
    assert cfg.flows_rotation == Rotation(max_size=8 << 20, max_files=4, max_age=7 * 86400.0)
    assert (
        config(MINIMAL + "flows_file: flows.jsonl\nflows_rotation: false\n", tmp_path).flows_rotation is None
    )


def test_bad_flows_rotation_is_named(tmp_path: Path) -> None:
    found = problems(
        MINIMAL + "flows_rotation: {max_size: 10kB, max_files: 0, max_age: soon, keep: 3}\n", tmp_path
    )
    assert sorted(f for f, _, _ in found) == [
        "flows_rotation",  # set without flows_file
        "flows_rotation.keep",
        "flows_rotation.max_age",
        "flows_rotation.max_files",
        "flows_rotation.max_size",
    ]
    by_field = {f: (p, fix) for f, p, fix in found}
    assert by_field["flows_rotation"] == (
        "is set but flows_file is not",
        "set flows_file, or remove flows_rotation",
    )
    assert "did you mean 'max_files'?" in by_field["flows_rotation.keep"][1]
    assert "out of range" in by_field["flows_rotation.max_size"][0]


def test_syslog_is_read_with_its_gateway_as_hostname(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    cfg = config(
        MINIMAL + f"syslog: {{host: siem.example.net, protocol: tls, ca_file: {tls.ca}, facility: local4}}\n",
        tmp_path,
    )
    s = cfg.syslog
    assert s is not None
    assert (s.host, s.port, s.protocol, s.hostname, s.facility, s.ca_file) == (
        "siem.example.net", 6514, "tls", "gw-1", "local4", tls.ca
    )  # fmt: skip
    udp = config(MINIMAL + "syslog: {host: 10.0.0.5, protocol: udp}\n", tmp_path)
    assert udp.syslog is not None and udp.syslog.port == 514
    assert any("over udp an alert is lost" in w for w in udp.warnings)
    tcp = config(MINIMAL + "syslog: {host: siem.example.net}\n", tmp_path)
    assert any("clear text over tcp" in w for w in tcp.warnings)


def test_bad_syslog_is_named(tmp_path: Path) -> None:
    found = problems(
        MINIMAL
        + "syslog: {host: 'tcp://siem:514', protocol: tpc, facility: local9, ca_file: ca.pem, server: x}\n",
        tmp_path,
    )
    by_field = {f: (p, fix) for f, p, fix in found}
    assert ("syslog.ca_file", "'ca.pem' does not exist") in [(f, p) for f, p, _ in found]
    assert "did you mean 'host'?" in by_field["syslog.server"][1]
    assert by_field["syslog.host"][0] == "'tcp://siem:514' is a URL or has a port"
    assert "did you mean 'tcp'?" in by_field["syslog.protocol"][1]
    assert "must be one of" in by_field["syslog.facility"][0]
    assert by_field["syslog.ca_file"] == ("is set but protocol is tcp", "set protocol: tls, or remove it")
    assert problems(MINIMAL + "syslog: {protocol: udp}\n", tmp_path)[0][:2] == ("syslog.host", "is missing")


def test_the_asset_register_is_read_and_its_bad_rows_are_warnings(tmp_path: Path) -> None:
    (tmp_path / "register.csv").write_text(
        "mac,name,colour\n44:19:b6:00:00:01,Gate,red\nzz,Bad,\n44:19:b6:00:00:02,Yard,\n"
    )
    cfg = config(MINIMAL + "asset_register: register.csv\n", tmp_path)
    assert cfg.asset_register == tmp_path / "register.csv"
    rows = [w for w in cfg.warnings if "register.csv" in w]
    assert [w.split(": ", 2)[1] for w in rows] == ["line 1", "line 3"]
    assert "unknown column 'colour'" in rows[0]
    found = problems(MINIMAL + "asset_register: missing.csv\n", tmp_path)
    assert found[0][:2] == ("asset_register", "'missing.csv' does not exist")
    found = problems(MINIMAL + "register: register.csv\n", tmp_path)
    assert "did you mean 'asset_register'?" in found[0][2]


def test_mqtt_flows_and_inventory_switches(tmp_path: Path) -> None:
    cfg = config(MINIMAL + "mqtt: {host: broker, flows: true, inventory: false}\n", tmp_path)
    assert cfg.mqtt is not None and (cfg.mqtt.flows, cfg.mqtt.inventory) == (True, False)
    found = problems(MINIMAL + "mqtt: {host: broker, flows: yes please}\n", tmp_path)
    assert found[0][:2] == ("mqtt.flows", "must be true or false, not text 'yes please'")


def test_check_config_prints_every_bad_register_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "register.csv").write_text("mac,status,replace_by\n44:19:b6:00:00:01,gone,2026-13-01\n")
    path = tmp_path / "agent.yaml"
    path.write_text(MINIMAL + "asset_register: register.csv\n")
    assert cli.main(["check-config", str(path)]) == 0
    err = caplog.text  # check-config logs the configuration's warnings (stderr)
    assert "register.csv: line 2: status: 'gone' is not one of active, scheduled, removed" in err
    assert "did you mean 'removed'?" in err
    assert "register.csv: line 2: replace_by: '2026-13-01' is not a day of the calendar" in err
