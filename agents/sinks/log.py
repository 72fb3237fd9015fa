"""The log as a sink: each alert is one WARNING line (``alert <rule.id>: <message>``).

The agent uses it when there is no broker (no ``mqtt`` section), so an alert is never only in a file
nobody may be watching: the service's journal has it too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agents.sinks.base import Record

__all__ = ["LogSink"]

log = logging.getLogger(__name__)


class LogSink:
    """Logs each record submitted (alerts: their rule id and message) at ``level``."""

    def __init__(self, name: str = "log", level: int = logging.WARNING) -> None:
        self.name = name
        self.level = level

    async def start(self) -> None:
        """Nothing to start."""

    async def submit(self, record: Record) -> None:
        rule = record.get("rule")
        rule_id = rule.get("id", "?") if isinstance(rule, Mapping) else "?"
        log.log(self.level, "alert %s: %s", rule_id, record.get("message", ""))

    async def close(self) -> None:
        """Nothing to release."""

    def collector(self) -> None:
        """No metrics of its own."""
        return None
