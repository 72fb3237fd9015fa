"""What every output of the agent is: a :class:`Sink`, and the errors sinks raise.

A sink receives records (alerts, flow records, inventory snapshots) and delivers them somewhere: a broker,
a file, the log. Its life has four parts, the same for every sink:

- construction takes what needs the agent's start-up privileges (a file opened for appending, a password
  read), so the agent builds its sinks before it drops root;
- :meth:`Sink.start` begins delivering (background tasks, connections), after the drop;
- :meth:`Sink.submit` hands it one record. It never waits for the network; it may wait for local
  storage (a durable sink commits the record to its outbox first, see agents/sinks/outbox.py);
- :meth:`Sink.close` delivers what it can in bounded time and releases everything. A durable sink leaves
  what it could not deliver in its outbox, for the next start.

A sink that has metrics returns a prometheus_client collector from :meth:`Sink.collector`; the agent
registers it on the exporter's registry. Later outputs (rotation, retention, more MQTT topics) are new
sinks or options of these, the agent's routing stays as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

__all__ = ["Record", "Sink", "SinkError", "encode_record"]

#: An ECS record as JSON-ready data: an alert (docs/design.md §4.2) or a flow record (docs/design.md §4.3).
Record = Mapping[str, Any]

_R_contra = TypeVar("_R_contra", contravariant=True)


class Sink(Protocol[_R_contra]):
    """An output of the agent for records of type ``_R_contra``."""

    @property
    def name(self) -> str:
        """Short name for logs (and the outbox channel of a durable sink)."""
        ...

    async def start(self) -> None:
        """Begin delivering (called once, after the agent dropped its privileges)."""
        ...

    async def submit(self, record: _R_contra) -> None:
        """Take one record; never waits for the network, and never raises for a delivery problem
        (a sink logs and counts those: raising would stop the agent's output for every later record)."""
        ...

    async def close(self) -> None:
        """Deliver what can be delivered in bounded time, then release everything (idempotent)."""
        ...

    def collector(self) -> Collector | None:
        """The sink's metrics, built at scrape time; None for a sink without metrics."""
        ...


class SinkError(Exception):
    """Root of the delivery errors (outbox and sinks); carries where it happened."""

    def __init__(
        self,
        message: str,
        *,
        sink: str | None = None,
        broker: str | None = None,
        topic: str | None = None,
        path: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sink = sink
        self.broker = broker
        self.topic = topic
        self.path = path
        self.key = key

    def __str__(self) -> str:
        context = [
            f"{name}={value}"
            for name, value in (
                ("sink", self.sink),
                ("broker", self.broker),
                ("topic", self.topic),
                ("path", self.path),
                ("key", self.key),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(context)})" if context else self.message


def encode_record(record: Record) -> bytes:
    """The record as compact UTF-8 JSON: what MQTT publishes and each line of a JSON-lines file."""
    # default=str: a stray non-JSON value (a datetime, a Path) must not cost the record.
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
