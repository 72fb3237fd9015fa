"""The camera lab's topology: the description every lab process reads (`DIR/lab.json`).

One gateway namespace joins three networks, as on a real site::

    <p>-cam1 10.77.0.11 ─┐                         ┌─ office0 10.78.0.1/24 ── <p>-office 10.78.0.10
    <p>-cam2 10.77.0.12 ─┼─ br-cam 10.77.0.1/24 ─ <p>-gw
    <p>-cam3 10.77.0.13 ─┤   (the agent captures    └─ inet0 203.0.113.1/24 ── <p>-inet 203.0.113.10
    <p>-cam4 10.77.0.14 ─┤    here)                                           (+ .20 .30 .40: clouds,
    <p>-rec  10.77.0.2  ─┘                                                       .66: the attacker)

The gateway routes (IP forwarding, no NAT: every lab address is routable in the lab), so a camera's
traffic to the "internet" crosses `br-cam`, where the agent sees it. IPv6 is off in every namespace
(no router solicitations or MLD reports). Every name derives from the prefix, so tests can run their
own lab next to the demo one; only namespaces named exactly `<prefix>-<role>` belong to a lab.
`lab.netns` builds, finds and enters the namespaces.

`LabDescription` is the schema of `lab.json` (frozen dataclasses, `parse` raises `ValueError` naming
the field); `LabEvent` is one line of `events.jsonl`; `Control` is a camera's control file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

__all__ = [
    "PATTERNS",
    "PERSONAS",
    "Camera",
    "Control",
    "Gateway",
    "Host",
    "LabDescription",
    "LabEvent",
    "LabPaths",
    "Services",
    "VideoFormat",
    "check_prefix",
    "default_description",
    "write_atomic",
]

SCHEMA_VERSION: Final = 1
PATTERNS: Final = ("normal", "frozen", "black", "covered")
PERSONAS: Final = ("ezviz", "dahua", "axis", "xiongmai")
TRANSPORTS: Final = ("udp", "tcp")
_PREFIX_RE: Final = re.compile(r"[a-z][a-z0-9]{0,11}")
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9]{0,15}")
_MAC_RE: Final = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def check_prefix(prefix: str) -> str:
    """The prefix, if it can name namespaces; ValueError otherwise."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"prefix {prefix!r} is not valid: use 1-12 lowercase letters and digits starting with a letter "
            "(e.g. cwlab)"
        )
    return prefix


# --- lab.json ------------------------------------------------------------------------------------------


class _Fields:
    """Typed reads from one JSON object, with errors that name the field's path."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, Mapping):
            raise ValueError(f"{where or 'lab.json'}: must be an object, not {type(obj).__name__}")
        self.obj: Mapping[str, Any] = obj
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str) -> object:
        if key not in self.obj:
            raise ValueError(f"{self.path(key)}: missing")
        return self.obj[key]

    def text(self, key: str, pattern: re.Pattern[str] | None = None, choices: Sequence[str] = ()) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise ValueError(f"{self.path(key)}: must be text, not {value!r}")
        if pattern is not None and not pattern.fullmatch(value):
            raise ValueError(f"{self.path(key)}: {value!r} is not well formed")
        if choices and value not in choices:
            raise ValueError(f"{self.path(key)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def ip(self, key: str) -> str:
        value = self.text(key)
        parts = value.split(".")
        if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
            raise ValueError(f"{self.path(key)}: {value!r} is not an IPv4 address")
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{self.path(key)}: must be an integer in [{low}, {high}], not {value!r}")
        return value

    def number(self, key: str, low: float, high: float, optional: bool = False) -> float | None:
        value = self.obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"{self.path(key)}: must be a number in [{low}, {high}], not {value!r}")
        return float(value)

    def items(self, key: str) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise ValueError(f"{self.path(key)}: must be a list, not {value!r}")
        return value

    def sub(self, key: str) -> _Fields:
        return _Fields(self._get(key), self.path(key))


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """What a camera streams (the arguments of `lab.video.VideoSpec`)."""

    width: int = 480
    height: int = 270
    fps: int = 10
    gop: int = 20
    bitrate: int = 400_000

    @classmethod
    def parse(cls, f: _Fields) -> VideoFormat:
        video = cls(
            width=f.integer("width", 16, 4096),
            height=f.integer("height", 16, 4096),
            fps=f.integer("fps", 1, 120),
            gop=f.integer("gop", 1, 1000),
            bitrate=f.integer("bitrate", 10_000, 100_000_000),
        )
        if video.width % 2 or video.height % 2:
            raise ValueError(f"{f.where}: width and height must be even, not {video.width}x{video.height}")
        return video


@dataclass(frozen=True, slots=True)
class Camera:
    """A simulated camera: its namespace, addresses, persona and stream."""

    name: str
    namespace: str
    persona: str  # one of PERSONAS
    ip: str
    mac: str
    banner: str  # RTSP `Server:` header
    model: str
    serial: str
    firmware: str
    transport: str  # how the recorder pulls it: "udp" (RTP/UDP) or "tcp" (interleaved)
    video: VideoFormat = VideoFormat()
    rtsp_port: int = 554
    rtsp_path: str = "/stream1"

    @property
    def url(self) -> str:
        """The camera's RTSP URL."""
        return f"rtsp://{self.ip}:{self.rtsp_port}{self.rtsp_path}"

    @classmethod
    def parse(cls, f: _Fields) -> Camera:
        path = f.text("rtsp_path")
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise ValueError(f"{f.path('rtsp_path')}: {path!r} must start with / and hold no spaces")
        return cls(
            name=f.text("name", _NAME_RE),
            namespace=f.text("namespace"),
            persona=f.text("persona", choices=PERSONAS),
            ip=f.ip("ip"),
            mac=f.text("mac", _MAC_RE),
            banner=f.text("banner"),
            model=f.text("model"),
            serial=f.text("serial"),
            firmware=f.text("firmware"),
            transport=f.text("transport", choices=TRANSPORTS),
            video=VideoFormat.parse(f.sub("video")),
            rtsp_port=f.integer("rtsp_port", 1, 65535),
            rtsp_path=path,
        )


