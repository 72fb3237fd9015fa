"""`camwatch lab up --contain enforce`: the agent in the gateway namespace enforces the lab's policy with
nftables. The EZVIZ and Dahua personas' phone-home fails at the gateway, the recorder keeps pulling
every camera and the stream probe keeps decoding their frames; once containment is removed, the same
phone-home gets through again (so it was containment that stopped it). Root, nft and the lab extras."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from lab.lab import Lab
from lab.topology import LabEvent
from tests.agents.contain.conftest import nft_skip_reason
from tests.agents.netns import inside

ROOT = Path(__file__).parents[2]
_T = TypeVar("_T")


def _missing_extras() -> str | None:
    try:
        import aiortc  # noqa: F401
        import av  # noqa: F401
        import cv2  # noqa: F401
    except ImportError as exc:
        return (
            f"the lab needs the lab, agent and stream extras (pip install camwatch[lab,agent,stream]): {exc}"
        )
    return None


pytestmark = [
    pytest.mark.skipif(nft_skip_reason() is not None, reason=nft_skip_reason() or ""),
    pytest.mark.skipif(_missing_extras() is not None, reason=_missing_extras() or ""),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(f"cwk{os.getpid() % 1000}", tmp_path_factory.mktemp("lab-contain") / "lab")
    try:
        status = lab.up(contain="enforce", probe=True, probe_interval=5)
        assert status.containment == "enforce" and "containment: enforce" in status.text()
        yield lab
    finally:
        lab.down()


def wait_for(what: str, check: Callable[[], _T | None], timeout: float) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.5)


def metrics(lab: Lab) -> dict[str, float]:
    desc = lab.description()
    url = f"http://{desc.gateway.bridge_ip}:10108/metrics"
    with inside(desc.gateway.namespace), urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("camwatch_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def event(lab: Lab, behaviour: str, since: float) -> LabEvent | None:
    return next((e for e in lab.events() if e.behaviour == behaviour and e.ts >= since), None)


def recorder_packets(lab: Lab) -> dict[str, int]:
    return {str(c["name"]): int(c["recorder_packets"] or 0) for c in lab.status().cameras}  # type: ignore[call-overload]


def test_phone_home_fails_while_the_recorder_and_the_probe_keep_their_video(lab: Lab) -> None:
    desc = lab.description()
    gw = desc.gateway.namespace
    table = subprocess.run(["ip", "netns", "exec", gw, "nft", "list", "table", "inet", "camwatch"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert table.returncode == 0 and "camwatch containment plan" in table.stdout
    pulled = recorder_packets(lab)
    started = time.time()
    lab.trigger(["cam1", "cam2"])
    ezviz = wait_for("the EZVIZ phone-home", lambda: event(lab, "ezviz.phone_home", started), 60)
    dahua = wait_for("the Dahua phone-home", lambda: event(lab, "dahua.phone_home", started), 60)
    # Resolved at the site's resolver (the gateway, never blocked), then dropped on the way out.
    assert ezviz.detail["address"] == desc.services.ezviz_cloud and "status" not in ezviz.detail
    assert "error" in ezviz.detail, ezviz.detail
    assert dahua.detail["address"] == desc.services.easy4ip and dahua.detail["answers"] == 0, dahua.detail
    # The recorder keeps pulling every camera, the stream probe keeps decoding frames.
    wait_for(
        "the recorder pulling every camera",
        lambda: all(n > pulled[name] for name, n in recorder_packets(lab).items()),
        30,
    )

    def probed_after_trigger() -> dict[str, float] | None:
        m = metrics(lab)
        names = [c.name for c in desc.cameras]
        done = all(
            m.get(f'camwatch_stream_last_probe_timestamp_seconds{{camera="{n}"}}', 0) > started for n in names
        )
        return m if done else None

    m = wait_for("a stream probe of every camera after the trigger", probed_after_trigger, 90)
    assert all(m[f'camwatch_stream_up{{camera="{c.name}"}}'] == 1 for c in desc.cameras), m

    def dropped() -> dict[str, float] | None:
        m = metrics(lab)
        return m if m.get('camwatch_containment_dropped_packets_total{reason="policy"}') else None

    m = wait_for("the kernel's drop counter", dropped, 30)
    assert m["camwatch_containment_ruleset_loaded"] == 1
    # Containment removed: the same phone-home gets its answers again.
    removed = subprocess.run(
        ["ip", "netns", "exec", gw, sys.executable, "-m", "agents.cli", "contain", "remove", "--config",
         str(lab.paths.agent_config), "--reason", "test"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    again = time.time()
    lab.trigger(["cam2"])
    dahua = wait_for(
        "the Dahua phone-home without containment", lambda: event(lab, "dahua.phone_home", again), 60
    )
    assert dahua.detail["answers"] == 2, dahua.detail
