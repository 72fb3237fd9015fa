"""A real, small file system for disk-full tests: a tmpfs of a few hundred KiB mounted on a temporary
directory (root; CI runs as root). Writes past its size fail with ENOSPC, as on a full gateway disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MOUNT = shutil.which("mount") or "/usr/bin/mount"
UMOUNT = shutil.which("umount") or "/usr/bin/umount"


@contextlib.contextmanager
def small_disk(where: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted on ``where`` (created), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [MOUNT, "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0777", "camwatch-test", str(where)],
        check=True,
        capture_output=True,
    )
    try:
        yield where
    finally:
        # Lazy: a file still open in a thread that has not finished closing must not leave the mount behind.
        subprocess.run([UMOUNT, "-l", str(where)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Fill the file system of ``path`` with one file until ENOSPC; returns the bytes written."""
    written = 0
    chunk = b"x" * 4096
    with path.open("wb", buffering=0) as fh:
        while True:
            try:
                n = fh.write(chunk)
            except OSError:
                break
            if not n:
                break
            written += n
    return written
