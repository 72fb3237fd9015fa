"""The camera lab's manager: bring the lab up and down, report on it, trigger the personas.

    lab = Lab("cwlab", Path("/run/camwatch-lab"))
    lab.up(trigger_every=None, agent=False, mqtt=None)   # namespaces, processes, lab.json, configs
    lab.up(contain="enforce")                            # the agent enforces the policy (nftables)
    lab.trigger(["cam1"])                                # misbehave now (events.jsonl says what and when)
    lab.set_pattern("cam3", "black")                     # the camera's video pattern
    lab.status()                                         # LabStatus: .ok, .problems, .to_json()
    lab.down()                                           # idempotent, also after a crash

`up` writes into the lab directory: `lab.json` (the description, `lab.topology`), `policy.yaml`
(the site policy), `agent.yaml` (the agent's configuration: capture on br-cam in the gateway namespace),
the control files, and one log, pid and ready file per process. Processes run detached (their own
session, `ip netns exec NS python -m ...`), so the lab outlives the command that started it. Needs root.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

from lab.netns import (
    NetworkError,
    build_network,
    in_namespace,
    lab_namespaces,
    namespace_pids,
    remove_network,
)
from lab.topology import (
    PATTERNS,
    Control,
    LabDescription,
    LabEvent,
    LabPaths,
    VideoFormat,
    check_prefix,
    default_description,
    write_atomic,
)

__all__ = [
    "AGENT_PACKAGES",
    "DEFAULT_DIR",
    "DEFAULT_PREFIX",
    "LAB_PACKAGES",
    "PROBE_PACKAGES",
    "Lab",
    "LabError",
    "LabStatus",
    "ProcessStatus",
    "preflight",
    "require_packages",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "cwlab"
DEFAULT_DIR: Final = Path("/run/camwatch-lab")
OFFICE: Final = "office"
ATTACKER: Final = "attacker"
AGENT: Final = "agent"
METRICS_PORT: Final = 10108
READY_TIMEOUT: Final = 60.0
DEFAULT_VIDEO: Final = VideoFormat()  # 480x270 at 10 fps, 400 kbit/s: three cameras fit a 2-core gateway
STOP_GRACE: Final = 5.0
#: `lab up --contain MODE`: the agent's containment mode (docs/containment.md), which implies `--agent`.
CONTAIN_MODES: Final = ("dry-run", "enforce")
#: How often the lab agent looks at its plan and reads the kernel's counters (the default is 10 s).
CONTAIN_CHECK: Final = "5s"


class LabError(Exception):
    """A one-line reason the lab cannot do what was asked."""


#: The Python packages the lab's own processes need, and the extra that brings them: the cameras encode with
#: PyAV, the live view runs aiortc. `lab up --agent` runs the agent too (AGENT_PACKAGES), and with the stream
#: probe its probe (PROBE_PACKAGES).
LAB_PACKAGES: Final[Mapping[str, str]] = {"av": "lab", "aiortc": "lab"}
AGENT_PACKAGES: Final[Mapping[str, str]] = {"aiomqtt": "agent", "prometheus_client": "agent"}
PROBE_PACKAGES: Final[Mapping[str, str]] = {"av": "stream", "cv2": "stream"}


def require_packages(packages: Mapping[str, str] = LAB_PACKAGES) -> None:
    """LabError naming the missing packages (module -> extra) and the `pip install` that brings them."""
    missing = {name: extra for name, extra in packages.items() if importlib.util.find_spec(name) is None}
    if missing:
        extras = ",".join(dict.fromkeys(missing.values()))
        raise LabError(
            f"the camera lab needs {' and '.join(missing)}: pip install 'camwatch[{extras}]' "
            "(scripts/demo installs them)"
        )


def preflight(packages: Mapping[str, str] = LAB_PACKAGES) -> None:
    """Check this host can build a lab (the Python packages, root, iproute2 with `ip netns`); LabError says
    what is missing."""
    # Before any namespace is built: a field engineer learns which extra to install.
    require_packages(packages)
    if os.geteuid() != 0:
        raise LabError("the camera lab needs root (network namespaces): run it with sudo or as root")
    if shutil.which("ip") is None:
        raise LabError("the camera lab needs iproute2's `ip` command (apt-get install iproute2)")
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        raise LabError(f"`ip netns` does not work here: {probe.stderr.strip() or probe.returncode}")


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One lab process as `status` sees it."""

    name: str
    namespace: str
    pid: int | None
    alive: bool
    ready: bool
    log: str


