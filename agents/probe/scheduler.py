"""Runs the stream probes on a schedule and turns what they find into metrics and alerts.

One probe of one camera (:func:`run_probe`): a fresh work directory, ``python -m
agents.probe.capture`` (PyAV) with the request on stdin, then ``python -m agents.probe.image`` (OpenCV)
on the frames it left, both under one deadline (``stream_probe.timeout``): a child still running then
is killed with its process group. Nothing a child does (hang, crash, garbage on stdout) gets further
than a failed probe with a reason.

:class:`StreamProber` probes every camera once per ``interval``, cameras spread over the interval and
at most ``concurrency`` at a time (a 2-core gateway also captures packets), feeds each outcome to the
camera's :class:`~agents.probe.health.CameraHealth` and hands the alerts it raises to ``submit`` (the
agent's alert pipeline: MQTT with spool, alerts file, counters). Open incidents are saved in the state
directory, so a restart does not raise the same incident again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from agents.config import CameraConfig, StreamProbeConfig
from agents.probe.capture import redact
from agents.probe.health import IMAGE_RULES, UNAVAILABLE, CameraHealth, Change, Outcome
from agents.probe.metrics import STREAM_PROBLEMS, StreamCollector, StreamStats
from agents.probe.reports import CaptureReport, CaptureRequest, ImageReport, decode_json
from agents.probe.urls import CameraUrl, with_credentials
from agents.state import set_aside
from monitor.alerts import Alert, Endpoint, iso_timestamp
from monitor.registry import RULES

__all__ = [
    "STATE_FILE",
    "DeviceLookup",
    "ProbeResult",
    "StreamProber",
    "alert_record",
    "run_probe",
]

log = logging.getLogger(__name__)

#: Open incidents and streaks, in the state directory.
STATE_FILE: Final = "stream_probe.json"
_STATE_VERSION: Final = 1
#: A device in the inventory: (ECS MAC, manufacturer display name or None).
DeviceLookup = Callable[[str], tuple[str, str | None] | None]
_STDERR_TAIL: Final = 300  # characters of a failed child's stderr kept in the error
#: Signals that stop a child from outside (the probe itself only ever sends SIGKILL, at its deadline): a
#: capture ended by one of them says nothing about the camera.
_STOPPED_FROM_OUTSIDE: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of one camera. ``image`` is None when the stream was down or the image step failed
    (``image_error`` then says why: the stream counts as up, the picture as not judged)."""

    camera: str
    finished: float  # Unix time
    duration: float  # seconds, connecting and judging included
    capture: CaptureReport
    image: ImageReport | None = None
    image_error: str | None = None
    snapshot: Path | None = None  # the JPEG the image step wrote (inside the work directory)
    interrupted: str | None = None
    """Why the probe concluded nothing about the camera: its capture process was stopped by someone else
    (SIGTERM, SIGINT or SIGHUP: a shutdown, a service manager, an operator), not by the camera."""

    @property
    def up(self) -> bool:
        return self.capture.ok

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.up, self.image.problem if self.up and self.image is not None else None)


# --------------------------------------------------------------------------------------------------
# One probe


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())


