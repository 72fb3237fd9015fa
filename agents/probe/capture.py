"""The capture side of a probe (PyAV only): ``python -m agents.probe.capture < request.json``.

Reads a :class:`~agents.probe.reports.CaptureRequest` on stdin, watches the RTSP stream for
``duration`` seconds of stream time, and prints a :class:`~agents.probe.reports.CaptureReport` on
stdout (exit 0 even when the camera cannot be reached: that is a measurement, not a failure of this
program). Sampled frames go to the request's ``out_dir``: :data:`~agents.probe.reports.FRAMES_FILE`
(downscaled luma, evenly spaced over the window) and :data:`~agents.probe.reports.SNAPSHOT_FRAME_FILE`
(the last sampled frame in colour, for the snapshot JPEG).

How the numbers are measured:

- ``fps``: from the decoded frames' presentation timestamps, ``(n - 1) / (t_last - t_first)``; the
  stream's declared rate is reported beside it (``declared_fps``): a camera that declares 25 and
  delivers 12 is overloaded or its network is.
- ``bitrate``: bytes of the packets whose timestamps fall in the decoded window, over the window's
  length (``n / fps``); RTP/RTSP overhead is not counted, so it is the encoder's bitrate.
- ``keyframe_interval``: mean time (and packet count) between packets flagged as keyframes; it needs
  two keyframes inside the window, so give a ``duration`` longer than the camera's GOP.

This module must never import OpenCV (see :mod:`agents.probe`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agents.probe import lower_priority
from agents.probe.reports import (
    FRAMES_FILE,
    SNAPSHOT_FRAME_FILE,
    CaptureReport,
    CaptureRequest,
    decode_json,
)
from agents.probe.urls import CameraUrl

if TYPE_CHECKING:
    import numpy.typing as npt
    from av.video.frame import VideoFrame

__all__ = ["capture", "main", "redact"]

log = logging.getLogger(__name__)

#: Exit status when the stream extra is missing (the agent says which package to install).
EXIT_NO_EXTRA = 3
EXIT_BAD_REQUEST = 2


def redact(text: str, url: str) -> str:
    """``text`` (an FFmpeg error, a log line) without the credentials that ``url`` holds."""
    try:
        parsed = CameraUrl.parse(url)
    except ValueError:
        return text.replace(url, "<camera url>")
    text = text.replace(url, parsed.redacted)
    for secret in (parsed.password, parsed.username):
        if secret:
            # As written in the URL (percent-encoded) and as FFmpeg may print it (decoded).
            text = text.replace(quote(secret, safe=""), "***").replace(secret, "***")
    return text


@dataclass(slots=True)
class _Window:
    """What is collected while reading: packet times, sizes and keyframe flags, decoded frame times,
    and the sampled frames."""

    # (time or None, bytes, keyframe) of every packet, in arrival order (RTP leaves the first untimed)
    packets: list[tuple[float | None, int, bool]] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    gray: list[npt.NDArray[Any]] = field(default_factory=list)
    colour: npt.NDArray[Any] | None = None
    decode_errors: int = 0
    size: tuple[int, int] | None = None  # of the decoded frames


def capture(request: CaptureRequest) -> CaptureReport:
    """Watch the stream as ``request`` says and measure it (blocking; PyAV is imported here)."""
    import av
    import av.error

    options = {
        "rtsp_transport": request.transport,
        # Socket I/O timeout in microseconds (FFmpeg >= 5 calls it "timeout", formerly "stimeout").
        "timeout": str(int(request.io_timeout * 1_000_000)),
        "allowed_media_types": "video",
        # Stream info is probed from the first second at most (FFmpeg's default is 5 s): the SDP and
        # the first keyframe already tell codec and size, and the probe measures the rest itself.
        "analyzeduration": str(int(min(1.0, request.duration / 2) * 1_000_000)),
    }
    try:
        # PyAV's own timeout (open, read) also covers waits the socket option does not (DNS, TLS).
        container = av.open(request.url, options=options, timeout=(request.io_timeout, request.io_timeout))
    except (av.error.FFmpegError, OSError) as exc:
        return CaptureReport(ok=False, error=redact(f"cannot open the stream: {_describe(exc)}", request.url))
    try:
        if not container.streams.video:
            return CaptureReport(ok=False, error="the stream has no video track")
        return _measure(container, request)
    except (av.error.FFmpegError, OSError) as exc:
        return CaptureReport(
            ok=False, error=redact(f"reading the stream failed: {_describe(exc)}", request.url)
        )
    finally:
        container.close()


def _describe(exc: BaseException) -> str:
    # PyAV's messages end with the file name (the URL); keep only FFmpeg's reason.
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)


def _measure(container: Any, request: CaptureRequest) -> CaptureReport:
    import av.error

    stream = container.streams.video[0]
    ctx = stream.codec_context
    window = _Window()
    started = time.monotonic()
    # Stream time decides when to stop; the wall clock only guards against a stream whose timestamps
    # never advance (the agent kills this process at its own timeout anyway).
    wall_limit = request.duration * 2 + request.io_timeout
    step = request.duration / request.samples
    first: float | None = None
    last_frame: VideoFrame | None = None
    done = False
    for packet in container.demux(stream):
        if time.monotonic() - started > wall_limit:
            break
        if packet.size == 0:
            continue  # a flush packet
        timed = packet.pts is not None and packet.time_base is not None
        t = float(packet.pts * packet.time_base) if timed else None
        window.packets.append((t, packet.size, packet.is_keyframe))
        # Decoded even without a timestamp: RTP gives the very first packet none, and it is often
        # the keyframe the decoder needs.
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            window.decode_errors += 1  # a damaged packet: count it and go on, as a viewer would
            continue
        for frame in frames:
            if frame.pts is None or frame.time_base is None:
                continue
            ft = float(frame.pts * frame.time_base)
            if first is None:
                first = ft
            if ft - first >= request.duration:
                done = True
                break
            window.frame_times.append(ft)
            window.size = (frame.width, frame.height)
            if len(window.gray) < request.samples and ft - first >= len(window.gray) * step:
                window.gray.append(_gray(frame, request.gray_width))
                last_frame = frame
        if done:
            break
    if last_frame is not None:
        window.colour = _colour(last_frame, request.colour_width)
    return _report(stream, ctx, window, request)


def _gray(frame: VideoFrame, width: int) -> npt.NDArray[Any]:
    w = min(width, frame.width)
    h = max(2, round(frame.height * w / frame.width / 2) * 2)
    # swscale converts the limited-range luma of YUV to full-range gray (16 -> 0, 235 -> 255).
    return frame.reformat(width=w, height=h, format="gray").to_ndarray()


def _colour(frame: VideoFrame, width: int) -> npt.NDArray[Any]:
    w = min(width, frame.width)
    h = max(2, round(frame.height * w / frame.width / 2) * 2)
    return frame.reformat(width=w, height=h, format="bgr24").to_ndarray()


def _report(stream: Any, ctx: Any, window: _Window, request: CaptureRequest) -> CaptureReport:
    import numpy as np

    times = window.frame_times
    declared = stream.average_rate or stream.guessed_rate or stream.base_rate
    common: dict[str, Any] = {
        "codec": ctx.name,
        "profile": ctx.profile or None,
        "width": ctx.width or None,
        "height": ctx.height or None,
        "declared_fps": float(declared) if declared else None,
        "packets": len(window.packets),
        "keyframes": sum(1 for _, _, key in window.packets if key),
        "decode_errors": window.decode_errors,
    }
    if not times:
        return CaptureReport(
            ok=False,
            error=f"no video frame could be decoded in {request.duration:g} s "
            f"({len(window.packets)} packets received)",
            **common,
        )
    out = Path(request.out_dir)
    np.save(out / FRAMES_FILE, np.stack(window.gray), allow_pickle=False)
    if window.colour is not None:
        np.save(out / SNAPSHOT_FRAME_FILE, window.colour, allow_pickle=False)
    span = times[-1] - times[0]
    fps = (len(times) - 1) / span if span > 0 else None
    seconds = len(times) / fps if fps else 0.0
    first, last = times[0], times[-1]
    in_window = sum(size for t, size, _ in window.packets if t is not None and first <= t <= last)
    keys = [(i, t) for i, (t, _, key) in enumerate(window.packets) if key]
    kf_seconds = kf_frames = None
    if len(keys) >= 2:
        # One packet per frame (an access unit, as FFmpeg's RTP depacketizers deliver video).
        kf_frames = (keys[-1][0] - keys[0][0]) / (len(keys) - 1)
        (_, t0), (_, t1) = keys[0], keys[-1]
        if t0 is not None and t1 is not None:
            kf_seconds = (t1 - t0) / (len(keys) - 1)
        elif fps:
            kf_seconds = kf_frames / fps
    width, height = common.pop("width"), common.pop("height")
    return CaptureReport(
        ok=True,
        width=width or (window.size[0] if window.size else None),
        height=height or (window.size[1] if window.size else None),
        fps=fps,
        bitrate=in_window * 8 / seconds if seconds > 0 else None,
        keyframe_interval=kf_seconds if kf_seconds and kf_seconds > 0 else None,
        keyframe_interval_frames=kf_frames,
        frames=len(times),
        seconds=seconds,
        samples=len(window.gray),
        **common,
    )


def main(argv: list[str] | None = None) -> int:
    """Read the request on stdin, print the report on stdout."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="capture: %(message)s")
    lower_priority()
    try:
        request = CaptureRequest.parse(decode_json(sys.stdin.buffer.read(), "capture request"))
    except ValueError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return EXIT_BAD_REQUEST
    try:
        import av  # noqa: F401
    except ImportError as exc:
        from agents.probe import EXTRA_HINT

        print(json.dumps({"ok": False, "error": f"{EXTRA_HINT} ({exc})"}))
        return EXIT_NO_EXTRA
    report = capture(request)
    print(json.dumps(report.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
