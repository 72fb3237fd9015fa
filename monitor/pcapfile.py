"""Sans-I/O pcap and pcapng parsing into numpy packet batches.

The caller feeds bytes (:class:`CaptureParser`) or hands over an already open binary stream
(:func:`iter_batches`); nothing here opens files. Packets come out as :class:`PacketBatch` objects of
parallel numpy arrays so that the decoder can work on a whole batch at once.

Performance notes (the record walk is the only per-packet Python code):

* pcap: the loop reads just the ``incl_len`` field of each record header and remembers where the
  header starts; the four header fields are then gathered for all records of a chunk with one numpy
  fancy-indexing operation over an overlapping (stride-1) uint32 view of the chunk.
* pcapng: runs of Enhanced Packet Blocks are walked the same way (block type and length only);
  field checks, timestamp conversion and link-type lookup are vectorised per run. Other blocks (SHB,
  IDB, SPB, obsolete PB, and anything unknown) take a slower per-block path.
* Packet bytes are not copied when a batch lies inside one fed chunk: ``PacketBatch.data`` is then a
  read-only view of that chunk. A batch whose packets come from several chunks is assembled with one
  copy. A record split across two feeds is reassembled in a small carry-over buffer.
"""

from __future__ import annotations

import functools
import logging
import mmap
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final, cast

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_BLOCK",
    "MAX_RECORD",
    "MAX_WIRELEN",
    "CaptureError",
    "CaptureParser",
    "PacketBatch",
    "TruncatedCaptureError",
    "iter_batches",
]

# libpcap's MAXIMUM_SNAPLEN: no record of any link type we care about is longer.
MAX_RECORD: Final = 262144
# Records may exceed the declared snaplen a little: writers such as dpkt declare snaplen 1500 by default
# yet store longer frames, and libpcap itself accepts anything up to its per-link-type maximum.
# So a declared snaplen below 64 KiB is not trusted as a limit; the check only exists to stop a
# corrupt length from making us buffer megabytes of garbage.
_SNAPLEN_FLOOR: Final = 65535
_SNAPLEN_SLACK: Final = 4096
# pcapng blocks are bounded too (libpcap uses 16 MiB); bigger means a corrupt length field.
MAX_BLOCK: Final = 16 * 1024 * 1024
# The largest original frame length believed: GRO/GSO super-frames reach 64 KiB, BIG TCP 512 KiB.
MAX_WIRELEN: Final = 1024 * 1024

_log = logging.getLogger(__name__)

_INT64_MAX: Final = (1 << 63) - 1
_UINT64_MAX: Final = (1 << 64) - 1
_NS: Final = 1_000_000_000

_PCAP_MAGICS: Final[dict[bytes, tuple[str, int]]] = {
    # magic bytes as stored -> (byte order, multiplier from the fraction field to ns)
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAP_HEADER_LEN: Final = 24
_PCAP_RECORD_HEADER_LEN: Final = 16

# Compressed files (Wireshark reads gzip, zstd and lz4 captures): magic -> (format, command to decompress).
_COMPRESSED: Final[tuple[tuple[bytes, str, str], ...]] = (
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"\x04\x22\x4d\x18", "lz4", "unlz4"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"BZh", "bzip2", "bunzip2"),
    (b"PK\x03\x04", "zip", "unzip"),
)
_SHB_MAGIC: Final = b"\x0a\x0d\x0d\x0a"  # palindromic: the same in both byte orders
_SHB: Final = 0x0A0D0D0A
_IDB: Final = 1
_PB: Final = 2  # obsolete Packet Block
_SPB: Final = 3
_EPB: Final = 6
_BOM_LE: Final = b"\x4d\x3c\x2b\x1a"
_BOM_BE: Final = b"\x1a\x2b\x3c\x4d"
_EPB_HEADER_LEN: Final = 28  # type, length, interface, ts high, ts low, caplen, original length
# Runs of fewer EPBs are read in plain Python: below this numpy's cost per call outweighs its per-packet gain.
_SHORT_RUN: Final = 16
_IDB_MEMO: Final = 256  # distinct interface descriptions remembered
_OPT_ENDOFOPT: Final = 0
_OPT_IF_TSRESOL: Final = 9
_OPT_IF_TSOFFSET: Final = 14

_UInt8Array = npt.NDArray[np.uint8]
_Int64Array = npt.NDArray[np.int64]
_UInt16Array = npt.NDArray[np.uint16]
_UInt64Array = npt.NDArray[np.uint64]


class CaptureError(ValueError):
    """A truncated or corrupt capture.

    ``str(e)`` is one line: ``'<name>: <reason> at byte offset <offset>'``. ``batches`` holds every
    complete packet that preceded the fault and had not been returned yet: the parser hands them over
    here instead of dropping them (see :meth:`CaptureParser.feed`).
    """

    name: str
    offset: int
    reason: str
    batches: list[PacketBatch]

    def __init__(self, name: str, offset: int, reason: str, batches: list[PacketBatch] | None = None) -> None:
        super().__init__(name, offset, reason)
        self.name = name
        self.offset = offset
        self.reason = reason
        self.batches = [] if batches is None else batches

    def __str__(self) -> str:
        return f"{self.name}: {self.reason} at byte offset {self.offset}"


class TruncatedCaptureError(CaptureError):
    """The input ended inside a file header, record or block (e.g. a capture cut off while written)."""


