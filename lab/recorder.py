"""The lab's recorder (NVR): `python -m lab.recorder DIR` (run inside the recorder's namespace).

It pulls every camera continuously, as a site's recorder does: RTSP with RTP over UDP or interleaved in
TCP (each camera's `transport` in lab.json), demultiplexed with PyAV and never decoded, so a stream
costs a socket and a few counters. A camera that restarts or stops answering is reconnected with a
capped backoff. What each pull is doing is written every second to `DIR/run/rec.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import av
import av.logging

from lab.process import lab_arguments, mark_ready, run_main, wait_for_stop
from lab.topology import Camera, LabDescription, LabPaths, write_atomic

__all__ = ["PullStats", "Puller", "main", "open_stream"]

log = logging.getLogger(__name__)

OPEN_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 5.0
MAX_BACKOFF: Final = 5.0
STATUS_SECONDS: Final = 1.0


def open_stream(url: str, transport: str, timeout: float = OPEN_TIMEOUT) -> av.container.InputContainer:
    """Open an RTSP URL with PyAV (`transport` "udp" or "tcp"); raises av.error.FFmpegError or OSError."""
    # A second of probing is plenty: the SDP already carries SPS/PPS, and FFmpeg's default (5 s) only
    # delays every (re)connect.
    options = {"rtsp_transport": transport, "analyzeduration": "1000000"}
    return av.open(url, options=options, timeout=(timeout, READ_TIMEOUT))


@dataclass
class PullStats:
    """One camera's pull, as the recorder reports it."""

    url: str
    transport: str
    connected: bool = False
    connects: int = 0
    packets: int = 0
    bytes: int = 0
    keyframes: int = 0
    last_packet: float | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


class Puller:
    """Pull one camera in a thread until `stop` is set, reconnecting on any failure."""

    def __init__(self, cam: Camera, stop: threading.Event) -> None:
        self.cam = cam
        self.stop = stop
        self.stats = PullStats(cam.url, cam.transport)

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                self._pull_once()
                backoff = 0.5
            except Exception as exc:  # PyAV raises many types (FFmpegError, OSError, ...): retry them all
                self.stats.error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: %s", self.cam.name, self.stats.error)
            self.stats.connected = False
            if self.stop.wait(backoff):
                return
            backoff = min(MAX_BACKOFF, backoff * 2)

    def _pull_once(self) -> None:
        with open_stream(self.cam.url, self.cam.transport) as container:
            video = container.streams.video[0]
            self.stats.connects += 1
            self.stats.connected = True
            self.stats.error = None
            ctx = video.codec_context
            self.stats.codec, self.stats.width, self.stats.height = ctx.name, ctx.width, ctx.height
            log.info("%s: pulling %s over %s (%s %dx%d)", self.cam.name, self.cam.url, self.cam.transport,
                     ctx.name, ctx.width, ctx.height)  # fmt: skip
            for packet in container.demux(video):
                if self.stop.is_set():
                    return
                if packet.size == 0:  # the demuxer's flush packet: the stream ended
                    break
                self.stats.packets += 1
                self.stats.bytes += packet.size
                self.stats.keyframes += bool(packet.is_keyframe)
                self.stats.last_packet = time.time()
        raise ConnectionError(f"{self.cam.url} ended")


async def run(directory: Path) -> None:
    """Pull every camera until SIGTERM."""
    av.logging.set_level(av.logging.ERROR)  # FFmpeg's per-packet warnings would flood the log
    paths = LabPaths(directory)
    desc = LabDescription.load(paths.lab_json)
    stop = threading.Event()
    pullers = [Puller(cam, stop) for cam in desc.cameras]
    threads = [threading.Thread(target=p.run, name=f"pull-{p.cam.name}", daemon=True) for p in pullers]
    for thread in threads:
        thread.start()
    mark_ready(paths, "rec", {"cameras": [p.cam.url for p in pullers]})

    async def report() -> None:
        failing = False
        while True:
            status = {"ts": time.time(), "cameras": {p.cam.name: asdict(p.stats) for p in pullers}}
            try:
                write_atomic(paths.state("rec"), json.dumps(status) + "\n")
                failing = False
            except OSError as exc:
                # The pulls matter more than the report: keep pulling, say so once.
                if not failing:
                    log.warning("cannot write the status file: %s", exc)
                failing = True
            await asyncio.sleep(STATUS_SECONDS)

    async with asyncio.TaskGroup() as tg:
        reporter = tg.create_task(report(), name="rec-report")
        await wait_for_stop()
        reporter.cancel()
    stop.set()
    # Daemon threads blocked in a read end with the process; give them a moment to close cleanly.
    for thread in threads:
        thread.join(1.0)
    log.info("recorder stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the lab's recorder (inside its namespace).")
    lab_arguments(parser)
    return run_main(parser, argv, lambda args: run(args.directory), process="rec", log=log)


if __name__ == "__main__":
    sys.exit(main())
