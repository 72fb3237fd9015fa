"""Deployment files: the systemd unit (verify, exposure, MemoryDenyWriteExecute), deploy/install.sh into a
staged root, the container file and the central compose stack."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.agents.mosquitto import free_port
from tests.agents.test_runtime import POLICY, site_capture

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "camwatch.service"
INSTALL = DEPLOY / "install.sh"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
EXEC_START = "/opt/camwatch/venv/bin/camwatch run --config /etc/camwatch/agent.yaml"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
HOST_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None
)
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)"
)


def unit_settings() -> dict[str, list[str]]:
    """Every `Key=value` of the unit, values in file order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_has_the_hardening_the_deployment_guide_describes() -> None:
    s = unit_settings()
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "camwatch",
        "ConfigurationDirectory": "camwatch",
        "ExecStart": EXEC_START,
        "AmbientCapabilities": "CAP_NET_RAW",
        "CapabilityBoundingSet": "CAP_NET_RAW",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_PACKET AF_NETLINK",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "30",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], f"{key}: {s.get(key)}"
    assert s["SystemCallFilter"][0] == "@system-service"
    assert "PrivateNetwork" not in s, "the agent captures on the host's interfaces"
    assert "User" not in s, "DynamicUser picks the user; the configuration says run_as_user: null"


@needs_analyze
@pytest.mark.skipif(HOST_UNITS is None, reason="no systemd unit directory on this host (sysinit.target etc.)")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`verify` checks that ExecStart's binary exists, so the unit is verified inside a staged root holding a
    stand-in camwatch and the host's own units (the targets it depends on); systemd need not be running."""
    assert SYSTEMD_ANALYZE is not None and HOST_UNITS is not None
    binary = tmp_path / "opt/camwatch/venv/bin/camwatch"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    shutil.copytree(HOST_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system/camwatch.service")
    res = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", f"--root={tmp_path}", "camwatch.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and "camwatch" not in res.stderr, res.stdout + res.stderr


@needs_analyze
def test_unit_exposure_is_low() -> None:
    assert SYSTEMD_ANALYZE is not None
    res = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "offline" in res.stderr and "unrecognized" in res.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for camwatch\.service: (\d+\.\d)", res.stdout + res.stderr)
    assert match, res.stdout + res.stderr
    assert float(match.group(1)) <= 2.0, res.stdout  # docs/deployment.md records 1.6


# The unit's system call rules, emulated with libseccomp as systemd 252 installs them: with CAMWATCH_ALLOW
# (the expansion of SystemCallFilter=@system-service ~@privileged @resources) every other call fails with
# EPERM; and MemoryDenyWriteExecute=yes (src/shared/seccomp-util.c): mmap asking for write and execute,
# mprotect and pkey_mprotect asking for execute, shmat with SHM_EXEC fail.
SECCOMP_WRAPPER = textwrap.dedent(
    """
    import ctypes, ctypes.util, mmap, os, sys

    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64),
                    ("b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW, EPERM, MASKED_EQ = 0x7FFF0000, 0x00050000 | 1, 7
    W, X, SHM_EXEC = mmap.PROT_WRITE, mmap.PROT_EXEC, 0o100000
    allow = set(filter(None, os.environ.get("CAMWATCH_ALLOW", "").split(",")))
    ctx = lib.seccomp_init(EPERM if allow else ALLOW)

    def rule(action, name, mask=None, value=0):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call of this architecture
        cmps = (Cmp * 1)(Cmp(2, MASKED_EQ, mask, value)) if mask is not None else (Cmp * 0)()
        assert lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), cmps) == 0, name

    wx = {"mmap": (W | X, [0, W, X]), "mprotect": (X, [0]), "pkey_mprotect": (X, [0]),
          "shmat": (SHM_EXEC, [0])}
    for name in allow - set(wx):
        rule(ALLOW, name)
    for name, (mask, allowed) in wx.items():
        if allow:
            if name in allow:
                for value in allowed:
                    rule(ALLOW, name, mask, value)
        else:
            rule(EPERM, name, mask, mask)
    assert lib.seccomp_load(ctx) == 0
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | W | X)
    except OSError:
        pass
    else:
        sys.exit("the filter is not in force")
    import agents.cli
    sys.exit(agents.cli.main(sys.argv[1:]))
    """
)


def syscall_set(*groups: str) -> set[str]:
    """The system calls of systemd's filter groups, nested groups expanded."""
    assert SYSTEMD_ANALYZE is not None
    text = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", "--no-pager"], capture_output=True, text=True, timeout=60
    ).stdout
    members: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("@"):
            current = members.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = []

    def expand(name: str) -> set[str]:
        if not name.startswith("@"):
            return {name}
        return set().union(*(expand(m) for m in members[name]))

    return set().union(*(expand(g) for g in groups))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp is Linux only")