@dataclass(frozen=True, slots=True)
class Host:
    """A namespace with one interface (`eth0`): recorder, office PC, the "internet"."""

    name: str
    namespace: str
    ip: str
    mac: str
    prefix_len: int
    gateway: str
    extra_ips: tuple[str, ...] = ()  # more addresses on eth0 (the internet's service addresses)

    @classmethod
    def parse(cls, f: _Fields) -> Host:
        extra = f.items("extra_ips")
        for i, ip in enumerate(extra):
            _Fields({"ip": ip}, f"{f.path('extra_ips')}[{i}]").ip("ip")
        return cls(
            name=f.text("name", _NAME_RE),
            namespace=f.text("namespace"),
            ip=f.ip("ip"),
            mac=f.text("mac", _MAC_RE),
            prefix_len=f.integer("prefix_len", 1, 32),
            gateway=f.ip("gateway"),
            extra_ips=tuple(str(ip) for ip in extra),
        )


@dataclass(frozen=True, slots=True)
class Gateway:
    """The gateway namespace: the camera bridge (where the agent captures) and the routed uplinks."""

    namespace: str
    bridge: str
    bridge_ip: str
    bridge_mac: str
    office_if: str
    office_ip: str
    inet_if: str
    inet_ip: str
    camera_network: str

    @classmethod
    def parse(cls, f: _Fields) -> Gateway:
        return cls(
            namespace=f.text("namespace"),
            bridge=f.text("bridge"),
            bridge_ip=f.ip("bridge_ip"),
            bridge_mac=f.text("bridge_mac", _MAC_RE),
            office_if=f.text("office_if"),
            office_ip=f.ip("office_ip"),
            inet_if=f.text("inet_if"),
            inet_ip=f.ip("inet_ip"),
            camera_network=f.text("camera_network"),
        )


