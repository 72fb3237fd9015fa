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
from lab.process import lab_arguments, mark_ready, run_main, wait_for_stop
from lab.recorder import open_stream
from lab.topology import Camera, Control, LabDescription, LabEvent, LabPaths

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
    control_path = paths.control(NAME)
    try:
        seen = Control.load(control_path).trigger
    except ValueError as exc:
        log.warning("ignoring the control file: %s", exc)
        seen = 0
    wake = asyncio.Event()
    pending = 0

    async def follow_control() -> None:
        nonlocal seen, pending
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                control = Control.load(control_path)
            except ValueError as exc:
                log.warning("ignoring the control file: %s", exc)
                continue
            if control.trigger > seen:
                pending += control.trigger - seen
                seen = control.trigger
                wake.set()

    async def auto_trigger(every: float) -> None:
        nonlocal pending
        while True:
            await asyncio.sleep(every)
            pending += 1
            wake.set()

    async def act() -> None:
        nonlocal pending
        while True:
            await wake.wait()
            wake.clear()
            if pending:
                pending = 0
                await unauthorized_pull(desc, paths)

    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(follow_control(), name="office-control"),
            tg.create_task(act(), name="office-act"),
        ]
        if desc.trigger_every:
            tasks.append(tg.create_task(auto_trigger(desc.trigger_every), name="office-auto"))
        mark_ready(paths, NAME, {"pulls": desc.office_pulls})
        await wait_for_stop()
        for task in tasks:
            task.cancel()
    log.info("office stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the lab's office PC (inside its namespace).")
    lab_arguments(parser)
    return run_main(
        parser, argv, lambda args: run(args.directory), process=NAME, log=log, unknown_name_exits_2=True
    )


if __name__ == "__main__":
    sys.exit(main())
