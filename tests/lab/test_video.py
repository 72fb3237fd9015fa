"""The lab camera's test patterns and its H.264 encoder, checked with numpy and a real PyAV decoder."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from lab.video import PATTERNS, H264Encoder, PatternGenerator, VideoSpec, split_annexb

SPEC = VideoSpec(width=320, height=180, fps=15, gop=10, bitrate=400_000)


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_is_an_rgb_frame_of_the_spec(pattern: str) -> None:
    image = PatternGenerator(SPEC).frame(3, pattern)
    assert image.shape == (SPEC.height, SPEC.width, 3)
    assert image.dtype == np.uint8


def test_normal_moves_from_frame_to_frame() -> None:
    gen = PatternGenerator(SPEC)
    frames = [gen.frame(i, "normal") for i in range(6)]
    for a, b in itertools.pairwise(frames):
        assert mean_abs_diff(a, b) > 5
    assert luma(frames[0]).std() > 30  # bars and a block: plenty of texture
    assert np.array_equal(gen.frame(4, "normal"), frames[4])  # deterministic


def test_normal_frame_counter_tells_frames_apart_even_when_the_scroll_wraps() -> None:
    gen = PatternGenerator(SPEC)
    # The bars scroll 4 px a frame, so frame 80 has the bars of frame 0; the block and counter differ.
    assert not np.array_equal(gen.frame(0, "normal"), gen.frame(SPEC.width // 4, "normal"))


def test_frozen_repeats_the_last_normal_frame() -> None:
    gen = PatternGenerator(SPEC)
    assert np.array_equal(gen.frame(0, "frozen"), gen.frame(0, "normal"))  # nothing normal yet: frame 0
    for i in range(1, 8):
        last = gen.frame(i, "normal")
    frozen = [gen.frame(i, "frozen") for i in range(8, 14)]
    for image in frozen:
        assert np.array_equal(image, last)
    frozen[0][:] = 0  # callers own the array they get
    assert np.array_equal(gen.frame(14, "frozen"), last)
    assert not np.array_equal(gen.frame(15, "normal"), last)


def test_black_is_black() -> None:
    image = PatternGenerator(SPEC).frame(5, "black")
    assert image.max() <= 16


def test_covered_is_dark_flat_and_not_black() -> None:
    gen = PatternGenerator(SPEC)
    for i in range(6):
        y = luma(gen.frame(i, "covered"))
        assert 40 <= y.mean() <= 70
        assert y.std() < 6  # a smooth vignette and sensor noise, no edges
        assert y.min() > 16  # never mistaken for black
    assert not np.array_equal(gen.frame(0, "covered"), gen.frame(1, "covered"))  # live noise


def test_unknown_pattern_and_negative_index_are_refused() -> None:
    gen = PatternGenerator(SPEC)
    with pytest.raises(ValueError, match="unknown pattern 'snow'"):
        gen.frame(0, "snow")
    with pytest.raises(ValueError, match="index"):
        gen.frame(-1, "normal")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"width": 641}, "even"),
        ({"height": 0}, "height"),
        ({"fps": 0}, "fps"),
        ({"gop": -1}, "gop"),
        ({"bitrate": 5}, "bitrate"),
        ({"fps": 15.5}, "fps"),
    ],
)
def test_video_spec_rejects_nonsense(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        VideoSpec(**kwargs)  # type: ignore[arg-type]


def test_split_annexb() -> None:
    stream = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x00\x01\x65\x88\x80"
    assert split_annexb(stream) == (b"\x67\x42", b"\x68\xce", b"\x65\x88\x80")
    assert split_annexb(b"") == ()
    assert split_annexb(b"\x00\x00\x01") == ()


def test_encoder_keyframes_parameter_sets_and_decodable_output() -> None:
    gen = PatternGenerator(SPEC)
    encoder = H264Encoder(SPEC)
    # Known before the first frame, so DESCRIBE can announce them.
    assert encoder.sps[0] & 0x1F == 7 and encoder.pps[0] & 0x1F == 8
    sps_before = encoder.sps

    decoder = av.CodecContext.create("h264", "r")
    keyframes = []
    errors = []
    for i in range(25):
        if i == 14:
            encoder.force_keyframe()
        rgb = gen.frame(i, "normal")
        encoded = encoder.encode(rgb, i)
        assert encoded.index == i
        assert encoded.nals, "zerolatency: one access unit out for every frame in"
        for nal in encoded.nals:
            assert not nal.startswith(b"\x00\x00\x01") and not nal.startswith(b"\x00\x00\x00\x01")
        kinds = {nal[0] & 0x1F for nal in encoded.nals}
        if encoded.keyframe:
            keyframes.append(i)
            assert {5, 7, 8} <= kinds  # IDR with SPS and PPS repeated in-band
        else:
            assert 5 not in kinds
        annexb = b"".join(b"\x00\x00\x00\x01" + nal for nal in encoded.nals)
        for frame in decoder.decode(av.Packet(annexb)):
            decoded = frame.to_ndarray(format="rgb24")
            errors.append(
                mean_abs_diff(decoded, gen.frame(frame.pts if frame.pts is not None else i, "normal"))
            )
    assert keyframes == [0, 10, 14, 24]  # every gop frames, and the forced one restarts the count
    assert encoder.sps == sps_before
    assert len(errors) >= 20
    assert max(errors) < 12  # lossy, but the picture is the one we encoded


def test_encoder_refuses_wrong_input() -> None:
    encoder = H264Encoder(SPEC)
    with pytest.raises(ValueError, match="shape"):
        encoder.encode(np.zeros((10, 10, 3), dtype=np.uint8), 0)
    with pytest.raises(ValueError, match="uint8"):
        encoder.encode(np.zeros((SPEC.height, SPEC.width, 3), dtype=np.float32), 0)
    encoder.encode(np.zeros((SPEC.height, SPEC.width, 3), dtype=np.uint8), 5)
    with pytest.raises(ValueError, match="increase"):
        encoder.encode(np.zeros((SPEC.height, SPEC.width, 3), dtype=np.uint8), 5)
