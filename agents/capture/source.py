"""The capture-source interface shared by the file source and the live (AF_PACKET) sources.

A source is a blocking iterator of :class:`~monitor.pcapfile.PacketBatch`: the runtime drives it
from a thread of its own (never from the event loop) and feeds each batch to the engine before it
asks for the next one. A batch may be a view of a buffer that the source reuses (a file window, a
kernel ring block, a receive buffer) once the next batch is requested: a consumer that keeps
packet bytes, or queues batches for later, must copy them (live sources take ``copy=True``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from monitor.pcapfile import PacketBatch

__all__ = ["CaptureSource", "CaptureStats", "LiveCaptureSource"]


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Counters of one source since it was opened (a snapshot)."""

    interface: str  # interface name (a file source: the file's path)
    packets: int = 0  # packets handed out in batches
    bytes: int = 0  # their original (wire) lengths
    # What the kernel saw for the socket (0 for a file): every packet that reached the socket,
    # delivered or dropped, and the drops for want of room in the ring or the receive buffer.
    kernel_packets: int = 0
    kernel_drops: int = 0
    # TPACKET_V3 only: how often the ring was full (every block held by user space); None otherwise.
    kernel_freeze_q: int | None = None


@runtime_checkable
class CaptureSource(Protocol):
    """A blocking source of packet batches (a capture file or a live interface)."""

    def batches(self) -> Iterator[PacketBatch]:
        """Yield batches in capture order until the input ends or :meth:`close` is called.

        A live source never ends by itself; it yields an empty batch now and then when the link is
        idle, so that the consumer can advance time and notice a shutdown.
        """
        ...

    def stats(self) -> CaptureStats:
        """Counters so far; safe to call from any thread while :meth:`batches` runs."""
        ...

    def close(self) -> None:
        """Release the source; from another thread, makes a running :meth:`batches` return soon."""
        ...


@runtime_checkable
class LiveCaptureSource(CaptureSource, Protocol):
    """A live source: its socket is created by :meth:`open`, which needs CAP_NET_RAW.

    The runtime opens every live source while it still has privileges, then drops them; batches()
    and stats() work unprivileged afterwards.
    """

    interface: str

    def open(self) -> LiveCaptureSource:
        """Create the socket and bind it to ``interface``; returns the source itself."""
        ...

    def bind(self, interface: str) -> None:
        """Bind the open socket to ``interface`` (promiscuous), leaving any previous one."""
        ...

    def fileno(self) -> int:
        """The capture socket's file descriptor (-1 when not open)."""
        ...