async def _run_child(
    argv: list[str], stdin: bytes | None, deadline: _Deadline, what: str
) -> tuple[int, bytes, bytes]:
    """Run one child to completion or kill it (and its process group) at the deadline.

    Raises TimeoutError when killed; the child never outlives this call, even when it is cancelled.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own process group: a kill reaches anything FFmpeg might have started too.
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), deadline.left())
    except TimeoutError:
        log.debug("%s: killed at the %g s deadline", what, deadline.seconds)
        raise
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
    assert proc.returncode is not None
    return proc.returncode, out, err


def _child_failure(what: str, code: int, err: bytes, url: str) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"the {what} process died ({name})"
    else:
        reason = f"the {what} process failed (exit status {code})"
    tail = err.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
    return redact(f"{reason}: {tail}" if tail else reason, url)


async def run_probe(
    camera: CameraConfig,
    url: str,
    settings: StreamProbeConfig,
    work: Path,
    *,
    python: str = sys.executable,
    snapshot: bool | None = None,
) -> ProbeResult:
    """Probe ``camera`` once (``url`` with credentials); frames and the snapshot go to ``work``."""
    started = time.monotonic()
    deadline = _Deadline(settings.timeout)
    transport = camera.transport or settings.transport
    # The socket timeout: long enough for a slow camera to answer, short enough to leave time to
    # report a silent one before the deadline kills the process.
    io_timeout = max(1.0, min(10.0, (settings.timeout - settings.duration) / 2))
    request = CaptureRequest(
        url=url, out_dir=str(work), transport=transport, duration=settings.duration, io_timeout=io_timeout
    )

    def result(capture: CaptureReport, **kw: Any) -> ProbeResult:
        return ProbeResult(camera.name, time.time(), time.monotonic() - started, capture, **kw)

    try:
        code, out, err = await _run_child(
            [python, "-m", "agents.probe.capture"],
            json.dumps(request.to_json()).encode(),
            deadline,
            f"capture of {camera.name}",
        )
    except TimeoutError:
        return result(
            CaptureReport(ok=False, error=f"the probe did not finish within {settings.timeout:g} s (killed)")
        )
    except OSError as exc:
        return result(CaptureReport(ok=False, error=f"cannot start the capture process: {exc}"))
    if code < 0 and -code in _STOPPED_FROM_OUTSIDE:
        reason = f"the capture process was stopped from outside ({signal.Signals(-code).name})"
        return result(CaptureReport(ok=False, error=reason), interrupted=reason)
    try:
        capture = CaptureReport.parse(decode_json(out, "capture report"))
    except ValueError as exc:
        failure = _child_failure("capture", code, err, url) if code != 0 else f"{exc}"
        return result(CaptureReport(ok=False, error=failure))
    if not capture.ok:
        return result(capture)
    want_snapshot = settings.snapshots if snapshot is None else snapshot
    argv = [
        python,
        "-m",
        "agents.probe.image",
        str(work),
        "--thresholds",
        json.dumps(settings.thresholds.to_json()),
    ]
    if want_snapshot:
        argv.append("--snapshot")
    try:
        code, out, err = await _run_child(argv, None, deadline, f"image check of {camera.name}")
    except TimeoutError:
        return result(capture, image_error=f"judging the frames did not finish within {settings.timeout:g} s")
    except OSError as exc:
        return result(capture, image_error=f"cannot start the image process: {exc}")
    if code != 0:
        return result(capture, image_error=_child_failure("image", code, err, url))
    try:
        image = ImageReport.parse(decode_json(out, "image report"))
    except ValueError as exc:
        return result(capture, image_error=str(exc))
    shot = Path(image.snapshot) if image.snapshot else None
    if shot is not None and shot.parent != work:
        shot = None  # only a file in our own work directory is ever moved
    log.debug("probe of %s took %.2f s", camera.name, time.monotonic() - started)
    return result(capture, image=image, snapshot=shot)


# --------------------------------------------------------------------------------------------------
# Alerts


_MESSAGES: Final = {
    UNAVAILABLE: (
        "Camera '{camera}' ({where}): its video stream cannot be watched: {error}. Check that the camera has "
        "power and network and that its RTSP service and the probe's credentials work; while this lasts the "
        "camera may not be recording for the site."
    ),
    IMAGE_RULES["frozen"]: (
        "Camera '{camera}' ({where}) shows a frozen picture: the image did not change in {probes} probes in "
        "a row ({seconds:g} s watched each). Look at its live view; if it is stuck, reboot the camera and "
        "check that the recorder has footage of the period."
    ),
    IMAGE_RULES["black"]: (
        "Camera '{camera}' ({where}) shows a black picture (brightness {luma:.0f} of 255) in {probes} "
        "probes in a row. Check the lens, the IR illumination and the exposure settings on site; a lens "
        "painted over also looks like this."
    ),
    IMAGE_RULES["covered"]: (
        "Camera '{camera}' ({where}): the picture has lost its detail ({detail:.2%} edge pixels) in {probes} "
        "probes in a row: the lens may be covered, sprayed or knocked out of focus. Send someone to look at "
        "the camera and treat it as possible tampering."
    ),
}


def alert_record(
    change: Change,
    camera: str,
    url: CameraUrl,
    result: ProbeResult,
    observer: str,
    *,
    ip: str | None = None,
    device: tuple[str, str | None] | None = None,
    snapshot: Path | None = None,
    duration: float = 0.0,
) -> dict[str, Any]:
    """The ECS alert record (docs/design.md §4.2) of a raised stream incident, plus ``url.original`` (without
    credentials), ``file.path`` (the snapshot JPEG, if any), ``event.start`` (the incident's first bad
    probe) and the measured values under ``camwatch.stream``."""
    rule = RULES[change.incident.rule_id]
    cap, image = result.capture, result.image
    where = url.host if ip is None or ip == url.host else f"{url.host}, {ip}"
    message = _MESSAGES[rule.id].format(
        camera=camera,
        where=where,
        error=(cap.error or "no video").rstrip("."),
        probes=change.probes,
        seconds=duration,
        luma=image.mean_luma if image else 0.0,
        detail=image.detail if image else 0.0,
    )
    alert = Alert(
        rule=rule,
        timestamp_ns=int(result.finished * 1e9),
        event_id=change.incident.event_id,
        observer=observer,
        message=message,
        destination=Endpoint(ip=ip, port=url.port, domain=url.host if url.ip is None else None),
        transport="tcp",
        protocol="rtsp",
        device_id=device[0] if device else None,
        manufacturer=device[1] if device else None,
    )
    record = alert.to_record()
    record["event"]["start"] = iso_timestamp(change.incident.since_ns)
    record["url"] = {"original": url.redacted}
    if snapshot is not None:
        record["file"] = {"path": str(snapshot)}
    measured: dict[str, Any] = {"camera": camera, "consecutive_probes": change.probes}
    if cap.ok:
        measured.update(
            {k: getattr(cap, k) for k in ("codec", "width", "height", "fps", "declared_fps", "bitrate")}
        )
        measured["keyframe_interval"] = cap.keyframe_interval
    else:
        measured["error"] = cap.error
    if image is not None:
        measured.update(
            {k: getattr(image, k) for k in ("mean_luma", "luma_spread", "detail", "difference", "frames")}
        )
    # Measurements, not identities: rounded to what an analyst reads (no fps 10.000000000000002).
    record["camwatch"] = {"stream": {k: _rounded(v) for k, v in measured.items()}}
    return record


def _rounded(value: object) -> object:
    """A measured float to 4 decimal places (1,000 and above, such as bit rates, to whole numbers); anything
    else as it is."""
    if isinstance(value, float):
        return round(value) if abs(value) >= 1000 else round(value, 4)
    return value


# --------------------------------------------------------------------------------------------------
# The scheduler


@dataclass(slots=True)
class _Camera:
    config: CameraConfig
    url: CameraUrl
    full_url: str = field(repr=False)  # with credentials: never logged
    health: CameraHealth
    last: ProbeResult | None = None
    last_ok: CaptureReport | None = None
    probes: Counter[str] = field(default_factory=Counter)


class StreamProber:
    """Probes every configured camera on schedule; ``submit`` receives each alert record.

    Build it while the agent still has its start-up privileges: it reads the cameras' password files.
    """

    def __init__(
        self,
        config: StreamProbeConfig,
        observer: str,
        state_dir: Path,
        submit: Callable[[dict[str, Any]], None],
        lookup: DeviceLookup | None = None,
        *,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self.observer = observer
        self.state_file = state_dir / STATE_FILE
        self.submit = submit
        self.lookup = lookup
        self.python = python
        #: Alerts raised, by rule id (the agent counts them in camwatch_alerts_total as they reach its
        #: alert path). Replaced, never changed in place: it may be read from another thread.
        self.alerts: Mapping[str, int] = {}
        self._cameras: dict[str, _Camera] = {}
        for cam in config.cameras:
            full = with_credentials(cam.url, cam.username, cam.password)
            self._cameras[cam.name] = _Camera(
                cam, CameraUrl.parse(cam.url), full, CameraHealth(cam.name, observer)
            )
        self._slots = asyncio.Semaphore(config.concurrency)
        self._load_state()

    @property
    def cameras(self) -> list[str]:
        return list(self._cameras)

    def last_result(self, camera: str) -> ProbeResult | None:
        return self._cameras[camera].last

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Probe until ``stop`` is set; cameras are spread evenly over the interval."""
        names = list(self._cameras)
        log.info(
            "stream probe: %d cameras every %g s, %d at a time",
            len(names),
            self.config.interval,
            self.config.concurrency,
        )
        async with asyncio.TaskGroup() as tg:
            for index, name in enumerate(names):
                offset = self.config.interval * index / len(names)
                tg.create_task(self._camera_loop(name, offset, stop), name=f"probe-{name}")

    async def _camera_loop(self, name: str, offset: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + offset
        while not stop.is_set():
            wait = due - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    return
            try:
                await self.probe(name, stop)
            except Exception:  # a bug or a full disk must not stop the agent, nor the other cameras
                log.exception("stream probe %s failed", name)
            # On schedule, not drifting; a probe that ran late does not cause a burst to catch up.
            due = max(due + self.config.interval, loop.time())

    async def probe(self, name: str, stop: asyncio.Event | None = None) -> ProbeResult | None:
        """Probe camera ``name`` now (waiting for a free slot), then update its metrics and incidents
        and submit the alerts raised. None when ``stop`` was set before the probe concluded: the agent's
        shutdown stops the probe (its children are killed) and a probe that ends then concludes nothing
        about the camera (its children may have been stopped with the agent)."""
        cam = self._cameras[name]
        async with self._slots:
            if stop is not None and stop.is_set():
                return None
            work = Path(tempfile.mkdtemp(prefix=f"camwatch-probe-{name}-"))
            try:
                result = await _unless_stopped(
                    run_probe(cam.config, cam.full_url, self.config, work, python=self.python), stop
                )
                if result is None or (stop is not None and stop.is_set()):
                    log.debug("stream probe %s: stopped with the agent, nothing concluded", name)
                    return None
                if result.interrupted is not None:
                    log.warning(
                        "stream probe %s: %s, not by the camera: this probe concludes nothing",
                        name,
                        result.interrupted,
                    )
                    return result
                await self._handle(cam, result)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return result

    async def _handle(self, cam: _Camera, result: ProbeResult) -> None:
        was_up = cam.last is None or cam.last.up
        cam.last = result
        cam.probes["ok" if result.up else "failed"] += 1
        if result.up:
            cam.last_ok = result.capture
            if result.image_error:
                log.error(
                    "stream probe %s: the picture could not be judged: %s",
                    cam.config.name,
                    result.image_error,
                )
        else:
            # Once per outage at WARNING (the alert says the rest); every failed probe at DEBUG.
            level = logging.WARNING if was_up else logging.DEBUG
            log.log(level, "stream probe %s: %s", cam.config.name, result.capture.error)
        changes = cam.health.update(result.outcome, int(result.finished * 1e9))
        if not changes:
            return
        for change in changes:
            if change.kind == "clear":
                log.info(
                    "stream probe %s: %s is over (after %d bad probes)",
                    cam.config.name,
                    change.incident.rule_id,
                    change.probes,
                )
                continue
            record = await self._alert(cam, change, result)
            rule = change.incident.rule_id
            self.alerts = {**self.alerts, rule: self.alerts.get(rule, 0) + 1}
            self.submit(record)
        await asyncio.to_thread(self._save_state)

    async def _alert(self, cam: _Camera, change: Change, result: ProbeResult) -> dict[str, Any]:
        ip = cam.url.ip or await _resolve(cam.url.host, cam.url.port)
        device = None
        if ip is not None and self.lookup is not None:
            try:
                device = await asyncio.to_thread(self.lookup, ip)
            except Exception:  # the alert matters more than its decoration
                log.exception("stream probe: inventory lookup of %s failed", ip)
        snapshot = None
        if change.incident.rule_id != UNAVAILABLE and result.snapshot is not None:
            snapshot = await asyncio.to_thread(
                self._keep_snapshot, cam.config.name, change, result.snapshot, result.finished
            )
        return alert_record(
            change,
            cam.config.name,
            cam.url,
            result,
            self.observer,
            ip=ip,
            device=device,
            snapshot=snapshot,
            duration=self.config.duration,
        )

    def _keep_snapshot(self, camera: str, change: Change, source: Path, taken: float) -> Path | None:
        """Move the probe's JPEG to ``snapshot_dir/<camera>/`` and keep the newest ``snapshot_keep``."""
        directory = self.config.snapshot_dir / camera
        stamp = datetime.fromtimestamp(taken, tz=UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        problem = change.incident.rule_id.removeprefix("stream.")
        target = directory / f"{stamp}-{problem}.jpg"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            shutil.move(source, target)
            # Names start with a UTC timestamp: name order is age order.
            for old in sorted(directory.glob("*.jpg"))[: -self.config.snapshot_keep]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.error("stream probe %s: cannot keep the snapshot in %s: %s", camera, directory, exc)
            return None
        return target

    # ------------------------------------------------------------------ metrics

    def collector(self) -> StreamCollector:
        """The ``camwatch_stream_*`` metrics of every camera."""
        return StreamCollector(self.stats)

    def stats(self) -> dict[str, StreamStats]:
        """Per-camera metrics as of each camera's last probe (see :class:`StreamStats`)."""
        out: dict[str, StreamStats] = {}
        for name, cam in self._cameras.items():
            last, ok = cam.last, cam.last_ok
            common: dict[str, Any] = {
                "probes_ok": cam.probes["ok"],
                "probes_failed": cam.probes["failed"],
                "codec": ok.codec if ok else None,
                "width": ok.width if ok else None,
                "height": ok.height if ok else None,
            }
            if last is None:
                out[name] = StreamStats(**common)
                continue
            common.update(up=last.up, last_probe=last.finished, probe_duration=last.duration)
            if not last.up:
                out[name] = StreamStats(fps=0.0, bitrate=0.0, **common)
                continue
            image = last.image
            problems = {p: getattr(image, p) for p in STREAM_PROBLEMS} if image is not None else {}
            out[name] = StreamStats(
                fps=last.capture.fps,
                bitrate=last.capture.bitrate,
                keyframe_interval=last.capture.keyframe_interval,
                problems=problems,
                **common,
            )
        return out

    # ------------------------------------------------------------------ state

    def _save_state(self) -> None:
        doc = {
            "version": _STATE_VERSION,
            "cameras": {name: cam.health.state() for name, cam in self._cameras.items()},
        }
        tmp = self.state_file.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.error("stream probe: cannot save %s: %s", self.state_file, exc)

    def _load_state(self) -> None:
        try:
            fd = os.open(self.state_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, encoding="utf-8") as fh:
                text = fh.read()
            doc = json.loads(text, parse_constant=_no_constant)
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            self._set_aside(f"unreadable ({type(exc).__name__}: {str(exc)[:200]})")
            return
        cameras = (
            doc.get("cameras") if isinstance(doc, dict) and doc.get("version") == _STATE_VERSION else None
        )
        if not isinstance(cameras, Mapping):
            self._set_aside("of an unknown format")
            return
        for name, state in cameras.items():
            cam = self._cameras.get(name)
            if cam is None or not isinstance(state, Mapping):
                continue  # a camera no longer configured
            try:
                cam.health.restore(state)
            except ValueError as exc:
                log.error("stream probe: %s: %s; its incidents start afresh", self.state_file, exc)

    def _set_aside(self, why: str) -> None:
        aside = set_aside(self.state_file)
        where = f"moved to {aside}" if aside is not None else "left where it is"
        log.error("stream probe: %s is %s: %s; open incidents start afresh", self.state_file, why, where)


async def _unless_stopped(
    job: Coroutine[Any, Any, ProbeResult], stop: asyncio.Event | None
) -> ProbeResult | None:
    """Run ``job``; if ``stop`` is set first, cancel it (which kills its children) and return None."""
    task = asyncio.ensure_future(job)
    if stop is None:
        return await task
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():  # stopped, or this coroutine itself was cancelled: the children go too
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if not task.cancelled() else None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number the probe's state holds")


async def _resolve(host: str, port: int) -> str | None:
    """The camera's address for ``destination.ip`` when its URL names a host (None if unresolvable)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), 2.0)
    except (OSError, TimeoutError):
        return None
    return str(infos[0][4][0]) if infos else None