def test_agent_runs_under_the_units_system_call_rules(tmp_path: Path) -> None:
    """numpy, sqlite, asyncio, the Prometheus exporter and the capture threads under SystemCallFilter= and
    MemoryDenyWriteExecute=yes."""
    import ctypes.util

    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp is not installed (Debian package libseccomp2)")
    wrapper = tmp_path / "seccomp_run.py"
    wrapper.write_text(SECCOMP_WRAPPER)
    env = dict(os.environ)
    if SYSTEMD_ANALYZE is not None:  # the whole filter; without systemd-analyze only the W^X rules
        env["CAMWATCH_ALLOW"] = ",".join(
            sorted(syscall_set("@system-service") - syscall_set("@privileged", "@resources"))
        )
    pcap = site_capture(tmp_path / "site.pcap")
    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"site: depot-7\ngateway: gw-mdwe\ncapture:\n  pcap: {pcap}\n  pace: fast\npolicy_file: {POLICY}\n"
        f"metrics:\n  listen: 127.0.0.1\n  port: {port}\nstate_dir: {state}\nrun_as_user: null\n"
        # A broker nobody listens on: the alerts stay in the outbox, where the test looks for them.
        f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(wrapper), "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        alerts = 0
        while alerts == 0:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no alert spooled in 30 s"
            time.sleep(0.2)
            with (
                contextlib.suppress(sqlite3.OperationalError),
                contextlib.closing(sqlite3.connect(state / "outbox.sqlite3")) as db,
            ):
                alerts = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert b"camwatch_" in resp.read()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_install_script_is_shellcheck_clean() -> None:
    res = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_install_into_a_staged_root(tmp_path: Path) -> None:
    """The real installation (pip from the registry, wheels from the pip cache), twice: idempotent, and the
    configuration an operator edited is kept. About 20 s with a warm pip cache."""
    root = tmp_path / "root"
    had_build = (ROOT / "build").exists()

    def install() -> str:
        res = subprocess.run(
            ["bash", str(INSTALL), "--root", str(root), "--no-start", "--python", "python3"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    out = install()
    assert "nothing was started" in out
    venv = root / "opt/camwatch/venv"
    camwatch = venv / "bin/camwatch"
    assert camwatch.read_text().splitlines()[0] == "#!/opt/camwatch/venv/bin/python"
    agent_yaml = root / "etc/camwatch/agent.yaml"
    config = yaml.safe_load(agent_yaml.read_text())
    assert config["run_as_user"] is None
    assert config["state_dir"] == "/var/lib/camwatch"
    assert (root / "etc/camwatch/site-policy.yaml").is_file()
    unit = root / "etc/systemd/system/camwatch.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants/camwatch.service"
    assert wants.is_symlink() and str(wants.readlink()) == "/etc/systemd/system/camwatch.service"
    check = subprocess.run(
        [str(venv / "bin/python"), "-m", "agents.cli", "check-config", str(agent_yaml)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert (ROOT / "build").exists() == had_build, "pip must build from a copy, not in the checkout"

    agent_yaml.write_text(agent_yaml.read_text().replace("site: depot-7", "site: edited-site"))
    out = install()
    assert "keeping existing" in out
    assert "site: edited-site" in agent_yaml.read_text()
    imports = subprocess.run(
        [str(venv / "bin/python"), "-c", "import agents.cli, aiomqtt, prometheus_client, numpy"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imports.returncode == 0, imports.stderr


def test_container_file_runs_unprivileged_with_the_agent_extra() -> None:
    text = (DEPLOY / "container" / "Containerfile").read_text()
    assert re.search(r"^FROM debian:\S+-slim$", text, re.M)
    assert re.search(r"^USER camwatch$", text, re.M)
    assert '"/src[agent]"' in text
    assert "--cap-add NET_RAW" in text and "--network host" in text
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in copied.split():
            assert (ROOT / name).exists(), name


def test_compose_stack_is_well_formed() -> None:
    """docker cannot run here: the structure is checked instead (services, mounts, ports)."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "prometheus", "alertmanager", "grafana"}
    named_volumes = set(compose.get("volumes", {}))
    mounted: dict[str, str] = {}
    for name, service in services.items():
        assert "image" in service, name
        for dep in service.get("depends_on", []):
            assert dep in services, (name, dep)
        for port in service.get("ports", []):
            host, _, container = str(port).partition(":")
            assert host.isdigit() and container.isdigit(), (name, port)
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/")):
                assert source in named_volumes, (name, volume)
                continue
            path = (COMPOSE.parent / source).resolve()
            mounted[target] = str(path.relative_to(ROOT))
            assert path.exists(), (name, volume)
    assert mounted["/etc/prometheus/rules/camwatch-rules.yml"] == "deploy/prometheus/camwatch-rules.yml"
    assert mounted["/etc/alertmanager/alertmanager.yml"] == "deploy/alertmanager/alertmanager.yml"
    # Grafana's provisioning layout, dashboard path and data source: tests/test_compose_grafana.py.
    assert mounted["/etc/grafana/provisioning"] == "dashboards/provisioning"
    ports = {name: [str(p) for p in s.get("ports", [])] for name, s in services.items()}
    assert "1883:1883" in ports["mosquitto"] and "9090:9090" in ports["prometheus"]
    assert "9093:9093" in ports["alertmanager"] and "3000:3000" in ports["grafana"]

    prometheus = yaml.safe_load((COMPOSE.parent / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/camwatch-rules.yml"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    (job,) = prometheus["scrape_configs"]
    for target in job["static_configs"]:
        assert set(target["labels"]) == {"site", "gateway"}
        assert all(t.endswith(":10108") for t in target["targets"])
    conf = (COMPOSE.parent / "mosquitto.conf").read_text()
    assert re.search(r"^listener 1883$", conf, re.M) and re.search(r"^persistence true$", conf, re.M)
