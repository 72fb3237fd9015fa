"""The stream probe against the lab's RTSP cameras (lab/rtsp_server.py): real H.264 over RTSP,
real PyAV and OpenCV child processes, real sockets on loopback.

Small pictures and short probe durations keep this quick: every probe here watches 1 s of video.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip("av", reason="the stream extra (PyAV) is not installed")
cv2 = pytest.importorskip("cv2", reason="the stream extra (opencv-python-headless) is not installed")
rtsp_server = pytest.importorskip("lab.rtsp_server", reason="the lab's RTSP camera is not available")

from agents.config import CameraConfig, StreamProbeConfig  # noqa: E402
from agents.probe.scheduler import StreamProber, _Deadline, _run_child, run_probe  # noqa: E402
from lab.video import VideoSpec  # noqa: E402
from monitor.registry import RULES  # noqa: E402

RtspCameraServer = rtsp_server.RtspCameraServer
OBSERVER = "depot-7/gw-test"
HIKVISION = ("44-19-b6-00-00-01", "Hikvision")
_T = TypeVar("_T")


def settings(tmp_path: Path, cameras: list[CameraConfig], **changes: Any) -> StreamProbeConfig:
    values: dict[str, Any] = {
        "cameras": tuple(cameras),
        "snapshot_dir": tmp_path / "snapshots",
        "interval": 1.0,
        "duration": 1.0,
        "timeout": 8.0,
        "concurrency": max(1, len(cameras)),
        "snapshot_keep": 3,
    }
    return StreamProbeConfig(**{**values, **changes})


def run(coro: Callable[[], Awaitable[_T]]) -> _T:
    return asyncio.run(asyncio.wait_for(coro(), 60))


def children(marker: str) -> list[int]:
    """Our child processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if marker in cmdline and ppid == os.getpid():
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_the_probe_reports_what_the_camera_serves(tmp_path: Path, transport: str) -> None:
    spec = VideoSpec(width=320, height=176, fps=12, gop=6, bitrate=300_000)

    async def probe() -> Any:
        async with RtspCameraServer(spec, host="127.0.0.1", port=0) as cam:
            camera = CameraConfig("entrance", cam.url("127.0.0.1"), transport=transport)
            (tmp_path / "work").mkdir()
            return await run_probe(camera, camera.url, settings(tmp_path, [camera]), tmp_path / "work")

    result = run(probe)
    cap = result.capture
    assert cap.ok, cap.error
    assert (cap.codec, cap.width, cap.height) == ("h264", 320, 176)
    assert cap.fps == pytest.approx(12, abs=0.3) and cap.declared_fps == pytest.approx(12, abs=0.01)
    assert cap.keyframe_interval == pytest.approx(0.5, abs=0.01) and cap.keyframe_interval_frames == 6
    assert cap.seconds == pytest.approx(1.0, abs=0.1) and 10 <= cap.frames <= 13
    # The lab's moving bars at 320x176 need far less than the 300 kbit/s the encoder may use.
    assert cap.bitrate is not None and 5_000 < cap.bitrate < 450_000
    assert result.image is not None and result.image.problem is None and result.up


