"""The lab's office PC: `python -m lab.office DIR` (run inside the office namespace).

An office computer that is not an allowed viewer. When triggered (its control file `DIR/control/office.json`,
or every `trigger_every` seconds) it pulls one camera's stream briefly with PyAV (DESCRIBE, SETUP, PLAY,
RTP interleaved in TCP, `PULL_SECONDS`): camwatch must raise `stream.unauthorized_client`. The event it
writes names the camera (the device the alert is about) and the office as the client.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import av.logging

from lab.camera import BEHAVIOURS, POLL_SECONDS
from lab.process import act_on_triggers, lab_arguments, run_main
from lab.recorder import open_stream
from lab.topology import Camera, LabDescription, LabEvent, LabPaths

__all__ = ["PULL_SECONDS", "main", "pull"]

log = logging.getLogger(__name__)

NAME: Final = "office"
PULL_SECONDS: Final = 3.0
BEHAVIOUR: Final = "office.unauthorized_pull"


def pull(cam: Camera, seconds: float, transport: str = "tcp") -> dict[str, object]:
    """Read `seconds` of a camera's stream (blocking); returns what arrived."""
    packets = keyframes = size = 0
    deadline = time.monotonic() + seconds
    with open_stream(cam.url, transport) as container:
        video = container.streams.video[0]
        for packet in container.demux(video):
            if packet.size == 0:
                break
            packets += 1
            size += packet.size
            keyframes += bool(packet.is_keyframe)
            if time.monotonic() >= deadline:
                break
        width, height = video.codec_context.width, video.codec_context.height
    return {"packets": packets, "bytes": size, "keyframes": keyframes, "resolution": f"{width}x{height}"}


async def unauthorized_pull(desc: LabDescription, paths: LabPaths) -> None:
    """Pull the camera named by `office_pulls`, then record the event."""
    cam = desc.camera(desc.office_pulls)
    started = time.time()
    detail: dict[str, object] = {"client": desc.office.ip, "url": cam.url, "transport": "tcp"}
    try:
        detail.update(await asyncio.to_thread(pull, cam, PULL_SECONDS))
    except Exception as exc:  # PyAV raises many types; the office must keep running
        detail["error"] = f"{type(exc).__name__}: {exc}"
        log.warning("pull of %s failed: %s", cam.url, detail["error"])
    else:
        log.info("pulled %s: %s", cam.url, detail)
    event = LabEvent(started, cam.name, cam.ip, cam.mac, BEHAVIOUR, BEHAVIOURS[BEHAVIOUR], detail)
    try:
        event.append_to(paths.events)
    except OSError as exc:
        log.error("cannot record %s in %s: %s", BEHAVIOUR, paths.events, exc)


async def run(directory: Path) -> None:
    """Wait for triggers until SIGTERM."""
    av.logging.set_level(av.logging.ERROR)
    paths = LabPaths(directory)
    desc = LabDescription.load(paths.lab_json)
    desc.camera(desc.office_pulls)  # fail now, not at the first trigger

    async def act() -> None:
        await unauthorized_pull(desc, paths)

    await act_on_triggers(paths, NAME, act, desc.trigger_every, {"pulls": desc.office_pulls}, POLL_SECONDS)
    log.info("office stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the lab's office PC (inside its namespace).")
    lab_arguments(parser)
    return run_main(
        parser, argv, lambda args: run(args.directory), process=NAME, log=log, unknown_name_exits_2=True
    )


if __name__ == "__main__":
    sys.exit(main())
