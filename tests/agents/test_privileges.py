"""Dropping root (run as root: the agent becomes 'nobody'): the state directory is handed over without
following a link, the bounding set is emptied and no_new_privs set, whatever the agent needs is opened and
imported before, what it creates is not world-readable, and a missing run_as_user is one line, not a
traceback."""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.privileges import hand_over
from lab import scenario
from monitor.pcapwrite import pcap_bytes
from tests.agents.mosquitto import MOSQUITTO, Mosquitto
from tests.agents.promserver import free_port

ROOT = Path(__file__).parents[2]
POLICY = ROOT / "examples" / "site-policy.yaml"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the agent drops privileges to 'nobody'"
)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A directory 'nobody' can reach (pytest's own temporary directories are root's, mode 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="camwatch-priv-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def test_the_state_directory_is_handed_over_without_following_links(shared: Path) -> None:
    secret = shared / "root-only"
    secret.write_text("root's\n")
    secret.chmod(0o600)
    state = shared / "state"
    (state / "snapshots" / "yard").mkdir(parents=True)
    (state / "inventory.json").write_text("{}")
    (state / "snapshots" / "yard" / "a.jpg").write_bytes(b"jpeg")
    # What the service user could have planted between two starts: links to a root file, at the top and
    # deeper, a link to a directory, a second name for the root file, and a FIFO.
    (state / "incidents.json").symlink_to(secret)
    (state / "snapshots" / "yard" / "b.jpg").symlink_to(secret)
    (state / "etc").symlink_to("/etc")
    os.link(secret, state / "outbox.sqlite3")
    os.mkfifo(state / "pipe")
    uid, gid = nobody()

    removed = hand_over(state, uid, gid)

    assert sorted(removed) == sorted(
        str(state / name)
        for name in ("incidents.json", "snapshots/yard/b.jpg", "etc", "outbox.sqlite3", "pipe")
    )
    for path in (secret, Path("/etc")):
        assert path.stat().st_uid == 0, path  # never handed to the user
    assert secret.read_text() == "root's\n"
    for path in (
        state,
        state / "inventory.json",
        state / "snapshots",
        state / "snapshots" / "yard" / "a.jpg",
    ):
        assert path.lstat().st_uid == uid, path
    assert sorted(p.name for p in state.iterdir()) == ["inventory.json", "snapshots"]


def test_dropping_root_empties_the_bounding_set_and_sets_no_new_privs(shared: Path) -> None:
    state = shared / "state"
    state.mkdir()
    code = (
        "import os, socket\n"
        "from pathlib import Path\n"
        "from agents.privileges import drop_privileges\n"
        f"who = drop_privileges('nobody', Path({str(state)!r}))\n"
        "status = dict(line.split(':', 1) for line in Path('/proc/self/status').read_text().splitlines())\n"
        "caps = [status[k].strip() for k in ('CapBnd', 'CapEff', 'NoNewPrivs')]\n"
        "print(who, os.getuid(), *caps)\n"
    )
    before = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    assert int(before["CapBnd"], 16) != 0  # the test runs with capabilities to drop
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert res.returncode == 0, res.stderr
    who, uid, bounding, effective, no_new_privs = res.stdout.split()
    assert (who, int(uid)) == ("nobody", nobody()[0])
    assert int(bounding, 16) == 0 and int(effective, 16) == 0
    assert no_new_privs == "1"


def test_a_missing_run_as_user_is_one_line_and_nothing_starts(shared: Path) -> None:
    pcap = shared / "site.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(hik_cameras=1, seconds=1.0))))
    port = free_port()
    config = shared / "agent.yaml"
    config.write_text(
        f"site: depot-7\ngateway: gw-nouser\ncapture: {{pcap: {pcap}, pace: fast}}\npolicy_file: {POLICY}\n"
        f"metrics: {{listen: 127.0.0.1, port: {port}}}\nstate_dir: {shared / 'state'}\n"
        "run_as_user: camwatch-no-such-user\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "agents.cli", "run", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    # The configuration's warning (check-config says it too), then the one line that says why it stops
    # (one problem is one line, heading included).
    warning, problem = res.stderr.splitlines()
    assert warning.startswith("camwatch: WARNING:") and "refuses to start" in warning
    assert problem.startswith(
        f"camwatch: invalid configuration: {config}: run_as_user: user 'camwatch-no-such-user' does not exist"
    )
    assert "useradd --system camwatch-no-such-user" in problem and "run_as_user: null" in problem
    assert not (shared / "state").exists()  # refused before anything was opened or created


@pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto is not installed")
def test_after_the_drop_nothing_is_opened_or_imported_and_nothing_is_world_readable(shared: Path) -> None:
    """As root with run_as_user nobody: a root-only capture file and metrics password; MQTT to a broker by
    name (an IDNA host name); scrapes with gzip and OpenMetrics. The agent reads the whole capture, and no
    module is imported after the drop (an installation only root may read would fail there)."""
    pcap = shared / "site.pcap"
    pcap.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(hik_cameras=2, seconds=6.0))))
    password = shared / "metrics.password"
    password.write_text("scrape-secret\n")
    for path in (pcap, password):
        path.chmod(0o600)  # root's only
    port, report = free_port(), shared / "late-imports.txt"
    state, out = shared / "state", shared / "out"
    out.mkdir()
    out.chmod(0o755)
    (out / "old-flows.jsonl").write_text("{}\n")
    (out / "old-flows.jsonl").chmod(0o644)  # from an earlier version: world-readable
    with Mosquitto(shared / "broker") as broker:
        broker.workdir.chmod(0o755)
        config = shared / "agent.yaml"
        config.write_text(
            f"site: depot-7\ngateway: gw-drop\ncapture: {{pcap: {pcap}, pace: fast}}\npolicy_file: {POLICY}\n"
            f"metrics: {{listen: 127.0.0.1, port: {port}, basic_auth: {{username: prom, "
            f"password_file: {password}}}}}\n"
            f"mqtt: {{host: localhost, port: {broker.port}}}\nstate_dir: {state}\nrun_as_user: nobody\n"
            f"alerts_file: {out / 'alerts.jsonl'}\nflows_file: {out / 'old-flows.jsonl'}\n"
            # Rotated, flows_file needs a directory nobody may write (checked at start-up, tested with the
            # exports): here the root-owned directory of an earlier version, so no rotation.
            "flows_rotation: false\n"
            f"inventory_file: {state / 'devices.json'}\n"
        )
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        agent = subprocess.Popen(
            [sys.executable, "-m", "tests.agents.helpers.agent_after_drop", str(config), str(report)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            auth = {"Authorization": "Basic " + base64.b64encode(b"prom:scrape-secret").decode()}
            metrics = wait_for_metrics(
                port, auth, agent, lambda text: f'camwatch_capture_finished{{interface="{pcap}"}} 1.0' in text
            )
            assert "camwatch_mqtt_connected 1.0" in metrics or wait_for_metrics(
                port, auth, agent, lambda text: "camwatch_mqtt_connected 1.0" in text
            )
            # Both exposition formats and gzip, as Prometheus asks.
            for accept in ("application/openmetrics-text;version=1.0.0", "text/plain"):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/metrics",
                    headers={**auth, "Accept": accept, "Accept-Encoding": "gzip"},
                )
                with urllib.request.urlopen(request, timeout=10) as resp:
                    assert resp.status == 200 and resp.headers["Content-Encoding"] == "gzip"
            status = dict(
                line.split(":", 1) for line in Path(f"/proc/{agent.pid}/status").read_text().splitlines()
            )
            assert int(status["Uid"].split()[0]) == nobody()[0]
            assert int(status["CapBnd"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                output, _ = agent.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                output, _ = agent.communicate()
        assert agent.returncode == 0, output
    assert "Traceback" not in output and "Permission denied" not in output, output
    late = report.read_text().split()
    assert late == [], f"imported after the privilege drop: {late}"
    # Nothing the agent made is readable by other local users; the old world-readable output was fixed.
    assert stat.S_IMODE((out / "alerts.jsonl").stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "old-flows.jsonl").stat().st_mode) == 0o640
    for path in [state, *state.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, path
    assert (state / "devices.json").is_file() and (state / "outbox.sqlite3").is_file()


def wait_for_metrics(
    port: int,
    headers: dict[str, str],
    agent: subprocess.Popen[str],
    done: Callable[[str], bool],
    timeout: float = 60.0,
) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        assert agent.poll() is None, agent.stdout.read() if agent.stdout else ""
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(request, timeout=10) as resp:
                text = resp.read().decode()
            if done(text):
                return text
        time.sleep(0.1)
    raise AssertionError(f"the agent never got there; last scrape:\n{text[-2000:]}")
