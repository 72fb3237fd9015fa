"""`camwatch run` recording every module imported after the privilege drop (tests/agents/test_privileges.py).

Usage: ``python -m tests.agents.helpers.agent_after_drop CONFIG REPORT``. The agent runs as `camwatch run
--config CONFIG` does; once it has dropped root, a finder at the front of ``sys.meta_path`` notes each module
imported from then on (an installation only root may read would fail there), and at exit the names are
written to REPORT, one per line.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import agents.runtime
from agents import cli
from agents.privileges import drop_privileges

late: list[str] = []


class _Recorder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        late.append(fullname)
        return None  # the real finders import it


def _recording_drop(user: str | None, state_dir: Path) -> str:
    who = drop_privileges(user, state_dir)
    sys.meta_path.insert(0, _Recorder())
    return who


def main() -> int:
    config = sys.argv[1]
    report = open(sys.argv[2], "w", encoding="utf-8")  # noqa: SIM115  (opened as root, written at exit)
    atexit.register(lambda: report.write("".join(f"{name}\n" for name in late)) and report.close())
    agents.runtime.drop_privileges = _recording_drop  # type: ignore[assignment]
    return cli.main(["run", "--config", config])


if __name__ == "__main__":
    sys.exit(main())
