"""A capture file as a source of packet batches (the replay side of the capture-source interface)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from monitor.pcapfile import CaptureError, CaptureParser, PacketBatch

ProgressFn = Callable[[int, int], None]

# One large read buffer, reused: each read is parsed into batches that are views of it (no
# copy, no concatenation) and handed out before the next read. Reusing the buffer matters:
# a fresh 64 MiB allocation per read costs more in page faults than the parsing itself.
CHUNK_SIZE = 32 << 20


class PcapFileSource:
    """Reads a pcap or pcapng file and yields batches; raises CaptureError at a bad tail.

    A batch is valid until the next one is requested (its bytes live in the reused read buffer);
    a consumer that keeps packet bytes must copy them.
    """

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 65536, chunk_size: int = CHUNK_SIZE) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.chunk_size = chunk_size

    def batches(self, progress: ProgressFn | None = None) -> Iterator[PacketBatch]:
        parser = CaptureParser(str(self.path), self.batch_size, split_at_feeds=True)
        buf = bytearray(self.chunk_size)
        view = memoryview(buf)
        with self.path.open("rb", buffering=0) as stream:
            size = os.fstat(stream.fileno()).st_size
            done = 0
            while True:
                n = stream.readinto(buf)
                try:
                    if n:
                        batches = parser.feed(view[:n], borrow=True)
                    else:
                        batches = parser.flush()
                except CaptureError as exc:
                    delivered, exc.batches = exc.batches, []
                    yield from delivered
                    raise
                done += n or 0
                for batch in batches:
                    if progress is not None:
                        progress(done, size)
                    yield batch
                if not n:
                    return