@dataclass(frozen=True, slots=True)
class LabStatus:
    """What runs, where, and what is wrong (`problems` empty: the lab is up and healthy)."""

    prefix: str
    directory: str
    namespaces: dict[str, bool] = field(default_factory=dict)
    processes: tuple[ProcessStatus, ...] = ()
    cameras: tuple[dict[str, object], ...] = ()
    addresses: dict[str, str] = field(default_factory=dict)
    agent_command: str = ""
    problems: tuple[str, ...] = ()
    containment: str = "off"

    @property
    def up(self) -> bool:
        """Some part of the lab exists."""
        return any(self.namespaces.values())

    @property
    def ok(self) -> bool:
        """Everything exists, runs and answers."""
        return self.up and not self.problems

    def to_json(self) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "directory": self.directory,
            "state": "ok" if self.ok else "broken" if self.up else "down",
            "namespaces": self.namespaces,
            "processes": [
                {
                    "name": p.name,
                    "namespace": p.namespace,
                    "pid": p.pid,
                    "alive": p.alive,
                    "ready": p.ready,
                    "log": p.log,
                }
                for p in self.processes
            ],
            "cameras": list(self.cameras),
            "addresses": self.addresses,
            "agent_command": self.agent_command,
            "containment": self.containment,
            "problems": list(self.problems),
        }

    def text(self) -> str:
        """A report for a terminal."""
        state = "ok" if self.ok else "BROKEN" if self.up else "down"
        lines = [f"camera lab {self.prefix} ({self.directory}): {state}"]
        if self.namespaces:
            present = [ns for ns, there in self.namespaces.items() if there]
            lines.append(f"namespaces: {', '.join(present) or 'none'}")
        for p in self.processes:
            what = "running" if p.alive else "NOT RUNNING"
            ready = "" if p.ready or not p.alive else " (not ready)"
            lines.append(f"  {p.name:<7} {what}{ready} pid {p.pid or '-'} in {p.namespace}; log {p.log}")
        for cam in self.cameras:
            frames = cam.get("recorder_packets")
            # Right after `lab up` the recorder is still connecting: say so rather than print a bare 0.
            pulled = (
                f"the recorder pulled {frames:,} video frames"
                if isinstance(frames, int) and frames
                else "the recorder has not pulled video yet (it connects within seconds)"
            )
            lines.append(
                f"  {cam['name']:<7} {cam['persona']:<6} {cam['ip']:<12} {cam['mac']}  {cam['url']}  "
                f"rtsp {cam['rtsp']}; pattern {cam.get('pattern')}; {pulled}"
            )
        for role, addr in self.addresses.items():
            lines.append(f"  {role}: {addr}")
        # The agent's own line is above when the lab started it (`lab up --agent`): no advice to start it.
        if self.agent_command and not any(p.name == AGENT for p in self.processes):
            lines.append(f"to run the agent on this lab: {self.agent_command}")
        if self.containment != "off":
            lines.append(
                f"containment: {self.containment} (the agent's; `camwatch contain status` in the gateway "
                "namespace says more)"
            )
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Process:
    name: str
    namespace: str
    argv: tuple[str, ...]


