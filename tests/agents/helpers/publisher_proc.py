"""A publisher in its own process, for tests that kill it (`python -m tests.agents.helpers.publisher_proc`).

It opens the outbox in `--state-dir`, starts an `AlertPublisher` towards `127.0.0.1:--port`, submits
`--count` alerts with event ids `<--prefix>-<n>`, prints `SPOOLED <depth>` once they are all committed
(fsync'd) to the spool, then keeps publishing until it is killed (or stops cleanly on SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.sinks.mqtt import AlertPublisher, MqttSettings
from agents.sinks.outbox import Outbox, OutboxChannel

SITE = "depot-7"
GATEWAY = "gw-kill"


@contextlib.contextmanager
def open_spool(path: Path, max_records: int, max_bytes: int) -> Iterator[OutboxChannel]:
    """The MQTT sink's channel in the outbox at ``path``, as the agent opens it (closed on exit)."""
    with Outbox.open(path) as outbox:
        yield outbox.channel("mqtt", max_records, max_bytes)


def make_alert(event_id: str, severity: int = 3, n: int = 0) -> dict[str, Any]:
    """An alert record shaped like docs/design.md §4.2."""
    return {
        "@timestamp": "2026-02-02T10:00:00.123Z",
        "event": {
            "kind": "alert",
            "id": event_id,
            "severity": severity,
            "category": ["network"],
            "type": ["connection"],
        },
        "rule": {
            "id": "egress.unexpected_destination",
            "name": "Camera connected to an unexpected destination",
        },
        "source": {"ip": "10.20.0.11", "port": 40000 + n % 20000, "mac": "44-19-b6-00-00-01"},
        "destination": {"ip": "203.0.113.7", "port": 8666, "domain": "litedev.ezvizlife.com"},
        "network": {"transport": "tcp", "protocol": "http", "community_id": "1:5QaUBPr4V1FZpHeOiCp0o4pZVbQ="},
        "device": {"manufacturer": "Hikvision", "id": "44-19-b6-00-00-01"},
        "observer": {"name": f"{SITE}/{GATEWAY}"},
        "message": "Camera 10.20.0.11 (Hikvision) connected to 203.0.113.7:8666 (litedev.ezvizlife.com), "
        "which its policy does not allow: check the camera and block the destination at the firewall.",
    }


async def main(args: argparse.Namespace) -> None:
    settings = MqttSettings(
        host="127.0.0.1",
        port=args.port,
        site=SITE,
        gateway=GATEWAY,
        backoff_initial=0.05,
        backoff_max=0.5,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open_spool(Path(args.state_dir) / "outbox.sqlite3", 100_000, 64 << 20) as spool:
        async with AlertPublisher(settings, spool) as publisher:
            for n in range(args.count):
                await publisher.submit(make_alert(f"{args.prefix}-{n}", severity=1 + n % 5, n=n))
            print(f"SPOOLED {spool.depth()}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--prefix", default="kill")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(parser.parse_args()))