def test_frozen_black_and_covered_cameras_raise_exactly_their_alert_once(tmp_path: Path) -> None:
    spec = VideoSpec(width=320, height=240, fps=10, gop=10)
    alerts: list[dict[str, Any]] = []

    async def scenario() -> tuple[StreamProber, dict[str, Any]]:
        async with (
            RtspCameraServer(spec, host="127.0.0.1", port=0) as normal,
            RtspCameraServer(spec, host="127.0.0.1", port=0, pattern="frozen") as frozen,
            RtspCameraServer(spec, host="127.0.0.1", port=0, pattern="black") as black,
            RtspCameraServer(spec, host="127.0.0.1", port=0, pattern="covered") as covered,
        ):
            servers = {"lobby": normal, "entrance": frozen, "yard": black, "gate": covered}
            cameras = [CameraConfig(name, srv.url("127.0.0.1")) for name, srv in servers.items()]
            prober = StreamProber(
                settings(tmp_path, cameras), OBSERVER, tmp_path, alerts.append, lambda ip: HIKVISION
            )

            async def round_() -> None:
                await asyncio.gather(*(prober.probe(name) for name in servers))

            await round_()
            assert alerts == []  # one bad probe is not an incident yet
            await round_()
            first = [dict(a) for a in alerts]
            servers["entrance"].set_pattern("normal")  # the frozen camera recovers
            await round_()
            return prober, {"first": first, "ports": {n: s.port for n, s in servers.items()}}

    prober, seen = run(scenario)
    by_camera = {a["camwatch"]["stream"]["camera"]: a for a in seen["first"]}
    assert {c: a["rule"]["id"] for c, a in by_camera.items()} == {
        "entrance": "stream.frozen", "yard": "stream.black", "gate": "stream.covered",
    }  # fmt: skip
    assert len(alerts) == 3  # the third round raised nothing new: one alert per incident
    for camera, alert in by_camera.items():
        rule = RULES[alert["rule"]["id"]]
        assert alert["event"]["kind"] == "alert" and alert["event"]["severity"] == rule.severity
        assert alert["destination"] == {"ip": "127.0.0.1", "port": seen["ports"][camera]}
        assert alert["url"]["original"] == f"rtsp://127.0.0.1:{seen['ports'][camera]}/stream1"
        assert alert["device"] == {"id": HIKVISION[0], "manufacturer": HIKVISION[1]}
        assert alert["observer"]["name"] == OBSERVER and f"Camera '{camera}'" in alert["message"]
        assert alert["camwatch"]["stream"]["codec"] == "h264" and alert["camwatch"]["stream"]["width"] == 320
        snapshot = Path(alert["file"]["path"])
        assert snapshot.parent == tmp_path / "snapshots" / camera
        image = cv2.imread(str(snapshot))
        assert image is not None and image.shape == (240, 320, 3)
    assert by_camera["yard"]["camwatch"]["stream"]["mean_luma"] < 5
    # Metrics: the last probe's verdicts; the recovered camera shows no problem any more.
    stats = prober.stats()
    assert stats["yard"].problems == {"black": True, "covered": False, "frozen": False}
    assert stats["gate"].problems["covered"] and stats["entrance"].problems == dict.fromkeys(
        ("black", "covered", "frozen"), False
    )
    assert all(s.up and s.probes_ok == 3 and s.probes_failed == 0 for s in stats.values())
    assert stats["lobby"].fps == pytest.approx(10, abs=0.3) and (
        stats["lobby"].width,
        stats["lobby"].height,
    ) == (
        320,
        240,
    )
    assert prober.alerts == {"stream.frozen": 1, "stream.black": 1, "stream.covered": 1}

    # A restarted agent resumes the open incidents: still black, still covered, no new alert.
    alerts.clear()

    async def restart() -> None:
        async with (
            RtspCameraServer(spec, host="127.0.0.1", port=0, pattern="black") as black,
        ):
            camera = CameraConfig("yard", black.url("127.0.0.1"))
            again = StreamProber(settings(tmp_path, [camera]), OBSERVER, tmp_path, alerts.append)
            await again.probe("yard")
            await again.probe("yard")

    run(restart)
    assert alerts == []


