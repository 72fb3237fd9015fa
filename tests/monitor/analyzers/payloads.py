"""L4 payloads of a capture, extracted with camwatch's own reader and decoder (for analyzer tests).

`udp_payloads(path, port)` and `tcp_payloads(path, port)` return one `Payload` per packet whose source
or destination port is `port` (every port when `port` is None). Payloads are cut at the end of the
datagram (UDP length) or of the IP packet, so Ethernet padding of short frames is not included.
`tcp_streams` concatenates each direction's segments in sequence order (retransmissions dropped) for
protocols framed over TCP, such as DNS with its 2-byte length prefix. `only_analyzer_errors` and
`print_table` are shared by the analyzer tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from monitor.analyzers import AnalyzerError
from monitor.decode import PROTO_TCP, PROTO_UDP, decode
from monitor.flows import addr_str
from monitor.pcapfile import iter_batches


class Payload(NamedTuple):
    """One packet's L4 payload with its endpoints."""

    ts_ns: int
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes


class Segment(NamedTuple):
    """One TCP segment: a `Payload` plus the fields needed to order a stream."""

    ts_ns: int
    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    seq: int
    flags: int


class _Raw(NamedTuple):
    ts_ns: int
    src: str
    dst: str
    sport: int
    dport: int
    packet: bytes
    l4_off: int
    payload_off: int
    ip_version: int
    ip_len: int
    proto: int
    fragment: bool


def _packets(path: Path, proto: int, port: int | None) -> Iterator[_Raw]:
    with path.open("rb") as stream:
        for batch in iter_batches(stream, str(path)):
            d = decode(batch)
            for i in range(len(batch)):
                if not d.ok[i] or int(d.proto[i]) != proto or int(d.payload_off[i]) < 0:
                    continue
                sport, dport = int(d.sport[i]), int(d.dport[i])
                if port is not None and port not in (sport, dport):
                    continue
                version = int(d.ip_version[i])
                yield _Raw(
                    ts_ns=int(d.ts_ns[i]),
                    src=addr_str(int(d.src_hi[i]), int(d.src_lo[i]), version),
                    dst=addr_str(int(d.dst_hi[i]), int(d.dst_lo[i]), version),
                    sport=sport,
                    dport=dport,
                    packet=batch.packet(i),
                    l4_off=int(d.l4_off[i]),
                    payload_off=int(d.payload_off[i]),
                    ip_version=version,
                    ip_len=int(d.ip_len[i]),
                    proto=proto,
                    fragment=bool(d.fragment[i]),
                )


def _ip_end(raw: _Raw) -> int:
    """End of the IP packet inside the frame (the decoder gives the IP length, not its start)."""
    pkt, l4 = raw.packet, raw.l4_off
    if raw.ip_version == 4:
        # The IPv4 header ends at the L4 header: find the IHL that matches the version nibble,
        # the protocol and the total length the decoder read.
        for ihl in range(5, 16):
            start = l4 - 4 * ihl
            if (
                start >= 0
                and pkt[start] == 0x40 | ihl
                and pkt[start + 9] == raw.proto
                and int.from_bytes(pkt[start + 2 : start + 4], "big") == raw.ip_len
            ):
                return min(len(pkt), start + raw.ip_len)
    else:
        for start in range(l4 - 40, -1, -1):
            if pkt[start] >> 4 == 6 and int.from_bytes(pkt[start + 4 : start + 6], "big") == raw.ip_len - 40:
                return min(len(pkt), start + raw.ip_len)
    return len(pkt)


def udp_payloads(path: Path, port: int | None = None) -> list[Payload]:
    """UDP payloads to or from `port`, in capture order. Fragmented datagrams are left out."""
    out: list[Payload] = []
    for raw in _packets(path, PROTO_UDP, port):
        if raw.fragment:
            continue  # the first fragment holds only part of the datagram; reassembly is not ours here
        udp_len = int.from_bytes(raw.packet[raw.l4_off + 4 : raw.l4_off + 6], "big")
        end = min(len(raw.packet), raw.l4_off + udp_len) if udp_len >= 8 else _ip_end(raw)
        payload = raw.packet[raw.payload_off : end]
        out.append(Payload(raw.ts_ns, raw.src, raw.dst, raw.sport, raw.dport, payload))
    return out


def udp_fragmented(path: Path, port: int | None = None) -> int:
    """How many first fragments of UDP datagrams to or from `port` `udp_payloads` left out."""
    return sum(1 for raw in _packets(path, PROTO_UDP, port) if raw.fragment)


def udp_first_fragments(path: Path, port: int | None = None) -> list[Payload]:
    """The first fragments `udp_payloads` left out, each with the start of its datagram's payload (what
    the fragment holds after the UDP header: enough for a DNS header, not the whole message)."""
    return [
        Payload(raw.ts_ns, raw.src, raw.dst, raw.sport, raw.dport, raw.packet[raw.payload_off : _ip_end(raw)])
        for raw in _packets(path, PROTO_UDP, port)
        if raw.fragment
    ]


def tcp_payloads(path: Path, port: int | None = None) -> list[Segment]:
    """TCP segments to or from `port` (empty ones included), in capture order."""
    out: list[Segment] = []
    for raw in _packets(path, PROTO_TCP, port):
        seq = int.from_bytes(raw.packet[raw.l4_off + 4 : raw.l4_off + 8], "big")
        flags = raw.packet[raw.l4_off + 13]
        payload = raw.packet[raw.payload_off : max(raw.payload_off, _ip_end(raw))]
        out.append(Segment(raw.ts_ns, raw.src, raw.dst, raw.sport, raw.dport, payload, seq, flags))
    return out


StreamKey = tuple[str, int, str, int]


def tcp_streams(path: Path, port: int | None = None) -> dict[StreamKey, bytes]:
    """Each direction's bytes keyed (src, sport, dst, dport) in sequence order; overlaps keep the first."""
    by_dir: dict[StreamKey, list[Segment]] = {}
    for seg in tcp_payloads(path, port):
        by_dir.setdefault((seg.src, seg.sport, seg.dst, seg.dport), []).append(seg)
    streams: dict[StreamKey, bytes] = {}
    for key, segs in by_dir.items():
        syn = next((s for s in segs if s.flags & 0x02), None)
        base = (syn.seq + 1) if syn is not None else segs[0].seq
        buf = bytearray()
        for seg in sorted(segs, key=lambda s: (s.seq - base) & 0xFFFFFFFF):
            if not seg.payload:
                continue
            rel = (seg.seq - base) & 0xFFFFFFFF
            if rel + len(seg.payload) <= len(buf):
                continue  # retransmission of bytes already taken
            if rel > len(buf):
                break  # a gap: the capture missed a segment; stop rather than splice
            buf += seg.payload[len(buf) - rel :]
        streams[key] = bytes(buf)
    return streams


def only_analyzer_errors(fn: Callable[[bytes], object], data: bytes) -> None:
    """Call a parser; AnalyzerError is an accepted outcome, any other exception fails the test."""
    with contextlib.suppress(AnalyzerError):
        fn(data)


def print_table(
    capsys: pytest.CaptureFixture[str], title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]
) -> None:
    """Print an agreement table to the terminal, with or without `-s`."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    with capsys.disabled():
        print(f"\n{title}")
        for r in [header, *rows]:
            print("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
