"""`camwatch replay` and `camwatch check-config` as a user runs them (real processes, real files)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.cli import check_config, load_policy
from agents.config import ConfigError, load_config
from lab import scenario
from monitor.pcapwrite import pcap_bytes
from monitor.policy import PolicyError

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"


def camwatch(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo-site.pcap"
    path.write_bytes(pcap_bytes(scenario.site_packets(scenario.demo_shape())))
    return path


def test_replay_writes_alerts_flows_and_inventory(demo: Path, tmp_path: Path) -> None:
    res = camwatch(
        "replay",
        demo,
        "--policy",
        POLICY,
        "--flows",
        tmp_path / "f.jsonl",
        "--inventory",
        tmp_path / "inv.json",
    )
    assert res.returncode == 0, res.stderr
    alerts = [json.loads(line) for line in res.stdout.splitlines()]
    assert {a["rule"]["id"] for a in alerts} == {
        "device.new", "egress.unexpected_destination", "dns.vendor_cloud", "dns.resolver_bypass",
        "p2p.nat_traversal", "upnp.port_mapping", "stream.unauthorized_client", "stream.egress",
        "device.exposed",  # the off-site client reached camera 2 from the Internet
    }  # fmt: skip
    for a in alerts:
        assert a["observer"]["name"] == "depot-7/replay"
        assert a["event"]["kind"] == "alert" and a["message"]
    flows = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert sum(f["network"]["packets"] for f in flows) == sum(
        1 for _ in scenario.site_packets(scenario.demo_shape())
    )
    rtp = [f for f in flows if f["destination"].get("port") == 9000]
    assert len(rtp) == 1 and rtp[0]["source"]["ip"] == scenario.hik_ip(1)
    assert rtp[0]["network"]["bytes"] == rtp[0]["source"]["bytes"] + rtp[0]["destination"]["bytes"]
    inventory = json.loads((tmp_path / "inv.json").read_text())
    keys = {
        "mac",
        "ips",
        "vendor",
        "manufacturer",
        "watched",
        "evidence",
        "first_seen",
        "last_seen",
        "protocols",
        "peers",
    }
    assert all(keys <= set(d) for d in inventory)
    # The summary on stderr: packets, flows, devices by vendor, alerts by rule, time taken.
    assert "packets" in res.stderr and "flows" in res.stderr and "Hikvision 3" in res.stderr
    assert "egress.unexpected_destination 7" in res.stderr and " s (" in res.stderr
    # Piped stderr gets no progress line.
    assert "\r" not in res.stderr


def test_alerts_to_a_file_and_stdout_stays_empty(demo: Path, tmp_path: Path) -> None:
    res = camwatch("replay", demo, "--alerts", tmp_path / "a.jsonl")
    assert res.returncode == 0 and res.stdout == ""
    rules = [json.loads(line)["rule"]["id"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    # The default policy watches by vendor only: 5 watched devices (the Xiongmai board only once its
    # web banner names it, after its DNS lookups), no resolver is configured.
    assert rules.count("device.new") == 5 and rules.count("egress.unexpected_destination") == 5
    assert "dns.resolver_bypass" not in rules and len(rules) == 19
    assert rules.count("device.exposed") == 1  # the off-site client reached camera 2 from the Internet


def test_truncated_capture_processes_everything_before_the_fault(demo: Path, tmp_path: Path) -> None:
    data = demo.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 3 // 4 + 5])
    res = camwatch("replay", cut, "--flows", tmp_path / "f.jsonl")
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(cut) in errors[0] and "offset" in errors[0]
    # Alerts and flows up to the fault were written.
    assert res.stdout.count("\n") >= 4
    packets = sum(
        json.loads(line)["network"]["packets"] for line in (tmp_path / "f.jsonl").read_text().splitlines()
    )
    assert packets > 2000


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"not a capture at all", "not a pcap or pcapng file"), (b"", "offset 0")],
)
def test_unreadable_input_is_one_line(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    res = camwatch("replay", bad)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(f"camwatch: error: {bad}")
    assert reason in res.stderr


def test_missing_file(tmp_path: Path) -> None:
    res = camwatch("replay", tmp_path / "nope.pcap")
    assert res.returncode == 1 and "no such capture file" in res.stderr


def test_check_config_ok_and_bad(tmp_path: Path) -> None:
    ok = camwatch("check-config", POLICY)
    assert ok.returncode == 0 and "OK" in ok.stdout and "10.20.0.0/24" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "site: depot-7\nmonitored:\n  networks: [10.20.0.1/24]\n"
        "allow:\n  - name: x\n    to: [1.2.3.4/32]\n    ports: [99999/tcp]\n"
    )
    res = camwatch("check-config", bad)
    assert res.returncode == 2
    assert "monitored.networks[0]" in res.stderr and "10.20.0.0/24" in res.stderr
    assert "allow[0].ports[0]" in res.stderr
    # replay refuses the same policy before reading any capture.
    res = camwatch("replay", "--policy", bad, POLICY)
    assert res.returncode == 2 and "monitored.networks[0]" in res.stderr


def test_an_agent_config_with_a_yaml_syntax_error_is_reported_as_a_configuration(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: depot-7\ncapture: [eth1\nmetrics: {port: 1}\n")
    with pytest.raises(ConfigError) as info:
        check_config(str(path), io.StringIO())
    # Named where the unclosed list opens, in plain words.
    assert str(info.value).startswith(f"{path}:2:10: invalid YAML: a list opened with '[' is not")
    res = camwatch("check-config", path)
    # One problem, one line.
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"camwatch: invalid configuration: {path}:2:10: invalid YAML")


def test_a_policy_file_warns_like_the_policy_of_a_configuration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("site: depot-7\nmonitored: {vendors: [hikvison]}\n")
    with caplog.at_level("WARNING"):
        assert load_policy(str(policy)).watched_vendors == {"hikvison"}
    logged = [r.getMessage() for r in caplog.records]
    (tmp_path / "agent.yaml").write_text(
        "site: depot-7\ncapture: {interfaces: [eth1]}\npolicy_file: policy.yaml\n"
    )
    config = load_config(tmp_path / "agent.yaml")
    # One warning, word for word the one the configuration gives for the same file.
    assert logged == [w for w in config.warnings if "vendor" in w]
    assert "'hikvison' is not a vendor camwatch knows" in logged[0]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param("site: dépôt\n".encode("latin-1"), ":1:8: is not UTF-8 text", id="latin-1"),
        pytest.param("site: depot\n".encode("utf-16"), "is UTF-16 text, not UTF-8", id="utf-16"),
        pytest.param(
            "site: depot\ncapture: {}\n".encode("utf-16-le"), "has NUL bytes", id="utf-16-without-bom"
        ),
        pytest.param(b"site: a\nallow: " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep"),
        pytest.param(
            b"site: a\ncapture: " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep-agent"
        ),
    ],
)
def test_undecodable_or_absurd_files_are_one_line_errors(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_bytes(data)
    is_config = b"c\x00a\x00p" in data or b"capture" in data
    with pytest.raises(ConfigError if is_config else PolicyError) as info:
        check_config(str(path), io.StringIO())
    assert len(str(info.value).splitlines()) == 1 and reason in str(info.value)
    with pytest.raises(PolicyError) as policy_info:  # replay --policy reads it as a policy
        load_policy(str(path))
    assert str(policy_info.value).startswith(f"{path}:") and reason in str(policy_info.value)
    assert len(str(policy_info.value).splitlines()) == 1


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["replay", "--help"], ["check-config", "--help"]]
)
def test_commands_that_run_no_engine_do_not_import_it(argv: list[str]) -> None:
    """`--version`, `--help` and friends answer without importing the engine and numpy (a fifth of a second
    on a gateway): the engine is imported by the commands that run it."""
    probe = (
        "import sys\n"
        "from agents.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('numpy', 'monitor.engine', 'monitor.analysis') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_an_agent_key_at_the_top_makes_the_file_an_agent_configuration(tmp_path: Path) -> None:
    # `interfaces:` belongs under `capture:`: check-config must say so, as `run` does, not call the file an
    # invalid site policy.
    path = tmp_path / "agent.yaml"
    path.write_text("site: depot-7\ninterfaces: [eth1]\n")
    with pytest.raises(ConfigError) as info:
        check_config(str(path), io.StringIO())
    assert "put it under 'capture:' as 'capture.interfaces'" in str(info.value)
    # A file with nothing but `site:` is a valid policy; the OK line says it was read as one.
    only_site = tmp_path / "site.yaml"
    only_site.write_text("site: depot-7\n")
    out = io.StringIO()
    assert check_config(str(only_site), out) == 0
    assert (
        out.getvalue()
        .rstrip()
        .endswith("(read as a site policy; an agent configuration also has a 'capture:' section)")
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "--out", "o", "-v"],
        ["inventory", "export", "-v"],
        ["learn", "x.pcap", "-v"],
        ["contain", "status", "-v"],
        ["lab", "status", "-v"],
        ["replay", "x.pcap", "-v"],
        ["check-config", "f.yaml", "-v"],
    ],
)
def test_verbose_after_any_command(argv: list[str]) -> None:
    from agents.cli import _build_parser

    assert _build_parser().parse_args(argv).verbose is True


def test_a_command_option_before_the_command_says_where_it_goes(demo: Path) -> None:
    res = camwatch("--policy", POLICY, "replay", demo)
    assert res.returncode == 2
    assert res.stderr == (
        "camwatch: error: --policy is an option of 'replay', not of camwatch itself; put it after the "
        "command: camwatch replay ... --policy ...\n"
    )
    # Options of camwatch itself still go before the command.
    assert camwatch("-v", "replay", demo, "--alerts", "/dev/null").returncode == 0


def test_a_capture_of_a_link_type_camwatch_cannot_read_is_not_reported_clean(tmp_path: Path) -> None:
    # One 802.11 radiotap frame (link type 127), as a phone or Wi-Fi capture gives: no "0 alerts" alone.
    import struct

    frame = b"\x00\x00\x08\x00\x00\x00\x00\x00" + b"\x08\x00" + bytes(30)
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 127)
    path = tmp_path / "wifi.pcap"
    path.write_bytes(head + struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    res = camwatch("replay", path, "--alerts", "/dev/null")
    assert res.returncode == 0
    lines = res.stderr.splitlines()
    assert lines[0].startswith("camwatch: 1 packet (40 bytes, 0 non-IP,")  # one packet, not "1 packets"
    assert lines[-1] == (
        "camwatch: warning: 1 packet of link type 127 (IEEE 802.11 radiotap) not decoded: camwatch reads "
        "Ethernet, Linux SLL/SLL2, raw IP, BSD loopback and Apple PKTAP"
    )


def test_a_global_ipv6_network_the_policy_does_not_list_is_a_warning(tmp_path: Path) -> None:
    # A GUA-only site replayed without its prefix in the policy: the field engineer is told what to list.
    from monitor.pcapwrite import pcap_bytes
    from tests.monitor.test_site_ipv6 import T0, address, lookup

    path = tmp_path / "v6.pcap"
    path.write_bytes(pcap_bytes(lookup(T0, address("2001:db8:20:1::/64", 0x11), 40000)))
    res = camwatch("replay", path, "--alerts", "/dev/null")
    assert res.returncode == 0
    assert res.stderr.splitlines()[-1].startswith(
        "camwatch: warning: watched devices send from global IPv6 addresses in 2001:db8:20:1::/64, which no "
        "monitored network holds"
    )
    policy = tmp_path / "site.yaml"
    policy.write_text("site: s\nmonitored: {networks: [2001:db8:20:1::/64]}\n")
    listed = camwatch("replay", path, "--alerts", "/dev/null", "--policy", policy)
    assert listed.returncode == 0 and "camwatch: warning:" not in listed.stderr
