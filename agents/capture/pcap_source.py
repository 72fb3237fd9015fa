"""A capture file as a source of packet batches (the replay side of the capture-source interface)."""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from agents.capture.source import CaptureStats
from monitor.pcapfile import CaptureError, CaptureParser, PacketBatch

ProgressFn = Callable[[int, int], None]

# A regular file is mapped window by window and each window is parsed in place: batches are
# views of the mapping, so packet bytes are never copied (reading into a buffer costs as much
# as all the parsing). A window is unmapped once its batches are released, which keeps
# resident memory at about one window whatever the file size.
WINDOW_SIZE = 32 << 20
READ_SIZE = 8 << 20


class PcapFileSource:
    """Yields the batches of a pcap or pcapng file; raises CaptureError at a bad tail.

    Batches never span two windows (their size varies up to `batch_size`). A consumer that
    keeps packet bytes beyond the batch must copy them.
    """

    def __init__(
        self, path: str | os.PathLike[str], batch_size: int = 65536, window: int = WINDOW_SIZE
    ) -> None:
        if window % mmap.ALLOCATIONGRANULARITY:
            raise ValueError(f"window must be a multiple of {mmap.ALLOCATIONGRANULARITY}")
        self.path = Path(path)
        self.batch_size = batch_size
        self.window = window
        self._packets = 0
        self._bytes = 0
        self._closed = False
        self._stream: BinaryIO | None = None

    def open(self) -> PcapFileSource:
        """Open the file now (OSError if it cannot be): the agent opens it while it still has its start-up
        privileges, so a root-only capture file is read after the drop. Returns the source."""
        if self._stream is None:
            self._stream = self.path.open("rb", buffering=0)
        return self

    def stats(self) -> CaptureStats:
        """Packets and bytes handed out so far (a file has no kernel counters)."""
        return CaptureStats(str(self.path), self._packets, self._bytes, 0, 0, None)

    def close(self) -> None:
        """Stop at the next batch boundary (idempotent; safe from another thread)."""
        self._closed = True
        # Only a file opened but never read is closed here: batches() took it otherwise, and closes it.
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def batches(self, progress: ProgressFn | None = None) -> Iterator[PacketBatch]:
        parser = CaptureParser(str(self.path), self.batch_size, split_at_feeds=True)
        # The file opened by open(), else now; either way it is closed at the end.
        stream, self._stream = self._stream or self.path.open("rb", buffering=0), None
        with stream:
            st = os.fstat(stream.fileno())
            size = st.st_size
            chunks = self._mapped(stream.fileno(), size) if stat.S_ISREG(st.st_mode) else self._read(stream)
            done = 0
            for chunk in chunks:
                try:
                    batches = parser.feed(chunk, borrow=True) if chunk else parser.flush()
                except CaptureError as exc:
                    delivered, exc.batches = exc.batches, []
                    yield from delivered
                    raise
                done += len(chunk)
                for batch in batches:
                    if self._closed:
                        return
                    if progress is not None:
                        progress(done, size)
                    self._packets += len(batch)
                    self._bytes += int(batch.wirelen.sum())
                    yield batch
                del batches, chunk

    def _mapped(self, fd: int, size: int) -> Iterator[mmap.mmap | bytes]:
        for start in range(0, size, self.window):
            yield mmap.mmap(fd, min(self.window, size - start), prot=mmap.PROT_READ, offset=start)
        yield b""

    def _read(self, stream: object) -> Iterator[bytes]:
        assert hasattr(stream, "read")
        while chunk := stream.read(READ_SIZE):
            yield chunk
        yield b""
