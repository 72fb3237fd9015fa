"""Pure pcap and pcapng writers: they return bytes (for tests, fixtures and benchmarks).

Timestamps are integer nanoseconds since the Unix epoch, as in :mod:`monitor.pcapfile`; a format with a
coarser resolution gets them floored.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final

__all__ = [
    "PcapWriteError",
    "PcapWriter",
    "pcap_bytes",
    "pcapng_block",
    "pcapng_bytes",
    "pcapng_epb",
    "pcapng_idb",
    "pcapng_option",
    "pcapng_shb",
    "pcapng_spb",
]

_NS: Final = 1_000_000_000
_U32_MAX: Final = 0xFFFFFFFF
_U64_MAX: Final = (1 << 64) - 1

PCAPNG_SHB: Final = 0x0A0D0D0A
PCAPNG_IDB: Final = 1
PCAPNG_SPB: Final = 3
PCAPNG_EPB: Final = 6
OPT_IF_TSRESOL: Final = 9
OPT_IF_TSOFFSET: Final = 14


class PcapWriteError(ValueError):
    """A value that the requested capture format cannot represent (negative time, length over 32 bits...)."""


def _order(big_endian: bool) -> str:
    return ">" if big_endian else "<"


def _u32(value: int, what: str) -> int:
    if not 0 <= value <= _U32_MAX:
        raise PcapWriteError(f"{what} {value} does not fit in 32 bits")
    return value


class PcapWriter:
    """Incremental classic-pcap writer: ``header()`` once, then ``record()`` per packet."""

    def __init__(
        self, linktype: int = 1, *, nanosecond: bool = False, big_endian: bool = False, snaplen: int = 262144
    ) -> None:
        self.linktype = linktype
        self.nanosecond = nanosecond
        self.big_endian = big_endian
        self.snaplen = _u32(snaplen, "snaplen")
        order = _order(big_endian)
        self._record_header = struct.Struct(order + "IIII")
        self._file_header = struct.Struct(order + "IHHiIII")

    def header(self) -> bytes:
        """The 24-byte global header."""
        magic = 0xA1B23C4D if self.nanosecond else 0xA1B2C3D4
        return self._file_header.pack(magic, 2, 4, 0, 0, self.snaplen, _u32(self.linktype, "linktype"))

    def record(self, ts_ns: int, frame: bytes, wirelen: int | None = None) -> bytes:
        """One record; ``frame`` is cut to ``snaplen``, ``wirelen`` defaults to ``len(frame)``."""
        if ts_ns < 0:
            raise PcapWriteError(f"timestamp {ts_ns} ns is before 1970: pcap cannot store it")
        sec, frac = divmod(ts_ns, _NS)
        if not self.nanosecond:
            frac //= 1000
        incl = min(len(frame), self.snaplen)
        orig = len(frame) if wirelen is None else wirelen
        hdr = self._record_header.pack(_u32(sec, "timestamp seconds"), frac, incl, _u32(orig, "wirelen"))
        return hdr + frame[:incl]


def pcap_bytes(
    packets: Iterable[tuple[int, bytes]] | Iterable[tuple[int, bytes, int]],
    linktype: int = 1,
    *,
    nanosecond: bool = False,
    big_endian: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """A whole pcap file. Items are ``(ts_ns, frame)`` or ``(ts_ns, frame, wirelen)``."""
    writer = PcapWriter(linktype, nanosecond=nanosecond, big_endian=big_endian, snaplen=snaplen)
    parts = [writer.header()]
    for item in packets:
        parts.append(writer.record(*item))
    return b"".join(parts)


# pcapng building blocks: public so that tests can hand-build unusual files (other resolutions, SPBs,
# unknown blocks, broken lengths).


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def pcapng_block(block_type: int, body: bytes, *, big_endian: bool = False) -> bytes:
    """A block: type, total length, ``body`` padded to 4 bytes, total length again."""
    body = _pad4(body)
    total = len(body) + 12
    order = _order(big_endian)
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def pcapng_option(code: int, value: bytes, *, big_endian: bool = False) -> bytes:
    """One option (code, length, value padded to 4 bytes)."""
    return struct.pack(_order(big_endian) + "HH", code, len(value)) + _pad4(value)


def _options(options: Sequence[bytes], big_endian: bool) -> bytes:
    if not options:
        return b""
    return b"".join(options) + pcapng_option(0, b"", big_endian=big_endian)  # opt_endofopt


def pcapng_shb(*, big_endian: bool = False, options: Sequence[bytes] = ()) -> bytes:
    """Section Header Block, version 1.0, section length unknown (-1)."""
    body = struct.pack(_order(big_endian) + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(options, big_endian)
    return pcapng_block(PCAPNG_SHB, body, big_endian=big_endian)


def pcapng_idb(
    linktype: int,
    *,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    snaplen: int = 0,
    big_endian: bool = False,
) -> bytes:
    """Interface Description Block. ``tsresol`` is the raw if_tsresol byte (e.g. 9, or 0x80 | 20)."""
    order = _order(big_endian)
    opts = []
    if tsresol is not None:
        opts.append(pcapng_option(OPT_IF_TSRESOL, bytes([tsresol]), big_endian=big_endian))
    if tsoffset is not None:
        opts.append(pcapng_option(OPT_IF_TSOFFSET, struct.pack(order + "q", tsoffset), big_endian=big_endian))
    body = struct.pack(order + "HHI", linktype, 0, snaplen) + _options(opts, big_endian)
    return pcapng_block(PCAPNG_IDB, body, big_endian=big_endian)


def pcapng_epb(
    interface: int, ts_raw: int, frame: bytes, wirelen: int | None = None, *, big_endian: bool = False
) -> bytes:
    """Enhanced Packet Block; ``ts_raw`` is in the interface's timestamp units."""
    if not 0 <= ts_raw <= _U64_MAX:
        raise PcapWriteError(f"timestamp {ts_raw} does not fit in 64 bits")
    orig = len(frame) if wirelen is None else wirelen
    head = struct.pack(
        _order(big_endian) + "IIIII",
        interface,
        ts_raw >> 32,
        ts_raw & _U32_MAX,
        len(frame),
        _u32(orig, "wirelen"),
    )
    return pcapng_block(PCAPNG_EPB, head + frame, big_endian=big_endian)


