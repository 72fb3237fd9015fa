"""Containment inside the agent (`camwatch run`): apply at start, follow the policy and the inventory,
quarantine on critical alerts, count what is (or would be) blocked, publish the audit log.

The runtime (agents/runtime.py) calls, and only calls:

- :meth:`AgentContainment.start` once, while still privileged and before capture starts: the checks
  (enforce mode without CAP_NET_ADMIN is a start-up :class:`~agents.config.ConfigError`) and the first
  apply;
- :meth:`observe` with each batch of ended flows (from the capture threads, under the engine lock: it only
  queues them);
- :meth:`on_alert` with each alert (on the event loop, after the sinks got it);
- :meth:`run` as a task of the agent's task group, and :meth:`attach_publisher` once MQTT is up.

Every ``check_interval`` the task rebuilds the plan from the policy (the policy file is read again when it
changed) and the inventory's watched devices, and applies it when it changed, or when camwatch's table
is no longer the one it applied (someone deleted or replaced it: only `camwatch contain remove` removes
it, and then the agent waits for `camwatch contain apply`). It judges the ended flows of watched devices
with the plan and counts, per device, what is blocked (enforce) or would be (dry-run), logging each
device and destination once an hour.

Name-based allow rules: :meth:`learn` is the hook for the DNS answers the engine captures, (name, address,
TTL); it queues them and the task adds each address that a name rule matches to the rule's set for the
TTL plus ``name_grace``. The engine's rulebook hands it the answers watched devices receive
(agents/contain/answers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from agents.config import AgentConfig, ConfigError, ConfigProblem
from agents.contain.audit import AuditLog, AuditRecord, read_audit
from agents.contain.control import Controller
from agents.contain.files import ContainmentFiles, LockTimeout
from agents.contain.metrics import ContainmentCollector, ContainmentStats
from agents.contain.nft import Nft, NftError, TableState, has_net_admin
from agents.contain.plan import ContainmentError, ContainmentPlan, Device, NameAllow
from agents.contain.render import COUNTERS, LearnedAddress, name_elements
from monitor.iana import transport_name
from monitor.policy import IPAddress, PolicyError, SitePolicy
from monitor.vendors.oui import format_mac

if TYPE_CHECKING:
    from monitor.engine import Engine
    from monitor.flows import Flow

__all__ = ["AgentContainment", "Publisher", "containment_topic"]

log = logging.getLogger(__name__)

TICK_SECONDS: Final = 1.0
#: A device and destination blocked again within this time is not logged again.
LOG_EVERY: Final = 3600.0
MAX_LOGGED: Final = 10_000
MAX_LEARNED: Final = 10_000
ACTOR: Final = "agent"


class Publisher(Protocol):
    """What the audit records are published with: the MQTT sink (agents/sinks/mqtt.py)."""

    async def submit_to(self, topic: str, record: Mapping[str, Any], key: str = "") -> None: ...


def containment_topic(prefix: str, site: str, gateway: str) -> str:
    """``<prefix>/<site>/<gateway>/containment``: one audit record per message, QoS 1, not retained."""
    return f"{prefix}/{site}/{gateway}/containment"


@functools.lru_cache(maxsize=65_536)
def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


class AgentContainment:
    """Containment for one agent (``containment`` section of its configuration)."""

    def __init__(
        self,
        config: AgentConfig,
        engine: Engine,
        engine_lock: threading.Lock,
        *,
        nft: Nft | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = config.containment
        self.mode = self.settings.mode
        self.engine = engine
        self.engine_lock = engine_lock
        self.clock = clock
        self.files = ContainmentFiles.at(config.state_dir, self.settings.audit_file)
        self.audit = AuditLog(self.files, config.observer)
        self.nft = nft or Nft()
        self.controller = Controller(
            self.files, self.nft, self.audit, self.mode, self.settings.quarantine, clock
        )
        self.policy: SitePolicy = config.site_policy
        self.plan: ContainmentPlan | None = None
        self.applied: str | None = None  # digest of the plan loaded (enforce) or checked (dry-run) last
        self.stats = ContainmentStats(
            self.mode,
            max_device_series=config.metrics.max_device_series,
            quarantine_limit=self.settings.quarantine.max_devices,
        )
        self._policy_stamp = _stamp(config.policy_file)
        self._policy_refused: tuple[float, int] | None = None
        self._plan_error: str | None = None
        self._flows: deque[Sequence[Flow]] = deque()
        self._answers: deque[tuple[str, str, float]] = deque(maxlen=MAX_LEARNED)
        self._learned: dict[tuple[str, IPAddress], tuple[NameAllow, float]] = {}
        self._logged: OrderedDict[tuple[str, str, int, str, str], float] = OrderedDict()
        self._quarantined: frozenset[IPAddress] = frozenset()
        self._next_check = 0.0
        self._publisher: Publisher | None = None
        self._topic: str | None = None
        self._mutex = threading.Lock()  # the task's worker threads and start() never overlap, but be sure

    # -- start-up -------------------------------------------------------------------------------------

    def check_privileges(self) -> None:
        """Enforce mode without CAP_NET_ADMIN (or without nft) cannot work: a start-up error, not a
        containment that silently does nothing."""
        if self.mode != "enforce":
            return
        problems: list[str] = []
        if not self.nft.available():
            problems.append("nft is not installed (apt-get install nftables)")
        if not has_net_admin():
            problems.append(
                f"the agent runs without CAP_NET_ADMIN (uid {os.geteuid()}), so it cannot load the ruleset"
            )
        if problems:
            raise ConfigError(
                [
                    ConfigProblem(
                        "containment.mode",
                        f"is enforce, but {'; '.join(problems)}",
                        "run the agent as root with run_as_user: null, or as a service user with "
                        'AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN (docs/containment.md, "Privileges"); '
                        "or set containment.mode: dry-run",
                        source=self.config.source,
                    )
                ]
            )

    def start(self) -> None:
        """At start-up, privileged, before capture: checks, then the first apply (enforce) or check
        (dry-run). A failed apply is logged, counted and audited; the agent keeps monitoring."""
        self.check_privileges()
        state = self._table_quietly()
        if self.mode == "off":
            if state is not None:
                log.warning(
                    "containment is off, but camwatch's nftables table is loaded (plan %s): it stays in "
                    "force until `camwatch contain remove`",
                    state.digest,
                )
            return
        self.files.prepare()
        if state is not None:
            self._adopt_learned(state)
            if self.mode == "dry-run":
                log.warning(
                    "containment is dry-run, but camwatch's nftables table is loaded (plan %s) and "
                    "enforcing: remove it with `camwatch contain remove`",
                    state.digest,
                )
        try:
            with self._mutex:
                self._check(reason="agent start", force=True)
        except (OSError, LockTimeout, NftError) as exc:  # monitoring starts anyway; the task tries again
            log.error("containment: the first apply did not happen: %s", exc)
            self.stats.count_apply("failed", self.clock())
        self._next_check = self.clock() + self.settings.check_interval

    def attach_publisher(self, publisher: Publisher | None) -> None:
        """Publish the audit log through ``publisher`` (the MQTT sink), from where it was left."""
        mqtt = self.config.mqtt
        if publisher is None or mqtt is None:
            return
        self._publisher = publisher
        self._topic = containment_topic(mqtt.topic_prefix, self.config.site, self.config.gateway)

    def collector(self) -> ContainmentCollector:
        return ContainmentCollector(self.stats)

    # -- what the runtime hands over --------------------------------------------------------------

    def observe(self, flows: Sequence[Flow]) -> None:
        """Ended flows, to judge on the containment task (called with the engine lock held: only queues)."""
        if self.mode != "off" and flows:
            self._flows.append(flows)

    def learn(self, name: str, address: str, ttl: float) -> None:
        """A DNS answer the engine captured: ``name`` resolved to ``address`` for ``ttl`` seconds. Queued;
        the task allows the address for every name rule that matches ``name``."""
        if self.mode != "off" and self.plan is not None and self.plan.names:
            self._answers.append((name, address, ttl))

    async def on_alert(self, record: Mapping[str, Any]) -> None:
        """Quarantine the alert's device when its rule is in ``containment.quarantine.auto_rules``."""
        if self.mode == "off":
            return
        rule = record.get("rule")
        rule_id = rule.get("id") if isinstance(rule, Mapping) else None
        if not isinstance(rule_id, str) or rule_id not in self.settings.quarantine.auto_rules:
            return
        try:
            result = await asyncio.to_thread(self._auto_quarantine, rule_id, record)
        except Exception:  # the alert path must go on whatever happens here
            log.exception("containment: automatic quarantine for %s failed", rule_id)
            self.stats.count_auto_quarantine("failed")
            return
        self.stats.count_auto_quarantine(result.outcome)

    # -- the task ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Check, judge, expire and publish until ``stop``; the ruleset stays loaded after it (only
        `camwatch contain remove` removes it: a stopped or crashed agent must not open the site)."""
        if self.mode == "off":
            await self._publish_audit()
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
            try:
                await asyncio.to_thread(self._tick)
            except (OSError, LockTimeout, NftError) as exc:  # a bad moment: the next tick tries again
                log.error("containment: %s", exc)
            except Exception:  # a bug here must not stop the agent's monitoring: logged, tried again
                log.exception("containment: unexpected error")
            await self._publish_audit()
        await asyncio.to_thread(self._judge_flows)

    def _tick(self) -> None:
        with self._mutex:
            self._judge_flows()
            self._learn_answers()
            for entry in self.controller.expire():
                log.info("containment: quarantine of %s expired", entry.device)
            self._refresh_quarantined()
            now = self.clock()
            if now >= self._next_check:
                self._next_check = now + self.settings.check_interval
                self._check(reason="periodic check")

    # -- applying ---------------------------------------------------------------------------------

    def _check(self, reason: str, force: bool = False) -> None:
        """Rebuild the plan and apply it when it changed or the kernel lost it; refresh the metrics."""
        policy_note = self._reload_policy()
        try:
            plan = ContainmentPlan.build(
                self.policy, never_block=self.settings.never_block, devices=self._watched_devices()
            )
        except ContainmentError as exc:
            if force or str(exc) != self._plan_error:  # once per problem, not at every check
                self._refuse(f"{reason}: {exc}")
            self._plan_error = str(exc)
            return
        self._plan_error = None
        state = self._table_quietly()
        if state is not None:
            self.stats.kernel_counters({k: v for k, v in state.counters.items() if k in COUNTERS})
        removed = self.files.read_removed()
        if self.mode == "enforce" and removed is not None:
            if force:
                log.warning(
                    "containment: removed by %s (camwatch contain remove): not applied until "
                    "`camwatch contain apply`",
                    removed.get("by"),
                )
            self.plan, self.stats.loaded = plan, False
            return
        lost = self.mode == "enforce" and (state is None or state.digest != self.applied)
        changed = plan.digest != self.applied
        missing: list[str] = []
        if self.mode == "enforce" and state is not None and not lost:
            # Quarantined addresses the kernel lost (the table loaded again by hand from `render`): the
            # book says they are quarantined, so they go back in with their remaining time.
            self._refresh_quarantined()
            kernel = {e.address for e in state.elements("quarantine")}
            missing = sorted(map(str, self._quarantined - kernel))
        if not (force or changed or lost or missing):
            self.plan = plan
            self.stats.loaded = self.mode == "enforce"
            return
        why = reason
        if policy_note:
            why = f"{reason}: {policy_note}"
        elif missing and not changed:
            why = f"{reason}: quarantined addresses missing from the kernel ({', '.join(missing[:5])})"
            log.warning("containment: %s; loading the ruleset again", why)
        elif lost and not changed and self.applied is not None:
            gone = "deleted" if state is None else "replaced"
            why = f"{reason}: camwatch's table was {gone} outside camwatch"
            log.warning("containment: %s; loading it again", why)
        elif changed and self.plan is not None:
            why = f"{reason}: {_difference(self.plan, plan)}"
        for warning in plan.warnings:
            log.warning("containment: %s", warning)
        if state is not None and self.mode == "enforce":
            self.stats.before_reload({k: v for k, v in state.counters.items() if k in COUNTERS})
        can_check = self.mode == "enforce" or (has_net_admin() and self.nft.available())
        if not can_check:
            record = self.audit.new(
                "apply",
                "dry-run",
                ACTOR,
                f"{why}; not checked with nft -c (no CAP_NET_ADMIN or no nft here)",
                mode=self.mode,
                plan=plan.digest,
            )
            outcome = record.outcome
        else:
            outcome = self.controller.apply(plan, ACTOR, why, self._learned_now()).outcome
        self.stats.count_apply(outcome, self.clock())
        if outcome in ("applied", "dry-run"):
            self.applied = plan.digest
        self.plan = plan
        self.stats.loaded = self.mode == "enforce" and outcome == "applied"
        if self.mode == "enforce" and outcome != "applied":
            # The previous ruleset stays in force; whether it is ours is what the kernel says.
            after = self._table_quietly()
            self.stats.loaded = after is not None and after.digest == self.applied

    def _refuse(self, why: str) -> None:
        self.audit.new("apply", "refused", ACTOR, why, mode=self.mode)
        self.stats.count_apply("refused", self.clock())
        log.error("containment: the ruleset was not applied: %s", why)

    def _reload_policy(self) -> str | None:
        """Read the policy file again when it changed; what changed, or None. A policy that does not
        validate is refused once per version of the file (the previous one stays)."""
        path = self.config.policy_file
        stamp = _stamp(path)
        if path is None or stamp is None or stamp == self._policy_stamp or stamp == self._policy_refused:
            return None
        try:
            policy = SitePolicy.from_yaml(path.read_bytes(), str(path))
        except (OSError, PolicyError) as exc:
            self._policy_refused = stamp
            self._refuse(
                f"the policy file {path} changed but cannot be used, the previous policy stays: {exc}"
            )
            return None
        self._policy_stamp = stamp
        self.policy = policy
        log.info("containment: policy file %s changed; containment follows it", path)
        return f"policy file {path} changed"

    def _watched_devices(self) -> list[Device]:
        """The inventory's devices of watched vendors (the plan keeps those outside the monitored
        networks)."""
        vendors = self.policy.watched_vendors
        with self.engine_lock:
            found = [
                (d.mac_str, d.vendor, tuple(d.ips))
                for d in self.engine.inventory
                if d.vendor is not None and d.vendor in vendors and d.ips
            ]
        devices: list[Device] = []
        for mac, vendor, ips in found:
            addresses = []
            for ip in ips:
                with contextlib.suppress(ValueError):
                    addresses.append(_ip(ip))
            devices.append(Device(mac, vendor, tuple(addresses)))
        return devices

    def _table_quietly(self) -> TableState | None:
        if not (self.nft.available() and has_net_admin()):
            return None
        try:
            return self.nft.table()
        except NftError as exc:
            log.debug("containment: cannot read camwatch's table: %s", exc)
            return None

    # -- quarantine -------------------------------------------------------------------------------

    def _auto_quarantine(self, rule_id: str, record: Mapping[str, Any]) -> AuditRecord:
        device = record.get("device")
        mac = str(device.get("id", "")) if isinstance(device, Mapping) else ""
        addresses = set(self._addresses_of(mac)) if mac else set()
        for end in ("source", "destination"):
            side = record.get(end)
            if isinstance(side, Mapping) and side.get("ip") and _same_mac(side.get("mac"), mac):
                with contextlib.suppress(ValueError):
                    addresses.add(_ip(str(side["ip"])))
        event = record.get("event")
        incident = str(event.get("id")) if isinstance(event, Mapping) and event.get("id") else None
        reason = f"automatic: alert {rule_id}"
        message = record.get("message")
        if isinstance(message, str) and message:
            reason += f": {message[:200]}"
        if not mac:
            mac = f"ip:{min(addresses, key=str)}" if addresses else "unknown"
        with self._mutex:
            result = self.controller.quarantine(
                self.plan,
                mac,
                addresses,
                ACTOR,
                reason,
                rule=rule_id,
                incident=incident,
                automatic=True,
            )
            self._refresh_quarantined()
        return result

    def _addresses_of(self, mac: str) -> list[IPAddress]:
        wanted = mac.lower().replace(":", "-")
        with self.engine_lock:
            ips = next((list(d.ips) for d in self.engine.inventory if d.mac_str == wanted), [])
        out = []
        for ip in ips:
            with contextlib.suppress(ValueError):
                out.append(_ip(ip))
        return out

    def _refresh_quarantined(self) -> None:
        book = self.controller.book()
        now = self.clock()
        active = [e for e in book.active.values() if e.until > now]
        self._quarantined = frozenset(a for e in active for a in e.addresses)
        self.stats.quarantined = len(active)

    # -- judging flows ----------------------------------------------------------------------------

    def _judge_flows(self) -> None:
        plan = self.plan
        action = "blocked" if self.mode == "enforce" else "would_block"
        learned = set(self._learned)
        while self._flows:
            flows = self._flows.popleft()
            if plan is None:
                continue
            for flow in flows:
                if flow.copy:
                    continue  # a routed copy of a conversation judged with its original
                self._judge(plan, flow, action, learned)

    def _judge(
        self, plan: ContainmentPlan, flow: Flow, action: str, learned: set[tuple[str, IPAddress]]
    ) -> None:
        (src_ip, _src_port), (dst_ip, dst_port) = flow.src, flow.dst
        try:
            src, dst = _ip(src_ip), _ip(dst_ip)
        except ValueError:
            return
        transport = transport_name(flow.proto)
        opener_is_src = flow.opener_is_src
        opener, responder = (src, dst) if opener_is_src else (dst, src)
        port = (dst_port if opener_is_src else flow.src[1]) if transport in ("tcp", "udp") else 0
        verdict = plan.judge(opener, responder, transport, port, self._quarantined, learned)
        if verdict.allowed or verdict.device is None:
            return
        device_is_src = verdict.device == src
        mac_int = flow.src_mac if device_is_src else flow.dst_mac
        mac = format_mac(mac_int) if mac_int else "unknown"
        packets = (flow.src_counts if device_is_src else flow.dst_counts)[0]
        self.stats.count_device(mac, action, packets)
        other = responder if verdict.device == opener else opener
        key = (str(verdict.device), str(other), port, transport, verdict.reason)
        now = self.clock()
        last = self._logged.get(key)
        if last is not None and now - last < LOG_EVERY:
            return
        self._logged[key] = now
        self._logged.move_to_end(key)
        while len(self._logged) > MAX_LOGGED:
            self._logged.popitem(last=False)
        what = "blocked" if action == "blocked" else "dry run: would block"
        where = f"{other} {port}/{transport}" if port else f"{other} ({transport})"
        log.warning(
            "containment: %s %s (%s) %s %s: %s (%d packets; logged once an hour per device and destination)",
            what,
            verdict.device,
            mac,
            "->" if verdict.device == opener else "<-",
            where,
            verdict.detail or verdict.reason,
            packets,
        )

    # -- name rules -------------------------------------------------------------------------------

    def _learn_answers(self) -> None:
        plan = self.plan
        now = self.clock()
        for key in [k for k, (_, until) in self._learned.items() if until <= now]:
            del self._learned[key]
        while self._answers:
            name, text, ttl = self._answers.popleft()
            if plan is None:
                continue
            try:
                address = _ip(text)
            except ValueError:
                continue
            for rule in plan.names:
                if not rule.matches(name):
                    continue
                seconds = max(0.0, ttl) + self.settings.name_grace
                until = now + seconds
                key = (rule.rule, address)
                if key in self._learned and self._learned[key][1] >= until:
                    continue
                if self.mode == "enforce" and self.stats.loaded:
                    try:
                        self.nft.load(name_elements(rule, address, seconds))
                    except NftError as exc:
                        log.error("containment: cannot allow %s for %s: %s", address, rule.rule, exc)
                        continue
                self._learned[key] = (rule, until)
                while len(self._learned) > MAX_LEARNED:  # the soonest to expire goes first
                    del self._learned[min(self._learned, key=lambda k: self._learned[k][1])]
        self.stats.learned = len(self._learned)

    def _learned_now(self) -> list[LearnedAddress]:
        now = self.clock()
        return [LearnedAddress(rule, addr, until - now) for (_, addr), (rule, until) in self._learned.items()]

    def _adopt_learned(self, state: TableState) -> None:
        """Addresses learned by the previous run, from the kernel's name sets (so a restart does not
        block a name's addresses until the next DNS answer)."""
        now = self.clock()
        for kind in ("names_any", "names_ports"):
            for element in state.elements(kind):
                if element.expires is None:
                    continue
                ports = (
                    None if element.port is None else frozenset({(element.port, element.transport or "tcp")})
                )
                rule = NameAllow(f"learned ({kind})", (), ports)
                self._learned[(rule.rule, element.address)] = (rule, now + element.expires)

    # -- publishing -------------------------------------------------------------------------------

    async def _publish_audit(self) -> None:
        """Every audit record not yet published goes to MQTT (spooled by the sink: never lost)."""
        if self._publisher is None or self._topic is None:
            return
        offset = _read_offset(self.files.published)
        try:
            lines, _ = await asyncio.to_thread(read_audit, self.files.audit, offset)
        except OSError as exc:
            log.error("containment: cannot read the audit log %s: %s", self.files.audit, exc)
            return
        for end, record, raw in lines:
            if record is not None:
                payload = record.to_json()
            else:
                payload = {"unreadable": raw.decode("utf-8", "replace")}
            await self._publisher.submit_to(self._topic, payload, key=f"audit-{end}")
            try:
                _write_offset(self.files.published, end)
            except OSError as exc:  # they go out again next time: at least once, as the alerts
                log.error("containment: cannot note what was published in %s: %s", self.files.published, exc)
                return
        if lines:
            self.files.hand_over(self.files.published)


def _stamp(path: Path | None) -> tuple[float, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime, st.st_size


def _same_mac(value: object, mac: str) -> bool:
    return isinstance(value, str) and value.lower().replace(":", "-") == mac.lower().replace(":", "-")


def _difference(old: ContainmentPlan, new: ContainmentPlan) -> str:
    """What changed between two plans, in a few words (the audit log's reason)."""
    parts = []
    old_j, new_j = old.to_json(), new.to_json()
    for key in new_j:
        a, b = old_j.get(key), new_j.get(key)
        if a != b and isinstance(a, list) and isinstance(b, list):
            added = [x for x in b if x not in a]
            gone = [x for x in a if x not in b]
            bits = [f"+{json.dumps(x) if not isinstance(x, str) else x}" for x in added[:3]]
            bits += [f"-{json.dumps(x) if not isinstance(x, str) else x}" for x in gone[:3]]
            more = len(added) + len(gone) - len(bits)
            parts.append(f"{key} {' '.join(bits)}{f' (+{more} more)' if more > 0 else ''}")
    return "; ".join(parts) or "plan changed"


def _read_offset(path: Path) -> int:
    try:
        return max(0, int(path.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def _write_offset(path: Path, offset: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{offset}\n")
    os.replace(tmp, path)
