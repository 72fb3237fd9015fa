"""monitor.reassembly: each byte of a TCP direction once, in order."""

from __future__ import annotations

from monitor.reassembly import MAX_HELD_SEGMENTS, OrderStats, TcpOrder, seq_diff


def feed_all(segments: list[tuple[int, bytes]], syn_at: int | None = None) -> tuple[bytes, OrderStats]:
    order, stats, out = TcpOrder(), OrderStats(), b""
    for i, (seq, data) in enumerate(segments):
        for piece, _ in order.feed(seq, i == syn_at, data, i, stats):
            out += piece
    for piece, _ in order.flush(stats):
        out += piece
    return out, stats


def test_in_order_duplicates_retransmissions_and_reordering() -> None:
    data = b"GET / HTTP/1.1\r\nHost: cam\r\n\r\n"
    a, b, c = data[:5], data[5:17], data[17:]
    assert feed_all([(100, a), (105, b), (117, c)])[0] == data
    # A mirror's copy of every segment, and a retransmission of the first.
    got, stats = feed_all([(100, a), (100, a), (105, b), (105, b), (100, a), (117, c), (117, c)])
    assert got == data and stats.duplicates == 4 and stats.holes == 0
    # Out of order after the SYN: the later segments wait for the first.
    got, stats = feed_all([(99, b""), (117, c), (105, b), (100, a)], syn_at=0)
    assert got == data and stats.holes == 0
    # Met in the middle (no SYN): the first segment seen is where the stream starts.
    got, stats = feed_all([(105, b), (117, c), (100, a)])
    assert got == b + c and stats.duplicates == 1


def test_overlap_keeps_the_first_copy() -> None:
    # The second segment repeats 3 bytes of the first with other content: the first copy wins.
    got, stats = feed_all([(0, b"abcdef"), (3, b"XYZghi")])
    assert got == b"abcdefghi" and stats.overlaps == 1


def test_a_hole_that_never_fills_is_skipped_and_counted() -> None:
    segments = [(0, b"head")] + [(100 + 10 * i, bytes([65 + i]) * 10) for i in range(MAX_HELD_SEGMENTS + 1)]
    got, stats = feed_all(segments)
    assert got.startswith(b"head" + b"A" * 10) and stats.holes == 1
    assert len(got) == 4 + 10 * (MAX_HELD_SEGMENTS + 1)


def test_sequence_numbers_wrap() -> None:
    top = (1 << 32) - 3
    got, _ = feed_all([(top, b"abc"), (0, b"def")])
    assert got == b"abcdef"
    assert seq_diff(0, top) == 3 and seq_diff(top, 0) == -3


def test_syn_takes_one_sequence_number() -> None:
    got, stats = feed_all([(999, b""), (1000, b"data")], syn_at=0)
    assert got == b"data" and stats.duplicates == 0
