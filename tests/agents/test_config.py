"""The agent configuration: defaults, every validation rule, and how problems are reported together."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from agents.config import (
    DEFAULT_METRICS_PORT,
    AgentConfig,
    ConfigError,
    ConfigProblem,
    MqttSettings,
    load_config,
    read_password_file,
)
from monitor.policy import DEFAULT_WATCHED_VENDORS, FieldProblem, SitePolicy

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "agent.yaml"
POLICY = ROOT / "examples" / "site-policy.yaml"
MINIMAL = "site: depot-7\ncapture:\n  interfaces: [eth1]\n"
RUNNING_AS_ROOT = os.geteuid() == 0


def config(text: str, tmp_path: Path) -> AgentConfig:
    return AgentConfig.from_yaml(textwrap.dedent(text), "agent.yaml", tmp_path)


def problems(text: str, tmp_path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        config(text, tmp_path)
    return info.value.problems


def fields(text: str, tmp_path: Path) -> list[str]:
    return [p.field for p in problems(text, tmp_path)]


def one(text: str, tmp_path: Path, field: str) -> ConfigProblem:
    """The single problem of ``text``, which must be at ``field``."""
    found = problems(text, tmp_path)
    assert [p.field for p in found] == [field], [p.describe() for p in found]
    return found[0]


def secret(tmp_path: Path, name: str, text: str = "hunter2\n", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two self-signed certificates and keys (a, b), made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    directory = tmp_path_factory.mktemp("certs")
    out: dict[str, Path] = {}
    for name in ("a", "b"):
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        key.chmod(0o600)
        out[f"{name}.crt"], out[f"{name}.key"] = cert, key
    return out


# --------------------------------------------------------------------------------------------------
# Loading and defaults


def test_the_example_file_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert (cfg.site, cfg.gateway, cfg.observer) == ("depot-7", "gw-1", "depot-7/gw-1")
    assert cfg.capture.interfaces == ("eth1",) and cfg.capture.pcap is None
    # policy_file is relative to the configuration's directory, not to the current directory.
    assert cfg.policy_file == POLICY.resolve()
    assert cfg.site_policy == SitePolicy.from_yaml(POLICY.read_text())
    assert cfg.mqtt is not None and cfg.mqtt.port == 8883 and cfg.mqtt.identifier == "camwatch-depot-7-gw-1"
    assert cfg.limits.spool_max_bytes == 100 * 1024 * 1024
    assert (cfg.timeouts.tcp_idle, cfg.timeouts.active) == (300, 1800)
    assert cfg.source == str(EXAMPLE)


def test_every_example_key_is_documented() -> None:
    docs = (ROOT / "docs" / "config.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", docs, re.MULTILINE))

    def keys(data: object, prefix: str = "") -> set[str]:
        if not isinstance(data, dict):
            return set()
        out = set()
        for key, value in data.items():
            out |= {f"{prefix}{key}"} | keys(value, f"{prefix}{key}.")
        return out

    # The example with its commented-out keys switched on.
    example = re.sub(r"^(\s*)# (\w+:)", r"\1\2", EXAMPLE.read_text(), flags=re.MULTILINE)
    assert keys(yaml.safe_load(example)) <= documented
    assert {"policy", "mqtt.password_file", "metrics.basic_auth.username", "run_as_user"} <= documented


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "gw7.depot.example")
    cfg = config(MINIMAL, tmp_path)
    assert cfg.gateway == "gw7.depot.example"
    assert cfg.metrics.listen == "0.0.0.0" and cfg.metrics.port == DEFAULT_METRICS_PORT == 10108
    assert cfg.metrics.tls_cert_file is None and cfg.metrics.basic_auth is None
    assert cfg.metrics.max_device_series == 500
    assert cfg.mqtt is None
    assert cfg.state_dir == Path("/var/lib/camwatch")
    assert cfg.run_as_user == "camwatch"
    assert (cfg.limits.max_flows, cfg.limits.max_devices) == (200_000, 50_000)
    assert (cfg.limits.spool_max_alerts, cfg.limits.spool_max_bytes) == (100_000, 100 << 20)
    assert (cfg.timeouts.tcp_idle, cfg.timeouts.udp_idle, cfg.timeouts.other_idle) == (300, 60, 60)
    assert (cfg.capture.method, cfg.capture.pace, cfg.capture.batch_size, cfg.capture.snaplen) == (
        "auto", "realtime", 4096, 65535,
    )  # fmt: skip
    # No policy: the default policy (docs/design.md §4.1), named after the site.
    assert cfg.site_policy.site == "depot-7" and cfg.site_policy.is_default
    assert cfg.site_policy.allow_private and cfg.site_policy.watched_vendors == DEFAULT_WATCHED_VENDORS


def test_gateway_default_is_made_topic_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "odd host/name")
    assert config(MINIMAL, tmp_path).gateway == "odd-host-name"


def test_load_config_errors_for_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read the file")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param((MINIMAL + "gateway: gw-é\n").encode("latin-1"),
                     ":4:13: is not UTF-8 text (invalid continuation byte); save it as UTF-8",
                     id="latin-1"),
        pytest.param(MINIMAL.encode("utf-16"), ": is UTF-16 text, not UTF-8; save it as UTF-8", id="utf-16"),
        pytest.param(MINIMAL.encode("utf-16-le"),
                     ":1:2: has NUL bytes: it is UTF-16 or binary, not UTF-8 text; "
                     "save it as UTF-8",
                     id="utf-16-without-bom"),
        pytest.param(MINIMAL.encode() + b"limits: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
                     ":4:108: the YAML is nested too deeply; write a flat configuration like "
                     "examples/agent.yaml",
                     id="nested-100000-deep"),
    ],
)  # fmt: skip
def test_unreadable_text_is_one_line_not_a_traceback(data: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}{message}"
    assert len(str(info.value).splitlines()) == 1
    # The same text as a policy file named by a configuration: reported with the policy file's name.
    (tmp_path / "ok.yaml").write_text(MINIMAL + "policy_file: agent.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "ok.yaml")
    (problem,) = info.value.problems
    assert problem.source == str(path) and problem.describe().startswith(f"{path}:")


# --------------------------------------------------------------------------------------------------
# How problems are reported


BAD = """\
site: depot 7
gatway: gw-1
capture:
  interfaces: eth1
