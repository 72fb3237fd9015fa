"""What every lab process shares: its command line, logging, the ready file, stopping, exit codes.

The manager (`lab.lab`) starts each process (`python -m lab.camera|office|recorder|services`)
detached inside its namespace, sends its stderr to `DIR/<process>.log`, waits for `DIR/run/<process>.ready`
and stops it with SIGTERM; `run_main` is the `main()` of each of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from lab.topology import Control, LabPaths, write_atomic

log = logging.getLogger(__name__)

__all__ = ["act_on_triggers", "lab_arguments", "mark_ready", "run_main", "setup_logging", "wait_for_stop"]


def setup_logging(process: str, verbose: bool = False) -> None:
    """Log lines with time and process name to stderr (the manager sends stderr to DIR/<process>.log)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def mark_ready(paths: LabPaths, process: str, info: dict[str, object]) -> None:
    """Tell the manager this process serves (`DIR/run/<process>.ready`)."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.ready(process), json.dumps({"ts": time.time(), **info}) + "\n")


async def wait_for_stop() -> None:
    """Return on SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def lab_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments every lab process takes: the lab directory and -v (`run_main` reads both)."""
    parser.add_argument("directory", type=Path, help="the lab directory (holds lab.json)")
    parser.add_argument("-v", "--verbose", action="store_true")


def run_main(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
    *,
    process: str | Callable[[argparse.Namespace], str],
    log: logging.Logger,
    unknown_name_exits_2: bool = False,
) -> int:
    """Parse `argv`, log as `process`, run `serve(args)` to its end; the exit code.

    0 when it returns; 1 for a ValueError or OSError (a bad lab.json, an address in use), logged on `log`
    (the process's own logger, so the line names the module). With `unknown_name_exits_2`, a KeyError (a
    name lab.json does not have) is logged and exits 2; otherwise it is not caught.
    """
    args = parser.parse_args(argv)
    setup_logging(process if isinstance(process, str) else process(args), args.verbose)
    unknown_name: tuple[type[Exception], ...] = (KeyError,) if unknown_name_exits_2 else ()
    try:
        asyncio.run(serve(args))
    except unknown_name as exc:
        log.error("%s", exc.args[0])
        return 2
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    return 0


async def act_on_triggers(
    paths: LabPaths,
    process: str,
    act: Callable[[], Awaitable[None]],
    every: float | None,
    ready: dict[str, object],
    poll_seconds: float = 0.2,
) -> None:
    """A persona's life: run ``act`` once per trigger (``lab trigger``, or every ``every`` seconds), triggers
    that arrive while it acts coalescing into one more run; ready once started, until SIGTERM."""
    control_path = paths.control(process)
    try:
        seen = Control.load(control_path).trigger
    except ValueError as exc:
        log.warning("ignoring the control file: %s", exc)
        seen = 0
    wake = asyncio.Event()
    pending = 0

    async def follow_control() -> None:
        nonlocal seen, pending
        while True:
            await asyncio.sleep(poll_seconds)
            try:
                control = Control.load(control_path)
            except ValueError as exc:
                log.warning("ignoring the control file: %s", exc)
                continue
            if control.trigger > seen:
                pending += control.trigger - seen
                seen = control.trigger
                wake.set()

    async def auto_trigger(period: float) -> None:
        nonlocal pending
        while True:
            await asyncio.sleep(period)
            pending += 1
            wake.set()

    async def acting() -> None:
        nonlocal pending
        while True:
            await wake.wait()
            wake.clear()
            if pending:
                pending = 0
                await act()

    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(follow_control(), name=f"{process}-control"),
            tg.create_task(acting(), name=f"{process}-act"),
        ]
        if every:
            tasks.append(tg.create_task(auto_trigger(every), name=f"{process}-auto"))
        mark_ready(paths, process, ready)
        await wait_for_stop()
        for task in tasks:
            task.cancel()
