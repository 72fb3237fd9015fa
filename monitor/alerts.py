"""Alert records (ECS; docs/design.md, "Alert record"), stable ids, duplicate suppression, incidents.

The rules themselves are declared by their modules under ``monitor/rules/``.

Two kinds of grouping, both in capture time:

- an **alert's** ``event.id`` is its identity (``incident_id``: the rule, the observer and what the
  alert is about); the gate lets the first through and suppresses repeats for ``realert_after_s``;
- an **incident** groups the alerts about one device that follow each other (each less than
  ``INCIDENT_IDLE_S`` after the previous one): the phone-home of one camera (its DNS lookup, its
  connection, its P2P), an attack and what the device did next. Every member alert carries the incident's
  id (``camwatch.incident.id``, derived from the device and the incident's first alert, never from time).
  A device gets at most ``CAP_PER_RULE`` alerts of one rule per ``CAP_WINDOW_S`` and, past
  ``CAP_PER_DEVICE`` in all, only the first alert of each rule; the rest are folded into the incident
  (counted, ``camwatch.incident.folded`` in the next alert that goes out, and in the engine's statistics).
  For the rules of ``CAP_BY_PORT`` a destination port not alerted on yet still gets one alert past the
  rule's cap: a reverse shell on 4444 or a miner on 3333 is not the vendor phone-home on 443 that used up
  the rule's budget (within the device cap).
  A rule that absorbs others (a scan its connections' egress alerts) does so for ``CAP_WINDOW_S`` after it
  went out: a shell opened twenty minutes later is news, not part of the scan.
  Critical alerts (severity 5) are never folded and do not count against the device's cap: an attack's
  exploit alerts must not crowd out the password guessing or the factory-password login that follows.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from monitor.evidence import Evidence

NS = 1_000_000_000
#: ``event.severity`` and what it means (docs/design.md §4.2); MQTT topics end in the number.
SEVERITY_NAMES = {2: "info", 3: "warning", 4: "high", 5: "critical"}


def endpoint(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (RFC 3986): ``2001:db8::1:23`` would read as one address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def severity_name(severity: object) -> str:
    """The word for an ``event.severity`` (``info`` ... ``critical``), or the value as text."""
    return SEVERITY_NAMES.get(severity, str(severity)) if isinstance(severity, int) else str(severity)


#: Severities (``event.severity``): 2 info, 3 warning, 4 high, 5 critical.
INFO, WARNING, HIGH, CRITICAL = 2, 3, 4, 5
#: An incident ends when its device raised nothing for this long (capture time).
INCIDENT_IDLE_S: Final = 3600.0
#: Per device and window: alerts of one rule, and alerts in all, before the rest are folded.
CAP_WINDOW_S: Final = 600.0
CAP_PER_RULE: Final = 3
CAP_PER_DEVICE: Final = 10
#: Rules whose per-rule cap counts each destination port apart (see the module docs).
CAP_BY_PORT: Final = frozenset({"egress.unexpected_destination"})
#: Devices whose incidents are followed at once (the least recently active is forgotten).
MAX_INCIDENT_DEVICES: Final = 10_000


@dataclass(frozen=True, slots=True)
class Rule:
    """A detection rule: the id is a stable contract, the name is for people."""

    id: str
    name: str
    severity: int
    category: tuple[str, ...] = ("network",)
    type: tuple[str, ...] = ("connection",)
    #: Rules whose alerts about the same device are folded into this rule's incident once it has raised
    #: (a scan's own connections are not one egress alert each).
    absorbs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str | None = None
    port: int | None = None
    mac: str | None = None
    domain: str | None = None

    def to_ecs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ip is not None:
            out["ip"] = self.ip
        if self.port is not None:
            out["port"] = self.port
        if self.mac is not None:
            out["mac"] = self.mac
        if self.domain is not None:
            out["domain"] = self.domain
        return out


@dataclass(frozen=True, slots=True)
class Alert:
    """One incident. `event_id` is derived from the incident's identity, not from time."""

    rule: Rule
    timestamp_ns: int
    event_id: str
    observer: str
    message: str
    source: Endpoint = field(default_factory=Endpoint)
    destination: Endpoint = field(default_factory=Endpoint)
    transport: str | None = None
    protocol: str | None = None
    community_id: str | None = None
    device_id: str | None = None
    manufacturer: str | None = None
    start_ns: int | None = None  # when what the alert is about began, if earlier than the alert
    #: More ECS fields by dotted name (``vulnerability.id``, ``event.outcome``, ``camwatch.scan``...).
    fields: tuple[tuple[str, Any], ...] = ()
    #: The watched device's address, when the alert's ``device`` is not its ``source`` or has no MAC.
    device_ip: str | None = None
    #: Set by the gate: the incident this alert belongs to.
    incident: Incident | None = None
    #: The packets behind the alert (monitor/evidence.py); never in the record: a sink writes them out.
    evidence: Evidence | None = field(default=None, repr=False, compare=False)

    @property
    def device_key(self) -> str | None:
        """What identifies the alert's device for incidents: its MAC, else its address."""
        return self.device_id or self.device_ip

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready ECS record of docs/design.md §4.2."""
        rec: dict[str, Any] = {
            "@timestamp": iso_timestamp(self.timestamp_ns),
            "event": {
                "kind": "alert",
                "id": self.event_id,
                "severity": self.rule.severity,
                "category": list(self.rule.category),
                "type": list(self.rule.type),
            },
            "rule": {"id": self.rule.id, "name": self.rule.name},
        }
        if self.start_ns is not None:
            rec["event"]["start"] = iso_timestamp(self.start_ns)
        src, dst = self.source.to_ecs(), self.destination.to_ecs()
        if src:
            rec["source"] = src
        if dst:
            rec["destination"] = dst
        net = {
            k: v
            for k, v in (
                ("transport", self.transport),
                ("protocol", self.protocol),
                ("community_id", self.community_id),
            )
            if v is not None
        }
        if net:
            rec["network"] = net
        if self.device_id is not None:
            rec["device"] = {"manufacturer": self.manufacturer, "id": self.device_id}
        rec["observer"] = {"name": self.observer}
        rec["message"] = self.message
        for name, value in self.fields:
            _put(rec, name, list(value) if isinstance(value, tuple) else value)
        if self.incident is not None:
            _put(rec, "camwatch.incident", self.incident.to_ecs())
        return rec


def _put(rec: dict[str, Any], dotted: str, value: Any) -> None:
    """``rec["a"]["b"] = value`` for ``a.b`` (intermediate objects created)."""
    *parents, leaf = dotted.split(".")
    node = rec
    for name in parents:
        child = node.get(name)
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    node[leaf] = value


@dataclass(frozen=True, slots=True)
class Incident:
    """The incident an alert belongs to, as far as it went when the alert was raised."""

    id: str
    start_ns: int
    alerts: int  # member alerts let through so far, this one included
    folded: int  # member alerts folded in (not sent) so far

    def to_ecs(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "start": iso_timestamp(self.start_ns),
            "alerts": self.alerts,
            "folded": self.folded,
        }


def incident_id(rule_id: str, observer: str, *parts: object) -> str:
    """Stable id of an incident: the same rule, observer and identifying parts give the same id."""
    text = "\x1f".join([rule_id, observer, *(str(p) for p in parts)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def iso_timestamp(ts_ns: int) -> str:
    dt = datetime.fromtimestamp(ts_ns // NS, tz=UTC)
    ms = (ts_ns % NS) // 1_000_000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


class AlertGate:
    """Lets the first alert of an incident through, then suppresses repeats for a while; groups what
    passes into incidents and caps a device's alerts (:meth:`let_through`).

    Time is the capture time carried by the alerts, so a replay is deterministic.
    """

    def __init__(self, realert_after_s: float = 86_400.0, max_tracked: int = 100_000) -> None:
        self._window = int(realert_after_s * NS)
        self._max = max_tracked
        self._last: dict[str, int] = {}
        self.suppressed = 0
        self.evicted = 0  # incidents forgotten at the bound (a repeat of one would alert again)
        self.incidents = Incidents()

    def let_through(self, alert: Alert) -> Alert | None:
        """The alert as it goes out (with its incident), or None when it is a repeat or folded."""
        if not self.admit(alert):
            return None
        return self.incidents.group(alert)

    def admit(self, alert: Alert) -> bool:
        last = self._last.get(alert.event_id)
        if last is not None and alert.timestamp_ns - last < self._window:
            self.suppressed += 1
            return False
        if last is None and len(self._last) >= self._max:
            # Forget the oldest incident (dicts keep insertion order) to stay bounded.
            del self._last[next(iter(self._last))]
            self.evicted += 1
        self._last.pop(alert.event_id, None)
        self._last[alert.event_id] = alert.timestamp_ns
        return True

    def state(self) -> list[list[object]]:
        """The incidents seen, oldest first, as ``[event_id, timestamp_ns]`` pairs (JSON-ready)."""
        return [[event_id, ts] for event_id, ts in self._last.items()]

    def restore(self, items: object) -> int:
        """Take back what :meth:`state` gave (a restart within the window must not re-alert); entries of
        the wrong shape are skipped. Returns how many were restored."""
        if not isinstance(items, list):
            return 0
        restored = 0
        for item in items[-self._max :]:
            if (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
            ):
                self._last.pop(item[0], None)
                self._last[item[0]] = item[1]
                restored += 1
        while len(self._last) > self._max:
            del self._last[next(iter(self._last))]
        return restored


@dataclass(slots=True)
class _DeviceIncident:
    id: str
    start_ns: int
    last_ns: int
    alerts: int = 0
    folded: int = 0
    window_start: int = 0
    in_window: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)  # by rule id, and by "rule/port" (CAP_BY_PORT)
    absorbed: frozenset[str] = frozenset()
    absorbed_until: int = 0
    severity: int = 0  # the highest of its alerts' that were sent


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """An incident still open (its last alert less than the idle time ago): what the metrics show of it."""

    device: str
    id: str
    start_ns: int
    last_ns: int
    alerts: int
    folded: int
    severity: int


class Incidents:
    """Groups the alerts of each device into incidents and folds what exceeds the caps (module docs)."""

    def __init__(
        self,
        idle_s: float = INCIDENT_IDLE_S,
        window_s: float = CAP_WINDOW_S,
        per_rule: int = CAP_PER_RULE,
        per_device: int = CAP_PER_DEVICE,
        max_devices: int = MAX_INCIDENT_DEVICES,
    ) -> None:
        self._idle = int(idle_s * NS)
        self._window = int(window_s * NS)
        self._per_rule = per_rule
        self._per_device = per_device
        self._max = max_devices
        self._open: OrderedDict[str, _DeviceIncident] = OrderedDict()
        #: Alerts folded, by rule id (``camwatch_alerts_folded_total``).
        self.folded: dict[str, int] = {}
        self.opened = 0
        self.latest_ns = 0  # the newest alert's time: the book's clock (capture time, not the wall's)

    def group(self, alert: Alert) -> Alert | None:
        """The alert with its incident, or None when it is folded into it."""
        key = alert.device_key
        if key is None:
            return alert
        ts = alert.timestamp_ns
        self.latest_ns = max(self.latest_ns, ts)
        inc = self._open.get(key)
        if inc is None or ts - inc.last_ns > self._idle:
            inc = _DeviceIncident(
                incident_id("incident", alert.observer, key, alert.event_id), ts, ts, window_start=ts
            )
            self.opened += 1
        self._open.pop(key, None)
        self._open[key] = inc
        if len(self._open) > self._max:
            self._open.popitem(last=False)
        inc.last_ns = max(inc.last_ns, ts)
        if ts - inc.window_start >= self._window:
            inc.window_start, inc.in_window, inc.by_rule = ts, 0, {}
        rule = alert.rule.id
        key = f"{rule}/{alert.destination.port}" if rule in CAP_BY_PORT else rule
        same = inc.by_rule.get(rule, 0)
        # The device cap folds repeats only: the first alert of a rule in the window always goes out (a new
        # kind of trouble with the device is news; the catalogue of rules bounds how many there can be).
        # Past the rule's cap, a destination port not alerted on yet (CAP_BY_PORT) still goes out, once.
        if alert.rule.severity < CRITICAL and (
            (same >= self._per_rule and (key == rule or inc.by_rule.get(key, 0) > 0))
            or (same and inc.in_window >= self._per_device)
            or (rule in inc.absorbed and ts <= inc.absorbed_until)
        ):
            inc.folded += 1
            self.folded[rule] = self.folded.get(rule, 0) + 1
            return None
        inc.by_rule[rule] = same + 1
        if key != rule:
            inc.by_rule[key] = inc.by_rule.get(key, 0) + 1
        if alert.rule.severity < CRITICAL:  # always sent, so never in the way of the others
            inc.in_window += 1
        inc.alerts += 1
        inc.severity = max(inc.severity, alert.rule.severity)
        if alert.rule.absorbs:
            inc.absorbed = inc.absorbed | frozenset(alert.rule.absorbs)
            inc.absorbed_until = ts + self._window
        return replace(alert, incident=Incident(inc.id, inc.start_ns, inc.alerts, inc.folded))

    def still_open(self) -> list[OpenIncident]:
        """The incidents whose last alert is less than the idle time older than the newest alert, oldest
        first (at most ``max_devices``: one per device)."""
        horizon = self.latest_ns - self._idle
        return [
            OpenIncident(key, inc.id, inc.start_ns, inc.last_ns, inc.alerts, inc.folded, inc.severity)
            for key, inc in self._open.items()
            if inc.last_ns >= horizon and inc.alerts
        ]
