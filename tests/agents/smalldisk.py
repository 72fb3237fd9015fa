"""A small file system of its own (a tmpfs with a size limit, mounted by root) for tests of a full disk.

``small_disk(path, size)`` mounts it on ``path`` and unmounts it afterwards; ``fill(path)`` fills it up to
the last few bytes, and deleting the file it returns frees the space again. Writes past its size fail with
ENOSPC, as on a full gateway disk. Tests skip with :data:`SKIP_REASON` unless run as root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SKIP_REASON = "needs root: mounts a small tmpfs to fill it up"
MOUNT = shutil.which("mount") or "/usr/bin/mount"
UMOUNT = shutil.which("umount") or "/usr/bin/umount"


def can_mount() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def small_disk(path: Path, size: int | str = "256k") -> Iterator[Path]:
    """A tmpfs of ``size`` (KiB when an integer, else a tmpfs size like ``"64k"``) on ``path`` (created)."""
    if not can_mount():
        pytest.skip(SKIP_REASON)
    size_opt = f"{size}k" if isinstance(size, int) else size
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [MOUNT, "-t", "tmpfs", "-o", f"size={size_opt},mode=0777", "camwatch-test", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        # Lazy: a file still open in a thread that has not finished closing must not leave the mount behind.
        subprocess.run([UMOUNT, "-l", str(path)], check=False, capture_output=True)


def fill(where: Path, leave: int = 0) -> Path:
    """Fill the file system of ``where`` (a directory: a file ``filler`` in it; else the file ``where``) all
    but about ``leave`` bytes; returns the filler file."""
    filler = where / "filler" if where.is_dir() else where
    with filler.open("wb", buffering=0) as fh:  # unbuffered: nothing left to flush at close
        block = b"\0" * 4096
        while True:
            try:
                if not fh.write(block):
                    break
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    if leave:
        with filler.open("r+b") as fh:
            fh.truncate(max(0, filler.stat().st_size - leave))
    return filler
