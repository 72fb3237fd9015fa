"""IP datagram reassembly, IPv4 and IPv6 (sans-I/O, bounded): fragments in, whole datagrams out.

An attacker who splits an HTTP request into IP fragments, or a camera whose DNS query or answer is larger
than the MTU, would otherwise show the analyzers only the first fragment's part of the datagram. The engine
hands every IP fragment (inside a tunnel or a remote mirror: the inner one) to a :class:`Defragmenter` in
capture order; a completed datagram comes back as one frame: the first fragment's bytes up to the end of its
IP header (a tunnel's outer headers kept as they were), with the total length, flags and checksum of an
unfragmented packet, then the whole payload. For IPv6 (RFC 8200 4.5): the first fragment's bytes up to its
fragment header (the IPv6 header and the extension headers before it), the fragment header taken out (the
header before it names what followed it) and the payload length set, then the whole fragmentable part.

Rules (those of Linux since 4.19, RFC 5722 for overlaps, RFC 6946 for IPv6 atomic fragments):

* Key: source, destination and identification, for IPv4 the protocol too, plus the link-layer ids camwatch
  sees (VLAN ids, MAC addresses) so that the routed copy of a datagram a mirror sees on two hops is
  reassembled as its own. IPv6's fragment header is found by walking the extension headers before it.
* An IPv6 atomic fragment (offset 0, no more fragments) is a whole datagram: it is not taken.
* A fragment whose bytes repeat bytes already held (a mirror's duplicate) is ignored; one whose bytes DIFFER
  from bytes held drops the datagram (which copy the receiver kept cannot be known) and is counted: the rest
  of that datagram's fragments then pass through as they did before reassembly (until its timeout).
* Bounds: ``max_datagrams`` pending (oldest evicted first), ``max_bytes`` held in all, a datagram at most
  65,535 bytes, ``timeout_ns`` of capture time after its first fragment (Linux's ``ipfrag_time``, 30 s).
* A datagram given up (timeout, eviction, conflict, oversize) releases its held FIRST fragment unchanged, so
  that its flow sees it as it did without reassembly; its later fragments are dropped (they carry no ports).

Time is the caller's: :meth:`Defragmenter.expire` is called with the running maximum capture time at each
position, so what is released where does not depend on where batches end.
"""

from __future__ import annotations

import bisect
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from monitor.decode import IPV6_EXT_HEADERS, IPV6_MAX_EXT

__all__ = ["DefragStats", "Defragmenter", "FragmentKey", "LinkIds", "Packet"]

MAX_DATAGRAMS: Final = 1024
MAX_BYTES: Final = 4 * 1024 * 1024
MAX_DATAGRAM: Final = 65_535
TIMEOUT_NS: Final = 30 * 1_000_000_000

_MF: Final = 0x2000
_DF: Final = 0x4000
# IPv6 extension headers that may come before the fragment header (RFC 8200 4.1): the ones the decoder walks
# (hop-by-hop, routing, destination options, mobility, HIP, shim6; AH, whose length counts 4-byte words).
_V6_FRAGMENT: Final = 44
_V6_AH: Final = 51
_V6_BEFORE: Final = frozenset(IPV6_EXT_HEADERS) - {_V6_FRAGMENT, _V6_AH}

