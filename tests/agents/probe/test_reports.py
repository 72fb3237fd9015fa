"""The probe's wire formats and camera URLs: round trips, and a precise error for every bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.probe.capture import redact
from agents.probe.reports import CaptureReport, CaptureRequest, ImageReport, Thresholds, decode_json
from agents.probe.urls import CameraUrl, with_credentials

ROOT = Path(__file__).parents[3]
GOOD_CAPTURE: dict[str, Any] = {
    "ok": True, "error": None, "codec": "h264", "profile": "High", "width": 1920, "height": 1080,
    "fps": 25.0, "declared_fps": 25.0, "bitrate": 4_000_000.0, "keyframe_interval": 2.0,
    "keyframe_interval_frames": 50.0, "frames": 100, "packets": 101, "keyframes": 2, "seconds": 4.0,
    "samples": 8, "decode_errors": 0,
}  # fmt: skip
GOOD_IMAGE: dict[str, Any] = {
    "frames": 8, "mean_luma": 100.0, "luma_spread": 50.0, "detail": 0.05, "difference": 12.0,
    "black": False, "covered": False, "frozen": False, "snapshot": None,
}  # fmt: skip


def test_round_trips() -> None:
    capture = CaptureReport.parse(GOOD_CAPTURE)
    assert capture.to_json() == GOOD_CAPTURE
    assert CaptureReport.parse(decode_json(json.dumps(capture.to_json()), "x")) == capture
    image = ImageReport.parse(GOOD_IMAGE)
    assert image.to_json() == GOOD_IMAGE and image.problem is None
    assert ImageReport.parse({**GOOD_IMAGE, "frozen": True}).problem == "frozen"
    request = CaptureRequest(url="rtsp://10.0.0.1/s", out_dir="/tmp/x", transport="udp")
    assert CaptureRequest.parse(request.to_json()) == request
    assert Thresholds.parse(Thresholds().to_json()) == Thresholds()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"ok": "yes"}, "'ok' has the wrong type (str)"),
        ({"width": 0}, "'width' is 0, outside 1..65536"),
        ({"width": True}, "'width' must not be a boolean"),
        ({"fps": math.inf}, "'fps' is inf"),
        ({"fps": -1.0}, "'fps' is -1.0"),
        ({"frames": None}, "'frames' is missing"),
        ({"codec": None}, "'ok' is true but codec, width or height is missing"),
        ({"ok": False}, "'ok' is false and 'error' does not say why"),
    ],
)
def test_capture_report_errors_name_the_field(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=r"^capture report: ") as info:
        CaptureReport.parse({**GOOD_CAPTURE, **change})
    assert words in str(info.value)


def test_image_report_errors() -> None:
    with pytest.raises(ValueError, match="more than one of black, covered, frozen"):
        ImageReport.parse({**GOOD_IMAGE, "black": True, "frozen": True})
    with pytest.raises(ValueError, match="'detail' is 2"):
        ImageReport.parse({**GOOD_IMAGE, "detail": 2})
    with pytest.raises(ValueError, match="'frames' is 0"):
        ImageReport.parse({**GOOD_IMAGE, "frames": 0})


def test_capture_request_errors() -> None:
    good = CaptureRequest(url="rtsp://10.0.0.1/s", out_dir="/tmp/x").to_json()
    with pytest.raises(ValueError, match="'url' must start with rtsp:// or rtsps://"):
        CaptureRequest.parse({**good, "url": "http://10.0.0.1/"})
    with pytest.raises(ValueError, match="'transport' must be one of tcp, udp"):
        CaptureRequest.parse({**good, "transport": "http"})
    with pytest.raises(ValueError, match=r"'samples' is 1, outside 2\.\.1000"):
        CaptureRequest.parse({**good, "samples": 1})


@pytest.mark.parametrize(
    ("data", "words"),
    [(b"", "not JSON"), (b"\xff\xfe", "not JSON"), (b"[1, 2]", "expected a JSON object, got list"),
     (b"Segmentation fault", "got 'Segmentation fault'")],
)  # fmt: skip
def test_decode_json_names_what_it_expected(data: bytes, words: str) -> None:
    with pytest.raises(ValueError, match=r"^capture report: ") as info:
        decode_json(data, "capture report")
    assert words in str(info.value)


def test_camera_urls() -> None:
    url = CameraUrl.parse("rtsp://admin:s3cr%40t@10.77.0.11/Streaming/Channels/101?transport=tcp")
    assert (url.host, url.port, url.ip) == ("10.77.0.11", 554, "10.77.0.11")
    assert (url.username, url.password) == ("admin", "s3cr@t")
    assert url.redacted == "rtsp://10.77.0.11/Streaming/Channels/101?transport=tcp"
    tls = CameraUrl.parse("RTSPS://[fd00::5]:8322/live")
    assert (tls.scheme, tls.host, tls.port, tls.ip, tls.redacted) == (
        "rtsps", "fd00::5", 8322, "fd00::5", "rtsps://[fd00::5]:8322/live",
    )  # fmt: skip
    assert CameraUrl.parse("rtsps://cam-7.site.example/live").port == 322
    assert CameraUrl.parse("rtsps://cam-7.site.example/live").ip is None
    for bad, words in [
        ("http://10.0.0.1/", "the scheme is 'http'"),
        ("rtsp:///stream", "names no host"),
        ("rtsp://10.0.0.1:99999/", "cannot be parsed"),
        ("rtsp://10.0.0.1/a b", "spaces or control characters"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=words):
            CameraUrl.parse(bad)


def test_credentials_are_encoded_into_the_url_and_redacted_out_of_messages() -> None:
    full = with_credentials("rtsp://10.0.0.1:554/s", "admin", "p@ss:w/rd")
    assert full == "rtsp://admin:p%40ss%3Aw%2Frd@10.0.0.1:554/s"
    parsed = CameraUrl.parse(full)
    assert parsed.redacted == "rtsp://10.0.0.1:554/s"
    assert with_credentials("rtsp://10.0.0.1/s", None, "x") == "rtsp://10.0.0.1/s"
    assert with_credentials("rtsp://10.0.0.1/s", "viewer", None) == "rtsp://viewer@10.0.0.1/s"
    message = f"cannot open {full}: 401 Unauthorized for admin with p@ss:w/rd"
    cleaned = redact(message, full)
    assert "p@ss" not in cleaned and "p%40ss" not in cleaned and "admin" not in cleaned
    assert "rtsp://10.0.0.1:554/s" in cleaned


def capture_program(stdin: str, block_av: bool = False) -> subprocess.CompletedProcess[str]:
    code = "import sys\n"
    if block_av:
        code += "sys.modules['av'] = None  # as without the stream extra\n"
    code += "from agents.probe.capture import main\nsys.exit(main())\n"
    return subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_capture_program_answers_bad_requests_with_a_report(tmp_path: Path) -> None:
    done = capture_program('{"url": "rtsp://x/"}')
    assert done.returncode == 2
    assert json.loads(done.stdout) == {"ok": False, "error": "capture request: 'transport' is missing"}
    done = capture_program("not json")
    assert done.returncode == 2 and json.loads(done.stdout)["error"].startswith("capture request: not JSON")


def test_the_capture_program_without_pyav_names_the_fix(tmp_path: Path) -> None:
    request = CaptureRequest(url="rtsp://127.0.0.1:9/s", out_dir=str(tmp_path))
    done = capture_program(json.dumps(request.to_json()), block_av=True)
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and "pip install 'camwatch[stream]'" in report["error"]
    assert "Traceback" not in done.stderr


def test_the_alert_record_rounds_measurements_for_the_reader() -> None:
    # Float noise from the measuring (fps 10.000000000000002) must not reach an analyst's alert.
    from agents.probe.health import Change, Incident
    from agents.probe.reports import CaptureReport
    from agents.probe.scheduler import ProbeResult, alert_record

    cap = CaptureReport(
        ok=True, codec="h264", width=480, height=270, fps=10.000000000000002, declared_fps=10.0,
        bitrate=283980.4878048781, keyframe_interval=1.9999999999999996,
    )  # fmt: skip
    change = Change("raise", Incident("stream.frozen", "e1", 1_767_225_600 * 10**9), 2)
    url = CameraUrl.parse("rtsp://10.77.0.12:554/stream1")
    record = alert_record(change, "cam2", url, ProbeResult("cam2", 0.0, 4.0, cap), "lab/gw")
    stream = record["camwatch"]["stream"]
    assert (stream["fps"], stream["bitrate"], stream["keyframe_interval"]) == (10.0, 283980, 2.0)
    assert (stream["camera"], stream["width"], stream["consecutive_probes"]) == ("cam2", 480, 2)
