"""The image verdicts (OpenCV) on synthetic frames, and the `python -m agents.probe.image` program.

The frames imitate what a site camera shows: a textured scene with sensor noise (static or moving),
a dark night scene, a black picture with a white clock overlay, a lens under tape, a defocused lens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

cv2 = pytest.importorskip("cv2", reason="the stream extra (opencv-python-headless) is not installed")

from agents.probe.image import judge, load_frames  # noqa: E402
from agents.probe.reports import FRAMES_FILE, SNAPSHOT_FRAME_FILE, ImageReport, Thresholds  # noqa: E402

ROOT = Path(__file__).parents[3]
H, W = 90, 160
Frames = npt.NDArray[np.uint8]


def scene(seed: int = 1, brightness: float = 110.0, contrast: float = 60.0) -> npt.NDArray[np.float64]:
    """A textured scene: rectangles and lines of different brightness, like a corridor or a car park."""
    rng = np.random.default_rng(seed)
    image = np.full((H, W), brightness, dtype=np.float64)
    for _ in range(25):
        y, x = int(rng.integers(0, H - 10)), int(rng.integers(0, W - 10))
        h, w = int(rng.integers(4, 30)), int(rng.integers(4, 40))
        image[y : y + h, x : x + w] += rng.uniform(-contrast, contrast)
    return image


def frames(images: list[npt.NDArray[np.float64]], noise: float = 0.0, seed: int = 2) -> Frames:
    rng = np.random.default_rng(seed)
    stack = np.stack([im + rng.normal(0.0, noise, im.shape) if noise else im for im in images])
    return np.clip(np.rint(stack), 0, 255).astype(np.uint8)


def osd(image: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The date and time a camera burns into its picture, in white."""
    out = np.ascontiguousarray(image.astype(np.uint8))
    cv2.putText(out, "2026-02-02 10:00:00", (4, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, 255, 1)
    return out.astype(np.float64)


T = Thresholds()


def test_a_moving_scene_is_fine() -> None:
    moving = frames([np.roll(scene(), 6 * i, axis=1) for i in range(8)], noise=2.0)
    report = judge(moving, T)
    assert report.problem is None
    assert report.detail > 10 * T.covered_detail and report.difference is not None and report.difference > 5


def test_a_static_scene_with_sensor_noise_is_not_frozen() -> None:
    # An empty corridor at night does not change, but a live sensor's noise does.
    still = frames([scene()] * 8, noise=1.5)
    report = judge(still, T)
    assert report.problem is None, report
    assert report.difference is not None and report.difference > T.frozen_difference


def test_repeated_frames_are_frozen() -> None:
    repeated = frames([scene()] * 8, noise=2.0, seed=3)[:1].repeat(8, axis=0)
    report = judge(repeated, T)
    assert (report.frozen, report.difference) == (True, 0.0)
    assert report.problem == "frozen"


def test_black_even_with_a_clock_overlay() -> None:
    black = frames([osd(np.zeros((H, W)))] * 8, noise=1.0)
    report = judge(black, T)
    assert report.black and report.problem == "black"  # not also frozen or covered
    assert 0 < report.mean_luma < T.black_luma


def test_a_dark_night_scene_is_not_black() -> None:
    night = frames([np.roll(scene(brightness=45, contrast=30), 3 * i, axis=0) for i in range(8)], noise=2.0)
    report = judge(night, T)
    assert report.problem is None and report.mean_luma > T.black_luma


def test_a_taped_lens_is_covered_not_frozen() -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    vignette = 57.0 - 10.0 * (((yy - H / 2) / H) ** 2 + ((xx - W / 2) / W) ** 2)
    taped = frames([vignette] * 8, noise=1.0)
    report = judge(taped, T)
    assert report.covered and not report.frozen and report.problem == "covered"
    assert report.detail < T.covered_detail and report.luma_spread < 5


def test_a_defocused_lens_is_covered() -> None:
    blurred = [cv2.GaussianBlur(np.roll(scene(), i, axis=1), (0, 0), 12) for i in range(8)]
    report = judge(frames(blurred, noise=0.5), T)
    assert report.problem == "covered"


def test_one_good_frame_in_the_window_keeps_the_verdict_good() -> None:
    mostly_black = frames([np.zeros((H, W))] * 7 + [scene()])
    assert judge(mostly_black, T).problem is None


def test_thresholds_decide() -> None:
    still = frames([scene()] * 8, noise=1.5)
    assert judge(still, Thresholds(frozen_difference=5.0)).problem == "frozen"
    night = frames([np.roll(scene(brightness=45, contrast=30), i, axis=0) for i in range(8)], noise=2.0)
    assert judge(night, Thresholds(black_luma=80.0)).problem == "black"


def test_a_single_frame_cannot_be_frozen() -> None:
    report = judge(frames([scene()]), T)
    assert report.difference is None and not report.frozen


def write(directory: Path, gray: np.ndarray, colour: np.ndarray | None = None) -> Path:
    np.save(directory / FRAMES_FILE, gray, allow_pickle=False)
    if colour is not None:
        np.save(directory / SNAPSHOT_FRAME_FILE, colour, allow_pickle=False)
    return directory


def test_load_frames_rejects_what_is_not_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no sampled frames"):
        load_frames(tmp_path)
    np.save(tmp_path / FRAMES_FILE, np.zeros((2, 9, 16), np.float32))
    with pytest.raises(ValueError, match=r"expected uint8 frames \(n, height, width\), got float32"):
        load_frames(tmp_path)
    np.save(tmp_path / FRAMES_FILE, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a numpy array file"):
        load_frames(tmp_path)
    (tmp_path / FRAMES_FILE).write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="not a numpy array file"):
        load_frames(tmp_path)


def run_image(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.probe.image", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_program_reports_and_writes_a_snapshot_only_on_a_problem(tmp_path: Path) -> None:
    colour = np.zeros((240, 320, 3), np.uint8)
    colour[:, :, 2] = 200  # red in BGR: the snapshot is the colour frame, not the luma samples
    black = write(tmp_path, frames([np.zeros((H, W))] * 4), colour)
    done = run_image(str(black), "--snapshot")
    assert done.returncode == 0, done.stderr
    report = ImageReport.parse(json.loads(done.stdout))
    assert report.black and report.snapshot == str(tmp_path / "snapshot.jpg")
    jpeg = cv2.imread(report.snapshot)
    assert jpeg is not None and jpeg.shape == (240, 320, 3)
    assert jpeg[..., 2].mean() > 150 and jpeg[..., 0].mean() < 50

    fine = tmp_path / "fine"
    fine.mkdir()
    write(fine, frames([np.roll(scene(), 5 * i, axis=1) for i in range(4)], noise=2.0), colour)
    done = run_image(str(fine), "--snapshot")
    assert done.returncode == 0 and json.loads(done.stdout)["snapshot"] is None
    assert not (fine / "snapshot.jpg").exists()


def test_the_program_takes_thresholds_and_reports_bad_input(tmp_path: Path) -> None:
    write(tmp_path, frames([scene()] * 3, noise=1.5))
    assert json.loads(run_image(str(tmp_path)).stdout)["frozen"] is False
    strict = run_image(str(tmp_path), "--thresholds", '{"frozen_difference": 10}')
    assert json.loads(strict.stdout)["frozen"] is True
    bad = run_image(str(tmp_path), "--thresholds", '{"black_luma": 300}')
    assert bad.returncode == 2 and "thresholds: 'black_luma' is 300" in bad.stderr and bad.stdout == ""
    missing = run_image(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no sampled frames" in missing.stderr


def test_the_image_program_never_loads_pyav(tmp_path: Path) -> None:
    write(tmp_path, frames([scene()] * 2))
    code = (
        "import sys, runpy; sys.argv = ['image', sys.argv[1]];"
        "\ntry:\n runpy.run_module('agents.probe.image', run_name='__main__')"
        "\nexcept SystemExit:\n pass"
        "\nassert 'av' not in sys.modules, 'PyAV was imported'; print('clean')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")


def test_a_low_contrast_scene_keeps_its_detail() -> None:
    # Fog, dusk: edges of 20-30 grey levels are still a picture, not a covered lens.
    foggy = frames([np.roll(scene(contrast=15), 2 * i, axis=1) for i in range(8)], noise=1.5)
    report = judge(foggy, T)
    assert report.problem is None and report.detail > T.covered_detail