def test_a_stopped_camera_is_unavailable(tmp_path: Path) -> None:
    alerts: list[dict[str, Any]] = []

    async def scenario() -> StreamProber:
        cam = RtspCameraServer(VideoSpec(width=160, height=96, fps=10, gop=10), host="127.0.0.1", port=0)
        await cam.start()
        # A host name in the URL: the alert still names the address it resolves to.
        camera = CameraConfig("entrance", f"rtsp://localhost:{cam.port}/stream1")
        prober = StreamProber(settings(tmp_path, [camera]), OBSERVER, tmp_path, alerts.append)
        first = await prober.probe("entrance")
        assert first is not None
        assert first.up, first.capture.error
        await cam.close()
        await prober.probe("entrance")
        await prober.probe("entrance")
        return prober

    prober = run(scenario)
    assert [a["rule"]["id"] for a in alerts] == ["stream.unavailable"]
    alert = alerts[0]
    assert alert["destination"]["domain"] == "localhost" and alert["destination"]["ip"] in (
        "127.0.0.1",
        "::1",
    )
    assert "cannot be watched" in alert["message"] and alert["camwatch"]["stream"]["error"]
    assert "file" not in alert
    stats = prober.stats()["entrance"]
    assert (stats.up, stats.fps, stats.bitrate, stats.problems) == (False, 0.0, 0.0, {})
    assert (stats.probes_ok, stats.probes_failed) == (1, 2)
    assert stats.codec == "h264"  # what the camera served when it was last up


async def _silent_server() -> asyncio.Server:
    """Accepts RTSP connections and never answers (a hung camera)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        writer.close()

    return await asyncio.start_server(hold, "127.0.0.1", 0)


def test_a_hung_camera_fails_on_the_socket_timeout(tmp_path: Path) -> None:
    async def scenario() -> Any:
        server = await _silent_server()
        port = server.sockets[0].getsockname()[1]
        camera = CameraConfig("entrance", f"rtsp://127.0.0.1:{port}/stream1")
        (tmp_path / "work").mkdir()
        async with server:
            return await run_probe(
                camera, camera.url, settings(tmp_path, [camera], timeout=4.0), tmp_path / "work"
            )

    result = run(scenario)
    assert not result.up and result.capture.error.startswith("cannot open the stream")
    assert result.duration < 4.0  # reported by the capture itself, not killed at the deadline


def test_a_probe_past_its_deadline_is_killed(tmp_path: Path) -> None:
    async def scenario() -> Any:
        server = await _silent_server()
        port = server.sockets[0].getsockname()[1]
        camera = CameraConfig("entrance", f"rtsp://127.0.0.1:{port}/stream1")
        (tmp_path / "work").mkdir()
        # A deadline shorter than the capture's socket timeout (1 s): the agent kills it first.
        async with server:
            return await run_probe(
                camera, camera.url, settings(tmp_path, [camera], duration=0.5, timeout=0.7), tmp_path / "work"
            )

    result = run(scenario)
    assert not result.up and result.capture.error == "the probe did not finish within 0.7 s (killed)"
    assert children("agents.probe.capture") == []


def test_a_child_is_killed_at_the_deadline_and_when_cancelled() -> None:
    marker = f"camwatch-test-sleeper-{os.getpid()}"
    sleeper = [sys.executable, "-c", "import time, sys; time.sleep(60)", marker]

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await _run_child(sleeper, None, _Deadline(0.5), "sleeper")
        assert children(marker) == []
        task = asyncio.create_task(_run_child(sleeper, None, _Deadline(30), "sleeper"))
        while not children(marker):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert children(marker) == []

    run(scenario)


def test_the_schedule_spreads_cameras_and_respects_concurrency(tmp_path: Path) -> None:
    spec = VideoSpec(width=160, height=96, fps=10, gop=5)
    alerts: list[dict[str, Any]] = []

    async def scenario() -> list[Any]:
        async with (
            RtspCameraServer(spec, host="127.0.0.1", port=0) as a,
            RtspCameraServer(spec, host="127.0.0.1", port=0) as b,
        ):
            cameras = [CameraConfig("a", a.url("127.0.0.1")), CameraConfig("b", b.url("127.0.0.1"))]
            prober = StreamProber(
                settings(tmp_path, cameras, concurrency=1, duration=0.5, interval=1.0),
                OBSERVER,
                tmp_path,
                print,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(prober.run(stop))
            seen: dict[tuple[str, float], Any] = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not any(camera == "b" for camera, _ in seen) and loop.time() < deadline:
                for name in ("a", "b"):
                    result = prober.last_result(name)
                    if result is not None:
                        seen[(name, result.finished)] = result
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.wait_for(task, 10)
            return sorted(seen.values(), key=lambda r: r.finished)

    results = run(scenario)
    assert {r.camera for r in results} == {"a", "b"} and all(r.up for r in results)
    # One probe at a time: each starts after the one before it finished.
    for before, after in itertools.pairwise(results):
        assert after.finished - after.duration >= before.finished - 0.05, (before, after)
    # Camera a went first (offset 0), camera b half an interval later, in the slot a left.
    assert results[0].camera == "a" and alerts == []


async def _capture_child(task: asyncio.Task[Any]) -> int:
    """The pid of the probe's capture process, once it runs."""
    while not (found := children("agents.probe.capture")):
        assert not task.done(), task
        await asyncio.sleep(0.02)
    return found[0]