def pcapng_spb(frame: bytes, wirelen: int | None = None, *, big_endian: bool = False) -> bytes:
    """Simple Packet Block (interface 0, no timestamp)."""
    orig = len(frame) if wirelen is None else wirelen
    head = struct.pack(_order(big_endian) + "I", _u32(orig, "wirelen"))
    return pcapng_block(PCAPNG_SPB, head + frame, big_endian=big_endian)


def _ns_to_units(ts_ns: int, exponent: int) -> int:
    if ts_ns < 0:
        raise PcapWriteError(f"timestamp {ts_ns} ns is before 1970: pcapng cannot store it")
    # int(...): typeshed types int ** int as Any because a negative exponent gives a float
    if exponent <= 9:
        return ts_ns // int(10 ** (9 - exponent))
    return ts_ns * int(10 ** (exponent - 9))


def pcapng_bytes(
    interfaces: Sequence[tuple[int, int]],
    packets: Iterable[tuple[int, int, bytes]] | Iterable[tuple[int, int, bytes, int]],
    *,
    big_endian: bool = False,
) -> bytes:
    """A one-section pcapng file.

    ``interfaces``: ``(linktype, tsresol exponent of 10)`` each, e.g. ``(1, 6)`` for Ethernet in µs.
    ``packets``: ``(interface index, ts_ns, frame)`` or ``(interface index, ts_ns, frame, wirelen)``.
    """
    parts = [pcapng_shb(big_endian=big_endian)]
    for linktype, exponent in interfaces:
        if not 0 <= exponent <= 0x7F:
            raise PcapWriteError(f"tsresol exponent {exponent} is not in 0..127")
        parts.append(pcapng_idb(linktype, tsresol=exponent, big_endian=big_endian))
    for item in packets:
        index, ts_ns, frame = item[0], item[1], item[2]
        wirelen = item[3] if len(item) > 3 else None
        if not 0 <= index < len(interfaces):
            raise PcapWriteError(f"interface {index} is not one of the {len(interfaces)} interfaces")
        ts_raw = _ns_to_units(ts_ns, interfaces[index][1])
        parts.append(pcapng_epb(index, ts_raw, frame, wirelen, big_endian=big_endian))
    return b"".join(parts)