@dataclass(frozen=True, slots=True)
class Services:
    """Where the lab's services listen, and the names the site resolver answers."""

    resolver: str
    ntp: str
    igd: str
    igd_port: int
    ezviz_cloud: str
    ezviz_port: int
    ezviz_stun_port: int
    easy4ip: str
    easy4ip_port: int
    stun: str
    stun_port: int
    signalling_port: int
    names: tuple[tuple[str, str], ...]  # (lower-case name, IPv4 address)
    attacker: str = "203.0.113.66"  # the attacker's address on the "internet" (lab/attacker.py)

    @property
    def signalling_url(self) -> str:
        """Where a camera posts its WebRTC offer."""
        return f"http://{self.stun}:{self.signalling_port}/offer"

    @property
    def stun_server(self) -> str:
        return f"{self.stun}:{self.stun_port}"

    def lookup(self, name: str) -> str | None:
        """The address the site resolver gives for `name` (case and a final dot ignored)."""
        want = name.lower().rstrip(".")
        return next((ip for n, ip in self.names if n == want), None)

    @classmethod
    def parse(cls, f: _Fields) -> Services:
        names: list[tuple[str, str]] = []
        for i, item in enumerate(f.items("names")):
            entry = _Fields(item, f"{f.path('names')}[{i}]")
            names.append((entry.text("name").lower(), entry.ip("ip")))
        return cls(
            resolver=f.ip("resolver"),
            ntp=f.ip("ntp"),
            igd=f.ip("igd"),
            igd_port=f.integer("igd_port", 1, 65535),
            ezviz_cloud=f.ip("ezviz_cloud"),
            ezviz_port=f.integer("ezviz_port", 1, 65535),
            ezviz_stun_port=f.integer("ezviz_stun_port", 1, 65535),
            easy4ip=f.ip("easy4ip"),
            easy4ip_port=f.integer("easy4ip_port", 1, 65535),
            stun=f.ip("stun"),
            stun_port=f.integer("stun_port", 1, 65535),
            signalling_port=f.integer("signalling_port", 1, 65535),
            names=tuple(names),
            attacker=f.ip("attacker"),
        )

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "names"}
        out["names"] = [{"name": n, "ip": ip} for n, ip in self.names]
        return out


