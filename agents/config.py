"""The agent's configuration (`camwatch run --config FILE`): one YAML file, validated all at once.

Every key and its default is documented in docs/config.md; examples/agent.yaml is a complete example.
Validation uses the reader the site policy uses (monitor/validation.py), extended with paths checked on
disk: it collects *every* problem (wrong types, unknown keys with a suggestion, out-of-range numbers,
missing files named by ``*_file`` keys, an inline policy's own problems) and raises one
:class:`ConfigError`, one line per problem::

    agent.yaml:12:9: metrics.port: port 70000 is out of range; use a port between 1 and 65535

Relative paths are resolved against the directory of the configuration file (as Prometheus does),
so a configuration and the files next to it can move together.

Decisions worth knowing:

- ``metrics.port`` defaults to 10108, not 9108: 9108 is the graphite_exporter's metrics port in
  Prometheus's default port allocations, and the whole 9100-9999 exporter block there is allocated,
  so a port outside it avoids colliding with any registered exporter on the same appliance.
- An inline ``mqtt.password`` (or ``metrics.basic_auth.password``) is rejected: secrets live in files
  that can be mode 0600 and stay out of configuration management and ``check-config`` output.
- Secrets are not read here (only checked to exist), so the frozen config never holds one and its
  repr can be logged; the sinks read the files while the agent still has its start-up privileges.
- The ``mqtt`` section is :class:`MqttSettings`, the one type the publisher consumes: its defaults
  are defined there only (docs/config.md, "MQTT settings", says which were chosen and why).
- ``stream_probe`` (the optional ``camwatch[stream]`` extra) is checked here for its packages too, so
  a configuration that asks for a probe without PyAV/OpenCV fails ``check-config`` with the fix, not
  the agent with an ImportError. Camera URLs with credentials in them are refused like inline
  passwords: ``username`` and ``password_file`` go beside the URL.
- ``containment`` (:class:`ContainmentConfig`, docs/containment.md) in ``enforce`` mode with a
  ``run_as_user`` is refused: the privilege drop would take away the CAP_NET_ADMIN every later apply and
  quarantine needs. Its never-block hosts are checked against the policy here, so ``check-config``
  reports a host containment would cut off.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import math
import os
import pwd
import re
import socket
import ssl
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agents.contain.plan import ContainmentError, ContainmentPlan, parse_address_or_network
from agents.contain.quarantine import QuarantineSettings
from agents.probe import EXTRA_HINT, missing_modules
from agents.probe.reports import TRANSPORTS, Thresholds
from agents.probe.urls import CameraUrl
from agents.state import STATE_FILES
from monitor.alerts import endpoint
from monitor.policy import POLICY_WORDS, IPNetwork, PolicyError, SitePolicy
from monitor.register import AssetRegister, RegisterError
from monitor.registry import RULES
from monitor.validation import (
    TOPIC_UNSAFE_RE,
    Document,
    FieldProblem,
    Reader,
    ValidationError,
    child,
    describe,
    load_yaml,
    short,
)

__all__ = [
    "AGENT_WORDS",
    "DEFAULT_METRICS_PORT",
    "AgentConfig",
    "BasicAuthConfig",
    "CameraConfig",
    "CaptureConfig",
    "ConfigError",
    "ConfigProblem",
    "ContainmentConfig",
    "LearningConfig",
    "LimitsConfig",
    "MetricsConfig",
    "MqttSettings",
    "Rotation",
    "StreamProbeConfig",
    "SyslogSettings",
    "TimeoutsConfig",
    "load_config",
    "read_password_file",
]

log = logging.getLogger(__name__)

#: Outside Prometheus's 9100-9999 exporter block (all allocated; 9108 is graphite_exporter's).
DEFAULT_METRICS_PORT: Final = 10108
DEFAULT_STATE_DIR: Final = Path("/var/lib/camwatch")
DEFAULT_RUN_AS_USER: Final = "camwatch"
DEFAULT_TOPIC_PREFIX: Final = "camwatch"
MQTT_PORT: Final = 1883
MQTTS_PORT: Final = 8883

PACES: Final = ("realtime", "fast")
METHODS: Final = ("auto", "ring", "recv")

# Linux interface names: at most IFNAMSIZ-1 = 15 bytes, no '/', ':' is an alias, no whitespace.
_IFNAME_RE: Final = re.compile(r"[A-Za-z0-9_.@-]{1,15}")
# useradd's default NAME_REGEX, plus a trailing '$' for machine accounts.
_USER_RE: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")

# Flow rotation, syslog and the asset register (docs/config.md, "Outputs"): read by _exports below.
_EXPORT_KEYS: Final = ("flows_rotation", "syslog", "asset_register")
_ROTATION_KEYS: Final = ("max_size", "max_files", "max_age")
_SYSLOG_KEYS: Final = ("host", "port", "protocol", "ca_file", "cert_file", "key_file", "facility")
_TOP_KEYS: Final = (
    "site", "gateway", "capture", "policy", "policy_file", "metrics", "mqtt",
    "state_dir", "run_as_user", "limits", "timeouts", "alerts_file", "stream_probe",
    "flows_file", "inventory_file", "evidence",
    *_EXPORT_KEYS, "learning", "containment",
)  # fmt: skip
_CAPTURE_KEYS: Final = ("interfaces", "pcap", "pace", "method", "batch_size", "snaplen")
_METRICS_KEYS: Final = ("listen", "port", "tls_cert_file", "tls_key_file", "basic_auth", "max_device_series")
_BASIC_AUTH_KEYS: Final = ("username", "password_file")
_MQTT_KEYS: Final = (
    "host", "port", "tls", "ca_file", "cert_file", "key_file", "username", "password_file",
    "client_id", "topic_prefix", "keepalive", "flows", "inventory",
)  # fmt: skip
_LIMITS_KEYS: Final = ("max_flows", "max_devices", "spool_max_alerts", "spool_max_bytes")
_TIMEOUT_KEYS: Final = ("tcp_idle", "udp_idle", "other_idle", "active")
_PROBE_KEYS: Final = (
    "interval", "duration", "timeout", "transport", "concurrency", "snapshots", "snapshot_dir",
    "snapshot_keep", "thresholds", "cameras",
)  # fmt: skip
_THRESHOLD_KEYS: Final = ("black_luma", "frozen_difference", "covered_detail")
_EVIDENCE_KEYS: Final = ("enabled", "dir", "max_bytes", "max_files", "max_age", "max_file_bytes")
_CAMERA_KEYS: Final = ("name", "url", "username", "password_file", "transport")
_LEARNING_KEYS: Final = ("enabled", "period", "new_devices", "max_observations")
LEARNING_NEW_DEVICES: Final = ("enforce", "learn")
_CONTAINMENT_KEYS: Final = ("mode", "never_block", "check_interval", "audit_file", "name_grace", "quarantine")
_QUARANTINE_KEYS: Final = ("auto_rules", "durations", "window", "max_devices")
CONTAINMENT_MODES: Final = ("off", "dry-run", "enforce")
# A camera name is a Prometheus label value and a directory name for its snapshots.
_CAMERA_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Mistakes difflib cannot guess: the key belongs in another section or has another name.
_KEY_HINTS: Final[Mapping[str, Mapping[str, str]]] = {
    "": {
        "interfaces": "put it under 'capture:' as 'capture.interfaces'",
        "interface": "put it under 'capture:' as 'capture.interfaces' (a list)",
        "pcap": "put it under 'capture:' as 'capture.pcap'",
        "port": "put it under 'metrics:' or 'mqtt:'",
        "listen": "put it under 'metrics:' as 'metrics.listen'",
        "broker": "write an 'mqtt:' section with 'host:'",
        "user": "did you mean 'run_as_user'?",
        "max_flows": "put it under 'limits:' as 'limits.max_flows'",
        "max_devices": "put it under 'limits:' as 'limits.max_devices'",
        # Every key of a site policy written at the top of a configuration (not `site`, which both have).
        **dict.fromkeys(
            ("monitored", "allow", "resolvers", "viewers", "allow_private", "known_devices", "name_grace"),
            "put the site policy under 'policy:' (or point 'policy_file:' at it)",
        ),
        "name": "did you mean 'site'?",
        "hostname": "did you mean 'gateway'?",
        "cameras": "put them under 'stream_probe:' as 'stream_probe.cameras'",
        "probe": "did you mean 'stream_probe'?",
        "alerts": "did you mean 'alerts_file'?",
        "flows": "did you mean 'flows_file'?",
        "inventory": "did you mean 'inventory_file'?",
        "register": "did you mean 'asset_register'?",
        "assets": "did you mean 'asset_register'?",
        "rotation": "did you mean 'flows_rotation'?",
        "siem": "write a 'syslog:' section (docs/siem.md)",
    },
    "flows_rotation": {"max_file_size": "did you mean 'max_size'?", "keep": "did you mean 'max_files'?"},
    "syslog": {"transport": "did you mean 'protocol'?", "server": "did you mean 'host'?"},
    "stream_probe": {
        "url": "put each camera under 'cameras:' (a list of name/url entries)",
        "rtsp_transport": "did you mean 'transport'?",
        "black_luma": "put it under 'thresholds:'",
        "frozen_difference": "put it under 'thresholds:'",
        "covered_detail": "put it under 'thresholds:'",
    },
    "capture": {"interface": "did you mean 'interfaces' (a list)?", "file": "did you mean 'pcap'?"},
    "metrics": {
        "host": "did you mean 'listen'?",
        "address": "did you mean 'listen'?",
        "cert_file": "did you mean 'tls_cert_file'?",
        "key_file": "did you mean 'tls_key_file'?",
        "username": "put it under 'basic_auth:' as 'metrics.basic_auth.username'",
        "password_file": "put it under 'basic_auth:' as 'metrics.basic_auth.password_file'",
    },
    "mqtt": {"broker": "did you mean 'host'?", "user": "did you mean 'username'?"},
    "containment": {
        "auto_rules": "put it under 'quarantine:' as 'containment.quarantine.auto_rules'",
        "durations": "put it under 'quarantine:' as 'containment.quarantine.durations'",
        "max_devices": "put it under 'quarantine:' as 'containment.quarantine.max_devices'",
        "whitelist": "did you mean 'never_block'?",
        "allowlist": "did you mean 'never_block'?",
        "exempt": "did you mean 'never_block'?",
    },
    "containment.quarantine": {
        "rules": "did you mean 'auto_rules'?",
        "duration": "did you mean 'durations'?",
    },
}
#: Top-level keys that make a YAML document an agent configuration rather than a site policy: the agent's
#: own keys and the agent keys people write at the top by mistake (``interfaces:``, which belongs under
#: ``capture:``), less every key a site policy has or is hinted towards.
AGENT_WORDS: Final[frozenset[str]] = (frozenset(_TOP_KEYS) | frozenset(_KEY_HINTS[""])) - POLICY_WORDS

_PASSWORD_FIX: Final = (
    "never write a password in the configuration: put it alone in a file readable only by root "
    "(chmod 600) and name that file with 'password_file:'"
)


# --------------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class ConfigProblem(FieldProblem):
    """A :class:`FieldProblem` and the file it is in: the configuration, or a policy file it names."""

    source: str = "<config>"

    def describe(self, source: str | None = None) -> str:
        """One line: ``<file>:<line>:<column>: <field path>: <problem>; <fix>`` (as a policy's problems)."""
        return FieldProblem.describe(self, source if source is not None else self.source)


class ConfigError(ValidationError[ConfigProblem]):
    """One or more problems in an agent configuration; ``problems`` lists them all, each naming its file."""

    kind = "configuration"

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        super().__init__(problems, problems[0].source if problems else "<config>")

    def _line(self, problem: ConfigProblem) -> str:
        return problem.describe()  # each problem names its own file: the configuration or a policy file

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


# --------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """Where packets come from: live interfaces, or one capture file replayed instead."""

    interfaces: tuple[str, ...] = ()
    pcap: Path | None = None
    pace: str = "realtime"
    method: str = "auto"
    batch_size: int = 4096
    snaplen: int = 65535


@dataclass(frozen=True, slots=True)
class BasicAuthConfig:
    """The one user allowed to scrape; the password is the first line of ``password_file``."""

    username: str
    password_file: Path


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint."""

    listen: str = "0.0.0.0"
    port: int = DEFAULT_METRICS_PORT
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    basic_auth: BasicAuthConfig | None = None
    max_device_series: int = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """The MQTT broker alerts are published to and how (docs/design.md §4.6): the ``mqtt`` section,
    validated by :func:`load_config`, and what the publisher (agents/sinks/mqtt.py) consumes as it is.

    The defaults are here and only here (docs/config.md lists them). Direct construction (tests, tools)
    is not validated: the configuration reader is the one place that checks these values.
    """

    host: str
    site: str
    gateway: str
    port: int = 0
    """0: the standard port, 8883 with ``tls`` and 1883 without (filled in at construction)."""
    tls: bool = False
    ca_file: Path | None = None
    """CA bundle for the broker's certificate; the system's CAs when None."""
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    """Skip the host name check (the certificate chain is still verified). Not a configuration key."""
    username: str | None = None
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    """Never set by the configuration (its repr can be logged): :meth:`with_password` reads the file."""
    client_id: str | None = None
    """None: ``camwatch-<site>-<gateway>`` (:attr:`identifier`), stable, so a restarted agent replaces
    its old connection, and unique per gateway, so two gateways never disconnect each other."""
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    keepalive: int = 60
    """Seconds; the broker publishes the last will after 1.5 times this without a packet."""
    flows: bool = False
    """Publish each flow record on ``<prefix>/<site>/<gateway>/flows`` (QoS 0; agents/sinks/mqtt_data.py)."""
    inventory: bool = True
    """Publish the inventory, retained, on ``<prefix>/<site>/<gateway>/inventory`` when it changes."""
    # Tuning of the publisher, not configuration keys.
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    max_inflight: int = 32
    """Publishes awaiting their PUBACK at once."""
    timeout: float = 10.0
    """Seconds to wait for a CONNACK or a PUBACK before the connection is considered dead."""
    drain_timeout: float = 5.0
    """On shutdown, seconds spent publishing what is still spooled before going offline."""

    def __post_init__(self) -> None:
        if self.port == 0:
            object.__setattr__(self, "port", MQTTS_PORT if self.tls else MQTT_PORT)

    @property
    def identifier(self) -> str:
        """The MQTT client id."""
        return self.client_id or f"camwatch-{self.site}-{self.gateway}"

    @property
    def broker(self) -> str:
        """``host:port``, for messages."""
        return endpoint(self.host, self.port)

    @property
    def status_topic(self) -> str:
        """``<prefix>/<site>/<gateway>/status``."""
        return f"{self.topic_prefix}/{self.site}/{self.gateway}/status"

    def alert_topic(self, alert: Mapping[str, Any]) -> str:
        """``<prefix>/<site>/<gateway>/alerts/<severity>`` for this alert."""
        return f"{self.topic_prefix}/{self.site}/{self.gateway}/alerts/{_severity(alert)}"

    def with_password(self) -> MqttSettings:
        """A copy holding the password from ``password_file``, read now: call it before dropping
        privileges if the file is root-only. OSError or ValueError if it cannot be read."""
        if self.password_file is None:
            return self
        return dataclasses.replace(self, password=read_password_file(self.password_file))


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Bounds that keep memory and disk use flat over months of running."""

    max_flows: int = 200_000
    max_devices: int = 50_000
    spool_max_alerts: int = 100_000
    spool_max_bytes: int = 100 << 20


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """Flow timeouts in seconds: a flow ends after ``*_idle`` without packets, or after ``active``."""

    tcp_idle: float = 300.0
    udp_idle: float = 60.0
    other_idle: float = 60.0
    active: float = 1800.0


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """One camera the stream probe watches; ``name`` is its ``camera`` label in the metrics."""

    name: str
    url: str  # rtsp:// or rtsps://, without credentials
    username: str | None = None
    password_file: Path | None = None
    transport: str | None = None  # None: the probe's transport

    @property
    def password(self) -> str | None:
        """The password from ``password_file`` (read now, while privileged), or None without one."""
        return read_password_file(self.password_file) if self.password_file is not None else None


@dataclass(frozen=True, slots=True)
class StreamProbeConfig:
    """The stream probe (``camwatch[stream]``): which cameras, how often, how long, what is bad."""

    cameras: tuple[CameraConfig, ...]
    snapshot_dir: Path
    interval: float = 60.0
    duration: float = 4.0
    timeout: float = 15.0
    transport: str = "tcp"
    concurrency: int = 1
    snapshots: bool = True
    snapshot_keep: int = 20
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass(frozen=True, slots=True)
class EvidenceConfig:
    """Evidence pcaps of alerts (agents/sinks/evidence.py): where, and how much is kept."""

    dir: Path
    max_bytes: int = 256 << 20
    max_files: int = 10_000
    max_age: float = 30 * 86400.0
    max_file_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class Rotation:
    """How a file output is rotated and how many rotated files are kept (``flows_rotation``)."""

    max_size: int = 64 << 20
    """Bytes; a write that would take the file past this rotates it first."""
    max_files: int = 16
    """Rotated files kept beside the current one; the oldest beyond are deleted."""
    max_age: float | None = None
    """Seconds; rotated files rotated longer ago are deleted (None: no age limit)."""


SYSLOG_PROTOCOLS: Final = ("udp", "tcp", "tls")
#: RFC 5424 facility names and codes (the ones a SIEM feed uses).
SYSLOG_FACILITIES: Final[Mapping[str, int]] = {
    "user": 1, "daemon": 3, "auth": 4, "security": 13, "local0": 16, "local1": 17, "local2": 18,
    "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class SyslogSettings:
    """Where alerts go over syslog and how: the ``syslog`` section, what agents/sinks/syslog.py consumes."""

    host: str
    port: int = 0
    """0: the transport's standard port, 514 (udp, tcp) or 6514 (tls)."""
    protocol: str = "tcp"
    hostname: str = "-"
    """HOSTNAME of every message: the gateway's name."""
    facility: str = "local0"
    app_name: str = "camwatch"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    """Skip the host name check (the chain is still verified). Not a configuration key: tests."""
    # Tuning of the sender, not configuration keys.
    timeout: float = 10.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    drain_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.port == 0:
            object.__setattr__(self, "port", 6514 if self.protocol == "tls" else 514)

    @property
    def receiver(self) -> str:
        """``protocol://host:port`` for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class LearningConfig:
    """The learning mode (``learning:``, docs/learning.md): devices learn for ``period`` seconds, their
    alerts marked as learning (severity 1, not paging), then enforce. ``new_devices``: what a device
    first seen after the site's learning window does, ``enforce`` at once or ``learn`` for a period."""

    enabled: bool = True
    period: float = 7 * 86400.0
    new_devices: str = "enforce"
    max_observations: int = 100_000


@dataclass(frozen=True, slots=True)
class ContainmentConfig:
    """The ``containment`` section: enforcing the site policy on a forwarding gateway with nftables
    (docs/containment.md). ``mode`` is ``off`` (the default), ``dry-run`` (count and log what would be
    blocked, change nothing) or ``enforce``."""

    mode: str = "off"
    #: Never blocked, in addition to the policy's viewers and resolvers (always on the list).
    never_block: tuple[IPNetwork, ...] = ()
    #: How often the agent looks for a changed policy file or newly watched devices (and re-applies).
    check_interval: float = 10.0
    #: The audit log (None: ``<state_dir>/containment/audit.jsonl``).
    audit_file: Path | None = None
    #: How long past a DNS answer's TTL an address learned for a name rule stays allowed.
    name_grace: float = 300.0
    quarantine: QuarantineSettings = field(default_factory=QuarantineSettings)

    @property
    def active(self) -> bool:
        """dry-run or enforce."""
        return self.mode != "off"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A validated agent configuration. Build it with :meth:`from_yaml` or :func:`load_config`."""

    site: str
    gateway: str
    site_policy: SitePolicy
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    policy_file: Path | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    mqtt: MqttSettings | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    run_as_user: str | None = DEFAULT_RUN_AS_USER
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    #: Every alert is also appended here as one JSON line (None: not written to a file).
    alerts_file: Path | None = None
    #: None: no stream probe (and no need for the stream extra).
    stream_probe: StreamProbeConfig | None = None
    #: Every ended flow's record is appended here as one JSON line (None: not written).
    flows_file: Path | None = None
    #: The device inventory, replaced as a whole whenever the state is saved (None: not written).
    inventory_file: Path | None = None
    #: Evidence pcaps of alerts (None: ``evidence: {enabled: false}``).
    evidence: EvidenceConfig | None = None
    #: How ``flows_file`` is rotated and its old files kept (None: never rotated, ``flows_rotation: false``).
    flows_rotation: Rotation | None = field(default_factory=lambda: Rotation())
    #: Every alert also to this syslog receiver (None: no syslog).
    syslog: SyslogSettings | None = None
    #: The site's asset register, a CSV (docs/register.md); None: no register.
    asset_register: Path | None = None
    #: The learning mode (None: no ``learning`` section, every device enforces).
    learning: LearningConfig | None = None
    containment: ContainmentConfig = field(default_factory=ContainmentConfig)
    source: str = "<config>"
    #: Things that work but deserve a look (e.g. staying root); ``check-config`` shows them.
    warnings: tuple[str, ...] = ()

    @property
    def observer(self) -> str:
        """``<site>/<gateway>``: ``observer.name`` in alerts and the MQTT topic infix."""
        return f"{self.site}/{self.gateway}"

    @classmethod
    def from_yaml(
        cls, text: str | bytes, source: str = "<config>", base_dir: Path | None = None
    ) -> AgentConfig:
        """Parse and validate YAML text (bytes must be UTF-8); relative paths are resolved against
        ``base_dir`` (default: the current directory). Raises :class:`ConfigError` listing every problem."""
        try:
            document = load_yaml(text, source, "write a flat configuration like examples/agent.yaml")
        except ValidationError as exc:  # a YAML syntax error: nothing after it can be checked
            raise ConfigError([_sourced(p, source) for p in exc.problems]) from exc
        reader = _Reader(base_dir if base_dir is not None else Path.cwd(), document)
        config = _build(document.data, reader, source)
        here = [*document.duplicates, *reader.problems]
        if here or reader.elsewhere or config is None:
            # Document order reads best; problems without a position (a missing 'site') first.
            ordered = sorted((_sourced(p, source) for p in here), key=lambda p: (p.line or 0, p.column or 0))
            raise ConfigError(ordered + reader.elsewhere)
        return config


def load_config(path: str | os.PathLike[str], *, warnings_level: int = logging.WARNING) -> AgentConfig:
    """Read and validate the configuration file at ``path``; log its warnings (at ``warnings_level``: the
    commands that only read paths from it, `report` and `contain`, keep them for `-v`)."""
    file = Path(path)
    try:
        data = file.read_bytes()  # decoded by the YAML loader: text that is not UTF-8 is one problem
    except OSError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    "", f"cannot read the file ({exc.strerror or exc})", _exists_fix(file), source=str(file)
                )
            ]
        ) from exc
    config = AgentConfig.from_yaml(data, str(file), file.resolve().parent)
    for warning in config.warnings:
        log.log(warnings_level, "%s: %s", file, warning)
    return config


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The password on the first line of ``path`` (without the line break); ValueError if empty."""
    with open(path, encoding="utf-8") as fh:
        password = fh.readline().rstrip("\r\n")
    if not password:
        raise ValueError(f"{path}: the password file is empty (the password goes on its first line)")
    return password


def _severity(alert: Mapping[str, Any]) -> str:
    """The alert's numeric ``event.severity`` as a topic level; ``unknown`` (and a warning) without one."""
    event = alert.get("event")
    value = event.get("severity") if isinstance(event, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        log.warning(
            "alert %r has no numeric event.severity: published under alerts/unknown", alert.get("event")
        )
        return "unknown"
    return str(int(value))


def _sourced(problem: FieldProblem, source: str) -> ConfigProblem:
    if isinstance(problem, ConfigProblem):
        return problem
    return ConfigProblem(problem.field, problem.problem, problem.fix, problem.line, problem.column, source)


def _exists_fix(path: Path) -> str:
    return f"check the path (it is resolved to {path})"


# --------------------------------------------------------------------------------------------------
# Reading values


class _Reader(Reader):
    """The shared reader (monitor/validation.py) plus what only the agent has: paths checked on disk,
    relative to the configuration's directory, and problems found in other files (a policy file)."""

    def __init__(self, base_dir: Path, document: Document | None = None) -> None:
        super().__init__(document, _KEY_HINTS)
        self.base_dir = base_dir
        self.elsewhere: list[ConfigProblem] = []  # in other files (a policy file), positioned already

    def unknown_key(self, path: str, name: str, known: Sequence[str], hints: Mapping[str, str]) -> None:
        if name == "password" and "password_file" in known:
            self.add(child(path, name), "an inline password is not accepted", _PASSWORD_FIX)
            return
        super().unknown_key(path, name, known, hints)

    def path(
        self, sec: Mapping[object, object], path: str, key: str, kind: str, secret: bool = False
    ) -> Path | None:
        """A path, resolved against the config's directory; ``kind`` "file" must exist and be readable,
        "dir" may be missing but must be a directory if it exists, "out" (a file written to) may be
        missing but its directory must exist. Secrets must not be world-readable."""
        full = child(path, key)
        value = sec.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(
                full, f"must be a path, not {describe(value)}", f"write it like {key}: /etc/camwatch/..."
            )
            return None
        resolved = self.base_dir / Path(value).expanduser()
        try:
            st = resolved.stat()
        except FileNotFoundError:
            if kind == "file":
                self.add(full, f"'{short(value)}' does not exist", _exists_fix(resolved))
            elif kind == "out" and not resolved.parent.is_dir():
                self.add(
                    full,
                    f"the directory of '{short(value)}' does not exist",
                    f"create {resolved.parent} or name a file in an existing directory",
                )
            return resolved
        except OSError as exc:
            self.add(
                full, f"'{short(value)}' cannot be checked ({exc.strerror or exc})", _exists_fix(resolved)
            )
            return resolved
        if kind == "out" and not stat.S_ISREG(st.st_mode):
            self.add(full, f"'{short(value)}' exists and is not a regular file", "name a file")
        elif kind == "file" and not stat.S_ISREG(st.st_mode):
            self.add(full, f"'{short(value)}' is not a regular file", _exists_fix(resolved))
        elif kind == "file" and not os.access(resolved, os.R_OK):
            self.add(
                full, f"'{short(value)}' is not readable", "make it readable by the user starting camwatch"
            )
        elif kind == "dir" and not stat.S_ISDIR(st.st_mode):
            self.add(full, f"'{short(value)}' exists and is not a directory", "name a directory")
        elif secret and st.st_mode & stat.S_IROTH:
            self.warn(full, f"{resolved} is readable by every user; chmod 600 it")
        return resolved


# --------------------------------------------------------------------------------------------------
# Sections


def _topic_segment(
    reader: _Reader, top: Mapping[object, object], key: str, default: str | None
) -> str | None:
    """``site`` or ``gateway``: text that can be one MQTT topic segment."""
    example = "depot-7" if key == "site" else "gw-1"
    value = reader.text(top, "", key, default, example, plain=False)
    if value is None or value is default:
        return value
    if not value:
        reader.add(key, "is empty", f"write a name, e.g. {key}: {example}")
        return None
    return reader.topic_segment(key, value)


def _default_gateway() -> str:
    name = TOPIC_UNSAFE_RE.sub("-", socket.gethostname()).strip("-")
    return name or "gateway"


def _capture(reader: _Reader, top: Mapping[object, object]) -> CaptureConfig:
    sec = reader.section(top, "", "capture", _CAPTURE_KEYS)
    interfaces: list[str] = []
    raw = sec.get("interfaces")
    if isinstance(raw, str):
        reader.add(
            "capture.interfaces", f"must be a list, not {describe(raw)}", f"write a list: [{short(raw)}]"
        )
    elif raw is not None and not isinstance(raw, list):
        reader.add("capture.interfaces", f"must be a list, not {describe(raw)}", "write a list, e.g. [eth1]")
    for index, name in enumerate(raw if isinstance(raw, list) else []):
        path = f"capture.interfaces[{index}]"
        if not isinstance(name, str) or not _IFNAME_RE.fullmatch(name):
            reader.add(
                path,
                f"{describe(name)} is not an interface name",
                "write the name as `ip link` shows it, e.g. eth1 (at most 15 characters)",
            )
        elif name in interfaces:
            reader.add(path, f"'{name}' is listed twice", "list each interface once")
        else:
            interfaces.append(name)
    pcap = reader.path(sec, "capture", "pcap", "file")
    if pcap is not None and raw:
        reader.add(
            "capture.pcap",
            "is set together with capture.interfaces; the agent reads one kind of source",
            "keep 'pcap' to replay a file, or 'interfaces' to capture live",
        )
    elif pcap is None and not raw and "pcap" not in sec:
        reader.add(
            "capture",
            "names no packet source",
            "list live interfaces (capture.interfaces: [eth1]) or a file to replay (capture.pcap: FILE)",
        )
    return CaptureConfig(
        interfaces=tuple(interfaces),
        pcap=pcap,
        pace=reader.choice(sec, "capture", "pace", "realtime", PACES),
        method=reader.choice(sec, "capture", "method", "auto", METHODS),
        batch_size=reader.integer(sec, "capture", "batch_size", 4096, 1, 1 << 20),
        # 262144 is tcpdump's maximum; 64 keeps Ethernet + IPv6 + TCP headers.
        snaplen=reader.integer(sec, "capture", "snaplen", 65535, 64, 262144),
    )


def _policy(
    reader: _Reader, top: Mapping[object, object], site: str | None
) -> tuple[SitePolicy, Path | None]:
    raw, has_file = top.get("policy"), top.get("policy_file") is not None
    policy_file = reader.path(top, "", "policy_file", "file")
    if raw is not None and has_file:
        reader.add("policy_file", "is set together with an inline 'policy'", "keep one of the two")
        # Still read both: whichever the user keeps, its problems are known now, not after the next run.
        _inline_policy(reader, raw, site)
        if policy_file is not None:
            _file_policy(reader, policy_file, site)
        return SitePolicy.default(), policy_file
    if raw is not None:
        return _inline_policy(reader, raw, site), None
    if policy_file is not None:
        return _file_policy(reader, policy_file, site), policy_file
    # No policy: the default one (docs/design.md §4.1), named after this site for alerts and logs.
    default = SitePolicy.default()
    return (dataclasses.replace(default, site=site) if site else default), None


def _inline_policy(reader: _Reader, raw: object, site: str | None) -> SitePolicy:
    if not isinstance(raw, Mapping):
        reader.add(
            "policy",
            f"must be a mapping (the site policy, docs/policy.md), not {describe(raw)}",
            "write the policy's keys indented under 'policy:', or name its file with 'policy_file:'",
        )
        return SitePolicy.default()
    data = dict(raw)
    if data.get("site") is None:
        # The configuration names the site already: no need to repeat it (a bad 'site' is reported
        # once, at 'site', not again here).
        data["site"] = site if site is not None else "unnamed"
    # Read with this reader, below 'policy': problems are named policy.<field> and positioned in this file.
    policy = SitePolicy.read(data, reader.at("policy"))
    if policy is None:
        return SitePolicy.default()
    if site is not None and policy.site != site:
        reader.add(
            "policy.site",
            f"'{short(policy.site)}' differs from site '{site}'",
            "leave policy.site out (it defaults to 'site') or make the two the same",
        )
    reader.warnings.extend(f"policy.{warning}" for warning in policy.warnings)
    return policy


def _file_policy(reader: _Reader, path: Path, site: str | None) -> SitePolicy:
    try:
        data = path.read_bytes()
    except OSError as exc:
        if path.is_file():  # a missing file was reported already
            reader.add("policy_file", f"cannot be read ({exc})", _exists_fix(path))
        return SitePolicy.default()
    try:
        policy = SitePolicy.from_yaml(data, str(path))
    except PolicyError as exc:
        reader.elsewhere.extend(_sourced(p, str(path)) for p in exc.problems)
        return SitePolicy.default()
    if site is not None and policy.site != site:
        reader.add(
            "policy_file",
            f"{path} is the policy of site '{short(policy.site)}', but this configuration's site is '{site}'",
            "point policy_file at this site's policy, or make the two site names the same",
        )
    reader.warnings.extend(f"{path}: {warning}" for warning in policy.warnings)
    return policy


def _listen_address(reader: _Reader, sec: Mapping[object, object]) -> str:
    value = reader.text(sec, "metrics", "listen", "0.0.0.0", "0.0.0.0")
    if value is None:
        return "0.0.0.0"
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value.strip("[]")
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", value):
        reader.add(
            "metrics.listen",
            f"'{short(value)}' is not an IP address or host name",
            "write an address to listen on, e.g. 0.0.0.0 (all IPv4), :: (all), or 127.0.0.1",
        )
        return "0.0.0.0"
    return value


def _pair(
    reader: _Reader, path: str, first: tuple[str, Path | None], second: tuple[str, Path | None], what: str
) -> None:
    """Two keys that only make sense together (a certificate and its key)."""
    (a, pa), (b, pb) = first, second
    if (pa is None) != (pb is None):
        missing = b if pb is None else a
        reader.add(
            child(path, missing), f"is missing; {a} and {b} go together", f"give both {what}, or neither"
        )


def _check_cert_pair(reader: _Reader, path: str, cert: Path | None, key: Path | None) -> None:
    """Load the pair now: a key that does not match its certificate is better found by check-config."""
    if cert is None or key is None or not (cert.is_file() and key.is_file()):
        return
    try:
        # An empty password: an encrypted key is reported instead of OpenSSL prompting on a terminal.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=b"")
    except (ssl.SSLError, OSError) as exc:
        reader.add(
            path,
            f"the certificate and key cannot be used together ({short(str(exc), 100)})",
            "give a PEM certificate (chain) and the PEM private key that belongs to it, unencrypted",
        )


def _metrics(reader: _Reader, top: Mapping[object, object]) -> MetricsConfig:
    sec = reader.section(top, "", "metrics", _METRICS_KEYS)
    cert = reader.path(sec, "metrics", "tls_cert_file", "file")
    key = reader.path(sec, "metrics", "tls_key_file", "file", secret=True)
    _pair(reader, "metrics", ("tls_cert_file", cert), ("tls_key_file", key), "a certificate and its key")
    _check_cert_pair(reader, "metrics.tls_cert_file", cert, key)
    auth: BasicAuthConfig | None = None
    auth_sec = reader.section(sec, "metrics", "basic_auth", _BASIC_AUTH_KEYS)
    if auth_sec:
        user = reader.text(auth_sec, "metrics.basic_auth", "username", None, "prometheus")
        password_file = reader.path(auth_sec, "metrics.basic_auth", "password_file", "file", secret=True)
        for name, value in (
            ("username", auth_sec.get("username")),
            ("password_file", auth_sec.get("password_file")),
        ):
            if value is None:
                reader.add(
                    f"metrics.basic_auth.{name}",
                    "is missing",
                    "basic_auth needs both username and password_file",
                )
        if user is not None and ":" in user:
            reader.add(
                "metrics.basic_auth.username", "contains ':'", "HTTP basic auth user names cannot have ':'"
            )
        _check_secret_file(reader, "metrics.basic_auth.password_file", password_file)
        if user is not None and password_file is not None:
            auth = BasicAuthConfig(user, password_file)
        if cert is None:
            reader.warnings.append(
                "metrics.basic_auth: without tls_cert_file the password crosses the network in clear text"
            )
    return MetricsConfig(
        listen=_listen_address(reader, sec),
        port=reader.integer(sec, "metrics", "port", DEFAULT_METRICS_PORT, 1, 65535),
        tls_cert_file=cert,
        tls_key_file=key,
        basic_auth=auth,
        max_device_series=reader.integer(sec, "metrics", "max_device_series", 500, 0, 100_000),
    )


def _check_secret_file(reader: _Reader, path: str, file: Path | None) -> None:
    if file is None or not file.is_file() or not os.access(file, os.R_OK):
        return
    try:
        with file.open("rb") as fh:
            first = fh.readline(4097)
    except OSError as exc:
        reader.add(path, f"cannot be read ({exc.strerror or exc})", _exists_fix(file))
        return
    if not first.rstrip(b"\r\n"):
        reader.add(path, f"{file} is empty (or its first line is)", "write the password on its first line")


def _server_section(
    reader: _Reader,
    top: Mapping[object, object],
    key: str,
    keys: tuple[str, ...],
    server: tuple[str, str],
    more: str,
) -> tuple[Mapping[object, object], str | None] | None:
    """The ``key`` section of a client of one server (``mqtt``, ``syslog``) and its ``host``, checked alike:
    an empty section, a missing host, a URL or a port in the host. None without the section. ``server`` is
    what the server is called and an example host; ``more`` says where the rest of an URL goes."""
    if top.get(key) is None:
        return None
    sec = reader.section(top, "", key, keys)
    what, example = server
    if not sec:
        if isinstance(top.get(key), Mapping):
            reader.add(key, "is empty", f"give at least the {what}: {key}: {{host: {example}}}")
        return None
    host = reader.text(sec, key, "host", None, example)
    if sec.get("host") is None:
        reader.add(f"{key}.host", "is missing", f"name the {what}, e.g. host: {example}")
    elif host is not None and ("://" in host or (":" in host.strip("[]") and host.count(":") == 1)):
        reader.add(
            f"{key}.host",
            f"'{short(host)}' is a URL or has a port",
            f"write the host name or address alone; the port goes in {key}.port, {more}",
        )
    return sec, host


def _tls_files(
    reader: _Reader, sec: Mapping[object, object], key: str, off: tuple[str, str] | None
) -> tuple[Path | None, Path | None, Path | None]:
    """A client's ``ca_file``, ``cert_file`` and ``key_file`` in section ``key``, checked alike (a client
    certificate comes with its key and they match; the CA file holds a certificate). ``off``: TLS is not
    in use, and a file given anyway is a problem with this text and fix."""
    ca_file = reader.path(sec, key, "ca_file", "file")
    cert_file = reader.path(sec, key, "cert_file", "file")
    key_file = reader.path(sec, key, "key_file", "file", secret=True)
    if off is not None:
        for name in ("ca_file", "cert_file", "key_file"):
            if sec.get(name) is not None:
                reader.add(f"{key}.{name}", *off)
    _pair(reader, key, ("cert_file", cert_file), ("key_file", key_file), "a client certificate and its key")
    _check_cert_pair(reader, f"{key}.cert_file", cert_file, key_file)
    if ca_file is not None and ca_file.is_file():
        try:
            ssl.create_default_context().load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as exc:
            reader.add(
                f"{key}.ca_file",
                f"holds no usable CA certificate ({short(str(exc), 80)})",
                "give PEM certificates",
            )
    return ca_file, cert_file, key_file


def _mqtt(
    reader: _Reader, top: Mapping[object, object], site: str | None, gateway: str | None
) -> MqttSettings | None:
    found = _server_section(
        reader, top, "mqtt", _MQTT_KEYS, ("broker", "broker.example.net"), "TLS in mqtt.tls"
    )
    if found is None:
        return None
    sec, host = found
    tls = reader.boolean(sec, "mqtt", "tls", False)
    ca_file, cert_file, key_file = _tls_files(
        reader, sec, "mqtt", None if tls else ("is set but tls is false", "set tls: true, or remove it")
    )
    username = reader.text(sec, "mqtt", "username", None, "camwatch-depot-7")
    password_file = reader.path(sec, "mqtt", "password_file", "file", secret=True)
    _check_secret_file(reader, "mqtt.password_file", password_file)
    if password_file is not None and sec.get("username") is None:
        reader.add(
            "mqtt.password_file",
            "is set without a username",
            "add username: (MQTT sends a password only with one)",
        )
    if password_file is not None and not tls:
        reader.warnings.append("mqtt: the password is sent in clear text; set tls: true")
    # The defaults live in MqttSettings alone; this instance only shows them (and the examples).
    d = MqttSettings(host="", site=site or "site", gateway=gateway or "gateway", tls=tls)
    client_id = reader.text(sec, "mqtt", "client_id", None, d.identifier)
    prefix = reader.text(sec, "mqtt", "topic_prefix", d.topic_prefix, d.topic_prefix) or d.topic_prefix
    if (
        re.search(r"[+#\x00]", prefix)
        or prefix.startswith(("/", "$"))
        or prefix.endswith("/")
        or "//" in prefix
    ):
        reader.add(
            "mqtt.topic_prefix",
            f"'{short(prefix)}' is not a usable topic prefix (wildcards, a leading '$' or '/', "
            "or an empty level)",
            "use one or more levels of letters, digits, '-' and '_', e.g. camwatch or acme/camwatch",
        )
    return MqttSettings(
        host=host or "",
        site=site or "",
        gateway=gateway or "",
        port=reader.integer(sec, "mqtt", "port", d.port, 1, 65535),
        tls=tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        username=username,
        password_file=password_file,
        client_id=client_id,
        topic_prefix=prefix,
        # MQTT's keep alive is a 16-bit number of seconds; below 5 s a busy broker drops clients.
        keepalive=reader.integer(sec, "mqtt", "keepalive", d.keepalive, 5, 65535, unit=" s"),
        flows=reader.boolean(sec, "mqtt", "flows", d.flows),
        inventory=reader.boolean(sec, "mqtt", "inventory", d.inventory),
    )


def _run_as_user(reader: _Reader, top: Mapping[object, object]) -> str | None:
    if "run_as_user" in top and top["run_as_user"] is None:
        if os.geteuid() == 0:
            reader.warnings.append(
                "run_as_user is null: the agent keeps running as root after start-up; "
                f"name an unprivileged user (e.g. {DEFAULT_RUN_AS_USER}) unless the service manager "
                "drops root"
            )
        return None
    user = reader.text(top, "", "run_as_user", DEFAULT_RUN_AS_USER, DEFAULT_RUN_AS_USER)
    if user is None:
        return DEFAULT_RUN_AS_USER
    if not _USER_RE.fullmatch(user):
        reader.add(
            "run_as_user",
            f"'{short(user)}' is not a valid user name",
            "write a system user's name, e.g. camwatch",
        )
        return DEFAULT_RUN_AS_USER
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(user)
        except KeyError:
            reader.warnings.append(
                f"run_as_user '{user}' does not exist on this host: the agent refuses to start as root until "
                f"it does; create it (useradd --system {user})"
            )
    return user


def _limits(reader: _Reader, top: Mapping[object, object]) -> LimitsConfig:
    sec = reader.section(top, "", "limits", _LIMITS_KEYS)
    d = LimitsConfig()
    return LimitsConfig(
        max_flows=reader.integer(sec, "limits", "max_flows", d.max_flows, 100, 50_000_000),
        max_devices=reader.integer(sec, "limits", "max_devices", d.max_devices, 10, 10_000_000),
        spool_max_alerts=reader.integer(
            sec, "limits", "spool_max_alerts", d.spool_max_alerts, 1, 100_000_000
        ),
        spool_max_bytes=reader.size(sec, "limits", "spool_max_bytes", d.spool_max_bytes, 1 << 16, 1 << 40),
    )


def _timeouts(reader: _Reader, top: Mapping[object, object]) -> TimeoutsConfig:
    sec = reader.section(top, "", "timeouts", _TIMEOUT_KEYS)
    d = TimeoutsConfig()
    week = 7 * 86400.0
    result = TimeoutsConfig(
        tcp_idle=reader.seconds(sec, "timeouts", "tcp_idle", d.tcp_idle, 1, week),
        udp_idle=reader.seconds(sec, "timeouts", "udp_idle", d.udp_idle, 1, week),
        other_idle=reader.seconds(sec, "timeouts", "other_idle", d.other_idle, 1, week),
        active=reader.seconds(sec, "timeouts", "active", d.active, 1, week),
    )
    longest = max(result.tcp_idle, result.udp_idle, result.other_idle)
    if sec.get("active") is not None and result.active < longest:
        reader.add(
            "timeouts.active",
            f"{result.active:g} s is shorter than an idle timeout ({longest:g} s)",
            "make the active timeout at least as long as every idle timeout",
        )
    return result


def _stream_probe(reader: _Reader, top: Mapping[object, object], state_dir: Path) -> StreamProbeConfig | None:
    if top.get("stream_probe") is None:
        return None
    sec = reader.section(top, "", "stream_probe", _PROBE_KEYS)
    if not isinstance(top.get("stream_probe"), Mapping):
        return None
    missing = missing_modules()
    if missing:
        reader.add(
            "stream_probe",
            f"needs packages that are not installed ({', '.join(missing)})",
            f"{EXTRA_HINT}, or remove the stream_probe section",
        )
    d = StreamProbeConfig(cameras=(), snapshot_dir=state_dir / "snapshots")
    path = "stream_probe"
    interval = reader.seconds(sec, path, "interval", d.interval, 1, 86400)
    duration = reader.seconds(sec, path, "duration", d.duration, 0.5, 60)
    timeout = reader.seconds(sec, path, "timeout", d.timeout, 1, 600)
    if timeout <= duration:
        reader.add(
            "stream_probe.timeout",
            f"{timeout:g} s is not longer than the duration ({duration:g} s)",
            "give the probe time to connect and judge the frames: e.g. timeout at least duration + 5 s",
        )
    transport = reader.choice(sec, path, "transport", d.transport, TRANSPORTS)
    concurrency = reader.integer(sec, path, "concurrency", d.concurrency, 1, 64)
    thresholds_sec = reader.section(sec, path, "thresholds", _THRESHOLD_KEYS)
    t = Thresholds()
    tpath = "stream_probe.thresholds"
    thresholds = Thresholds(
        black_luma=reader.number(thresholds_sec, tpath, "black_luma", t.black_luma, 0, 255),
        frozen_difference=reader.number(
            thresholds_sec, tpath, "frozen_difference", t.frozen_difference, 0, 255
        ),
        covered_detail=reader.number(thresholds_sec, tpath, "covered_detail", t.covered_detail, 0, 1),
    )
    cameras = _cameras(reader, sec)
    if cameras and interval * concurrency < timeout * len(cameras):
        reader.warnings.append(
            f"stream_probe: {len(cameras)} camera{'s' if len(cameras) != 1 else ''} at up to {timeout:g} s "
            f"each, {concurrency} at a time, "
            f"may not all fit in the {interval:g} s interval; probes then run late (raise interval or "
            "concurrency)"
        )
    return StreamProbeConfig(
        cameras=tuple(cameras),
        snapshot_dir=reader.path(sec, path, "snapshot_dir", "dir") or d.snapshot_dir,
        interval=interval,
        duration=duration,
        timeout=timeout,
        transport=transport,
        concurrency=concurrency,
        snapshots=reader.boolean(sec, path, "snapshots", d.snapshots),
        snapshot_keep=reader.integer(sec, path, "snapshot_keep", d.snapshot_keep, 1, 100_000),
        thresholds=thresholds,
    )


def _evidence(reader: _Reader, top: Mapping[object, object], state_dir: Path) -> EvidenceConfig | None:
    """The ``evidence`` section: on by default, in ``state_dir/evidence``."""
    sec = reader.section(top, "", "evidence", _EVIDENCE_KEYS)
    path = "evidence"
    if not reader.boolean(sec, path, "enabled", True):
        return None
    d = EvidenceConfig(dir=state_dir / "evidence")
    return EvidenceConfig(
        dir=reader.path(sec, path, "dir", "dir") or d.dir,
        max_bytes=reader.size(sec, path, "max_bytes", d.max_bytes, 1 << 20, 1 << 40),
        max_files=reader.integer(sec, path, "max_files", d.max_files, 1, 10_000_000),
        max_age=reader.seconds(sec, path, "max_age", d.max_age, 3600, 3650 * 86400.0),
        max_file_bytes=reader.size(sec, path, "max_file_bytes", d.max_file_bytes, 1 << 16, 64 << 20),
    )


def _cameras(reader: _Reader, sec: Mapping[object, object]) -> list[CameraConfig]:
    raw = sec.get("cameras")
    example = "cameras: [{name: entrance, url: rtsp://10.20.0.11:554/stream1}]"
    if raw is None or raw == []:
        reader.add("stream_probe.cameras", "lists no camera", f"list the cameras to watch, e.g. {example}")
        return []
    if not isinstance(raw, list):
        reader.add("stream_probe.cameras", f"must be a list, not {describe(raw)}", f"write e.g. {example}")
        return []
    cameras: list[CameraConfig] = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        path = f"stream_probe.cameras[{index}]"
        if not isinstance(entry, Mapping):
            reader.add(
                path, f"must be a mapping, not {describe(entry)}", "give name: and url: for each camera"
            )
            continue
        reader.keys(entry, path, _CAMERA_KEYS)
        name = reader.text(entry, path, "name", None, "entrance")
        url = reader.text(entry, path, "url", None, "rtsp://10.20.0.11:554/stream1")
        for key, value in (("name", entry.get("name")), ("url", entry.get("url"))):
            if value is None:
                reader.add(f"{path}.{key}", "is missing", "every camera needs a name and an rtsp:// url")
        if name is not None and not _CAMERA_NAME_RE.fullmatch(name):
            reader.add(
                f"{path}.name",
                f"'{short(name)}' is not a usable camera name",
                "use up to 64 letters, digits, '-', '_' and '.', starting with a letter or digit "
                "(it is a metric label and a directory name)",
            )
            name = None
        elif name is not None and name in names:
            reader.add(
                f"{path}.name", f"'{name}' is used by another camera", "give every camera its own name"
            )
            name = None
        if name is not None:
            names.add(name)
        if url is not None:
            url = _camera_url(reader, f"{path}.url", url)
        username = reader.text(entry, path, "username", None, "admin")
        password_file = reader.path(entry, path, "password_file", "file", secret=True)
        _check_secret_file(reader, f"{path}.password_file", password_file)
        if password_file is not None and entry.get("username") is None:
            reader.add(
                f"{path}.password_file",
                "is set without a username",
                "add username: (RTSP sends a password with one)",
            )
        transport = reader.choice(entry, path, "transport", "", TRANSPORTS) if "transport" in entry else None
        if name is not None and url is not None:
            cameras.append(CameraConfig(name, url, username, password_file, transport or None))
    return cameras


def _camera_url(reader: _Reader, path: str, url: str) -> str | None:
    try:
        parsed = CameraUrl.parse(url)
    except ValueError as exc:
        reader.add(
            path, f"'{short(url)}' is not a camera URL: {exc}", "write e.g. rtsp://10.20.0.11:554/stream1"
        )
        return None
    if parsed.username is not None or parsed.password is not None:
        # Never echo the URL: it holds a password.
        reader.add(
            path,
            "has credentials in it (user:password@)",
            "write the URL without them and give username: and password_file: beside it; " + _PASSWORD_FIX,
        )
        return None
    return parsed.redacted


def _learning(reader: _Reader, top: Mapping[object, object]) -> LearningConfig | None:
    """The ``learning`` section (docs/config.md, docs/learning.md)."""
    if top.get("learning") is None:
        return None
    sec = reader.section(top, "", "learning", _LEARNING_KEYS)
    if not isinstance(top.get("learning"), Mapping):
        return None
    d = LearningConfig()
    return LearningConfig(
        enabled=reader.boolean(sec, "learning", "enabled", d.enabled),
        # Below an hour a device has not shown its daily habits (NTP, firmware checks, the cloud VMS).
        period=reader.seconds(sec, "learning", "period", d.period, 3600, 90 * 86400),
        new_devices=reader.choice(sec, "learning", "new_devices", d.new_devices, LEARNING_NEW_DEVICES),
        max_observations=reader.integer(
            sec, "learning", "max_observations", d.max_observations, 1000, 10_000_000
        ),
    )


_OUTPUT_EXAMPLES: Final = {
    "alerts_file": "alerts.jsonl",
    "flows_file": "flows.jsonl",
    "inventory_file": "devices.json",
}


def _outputs(
    reader: _Reader, top: Mapping[object, object], state_dir: Path, alerts_file: Path | None
) -> tuple[Path | None, Path | None]:
    """``flows_file`` and ``inventory_file``: files the agent writes, each a file of its own, and none of
    them (``alerts_file`` included) one of the agent's state files."""
    state = state_dir.resolve()
    flows_file = _output_path(reader, top, "flows_file", state)
    inventory_file = _output_path(reader, top, "inventory_file", state)
    taken: dict[Path, str] = {}
    for key, path in (
        ("alerts_file", alerts_file),
        ("flows_file", flows_file),
        ("inventory_file", inventory_file),
    ):
        if path is None:
            continue
        resolved = path.resolve()
        if resolved in taken:
            reader.add(key, f"is the same file as {taken[resolved]}", "give each output a file of its own")
        elif resolved.parent == state and resolved.name in STATE_FILES:
            reader.add(
                key,
                f"'{resolved.name}' in state_dir is one of the agent's own state files",
                f"name another file, e.g. {_OUTPUT_EXAMPLES[key]}",
            )
        taken.setdefault(resolved, key)
    return flows_file, inventory_file


def _output_path(reader: _Reader, top: Mapping[object, object], key: str, state: Path) -> Path | None:
    """A file the agent writes; directly in a state directory that does not exist yet is fine (the agent
    creates it at start-up), anywhere else its directory must exist."""
    value = top.get(key)
    if isinstance(value, str) and value.strip() and not state.exists():
        path = reader.base_dir / Path(value).expanduser()
        if path.parent.resolve() == state:
            return path
    return reader.path(top, "", key, "out")


def _build(data: object, reader: _Reader, source: str) -> AgentConfig | None:
    if data is None:
        reader.add("", "the configuration is empty", "start it with 'site: <name>' (see examples/agent.yaml)")
        return None
    if not isinstance(data, Mapping):
        reader.add("", f"must be a mapping of keys, not {describe(data)}", "see examples/agent.yaml")
        return None
    reader.keys(data, "", _TOP_KEYS)
    site = _topic_segment(reader, data, "site", None)
    if data.get("site") is None:
        reader.add("site", "is missing", "add a line like site: depot-7")
    gateway = _topic_segment(reader, data, "gateway", _default_gateway())
    capture = _capture(reader, data)
    policy, policy_file = _policy(reader, data, site)
    metrics = _metrics(reader, data)
    mqtt = _mqtt(reader, data, site, gateway)
    state_dir = reader.path(data, "", "state_dir", "dir") or DEFAULT_STATE_DIR
    run_as_user = _run_as_user(reader, data)
    limits = _limits(reader, data)
    timeouts = _timeouts(reader, data)
    alerts_file = reader.path(data, "", "alerts_file", "out")
    stream_probe = _stream_probe(reader, data, state_dir)
    flows_file, inventory_file = _outputs(reader, data, state_dir, alerts_file)
    evidence = _evidence(reader, data, state_dir)
    flows_rotation, syslog, asset_register = _exports(reader, data, gateway, flows_file)
    learning = _learning(reader, data)
    containment = _containment(reader, data, policy, run_as_user)
    if reader.problems or reader.elsewhere or site is None or gateway is None:
        return None
    return AgentConfig(
        site=site,
        gateway=gateway,
        site_policy=policy,
        capture=capture,
        policy_file=policy_file,
        metrics=metrics,
        mqtt=mqtt,
        state_dir=state_dir,
        run_as_user=run_as_user,
        limits=limits,
        timeouts=timeouts,
        alerts_file=alerts_file,
        stream_probe=stream_probe,
        flows_file=flows_file,
        inventory_file=inventory_file,
        evidence=evidence,
        flows_rotation=flows_rotation,
        syslog=syslog,
        asset_register=asset_register,
        learning=learning,
        containment=containment,
        source=source,
        warnings=tuple(reader.warnings),
    )


# --------------------------------------------------------------------------------------------------
# Exports: flow rotation, syslog, the asset register (docs/config.md, "Outputs"; docs/siem.md;
# docs/register.md)


def _exports(
    reader: _Reader, top: Mapping[object, object], gateway: str | None, flows_file: Path | None
) -> tuple[Rotation | None, SyslogSettings | None, Path | None]:
    return (
        _flows_rotation(reader, top, flows_file),
        _syslog(reader, top, gateway),
        _asset_register(reader, top),
    )


def _flows_rotation(
    reader: _Reader, top: Mapping[object, object], flows_file: Path | None
) -> Rotation | None:
    raw = top.get("flows_rotation")
    if raw is False:
        return None  # never rotated by camwatch (an external logrotate with copytruncate)
    d = Rotation()
    if raw is None:
        return d
    sec = reader.section(top, "", "flows_rotation", _ROTATION_KEYS)
    if flows_file is None and isinstance(raw, Mapping):
        reader.add(
            "flows_rotation", "is set but flows_file is not", "set flows_file, or remove flows_rotation"
        )
    max_age = None
    if sec.get("max_age") is not None:
        max_age = reader.seconds(sec, "flows_rotation", "max_age", 30 * 86400.0, 3600, 3650 * 86400.0)
    return Rotation(
        max_size=reader.size(sec, "flows_rotation", "max_size", d.max_size, 64 << 10, 1 << 40),
        max_files=reader.integer(sec, "flows_rotation", "max_files", d.max_files, 1, 100_000),
        max_age=max_age,
    )


def _syslog(reader: _Reader, top: Mapping[object, object], gateway: str | None) -> SyslogSettings | None:
    found = _server_section(
        reader,
        top,
        "syslog",
        _SYSLOG_KEYS,
        ("receiver", "siem.example.net"),
        "the transport in syslog.protocol",
    )
    if found is None:
        return None
    sec, host = found
    protocol = reader.choice(sec, "syslog", "protocol", "tcp", SYSLOG_PROTOCOLS)
    off = (f"is set but protocol is {protocol}", "set protocol: tls, or remove it")
    ca_file, cert_file, key_file = _tls_files(reader, sec, "syslog", None if protocol == "tls" else off)
    if protocol == "udp":
        reader.warnings.append(
            "syslog: over udp an alert is lost without a trace when the receiver or the network drops it; "
            "use tcp or tls"
        )
    elif protocol == "tcp" and host not in ("127.0.0.1", "::1", "localhost"):
        reader.warnings.append("syslog: alerts cross the network in clear text over tcp; use protocol: tls")
    d = SyslogSettings(host="", protocol=protocol)
    return SyslogSettings(
        host=host or "",
        port=reader.integer(sec, "syslog", "port", d.port, 1, 65535),
        protocol=protocol,
        hostname=gateway or "-",
        facility=reader.choice(sec, "syslog", "facility", d.facility, tuple(SYSLOG_FACILITIES)),
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
    )


def _asset_register(reader: _Reader, top: Mapping[object, object]) -> Path | None:
    """The register's path; its rows are checked now, so ``check-config`` names every bad one (warnings:
    a bad row costs only itself, the agent runs with the good ones)."""
    path = reader.path(top, "", "asset_register", "file")
    if path is None or not path.is_file():
        return path
    try:
        register = AssetRegister.load(path)
    except RegisterError as exc:
        reader.add("asset_register", exc.problem, exc.fix)
        return path
    reader.warnings.extend(register.describe_problems())
    return path


# Containment (docs/containment.md)


def _containment(
    reader: _Reader, top: Mapping[object, object], policy: SitePolicy, run_as_user: str | None
) -> ContainmentConfig:
    sec = reader.section(top, "", "containment", _CONTAINMENT_KEYS)
    d = ContainmentConfig()
    path = "containment"
    raw_mode = sec.get("mode")
    # YAML 1.1 reads an unquoted `off` as false: that is what people write, and it means off.
    mode = "off" if raw_mode is False else reader.choice(sec, path, "mode", d.mode, CONTAINMENT_MODES)
    never_block: list[IPNetwork] = []
    raw = sec.get("never_block")
    if raw is not None:
        for index, item in enumerate(
            reader.as_list(raw, "containment.never_block", "[10.20.0.2, 10.9.0.0/28]") or []
        ):
            try:
                never_block.append(
                    parse_address_or_network(str(item)) if isinstance(item, str) else _not_address(item)
                )
            except ValueError as exc:
                reader.add(
                    f"containment.never_block[{index}]",
                    str(exc),
                    "write an address (10.20.0.2) or a network (10.20.0.0/28)",
                )
    qsec = reader.section(sec, path, "quarantine", _QUARANTINE_KEYS)
    qd = QuarantineSettings()
    qpath = "containment.quarantine"
    durations: list[float] = []
    raw_durations = qsec.get("durations")
    if raw_durations is not None:
        items = reader.as_list(raw_durations, f"{qpath}.durations", "[1h, 6h, 1d]") or []
        for index, item in enumerate(items):
            key = f"durations[{index}]"
            value = reader.seconds({key: item}, qpath, key, 0.0, 60, 30 * 86400)
            if value:
                durations.append(value)
        if not items:
            reader.add(f"{qpath}.durations", "is empty", "list at least one duration, e.g. [1h, 6h, 1d]")
    auto: list[str] = []
    raw_rules = qsec.get("auto_rules")
    if raw_rules is not None:
        for index, item in enumerate(
            reader.as_list(raw_rules, f"{qpath}.auto_rules", "[p2p.nat_traversal]") or []
        ):
            if isinstance(item, str) and item in RULES:
                auto.append(item)
            else:
                close = difflib.get_close_matches(str(item), list(RULES), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                reader.add(
                    f"{qpath}.auto_rules[{index}]",
                    f"{describe(item)} is not a camwatch rule id",
                    f"{hint}use rule ids of docs/design.md §4.2, e.g. p2p.nat_traversal",
                )
    quarantine = QuarantineSettings(
        durations=tuple(durations) or qd.durations,
        window=reader.seconds(qsec, qpath, "window", qd.window, 3600, 365 * 86400),
        max_devices=reader.integer(qsec, qpath, "max_devices", qd.max_devices, 1, 10_000),
        auto_rules=frozenset(auto),
    )
    config = ContainmentConfig(
        mode=mode,
        never_block=tuple(never_block),
        check_interval=reader.seconds(sec, path, "check_interval", d.check_interval, 1, 3600),
        audit_file=reader.path(sec, path, "audit_file", "out"),
        name_grace=reader.seconds(sec, path, "name_grace", d.name_grace, 0, 86400),
        quarantine=quarantine,
    )
    if not config.active:
        return config
    if auto and mode == "dry-run":
        reader.warnings.append(
            "containment.quarantine.auto_rules: in dry-run mode the quarantines are only logged and audited"
        )
    try:
        ContainmentPlan.build(policy, never_block=never_block)
    except ContainmentError as exc:
        for problem in exc.problems:
            what, _, fix = problem.partition("; ")
            reader.add("containment.never_block", what, fix or "see docs/containment.md")
    if mode == "enforce" and run_as_user is not None:
        reader.add(
            "containment.mode",
            "enforce needs CAP_NET_ADMIN for the whole run (reloads, quarantines), and run_as_user drops it "
            "after start-up",
            "set run_as_user: null and start the agent as root, or as a service user with "
            'AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN (docs/containment.md, "Privileges")',
        )
    return config


def _not_address(item: object) -> IPNetwork:
    raise ValueError(f"{describe(item)} is not an IP address or network")
