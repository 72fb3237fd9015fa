"""The stream probe (optional extra ``camwatch[stream]``): is each camera's picture still there?

On a schedule the agent opens each configured camera's RTSP stream and measures it, in two child
processes so that neither FFmpeg build ever lives inside the agent:

- :mod:`agents.probe.capture` (PyAV only) reads the stream for a few seconds and reports codec,
  resolution, frame rate, bitrate and keyframe interval, and leaves sampled frames as ``.npy`` files;
- :mod:`agents.probe.image` (OpenCV only, never imports ``av``) judges those frames: frozen, black,
  covered, and writes a snapshot JPEG when one is wanted.

Why processes: PyAV and OpenCV each bundle their own FFmpeg libraries and loading both in one process
is a known source of crashes; a stream that crashes FFmpeg must not take the agent down; and the
agent, after dropping privileges, stays small. :mod:`agents.probe.reports` holds the wire formats
between them, :mod:`agents.probe.urls` camera URLs (and keeping credentials out of logs and alerts),
:mod:`agents.probe.health` the per-camera incident logic (no I/O, no clock), and
:mod:`agents.probe.scheduler` the asyncio side that runs the probes and raises the alerts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

__all__ = ["EXTRA_HINT", "lower_priority", "missing_modules"]

#: What to tell a user who configured a stream probe without installing its dependencies.
EXTRA_HINT = "stream_probe needs the stream extra: pip install 'camwatch[stream]' (PyAV and OpenCV headless)"


def missing_modules() -> list[str]:
    """The stream extra's modules that cannot be imported here (found without importing them, so the
    agent never loads FFmpeg itself)."""
    missing = []
    for name in ("av", "cv2"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ValueError:  # in sys.modules as None: imports of it are blocked
            found = False
        if not found:
            missing.append(name)
    return missing


def lower_priority() -> None:
    """Make this (child) process yield the CPU to the agent: decoding video must never starve the
    packet capture on a small gateway."""
    with contextlib.suppress(OSError):
        os.nice(10)
