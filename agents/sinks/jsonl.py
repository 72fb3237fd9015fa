"""JSON-lines output (alerts and flows)."""

from __future__ import annotations

import json
import sys
from types import TracebackType
from typing import IO, Any


class JsonLinesSink:
    """Writes one compact JSON object per line to a file path or '-' (stdout)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._fh: IO[str] | None = None
        self._own = False
        self.count = 0

    def __enter__(self) -> JsonLinesSink:
        if self.target == "-":
            self._fh = sys.stdout
        else:
            self._fh = open(self.target, "w", encoding="utf-8")
            self._own = True
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self._own:
                self._fh.close()
        self._fh = None

    def write(self, record: dict[str, Any]) -> None:
        assert self._fh is not None, "use the sink as a context manager"
        self._fh.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        self._fh.write("\n")
        self.count += 1
