"""Synthetic camera video for the lab: test patterns and an H.264 encoder (libx264 through PyAV).

The patterns imitate what a stream probe must tell apart on a real site: a live scene (`normal`), a
stuck encoder (`frozen`), a dead sensor or cut cable (`black`) and a lens covered by a hand or tape
(`covered`: dark and featureless, but not black).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType

logger = logging.getLogger(__name__)

PATTERNS: tuple[str, ...] = ("normal", "frozen", "black", "covered")

Image = npt.NDArray[np.uint8]

# AV_CODEC_FLAG_GLOBAL_HEADER: SPS/PPS also go to extradata, so DESCRIBE can announce them before the
# first frame is encoded; `repeat-headers` keeps them in-band on every IDR for clients that join late.
_GLOBAL_HEADER = 1 << 22

_NOISE_FIELDS = 4

NAL_SPS = 7
NAL_PPS = 8
NAL_IDR = 5


@dataclass(frozen=True, slots=True)
class VideoSpec:
    """What a lab camera streams."""

    width: int = 640
    height: int = 360
    fps: int = 15
    gop: int = 30  # a keyframe (IDR) every `gop` frames
    bitrate: int = 600_000  # target bits per second

    def __post_init__(self) -> None:
        # yuv420p needs even dimensions; the bounds keep a typo from allocating gigabytes.
        for name, value, low, high in (
            ("width", self.width, 16, 4096),
            ("height", self.height, 16, 4096),
            ("fps", self.fps, 1, 120),
            ("gop", self.gop, 1, 1000),
            ("bitrate", self.bitrate, 10_000, 100_000_000),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"VideoSpec.{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"VideoSpec width and height must be even, got {self.width}x{self.height}")


def _check_pattern(pattern: str) -> str:
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    return pattern


class PatternGenerator:
    """Deterministic RGB test frames for each pattern of `PATTERNS`."""

    def __init__(self, spec: VideoSpec) -> None:
        self._spec = spec
        h, w = spec.height, spec.width
        # Colour bars twice as wide as the frame: scrolling is then a slice, not a copy of a rolled array.
        bars = np.array(
            [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0],
             [192, 0, 192], [192, 0, 0], [0, 0, 192], [16, 16, 16]],
            dtype=np.uint8,
        )  # fmt: skip
        columns = bars[(np.arange(w) * len(bars)) // w]
        self._bars: Image = np.ascontiguousarray(
            np.broadcast_to(np.concatenate([columns, columns]), (h, 2 * w, 3))
        )
        self._block = max(8, min(h, w) // 6)
        self._counter_height = max(4, h // 24)
        # Sensor grain (the lowest bit, flipped at random): without it libx264 codes the synthetic scene in
        # a third of the target bitrate, and a lab camera would not look like a camera on the wire.
        grain_rng = np.random.default_rng(0x6A1)
        self._grain = [grain_rng.integers(0, 2, (h, w, 3), dtype=np.uint8) for _ in range(_NOISE_FIELDS)]
        self._last_normal = 0
        self._frozen: tuple[int, Image] | None = None
        # A lens under tape still shows sensor noise and a soft vignette, never a flat value. The noise is
        # drawn once (a few fields, cycled): drawing it per frame would cost more than encoding the frame.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2
        base = 57.0 - 10.0 * r2
        tint = np.array([4.0, 0.0, -3.0], dtype=np.float32)  # slightly warm, as skin or tape looks
        rng = np.random.default_rng(0x1E45)
        self._covered_fields: list[Image] = []
        for _ in range(_NOISE_FIELDS):
            grey = base + rng.normal(0.0, 1.0, base.shape)
            field = np.clip(grey[..., None] + tint, 0, 255).astype(np.uint8)
            field.flags.writeable = False
            self._covered_fields.append(field)

    @property
    def spec(self) -> VideoSpec:
        return self._spec

    def frame(self, index: int, pattern: str) -> Image:
        """RGB uint8 array (height, width, 3) for frame number `index`.

        normal: scrolling colour bars, a moving white block and a binary frame counter bar, with one bit
        of sensor grain, so that consecutive frames differ; frozen: the last normal frame before the
        freeze (frame 0 if none), the same for every index; black: all zero; covered: dark grey (mean
        luma ~55), nearly uniform, tiny noise.
        """
        _check_pattern(pattern)
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        if pattern == "normal":
            self._last_normal = index
            return self._normal(index)
        if pattern == "frozen":
            if self._frozen is None or self._frozen[0] != self._last_normal:
                image = self._normal(self._last_normal)
                image.flags.writeable = False
                self._frozen = (self._last_normal, image)
            return self._frozen[1].copy()
        if pattern == "black":
            return np.zeros((self._spec.height, self._spec.width, 3), dtype=np.uint8)
        return self._covered(index)

    def _normal(self, index: int) -> Image:
        h, w = self._spec.height, self._spec.width
        shift = (index * 4) % w
        image = self._bars[:, shift : shift + w].copy()
        # The block bounces horizontally and drifts vertically so motion covers most of the picture.
        b = self._block
        span_x, span_y = w - b, h - b - self._counter_height
        x = (index * 7) % (2 * span_x)
        x = x if x < span_x else 2 * span_x - x
        y = (index * 3) % (2 * span_y)
        y = y if y < span_y else 2 * span_y - y
        image[y : y + b, x : x + b] = 255
        # Frame counter: 16 bits as black/white cells along the bottom edge.
        cell = w // 16
        bits = (index >> np.arange(15, -1, -1)) & 1
        row = np.repeat(bits * 255, cell).astype(np.uint8)
        image[h - self._counter_height :, : row.size] = row[None, :, None]
        image ^= self._grain[index % _NOISE_FIELDS]
        return image

    def _covered(self, index: int) -> Image:
        return self._covered_fields[index % _NOISE_FIELDS].copy()


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded access unit."""

    nals: tuple[bytes, ...]  # NAL units without start codes
    keyframe: bool
    index: int