def test_a_capture_stopped_from_outside_is_not_a_camera_failure(tmp_path: Path) -> None:
    """A healthy camera whose probe is killed with SIGTERM by someone else (a shutdown that signals every
    process, `camwatch lab down`, an operator): no stream.unavailable, and the probe counts for nothing."""
    alerts: list[dict[str, Any]] = []

    async def scenario() -> tuple[Any, Any, StreamProber]:
        async with RtspCameraServer(
            VideoSpec(width=160, height=96, fps=10, gop=10), host="127.0.0.1", port=0
        ) as cam:
            camera = CameraConfig("yard", cam.url("127.0.0.1"))
            prober = StreamProber(
                settings(tmp_path, [camera], duration=20.0, timeout=40.0), OBSERVER, tmp_path, alerts.append
            )
            task = asyncio.create_task(prober.probe("yard"))
            os.kill(await _capture_child(task), signal.SIGTERM)
            stopped = await task
            prober.config = settings(tmp_path, [camera], duration=0.5)
            after = await prober.probe("yard")  # the next probe, undisturbed: the camera is fine
            return stopped, after, prober

    stopped, after, prober = run(scenario)
    assert stopped.interrupted == "the capture process was stopped from outside (SIGTERM)"
    assert after.up and after.interrupted is None
    assert alerts == []
    stats = prober.stats()["yard"]
    assert (stats.probes_ok, stats.probes_failed, stats.up) == (1, 0, True)


@pytest.mark.parametrize("children_signalled", [False, True])
def test_the_agents_shutdown_ends_a_probe_without_a_verdict(tmp_path: Path, children_signalled: bool) -> None:
    """The agent stops while a probe runs (its child also gets SIGTERM when the whole namespace or cgroup
    is signalled): the probe is stopped, its child killed, and nothing is concluded about the camera."""
    alerts: list[dict[str, Any]] = []

    async def scenario() -> StreamProber:
        async with RtspCameraServer(
            VideoSpec(width=160, height=96, fps=10, gop=10), host="127.0.0.1", port=0
        ) as cam:
            camera = CameraConfig("yard", cam.url("127.0.0.1"))
            prober = StreamProber(
                settings(tmp_path, [camera], duration=20.0, timeout=40.0), OBSERVER, tmp_path, alerts.append
            )
            stop = asyncio.Event()
            task = asyncio.create_task(prober.run(stop))
            child = await _capture_child(task)
            if children_signalled:
                os.kill(child, signal.SIGTERM)
            stop.set()
            await asyncio.wait_for(task, 10)  # well before the 20 s the probe would take
            return prober

    prober = run(scenario)
    assert alerts == []
    assert children("agents.probe.capture") == []
    stats = prober.stats()["yard"]
    assert (stats.probes_ok, stats.probes_failed, stats.up) == (0, 0, None)