@dataclass(frozen=True, slots=True, eq=False)
class PacketBatch:
    """Parallel arrays describing up to ``batch_size`` packets, in capture order. All arrays are read-only."""

    data: _UInt8Array  # contiguous buffer with the packets' captured bytes (maybe bytes between them too)
    offsets: _Int64Array  # start of each packet's captured bytes inside `data`
    caplen: _Int64Array  # captured length
    wirelen: _Int64Array  # original length on the wire
    ts_ns: _Int64Array  # nanoseconds since the Unix epoch
    linktype: _UInt16Array  # link type (pcapng: of the packet's interface)

    def __len__(self) -> int:
        return len(self.offsets)

    def packet(self, i: int) -> bytes:
        """Captured bytes of packet ``i`` (a copy; for slow paths and tests)."""
        start = int(self.offsets[i])
        return self.data[start : start + int(self.caplen[i])].tobytes()


@dataclass(slots=True)
class _Segment:
    """Packets found in one buffer (a fed chunk or a reassembled record), not yet handed out."""

    data: _UInt8Array
    offsets: _Int64Array
    caplen: _Int64Array
    wirelen: _Int64Array
    ts_ns: _Int64Array
    linktype: _UInt16Array
    start: int = 0  # packets before this index were already put into a batch


class _Fault(Exception):
    """Corruption found at ``pos`` (relative to the buffer being walked); never escapes the module."""

    def __init__(self, pos: int, reason: str) -> None:
        super().__init__(pos, reason)
        self.pos = pos
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Interface:
    """A pcapng interface: link type and timestamp conversion ``ns = raw * num // den + offset_ns``."""

    linktype: int
    snaplen: int
    num: int
    den: int
    offset_ns: int
    max_raw: int  # largest raw timestamp whose ns value still fits in int64
    mode: str  # how to vectorise the conversion: "mul", "div", "pow2" or "py" (exact Python ints)
    shift: int  # the exponent for "pow2"

    @classmethod
    def build(cls, linktype: int, snaplen: int, tsresol: int, tsoffset: int) -> _Interface:
        if tsresol & 0x80:
            exp = tsresol & 0x7F
            num, den = _NS, 1 << exp
            mode = "pow2" if exp <= 34 else "py"  # lo * 10**9 must fit in uint64 for the numpy path
        else:
            exp = tsresol
            if exp <= 9:
                num, den, mode = 10 ** (9 - exp), 1, "mul"
            else:
                num, den = 1, 10 ** (exp - 9)
                mode = "div" if den <= _INT64_MAX else "py"
        offset_ns = tsoffset * _NS
        limit = min(_INT64_MAX, _INT64_MAX - offset_ns)
        max_raw = min(_UINT64_MAX, ((limit + 1) * den - 1) // num)
        return cls(linktype, snaplen, num, den, offset_ns, max_raw, mode, exp)

    def to_ns(self, raw: int) -> int:
        if raw > self.max_raw:
            return _INT64_MAX
        return raw * self.num // self.den + self.offset_ns

    def to_ns_array(self, raw: _UInt64Array) -> _Int64Array:
        """Vectorised :meth:`to_ns` (values beyond int64 saturate to its maximum)."""
        over = raw > np.uint64(self.max_raw)
        if over.any():
            ns = self.to_ns_array(np.where(over, np.uint64(0), raw))
            ns[over] = _INT64_MAX
            return ns
        mode = self.mode
        if mode == "mul":
            ns = (raw * np.uint64(self.num)).astype(np.int64)
        elif mode == "div":
            ns = (raw // np.uint64(self.den)).astype(np.int64)
        elif mode == "pow2":
            # split into whole seconds and the binary fraction so nothing overflows uint64
            shift = np.uint64(self.shift)
            frac = raw & np.uint64(self.den - 1)
            ns = ((raw >> shift) * np.uint64(_NS) + ((frac * np.uint64(_NS)) >> shift)).astype(np.int64)
        else:
            return np.array([self.to_ns(int(r)) for r in raw.tolist()], dtype=np.int64)
        if self.offset_ns:
            ns += self.offset_ns
        return ns


_DEFAULT_TSRESOL: Final = 6


def _u32_rows(buf: bytes, order: str, width: int) -> npt.NDArray[np.uint32]:
    """A view with a row of ``width`` uint32 starting at every byte of ``buf``.

    Fancy-indexing it with record offsets gathers unaligned fixed-size headers in one numpy call
    (about ten times faster than the same gather through a structured dtype).
    """
    rows = max(len(buf) - 4 * width + 1, 0)
    return np.ndarray(shape=(rows, width), dtype=np.dtype(order + "u4"), buffer=buf, offset=0, strides=(1, 4))


def _readonly(*arrays: npt.NDArray[np.generic]) -> None:
    for a in arrays:
        a.flags.writeable = False


class CaptureParser:
    """Incremental pcap/pcapng parser. Auto-detects pcap (LE/BE x micro/nanosecond magics) and pcapng.

    Feed bytes in any chunking with :meth:`feed`, then call :meth:`flush` once at end of input. The
    sequence of batches does not depend on the chunking: every batch but the last holds exactly
    ``batch_size`` packets.

    Errors: when :meth:`feed` or :meth:`flush` meets a corrupt or truncated record, it raises
    :class:`CaptureError` (:class:`TruncatedCaptureError` for a cut-off tail) whose ``batches`` attribute
    holds all complete packets before the fault that had not been returned yet; deliver those, then
    report the error. The parser is then dead: any further call raises the same error again (with no
    batches).

    Timestamps are not checked for plausibility; a pcapng timestamp too large for int64 nanoseconds
    (about year 2262) is stored as the int64 maximum and counted in ``ts_clamped``. An original length
    above :data:`MAX_WIRELEN` is replaced by the captured length and counted in ``wirelen_clamped``; one below
    the captured length is replaced by it too and counted in ``wirelen_below_caplen``. A pcapng interface
    whose ``if_tsresol`` has more units a second than 64 bits can count (10^20, 2^64 and beyond: every time
    would fall in the first seconds of 1970) gets the default resolution, microseconds, with a warning, and
    is counted in ``tsresol_rejected`` (Wireshark refuses such a file).
    """

    packets: int  # total packets produced so far (returned in batches or attached to an error)
    ts_clamped: int  # pcapng timestamps too large for int64 ns, stored as the int64 maximum
    wirelen_clamped: int  # records whose original length was impossible, counted with their captured length
    wirelen_below_caplen: int  # records whose original length was below their captured length (counted: that)
    tsresol_rejected: int  # pcapng interfaces whose if_tsresol no 64-bit timestamp can use (default used)

    def __init__(
        self, name: str = "<capture>", batch_size: int = 65536, *, split_at_feeds: bool = False
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        # With split_at_feeds, each feed's packets are returned at once in batches that never
        # span two fed buffers (at most batch_size each): every batch is a view of one buffer,
        # with no copy. Batch boundaries then depend on the chunking; packets do not.
        self.split_at_feeds = split_at_feeds
        self.packets = 0
        self.ts_clamped = 0
        self.wirelen_clamped = 0
        self.wirelen_below_caplen = 0
        self.tsresol_rejected = 0
        self._fed = 0  # total bytes fed
        self._consumed = 0  # absolute offset up to which input was parsed into complete units
        self._carry = bytearray()  # an incomplete unit (header, record or block) at offset _consumed
        self._pending: deque[_Segment] = deque()
        self._npending = 0
        self._error: CaptureError | None = None
        self._finished = False
        self._format: str | None = None  # "pcap" or "pcapng" once detected
        self._order = "<"
        # pcap state
        self._pcap_linktype = 0
        self._pcap_limit = MAX_RECORD
        self._pcap_snaplen = 0
        self._pcap_frac_mul = 1000
        self._incl_at = struct.Struct("<8xI").unpack_from
        # pcapng state
        self._ifaces: list[_Interface] = []
        self._if_linktypes: _UInt16Array = np.zeros(0, dtype=np.uint16)
        self._if_max_raw: _UInt64Array = np.zeros(0, dtype=np.uint64)
        # Interface blocks already read, by byte order and content: a writer that repeats the same
        # description before every packet costs one dict lookup per block, not a parse (bounded).
        self._idb_memo: dict[tuple[str, bytes], _Interface] = {}
        self._set_ng_order("<")

    @property
    def offset(self) -> int:
        """Absolute byte offset of the input parsed so far (a partial record held back is not counted)."""
        return self._consumed

    # ------------------------------------------------------------------ public API

    def feed(
        self, data: bytes | bytearray | memoryview | mmap.mmap, *, borrow: bool = False
    ) -> list[PacketBatch]:
        """Parse more input; return the batches that became full (each exactly ``batch_size`` packets).

        A ``bytes`` object is kept by reference (batches may be views of it); other buffer types are
        copied once, since the caller may reuse them, unless ``borrow`` is set: then the caller
        promises not to change ``data`` while the returned batches are in use (a reused read buffer,
        with ``split_at_feeds`` so that no batch outlives its feed).
        """
        self._check_usable()
        if type(data) is not bytes and not (borrow and self.split_at_feeds):
            data = bytes(data)
        # The walkers need only the buffer protocol, slicing and len(), which every accepted
        # type has; they are typed for bytes.
        data = cast(bytes, data)
        base = self._fed
        self._fed += len(data)
        start = 0
        if self._carry:
            start = self._complete_carry(data)
            if start < 0:  # everything went into the carry-over
                return self._full_batches()
        if start < len(data):
            pos = self._walk(data, start, base)
            self._consumed = base + pos
            if pos < len(data):
                self._carry += memoryview(data)[pos:]
        return self._full_batches()

    def flush(self) -> list[PacketBatch]:
        """End of input: return the remaining packets (at most one batch).

        Raises :class:`TruncatedCaptureError` (with the remaining packets in ``.batches``) if the input
        ended inside a header, record or block, or was empty.
        """
        self._check_usable()
        self._finished = True
        if self._format is None and bytes(self._carry[:4]) == _SHB_MAGIC:
            # A first block that never completed: report it as the walker would have.
            self._format = "pcapng"
        if self._carry or self._format is None:
            if self._format is None:
                if not self._carry:
                    reason = "empty input (the capture is empty: 0 bytes)"
                elif _compression(bytes(self._carry)):
                    reason = _compressed_reason(bytes(self._carry), self.name)
                else:
                    reason = f"truncated file header ({len(self._carry)} bytes)"
            else:
                reason = self._truncation_reason()
            self._fail(TruncatedCaptureError(self.name, self._consumed, reason))
        return self._remaining_batches()

    # ------------------------------------------------------------------ buffering

    def _check_usable(self) -> None:
        if self._error is not None:
            err = self._error
            raise type(err)(err.name, err.offset, err.reason)
        if self._finished:
            raise RuntimeError("CaptureParser used after flush()")

    def _fail(self, err: CaptureError) -> None:
        """Kill the parser and raise ``err`` carrying every packet not handed out yet."""
        err.batches = self._remaining_batches()
        self._error = err
        raise err

    def _complete_carry(self, data: bytes) -> int:
        """Top up the carry-over from ``data`` and parse it; return where to resume in ``data`` (-1: none)."""
        carry = self._carry
        start = 0
        n = len(data)
        while carry:
            need = self._need(carry)
            if len(carry) < need:
                if start >= n:
                    return -1
                take = min(need - len(carry), n - start)
                carry += memoryview(data)[start : start + take]
                start += take
                continue
            unit = bytes(carry)
            carry.clear()
            pos = self._walk(unit, 0, self._consumed)
            if pos == 0:  # cannot happen: _need() and the walkers agree on unit sizes
                raise RuntimeError("capture parser made no progress on a complete unit")
            self._consumed += pos
            carry += memoryview(unit)[pos:]
        return start

    def _need(self, carry: bytearray) -> int:
        """Size of the unit at the start of ``carry`` as far as its header tells; <= len(carry) if corrupt."""
        have = len(carry)
        fmt = self._format
        if fmt is None:
            if have < 4:
                return 4
            magic = bytes(carry[:4])
            if magic in _PCAP_MAGICS:
                return _PCAP_HEADER_LEN
            if magic != _SHB_MAGIC:
                return 4  # the walker reports the bad magic
            fmt = "pcapng"
        if fmt == "pcap":
            if have < 12:
                return _PCAP_RECORD_HEADER_LEN
            (incl,) = self._incl_at(carry, 0)
            if incl > self._pcap_limit:
                return have
            return _PCAP_RECORD_HEADER_LEN + int(incl)
        if have < 12:
            return 12
        btype, blen = self._ng_hdr(carry, 0)
        if btype == _SHB:
            bom = bytes(carry[8:12])
            if bom not in (_BOM_LE, _BOM_BE):
                return have
            (blen,) = struct.unpack_from("<I" if bom == _BOM_LE else ">I", carry, 4)
        if blen < 12 or blen & 3 or blen > MAX_BLOCK:
            return have
        return int(blen)

    def _truncation_reason(self) -> str:
        have = len(self._carry)
        need = self._need(self._carry)
        if self._format == "pcap":
            what = "record header" if have < _PCAP_RECORD_HEADER_LEN else "record"
        else:
            what = "block header" if have < 12 else "block"
        if self._format == "pcap" and have < _PCAP_RECORD_HEADER_LEN:
            return f"truncated {what} ({have} of {_PCAP_RECORD_HEADER_LEN} bytes)"
        return f"truncated {what} ({have} of {need} bytes)"

    def _add_segment(self, seg: _Segment) -> None:
        n = len(seg.offsets)
        if n:
            self._check_wirelen(seg)
            self._pending.append(seg)
            self._npending += n

    def _check_wirelen(self, seg: _Segment) -> None:
        # A record's original length is the writer's word only: 0xFFFFFFFF in five records would count as
        # 21 GB. Beyond the largest frame any capture stack produces (MAX_WIRELEN, GRO/GSO super-frames
        # included), the captured length is what can be vouched for. Below the captured length it is
        # impossible too (the frame had at least the bytes we hold): max(caplen, wirelen) is counted.
        wirelen, caplen = seg.wirelen, seg.caplen
        bad = wirelen > MAX_WIRELEN
        short = wirelen < caplen
        count, below = int(np.count_nonzero(bad)), int(np.count_nonzero(short))
        if not (count or below):
            return
        if count and not self.wirelen_clamped:
            _log.warning(
                "%s: %d record(s) with an impossible original length counted with their captured length",
                self.name,
                count,
            )
        if below and not self.wirelen_below_caplen:
            _log.warning(
                "%s: %d record(s) with an original length below the captured length counted with the "
                "captured length",
                self.name,
                below,
            )
        self.wirelen_clamped += count
        self.wirelen_below_caplen += below
        seg.wirelen = np.where(bad | short, caplen, wirelen)

    def _full_batches(self) -> list[PacketBatch]:
        out = []
        size = self.batch_size
        if self.split_at_feeds:
            while self._pending:
                seg = self._pending[0]
                out.append(self._take(min(size, len(seg.offsets) - seg.start)))
            return out
        while self._npending >= size:
            out.append(self._take(size))
        return out

    def _remaining_batches(self) -> list[PacketBatch]:
        out = self._full_batches()
        if self._npending:
            out.append(self._take(self._npending))
        return out

    def _take(self, count: int) -> PacketBatch:
        """Build a batch from the first ``count`` pending packets."""
        pieces: list[tuple[_Segment, int, int]] = []
        left = count
        while left:
            seg = self._pending[0]
            s = seg.start
            k = min(len(seg.offsets) - s, left)
            pieces.append((seg, s, s + k))
            if s + k == len(seg.offsets):
                self._pending.popleft()
            else:
                seg.start = s + k
            left -= k
        self._npending -= count
        self.packets += count
        if len(pieces) == 1:
            seg, s, e = pieces[0]
            lo = int(seg.offsets[s])
            hi = int(seg.offsets[e - 1] + seg.caplen[e - 1])
            data = seg.data[lo:hi]
            offsets = seg.offsets[s:e] - lo
            caplen, wirelen = seg.caplen[s:e], seg.wirelen[s:e]
            ts_ns, linktype = seg.ts_ns[s:e], seg.linktype[s:e]
        else:
            datas, offs = [], []
            base = 0
            for seg, s, e in pieces:
                lo = int(seg.offsets[s])
                hi = int(seg.offsets[e - 1] + seg.caplen[e - 1])
                datas.append(seg.data[lo:hi])
                offs.append(seg.offsets[s:e] + (base - lo))
                base += hi - lo
            data = np.concatenate(datas)
            offsets = np.concatenate(offs)
            caplen = np.concatenate([seg.caplen[s:e] for seg, s, e in pieces])
            wirelen = np.concatenate([seg.wirelen[s:e] for seg, s, e in pieces])
            ts_ns = np.concatenate([seg.ts_ns[s:e] for seg, s, e in pieces])
            linktype = np.concatenate([seg.linktype[s:e] for seg, s, e in pieces])
        _readonly(data, offsets, caplen, wirelen, ts_ns, linktype)
        return PacketBatch(data, offsets, caplen, wirelen, ts_ns, linktype)

    # ------------------------------------------------------------------ walking

    def _walk(self, buf: bytes, pos: int, base: int) -> int:
        """Parse complete units of ``buf`` from ``pos``; queue their packets; return where parsing stopped.

        ``base`` is the absolute offset of ``buf[0]``. On corruption, the packets before it are queued
        and :class:`CaptureError` is raised through :meth:`_fail`.
        """
        if self._format is None:
            if len(buf) - pos < 4:
                return pos
            magic = bytes(buf[pos : pos + 4])
            if magic in _PCAP_MAGICS:
                if len(buf) - pos < _PCAP_HEADER_LEN:
                    return pos
                self._start_pcap(buf, pos)
                pos += _PCAP_HEADER_LEN
            elif magic == _SHB_MAGIC:
                self._format = "pcapng"  # the SHB itself is parsed by the pcapng walker
            else:
                head = bytes(buf[pos : pos + 6])
                reason = (
                    _compressed_reason(head, self.name) if _compression(head) else "not a pcap or pcapng file"
                )
                self._fail(CaptureError(self.name, base + pos, reason))
        if self._format == "pcap":
            pos, fault = self._walk_pcap(buf, pos)
        else:
            pos, fault = self._walk_pcapng(buf, pos)
        if fault is not None:
            self._consumed = base + fault.pos
            self._fail(CaptureError(self.name, base + fault.pos, fault.reason))
        return pos

    def _start_pcap(self, buf: bytes, pos: int) -> None:
        order, frac_mul = _PCAP_MAGICS[bytes(buf[pos : pos + 4])]
        snaplen, network = struct.unpack_from(order + "16xII", buf, pos)
        self._format = "pcap"
        self._order = order
        self._pcap_frac_mul = frac_mul
        self._pcap_snaplen = snaplen
        # the upper bits of the link-type field carry FCS information, not the link type
        self._pcap_linktype = network & 0xFFFF
        self._pcap_limit = min(MAX_RECORD, max(snaplen, _SNAPLEN_FLOOR) + _SNAPLEN_SLACK)
        self._incl_at = struct.Struct(order + "8xI").unpack_from

    def _walk_pcap(self, buf: bytes, pos: int) -> tuple[int, _Fault | None]:
        # Hot loop, kept as short as possible: read incl_len, remember the header offset, jump. It ends
        # with struct.error when the next header is not (fully) in the buffer; the length sanity check
        # and all other fields are handled with numpy afterwards.
        incl_at = self._incl_at
        end = len(buf)
        heads: list[int] = []
        append = heads.append
        try:
            while True:
                append(pos)
                pos += 16 + incl_at(buf, pos)[0]
        except struct.error:
            pass
        pos = heads.pop()  # the header that could not be read
        if pos > end:
            pos = heads.pop()  # ... because the record before it is incomplete
        fault = None
        limit = self._pcap_limit
        n = len(heads)
        if n:
            hdr_off = np.array(heads, dtype=np.int64)
            rec = _u32_rows(buf, self._order, 4)[hdr_off]  # ts_sec, ts_frac, incl_len, orig_len
            caplen = rec[:, 2].astype(np.int64)
            too_long = caplen > limit
            if too_long.any():
                n = int(np.argmax(too_long))
                fault = self._pcap_too_long(heads[n], int(caplen[n]))
                hdr_off, rec, caplen = hdr_off[:n], rec[:n], caplen[:n]
            if n:
                ts = rec[:, 0].astype(np.int64) * _NS + rec[:, 1].astype(np.int64) * self._pcap_frac_mul
                self._add_segment(
                    _Segment(
                        data=np.frombuffer(buf, dtype=np.uint8),
                        offsets=hdr_off + _PCAP_RECORD_HEADER_LEN,
                        caplen=caplen,
                        wirelen=rec[:, 3].astype(np.int64),
                        ts_ns=ts,
                        linktype=np.full(n, self._pcap_linktype, dtype=np.uint16),
                    )
                )
            if fault is not None:
                return fault.pos, fault
        if end - pos >= 12:  # the incomplete record may already show a bad length
            (incl,) = incl_at(buf, pos)
            if incl > limit:
                return pos, self._pcap_too_long(pos, incl)
        return pos, None

    def _pcap_too_long(self, pos: int, incl: int) -> _Fault:
        limit, snaplen = self._pcap_limit, self._pcap_snaplen
        return _Fault(pos, f"record length {incl} exceeds the limit of {limit} bytes (snaplen {snaplen})")

    # pcapng -------------------------------------------------------------

    def _set_ng_order(self, order: str) -> None:
        self._order = order
        self._ng_hdr = struct.Struct(order + "II").unpack_from
        self._ng_u32 = struct.Struct(order + "I").unpack_from
        self._ng_u16 = struct.Struct(order + "H").unpack_from
        self._ng_i64 = struct.Struct(order + "q").unpack_from
        self._ng_idb = struct.Struct(order + "8xH2xI").unpack_from
        self._ng_pb = struct.Struct(order + "8xHHIIII").unpack_from
        self._ng_epb = struct.Struct(order + "4xIIIIII").unpack_from

    def _clear_interfaces(self) -> None:
        self._ifaces = []

    def _add_interface(self, iface: _Interface) -> None:
        # Amortised growth (capacity doubles): a file of many interface blocks stays linear, where
        # rebuilding the arrays per block made 100,000 blocks take minutes.
        n = len(self._ifaces)
        if n == len(self._if_linktypes):
            cap = max(8, 2 * n)
            self._if_linktypes = np.resize(self._if_linktypes, cap)
            self._if_max_raw = np.resize(self._if_max_raw, cap)
        self._if_linktypes[n] = iface.linktype
        self._if_max_raw[n] = iface.max_raw
        self._ifaces.append(iface)

    def _walk_pcapng(self, buf: bytes, pos: int) -> tuple[int, _Fault | None]:
        end = len(buf)
        parts: list[_Segment] = []  # EPB runs and slow-path packets; merged into one segment at the end
        slow: list[tuple[int, int, int, int, int]] = []  # (offset, caplen, wirelen, ts_ns, linktype)
        fault: _Fault | None = None
        while True:
            # Fast path: a run of EPBs; only type and length are looked at here.
            hdr = self._ng_hdr
            run: list[int] = []
            append = run.append
            try:
                while True:
                    btype, blen = hdr(buf, pos)  # struct.error once the next header is not in the buffer
                    if btype != _EPB or blen < 32:  # (>= 32 also guarantees progress)
                        break
                    append(pos)
                    pos += blen
            except struct.error:
                pass
            if pos > end:
                pos = run.pop()  # the last EPB is incomplete
            if 0 < len(run) < _SHORT_RUN:
                # A few EPBs between other blocks (an interface block before each packet): numpy's fixed
                # cost per call would dominate, so they are read one by one, as the slow path does.
                fault = self._epb_scalar(buf, run, slow)
                if fault is not None:
                    pos = fault.pos
                    break
            elif run:
                seg, fault = self._epb_run(buf, run)
                if seg is not None:
                    parts.append(seg)
                if fault is not None:
                    pos = fault.pos
                    break
            # Slow path: one block of any kind (or the end of the buffer).
            try:
                nxt = self._other_block(buf, pos, slow)
            except _Fault as exc:
                fault = exc
                break
            if nxt == pos:
                break
            pos = nxt
        if slow:
            parts.append(
                _Segment(
                    data=np.zeros(0, dtype=np.uint8),
                    offsets=np.array([p[0] for p in slow], dtype=np.int64),
                    caplen=np.array([p[1] for p in slow], dtype=np.int64),
                    wirelen=np.array([p[2] for p in slow], dtype=np.int64),
                    ts_ns=np.array([p[3] for p in slow], dtype=np.int64),
                    linktype=np.array([p[4] for p in slow], dtype=np.uint16),
                )
            )
        if parts:
            data = np.frombuffer(buf, dtype=np.uint8)
            if len(parts) == 1:
                seg = parts[0]
                seg.data = data
            else:
                offsets = np.concatenate([p.offsets for p in parts])
                order = np.argsort(offsets, kind="stable")  # back to file order
                seg = _Segment(
                    data=data,
                    offsets=offsets[order],
                    caplen=np.concatenate([p.caplen for p in parts])[order],
                    wirelen=np.concatenate([p.wirelen for p in parts])[order],
                    ts_ns=np.concatenate([p.ts_ns for p in parts])[order],
                    linktype=np.concatenate([p.linktype for p in parts])[order],
                )
            self._add_segment(seg)
        return pos, fault

    def _epb_run(self, buf: bytes, run: list[int]) -> tuple[_Segment | None, _Fault | None]:
        """Check and convert a run of EPBs with numpy; stop at the first bad one."""
        blk = np.array(run, dtype=np.int64)
        # type, length, interface, ts high, ts low, caplen, original length
        recs = _u32_rows(buf, self._order, 7)[blk]
        blen = recs[:, 1].astype(np.int64)
        caplen = recs[:, 5].astype(np.int64)
        ifid = recs[:, 2].astype(np.int64)
        raw = (recs[:, 3].astype(np.uint64) << np.uint64(32)) | recs[:, 4].astype(np.uint64)
        trailer = _u32_rows(buf, self._order, 1)[blk + blen - 4, 0]
        nif = len(self._ifaces)
        known = ifid < nif
        safe_if = np.where(known, ifid, 0) if nif else np.zeros_like(ifid)
        ok = ((blen & 3) == 0) & (blen <= MAX_BLOCK) & (trailer == blen) & (caplen <= blen - 32) & known
        fault = None
        n = len(run)
        if not ok.all():
            n = int(np.argmin(ok))
            fault = _Fault(run[n], self._epb_fault_reason(buf, run[n]))
            if n == 0:
                return None, fault
            blk, caplen, raw, safe_if, recs = blk[:n], caplen[:n], raw[:n], safe_if[:n], recs[:n]
        over = int(np.count_nonzero(raw > self._if_max_raw[safe_if]))
        if over:
            self._note_clamped(over, int(blk[0]))
        if nif == 1 or (safe_if == safe_if[0]).all():
            ts = self._ifaces[int(safe_if[0])].to_ns_array(raw)
        else:
            ts = np.empty(n, dtype=np.int64)
            for i in np.unique(safe_if).tolist():
                mask = safe_if == i
                ts[mask] = self._ifaces[i].to_ns_array(raw[mask])
        seg = _Segment(
            data=np.zeros(0, dtype=np.uint8),  # set by the caller
            offsets=blk + _EPB_HEADER_LEN,
            caplen=caplen,
            wirelen=recs[:, 6].astype(np.int64),
            ts_ns=ts,
            linktype=self._if_linktypes[safe_if],
        )
        return seg, fault

    def _epb_scalar(
        self, buf: bytes, run: list[int], slow: list[tuple[int, int, int, int, int]]
    ) -> _Fault | None:
        """:meth:`_epb_run` for a short run, in plain Python: the same checks, conversions and faults."""
        unpack, u32, ifaces = self._ng_epb, self._ng_u32, self._ifaces
        for pos in run:
            blen, ifid, tsh, tsl, caplen, orig = unpack(buf, pos)
            if (
                blen & 3
                or blen > MAX_BLOCK
                or caplen > blen - 32
                or ifid >= len(ifaces)
                or u32(buf, pos + blen - 4)[0] != blen
            ):
                return _Fault(pos, self._epb_fault_reason(buf, pos))
            iface = ifaces[ifid]
            raw = (tsh << 32) | tsl
            if raw > iface.max_raw:
                self._note_clamped(1, pos)
            slow.append((pos + _EPB_HEADER_LEN, caplen, orig, iface.to_ns(raw), iface.linktype))
        return None

    def _epb_fault_reason(self, buf: bytes, pos: int) -> str:
        _, blen = self._ng_hdr(buf, pos)
        reason = self._block_length_problem(buf, pos, blen)
        if reason:
            return reason
        ifid, _, _, caplen = struct.unpack_from(self._order + "8xIIII", buf, pos)
        if caplen > blen - 32:
            return f"enhanced packet block: captured length {caplen} does not fit in block length {blen}"
        return f"enhanced packet block: unknown interface {ifid} ({len(self._ifaces)} in this section)"

    def _note_clamped(self, count: int, pos: int) -> None:
        # Not a structural fault: some writers store garbage timestamps (nfstream's dhcp_*_endian.pcapng
        # holds a double's bit pattern, ~year 150000). Refusing the file would lose good packets.
        if not self.ts_clamped:
            _log.warning(
                "%s: pcapng timestamps beyond the int64 nanosecond range are clamped (first near byte %d)",
                self.name,
                pos,
            )
        self.ts_clamped += count

    def _block_length_problem(self, buf: bytes, pos: int, blen: int) -> str | None:
        """Why the complete block at ``pos`` with length ``blen`` is malformed, or None."""
        if blen < 12 or blen & 3:
            return f"block length {blen} is not a multiple of 4 and >= 12"
        if blen > MAX_BLOCK:
            return f"block length {blen} exceeds the limit of {MAX_BLOCK} bytes"
        (trailer,) = self._ng_u32(buf, pos + blen - 4)
        if trailer != blen:
            return f"trailing block length {trailer} does not match block length {blen}"
        return None

    def _other_block(self, buf: bytes, pos: int, slow: list[tuple[int, int, int, int, int]]) -> int:
        """Handle the block at ``pos``; return the offset after it, or ``pos`` if it is incomplete."""
        end = len(buf)
        if end - pos < 12:
            return pos
        btype, blen = self._ng_hdr(buf, pos)
        if btype == _SHB:
            bom = bytes(buf[pos + 8 : pos + 12])
            if bom == _BOM_LE:
                order = "<"
            elif bom == _BOM_BE:
                order = ">"
            else:
                raise _Fault(pos, f"section header block: bad byte-order magic 0x{bom.hex()}")
            (blen,) = struct.unpack_from(order + "I", buf, pos + 4)
            if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                raise _Fault(pos, self._block_length_problem(buf, pos, blen) or "bad block length")
            if pos + blen > end:
                return pos
            self._set_ng_order(order)
        elif blen < 12 or blen & 3 or blen > MAX_BLOCK:
            raise _Fault(pos, self._block_length_problem(buf, pos, blen) or "bad block length")
        nxt = pos + int(blen)
        if nxt > end:
            return pos
        problem = self._block_length_problem(buf, pos, blen)
        if problem:
            raise _Fault(pos, problem)
        if btype == _SHB:
            if blen < 28:
                raise _Fault(pos, f"section header block too short ({blen} bytes)")
            major, minor = struct.unpack_from(self._order + "HH", buf, pos + 12)
            if major != 1:
                raise _Fault(pos, f"unsupported pcapng version {major}.{minor}")
            self._clear_interfaces()  # a new section starts with no interfaces
        elif btype == _IDB:
            key = (self._order, bytes(buf[pos:nxt]))
            iface = self._idb_memo.get(key)
            if iface is None:
                iface = self._parse_idb(buf, pos, blen)
                if len(self._idb_memo) >= _IDB_MEMO:
                    self._idb_memo.clear()
                self._idb_memo[key] = iface
            self._add_interface(iface)
        elif btype == _EPB:
            if blen < 32:
                raise _Fault(pos, f"enhanced packet block too short ({blen} bytes)")
            # A complete, well-formed EPB is always taken by the fast path; reaching here is a fault.
            raise _Fault(pos, self._epb_fault_reason(buf, pos))
        elif btype == _SPB:
            if blen < 16:
                raise _Fault(pos, f"simple packet block too short ({blen} bytes)")
            if not self._ifaces:
                raise _Fault(pos, "simple packet block before any interface description block")
            iface = self._ifaces[0]
            (orig,) = self._ng_u32(buf, pos + 8)
            caplen = min(orig, blen - 16)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            # an SPB has no timestamp: 0 is the documented convention
            slow.append((pos + 12, caplen, orig, 0, iface.linktype))
        elif btype == _PB:
            if blen < 32:
                raise _Fault(pos, f"packet block too short ({blen} bytes)")
            ifid, _drops, tsh, tsl, caplen, orig = self._ng_pb(buf, pos)
            if caplen > blen - 32:
                raise _Fault(
                    pos, f"packet block: captured length {caplen} does not fit in block length {blen}"
                )
            if ifid >= len(self._ifaces):
                raise _Fault(
                    pos, f"packet block: unknown interface {ifid} ({len(self._ifaces)} in this section)"
                )
            iface = self._ifaces[ifid]
            raw = (tsh << 32) | tsl
            if raw > iface.max_raw:
                self._note_clamped(1, pos)
            slow.append((pos + 28, caplen, orig, iface.to_ns(raw), iface.linktype))
        # any other block type (NRB, ISB, DSB, custom, ...) carries nothing we need
        return nxt

    def _parse_idb(self, buf: bytes, pos: int, blen: int) -> _Interface:
        if blen < 20:
            raise _Fault(pos, f"interface description block too short ({blen} bytes)")
        linktype, snaplen = self._ng_idb(buf, pos)
        tsresol = _DEFAULT_TSRESOL
        tsoffset = 0
        p = pos + 16
        stop = pos + blen - 4
        while p + 4 <= stop:
            code, olen = struct.unpack_from(self._order + "HH", buf, p)
            if code == _OPT_ENDOFOPT:
                break
            p += 4
            if p + olen > stop:
                raise _Fault(pos, f"interface description block: option {code} overruns the block")
            if code == _OPT_IF_TSRESOL and olen >= 1:
                tsresol = buf[p]
            elif code == _OPT_IF_TSOFFSET and olen >= 8:
                (tsoffset,) = self._ng_i64(buf, p)
            p += (olen + 3) & ~3
        if _tsresol_unusable(tsresol):
            # Such a resolution puts every timestamp in the first seconds of 1970 (Wireshark refuses the
            # file); the packets are still good, so keep them with the default resolution and say so.
            _log.warning(
                "%s: interface description block at byte %d: if_tsresol %s s is finer than a 64-bit "
                "timestamp can count; using the default resolution (microseconds)",
                self.name,
                pos,
                f"2^-{tsresol & 0x7F}" if tsresol & 0x80 else f"10^-{tsresol}",
            )
            self.tsresol_rejected += 1
            tsresol = _DEFAULT_TSRESOL
        # keep ns arithmetic inside int64 whatever the offset (real offsets are a few decades at most)
        if abs(tsoffset) * _NS > 1 << 62:
            raise _Fault(pos, f"interface description block: if_tsoffset {tsoffset} out of range")
        return _interface(linktype, snaplen, tsresol, tsoffset)


def _tsresol_unusable(tsresol: int) -> bool:
    """More units a second than 64 bits can count: 2^64 and up, 10^20 and up."""
    return (tsresol & 0x7F) >= 64 if tsresol & 0x80 else tsresol >= 20


def _compression(head: bytes) -> tuple[str, str] | None:
    """(format, command) of a compressed file starting with ``head``, or None."""
    for magic, fmt, command in _COMPRESSED:
        if head.startswith(magic):
            return fmt, command
    return None


def _compressed_reason(head: bytes, name: str) -> str:
    fmt, command = _compression(head) or ("", "")
    return f"{fmt}-compressed, not a pcap or pcapng file: decompress it first ({command} {name})"


# Interfaces are immutable: the same description (many files repeat a few) is built once.
_interface = functools.lru_cache(maxsize=1024)(_Interface.build)


def iter_batches(
    stream: BinaryIO,
    name: str,
    batch_size: int = 65536,
    chunk_size: int = 8 << 20,
    *,
    split_at_feeds: bool = False,
) -> Iterator[PacketBatch]:
    """Yield every complete packet of a binary stream in batches, then raise CaptureError for a bad tail.

    ``split_at_feeds`` trades exact batch sizes for zero-copy batches (see :class:`CaptureParser`).
    """
    parser = CaptureParser(name, batch_size, split_at_feeds=split_at_feeds)
    while True:
        chunk = stream.read(chunk_size)
        try:
            batches = parser.feed(chunk) if chunk else parser.flush()
        except CaptureError as exc:
            delivered, exc.batches = exc.batches, []
            yield from delivered
            raise
        yield from batches
        if not chunk:
            return
