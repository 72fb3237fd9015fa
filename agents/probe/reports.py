"""The wire formats between the agent and its probe processes: one JSON object each way.

The agent writes a :class:`CaptureRequest` to ``python -m agents.probe.capture``'s stdin (on stdin,
not argv, because the URL may hold a camera password and argv is visible to every local user); the
capture process answers with a :class:`CaptureReport` on stdout. ``python -m agents.probe.image DIR``
answers with an :class:`ImageReport`. Each ``parse()`` takes the decoded JSON (or raw bytes) and raises
``ValueError`` naming the field that is wrong, because a child killed halfway, or a bug, must give the
agent a clear error and never a crash.

This module imports neither PyAV nor OpenCV.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeVar

__all__ = [
    "FRAMES_FILE",
    "PROBLEMS",
    "SNAPSHOT_FILE",
    "SNAPSHOT_FRAME_FILE",
    "TRANSPORTS",
    "CaptureReport",
    "CaptureRequest",
    "ImageReport",
    "Thresholds",
    "decode_json",
]

#: The image problems, in the order they are judged (the first that applies is the verdict).
PROBLEMS: Final = ("black", "covered", "frozen")
TRANSPORTS: Final = ("tcp", "udp")

#: Files the capture process leaves in its work directory for the image process.
FRAMES_FILE: Final = "gray.npy"  # uint8 (n, h, w): downscaled luma of the sampled frames, in order
SNAPSHOT_FRAME_FILE: Final = "snapshot.npy"  # uint8 (h, w, 3) BGR: the last sampled frame in colour
SNAPSHOT_FILE: Final = "snapshot.jpg"  # written by the image process when asked and a problem is seen

_T = TypeVar("_T")


def decode_json(data: bytes | str, what: str) -> dict[str, Any]:
    """One JSON object from a child's output; ValueError naming ``what`` when it is not one."""
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        shown = text.strip()[:80] or "nothing"
        raise ValueError(f"{what}: not JSON ({exc}); got {shown!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


class _Fields:
    """Typed reads from a decoded JSON object; each failure names the object and the field."""

    def __init__(self, data: Mapping[str, Any], what: str) -> None:
        self.data = data
        self.what = what

    def _get(self, key: str, kind: type[_T] | tuple[type, ...], optional: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if optional:
                return None
            raise ValueError(f"{self.what}: '{key}' is missing")
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool:
            raise ValueError(f"{self.what}: '{key}' must not be a boolean, got {value!r}")
        if not isinstance(value, kind):
            raise ValueError(
                f"{self.what}: '{key}' has the wrong type ({type(value).__name__}): {value!r:.60}"
            )
        return value

    def text(self, key: str) -> str:
        value: str = self._get(key, str, False)
        return value

    def opt_text(self, key: str) -> str | None:
        value: str | None = self._get(key, str, True)
        return value

    def flag(self, key: str) -> bool:
        value: bool = self._get(key, bool, False)
        return value

    def count(self, key: str, lo: int = 0, hi: int = 1 << 62) -> int:
        value: int = self._get(key, int, False)
        if not lo <= value <= hi:
            raise ValueError(f"{self.what}: '{key}' is {value}, outside {lo}..{hi}")
        return value

    def opt_count(self, key: str, lo: int = 0, hi: int = 1 << 62) -> int | None:
        if self.data.get(key) is None:
            return None
        return self.count(key, lo, hi)

    def number(self, key: str, lo: float = 0.0, hi: float = math.inf) -> float:
        value = self._get(key, (int, float), False)
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"{self.what}: '{key}' is {value}, outside {lo:g}..{hi:g}")
        return float(value)

    def opt_number(self, key: str, lo: float = 0.0, hi: float = math.inf) -> float | None:
        if self.data.get(key) is None:
            return None
        return self.number(key, lo, hi)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When an image counts as black, frozen or covered (docs/config.md, ``stream_probe.thresholds``).

    - ``black_luma``: mean luma (0-255, full range) below which a frame is black. 20 keeps a dark
      night scene with IR (mean luma 40 and more) and still calls a black frame with a white clock
      overlay (mean about 5-10) black.
    - ``frozen_difference``: mean absolute luma difference between consecutive sampled frames below
      which the picture did not change. 0.25 is FFmpeg's ``freezedetect`` default (-60 dB, 0.001 of
      full scale): sensor noise alone stays above it, a repeated frame stays below.
    - ``covered_detail``: share of edge pixels (Canny) below which a frame has no detail: a lens
      covered by tape, a hand, paint or a bag, or knocked out of focus.
    """

    black_luma: float = 20.0
    frozen_difference: float = 0.25
    covered_detail: float = 0.005

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Thresholds:
        f = _Fields(data, "thresholds")
        return cls(
            black_luma=f.number("black_luma", 0.0, 255.0),
            frozen_difference=f.number("frozen_difference", 0.0, 255.0),
            covered_detail=f.number("covered_detail", 0.0, 1.0),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """What the agent asks of one capture: the URL (credentials included), for how long, and where
    to leave the sampled frames."""

    url: str
    out_dir: str
    transport: str = "tcp"
    duration: float = 4.0  # seconds of stream time to watch
    io_timeout: float = 5.0  # socket I/O timeout: a silent camera fails after this long
    samples: int = 8  # gray frames sampled evenly over the duration
    gray_width: int = 160  # sampled frames are downscaled to this width (aspect kept)
    colour_width: int = 1280  # the snapshot frame is downscaled to at most this width

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> CaptureRequest:
        f = _Fields(data, "capture request")
        url = f.text("url")
        if not url.startswith(("rtsp://", "rtsps://")):
            raise ValueError("capture request: 'url' must start with rtsp:// or rtsps://")
        transport = f.text("transport")
        if transport not in TRANSPORTS:
            raise ValueError(f"capture request: 'transport' must be one of {', '.join(TRANSPORTS)}")
        return cls(
            url=url,
            out_dir=f.text("out_dir"),
            transport=transport,
            duration=f.number("duration", 0.1, 3600.0),
            io_timeout=f.number("io_timeout", 0.1, 3600.0),
            samples=f.count("samples", 2, 1000),
            gray_width=f.count("gray_width", 16, 4096),
            colour_width=f.count("colour_width", 16, 8192),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CaptureReport:
    """What one capture measured. ``ok`` False means the stream could not be opened or gave no
    decodable video; ``error`` then says why (without credentials)."""

    ok: bool
    error: str | None = None
    codec: str | None = None  # FFmpeg's codec name: h264, hevc, mjpeg, ...
    profile: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # measured from the decoded frames' timestamps
    declared_fps: float | None = None  # what the stream says (SDP / SPS timing)
    bitrate: float | None = None  # bits/s: packet bytes over the measured stream time
    keyframe_interval: float | None = None  # seconds between keyframes (mean; None with < 2 keyframes)
    keyframe_interval_frames: float | None = None
    frames: int = 0  # frames decoded
    packets: int = 0
    keyframes: int = 0
    seconds: float = 0.0  # stream time covered by the decoded frames
    samples: int = 0  # gray frames written to FRAMES_FILE
    decode_errors: int = 0

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> CaptureReport:
        f = _Fields(data, "capture report")
        ok = f.flag("ok")
        report = cls(
            ok=ok,
            error=f.opt_text("error"),
            codec=f.opt_text("codec"),
            profile=f.opt_text("profile"),
            width=f.opt_count("width", 1, 1 << 16),
            height=f.opt_count("height", 1, 1 << 16),
            fps=f.opt_number("fps", 0.0, 10_000.0),
            declared_fps=f.opt_number("declared_fps", 0.0, 10_000.0),
            bitrate=f.opt_number("bitrate"),
            keyframe_interval=f.opt_number("keyframe_interval"),
            keyframe_interval_frames=f.opt_number("keyframe_interval_frames"),
            frames=f.count("frames"),
            packets=f.count("packets"),
            keyframes=f.count("keyframes"),
            seconds=f.number("seconds"),
            samples=f.count("samples"),
            decode_errors=f.count("decode_errors"),
        )
        if ok and (report.codec is None or report.width is None or report.height is None):
            raise ValueError("capture report: 'ok' is true but codec, width or height is missing")
        if not ok and not report.error:
            raise ValueError("capture report: 'ok' is false and 'error' does not say why")
        return report

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ImageReport:
    """The image process's verdict on the sampled frames, with the values it judged by.

    At most one of ``black``, ``covered``, ``frozen`` is true: a black or covered picture is also
    static, and it is reported as what it is (black before covered before frozen, :data:`PROBLEMS`).
    """

    frames: int
    mean_luma: float  # mean over the sampled frames, 0-255
    luma_spread: float  # standard deviation of luma within a frame, mean over the frames
    detail: float  # share of edge pixels, 0-1, mean over the frames
    difference: float | None  # largest mean abs difference between consecutive frames (None: 1 frame)
    black: bool
    covered: bool
    frozen: bool
    snapshot: str | None = None  # path of the JPEG written, when asked for and a problem was seen

    @property
    def problem(self) -> str | None:
        """``black``, ``covered``, ``frozen`` or None."""
        return next((p for p in PROBLEMS if getattr(self, p)), None)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ImageReport:
        f = _Fields(data, "image report")
        report = cls(
            frames=f.count("frames", 1),
            mean_luma=f.number("mean_luma", 0.0, 255.0),
            luma_spread=f.number("luma_spread", 0.0, 255.0),
            detail=f.number("detail", 0.0, 1.0),
            difference=f.opt_number("difference", 0.0, 255.0),
            black=f.flag("black"),
            covered=f.flag("covered"),
            frozen=f.flag("frozen"),
            snapshot=f.opt_text("snapshot"),
        )
        if report.black + report.covered + report.frozen > 1:
            raise ValueError("image report: more than one of black, covered, frozen is true")
        return report

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
