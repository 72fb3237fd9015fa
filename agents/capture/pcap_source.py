"""A capture file as a source of packet batches (the replay side of the capture-source interface)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from monitor.pcapfile import PacketBatch, iter_batches

ProgressFn = Callable[[int, int], None]


class PcapFileSource:
    """Reads a pcap or pcapng file in chunks and yields batches; raises CaptureError at a bad tail."""

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 65536) -> None:
        self.path = Path(path)
        self.batch_size = batch_size

    def batches(self, progress: ProgressFn | None = None) -> Iterator[PacketBatch]:
        size = self.path.stat().st_size
        with self.path.open("rb") as stream:
            for batch in iter_batches(stream, str(self.path), self.batch_size):
                if progress is not None:
                    progress(stream.tell(), size)
                yield batch
