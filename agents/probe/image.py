"""The image side of a probe (OpenCV only): ``python -m agents.probe.image DIR [--thresholds JSON]
[--snapshot]``.

Judges the frames the capture process left in ``DIR`` and prints an
:class:`~agents.probe.reports.ImageReport` on stdout. Each value reported is the one compared with its
threshold, taken over every sampled frame, so one good frame in the window keeps the verdict good:

- ``mean_luma``: the brightest frame's mean luma; below ``black_luma``: **black**.
- ``detail``: the most detailed frame's share of edge pixels (Canny); below ``covered_detail`` (and
  not black): **covered** (tape, paint, a bag or a hand on the lens, or focus lost).
- ``difference``: the largest mean absolute difference between consecutive frames; below
  ``frozen_difference`` (and neither black nor covered): **frozen**.

With ``--snapshot`` and a problem found, the last sampled colour frame is written as
``DIR/snapshot.jpg`` (the agent moves it to the snapshot directory when it raises an alert).

This module must never import PyAV (see :mod:`agents.probe`); :func:`judge` works on numpy arrays.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agents.probe import lower_priority
from agents.probe.reports import FRAMES_FILE, SNAPSHOT_FILE, SNAPSHOT_FRAME_FILE, ImageReport, Thresholds

__all__ = ["edge_share", "judge", "load_frames", "main", "write_snapshot"]

EXIT_BAD_INPUT = 2
EXIT_NO_EXTRA = 3

# Canny's hysteresis thresholds on 8-bit luma (L1 Sobel gradient), at the 160-pixel-wide sample
# size. Lower than the common 50/150 so a low-contrast scene (fog, night: steps of 20-30 levels) still
# shows detail; high enough that a flat picture with sensor noise up to sigma 4 shows none.
_CANNY_LOW = 30
_CANNY_HIGH = 90
_JPEG_QUALITY = 85


def load_frames(directory: Path) -> npt.NDArray[np.uint8]:
    """The sampled luma frames, ``(n, h, w)`` uint8; ValueError naming what is wrong with the file."""
    path = directory / FRAMES_FILE
    try:
        frames = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{path}: no sampled frames (the capture decoded none)") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a numpy array file ({exc})") from None
    if frames.dtype != np.uint8 or frames.ndim != 3 or min(frames.shape) == 0:
        raise ValueError(
            f"{path}: expected uint8 frames (n, height, width), got {frames.dtype} {frames.shape}"
        )
    if frames.shape[1] < 3 or frames.shape[2] < 3:
        raise ValueError(f"{path}: frames of {frames.shape[2]}x{frames.shape[1]} are too small to judge")
    result: npt.NDArray[np.uint8] = frames
    return result


def edge_share(frame: npt.NDArray[np.uint8]) -> float:
    """Share of a luma frame's pixels that lie on an edge (0-1)."""
    import cv2

    edges = cv2.Canny(frame, _CANNY_LOW, _CANNY_HIGH)
    return float(np.count_nonzero(edges)) / edges.size


def judge(frames: npt.NDArray[np.uint8], thresholds: Thresholds) -> ImageReport:
    """The verdict on ``frames`` (luma, ``(n, h, w)`` uint8, in time order)."""
    import cv2

    if frames.ndim != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected frames (n, height, width), got shape {frames.shape}")
    means = [float(f.mean()) for f in frames]
    spreads = [float(f.std()) for f in frames]
    detail = max(edge_share(f) for f in frames)
    difference = (
        max(float(cv2.absdiff(a, b).mean()) for a, b in itertools.pairwise(frames))
        if len(frames) >= 2
        else None
    )
    mean_luma = max(means)
    black = mean_luma < thresholds.black_luma
    covered = not black and detail < thresholds.covered_detail
    frozen = (
        not black and not covered and difference is not None and difference < thresholds.frozen_difference
    )
    return ImageReport(
        frames=len(frames),
        mean_luma=mean_luma,
        luma_spread=max(spreads),
        detail=detail,
        difference=difference,
        black=black,
        covered=covered,
        frozen=frozen,
    )


def write_snapshot(directory: Path, frames: npt.NDArray[np.uint8]) -> Path:
    """Write ``DIR/snapshot.jpg`` from the colour frame (or the last luma frame without one)."""
    import cv2

    image: npt.NDArray[Any] = frames[-1]
    colour_file = directory / SNAPSHOT_FRAME_FILE
    if colour_file.is_file():
        colour = np.load(colour_file, allow_pickle=False)
        if colour.dtype == np.uint8 and colour.ndim == 3 and colour.shape[2] == 3 and min(colour.shape) > 0:
            image = colour
    path = directory / SNAPSHOT_FILE
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
        raise OSError(f"{path}: OpenCV could not write the JPEG")
    return path


def main(argv: list[str] | None = None) -> int:
    """Judge the frames in DIR; the report goes to stdout, problems with the input to stderr."""
    parser = argparse.ArgumentParser(prog="python -m agents.probe.image", description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--thresholds", default="{}", help="JSON object of Thresholds fields")
    parser.add_argument("--snapshot", action="store_true", help="write DIR/snapshot.jpg on a problem")
    args = parser.parse_args(argv)
    lower_priority()
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        from agents.probe import EXTRA_HINT

        print(f"{EXTRA_HINT} ({exc})", file=sys.stderr)
        return EXIT_NO_EXTRA
    try:
        given = json.loads(args.thresholds)
        if not isinstance(given, dict):
            raise ValueError("--thresholds must be a JSON object")
        thresholds = Thresholds.parse({**Thresholds().to_json(), **given})
        frames = load_frames(args.directory)
        report = judge(frames, thresholds)
        if args.snapshot and report.problem is not None:
            path = write_snapshot(args.directory, frames)
            report = ImageReport(**{**report.to_json(), "snapshot": str(path)})
    except (ValueError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(report.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
