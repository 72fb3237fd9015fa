"""What leaves the gateway for the SOC and the removal programme, wired into the agent (agents/runtime.py).

- **The asset register** (``asset_register``, docs/register.md): loaded at start-up and again when the file
  changes (:meth:`Exports.watch_register`); the engine's site model holds it (``Site.register``: listed
  devices are known, a removed one seen raises ``device.removed_seen``); every alert about a listed
  device carries its row as ``camwatch.asset`` (:meth:`Exports.annotate`); :class:`RegisterCollector`
  exports its metrics.
- **Syslog** (``syslog``, docs/siem.md): a durable alert sink with its own channel of the outbox.
- **MQTT flows and inventory** (``mqtt.flows``, ``mqtt.inventory``): sinks on a data connection of their own
  (agents/sinks/mqtt_data.py).

The agent calls, in order: :meth:`Exports.open` while privileged (a syslog client key may be root-only),
:meth:`Exports.check_after_drop`, :meth:`Exports.add_sinks` before it starts its sinks, and runs
:meth:`Exports.watch_register` as a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.config import AgentConfig, ConfigError, ConfigProblem, MqttSettings
from agents.sinks.base import Record
from monitor.register import AssetRegister, RegisterError

if TYPE_CHECKING:
    from agents.runtime import Agent

__all__ = ["REGISTER_CHECK_SECONDS", "Exports", "RegisterCollector", "annotate"]

log = logging.getLogger(__name__)

#: How often the agent looks whether the register file changed.
REGISTER_CHECK_SECONDS: Final = 60.0
#: The outbox channel of the syslog sink.
SYSLOG_CHANNEL: Final = "syslog"


def annotate(record: Record, register: AssetRegister, today: date | None = None) -> Record:
    """The alert with ``camwatch.asset`` (the register's row of its device) added, or as it is when the
    register does not list the device."""
    device = record.get("device")
    mac_text = device.get("id") if isinstance(device, Mapping) else None
    if not isinstance(mac_text, str) or not len(register):
        return record
    try:
        mac = int(mac_text.replace("-", "").replace(":", ""), 16)
    except ValueError:
        return record
    asset = register.get(mac)
    if asset is None:
        return record
    fields = asset.to_ecs()
    if asset.replace_by is not None:
        fields["overdue"] = asset.overdue(today or datetime.now(UTC).date())
    camwatch = record.get("camwatch")
    extra = dict(camwatch) if isinstance(camwatch, Mapping) else {}
    extra["asset"] = fields
    return {**record, "camwatch": extra}


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def load_register(path: Path | None) -> AssetRegister:
    """The register at ``path`` (empty without one); each bad row is logged at WARNING."""
    if path is None:
        return AssetRegister()
    register = AssetRegister.load(path)
    for line in register.describe_problems():
        log.warning("%s", line)
    log.info("asset register %s: %d devices (%s)", path, len(register), _by_status(register))
    return register


def _by_status(register: AssetRegister) -> str:
    return ", ".join(f"{n} {status}" for status, n in register.by_status().items())


class Exports:
    """The register, syslog and the MQTT data sinks of one agent."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        path = config.asset_register
        self._register_stamp = _stamp(path) if path is not None else None
        try:
            self.register = load_register(path)
        except RegisterError as exc:  # gone or unreadable since check-config
            raise ConfigError(
                [ConfigProblem("asset_register", exc.problem, exc.fix, source=config.source)]
            ) from exc
        self.reloads = 0
        self._syslog_tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ alerts

    def annotate(self, record: Record) -> Record:
        """``camwatch.asset`` for an alert about a listed device (the agent's one alert path calls it)."""
        return annotate(record, self.register)

    # ------------------------------------------------------------------ start-up

    def open(self) -> None:
        """What needs the start-up privileges: the syslog client certificate and key."""
        s = self.config.syslog
        if s is None or s.protocol != "tls":
            return
        from agents.sinks.syslog import tls_context

        try:
            self._syslog_tls = tls_context(s)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                [
                    ConfigProblem(
                        "syslog",
                        f"the TLS files cannot be used ({exc})",
                        "check syslog.ca_file, cert_file and key_file: readable, PEM, and a matching pair",
                        source=self.config.source,
                    )
                ]
            ) from exc

    def check_after_drop(self, user: str) -> None:
        """A rotated ``flows_file`` is renamed and a new one created by the user the agent runs as."""
        cfg = self.config
        path = cfg.flows_file
        if path is None or cfg.flows_rotation is None or os.access(path.parent, os.W_OK):
            return
        raise ConfigError(
            [
                ConfigProblem(
                    "flows_rotation",
                    f"{path.parent} is not writable by {user} (flows_file is rotated by renaming it and "
                    "starting a new file beside it)",
                    f"give {path.parent} to {user}, put flows_file in state_dir, or set "
                    "flows_rotation: false",
                    source=cfg.source,
                )
            ]
        )

    async def add_sinks(
        self, agent: Agent, stack: contextlib.AsyncExitStack, settings: MqttSettings | None
    ) -> None:
        """The syslog sink (with the outbox, opened here if MQTT did not) and the MQTT data sinks, added to
        the agent's streams before it starts them; the register's collector."""
        agent.registry.register(RegisterCollector(lambda: self.register))
        s = self.config.syslog
        if s is not None:
            from agents.sinks.outbox import Outbox
            from agents.sinks.syslog import SyslogSink
            from agents.state import OUTBOX_FILE

            if agent.outbox is None:
                agent.outbox = stack.enter_context(Outbox.open(agent.state_dir / OUTBOX_FILE))
                agent.registry.register(agent.outbox.collector())
            limits = self.config.limits
            channel = agent.outbox.channel(SYSLOG_CHANNEL, limits.spool_max_alerts, limits.spool_max_bytes)
            sink = SyslogSink(s, channel, self._syslog_tls)
            stack.push_async_callback(sink.close)  # closed before the outbox
            agent.alert_sinks.append(sink)
        if settings is not None and (settings.flows or settings.inventory):
            from agents.sinks.mqtt_data import MqttDataLink, MqttFlowSink, MqttInventorySink

            link = MqttDataLink(settings)
            if settings.flows:
                flows = MqttFlowSink(link, with_metrics=True)
                stack.push_async_callback(flows.close)
                agent.flow_sinks.append(flows)
            if settings.inventory:
                inventory = MqttInventorySink(link, self.config.observer, with_metrics=not settings.flows)
                stack.push_async_callback(inventory.close)
                agent.inventory_sinks.append(inventory)

    # ------------------------------------------------------------------ the register, kept current

    async def watch_register(self, agent: Agent, stop: asyncio.Event) -> None:
        """Reload the register when its file changes (checked every :data:`REGISTER_CHECK_SECONDS`)."""
        path = self.config.asset_register
        if path is None:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REGISTER_CHECK_SECONDS)
            if not stop.is_set():
                await asyncio.to_thread(self.reload_if_changed, agent)

    def reload_if_changed(self, agent: Agent) -> bool:
        """Read the register again if its file changed; True if it was replaced."""
        path = self.config.asset_register
        if path is None:
            return False
        stamp = _stamp(path)
        if stamp == self._register_stamp:
            return False
        self._register_stamp = stamp
        try:
            register = load_register(path)
        except RegisterError as exc:
            log.error("asset register: %s; the register loaded before stays in use", exc)
            return False
        with agent.lock:  # the capture threads' rules read it
            agent.engine.site.register = register
        self.register = register
        self.reloads += 1
        return True


