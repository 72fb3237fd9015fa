"""Where containment keeps its state, and the lock the agent and `camwatch contain` share.

Everything is in ``<state_dir>/containment/``: ``quarantine.json`` (the book), ``audit.jsonl`` (the
audit log, unless ``containment.audit_file`` names another file), ``audit.published`` (how much of the
audit log went out over MQTT), ``removed.json`` (set by `camwatch contain remove`: the agent does not
apply again until `camwatch contain apply`) and ``lock``.

A command run as root in a directory the agent owns hands the files it creates to the directory's owner,
so the agent (running as a service user) can keep writing them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["ContainmentFiles", "LockTimeout"]

SUBDIR: Final = "containment"
LOCK_WAIT: Final = 10.0


class LockTimeout(RuntimeError):
    """Another process held the containment lock for too long."""


@dataclass(frozen=True, slots=True)
class ContainmentFiles:
    """The paths under ``<state_dir>/containment``."""

    directory: Path
    audit: Path

    @classmethod
    def at(cls, state_dir: Path, audit_file: Path | None = None) -> ContainmentFiles:
        directory = Path(state_dir) / SUBDIR
        return cls(directory, audit_file if audit_file is not None else directory / "audit.jsonl")

    @property
    def book(self) -> Path:
        return self.directory / "quarantine.json"

    @property
    def published(self) -> Path:
        return self.directory / "audit.published"

    @property
    def removed(self) -> Path:
        return self.directory / "removed.json"

    @property
    def lock(self) -> Path:
        return self.directory / "lock"

    def prepare(self) -> None:
        """Create the directory (owned like the state directory when run as root)."""
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            self.hand_over(self.directory)

    def hand_over(self, path: Path) -> None:
        """Give ``path`` to the owner of the state directory, when root created it there."""
        if os.geteuid() != 0:
            return
        with contextlib.suppress(OSError):
            owner = self.directory.parent.stat()
            if owner.st_uid != 0 or owner.st_gid != 0:
                os.chown(path, owner.st_uid, owner.st_gid)

    @contextlib.contextmanager
    def locked(self, wait: float = LOCK_WAIT) -> Iterator[None]:
        """Hold the containment lock (an exclusive ``flock``): one change at a time, agent or command."""
        self.prepare()
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() > deadline:
                        raise LockTimeout(
                            f"{self.lock} is held by another process (the agent or a `camwatch contain` "
                            f"command) for more than {wait:g} s"
                        ) from None
                    time.sleep(0.05)
            self.hand_over(self.lock)
            yield
        finally:
            os.close(fd)

    def read_removed(self) -> dict[str, Any] | None:
        """The note `camwatch contain remove` left, or None."""
        try:
            data = json.loads(self.removed.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"by": "unknown", "at": None}
        return data if isinstance(data, dict) else {"by": "unknown", "at": None}

    def write_removed(self, actor: str, when: float) -> None:
        self.prepare()
        self.removed.write_text(json.dumps({"by": actor, "at": when}) + "\n", encoding="utf-8")
        self.hand_over(self.removed)

    def clear_removed(self) -> None:
        self.removed.unlink(missing_ok=True)