metrics:
  port: 70000
mqtt:
  host: broker.example
  password: hunter2
limits:
  max_flows: lots
"""


def test_all_problems_are_collected_with_lines_in_file_order(tmp_path: Path) -> None:
    found = problems(BAD, tmp_path)
    assert [(p.field, p.line) for p in found] == [
        ("site", 1),
        ("gatway", 2),
        ("capture.interfaces", 4),
        ("metrics.port", 6),
        ("mqtt.password", 9),
        ("limits.max_flows", 11),
    ]
    assert all(isinstance(p, FieldProblem) and p.source == "agent.yaml" for p in found)


def test_error_message_is_one_line_per_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config(BAD, tmp_path)
    lines = str(info.value).splitlines()
    assert len(lines) == 6
    assert lines[3] == (
        "agent.yaml:6:9: metrics.port: port 70000 is out of range; use a port between 1 and 65535"
    )
    for line in lines:
        assert re.fullmatch(r"agent\.yaml(:\d+:\d+)?: [\w.\[\]]+: [^;]+; .+", line), line
    assert isinstance(info.value, ValueError)
    again = pickle.loads(pickle.dumps(info.value))
    assert again.problems == info.value.problems


def test_yaml_syntax_error(tmp_path: Path) -> None:
    (problem,) = problems("site: depot-7\ncapture: [eth1\n", tmp_path)
    assert problem.field == "" and problem.line is not None
    assert problem.describe().startswith(f"agent.yaml:{problem.line}:{problem.column}: invalid YAML")
    assert "invalid YAML" in problem.problem


def test_tabs_and_duplicate_keys(tmp_path: Path) -> None:
    (problem,) = problems("site: a\ncapture:\n\tinterfaces: [eth1]\n", tmp_path)
    assert "tab" in problem.fix
    found = problems(MINIMAL + "site: again\n", tmp_path)
    assert [(p.field, p.line) for p in found] == [("site", 4)]
    assert "twice" in found[0].problem


@pytest.mark.parametrize("text", ["", "# nothing\n", "- a list\n", "just text\n"])
def test_empty_or_not_a_mapping(text: str, tmp_path: Path) -> None:
    (problem,) = problems(text, tmp_path)
    assert problem.field == ""


# --------------------------------------------------------------------------------------------------
# site and gateway


def test_site_is_required(tmp_path: Path) -> None:
    problem = one("capture: {interfaces: [eth1]}\n", tmp_path, "site")
    assert problem.problem == "is missing" and problem.line is None
    # Reported first: problems without a position come before the others.
    assert fields("capture: {interfaces: eth1}\n", tmp_path) == ["site", "capture.interfaces"]


@pytest.mark.parametrize("site", ["depot/7", "a+b", "a#b", "a b", "'tab\\there'"])
def test_site_must_be_topic_safe(site: str, tmp_path: Path) -> None:
    text = f"site: {site}\ncapture: {{interfaces: [eth1]}}\n".replace("'tab\\there'", '"tab\\there"')
    problem = one(text, tmp_path, "site")
    assert "MQTT topic" in problem.problem


def test_site_as_a_number_says_to_quote_it(tmp_path: Path) -> None:
    # YAML reads 007 as the integer 7: the fix quotes the text as written, not the number.
    assert one("site: 007\ncapture: {interfaces: [eth1]}\n", tmp_path, "site").fix == 'quote it: site: "007"'
    assert (
        one("site: 1_000\ncapture: {interfaces: [eth1]}\n", tmp_path, "site").fix == 'quote it: site: "1_000"'
    )
    problem = one(MINIMAL + "policy: {site: 0x1F}\n", tmp_path, "policy.site")
    assert problem.fix == 'quote it: site: "0x1F"'
    assert config('site: "007"\ncapture: {interfaces: [eth1]}\n', tmp_path).site == "007"


def test_gateway(tmp_path: Path) -> None:
    assert config(MINIMAL + "gateway: gw-2\n", tmp_path).gateway == "gw-2"
    assert "MQTT topic" in one(MINIMAL + "gateway: gw/2\n", tmp_path, "gateway").problem


# --------------------------------------------------------------------------------------------------
# Unknown keys


def test_unknown_keys_get_a_suggestion(tmp_path: Path) -> None:
    problem = one(MINIMAL + "metrcs: {port: 1}\n", tmp_path, "metrcs")
    assert problem.fix.startswith("did you mean 'metrics'?")
    problem = one(MINIMAL + "limits: {max_flow: 10}\n", tmp_path, "limits.max_flow")
    assert problem.fix.startswith("did you mean 'max_flows'?")
    problem = one(MINIMAL + "zzz: 1\n", tmp_path, "zzz")
    assert problem.fix.startswith("remove it (known keys: site, gateway, capture,")


def test_keys_in_the_wrong_section_name_the_right_one(tmp_path: Path) -> None:
    text = "site: depot-7\ninterfaces: [eth1]\ncapture: {pcap: x}\n"
    found = problems(text, tmp_path)
    assert found[0].field == "interfaces" and "capture.interfaces" in found[0].fix
    problem = one(MINIMAL + "metrics: {username: u}\n", tmp_path, "metrics.username")
    assert "metrics.basic_auth.username" in problem.fix


# --------------------------------------------------------------------------------------------------
# capture


def test_capture_needs_a_source(tmp_path: Path) -> None:
    assert "no packet source" in one("site: a\n", tmp_path, "capture").problem
    assert "no packet source" in one("site: a\ncapture: {interfaces: []}\n", tmp_path, "capture").problem


def test_pcap_source_instead_of_interfaces(tmp_path: Path) -> None:
    (tmp_path / "site.pcap").write_bytes(b"")
    cfg = config("site: a\ncapture:\n  pcap: site.pcap\n  pace: fast\n", tmp_path)
    assert cfg.capture.pcap == tmp_path / "site.pcap"
    assert cfg.capture.interfaces == () and cfg.capture.pace == "fast"
    problem = one("site: a\ncapture:\n  interfaces: [eth1]\n  pcap: site.pcap\n", tmp_path, "capture.pcap")
    assert "together with capture.interfaces" in problem.problem


def test_pcap_file_must_exist(tmp_path: Path) -> None:
    problem = one("site: a\ncapture: {pcap: missing.pcap}\n", tmp_path, "capture.pcap")
    assert problem.problem == "'missing.pcap' does not exist"
    assert str(tmp_path / "missing.pcap") in problem.fix
    (tmp_path / "adir").mkdir()
    assert "not a regular file" in one("site: a\ncapture: {pcap: adir}\n", tmp_path, "capture.pcap").problem


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("interfaces: eth1", "capture.interfaces", "write a list: [eth1]"),
        ("interfaces: [eth1, eth1]", "capture.interfaces[1]", "listed twice"),
        ("interfaces: [averyveryverylongname]", "capture.interfaces[0]", "not an interface name"),
        ("interfaces: [eth1, 7]", "capture.interfaces[1]", "not an interface name"),
        ("method: mmap", "capture.method", "auto, ring, recv"),
        ("pace: fats", "capture.pace", "did you mean 'fast'?"),
        ("batch_size: 0", "capture.batch_size", "value 0 is out of range"),
        ("batch_size: 2.5", "capture.batch_size", "whole number"),
        ("snaplen: 10", "capture.snaplen", "between 64 and 262144"),
    ],
)
def test_capture_values(line: str, field: str, words: str, tmp_path: Path) -> None:
    text = f"site: a\ncapture:\n  {line}\n"
    if "interfaces" not in line:
        text += "  interfaces: [eth1]\n"
    problem = one(text, tmp_path, field)
    assert words in problem.describe()


# --------------------------------------------------------------------------------------------------
# policy


def test_inline_policy_takes_the_site_from_the_configuration(tmp_path: Path) -> None:
    cfg = config(
        """\
        site: depot-7
        capture: {interfaces: [eth1]}
        policy:
          monitored:
            networks: [10.20.0.0/24]
          resolvers: [10.20.0.1]
        """,
        tmp_path,
    )
    assert cfg.site_policy.site == "depot-7" and not cfg.site_policy.is_default
    assert cfg.site_policy.is_monitored_ip("10.20.0.9") and cfg.policy_file is None


def test_inline_policy_problems_are_prefixed_and_positioned_in_the_configuration(tmp_path: Path) -> None:
    found = problems(
        """\
        site: depot-7
        capture: {interfaces: [eth1]}
        policy:
          monitored:
            networks: [10.20.0.5/24]
          alow: []
        """,
        tmp_path,
    )
    assert [(p.field, p.line) for p in found] == [("policy.monitored.networks[0]", 5), ("policy.alow", 6)]
    assert "did you mean 10.20.0.0/24?" in found[0].fix
    assert "did you mean 'allow'?" in found[1].fix


def test_inline_policy_with_another_site(tmp_path: Path) -> None:
    problem = one(MINIMAL + "policy: {site: other}\n", tmp_path, "policy.site")
    assert "differs from site 'depot-7'" in problem.problem
    assert "must be a mapping" in one(MINIMAL + "policy: [a]\n", tmp_path, "policy").problem


def test_policy_file(tmp_path: Path) -> None:
    shutil.copy(POLICY, tmp_path / "policy.yaml")
    cfg = config(MINIMAL + "policy_file: policy.yaml\n", tmp_path)
    assert cfg.policy_file == tmp_path / "policy.yaml"
    assert cfg.site_policy.resolvers and not cfg.site_policy.is_default
    assert "does not exist" in one(MINIMAL + "policy_file: nope.yaml\n", tmp_path, "policy_file").problem
    problem = one(
        MINIMAL + "policy_file: policy.yaml\npolicy: {allow_private: true}\n", tmp_path, "policy_file"
    )
    assert "together with an inline 'policy'" in problem.problem


def test_inline_policy_problems_are_reported_beside_a_policy_file(tmp_path: Path) -> None:
    # Both at once is one problem; the inline policy's own problems are found in the same run.
    shutil.copy(POLICY, tmp_path / "policy.yaml")
    found = problems(MINIMAL + "policy_file: policy.yaml\npolicy:\n  alow: []\n", tmp_path)
    assert [(p.field, p.line) for p in found] == [("policy_file", 4), ("policy.alow", 6)]
    assert "did you mean 'allow'?" in found[1].fix
    # ... and the file's.
    (tmp_path / "bad.yaml").write_text("site: depot-7\nresolvers: [dns.example]\n")
    found = problems(MINIMAL + "policy_file: bad.yaml\npolicy: {allow_private: 1}\n", tmp_path)
    assert [(p.source, p.field) for p in found] == [
        ("agent.yaml", "policy_file"),
        ("agent.yaml", "policy.allow_private"),
        (str(tmp_path / "bad.yaml"), "resolvers[0]"),
    ]


def test_policy_file_of_another_site(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("site: branch-3\n")
    problem = one(MINIMAL + "policy_file: policy.yaml\n", tmp_path, "policy_file")
    assert "policy of site 'branch-3'" in problem.problem and problem.line == 4


def test_policy_file_problems_name_the_policy_file_and_its_lines(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("site: depot-7\nallow:\n  - name: x\n    to: [10.0.0.1/8]\n")
    found = problems("site: depot 7\ncapture: {interfaces: [eth1]}\npolicy_file: policy.yaml\n", tmp_path)
    assert [(p.source, p.field, p.line) for p in found] == [
        ("agent.yaml", "site", 1),
        (str(policy), "allow[0].to[0]", 4),
    ]
    where = f"{policy}:4:{found[1].column}"
    assert found[1].describe().startswith(f"{where}: allow[0].to[0]: '10.0.0.1/8' has host bits")


def test_unknown_vendor_in_the_policy_is_a_warning(tmp_path: Path) -> None:
    cfg = config(MINIMAL + "policy: {monitored: {vendors: [hikvison]}}\n", tmp_path)
    warning = (
        "monitored.vendors: 'hikvison' is not a vendor camwatch knows; did you mean 'hikvision'? "
        "(as written it matches no device)"
    )
    assert [w for w in cfg.warnings if "vendor" in w] == [f"policy.{warning}"]
    # A policy file warns the same way, named by its file.
    (tmp_path / "policy.yaml").write_text("site: depot-7\nmonitored: {vendors: [hikvison]}\n")
    cfg = config(MINIMAL + "policy_file: policy.yaml\n", tmp_path)
    assert [w for w in cfg.warnings if "vendor" in w] == [f"{tmp_path / 'policy.yaml'}: {warning}"]


# --------------------------------------------------------------------------------------------------
# metrics


def test_metrics_values(tmp_path: Path) -> None:
    cfg = config(MINIMAL + "metrics: {listen: '::', port: 9999, max_device_series: 0}\n", tmp_path)
    assert (cfg.metrics.listen, cfg.metrics.port, cfg.metrics.max_device_series) == ("::", 9999, 0)
    assert config(MINIMAL + "metrics: {listen: gw.local}\n", tmp_path).metrics.listen == "gw.local"
    assert (
        "port 0 is out of range" in one(MINIMAL + "metrics: {port: 0}\n", tmp_path, "metrics.port").describe()
    )
    problem = one(MINIMAL + "metrics: {port: '9100'}\n", tmp_path, "metrics.port")
    assert problem.fix == "write it without quotes"
    assert "true/false" in one(MINIMAL + "metrics: {port: yes}\n", tmp_path, "metrics.port").problem
    problem = one(MINIMAL + "metrics: {max_device_series: -1}\n", tmp_path, "metrics.max_device_series")
    assert "between 0 and 100000" in problem.fix
    problem = one(MINIMAL + "metrics: {listen: 'http://0.0.0.0'}\n", tmp_path, "metrics.listen")
    assert "not an IP address or host name" in problem.problem


def test_metrics_tls_files_both_or_neither(tmp_path: Path, certs: dict[str, Path]) -> None:
    cert, key = certs["a.crt"], certs["a.key"]
    cfg = config(MINIMAL + f"metrics: {{tls_cert_file: {cert}, tls_key_file: {key}}}\n", tmp_path)
    assert (cfg.metrics.tls_cert_file, cfg.metrics.tls_key_file) == (cert, key)
    problem = one(MINIMAL + f"metrics: {{tls_cert_file: {cert}}}\n", tmp_path, "metrics.tls_key_file")
    assert "go together" in problem.problem
    one(MINIMAL + f"metrics: {{tls_key_file: {key}}}\n", tmp_path, "metrics.tls_cert_file")
    found = fields(MINIMAL + f"metrics: {{tls_cert_file: nope.crt, tls_key_file: {key}}}\n", tmp_path)
    assert found == ["metrics.tls_cert_file"]


def test_metrics_tls_key_must_match_the_certificate(tmp_path: Path, certs: dict[str, Path]) -> None:
    text = MINIMAL + f"metrics: {{tls_cert_file: {certs['a.crt']}, tls_key_file: {certs['b.key']}}}\n"
    problem = one(text, tmp_path, "metrics.tls_cert_file")
    assert "cannot be used together" in problem.problem


def test_encrypted_key_is_reported_not_prompted_for(tmp_path: Path, certs: dict[str, Path]) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [shutil.which("openssl") or "openssl", "pkey", "-in", str(certs["a.key"]), "-aes256",
         "-passout", "pass:secret", "-out", str(encrypted)],
        check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    encrypted.chmod(0o600)
    text = MINIMAL + f"metrics: {{tls_cert_file: {certs['a.crt']}, tls_key_file: {encrypted}}}\n"
    assert "cannot be used together" in one(text, tmp_path, "metrics.tls_cert_file").problem


def test_metrics_basic_auth(tmp_path: Path) -> None:
    secret(tmp_path, "scrape.password")
    cfg = config(
        MINIMAL + "metrics:\n  basic_auth: {username: prom, password_file: scrape.password}\n", tmp_path
    )
    assert cfg.metrics.basic_auth is not None
    assert cfg.metrics.basic_auth.username == "prom"
    assert read_password_file(cfg.metrics.basic_auth.password_file) == "hunter2"
    assert any("clear text" in w for w in cfg.warnings)  # basic auth without TLS
    assert "hunter2" not in repr(cfg)
    problem = one(
        MINIMAL + "metrics:\n  basic_auth: {username: prom}\n", tmp_path, "metrics.basic_auth.password_file"
    )
    assert "needs both" in problem.fix
    found = fields(MINIMAL + "metrics:\n  basic_auth: {username: prom, password: hunter2}\n", tmp_path)
    assert sorted(found) == ["metrics.basic_auth.password", "metrics.basic_auth.password_file"]
    secret(tmp_path, "empty.password", "\n")
    problem = one(
        MINIMAL + "metrics:\n  basic_auth: {username: prom, password_file: empty.password}\n",
        tmp_path,
        "metrics.basic_auth.password_file",
    )
    assert "empty" in problem.problem
    problem = one(
        MINIMAL + "metrics:\n  basic_auth: {username: 'a:b', password_file: scrape.password}\n",
        tmp_path,
        "metrics.basic_auth.username",
    )
    assert "':'" in problem.problem


def test_world_readable_secret_is_a_warning(tmp_path: Path) -> None:
    secret(tmp_path, "open.password", mode=0o644)
    cfg = config(
        MINIMAL + "metrics:\n  basic_auth: {username: prom, password_file: open.password}\n", tmp_path
    )
    assert any("readable by every user; chmod 600" in w for w in cfg.warnings)


# --------------------------------------------------------------------------------------------------
# mqtt


def test_mqtt_defaults_and_ports(tmp_path: Path) -> None:
    cfg = config(MINIMAL + "gateway: gw-1\nmqtt: {host: broker.example}\n", tmp_path)
    assert cfg.mqtt == MqttSettings(host="broker.example", site="depot-7", gateway="gw-1")
    assert (cfg.mqtt.port, cfg.mqtt.identifier, cfg.mqtt.keepalive) == (1883, "camwatch-depot-7-gw-1", 60)
    assert cfg.mqtt.password is None and cfg.mqtt.with_password() is cfg.mqtt
    cfg = config(MINIMAL + "mqtt: {host: broker.example, tls: true}\n", tmp_path)
    assert cfg.mqtt is not None and cfg.mqtt.port == 8883
    cfg = config(MINIMAL + "mqtt: {host: broker.example, tls: true, port: 18883, client_id: me}\n", tmp_path)
    assert cfg.mqtt is not None and (cfg.mqtt.port, cfg.mqtt.client_id) == (18883, "me")


def test_mqtt_inline_password_is_rejected_with_the_fix(tmp_path: Path) -> None:
    problem = one(MINIMAL + "mqtt: {host: b, username: u, password: hunter2}\n", tmp_path, "mqtt.password")
    assert problem.problem == "an inline password is not accepted"
    assert "password_file" in problem.fix and "hunter2" not in problem.describe()


def test_mqtt_password_file(tmp_path: Path) -> None:
    secret(tmp_path, "mqtt.password")
    cfg = config(
        MINIMAL + "mqtt: {host: b, tls: true, username: u, password_file: mqtt.password}\n", tmp_path
    )
    # The configuration never holds the secret; the runtime reads it while still privileged.
    assert cfg.mqtt is not None and cfg.mqtt.password is None
    assert cfg.mqtt.with_password().password == "hunter2"
    assert "hunter2" not in repr(cfg) and "hunter2" not in repr(cfg.mqtt.with_password())
    assert not cfg.warnings or not any("clear text" in w for w in cfg.warnings)
    cfg = config(MINIMAL + "mqtt: {host: b, username: u, password_file: mqtt.password}\n", tmp_path)
    assert any("mqtt: the password is sent in clear text" in w for w in cfg.warnings)
    problem = one(MINIMAL + "mqtt: {host: b, password_file: mqtt.password}\n", tmp_path, "mqtt.password_file")
    assert "without a username" in problem.problem
    assert "does not exist" in one(MINIMAL + "mqtt: {host: b, username: u, password_file: x}\n", tmp_path,
                                   "mqtt.password_file").problem  # fmt: skip


def test_mqtt_tls_files(tmp_path: Path, certs: dict[str, Path]) -> None:
    ca, cert, key = certs["a.crt"], certs["b.crt"], certs["b.key"]
    cfg = config(
        MINIMAL + f"mqtt: {{host: b, tls: true, ca_file: {ca}, cert_file: {cert}, key_file: {key}}}\n",
        tmp_path,
    )
    assert cfg.mqtt is not None and (cfg.mqtt.ca_file, cfg.mqtt.cert_file, cfg.mqtt.key_file) == (
        ca,
        cert,
        key,
    )
    problem = one(MINIMAL + f"mqtt: {{host: b, ca_file: {ca}}}\n", tmp_path, "mqtt.ca_file")
    assert problem.problem == "is set but tls is false" and "tls: true" in problem.fix
    one(MINIMAL + f"mqtt: {{host: b, tls: true, cert_file: {cert}}}\n", tmp_path, "mqtt.key_file")
    not_pem = secret(tmp_path, "ca.txt", "not a certificate\n", 0o644)
    problem = one(MINIMAL + f"mqtt: {{host: b, tls: true, ca_file: {not_pem}}}\n", tmp_path, "mqtt.ca_file")
    assert "no usable CA certificate" in problem.problem


@pytest.mark.parametrize(
    ("mapping", "field", "words"),
    [
        ("{port: 1883}", "mqtt.host", "is missing"),
        ("{host: 'mqtt://broker'}", "mqtt.host", "URL or has a port"),
        ("{host: 'broker:1883'}", "mqtt.host", "URL or has a port"),
        ("{host: b, port: 99999}", "mqtt.port", "port 99999 is out of range"),
        ("{host: b, tls: 'yes'}", "mqtt.tls", "true or false"),
        ("{host: b, keepalive: 1}", "mqtt.keepalive", "between 5 and 65535 s"),
        ("{host: b, topic_prefix: 'cam/#'}", "mqtt.topic_prefix", "not a usable topic prefix"),
        ("{host: b, topic_prefix: '$SYS'}", "mqtt.topic_prefix", "not a usable topic prefix"),
        ("{host: b, topic_prefix: 'a//b'}", "mqtt.topic_prefix", "not a usable topic prefix"),
        ("{host: b, brokr: c}", "mqtt.brokr", "is not a known key"),
        ("broker.example", "mqtt", "must be a mapping"),
        ("{}", "mqtt", "is empty"),
    ],
)
def test_mqtt_values(mapping: str, field: str, words: str, tmp_path: Path) -> None:
    problem = one(MINIMAL + f"mqtt: {mapping}\n", tmp_path, field)
    assert words in problem.describe()


def test_mqtt_topic_prefix_with_levels(tmp_path: Path) -> None:
    cfg = config(MINIMAL + "mqtt: {host: b, topic_prefix: acme/camwatch}\n", tmp_path)
    assert cfg.mqtt is not None and cfg.mqtt.topic_prefix == "acme/camwatch"


# --------------------------------------------------------------------------------------------------
# state_dir, run_as_user


def test_state_dir(tmp_path: Path) -> None:
    assert (
        config(MINIMAL + "state_dir: state\n", tmp_path).state_dir == tmp_path / "state"
    )  # may not exist yet
    assert config(MINIMAL + "state_dir: /srv/camwatch\n", tmp_path).state_dir == Path("/srv/camwatch")
    (tmp_path / "file").write_text("")
    assert "not a directory" in one(MINIMAL + "state_dir: file\n", tmp_path, "state_dir").problem


def test_run_as_user(tmp_path: Path) -> None:
    assert config(MINIMAL + "run_as_user: nobody\n", tmp_path).run_as_user == "nobody"
    cfg = config(MINIMAL + "run_as_user: null\n", tmp_path)
    assert cfg.run_as_user is None
    if RUNNING_AS_ROOT:
        assert any("keeps running as root" in w for w in cfg.warnings)
    assert (
        "not a valid user name" in one(MINIMAL + "run_as_user: 'Bad User'\n", tmp_path, "run_as_user").problem
    )


@pytest.mark.skipif(not RUNNING_AS_ROOT, reason="the user check only matters when started as root")
def test_missing_run_as_user_is_a_warning(tmp_path: Path) -> None:
    cfg = config(MINIMAL + "run_as_user: camwatch-test-nosuchuser\n", tmp_path)
    assert any("does not exist on this host" in w for w in cfg.warnings)


def test_load_config_logs_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(MINIMAL + "policy: {monitored: {vendors: [acme]}}\n")
    with caplog.at_level("WARNING", logger="agents.config"):
        load_config(path)
    assert "'acme' is not a vendor camwatch knows" in caplog.text


# --------------------------------------------------------------------------------------------------
# limits, timeouts


def test_limits(tmp_path: Path) -> None:
    cfg = config(
        MINIMAL + "limits: {max_flows: 1000, spool_max_bytes: 1GB, spool_max_alerts: 10}\n", tmp_path
    )
    assert (cfg.limits.max_flows, cfg.limits.spool_max_bytes, cfg.limits.spool_max_alerts) == (
        1000,
        10**9,
        10,
    )
    assert config(MINIMAL + "limits: {spool_max_bytes: 2 MiB}\n", tmp_path).limits.spool_max_bytes == 2 << 20
    assert config(MINIMAL + "limits: {spool_max_bytes: 70000}\n", tmp_path).limits.spool_max_bytes == 70000
    problem = one(MINIMAL + "limits: {spool_max_bytes: 1KB}\n", tmp_path, "limits.spool_max_bytes")
    assert "1000 bytes is out of range" in problem.problem
    assert "must be a size" in one(MINIMAL + "limits: {spool_max_bytes: lots}\n", tmp_path,
                                   "limits.spool_max_bytes").problem  # fmt: skip
    assert "out of range" in one(MINIMAL + "limits: {max_flows: 0}\n", tmp_path, "limits.max_flows").problem
    assert (
        "out of range" in one(MINIMAL + "limits: {max_devices: 1}\n", tmp_path, "limits.max_devices").problem
    )


def test_timeouts(tmp_path: Path) -> None:
    cfg = config(
        MINIMAL + "timeouts: {tcp_idle: 5m, udp_idle: 30, other_idle: 1.5s, active: 1h30m}\n", tmp_path
    )
    t = cfg.timeouts
    assert (t.tcp_idle, t.udp_idle, t.other_idle, t.active) == (300, 30, 1.5, 5400)
    assert config(MINIMAL + "timeouts: {active: 1d}\n", tmp_path).timeouts.active == 86400
    problem = one(MINIMAL + "timeouts: {tcp_idle: 5 minutes}\n", tmp_path, "timeouts.tcp_idle")
    assert "must be a duration" in problem.problem and "5m" in problem.fix
    assert "out of range" in one(MINIMAL + "timeouts: {udp_idle: 0}\n", tmp_path, "timeouts.udp_idle").problem
    assert "out of range" in one(MINIMAL + "timeouts: {active: 30d}\n", tmp_path, "timeouts.active").problem
    problem = one(MINIMAL + "timeouts: {active: 60}\n", tmp_path, "timeouts.active")
    assert "shorter than an idle timeout (300 s)" in problem.problem


def test_the_runtime_reads_what_it_needs(tmp_path: Path) -> None:
    """agents/runtime.py reads these attributes; keep them."""
    cfg = load_config(EXAMPLE)
    assert isinstance(cfg.state_dir, Path)
    for name in ("max_flows", "max_devices", "spool_max_alerts", "spool_max_bytes"):
        assert isinstance(getattr(cfg.limits, name), int)
    for name in ("tcp_idle", "udp_idle", "other_idle", "active"):
        assert isinstance(getattr(cfg.timeouts, name), float)
    for name in ("pcap", "batch_size", "interfaces", "method", "pace"):
        assert hasattr(cfg.capture, name)
    assert isinstance(cfg.site_policy, SitePolicy)


# --------------------------------------------------------------------------------------------------
# alerts_file and stream_probe


def test_alerts_file(tmp_path: Path) -> None:
    assert config(MINIMAL, tmp_path).alerts_file is None
    assert config(MINIMAL + "alerts_file: alerts.jsonl\n", tmp_path).alerts_file == tmp_path / "alerts.jsonl"
    problem = one(MINIMAL + "alerts_file: nowhere/alerts.jsonl\n", tmp_path, "alerts_file")
    assert "the directory of 'nowhere/alerts.jsonl' does not exist" in problem.problem
    assert str(tmp_path / "nowhere") in problem.fix
    (tmp_path / "adir").mkdir()
    assert "is not a regular file" in one(MINIMAL + "alerts_file: adir\n", tmp_path, "alerts_file").problem
    assert "did you mean 'alerts_file'" in one(MINIMAL + "alerts: a.jsonl\n", tmp_path, "alerts").fix


PROBE = MINIMAL + "stream_probe:\n  cameras:\n    - {name: entrance, url: 'rtsp://10.77.0.11:554/stream1'}\n"


def test_stream_probe_defaults(tmp_path: Path) -> None:
    assert config(MINIMAL, tmp_path).stream_probe is None
    probe = config(PROBE + "state_dir: state\n", tmp_path).stream_probe
    assert probe is not None
    assert (probe.interval, probe.duration, probe.timeout, probe.transport) == (60, 4, 15, "tcp")
    assert (probe.concurrency, probe.snapshots, probe.snapshot_keep) == (1, True, 20)
    assert probe.snapshot_dir == tmp_path / "state" / "snapshots"
    assert (probe.thresholds.black_luma, probe.thresholds.frozen_difference) == (20, 0.25)
    (camera,) = probe.cameras
    assert (camera.name, camera.url, camera.username, camera.password, camera.transport) == (
        "entrance", "rtsp://10.77.0.11:554/stream1", None, None, None,
    )  # fmt: skip


def test_stream_probe_values(tmp_path: Path) -> None:
    password = secret(tmp_path, "cam.pass", "c4m-p@ss\n")
    probe = config(
        f"""\
        site: depot-7
        capture: {{interfaces: [eth1]}}
        stream_probe:
          interval: 2m
          duration: 6s
          timeout: 20
          transport: udp
          concurrency: 2
          snapshots: false
          snapshot_dir: shots
          snapshot_keep: 5
          thresholds: {{black_luma: 12, frozen_difference: 0.5, covered_detail: 0.01}}
          cameras:
            - name: entrance
              url: rtsps://cam-1.depot.example/live
              username: viewer
              password_file: {password}
              transport: tcp
            - {{name: yard.2, url: "rtsp://[fd00::7]:8554/s"}}
        """,
        tmp_path,
    ).stream_probe
    assert probe is not None
    assert (probe.interval, probe.duration, probe.timeout, probe.transport, probe.concurrency) == (
        120, 6, 20, "udp", 2,
    )  # fmt: skip
    assert (probe.snapshots, probe.snapshot_dir, probe.snapshot_keep) == (False, tmp_path / "shots", 5)
    assert (probe.thresholds.black_luma, probe.thresholds.covered_detail) == (12, 0.01)
    entrance, yard = probe.cameras
    assert (entrance.username, entrance.password, entrance.transport) == ("viewer", "c4m-p@ss", "tcp")
    assert "c4m-p@ss" not in repr(probe)  # the password is read when needed, never held
    assert (yard.name, yard.url, yard.transport) == ("yard.2", "rtsp://[fd00::7]:8554/s", None)


CAM = "cameras: [{name: a, url: 'rtsp://10.0.0.1/'}]"


@pytest.mark.parametrize(
    ("section", "field", "words"),
    [
        ("{}", "cameras", "lists no camera"),
        ("{cameras: rtsp://x}", "cameras", "must be a list"),
        ("{cameras: [rtsp://x]}", "cameras[0]", "must be a mapping"),
        ("{cameras: [{url: 'rtsp://10.0.0.1/'}]}", "cameras[0].name", "is missing"),
        ("{cameras: [{name: a}]}", "cameras[0].url", "is missing"),
        ("{cameras: [{name: a b, url: 'rtsp://10.0.0.1/'}]}", "cameras[0].name", "not a usable"),
        ("{cameras: [{name: a, url: 'http://10.0.0.1/'}]}", "cameras[0].url", "scheme is 'http'"),
        ("{cameras: [{name: a, url: 'rtsp:///s'}]}", "cameras[0].url", "names no host"),
        ("{cameras: [{name: a, url: 'rtsp://10.0.0.1/', transport: http}]}", "cameras[0].transport",
         "must be one of tcp, udp"),
        ("{cameras: [{name: a, url: 'rtsp://10.0.0.1/', pasword_file: x}]}", "cameras[0].pasword_file",
         "is not a known key"),
        (f"{{url: 'rtsp://10.0.0.1/', {CAM}}}", "url", "is not a known key"),
        (f"{{interval: 0.5s, {CAM}}}", "interval", "out of range"),
        (f"{{duration: 10s, timeout: 10s, {CAM}}}", "timeout", "is not longer than the duration"),
        (f"{{transport: quic, {CAM}}}", "transport", "must be one of tcp, udp"),
        (f"{{concurrency: 0, {CAM}}}", "concurrency", "out of range"),
        (f"{{thresholds: {{black_luma: 300}}, {CAM}}}", "thresholds.black_luma", "300 is out of range"),
        (f"{{thresholds: {{covered_detail: '1%'}}, {CAM}}}", "thresholds.covered_detail", "must be a number"),
        (f"{{black_luma: 10, {CAM}}}", "black_luma", "is not a known key"),
        ("rtsp://10.0.0.1/", "", "must be a mapping"),
    ],
)  # fmt: skip
def test_stream_probe_problems(section: str, field: str, words: str, tmp_path: Path) -> None:
    path = f"stream_probe.{field}" if field else "stream_probe"
    problem = one(MINIMAL + f"stream_probe: {section}\n", tmp_path, path)
    assert words in problem.problem, problem.describe()


def test_camera_names_are_unique(tmp_path: Path) -> None:
    text = PROBE + "    - {name: entrance, url: 'rtsp://10.77.0.12/stream1'}\n"
    problem = one(text, tmp_path, "stream_probe.cameras[1].name")
    assert "'entrance' is used by another camera" in problem.problem
    assert problem.line == 7


def test_camera_credentials_never_go_inline(tmp_path: Path) -> None:
    text = MINIMAL + "stream_probe:\n  cameras:\n    - {name: a, url: 'rtsp://admin:Hunter2@10.0.0.1/s'}\n"
    problem = one(text, tmp_path, "stream_probe.cameras[0].url")
    assert "has credentials in it" in problem.problem and "password_file" in problem.fix
    assert "Hunter2" not in problem.describe()
    text = MINIMAL + "stream_probe:\n  cameras:\n    - {name: a, url: 'rtsp://10.0.0.1/s', password: x}\n"
    assert (
        "an inline password is not accepted"
        in one(text, tmp_path, "stream_probe.cameras[0].password").problem
    )
    password = secret(tmp_path, "cam.pass")
    cam = "name: a, url: 'rtsp://10.0.0.1/s'"
    text = MINIMAL + f"stream_probe:\n  cameras:\n    - {{{cam}, password_file: {password}}}\n"
    assert "without a username" in one(text, tmp_path, "stream_probe.cameras[0].password_file").problem
    text = MINIMAL + f"stream_probe:\n  cameras:\n    - {{{cam}, username: u, password_file: x}}\n"
    assert "does not exist" in one(text, tmp_path, "stream_probe.cameras[0].password_file").problem


def test_cameras_at_the_top_level_are_pointed_to_the_section(tmp_path: Path) -> None:
    problem = one(MINIMAL + "cameras: []\n", tmp_path, "cameras")
    assert "stream_probe.cameras" in problem.fix


def test_too_many_cameras_for_the_interval_is_a_warning(tmp_path: Path) -> None:
    cameras = "".join(f"    - {{name: c{i}, url: 'rtsp://10.0.0.{i}/'}}\n" for i in range(1, 6))
    cfg = config(MINIMAL + "stream_probe:\n  interval: 60\n  timeout: 15\n  cameras:\n" + cameras, tmp_path)
    assert any("may not all fit in the 60 s interval" in w for w in cfg.warnings)
    cfg = config(
        MINIMAL + "stream_probe:\n  interval: 60\n  concurrency: 2\n  cameras:\n" + cameras, tmp_path
    )
    assert not any("interval" in w for w in cfg.warnings)


def test_stream_probe_without_the_stream_extra_names_the_fix(tmp_path: Path) -> None:
    # A fresh interpreter where PyAV cannot be imported, as without `pip install camwatch[stream]`.
    (tmp_path / "agent.yaml").write_text(PROBE)
    code = (
        "import sys; sys.modules['av'] = None\n"
        "from agents.config import load_config, ConfigError\n"
        "try:\n    load_config(sys.argv[1])\nexcept ConfigError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "agent.yaml")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert ":5:3: stream_probe: needs packages that are not installed (av);" in done.stdout
    assert "pip install 'camwatch[stream]'" in done.stdout
    # Without the section nothing is asked of the extra.
    (tmp_path / "agent.yaml").write_text(MINIMAL)
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "agent.yaml")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == ""


def test_the_examples_stream_probe_section_loads_when_switched_on(tmp_path: Path) -> None:
    head, _, block = EXAMPLE.read_text().partition("# stream_probe:\n")
    block = re.sub(r"^(\s*)# ?", r"\1", block, flags=re.MULTILINE)
    password = secret(tmp_path, "cam-entrance.pass")
    text = (head + "stream_probe:\n" + block).replace("/etc/camwatch/cam-entrance.pass", str(password))
    text = text.replace("policy_file: site-policy.yaml", f"policy_file: {POLICY}")
    text = text.replace("/var/lib/camwatch/snapshots", str(tmp_path / "shots"))
    probe = config(text, tmp_path).stream_probe
    assert probe is not None and [c.name for c in probe.cameras] == ["entrance", "yard"]
    assert probe.cameras[0].password == "hunter2" and probe.cameras[1].transport == "udp"
    assert probe.cameras[1].url == "rtsp://10.20.0.12:554/cam/realmonitor?channel=1&subtype=0"
