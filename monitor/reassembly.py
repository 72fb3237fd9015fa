"""Putting the analysed packets of a flow back in order, once each: TCP by sequence number, duplicate
datagrams by content.

A mirror port delivers frames twice (both directions of a port copied), out of order, retransmitted, cut
(a mirror that drops). A stream parser (HTTP, RTSP, TLS) fed a segment twice, or a later one first, loses
its place. :class:`TcpOrder` hands each byte of one direction to the analyzers once, in sequence order:

- a segment entirely before what was delivered is a duplicate or a retransmission: dropped;
- a segment overlapping it is trimmed to its new bytes (the first copy wins, as most IDSs do: a second
  copy with other content is counted, not believed);
- a segment after a hole waits (a few segments, a few kB) for the hole to fill; when the hole outlives
  that room it is skipped and counted: the stream goes on from what there is;
- a next segment whose TCP checksum does not verify (the analysis says so) waits as a *suspect*: a copy of
  those bytes whose checksum does verify replaces it (the receiver dropped the bad one: an insertion
  evasion), and it is delivered once the sender goes on past it or the receiver acknowledges it (a checksum
  left to the NIC on frames the capturing host sent is common: such traffic is delayed a packet, not lost).
  A suspect counts against the bytes all flows hold (``MAX_HELD_TOTAL``); past it, an unverified segment is
  delivered at once, as if verified (counted): one suspect per direction of every live flow would otherwise
  hold up to a frame's payload each, outside any bound.

Only the few packets the flow table selects for analysis go through here, never the video.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

_MOD = 1 << 32
_HALF = 1 << 31
# Out-of-order room per direction. A receiver queues far more (Linux: up to its receive buffer), and an
# evasion tool sends a request as one-byte segments in reverse order (fragroute's "tcp_seg 1" with "order
# reverse"): a smaller room would skip the hole the first segment leaves and read the request from its middle.
MAX_HELD_SEGMENTS = 1024
MAX_HELD_BYTES = 256 * 1024
# What a held segment costs beyond its payload (its tuple, bytes object and integers), counted with the
# payload against the bounds, so that one-byte segments cannot hold far more memory than the bounds say.
SEGMENT_OVERHEAD = 128
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
    # Bytes held behind holes and as suspects now, by every flow, with SEGMENT_OVERHEAD each (MAX_HELD_TOTAL).
    held_bytes: int = 0
    over_budget: int = 0  # holes skipped, or suspects delivered, at once: MAX_HELD_TOTAL bytes were held
    bad_checksums: int = 0  # copies with a bad TCP checksum dropped for a good copy of the same bytes


class TcpOrder:
    """One direction of a TCP connection, for the analyzers."""

    __slots__ = ("_held", "_held_bytes", "next", "suspect")

    def __init__(self) -> None:
        self.next: int | None = None  # the sequence number of the next byte to deliver
        # (seq, payload, ts_ns) after a hole, in order; None while nothing was ever held (most connections).
        self._held: list[tuple[int, bytes, int]] | None = None
        self._held_bytes = 0
        # The next segment, not delivered yet because its TCP checksum did not verify: (seq, payload, ts_ns).
        # Never at the same time as held segments (it is only taken when nothing waits).
        self.suspect: tuple[int, bytes, int] | None = None

    def feed(
        self, seq: int, syn: bool, payload: bytes, ts: int, stats: OrderStats, valid: bool = True
    ) -> list[tuple[bytes, int]]:
        """The payloads (with their capture times) that are now deliverable in order, possibly none.
        ``valid``: whether the segment's TCP checksum verified (or could not be checked)."""
        if syn:
            seq = (seq + 1) % _MOD  # a SYN takes one sequence number before the data
        if self.next is None:
            self.next = seq  # a session met in the middle starts where it is met
        if self.suspect is not None:
            return self._settle(seq, payload, ts, stats, valid)
        if not payload:
            return []  # a SYN or a bare ACK: it only says where the data starts
        if seq == self.next and not self._held:
            if not valid and stats.held_bytes + len(payload) + SEGMENT_OVERHEAD <= MAX_HELD_TOTAL:
                self._suspect(seq, payload, ts, stats)  # delivered when confirmed, replaced by a good copy
                return []
            if not valid:
                stats.over_budget += 1
            self.next = (seq + len(payload)) % _MOD  # in order, nothing waiting: the usual case
            return [(payload, ts)]
        ahead = seq_diff(seq, self.next)
        if ahead > 0:
            self._hold(seq, payload, ts, stats)
            if len(self._held or ()) > MAX_HELD_SEGMENTS or self._held_bytes > MAX_HELD_BYTES:
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

    def _settle(
        self, seq: int, payload: bytes, ts: int, stats: OrderStats, valid: bool
    ) -> list[tuple[bytes, int]]:
        """A segment arrived while a suspect waits at the front."""
        assert self.suspect is not None
        s_seq, s_payload, _ = self.suspect
        s_end = (s_seq + len(s_payload)) % _MOD
        if seq_diff(seq, s_end) >= 0:
            # The sender went on past it (data, or a bare ACK/FIN after it) and no other copy came: it was the
            # one the receiver took (a checksum the NIC was to fill in).
            return [*self.confirm(s_end, stats), *self.feed(seq, False, payload, ts, stats, valid)]
        if not payload:
            return []
        if valid and seq_diff((seq + len(payload)) % _MOD, s_seq) > 0:
            # A copy of (some of) those bytes whose checksum holds: the receiver dropped the suspect and took
            # this one (a segment inserted with a bad checksum, so that a monitor believes other bytes).
            self._unsuspect(stats)
            stats.bad_checksums += 1
            return self.feed(seq, False, payload, ts, stats, valid)
        stats.duplicates += 1  # an old retransmission, or a second unverified copy: the suspect waits
        return []

    def confirm(self, ack: int, stats: OrderStats) -> list[tuple[bytes, int]]:
        """The receiver acknowledged up to ``ack``: a suspect it covers was taken; deliver it."""
        suspect = self.suspect
        if suspect is None:
            return []
        s_seq, s_payload, s_ts = suspect
        end = (s_seq + len(s_payload)) % _MOD
        if seq_diff(ack, end) < 0:
            return []
        self._unsuspect(stats)
        self.next = end
        return [(s_payload, s_ts)]

    def skip(self, nbytes: int) -> int:
        """The next ``nbytes`` of the stream are not needed (a body the analyzer skips): the stream goes on
        after them. Only when nothing waits (see :attr:`waiting`); returns the new :attr:`next`."""
        assert self.next is not None and not self.waiting
        self.next = (self.next + nbytes) % _MOD
        return self.next

    def _suspect(self, seq: int, payload: bytes, ts: int, stats: OrderStats) -> None:
        self.suspect = (seq, payload, ts)
        cost = len(payload) + SEGMENT_OVERHEAD
        self._held_bytes += cost
        stats.held_bytes += cost

    def _unsuspect(self, stats: OrderStats) -> None:
        assert self.suspect is not None
        cost = len(self.suspect[1]) + SEGMENT_OVERHEAD
        self._held_bytes -= cost
        stats.held_bytes -= cost
        self.suspect = None

    def _hold(self, seq: int, payload: bytes, ts: int, stats: OrderStats) -> None:
        held = self._held
        if held is None:
            held = self._held = []
        start = self.next
        assert start is not None
        # Ordered by distance from the next expected byte (sequence numbers wrap); the same start and no more
        # bytes than a segment held is a duplicate.
        ahead = seq_diff(seq, start)
        i = bisect.bisect_left(held, ahead, key=lambda h: seq_diff(h[0], start))
        if i < len(held) and held[i][0] == seq and len(payload) <= len(held[i][1]):
            stats.duplicates += 1
            return
        held.insert(i, (seq, payload, ts))
        cost = len(payload) + SEGMENT_OVERHEAD
        self._held_bytes += cost
        stats.held_bytes += cost

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
            self._held_bytes -= len(payload) + SEGMENT_OVERHEAD
            stats.held_bytes -= len(payload) + SEGMENT_OVERHEAD
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
        assert self._held
        self.next = self._held[0][0]
        return self._drain(stats)

    @property
    def waiting(self) -> bool:
        """Segments wait behind a hole, or a suspect waits to be confirmed."""
        return bool(self._held) or self.suspect is not None

    def drop(self, stats: OrderStats) -> None:
        """Forget what is held (the flow ended): it no longer counts against MAX_HELD_TOTAL."""
        stats.held_bytes -= self._held_bytes
        self._held_bytes = 0
        self._held = None
        self.suspect = None

    def flush(self, stats: OrderStats) -> list[tuple[bytes, int]]:
        """Whatever waits behind a hole, delivered anyway (the analyzers stop reading this flow)."""
        if self.suspect is not None:
            return self.confirm((self.suspect[0] + len(self.suspect[1])) % _MOD, stats)
        if not self._held:
            return []
        return self._release(stats)