def split_annexb(data: bytes) -> tuple[bytes, ...]:
    """NAL units of an Annex B byte stream (start codes removed, empty units dropped)."""
    nals: list[bytes] = []
    start = -1
    i = 0
    n = len(data)
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        if start >= 0:
            nals.append(data[start:j])
        start = j + 3
        i = start
    if start >= 0:
        nals.append(data[start:n])
    # A 4-byte start code leaves its leading zero on the previous unit; a NAL unit never ends in 0x00
    # (rbsp_stop_one_bit), so trailing zeros are always start-code or trailing_zero_8bits padding.
    return tuple(nal.rstrip(b"\x00") for nal in nals if nal.rstrip(b"\x00"))


class H264Encoder:
    """libx264 through PyAV (preset ultrafast, tune zerolatency, no B-frames, repeat SPS/PPS on keyframes).

    Not thread-safe: use one encoder from one thread at a time.
    """

    def __init__(self, spec: VideoSpec) -> None:
        self._spec = spec
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = spec.width
        ctx.height = spec.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, spec.fps)
        ctx.framerate = Fraction(spec.fps, 1)
        ctx.gop_size = spec.gop
        ctx.bit_rate = spec.bitrate
        ctx.max_b_frames = 0
        ctx.flags |= _GLOBAL_HEADER
        # scenecut=0: keyframes only every `gop` frames (or when forced), so a probe can measure the GOP.
        # vbv: a cap of one second's budget keeps IDR bursts within what a UDP socket buffer absorbs.
        ctx.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": (
                f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:repeat-headers=1:"
                f"vbv-maxrate={spec.bitrate // 1000}:vbv-bufsize={spec.bitrate // 1000}"
            ),
        }
        ctx.open()
        self._ctx = ctx
        self._sps = b""
        self._pps = b""
        for nal in split_annexb(bytes(ctx.extradata or b"")):
            self._remember_parameter_set(nal)
        self._force = False
        self._last_index = -1

    @property
    def spec(self) -> VideoSpec:
        return self._spec

    @property
    def sps(self) -> bytes:
        """The sequence parameter set NAL unit (no start code)."""
        return self._sps

    @property
    def pps(self) -> bytes:
        """The picture parameter set NAL unit (no start code)."""
        return self._pps

    def force_keyframe(self) -> None:
        """Make the next encoded frame an IDR (a new viewer joins)."""
        self._force = True

    def encode(self, rgb: Image, index: int) -> EncodedFrame:
        """Encode one RGB frame; `index` (increasing, gaps allowed) is its presentation time in frames."""
        expected = (self._spec.height, self._spec.width, 3)
        if rgb.shape != expected or rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array of shape {expected}, got {rgb.dtype} {rgb.shape}")
        if index <= self._last_index:
            raise ValueError(f"frame index must increase: {index} after {self._last_index}")
        self._last_index = index
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        if self._force:
            frame.pict_type = PictureType.I
            self._force = False
        nals: list[bytes] = []
        keyframe = False
        # zerolatency means no lookahead and no B-frames: one packet out for each frame in.
        for packet in self._ctx.encode(frame):
            keyframe = keyframe or bool(packet.is_keyframe)
            nals.extend(split_annexb(bytes(packet)))
        for nal in nals:
            self._remember_parameter_set(nal)
        if not nals:
            logger.warning("libx264 returned no packet for frame %d", index)
        keyframe = keyframe or any(nal[0] & 0x1F == NAL_IDR for nal in nals)
        return EncodedFrame(nals=tuple(nals), keyframe=keyframe, index=index)

    def _remember_parameter_set(self, nal: bytes) -> None:
        kind = nal[0] & 0x1F
        if kind == NAL_SPS:
            self._sps = nal
        elif kind == NAL_PPS:
            self._pps = nal
