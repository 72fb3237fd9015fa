"""The log as a sink: one WARNING line per alert, the agent's output when there is no broker."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agents.sinks.base import Record, Sink
from agents.sinks.log import LogSink
from tests.agents.helpers.publisher_proc import make_alert


def test_each_alert_is_one_warning_with_its_rule_and_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agents.sinks.log")
    alert = make_alert("e1")

    async def scenario() -> None:
        sink: Sink[Record] = LogSink()
        await sink.start()
        await sink.submit(alert)
        await sink.submit({"message": "a record without a rule"})
        await sink.close()
        assert sink.name == "log" and sink.collector() is None

    asyncio.run(scenario())
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "agents.sinks.log"]
    assert lines == [
        (logging.WARNING, f"alert egress.unexpected_destination: {alert['message']}"),
        (logging.WARNING, "alert ?: a record without a rule"),
    ]
