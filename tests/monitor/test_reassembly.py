"""monitor.reassembly: each byte of a TCP direction once, in order."""

from __future__ import annotations

import pytest

from monitor import reassembly
from monitor.reassembly import MAX_HELD_SEGMENTS, SEGMENT_OVERHEAD, OrderStats, TcpOrder, seq_diff


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
    segments = [(0, b"head")] + [
        (100 + 10 * i, bytes([65 + i % 26]) * 10) for i in range(MAX_HELD_SEGMENTS + 1)
    ]
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


def test_bytes_held_by_all_flows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Flows sharing one engine's stats each leave a hole: past the shared budget, the flow that would hold
    # more skips its hole at once (counted) instead of holding.
    # Each held segment counts its payload and its overhead (one-byte segments cannot hold more than said).
    cost = 40 + SEGMENT_OVERHEAD
    monkeypatch.setattr(reassembly, "MAX_HELD_TOTAL", 2 * cost + 10)
    stats = OrderStats()
    flows = [TcpOrder() for _ in range(5)]
    delivered = []
    for order in flows:
        order.feed(0, False, b"head", 0, stats)
        delivered.append(order.feed(100, False, bytes(40), 1, stats))  # after a hole: held
        assert stats.held_bytes <= 3 * cost
    assert [bool(d) for d in delivered] == [False, False, True, True, True]
    assert stats.over_budget == 3 and stats.holes == 3 and stats.held_bytes == 2 * cost
    # A flow that ends gives its room back; the hole filling releases what waited.
    flows[0].drop(stats)
    assert stats.held_bytes == cost
    assert flows[1].feed(4, False, bytes(96), 2, stats) == [(bytes(96), 2), (bytes(40), 1)]
    assert stats.held_bytes == 0


def test_an_engine_gives_back_what_ended_flows_held() -> None:
    from lab.floods import as_batches, tcp_frame
    from monitor.engine import Engine
    from monitor.policy import SitePolicy
    from tests.enginerun import vendors

    engine = Engine(SitePolicy.default(), vendors())
    frames = []
    for i in range(20):  # 20 HTTP connections, each with a segment after a hole
        client = 0xC0A80100 + i
        c2s = (0x020000000002, 0x4419B6000001, client, 0x0A140040, 40000, 80)
        frames.append((1_000 + i, tcp_frame(*c2s, 0x02, 1, 0, b"")))
        frames.append((2_000 + i, tcp_frame(*c2s, 0x18, 500, 0, b"x" * 100)))
    for batch in as_batches(frames):
        engine.feed(batch)
    assert engine.analysis.order.held_bytes == 20 * (100 + SEGMENT_OVERHEAD)
    engine.finish()
    assert engine.analysis.order.held_bytes == 0 and engine.evictions()["tcp_held_segments"] == 0


def test_suspects_count_against_the_bytes_all_flows_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each flow's first data segment fails its checksum and waits as a suspect: one per direction of every
    # live flow, up to a frame's payload each, was held outside any bound. Past the shared budget an
    # unverified segment is delivered at once, as if verified (counted).
    cost = 40 + SEGMENT_OVERHEAD
    monkeypatch.setattr(reassembly, "MAX_HELD_TOTAL", 2 * cost + 10)
    stats = OrderStats()
    flows = [TcpOrder() for _ in range(4)]
    delivered = [order.feed(0, False, bytes(40), 1, stats, valid=False) for order in flows]
    assert delivered == [[], [], [(bytes(40), 1)], [(bytes(40), 1)]]
    assert stats.held_bytes == 2 * cost and stats.over_budget == 2
    # Confirmed (the sender goes on), replaced by a good copy, or the flow ends: the room is given back.
    assert flows[0].feed(40, False, b"next", 2, stats) == [(bytes(40), 1), (b"next", 2)]
    assert stats.held_bytes == cost
    flows[1].drop(stats)
    assert stats.held_bytes == 0
    order = TcpOrder()
    order.feed(0, False, b"evil", 3, stats, valid=False)
    assert stats.held_bytes == 4 + SEGMENT_OVERHEAD
    assert order.feed(0, False, b"good", 4, stats) == [(b"good", 4)] and stats.held_bytes == 0
