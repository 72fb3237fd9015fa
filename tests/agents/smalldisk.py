"""A small file system of its own (a tmpfs with a size limit, mounted by root) for tests of a full disk.

``small_disk(path, size)`` mounts it on ``path`` and unmounts it afterwards; ``fill(path)`` fills it up to
the last few bytes, and deleting the file it returns frees the space again. Tests skip with
:data:`SKIP_REASON` unless run as root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

SKIP_REASON = "needs root: mounts a small tmpfs to fill it up"


def can_mount() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def small_disk(path: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` on ``path`` (created), mode 0755."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` (all but about ``leave`` bytes); returns the filler file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh:  # unbuffered: nothing left to flush at close
        block = b"\0" * 4096
        while True:
            try:
                fh.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    if leave:
        with filler.open("r+b") as fh:
            fh.truncate(max(0, filler.stat().st_size - leave))
    return filler