# What the link layer says about a fragment: (VLAN outer, VLAN inner, source MAC, destination MAC).
LinkIds = tuple[int, int, int, int]
# (source and destination address bytes, protocol (IPv4; -1 for IPv6), identification, *LinkIds): the
# address bytes' length keeps IPv4 and IPv6 apart.
FragmentKey = tuple[bytes, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Packet:
    """A frame to put back into the capture: a completed datagram or a released first fragment."""

    frame: bytes
    ts_ns: int
    wirelen: int
    linktype: int


@dataclass(slots=True)
class DefragStats:
    reassembled: int = 0  # datagrams completed
    conflicts: int = 0  # datagrams dropped for an overlap whose bytes differ
    timeouts: int = 0  # datagrams given up after the timeout
    evicted: int = 0  # datagrams given up at the count or byte bound (oldest first)
    oversized: int = 0  # datagrams dropped for reaching past 65,535 bytes or past their own end
    released: int = 0  # first fragments put back unchanged (after any of the four above)


@dataclass(slots=True)
class _Datagram:
    deadline_ns: int
    starts: list[int] = field(default_factory=list)  # sorted, non-overlapping, non-adjacent pieces
    pieces: list[bytes] = field(default_factory=list)
    end: int = -1  # payload length, once the fragment with MF=0 has arrived
    first: Packet | None = None  # the first fragment as captured
    head: int = 0  # where the first fragment's fragmentable part starts in first.frame
    cut: int = 0  # IPv6: where its fragment header starts (0: IPv4)
    link: int = 0  # IPv6: where the next-header byte that names the fragment header is
    wirelen: int = 0  # the sum of the fragments' wire lengths
    l3: int = 0  # where the first fragment's IP header starts
    held: int = 0  # bytes counted against the byte bound
    dead: bool = False  # dropped: its fragments pass through until the deadline


class Defragmenter:
    """Bounded IPv4 and IPv6 reassembly. Feed fragments in capture order with :meth:`add`; call
    :meth:`expire` with the capture time before each one; :meth:`flush` at the end of input."""

    def __init__(
        self, max_datagrams: int = MAX_DATAGRAMS, max_bytes: int = MAX_BYTES, timeout_ns: int = TIMEOUT_NS
    ) -> None:
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout_ns = timeout_ns
        self.stats = DefragStats()
        self.held_bytes = 0
        # In arrival order: deadlines never decrease (each is the running max capture time plus the timeout).
        self._pending: OrderedDict[FragmentKey, _Datagram] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def next_deadline(self) -> int | None:
        """The earliest deadline of a pending datagram (None if none is pending)."""
        for dg in self._pending.values():
            return dg.deadline_ns
        return None

    def expire(self, now_ns: int) -> list[tuple[int, Packet]]:
        """Give up the datagrams whose deadline is before ``now_ns``: their first fragments, each with the
        deadline that released it, oldest first."""
        out: list[tuple[int, Packet]] = []
        pending = self._pending
        while pending:
            key, dg = next(iter(pending.items()))
            if dg.deadline_ns >= now_ns:
                break
            del pending[key]
            if not dg.dead:
                self.stats.timeouts += 1
            first = self._drop(dg)
            if first is not None:
                out.append((dg.deadline_ns, first))
        return out

    def flush(self) -> list[Packet]:
        """The end of input: every held first fragment, oldest first."""
        out = []
        for dg in self._pending.values():
            first = self._drop(dg)
            if first is not None:
                out.append(first)
        self._pending.clear()
        return out

    def add(
        self, link: LinkIds, frame: bytes, l3: int, ts_ns: int, now_ns: int, wirelen: int, linktype: int
    ) -> tuple[bool, list[Packet]]:
        """One IP fragment (``frame``: its captured bytes, the IPv4 or IPv6 header at ``l3``, captured whole;
        ``link``: what the link layer it came on says, part of its datagram's key).

        Returns (taken, packets): taken False means the fragment is not the defragmenter's (malformed, an
        IPv6 atomic fragment, or of a dropped datagram): the caller keeps it as it is. ``packets``: first
        fragments released (a conflict, an eviction) then the completed datagram, if this fragment completed
        one.
        """
        where = _place(frame, l3)
        if where is None:
            return False, []
        ids, head, stop_at, offset, more, cut, named_at = where
        key: FragmentKey = (*ids, *link)
        size = stop_at - head
        # What the rebuilt header adds to the datagram's length field: IPv4's total length counts its own
        # header; IPv6's payload length counts the extension headers before the fragment header.
        header = head - l3 if not cut else cut - l3 - 40
        dg = self._pending.get(key)
        if dg is not None and dg.dead:
            return False, []
        out: list[Packet] = []
        if dg is None:
            if len(self._pending) >= self.max_datagrams:
                self._evict_oldest(out, None)
            dg = _Datagram(deadline_ns=now_ns + self.timeout_ns)
            self._pending[key] = dg
        payload = frame[head:stop_at]
        stop = offset + size
        if header + stop > MAX_DATAGRAM or (dg.end >= 0 and (stop > dg.end or (not more and stop != dg.end))):
            self.stats.oversized += 1
            self._kill(dg, out)
            return True, out
        if not more and dg.starts and dg.starts[-1] + len(dg.pieces[-1]) > stop:
            self.stats.oversized += 1  # bytes held past the end this fragment declares
            self._kill(dg, out)
            return True, out
        merged = _merge(dg.starts, dg.pieces, offset, payload)
        if merged is None:
            self.stats.conflicts += 1
            self._kill(dg, out)
            return True, out
        grew = merged
        if not grew and (offset or dg.first is not None):
            return True, out  # a duplicate
        dg.wirelen += wirelen
        if not more:
            dg.end = stop
        if offset == 0 and dg.first is None:
            dg.first = Packet(frame, ts_ns, wirelen, linktype)
            dg.head, dg.cut, dg.link = head - l3, cut - l3 if cut else 0, named_at - l3 if cut else 0
            dg.l3 = l3
            grew += len(frame)
        dg.held += grew
        self.held_bytes += grew
        while self.held_bytes > self.max_bytes and self._evict_oldest(out, dg):
            pass
        if dg.end >= 0 and dg.first is not None and dg.starts == [0] and len(dg.pieces[0]) == dg.end:
            del self._pending[key]
            self.held_bytes -= dg.held
            self.stats.reassembled += 1
            out.append(
                Packet(
                    _datagram(dg, dg.first.frame, dg.pieces[0]),
                    ts_ns,
                    dg.wirelen,
                    linktype=dg.first.linktype,
                )
            )
        return True, out

    def _evict_oldest(self, out: list[Packet], keep: _Datagram | None) -> bool:
        for key, dg in self._pending.items():
            if dg is keep:
                continue
            del self._pending[key]
            self.stats.evicted += 1
            first = self._drop(dg)
            if first is not None:
                out.append(first)
            return True
        return False

    def _kill(self, dg: _Datagram, out: list[Packet]) -> None:
        """Drop what ``dg`` holds; it stays pending as dead until its deadline."""
        first = self._drop(dg)
        if first is not None:
            out.append(first)
        dg.dead = True

    def _drop(self, dg: _Datagram) -> Packet | None:
        self.held_bytes -= dg.held
        first = dg.first
        dg.held, dg.first, dg.starts, dg.pieces = 0, None, [], []
        if first is not None:
            self.stats.released += 1
        return first


def _merge(starts: list[int], pieces: list[bytes], offset: int, data: bytes) -> int | None:
    """Put ``data`` at ``offset`` into the sorted pieces, coalescing with the pieces it overlaps or touches.
    Returns the number of new bytes held, or None if an overlap's bytes differ (the pieces are left as they
    were)."""
    stop = offset + len(data)
    # The pieces that overlap or touch [offset, stop): from the last one starting at or before `offset`.
    i = bisect.bisect_right(starts, offset) - 1
    if i < 0 or starts[i] + len(pieces[i]) < offset:
        i += 1
    j = i
    while j < len(starts) and starts[j] <= stop:
        s, p = starts[j], pieces[j]
        lo, hi = max(s, offset), min(s + len(p), stop)
        if lo < hi and p[lo - s : hi - s] != data[lo - offset : hi - offset]:
            return None
        j += 1
    if i == j:
        starts.insert(i, offset)
        pieces.insert(i, data)
        return len(data)
    new_start = min(starts[i], offset)
    new_stop = max(starts[j - 1] + len(pieces[j - 1]), stop)
    buf = bytearray(new_stop - new_start)
    buf[offset - new_start : stop - new_start] = data
    old = 0
    for s, p in zip(starts[i:j], pieces[i:j], strict=True):
        buf[s - new_start : s - new_start + len(p)] = p
        old += len(p)
    starts[i:j] = [new_start]
    pieces[i:j] = [bytes(buf)]
    return len(buf) - old


def _place(frame: bytes, l3: int) -> tuple[tuple[bytes, int, int], int, int, int, bool, int, int] | None:
    """Which datagram a fragment is of and where its data goes: ((addresses, protocol, identification), data
    start and stop in ``frame``, offset in the datagram, more fragments, IPv6 fragment header start (0 for
    IPv4), the next-header byte naming it), or None if it is not a fragment camwatch can place (malformed,
    cut by the snap length, an IPv6 atomic fragment)."""
    if l3 + 20 > len(frame):
        return None
    version = frame[l3] >> 4
    if version == 4:
        ihl = (frame[l3] & 0x0F) * 4
        total, ident, flags = struct.unpack_from("!HHH", frame, l3 + 2)
        offset, more = (flags & 0x1FFF) * 8, bool(flags & _MF)
        head, stop, cut, link = l3 + ihl, l3 + total, 0, 0
        key = (frame[l3 + 12 : l3 + 20], frame[l3 + 9], ident)
        if ihl < 20:
            return None
    elif version == 6 and l3 + 40 <= len(frame):
        stop = l3 + 40 + struct.unpack_from("!H", frame, l3 + 4)[0]
        link, nh, cut = l3 + 6, frame[l3 + 6], l3 + 40
        for _ in range(IPV6_MAX_EXT):
            if nh == _V6_FRAGMENT:
                break
            if (nh not in _V6_BEFORE and nh != _V6_AH) or cut + 8 > len(frame):
                return None
            size = (frame[cut + 1] + 2) * 4 if nh == _V6_AH else (frame[cut + 1] + 1) * 8
            link, nh = cut, frame[cut]
            cut += size
        if nh != _V6_FRAGMENT or cut + 8 > min(stop, len(frame)):
            return None
        flags, ident = struct.unpack_from("!HI", frame, cut + 2)
        offset, more = flags & 0xFFF8, bool(flags & 1)
        head = cut + 8
        key = (frame[l3 + 8 : l3 + 40], -1, ident)
        if not offset and not more:
            return None  # atomic (RFC 6946): a whole datagram
    else:
        return None
    size = stop - head
    if size <= 0 or stop > len(frame) or (more and size % 8):
        return None
    return key, head, stop, offset, more, cut, link


def _datagram(dg: _Datagram, first: bytes, payload: bytes) -> bytes:
    """The first fragment's frame up to the end of its unfragmentable part, made an unfragmented packet, then
    ``payload``."""
    l3 = dg.l3
    if dg.cut:
        # IPv6: the header that named the fragment header now names what the fragment header named.
        head = bytearray(first[: l3 + dg.cut])
        head[l3 + dg.link] = first[l3 + dg.cut]
        struct.pack_into("!H", head, l3 + 4, dg.cut - 40 + len(payload))
        return bytes(head) + payload
    ihl = dg.head
    head = bytearray(first[: l3 + ihl])
    flags = struct.unpack_from("!H", head, l3 + 6)[0]
    struct.pack_into("!H", head, l3 + 2, ihl + len(payload))
    struct.pack_into("!H", head, l3 + 6, flags & _DF)
    struct.pack_into("!H", head, l3 + 10, 0)
    total = sum(struct.unpack_from(f"!{ihl // 2}H", head, l3))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", head, l3 + 10, ~total & 0xFFFF)
    return bytes(head) + payload
