"""The live demo (`scripts/demo` as root): the camera lab, the agent, the personas misbehaving.

`python -m lab.demo_live [--dir DIR] [--prefix P] [--keep]` brings the lab up with the agent in
the gateway namespace, triggers every persona once, freezes one camera's picture, and prints the alerts
as the agent writes them (its `alerts_file`), what the stream probe measured, and which camera raised
what. The lab is taken down at the end unless `--keep` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lab.camera import BEHAVIOURS
from lab.demo import OEM_BRANDS, SEVERITIES, alert_line
from lab.lab import METRICS_PORT, Lab, LabError
from lab.netns import in_namespace

FROZEN_CAMERA = "cam2"
PROBE_INTERVAL = 5.0
ALERT_COLUMNS = f"(time, severity {'/'.join(SEVERITIES)}, rule, message)"
"""What each alert line shows (`lab.demo.alert_line`), every severity named."""


class AlertFollower:
    """Reads the lines the agent appends to its alerts file, from where it stopped last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.alerts: list[dict[str, object]] = []

    def poll(self) -> list[dict[str, object]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offset += end
        new = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        self.alerts += new
        return new


def hexdigits(mac: str) -> str:
    return "".join(c for c in mac.lower() if c in "0123456789abcdef")


def device_hex(alert: dict[str, object]) -> str:
    device = alert.get("device")
    return hexdigits(str(device.get("id", ""))) if isinstance(device, dict) else ""


def show(out: TextIO, alert: dict[str, object]) -> None:
    out.write(f"  ALERT {alert_line(alert)}\n")
    out.flush()


def camera_line(name: str, persona: str, ip: str, alerts: list[dict[str, object]]) -> str:
    """Which rules a camera raised, and why alerts name another maker than its persona's brand (OEM)."""
    rules = sorted({str(a["rule"]["id"]) for a in alerts})  # type: ignore[index]
    makers = {str(d.get("manufacturer")) for a in alerts if isinstance(d := a.get("device"), dict)}
    line = f"  {name} ({persona} persona, {ip}): {', '.join(rules) or 'nothing'}"
    brand = OEM_BRANDS.get(persona)
    if brand is not None and brand[1] in makers:
        line += f"\n      alerts call it a {brand[1]} device: {brand[2]}"
    return line


def follow(out: TextIO, follower: AlertFollower, done: Callable[[], bool], timeout: float) -> bool:
    """Print new alerts until `done()` or the timeout; returns `done()`."""
    deadline = time.monotonic() + timeout
    while True:
        for alert in follower.poll():
            show(out, alert)
        if done() or time.monotonic() > deadline:
            return done()
        time.sleep(0.25)


def stream_metrics(lab: Lab) -> list[str]:
    """The agent's camwatch_stream_* samples, scraped from inside the gateway namespace."""
    gw = lab.description().gateway
    with in_namespace(gw.namespace):
        url = f"http://{gw.bridge_ip}:{METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    wanted = ("camwatch_stream_info", "camwatch_stream_up", "camwatch_stream_frames_per_second",
              "camwatch_stream_bitrate_bits_per_second", "camwatch_stream_image_problem")  # fmt: skip
    return [line for line in text.splitlines() if line.startswith(wanted)]


def run(lab: Lab, out: TextIO) -> int:
    out.write(f"Bringing the camera lab up in {lab.directory} (namespaces {lab.prefix}-*)...\n")
    status = lab.up(agent=True, probe_interval=PROBE_INTERVAL)
    out.write(status.text() + "\n")
    out.write("The agent captures in the gateway namespace; its alerts appear below as they arrive "
              f"{ALERT_COLUMNS}.\n\n")  # fmt: skip
    follower = AlertFollower(lab.paths.alerts)
    desc = lab.description()
    time.sleep(2.0)  # the agent's first capture batches and the recorder's sessions settle

    out.write("Triggering every persona once (phone-home, XML-STUN, UPnP, Easy4IP, WebRTC live view, "
              "an office PC pulling RTSP, the infected DVR's Mirai scan, the attacker's exploits and "
              "password guessing)...\n")  # fmt: skip
    lab.trigger()
    behaviours = set(BEHAVIOURS)  # every behaviour of lab/camera.py
    follow(out, follower, lambda: {e.behaviour for e in lab.events()} >= behaviours, 45.0)
    follow(out, follower, lambda: False, 2.0)

    out.write(
        f"\nFreezing {FROZEN_CAMERA}'s picture; the stream probe checks every {PROBE_INTERVAL:g} s...\n"
    )
    lab.set_pattern(FROZEN_CAMERA, "frozen")
    frozen = follow(
        out,
        follower,
        lambda: any(a["rule"]["id"] == "stream.frozen" for a in follower.alerts),  # type: ignore[index]
        60.0,
    )
    lab.set_pattern(FROZEN_CAMERA, "normal")

    out.write("\nStream probe (Prometheus metrics of the agent):\n")
    for line in stream_metrics(lab):
        out.write(f"  {line}\n")
    out.write("\nAlerts by camera:\n")
    for cam in desc.cameras:
        mine = [a for a in follower.alerts if device_hex(a) == hexdigits(cam.mac)]
        out.write(camera_line(cam.name, cam.persona, cam.ip, mine) + "\n")
    out.write(f"\nFiles: {lab.paths.alerts} (alerts), {lab.paths.events} (what the personas did), "
              f"{lab.paths.agent_config}, {lab.paths.policy}\n")  # fmt: skip
    return 0 if frozen else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the camwatch camera lab demo (root).")
    parser.add_argument("--dir", type=Path, default=Path("out/lab"))
    parser.add_argument("--prefix", default="cwdemo")
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        lab = Lab(args.prefix, args.dir)
        lab.down()  # what an interrupted earlier demo left behind
    except LabError as exc:
        sys.stderr.write(f"camwatch demo: {exc}\n")
        return 2
    code = 1
    try:
        code = run(lab, out)
    except LabError as exc:
        sys.stderr.write(f"camwatch demo: {exc}\n")
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        if args.keep and code == 0:
            where = f"--dir {args.dir} --prefix {args.prefix}"
            out.write(f"\nThe lab is still running: `camwatch lab status {where}`; "
                      f"stop it with `camwatch lab down {where}`.\n")  # fmt: skip
        else:
            lab.down()
            out.write("\nLab taken down.\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
