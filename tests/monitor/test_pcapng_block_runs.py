"""pcapng packets read the same whether they come in long runs of packet blocks (numpy) or one at a time
between other blocks (plain Python), and interface blocks repeated many times are read once each."""

from __future__ import annotations

import struct

import pytest

from monitor.pcapfile import CaptureError, CaptureParser, PacketBatch
from monitor.pcapwrite import pcapng_block, pcapng_epb, pcapng_idb, pcapng_shb

NS = 1_000_000_000
# A block type camwatch skips (a custom block): it only splits a run of packet blocks.
SPACER = pcapng_block(0x00000BAD, b"\x00" * 4)


def _epbs(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        exponent = 6 if i % 2 == 0 else 9
        ts_ns = (1_700_000_000 + i) * NS + 123_456_789
        frame = bytes([i % 256]) * (60 + i)
        out.append(pcapng_epb(i % 2, ts_ns // 10 ** (9 - exponent), frame, wirelen=60 + 2 * i))
    return out


def _head() -> bytes:
    return pcapng_shb() + pcapng_idb(1, tsresol=6) + pcapng_idb(113, tsresol=9, snaplen=100)


def _rows(batches: list[PacketBatch]) -> list[tuple[int, int, int, int, bytes]]:
    return [
        (int(b.ts_ns[i]), int(b.caplen[i]), int(b.wirelen[i]), int(b.linktype[i]), b.packet(i))
        for b in batches
        for i in range(len(b))
    ]


def _parse(data: bytes) -> tuple[list[PacketBatch], CaptureError | None]:
    parser = CaptureParser("t.pcapng")
    try:
        return parser.feed(data) + parser.flush(), None
    except CaptureError as exc:
        return exc.batches, exc


def test_short_runs_read_as_a_long_run() -> None:
    epbs = _epbs(40)
    long_run, err = _parse(_head() + b"".join(epbs))
    assert err is None
    one_by_one, err = _parse(_head() + b"".join(e + SPACER for e in epbs))
    assert err is None
    assert _rows(one_by_one) == _rows(long_run) and len(_rows(long_run)) == 40


@pytest.mark.parametrize("bad", [3, 30])
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[:-4] + struct.pack("<I", len(b) + 4), id="trailer"),
        # Interface 2 of 2 (0 and 1 exist): the first unknown one.
        pytest.param(lambda b: b[:8] + struct.pack("<I", 2) + b[12:], id="unknown-interface"),
        pytest.param(lambda b: b[:20] + struct.pack("<I", 5000) + b[24:], id="caplen"),
    ],
)
def test_a_bad_packet_block_is_the_same_fault_in_either_path(bad: int, damage: object) -> None:
    assert callable(damage)
    epbs = _epbs(40)
    epbs[bad] = damage(epbs[bad])
    faults = []
    for spacer in (b"", SPACER):
        delivered, err = _parse(_head() + b"".join(e + spacer for e in epbs))
        assert err is not None
        faults.append((err.reason, _rows(delivered)))
    (reason, rows), (reason2, rows2) = faults
    assert reason == reason2 and rows == rows2 and len(rows) == bad


def test_repeated_interface_blocks_each_count() -> None:
    """An interface block before every packet: each adds an interface (the n-th packet is on the n-th)."""
    parts = [pcapng_shb()]
    for i in range(600):  # beyond the parser's memo of distinct descriptions, with repeats
        parts.append(pcapng_idb(1 if i % 3 else 101, tsresol=6 if i % 2 else 9))
        parts.append(pcapng_epb(i, 1_700_000_000 * (10**6 if i % 2 else NS) + i, b"\x45" + bytes(40)))
    batches, err = _parse(b"".join(parts))
    assert err is None
    rows = _rows(batches)
    assert [r[3] for r in rows] == [1 if i % 3 else 101 for i in range(600)]
    assert [r[0] for r in rows] == [1_700_000_000 * NS + i * (1000 if i % 2 else 1) for i in range(600)]


def test_the_same_interface_bytes_in_the_other_byte_order_are_not_confused() -> None:
    little = pcapng_shb() + pcapng_idb(1, tsresol=6) + pcapng_epb(0, 5, b"\x00" * 20)
    big = (
        pcapng_shb(big_endian=True)
        + pcapng_idb(1, tsresol=6, big_endian=True)
        + pcapng_epb(0, 5, b"\x00" * 20, big_endian=True)
    )
    batches, err = _parse(little + big + little)
    assert err is None
    assert [r[3] for r in _rows(batches)] == [1, 1, 1] and [r[0] for r in _rows(batches)] == [5000] * 3
