"""A synchronous JSON-lines writer: ``camwatch replay``'s alerts and flows (the agent's file outputs are the
asynchronous sinks of agents/sinks/jsonl.py). Kept apart so that a replay imports nothing of the agent."""

from __future__ import annotations

import json
import os
import sys
from types import TracebackType
from typing import IO, Any


class JsonLinesSink:
    """Writes one compact JSON object per line to a file path or '-' (stdout), synchronously.

    By default the file is replaced and written through a buffer (a replay's output). With ``append``
    it is appended to, never truncated, and each record is flushed as it is written, so a reader
    following the file (``tail -f``, the lab demo) sees every record at once.
    """

    def __init__(self, target: str | os.PathLike[str], *, append: bool = False) -> None:
        self.target = target
        self.append = append
        self._fh: IO[str] | None = None
        self._own = False
        self.count = 0

    def open(self) -> JsonLinesSink:
        """Open the target (OSError if it cannot be); `close` ends it. Returns the sink."""
        if self.target == "-":
            self._fh = sys.stdout
        else:
            self._fh = open(self.target, "a" if self.append else "w", encoding="utf-8")  # noqa: SIM115
            self._own = True
        return self

    def close(self) -> None:
        """Flush, and close the file if the sink opened it (never stdout); idempotent."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        if self._own:
            fh.close()  # flushes first, and closes the file even when that fails
        else:
            fh.flush()

    def __enter__(self) -> JsonLinesSink:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, record: dict[str, Any]) -> None:
        assert self._fh is not None, "open the sink first (or use it as a context manager)"
        # One write per line: an append-mode line reaches the file whole.
        self._fh.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        if self.append:
            self._fh.flush()
        self.count += 1
