"""Putting the analysed packets of a flow back in order, once each: TCP by sequence number, duplicate
datagrams by content.

A mirror port delivers frames twice (both directions of a port copied), out of order, retransmitted, cut
(a mirror that drops). A stream parser (HTTP, RTSP, TLS) fed a segment twice, or a later one first, loses
its place. :class:`TcpOrder` hands each byte of one direction to the analyzers once, in sequence order:

- a segment entirely before what was delivered is a duplicate or a retransmission: dropped;
- a segment overlapping it is trimmed to its new bytes (the first copy wins, as most IDSs do: a second
  copy with other content is counted, not believed);
- a segment after a hole waits (a few segments, a few kB) for the hole to fill; when the hole outlives
  that room it is skipped and counted: the stream goes on from what there is.

Only the few packets the flow table selects for analysis go through here, never the video.
"""

from __future__ import annotations

from dataclasses import dataclass

_MOD = 1 << 32
_HALF = 1 << 31
MAX_HELD_SEGMENTS = 16
MAX_HELD_BYTES = 64 * 1024
# Bytes held behind holes by all the flows that share one OrderStats (one engine): a flood of flows that
# each leave a hole would otherwise hold up to the per-direction room in every live flow (200,000 flows:
# gigabytes). Beyond it the hole that makes a flow hold more is skipped at once, and counted.
MAX_HELD_TOTAL = 16 * 1024 * 1024


def seq_diff(a: int, b: int) -> int:
    """``a - b`` in sequence space (RFC 1982 serial arithmetic on 32 bits), as a signed integer."""
    d = (a - b) % _MOD
    return d - _MOD if d >= _HALF else d


@dataclass(slots=True)
class OrderStats:
    duplicates: int = 0  # segments or datagrams seen before (mirror copies, retransmissions)
    overlaps: int = 0  # segments that repeated part of what was delivered (trimmed)
    holes: int = 0  # gaps never filled (lost by the mirror): bytes the analyzers did not see
    held_bytes: int = 0  # bytes held behind holes now, by every flow (bounded by MAX_HELD_TOTAL)
    over_budget: int = 0  # holes skipped at once because MAX_HELD_TOTAL bytes were held


class TcpOrder:
    """One direction of a TCP connection, for the analyzers."""

    __slots__ = ("_held", "_held_bytes", "next")

    def __init__(self) -> None:
        self.next: int | None = None  # the sequence number of the next byte to deliver
        self._held: list[tuple[int, bytes, int]] = []  # (seq, payload, ts_ns) after a hole, in order
        self._held_bytes = 0

    def feed(
        self, seq: int, syn: bool, payload: bytes, ts: int, stats: OrderStats
    ) -> list[tuple[bytes, int]]:
        """The payloads (with their capture times) that are now deliverable in order, possibly none."""
        if syn:
            seq = (seq + 1) % _MOD  # a SYN takes one sequence number before the data
        if self.next is None:
            self.next = seq  # a session met in the middle starts where it is met
        if not payload:
            return []  # a SYN or a bare ACK: it only says where the data starts
        if seq == self.next and not self._held:
            self.next = (seq + len(payload)) % _MOD  # in order, nothing waiting: the usual case
            return [(payload, ts)]
        ahead = seq_diff(seq, self.next)
        if ahead > 0:
            self._hold(seq, payload, ts, stats)
            if len(self._held) > MAX_HELD_SEGMENTS or self._held_bytes > MAX_HELD_BYTES:
                return self._release(stats)
            if stats.held_bytes > MAX_HELD_TOTAL:
                stats.over_budget += 1
                return self._release(stats)
            return []
        out: list[tuple[bytes, int]] = []
        if -ahead >= len(payload):
            stats.duplicates += 1
            return out
        if ahead < 0:
            stats.overlaps += 1
            payload = payload[-ahead:]
        out.append((payload, ts))
        self.next = (self.next + len(payload)) % _MOD
        out.extend(self._drain(stats))
        return out

    def _hold(self, seq: int, payload: bytes, ts: int, stats: OrderStats) -> None:
        held = self._held
        for i, (s, p, _) in enumerate(held):
            d = seq_diff(seq, s)
            if d == 0 and len(payload) <= len(p):
                stats.duplicates += 1
                return
            if d < 0:
                held.insert(i, (seq, payload, ts))
                break
        else:
            held.append((seq, payload, ts))
        self._held_bytes += len(payload)
        stats.held_bytes += len(payload)

    def _drain(self, stats: OrderStats) -> list[tuple[bytes, int]]:
        """Held segments that follow what was delivered."""
        out: list[tuple[bytes, int]] = []
        held = self._held
        while held and self.next is not None:
            seq, payload, ts = held[0]
            ahead = seq_diff(seq, self.next)
            if ahead > 0:
                break
            held.pop(0)
            self._held_bytes -= len(payload)
            stats.held_bytes -= len(payload)
            if -ahead >= len(payload):
                stats.duplicates += 1
                continue
            if ahead < 0:
                stats.overlaps += 1
                payload = payload[-ahead:]
            out.append((payload, ts))
            self.next = (self.next + len(payload)) % _MOD
        return out

    def _release(self, stats: OrderStats) -> list[tuple[bytes, int]]:
        """The hole will not fill in the room there is: skip it and go on from the first held segment."""
        stats.holes += 1
        self.next = self._held[0][0]
        return self._drain(stats)

    @property
    def waiting(self) -> bool:
        """Segments wait behind a hole."""
        return bool(self._held)

    def drop(self, stats: OrderStats) -> None:
        """Forget what is held (the flow ended): it no longer counts against MAX_HELD_TOTAL."""
        stats.held_bytes -= self._held_bytes
        self._held_bytes = 0
        self._held = []

    def flush(self, stats: OrderStats) -> list[tuple[bytes, int]]:
        """Whatever waits behind a hole, delivered anyway (the analyzers stop reading this flow)."""
        if not self._held:
            return []
        return self._release(stats)
