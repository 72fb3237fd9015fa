"""Output files other local users may not read: created 0640, an existing world-readable one fixed."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import IO, Final

__all__ = ["FILE_MODE", "open_private"]

log = logging.getLogger(__name__)

#: Mode of the output files the agent creates: alerts and flows name the site's devices and what they do,
#: which is not for every local user (the file's group may be given to a log shipper).
FILE_MODE: Final = 0o640


def open_private(path: Path) -> IO[bytes]:
    """``path`` opened for appending, unbuffered; created ``FILE_MODE``. An existing file that other users
    may read (made by an earlier version, 0644) loses those permissions, with a log line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and mode & 0o007:
            os.fchmod(fd, stat.S_IMODE(mode) & ~0o007)
            log.warning(
                "%s was readable by every local user (mode %o): now %o",
                path,
                stat.S_IMODE(mode),
                mode & 0o770,
            )
        return open(fd, "ab", buffering=0, closefd=True)
    except BaseException:
        os.close(fd)
        raise