class RegisterCollector(Collector):
    """The removal programme's metrics from the asset register (docs/metrics.md):

    ``camwatch_register_assets{status}`` (rows by status), ``camwatch_replacements_overdue`` (rows not
    removed after their ``replace_by`` date, by the gateway's UTC date), ``camwatch_register_problems``
    (problems found reading it) and ``camwatch_asset_info{mac,name,location,status,replace_by,owner}`` (one
    series per listed device, to join on ``mac`` with the per-device series; the register is the site's own
    file, so its size bounds them).
    """

    def __init__(
        self, register: Callable[[], AssetRegister], today: Callable[[], date] | None = None
    ) -> None:
        self._register = register
        self._today = today or (lambda: datetime.now(UTC).date())

    def describe(self) -> Iterable[Metric]:
        return _register_families(AssetRegister(), date(2000, 1, 1))

    def collect(self) -> Iterable[Metric]:
        return _register_families(self._register(), self._today())


def _register_families(register: AssetRegister, today: date) -> list[Metric]:
    assets = GaugeMetricFamily(
        "camwatch_register_assets", "Devices listed in the asset register, by status.", labels=("status",)
    )
    for status, count in register.by_status().items():
        assets.add_metric([status], count)
    info = InfoMetricFamily(
        "camwatch_asset",
        "A device of the asset register (value 1): its name, location, status, replace_by date and owner.",
        labels=("mac", "name", "location", "status", "replace_by", "owner"),
    )
    for asset in sorted(register, key=lambda a: a.mac):
        replace_by = asset.replace_by.isoformat() if asset.replace_by is not None else ""
        info.add_metric(
            [asset.mac_str, asset.name, asset.location, asset.status, replace_by, asset.owner], {}
        )
    return [
        assets,
        GaugeMetricFamily(
            "camwatch_replacements_overdue",
            "Devices of the asset register not removed after their replace_by date.",
            value=len(register.overdue(today)),
        ),
        GaugeMetricFamily(
            "camwatch_register_problems",
            "Problems found reading the asset register (bad rows are named in the agent's log).",
            value=len(register.problems),
        ),
        info,
    ]