@dataclass(frozen=True, slots=True)
class LabDescription:
    """Everything the lab's processes need to know (`DIR/lab.json`)."""

    prefix: str
    directory: str
    gateway: Gateway
    cameras: tuple[Camera, ...]
    recorder: Host
    office: Host
    internet: Host
    services: Services
    trigger_every: float | None = None  # seconds between automatic misbehaviours; None: only on trigger
    office_pulls: str = "cam1"  # the camera the office PC pulls when triggered
    version: int = SCHEMA_VERSION

    def camera(self, name: str) -> Camera:
        """The camera called `name`; KeyError names the cameras there are."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera {name!r} in lab {self.prefix} (cameras: {', '.join(self.camera_names)})")

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab, the gateway first."""
        hosts = (self.recorder, self.office, self.internet)
        return (self.gateway.namespace, *(c.namespace for c in self.cameras), *(h.namespace for h in hosts))

    @property
    def macs(self) -> tuple[str, ...]:
        """Every MAC address the lab assigns (the site's asset register)."""
        return (
            self.gateway.bridge_mac,
            *(c.mac for c in self.cameras),
            self.recorder.mac,
            self.office.mac,
            self.internet.mac,
        )

    def path(self, *parts: str) -> Path:
        return Path(self.directory, *parts)

    @classmethod
    def parse(cls, obj: object) -> LabDescription:
        """Read a decoded lab.json; ValueError names the bad field."""
        f = _Fields(obj, "")
        version = f.integer("version", 1, 1_000)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"version: lab.json schema {version} is not {SCHEMA_VERSION}; run `lab up` again"
            )
        cameras = tuple(Camera.parse(_Fields(c, f"cameras[{i}]")) for i, c in enumerate(f.items("cameras")))
        if not cameras:
            raise ValueError("cameras: the lab has no camera")
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"cameras: names are not unique: {', '.join(names)}")
        desc = cls(
            prefix=check_prefix(f.text("prefix")),
            directory=f.text("directory"),
            gateway=Gateway.parse(f.sub("gateway")),
            cameras=cameras,
            recorder=Host.parse(f.sub("recorder")),
            office=Host.parse(f.sub("office")),
            internet=Host.parse(f.sub("internet")),
            services=Services.parse(f.sub("services")),
            trigger_every=f.number("trigger_every", 1.0, 86_400.0, optional=True),
            office_pulls=f.text("office_pulls"),
            version=version,
        )
        if desc.office_pulls not in names:
            raise ValueError(
                f"office_pulls: {desc.office_pulls!r} is not one of the cameras {', '.join(names)}"
            )
        return desc

    def to_json(self) -> dict[str, object]:
        def plain(value: object) -> object:
            if isinstance(value, Services):
                return value.to_json()
            if hasattr(value, "__dataclass_fields__"):
                return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__}
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            return value

        out = plain(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabDescription:
        """Read `lab.json`; ValueError says which file and what is wrong."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the lab description: {exc.strerror or exc}") from exc
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        try:
            return cls.parse(obj)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write `lab.json` atomically (readers never see half a file)."""
        write_atomic(Path(path), json.dumps(self.to_json(), indent=1) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def default_description(
    prefix: str = "cwlab",
    directory: str = "/run/camwatch-lab",
    *,
    trigger_every: float | None = None,
    video: VideoFormat = VideoFormat(),
) -> LabDescription:
    """The standard lab: an EZVIZ/Hikvision, a Dahua, a well-behaved Axis camera and an infected Xiongmai
    DVR (see module doc)."""
    check_prefix(prefix)
    cam = "10.77.0"
    cameras = (
        Camera(
            name="cam1",
            namespace=f"{prefix}-cam1",
            persona="ezviz",
            ip=f"{cam}.11",
            mac="44:19:b6:77:00:11",  # Hikvision OUI
            banner="Hikvision-Webs",
            model="DS-2CD2143G2-I",
            serial="DS-2CD2143G2-I20240101AAWRQ77000011",
            firmware="V5.7.3 build 220112",
            transport="udp",
            video=video,
        ),
        Camera(
            name="cam2",
            namespace=f"{prefix}-cam2",
            persona="dahua",
            ip=f"{cam}.12",
            mac="3c:ef:8c:77:00:12",  # Dahua OUI
            banner="Dahua Rtsp Server",
            model="IPC-HFW2431S-S-S2",
            serial="7K0123PAZ77012",
            firmware="2.800.0000000.25.R",
            transport="tcp",
            video=video,
        ),
        Camera(
            name="cam3",
            namespace=f"{prefix}-cam3",
            persona="axis",
            ip=f"{cam}.13",
            mac="ac:cc:8e:77:00:13",  # Axis OUI
            banner="AXIS Media Server",
            model="P3265-LV",
            serial="ACCC8E770013",
            firmware="10.12.165",
            transport="tcp",
            video=video,
        ),
        Camera(
            name="cam4",
            namespace=f"{prefix}-cam4",
            persona="xiongmai",
            ip=f"{cam}.14",
            mac="02:12:41:77:00:14",  # a white-label Xiongmai board: locally administered MAC
            banner="H264DVR 1.0",
            model="AHB7008T-LM",
            serial="a1b2c3d4e5f60714",
            firmware="V4.02.R11.A6380134.10008.131600.00000",
            transport="tcp",
            video=video,
        ),
    )
    services = Services(
        resolver=f"{cam}.1",
        ntp=f"{cam}.1",
        igd=f"{cam}.1",
        igd_port=49152,
        ezviz_cloud="203.0.113.20",
        ezviz_port=8666,
        ezviz_stun_port=6002,
        easy4ip="203.0.113.30",
        easy4ip_port=8800,
        stun="203.0.113.40",
        stun_port=3478,
        signalling_port=8080,
        names=(
            ("litedev.ezvizlife.com", "203.0.113.20"),
            ("dev.ezviz7.com", "203.0.113.20"),
            ("alarm.ezviz7.com", "203.0.113.20"),
            ("devlog.ys7.com", "203.0.113.20"),
            ("www.easy4ipcloud.com", "203.0.113.30"),
            ("easy4ipcloud.com", "203.0.113.30"),
            ("liveview.cloud.lab", "203.0.113.40"),
            ("stun.cloud.lab", "203.0.113.40"),
            ("gateway.site.lab", f"{cam}.1"),
            ("time.site.lab", f"{cam}.1"),
            ("recorder.site.lab", f"{cam}.2"),
            *((f"{c.name}.site.lab", c.ip) for c in cameras),
        ),
    )
    return LabDescription(
        prefix=prefix,
        directory=str(directory),
        gateway=Gateway(
            namespace=f"{prefix}-gw",
            bridge="br-cam",
            bridge_ip=f"{cam}.1",
            bridge_mac="02:77:00:00:00:01",
            office_if="office0",
            office_ip="10.78.0.1",
            inet_if="inet0",
            inet_ip="203.0.113.1",
            camera_network=f"{cam}.0/24",
        ),
        cameras=cameras,
        recorder=Host("rec", f"{prefix}-rec", f"{cam}.2", "00:11:32:77:00:02", 24, f"{cam}.1"),  # Synology
        office=Host("office", f"{prefix}-office", "10.78.0.10", "00:14:22:77:00:10", 24, "10.78.0.1"),  # Dell
        internet=Host(
            "inet",
            f"{prefix}-inet",
            "203.0.113.10",
            "02:77:00:00:00:0a",
            24,
            "203.0.113.1",
            extra_ips=("203.0.113.20", "203.0.113.30", "203.0.113.40", services.attacker),
        ),
        services=services,
        trigger_every=trigger_every,
    )


# --- the lab directory ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabPaths:
    """Where the lab keeps its files: the description, generated configs, logs, pids and control files."""

    root: Path

    @property
    def lab_json(self) -> Path:
        return self.root / "lab.json"

    @property
    def policy(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def agent_config(self) -> Path:
        return self.root / "agent.yaml"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def alerts(self) -> Path:
        return self.root / "alerts.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def control_dir(self) -> Path:
        return self.root / "control"

    def log(self, process: str) -> Path:
        return self.root / f"{process}.log"

    def pid(self, process: str) -> Path:
        return self.run_dir / f"{process}.pid"

    def ready(self, process: str) -> Path:
        """Written by a process once it serves (JSON: what it bound)."""
        return self.run_dir / f"{process}.ready"

    def state(self, process: str) -> Path:
        """A process's own report of what it is doing (JSON, rewritten as it changes)."""
        return self.run_dir / f"{process}.json"

    def control(self, name: str) -> Path:
        return self.control_dir / f"{name}.json"


# --- events.jsonl and control files ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabEvent:
    """One misbehaviour (a line of `events.jsonl`): who did what, and the rules it must raise."""

    ts: float  # Unix seconds, just before the first packet
    camera: str
    ip: str
    mac: str
    behaviour: str  # e.g. "ezviz.phone_home"
    expect: tuple[str, ...]  # camwatch rule ids
    detail: Mapping[str, object] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "ts": round(self.ts, 6),
            "camera": self.camera,
            "ip": self.ip,
            "mac": self.mac,
            "behaviour": self.behaviour,
            "expect": list(self.expect),
        }
        if self.detail:
            out["detail"] = dict(self.detail)
        return out

    @classmethod
    def parse(cls, line: str) -> LabEvent:
        """Read one line of events.jsonl; ValueError says what is wrong."""
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"event is not JSON: {exc}") from exc
        f = _Fields(obj, "event")
        expect = f.items("expect")
        if not all(isinstance(e, str) for e in expect):
            raise ValueError(f"event.expect: must be a list of rule ids, not {expect!r}")
        detail = obj.get("detail", {})
        if not isinstance(detail, dict):
            raise ValueError(f"event.detail: must be an object, not {detail!r}")
        ts = f.number("ts", 0.0, 1e11)
        assert ts is not None
        return cls(
            ts=ts,
            camera=f.text("camera"),
            ip=f.ip("ip"),
            mac=f.text("mac", _MAC_RE),
            behaviour=f.text("behaviour"),
            expect=tuple(str(e) for e in expect),
            detail=detail,
        )

    def append_to(self, path: Path) -> None:
        """Append as one line (one `write` on an O_APPEND file, so concurrent writers do not interleave)."""
        data = (json.dumps(self.to_json(), separators=(",", ":")) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Control:
    """A lab process's control file (`DIR/control/<name>.json`): the video pattern and a trigger counter.

    The manager writes it; the camera polls it and runs its misbehaviours once per increment.
    """

    pattern: str = "normal"
    trigger: int = 0

    @classmethod
    def parse(cls, obj: object) -> Control:
        f = _Fields(obj, "control")
        return cls(pattern=f.text("pattern", choices=PATTERNS), trigger=f.integer("trigger", 0, 2**53))

    @classmethod
    def load(cls, path: Path) -> Control:
        """Read a control file; a missing file is the default, a bad one a ValueError."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            return cls.parse(json.loads(text))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def dump(self, path: Path) -> None:
        write_atomic(path, json.dumps({"pattern": self.pattern, "trigger": self.trigger}) + "\n")

    def with_trigger(self) -> Control:
        return replace(self, trigger=self.trigger + 1)