def _pid_alive(pid: int, marker: str) -> bool:
    """True if `pid` runs (not a zombie) and its command line holds `marker` (a reused pid does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"] and marker in cmdline


def rtsp_options(namespace: str, host: str, port: int, timeout: float = 2.0) -> str:
    """Send RTSP OPTIONS from `namespace`; the server's banner, or ConnectionError/OSError."""
    with in_namespace(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(f"OPTIONS rtsp://{host}:{port}/ RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply and len(reply) < 8192:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    head = reply.decode("latin-1").split("\r\n")
    if not head[0].startswith("RTSP/1.0 200"):
        raise ConnectionError(f"rtsp://{host}:{port} answered {head[0][:60]!r}")
    return next((h.split(":", 1)[1].strip() for h in head if h.lower().startswith("server:")), "")


def tcp_listening(namespace: str, host: str, port: int, timeout: float = 1.0) -> bool:
    with in_namespace(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True


class Lab:
    """One camera lab, named by its prefix, with its files in `directory`."""

    def __init__(
        self, prefix: str = DEFAULT_PREFIX, directory: Path | str = DEFAULT_DIR, *, python: str | None = None
    ) -> None:
        try:
            self.prefix = check_prefix(prefix)
        except ValueError as exc:
            raise LabError(str(exc)) from None
        self.directory = Path(directory).absolute()
        self.paths = LabPaths(self.directory)
        self.python = python or sys.executable
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- description and generated files

    def description(self) -> LabDescription:
        """The running lab's description (lab.json); LabError if there is none or it is unreadable."""
        try:
            desc = LabDescription.load(self.paths.lab_json)
        except ValueError as exc:
            raise LabError(f"{exc} (is the lab up? `camwatch lab up --dir {self.directory}`)") from None
        if desc.prefix != self.prefix:
            raise LabError(
                f"{self.paths.lab_json} describes lab {desc.prefix!r}, not {self.prefix!r}; pass --prefix "
                f"{desc.prefix} or another --dir"
            )
        return desc

    def policy_document(self, desc: LabDescription, probe: bool) -> dict[str, object]:
        """The site policy (docs/policy.md) that matches the lab."""
        gw = desc.gateway.bridge_ip
        # The stream probe pulls from the gateway itself: with it, the gateway is an allowed viewer too.
        viewers = [desc.recorder.ip, gw] if probe else [desc.recorder.ip]
        return {
            "site": "lab",
            "monitored": {"networks": [desc.gateway.camera_network]},
            "resolvers": [desc.services.resolver],
            "viewers": viewers,
            "allow": [{"name": "gateway services", "to": [f"{gw}/32"], "ports": ["53/udp", "123/udp"]}],
            # The site's asset register: every lab device is known, so none is announced by device.new.
            "known_devices": list(desc.macs),
        }

    def agent_document(
        self,
        desc: LabDescription,
        mqtt: tuple[str, int] | None,
        probe: bool,
        probe_interval: float = 30.0,
        contain: str | None = None,
    ) -> dict[str, object]:
        """The agent configuration (docs/config.md) for the gateway namespace; with ``contain``, its
        containment section (the gateway forwards every lab network, so it can enforce)."""
        doc: dict[str, object] = {
            "site": "lab",
            "gateway": desc.gateway.namespace,
            "capture": {"interfaces": [desc.gateway.bridge]},
            "policy_file": self.paths.policy.name,
            "metrics": {"listen": "0.0.0.0", "port": METRICS_PORT},
            "state_dir": str(self.paths.state_dir),
            "run_as_user": None,
            "alerts_file": self.paths.alerts.name,
        }
        if mqtt is not None:
            doc["mqtt"] = {"host": mqtt[0], "port": mqtt[1]}
        if probe:
            doc["stream_probe"] = {
                "interval": f"{probe_interval:g}s",
                "duration": "4s",
                "cameras": [{"name": c.name, "url": c.url} for c in desc.cameras],
            }
        if contain is not None:
            doc["containment"] = {
                "mode": contain,
                # The gateway (its resolver, NTP and UPnP answer the cameras); the recorder is a viewer, and
                # the policy's viewers and resolvers are never blocked anyway.
                "never_block": [desc.gateway.bridge_ip],
                "check_interval": CONTAIN_CHECK,
            }
        return doc

    def _write_files(
        self,
        desc: LabDescription,
        mqtt: tuple[str, int] | None,
        probe: bool,
        probe_interval: float = 30.0,
        contain: str | None = None,
    ) -> None:
        p = self.paths
        for d in (p.root, p.run_dir, p.control_dir):
            d.mkdir(parents=True, exist_ok=True)
        desc.dump(p.lab_json)
        header = "# Written by `camwatch lab up`; rewritten by the next `lab up`.\n"
        write_atomic(p.policy, header + yaml.safe_dump(self.policy_document(desc, probe), sort_keys=False))
        agent_doc = self.agent_document(desc, mqtt, probe, probe_interval, contain)
        write_atomic(p.agent_config, header + yaml.safe_dump(agent_doc, sort_keys=False))
        for name in (*desc.camera_names, OFFICE, ATTACKER):
            Control().dump(p.control(name))

    def _clean_previous_run(self, desc: LabDescription) -> None:
        """Forget what an earlier lab in this directory left (only files the lab itself writes)."""
        p = self.paths
        for d in (p.run_dir, p.control_dir, p.state_dir):
            shutil.rmtree(d, ignore_errors=True)
        logs = [p.log(proc.name) for proc in self._processes(desc, agent=True)]
        for f in (p.events, p.alerts, *logs):
            f.unlink(missing_ok=True)

    # -- processes

    def _processes(self, desc: LabDescription, agent: bool) -> list[_Process]:
        d = str(self.directory)
        py = (self.python, "-m")
        procs = [
            _Process("gw", desc.gateway.namespace, (*py, "lab.services", "gw", d)),
            _Process("inet", desc.internet.namespace, (*py, "lab.services", "inet", d)),
            *(_Process(c.name, c.namespace, (*py, "lab.camera", d, c.name)) for c in desc.cameras),
            _Process("rec", desc.recorder.namespace, (*py, "lab.recorder", d)),
            _Process(OFFICE, desc.office.namespace, (*py, "lab.office", d)),
            _Process(ATTACKER, desc.internet.namespace, (*py, "lab.attacker", d)),
        ]
        if agent:
            procs.append(
                _Process(
                    AGENT,
                    desc.gateway.namespace,
                    (*py, "agents.cli", "run", "--config", str(self.paths.agent_config)),
                )
            )
        return procs

    def _start(self, proc: _Process) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.paths.log(proc.name), "ab") as logfile:
            child = subprocess.Popen(
                ["ip", "netns", "exec", proc.namespace, *proc.argv],
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: the lab outlives the command and its terminal
                cwd=self.directory,
                env=env,
            )
        # `ip netns exec` execs the command: the pid is the Python process itself.
        self._children[proc.name] = child
        write_atomic(self.paths.pid(proc.name), f"{child.pid}\n")
        log.debug("started %s (pid %d) in %s", proc.name, child.pid, proc.namespace)

    def _pid(self, name: str) -> int | None:
        try:
            text = self.paths.pid(name).read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _alive(self, name: str) -> bool:
        child = self._children.get(name)
        if child is not None:
            # Our own child cannot be a reused pid; and its command line is briefly empty while
            # `ip netns exec` execs Python, so the marker test below would race.
            return child.poll() is None
        pid = self._pid(name)
        return pid is not None and _pid_alive(pid, str(self.directory))

    def _log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = self.paths.log(name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def _wait_ready(self, desc: LabDescription, procs: Sequence[_Process], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = {p.name for p in procs}
        cameras = {c.name: c for c in desc.cameras}
        while waiting:
            for name in sorted(waiting):
                if not self._alive(name):
                    raise LabError(
                        f"{name} exited while starting: {self._log_tail(name)} (see {self.paths.log(name)})"
                    )
                if name == AGENT:
                    ready = tcp_listening(desc.gateway.namespace, desc.gateway.bridge_ip, METRICS_PORT)
                elif name in cameras:
                    ready = self.paths.ready(name).exists() and self._rtsp_ok(desc, name) is None
                else:
                    ready = self.paths.ready(name).exists()
                if ready:
                    waiting.discard(name)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"not ready within {timeout:g} s: {', '.join(sorted(waiting))} "
                    f"(see the logs in {self.directory})"
                )
            time.sleep(0.1)

    def _rtsp_ok(self, desc: LabDescription, name: str) -> str | None:
        """None if the camera answers RTSP OPTIONS from the gateway with its banner, else what is wrong."""
        cam = desc.camera(name)
        try:
            banner = rtsp_options(desc.gateway.namespace, cam.ip, cam.rtsp_port)
        except OSError as exc:
            return f"{cam.url}: {exc}"
        return None if banner == cam.banner else f"{cam.url} answers as {banner!r}, not {cam.banner!r}"

    # -- the commands

    def up(
        self,
        *,
        trigger_every: float | None = None,
        agent: bool = False,
        mqtt: tuple[str, int] | None = None,
        probe: bool = True,
        probe_interval: float = 30.0,
        video: VideoFormat = DEFAULT_VIDEO,
        timeout: float = READY_TIMEOUT,
        contain: str | None = None,
    ) -> LabStatus:
        """Build the lab and start its processes; returns the status once every part answers.

        ``contain`` (``dry-run`` or ``enforce``) runs the agent with containment: the phone-home of the
        EZVIZ and Dahua personas is then dropped at the gateway (enforce), while the recorder keeps pulling.

        LabError if the lab (this prefix) is already up, or if a part fails to start (the lab is then
        taken down again; the logs stay in the directory).
        """
        if contain is not None:
            if contain not in CONTAIN_MODES:
                raise LabError(f"--contain {contain}: use one of {', '.join(CONTAIN_MODES)}")
            agent = True  # containment runs in the agent
            if shutil.which("nft") is None and not os.access("/usr/sbin/nft", os.X_OK):
                raise LabError("--contain needs nftables' `nft` command (apt-get install nftables)")
        # The lab's own packages win the merge: a missing PyAV is the lab extra's to bring.
        packages = {
            **(AGENT_PACKAGES if agent else {}),
            **(PROBE_PACKAGES if agent and probe else {}),
            **LAB_PACKAGES,
        }
        preflight(packages)
        existing = lab_namespaces(self.prefix)
        if existing:
            raise LabError(
                f"lab {self.prefix} is already up ({len(existing)} namespaces: "
                f"{', '.join(sorted(existing))}); "
                f"run `camwatch lab down --prefix {self.prefix}` first"
            )
        self._check_directory_free()
        if trigger_every is not None and not 1.0 <= trigger_every <= 86_400.0:
            raise LabError(f"--trigger-every {trigger_every:g}: use a number of seconds between 1 and 86400")
        if not 2.0 <= probe_interval <= 86_400.0:
            raise LabError(f"--probe-interval {probe_interval:g}: use seconds between 2 and 86400")
        desc = default_description(self.prefix, str(self.directory), trigger_every=trigger_every, video=video)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._clean_previous_run(desc)
            self._write_files(desc, mqtt, probe, probe_interval, contain)
        except OSError as exc:
            raise LabError(f"cannot write the lab files in {self.directory}: {exc.strerror or exc}") from None
        procs = self._processes(desc, agent)
        try:
            build_network(desc)
            for proc in procs:
                self._start(proc)
            self._wait_ready(desc, procs, timeout)
        except (LabError, NetworkError, OSError) as exc:
            self.down()
            raise LabError(f"lab {self.prefix} did not come up: {exc}") from None
        status = self.status()
        log.info("lab %s up in %s", self.prefix, self.directory)
        return status

    def _check_directory_free(self) -> None:
        """LabError if the directory belongs to another lab that is up (its files would be clobbered)."""
        try:
            other = LabDescription.load(self.paths.lab_json).prefix
        except ValueError:
            return
        if other != self.prefix and lab_namespaces(other):
            raise LabError(
                f"{self.directory} belongs to lab {other}, which is up: use another --dir, or "
                f"`camwatch lab down --prefix {other} --dir {self.directory}` first"
            )

    def down(self) -> list[str]:
        """Stop every process (TERM, then KILL) and delete the namespaces; returns what was done.

        Idempotent, and works after a crash: processes are found by pid file and by namespace.
        """
        check_prefix(self.prefix)
        done: list[str] = []
        namespaces = lab_namespaces(self.prefix) if shutil.which("ip") else []
        pids: dict[int, str] = {}
        for pid_file in sorted(self.paths.run_dir.glob("*.pid")) if self.paths.run_dir.is_dir() else ():
            pid = self._pid(pid_file.stem)
            if pid is not None and _pid_alive(pid, str(self.directory)):
                pids[pid] = pid_file.stem
        for ns in namespaces:
            for pid in namespace_pids(ns):
                pids.setdefault(pid, f"pid {pid} in {ns}")
        for pid, name in pids.items():
            with _ignore_gone():
                os.kill(pid, signal.SIGTERM)
                done.append(f"stopped {name}")
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and any(self._gone_or_reap(pid) is False for pid in pids):
            time.sleep(0.05)
        for pid, name in pids.items():
            if self._gone_or_reap(pid) is False:
                with _ignore_gone():
                    os.kill(pid, signal.SIGKILL)
                    done.append(f"killed {name} (did not stop within {STOP_GRACE:g} s)")
        for child in self._children.values():
            with _ignore_gone():
                child.wait(2.0)
        self._children.clear()
        done += [f"deleted namespace {ns}" for ns in remove_network(self.prefix)]
        for d in (self.paths.run_dir, self.paths.control_dir):
            shutil.rmtree(d, ignore_errors=True)
        return done

    def _gone_or_reap(self, pid: int) -> bool:
        for child in self._children.values():
            if child.pid == pid:
                return child.poll() is not None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat.rpartition(")")[2].split()[:1] == ["Z"]

    def status(self) -> LabStatus:
        """What runs and answers; `problems` names everything that does not."""
        expected_ns = lab_namespaces(self.prefix) if shutil.which("ip") else []
        try:
            desc = self.description()
        except LabError as exc:
            namespaces = dict.fromkeys(expected_ns, True)
            unknown = (str(exc),) if expected_ns else ()
            return LabStatus(self.prefix, str(self.directory), namespaces, problems=unknown)
        problems: list[str] = []
        present = set(expected_ns)
        namespaces = {ns: ns in present for ns in desc.namespaces}
        if not present:
            return LabStatus(self.prefix, str(self.directory), namespaces)
        problems += [f"namespace {ns} is missing" for ns, there in namespaces.items() if not there]
        names = [p.name for p in self._processes(desc, self.paths.pid(AGENT).exists())]
        ns_of = {p.name: p.namespace for p in self._processes(desc, True)}
        processes: list[ProcessStatus] = []
        for name in names:
            alive = self._alive(name)
            ready = self.paths.ready(name).exists() if name != AGENT else alive
            processes.append(
                ProcessStatus(name, ns_of[name], self._pid(name), alive, ready, str(self.paths.log(name)))
            )
            if not alive:
                problems.append(f"{name} is not running: {self._log_tail(name, 2)}")
        recorder = _read_json(self.paths.state("rec")).get("cameras", {})
        cameras: list[dict[str, object]] = []
        for cam in desc.cameras:
            rtsp_problem = (
                self._rtsp_ok(desc, cam.name) if namespaces[desc.gateway.namespace] else "no gateway"
            )
            if rtsp_problem:
                problems.append(rtsp_problem)
            state = _read_json(self.paths.state(cam.name))
            pulled = recorder.get(cam.name, {}) if isinstance(recorder, dict) else {}
            cameras.append(
                {
                    "name": cam.name,
                    "persona": cam.persona,
                    "ip": cam.ip,
                    "mac": cam.mac,
                    "url": cam.url,
                    "rtsp": "ok" if rtsp_problem is None else "failed",
                    "pattern": state.get("pattern"),
                    "misbehaviour_rounds": state.get("rounds"),
                    "recorder_transport": cam.transport,
                    "recorder_packets": pulled.get("packets") if isinstance(pulled, dict) else None,
                    "recorder_connected": pulled.get("connected") if isinstance(pulled, dict) else None,
                }
            )
        svc, gw, inet = desc.services, desc.gateway, desc.internet
        addresses = {
            "gateway": f"{gw.namespace}: {gw.bridge} {gw.bridge_ip}/24 (capture here), "
            f"{gw.office_if} {gw.office_ip}/24, {gw.inet_if} {gw.inet_ip}/24",
            "recorder": f"{desc.recorder.namespace}: {desc.recorder.ip}",
            "office": f"{desc.office.namespace}: {desc.office.ip}",
            "internet": f"{inet.namespace}: {', '.join((inet.ip, *inet.extra_ips))}",
            "services": f"dns/ntp/igd {svc.resolver}; ezviz {svc.ezviz_cloud}:{svc.ezviz_port}/tcp "
            f"{svc.ezviz_stun_port}/udp; easy4ip {svc.easy4ip}:{svc.easy4ip_port}/udp; "
            f"stun {svc.stun_server}; live view {svc.signalling_url}",
        }
        command = f"ip netns exec {desc.gateway.namespace} camwatch run --config {self.paths.agent_config}"
        containment = "off"
        if self.paths.pid(AGENT).exists():
            with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
                doc = yaml.safe_load(self.paths.agent_config.read_text())
                containment = str(doc.get("containment", {}).get("mode", "off"))
        return LabStatus(
            self.prefix,
            str(self.directory),
            namespaces,
            tuple(processes),
            tuple(cameras),
            addresses,
            command,
            tuple(problems),
            containment,
        )

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Stop one lab process (TERM, then KILL) and start it again, waiting until it is ready.

        For tests and demos of a camera that reboots (the recorder and the probe must reconnect).
        """
        desc = self.description()
        procs = {p.name: p for p in self._processes(desc, self.paths.pid(AGENT).exists())}
        if name not in procs:
            raise LabError(f"no process {name} in lab {self.prefix}: choose from {', '.join(procs)}")
        pid = self._pid(name)
        if pid is not None and self._alive(name):
            with _ignore_gone():
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline and not self._gone_or_reap(pid):
                time.sleep(0.05)
            if not self._gone_or_reap(pid):
                with _ignore_gone():
                    os.kill(pid, signal.SIGKILL)
        child = self._children.pop(name, None)
        if child is not None:
            with _ignore_gone():
                child.wait(2.0)
        self.paths.ready(name).unlink(missing_ok=True)
        self._start(procs[name])
        self._wait_ready(desc, [procs[name]], timeout)

    def trigger(self, names: Iterable[str] = ()) -> dict[str, int]:
        """Make the named cameras (and/or `office`, `attacker`) misbehave once; all when none is named.

        Returns each one's trigger count. The events appear in events.jsonl as the behaviours run.
        """
        desc = self.description()
        known = (*desc.camera_names, OFFICE, ATTACKER)
        wanted = list(names) or list(known)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise LabError(f"no {', '.join(unknown)} in lab {self.prefix}: choose from {', '.join(known)}")
        counts: dict[str, int] = {}
        with self._control_lock():
            for name in dict.fromkeys(wanted):
                control = self._control(name).with_trigger()
                control.dump(self.paths.control(name))
                counts[name] = control.trigger
        return counts

    def set_pattern(self, camera: str, pattern: str, wait: float = 5.0) -> None:
        """Switch a camera's video pattern; with `wait`, return once the camera applied it (else LabError)."""
        desc = self.description()
        if camera not in desc.camera_names:
            raise LabError(
                f"no camera {camera} in lab {self.prefix}: choose from {', '.join(desc.camera_names)}"
            )
        if pattern not in PATTERNS:
            raise LabError(f"pattern {pattern!r} is not one of {', '.join(PATTERNS)}")
        with self._control_lock():
            control = self._control(camera)
            Control(pattern, control.trigger).dump(self.paths.control(camera))
        deadline = time.monotonic() + wait
        while wait > 0 and _read_json(self.paths.state(camera)).get("pattern") != pattern:
            if time.monotonic() > deadline:
                raise LabError(
                    f"{camera} did not switch to {pattern} within {wait:g} s (see {self.paths.log(camera)})"
                )
            time.sleep(0.05)

    def events(self) -> list[LabEvent]:
        """The misbehaviours so far (events.jsonl), oldest first; unreadable lines are logged and skipped."""
        try:
            lines = self.paths.events.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out: list[LabEvent] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                out.append(LabEvent.parse(line))
            except ValueError as exc:
                log.warning("%s line %d: %s", self.paths.events, number, exc)
        return out

    def _control(self, name: str) -> Control:
        try:
            return Control.load(self.paths.control(name))
        except ValueError as exc:
            log.warning("%s; starting it again", exc)
            return Control()

    @contextmanager
    def _control_lock(self) -> Iterator[None]:
        # Two `lab trigger` at once must not lose a count: read-modify-write under an exclusive lock.
        if not self.paths.control_dir.is_dir():
            raise LabError(f"lab {self.prefix} is not up (no {self.paths.control_dir})")
        with open(self.paths.control_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _ignore_gone() -> contextlib.suppress:
    return contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired)


def _read_json(path: Path) -> dict[str, object]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}
