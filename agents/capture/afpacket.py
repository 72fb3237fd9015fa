"""Live capture on one Linux interface with AF_PACKET sockets (stdlib and numpy only, no compiled code).

Two implementations of :class:`agents.capture.source.LiveCaptureSource`:

* :class:`RingSource`: a TPACKET_V3 receive ring mapped into the process (``PACKET_RX_RING``). The
  kernel fills blocks of packets without a system call per packet; a batch is every block that is
  ready, read in place (a numpy view of the ring) and handed back to the kernel when the next batch is
  requested. The per-packet Python work is one step along the block's linked list.
* :class:`RecvSource`: one ``recvmsg_into`` per packet into a preallocated buffer, with the timestamp
  (``SO_TIMESTAMPNS``) and VLAN metadata (``PACKET_AUXDATA``) as control messages; a batch ends after
  ``batch_size`` packets or ``batch_ms``.

Both capture in promiscuous mode, re-insert the 802.1Q/802.1ad tag that the kernel strips from the
frame into metadata (as libpcap does), keep the kernel's drop counters (``PACKET_STATISTICS``
resets them on every read, so they are accumulated here), wake up at least every ``idle_s`` seconds
(yielding an empty batch when nothing arrived) and stop promptly when :meth:`close` is called from
another thread. :meth:`open` creates the socket, which needs CAP_NET_RAW; everything after works
unprivileged. Use :func:`open_live` to get an opened source by method name.

See benchmarks/live.py for the measurement that picked the default method.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any, ClassVar, Final, Literal, Self

import numpy as np
import numpy.typing as npt

from agents.capture.source import CaptureStats, LiveCaptureSource
from monitor.pcapfile import PacketBatch

__all__ = [
    "DEFAULT_METHOD",
    "CaptureOpenError",
    "RecvSource",
    "RingSource",
    "open_live",
]

log = logging.getLogger(__name__)

# <linux/if_ether.h>, <linux/if_packet.h>, <linux/sockios.h>, <linux/if_arp.h>
ETH_P_ALL: Final = 0x0003
ETH_P_8021Q: Final = 0x8100
SOL_PACKET: Final = 263
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_DROP_MEMBERSHIP: Final = 2
PACKET_MR_PROMISC: Final = 1
PACKET_RX_RING: Final = 5
PACKET_STATISTICS: Final = 6
PACKET_AUXDATA: Final = 8
PACKET_VERSION: Final = 10
PACKET_RESERVE: Final = 12
TPACKET_V3: Final = 2
TP_STATUS_KERNEL: Final = 0
TP_STATUS_USER: Final = 1
TP_STATUS_VLAN_VALID: Final = 0x10
TP_STATUS_VLAN_TPID_VALID: Final = 0x40
SIOCGIFINDEX: Final = 0x8933
ARPHRD_ETHER: Final = 1
ARPHRD_LOOPBACK: Final = 772  # frames carry an (all-zero) Ethernet header
LINKTYPE_ETHERNET: Final = 1
# Not exported by the socket module; the asm-generic values (x86, arm, arm64, riscv).
SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)

VLAN_TAG_LEN: Final = 4
_MACS_LEN: Final = 12  # the tag goes after the destination and source addresses

# struct tpacket_block_desc (tpacket_hdr_v1 at offset 8): byte offsets of the fields we read.
_BD_STATUS: Final = 8
_BD_NUM_PKTS: Final = 12
_BD_FIRST: Final = 16
_BD_BLK_LEN: Final = 20
_BD_SEQ: Final = 24
# struct tpacket3_hdr, in uint32 words (it is 16-byte aligned in the ring) and bytes.
_H_NEXT, _H_SEC, _H_NSEC, _H_SNAPLEN, _H_LEN, _H_STATUS = 0, 1, 2, 3, 4, 5
_H_VLAN_TCI: Final = 8
_H_MAC_BYTE: Final = 24
_H_TPID_BYTE: Final = 36

_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_TS64 = struct.Struct("=qq")
_TS32 = struct.Struct("=ii")
_STATS_V3 = struct.Struct("=III")  # struct tpacket_stats_v3
_STATS_V1 = struct.Struct("=II")  # struct tpacket_stats
_MREQ = struct.Struct("=iHH8s")  # struct packet_mreq

Method = Literal["ring", "recv", "auto"]
# Chosen by benchmarks/live.py (see its output in benchmarks/out/live.json).
DEFAULT_METHOD: Final = "ring"

_U8 = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]


class CaptureOpenError(OSError):
    """The capture socket could not be opened or bound (one line saying why)."""


def _readonly(*arrays: npt.NDArray[np.generic]) -> None:
    for a in arrays:
        a.flags.writeable = False


def _make_batch(data: _U8, starts: _I64, caplen: _I64, wirelen: _I64, ts_ns: _I64) -> PacketBatch:
    linktype = np.full(len(starts), LINKTYPE_ETHERNET, dtype=np.uint16)
    _readonly(starts, caplen, wirelen, ts_ns, linktype)
    return PacketBatch(data, starts, caplen, wirelen, ts_ns, linktype)


def _empty_batch() -> PacketBatch:
    z = np.zeros(0, dtype=np.int64)
    return _make_batch(np.zeros(0, dtype=np.uint8), z, z.copy(), z.copy(), z.copy())


class _PacketSocket:
    """What both sources share: the socket, promiscuous binding, counters, wake-up and close."""

    _v3: ClassVar[bool] = False  # a TPACKET_V3 ring: the kernel also counts queue freezes

    def __init__(self, interface: str, *, batch_size: int, idle_s: float, copy: bool, promisc: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if idle_s <= 0:
            raise ValueError(f"idle_s must be > 0, got {idle_s}")
        self.interface = interface
        self.batch_size = batch_size
        self.idle_s = idle_s
        self.copy = copy
        self.promisc = promisc
        self._sock: socket.socket | None = None
        self._ifindex = 0
        self._wake_fd = -1
        self._lock = threading.Lock()  # guards open/close against a running batches()
        self._stats_lock = threading.Lock()
        self._closing = threading.Event()
        self._running = False
        self._torn_down = False
        self._packets = 0
        self._bytes = 0
        self._kpackets = 0
        self._kdrops = 0
        self._kfreeze = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> Self:
        """Create the socket (needs CAP_NET_RAW), set it up and bind it to ``interface``."""
        with self._lock:
            if self._sock is not None:
                return self
            if self._closing.is_set():
                raise CaptureOpenError(f"{self.interface}: capture source already closed")
            try:
                # Protocol 0 until bind(): no packet of any interface is queued before the ring
                # exists and the socket is bound (libpcap does the same).
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            except PermissionError as exc:
                raise CaptureOpenError(
                    f"{self.interface}: opening a packet socket needs CAP_NET_RAW (run as root or grant "
                    "the capability)"
                ) from exc
            try:
                self._setup(sock)
                self._sock = sock
                self.bind(self.interface)
                self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            except BaseException:
                self._sock = None
                self._teardown_socket(sock)
                raise
        log.info("capturing on %s (%s)", self.interface, type(self).__name__)
        return self

    def bind(self, interface: str) -> None:
        """Bind to ``interface`` for every protocol, promiscuous unless told otherwise."""
        sock = self._require_socket()
        try:
            # Resolve the name with our own socket: it lives in the network namespace where it was
            # created, which need not be the caller's current one.
            ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, struct.pack("16si20x", interface.encode(), 0))
            ifindex = struct.unpack_from("16si", ifreq)[1]
            sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            raise CaptureOpenError(f"{interface}: cannot bind capture socket: {exc.strerror or exc}") from exc
        hatype = sock.getsockname()[3]
        if hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
            raise CaptureOpenError(f"{interface}: not an Ethernet interface (ARP hardware type {hatype})")
        if self.promisc:
            if self._ifindex and self._ifindex != ifindex:
                with contextlib.suppress(OSError):
                    sock.setsockopt(SOL_PACKET, PACKET_DROP_MEMBERSHIP, self._mreq(self._ifindex))
            # A membership (not IFF_PROMISC via ioctl) is counted by the kernel and undone when the
            # socket closes, whatever happens to the process.
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, self._mreq(ifindex))
        self._ifindex = ifindex
        self.interface = interface

    def fileno(self) -> int:
        sock = self._sock
        return sock.fileno() if sock is not None else -1

    def close(self) -> None:
        """Stop a running :meth:`batches` (from any thread) and release the socket and ring."""
        with self._lock:
            self._closing.set()
            if self._wake_fd >= 0:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._wake_fd, 1)
            if self._running:
                return  # the thread in batches() tears down when it leaves: it may be using the ring
        self._teardown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> CaptureStats:
        self._read_kernel_stats()
        with self._stats_lock:
            return CaptureStats(
                interface=self.interface,
                packets=self._packets,
                bytes=self._bytes,
                kernel_packets=self._kpackets,
                kernel_drops=self._kdrops,
                kernel_freeze_q=self._kfreeze if self._v3 else None,
            )

    def batches(self) -> Generator[PacketBatch, None, None]:
        raise NotImplementedError

    # ------------------------------------------------------------------ for the subclasses

    def _setup(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _release_buffers(self) -> None:
        """Drop the ring or buffer (the socket is still open)."""

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise CaptureOpenError(f"{self.interface}: capture source is not open (call open() first)")
        return self._sock

    def _mreq(self, ifindex: int) -> bytes:
        return _MREQ.pack(ifindex, PACKET_MR_PROMISC, 0, b"")

    def _enter(self) -> bool:
        """Mark batches() as running; False if the source is closed."""
        with self._lock:
            if self._closing.is_set():
                return False
            self._require_socket()
            if self._running:
                raise RuntimeError(f"{self.interface}: batches() is already running")
            self._running = True
            return True

    def _leave(self) -> None:
        with self._lock:
            self._running = False
            closing = self._closing.is_set()
        if closing:
            self._teardown()

    def _poller(self) -> select.poll:
        poller = select.poll()
        poller.register(self._require_socket().fileno(), select.POLLIN | select.POLLERR)
        poller.register(self._wake_fd, select.POLLIN)
        return poller

    def _wait(self, poller: select.poll, timeout_s: float) -> bool:
        """Wait until the socket is readable; False on timeout or close."""
        events = poller.poll(max(0, int(timeout_s * 1000 + 0.999)))
        if self._closing.is_set():
            return False
        ready = False
        for fd, ev in events:
            if fd == self._wake_fd:
                continue
            if ev & select.POLLERR:
                self._socket_error()
            ready = ready or bool(ev & select.POLLIN)
        return ready

    def _socket_error(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # Reading SO_ERROR clears it (e.g. ENETDOWN when the link went down); capture resumes with
        # the link, so only log.
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            log.warning("capture on %s: %s", self.interface, os.strerror(err))

    def _count(self, batch: PacketBatch) -> None:
        with self._stats_lock:
            self._packets += len(batch)
            self._bytes += int(batch.wirelen.sum())

    def _read_kernel_stats(self, sock: socket.socket | None = None) -> None:
        with self._stats_lock:
            sock = sock or self._sock
            if sock is None:
                return
            try:
                raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
            except OSError:
                return
            # The kernel resets its counters on every read: accumulate.
            if len(raw) >= _STATS_V3.size:
                packets, drops, freeze = _STATS_V3.unpack_from(raw)
                self._kfreeze += freeze
            else:
                packets, drops = _STATS_V1.unpack_from(raw)
            self._kpackets += packets  # includes the drops
            self._kdrops += drops

    def _teardown(self) -> None:
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
            sock, self._sock = self._sock, None
            wake, self._wake_fd = self._wake_fd, -1
        if sock is not None:
            self._read_kernel_stats(sock)
            self._teardown_socket(sock)
        if wake >= 0:
            os.close(wake)

    def _teardown_socket(self, sock: socket.socket) -> None:
        # Stop delivery first: if a batch still holds a view of the ring, the mapping (and with it
        # the socket, whose descriptor mmap duplicated) lives on until that view is gone.
        with contextlib.suppress(OSError):
            sock.bind((self.interface, 0))
        self._release_buffers()
        sock.close()


class RingSource(_PacketSocket):
    """TPACKET_V3 ring capture; batches are views of the ring (or copies with ``copy=True``).

    ``block_size`` x ``block_count`` bytes of kernel memory are mapped (32 MiB by default, about 1.3 s
    of 200 Mbit/s): it is the buffer that absorbs the engine's pauses. A block is handed to user space
    when full or ``retire_ms`` after its first packet, so that is the latency on a quiet link.
    A batch is every ready block up to ``batch_size`` packets (at least one block, at most half the
    ring unless ``copy``): batches grow by themselves when the consumer falls behind.
    """

    _v3 = True

    def __init__(
        self,
        interface: str,
        *,
        batch_size: int = 65536,
        block_size: int = 1 << 20,
        block_count: int = 32,
        frame_size: int = 2048,
        retire_ms: int = 50,
        idle_s: float = 0.25,
        copy: bool = False,
        promisc: bool = True,
    ) -> None:
        super().__init__(interface, batch_size=batch_size, idle_s=idle_s, copy=copy, promisc=promisc)
        page = mmap.PAGESIZE
        if block_size < page or block_size % page:
            raise ValueError(f"block_size must be a multiple of the page size ({page})")
        if block_count < 2:
            raise ValueError("block_count must be >= 2")
        if frame_size % 16 or frame_size < 128 or block_size % frame_size:
            raise ValueError("frame_size must be a multiple of 16, >= 128, and divide block_size")
        self.block_size = block_size
        self.block_count = block_count
        self.frame_size = frame_size
        self.retire_ms = retire_ms
        self._ring: mmap.mmap | None = None
        self._words: memoryview | None = None  # the ring as uint32 words, for the per-packet walk
        self._u8: _U8 = np.zeros(0, dtype=np.uint8)
        self._u8_ro: _U8 = self._u8
        self._u32: npt.NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)
        self._u16: npt.NDArray[np.uint16] = np.zeros(0, dtype=np.uint16)
        self._next = 0  # the block the kernel fills after the ones we hold

    def _setup(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            # Headroom in front of every frame for the VLAN tag we put back (libpcap does the same).
            sock.setsockopt(SOL_PACKET, PACKET_RESERVE, VLAN_TAG_LEN)
            frames = self.block_size // self.frame_size * self.block_count
            req = struct.pack(
                "=7I", self.block_size, self.block_count, self.frame_size, frames, self.retire_ms, 0, 0
            )
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            size = self.block_size * self.block_count
            ring = mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise CaptureOpenError(
                f"{self.interface}: cannot set up a TPACKET_V3 ring of {self.block_count} x "
                f"{self.block_size} bytes: {exc.strerror or exc}"
            ) from exc
        self._ring = ring
        self._words = memoryview(ring).cast("I")
        self._u8 = np.frombuffer(ring, dtype=np.uint8)
        self._u8_ro = self._u8.view()
        self._u8_ro.flags.writeable = False
        self._u32 = np.frombuffer(ring, dtype=np.uint32)
        self._u16 = np.frombuffer(ring, dtype=np.uint16)
        self._next = 0

    def _release_buffers(self) -> None:
        ring, self._ring = self._ring, None
        if self._words is not None:
            self._words.release()
            self._words = None
        empty = np.zeros(0, dtype=np.uint8)
        self._u8 = self._u8_ro = empty
        self._u32 = np.zeros(0, dtype=np.uint32)
        self._u16 = np.zeros(0, dtype=np.uint16)
        if ring is not None:
            try:
                ring.close()
            except BufferError:
                # A batch still refers to the ring: it is unmapped when the last view goes.
                log.debug("ring of %s still in use; unmapped when released", self.interface)

    def batches(self) -> Generator[PacketBatch, None, None]:
        if not self._enter():
            return
        held: list[int] = []
        try:
            poller = self._poller()
            quiet_since = time.monotonic()
            while not self._closing.is_set():
                self._give_back(held)
                batch, held = self._collect()
                if batch is None:
                    waited = time.monotonic() - quiet_since
                    if waited < self.idle_s and self._wait(poller, self.idle_s - waited):
                        if not self._block_ready(self._next):
                            self._resync()
                        continue
                    if self._closing.is_set():
                        break
                    batch = _empty_batch()
                if self.copy:
                    self._give_back(held)
                    held = []
                self._count(batch)
                quiet_since = time.monotonic()
                yield batch
        finally:
            if self._ring is not None:
                self._give_back(held)
            self._leave()

    def _block_ready(self, index: int) -> bool:
        assert self._words is not None
        return bool(self._words[(index * self.block_size + _BD_STATUS) >> 2] & TP_STATUS_USER)

    def _give_back(self, held: list[int]) -> None:
        words = self._words
        if words is None:
            return
        # The batch built from these blocks was consumed before the consumer asked for the next one,
        # so every read of the block happened (thousands of instructions) before this store.
        for index in held:
            words[(index * self.block_size + _BD_STATUS) >> 2] = TP_STATUS_KERNEL
        held.clear()

    def _resync(self) -> None:
        """Poll said readable but our next block is not ready: follow the kernel's oldest ready block.

        Should not happen (kernel and reader both go round in order); guards against a stuck reader.
        """
        assert self._ring is not None
        ready = [i for i in range(self.block_count) if self._block_ready(i)]
        if ready:
            seq = {i: struct.unpack_from("=Q", self._ring, i * self.block_size + _BD_SEQ)[0] for i in ready}
            oldest = min(ready, key=seq.__getitem__)
            log.warning(
                "capture on %s: ring reader resynchronised (block %d -> %d)",
                self.interface,
                self._next,
                oldest,
            )
            self._next = oldest

    def _collect(self) -> tuple[PacketBatch | None, list[int]]:
        """Every ready block from the next one on (up to batch_size packets) as one batch."""
        words = self._words
        assert words is not None
        bs = self.block_size
        count = self.block_count
        starts: list[int] = []
        append = starts.append
        held: list[int] = []
        counts: list[int] = []
        # A batch of views keeps its blocks from the kernel until the next request: never take more
        # than half the ring, so that the kernel has room while the engine works on a big batch.
        # Copied blocks go back at once.
        most = count if self.copy else max(1, count // 2)
        index = self._next
        while len(held) < most and len(starts) < self.batch_size:
            base = index * bs
            if not words[(base + _BD_STATUS) >> 2] & TP_STATUS_USER:
                break
            num = words[(base + _BD_NUM_PKTS) >> 2]
            off = base + words[(base + _BD_FIRST) >> 2]
            # The only per-packet Python: follow tp_next_offset from header to header.
            for _ in range(num):
                append(off)
                off += words[off >> 2]
            held.append(index)
            counts.append(num)
            index = (index + 1) % count
        self._next = index
        if not held:
            return None, held
        if not starts:  # blocks retired empty: hand them back at once
            self._give_back(held)
            return None, []
        return self._build(np.array(starts, dtype=np.int64), held, counts), held

    def _build(self, hdr: _I64, held: list[int], counts: list[int]) -> PacketBatch:
        u32, u16, u8 = self._u32, self._u16, self._u8
        w = hdr >> 2
        sec = u32[w + _H_SEC].astype(np.int64)
        ts_ns = sec * 1_000_000_000 + u32[w + _H_NSEC]
        caplen = u32[w + _H_SNAPLEN].astype(np.int64)
        wirelen = u32[w + _H_LEN].astype(np.int64)
        status = u32[w + _H_STATUS]
        starts = hdr + u16[(hdr + _H_MAC_BYTE) >> 1]
        tci = u32[w + _H_VLAN_TCI]
        # Old kernels flag nothing and report tag 0 as absent; libpcap's test is the same.
        tagged = ((status & TP_STATUS_VLAN_VALID) != 0) | (tci != 0)
        if tagged.any():
            tagged &= caplen >= _MACS_LEN
            t = np.flatnonzero(tagged)
            mac = starts[t]
            # Move the two addresses 4 bytes back into the reserved headroom and put the tag after them.
            cols = np.arange(_MACS_LEN, dtype=np.int64)
            u8[(mac - VLAN_TAG_LEN)[:, None] + cols] = u8[mac[:, None] + cols]
            tpid = np.where(
                (status[t] & TP_STATUS_VLAN_TPID_VALID) != 0, u16[(hdr[t] + _H_TPID_BYTE) >> 1], 0
            ).astype(np.int64)
            tpid[tpid == 0] = ETH_P_8021Q
            tag_tci = tci[t].astype(np.int64) & 0xFFFF
            tag = mac + (_MACS_LEN - VLAN_TAG_LEN)
            u8[tag] = tpid >> 8
            u8[tag + 1] = tpid & 0xFF
            u8[tag + 2] = tag_tci >> 8
            u8[tag + 3] = tag_tci & 0xFF
            starts[t] -= VLAN_TAG_LEN
            caplen[t] += VLAN_TAG_LEN
            wirelen[t] += VLAN_TAG_LEN
        if not self.copy:
            return _make_batch(self._u8_ro, starts, caplen, wirelen, ts_ns)
        # Copy the used part of each block into one buffer and rebase the offsets.
        assert self._words is not None
        bs = self.block_size
        pieces: list[_U8] = []
        shift = np.empty(len(held), dtype=np.int64)
        pos = 0
        for k, index in enumerate(held):
            base = index * bs
            used = min(self._words[(base + _BD_BLK_LEN) >> 2], bs)
            pieces.append(u8[base : base + used])
            shift[k] = pos - base
            pos += used
        data = np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()
        starts += np.repeat(shift, counts)
        _readonly(data)
        return _make_batch(data, starts, caplen, wirelen, ts_ns)


class RecvSource(_PacketSocket):
    """``recvmsg_into`` capture: one system call per packet, batches of up to ``batch_size`` packets
    or ``batch_ms`` milliseconds. Batches are views of a reused buffer (copies with ``copy=True``).

    ``rcvbuf`` is the socket receive buffer (the kernel-side queue; set with SO_RCVBUFFORCE, which
    needs CAP_NET_ADMIN, else capped by net.core.rmem_max). It counts the kernel's per-packet
    overhead too, so it holds fewer bytes of frames than its size says.
    """

    def __init__(
        self,
        interface: str,
        *,
        batch_size: int = 65536,
        batch_ms: int = 50,
        buffer_bytes: int = 8 << 20,
        rcvbuf: int = 32 << 20,
        snaplen: int = 65535,
        idle_s: float = 0.25,
        copy: bool = False,
        promisc: bool = True,
    ) -> None:
        super().__init__(interface, batch_size=batch_size, idle_s=idle_s, copy=copy, promisc=promisc)
        if snaplen < 64:
            raise ValueError("snaplen must be >= 64")
        if buffer_bytes < snaplen:
            raise ValueError("buffer_bytes must be >= snaplen")
        self.batch_ms = batch_ms
        self.buffer_bytes = buffer_bytes
        self.rcvbuf = rcvbuf
        self.snaplen = snaplen
        self._buf = bytearray(0)
        self._ancsize = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(_TS64.size)

    def _setup(self, sock: socket.socket) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            if got < self.rcvbuf:
                log.warning("%s: receive buffer capped at %d bytes (net.core.rmem_max)", self.interface, got)
        sock.setblocking(False)
        # Room for a whole batch plus one packet at the largest size, and the tag headroom.
        self._buf = bytearray(self.buffer_bytes + self.snaplen + VLAN_TAG_LEN)

    def _release_buffers(self) -> None:
        self._buf = bytearray(0)

    def batches(self) -> Generator[PacketBatch, None, None]:
        if not self._enter():
            return
        try:
            yield from self._loop()
        finally:
            self._leave()

    def _loop(self) -> Iterator[PacketBatch]:
        sock = self._require_socket()
        poller = self._poller()
        buf = self._buf
        view = memoryview(buf)
        arr = np.frombuffer(buf, dtype=np.uint8)
        arr_ro = arr.view()
        arr_ro.flags.writeable = False
        recv = sock.recvmsg_into
        ancsize = self._ancsize
        snap = self.snaplen
        limit = self.buffer_bytes
        batch_size = self.batch_size
        batch_s = self.batch_ms / 1000.0
        sol_socket, sol_packet, auxdata = socket.SOL_SOCKET, SOL_PACKET, PACKET_AUXDATA
        aux_unpack, ts64, ts32 = _AUXDATA.unpack_from, _TS64.unpack_from, _TS32.unpack_from
        vlan_valid, tpid_valid = TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID
        pack_tag = struct.Struct("!HH").pack_into
        try:
            while not self._closing.is_set():
                starts: list[int] = []
                caps: list[int] = []
                wires: list[int] = []
                stamps: list[int] = []
                pos = 0
                deadline = time.monotonic() + self.idle_s  # an empty batch if nothing comes
                while True:
                    # Drain what is queued (up to the batch limits), then wait.
                    had = len(starts)
                    while len(starts) < batch_size and pos <= limit:
                        body = pos + VLAN_TAG_LEN
                        try:
                            nbytes, anc, _flags, _addr = recv([view[body : body + snap]], ancsize)
                        except BlockingIOError:
                            break
                        except OSError as exc:  # e.g. ENETDOWN: the link went down; keep waiting
                            log.warning("capture on %s: %s", self.interface, exc.strerror or exc)
                            break
                        ts = 0
                        wire = nbytes
                        status = tci = tpid = 0
                        for level, kind, cdata in anc:
                            if level == sol_packet and kind == auxdata:
                                status, wire, _snap, _mac, _net, tci, tpid = aux_unpack(cdata)
                            elif level == sol_socket:
                                sec, nsec = ts64(cdata) if len(cdata) >= 16 else ts32(cdata)
                                ts = sec * 1_000_000_000 + nsec
                        start = body
                        if (status & vlan_valid or tci) and nbytes >= _MACS_LEN:
                            # Addresses 4 bytes back into the headroom, then the tag the kernel took out.
                            buf[pos : pos + _MACS_LEN] = buf[body : body + _MACS_LEN]
                            pack_tag(
                                buf,
                                pos + _MACS_LEN,
                                tpid if status & tpid_valid and tpid else ETH_P_8021Q,
                                tci,
                            )
                            start = pos
                            nbytes += VLAN_TAG_LEN
                            wire += VLAN_TAG_LEN
                        starts.append(start)
                        caps.append(nbytes)
                        wires.append(wire)
                        stamps.append(ts or time.time_ns())
                        pos = start + nbytes
                    if len(starts) >= batch_size or pos > limit or self._closing.is_set():
                        break
                    now = time.monotonic()
                    if starts and not had:  # the batch's first packets: it ends batch_ms from now
                        deadline = now + batch_s
                    if now >= deadline:
                        break
                    self._wait(poller, deadline - now)
                if self._closing.is_set():
                    break
                if not starts:
                    batch = _empty_batch()
                else:
                    data = arr[:pos].copy() if self.copy else arr_ro
                    if self.copy:
                        _readonly(data)
                    batch = _make_batch(
                        data,
                        np.array(starts, dtype=np.int64),
                        np.array(caps, dtype=np.int64),
                        np.array(wires, dtype=np.int64),
                        np.array(stamps, dtype=np.int64),
                    )
                self._count(batch)
                yield batch
        finally:
            del arr, arr_ro
            view.release()


def open_live(
    interface: str, *, method: Method | str = "auto", batch_size: int = 65536, **options: Any
) -> LiveCaptureSource:
    """An opened live source on ``interface``: ``ring``, ``recv`` or ``auto``.

    ``auto`` is the measured default (:data:`DEFAULT_METHOD`); it falls back to ``recv`` when the ring
    cannot be set up (e.g. not enough locked/kernel memory for it). ``options`` go to the class.
    """
    if method not in ("ring", "recv", "auto"):
        raise ValueError(f"unknown capture method {method!r} (ring, recv or auto)")
    chosen = DEFAULT_METHOD if method == "auto" else method
    cls: type[RingSource] | type[RecvSource] = RingSource if chosen == "ring" else RecvSource
    try:
        return cls(interface, batch_size=batch_size, **options).open()
    except CaptureOpenError as exc:
        if method != "auto" or cls is RecvSource or isinstance(exc.__cause__, PermissionError):
            raise
        log.warning("%s; falling back to recvmsg capture", exc)
        return RecvSource(interface, batch_size=batch_size).open()
