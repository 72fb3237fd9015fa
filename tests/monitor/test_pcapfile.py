"""Tests for monitor.pcapfile (parser) and monitor.pcapwrite (writers)."""

from __future__ import annotations

import io
import itertools
import logging
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.pcapfile import (
    MAX_BLOCK,
    MAX_WIRELEN,
    CaptureError,
    CaptureParser,
    PacketBatch,
    TruncatedCaptureError,
    iter_batches,
)
from monitor.pcapwrite import (
    PcapWriteError,
    PcapWriter,
    pcap_bytes,
    pcapng_block,
    pcapng_bytes,
    pcapng_epb,
    pcapng_idb,
    pcapng_option,
    pcapng_shb,
    pcapng_spb,
)

INT64_MAX = (1 << 63) - 1
NS = 10**9
CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"

# (frame, wirelen, ts_ns, linktype) of one packet
Packet = tuple[bytes, int, int, int]


def corpus_path(rel: str) -> Path:
    """A file of the third-party capture corpus (tests/data/corpus, see its MANIFEST.md)."""
    path = CORPUS / rel
    assert path.is_file(), f"corpus file missing: {path}"
    return path


def packets_of(batches: Iterable[PacketBatch]) -> list[Packet]:
    return [
        (b.packet(i), int(b.wirelen[i]), int(b.ts_ns[i]), int(b.linktype[i]))
        for b in batches
        for i in range(len(b))
    ]


def parse_all(data: bytes, name: str = "test.pcap", batch_size: int = 65536) -> list[PacketBatch]:
    parser = CaptureParser(name, batch_size)
    return parser.feed(data) + parser.flush()


def parse_chunked(data: bytes, cuts: Sequence[int], batch_size: int) -> tuple[list[PacketBatch], str | None]:
    """Feed ``data`` split at ``cuts``; return every batch delivered and the error text, if any."""
    parser = CaptureParser("chunked", batch_size)
    out: list[PacketBatch] = []
    bounds = [0, *sorted(set(cuts)), len(data)]
    try:
        for lo, hi in itertools.pairwise(bounds):
            out += parser.feed(data[lo:hi])
        out += parser.flush()
    except CaptureError as exc:
        return out + exc.batches, str(exc)
    return out, None


def drain(stream_bytes: bytes, name: str, **kw: int) -> tuple[list[PacketBatch], CaptureError | None]:
    """Run iter_batches, keeping what it yielded before raising."""
    got: list[PacketBatch] = []
    try:
        for batch in iter_batches(io.BytesIO(stream_bytes), name, **kw):
            got.append(batch)
    except CaptureError as exc:
        return got, exc
    return got, None


def frames(n: int, seed: int = 0, max_len: int = 120) -> list[bytes]:
    rnd = random.Random(seed)
    return [bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, max_len))) for _ in range(n)]


# ---------------------------------------------------------------- real captures vs scapy


def scapy_packets(path: Path) -> list[Packet]:
    """Independent reference: scapy's raw readers, timestamps converted with exact integer math."""
    from scapy.utils import RawPcapNgReader, RawPcapReader

    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    out: list[Packet] = []
    if path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a":
        with RawPcapNgReader(str(path)) as ng:
            meta: Any
            for frame, meta in ng:
                ts = ((meta.tshigh << 32) | meta.tslow) * NS // meta.tsresol
                out.append((frame, meta.wirelen, min(ts, INT64_MAX), meta.linktype))
    else:
        with RawPcapReader(str(path)) as pc:
            mul = 1 if pc.nano else 1000
            for frame, meta in pc:
                out.append((frame, meta.wirelen, meta.sec * NS + meta.usec * mul, pc.linktype & 0xFFFF))
    return out


CROSS_CHECKED = [
    "pcaps/zeek/wikipedia.pcap",  # pcap, Ethernet
    "pcaps/ndpi/bjnp.pcap",  # pcap, raw IP (link type 101)
    "pcaps/nfstream/coap_mqtt.pcap",  # 8516 packets: several batches
    "pcaps/zeek/pcapng-multi-interface.pcapng",  # 2 interfaces: ns and µs resolution
    "pcaps/nfstream/dhcp_big_endian.pcapng",  # big-endian pcapng
    "pcaps/nfstream/dhcp_little_endian.pcapng",
    "pcaps/ndpi/hls.pcapng",  # pcapng, raw IP
    "pcaps/ndpi/http.pcapng",  # has an Interface Statistics Block to skip
    "pcaps/ndpi/stun_signal.pcapng",  # ns resolution
]


@pytest.mark.parametrize("rel", CROSS_CHECKED)
def test_real_capture_matches_scapy(rel: str) -> None:
    path = corpus_path(rel)
    data = path.read_bytes()
    expected = scapy_packets(path)
    assert expected
    assert packets_of(parse_all(data, rel, batch_size=1000)) == expected
    # the same through iter_batches with odd chunk sizes (records straddle every chunk boundary)
    got, err = drain(data, rel, batch_size=333, chunk_size=4093)
    assert err is None
    assert packets_of(got) == expected
    assert all(len(b) == 333 for b in got[:-1])


def all_corpus_captures() -> list[str]:
    root = CORPUS / "pcaps"
    return sorted(str(p.relative_to(CORPUS)) for p in root.rglob("*") if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("rel", all_corpus_captures())
def test_every_corpus_capture_parses(rel: str) -> None:
    path = corpus_path(rel)
    assert packets_of(parse_all(path.read_bytes(), rel)) == scapy_packets(path)


def test_multi_interface_pcapng() -> None:
    batches = parse_all(corpus_path("pcaps/zeek/pcapng-multi-interface.pcapng").read_bytes())
    pkts = packets_of(batches)
    assert len(pkts) == 6
    ts = [p[2] for p in pkts]
    # interface 0 has if_tsresol 9 (ns), interface 1 the default µs
    assert [t % 1000 != 0 for t in ts] == [True, True, False, False, False, False]
    assert ts[2:] == sorted(ts[2:])


def test_big_endian_pcapng_equals_little_endian_twin() -> None:
    be = CaptureParser("be")
    be_pkts = packets_of(
        be.feed(corpus_path("pcaps/nfstream/dhcp_big_endian.pcapng").read_bytes()) + be.flush()
    )
    le_pkts = packets_of(parse_all(corpus_path("pcaps/nfstream/dhcp_little_endian.pcapng").read_bytes()))
    assert be_pkts == le_pkts
    assert [p[1] for p in be_pkts] == [314, 342, 314, 342]
    # the writer stored a double's bit pattern (~year 150000): clamped, not rejected
    assert be.ts_clamped == 4
    assert all(p[2] == INT64_MAX for p in be_pkts)


# ---------------------------------------------------------------- pcap round trips


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_round_trip(nanosecond: bool, big_endian: bool) -> None:
    payloads = frames(50, seed=1, max_len=200)
    rnd = random.Random(2)
    stamps = sorted(rnd.randrange(1_600_000_000 * NS, 1_800_000_000 * NS) for _ in payloads)
    items: list[tuple[int, bytes, int]] = [
        (t, f, len(f) + rnd.choice([0, 0, 4, 1000])) for t, f in zip(stamps, payloads, strict=True)
    ]
    # link-type field with FCS bits set (bit 28 "F" and a 4-byte FCS length): the parser keeps the low 16 bits
    linktype_field = 113 | (1 << 28) | (2 << 29)
    data = pcap_bytes(items, linktype_field, nanosecond=nanosecond, big_endian=big_endian, snaplen=150)
    got = packets_of(parse_all(data))
    expected = [(f[:150], w, t if nanosecond else t // 1000 * 1000, 113) for t, f, w in items]
    assert got == expected


@pytest.mark.parametrize(
    ("nanosecond", "big_endian", "magic"),
    [
        (False, False, "d4c3b2a1"),
        (False, True, "a1b2c3d4"),
        (True, False, "4d3cb2a1"),
        (True, True, "a1b23c4d"),
    ],
)
def test_pcap_writer_magics(nanosecond: bool, big_endian: bool, magic: str) -> None:
    writer = PcapWriter(1, nanosecond=nanosecond, big_endian=big_endian)
    header = writer.header()
    assert header[:4].hex() == magic
    assert len(header) == 24
    rec = writer.record(1_700_000_000_123_456_789, b"abc", 60)
    order = ">" if big_endian else "<"
    assert struct.unpack(order + "IIII", rec[:16]) == (
        1_700_000_000,
        123_456_789 if nanosecond else 123_456,
        3,
        60,
    )
    assert rec[16:] == b"abc"


def test_pcap_writer_rejects_unrepresentable_values() -> None:
    writer = PcapWriter()
    with pytest.raises(PcapWriteError):
        writer.record(-1, b"x")
    with pytest.raises(PcapWriteError):
        writer.record((1 << 32) * NS, b"x")
    with pytest.raises(PcapWriteError):
        pcapng_bytes([(1, 6)], [(1, 0, b"x")])


def test_empty_pcap_has_no_packets() -> None:
    parser = CaptureParser()
    assert parser.feed(pcap_bytes([])) == []
    assert parser.flush() == []
    assert parser.packets == 0
    assert parser.offset == 24


# ---------------------------------------------------------------- pcapng round trips and block kinds


@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_round_trip_two_interfaces(big_endian: bool) -> None:
    interfaces = [(1, 6), (113, 9)]  # Ethernet in µs, Linux SLL in ns
    payloads = frames(40, seed=3)
    rnd = random.Random(4)
    items = [
        (i % 2, rnd.randrange(1_700_000_000 * NS, 1_700_100_000 * NS), f) for i, f in enumerate(payloads)
    ]
    data = pcapng_bytes(interfaces, items, big_endian=big_endian)
    expected = [(f, len(f), t if i else t // 1000 * 1000, interfaces[i][0]) for i, t, f in items]
    assert packets_of(parse_all(data)) == expected


def test_pcapng_with_thousands_of_interfaces_keeps_each_link_type() -> None:
    # Interface blocks interleaved with packets (each packet on the newest interface, link types cycling):
    # the interface table grows block by block and every packet keeps its own interface's link type.
    interfaces = [((1, 113, 276)[i % 3], 9) for i in range(3000)]
    items = [(i, NS + i, bytes([i % 256]) * 20) for i in range(len(interfaces))]
    data = pcapng_bytes(interfaces, items)
    interleaved = pcapng_shb() + b"".join(
        pcapng_idb(lt, tsresol=9) + pcapng_epb(i, ts, frame)
        for (lt, _), (i, ts, frame) in zip(interfaces, items, strict=True)
    )
    for blob in (data, interleaved):
        pkts = packets_of(parse_all(blob))
        assert [p[3] for p in pkts] == [lt for lt, _ in interfaces]
        assert [p[2] for p in pkts] == [ts for _, ts, _ in items]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_impossible_original_length_is_counted_as_captured(kind: str) -> None:
    frames_ = [(NS + i, bytes(60), wl) for i, wl in enumerate((0xFFFFFFFF, 60, MAX_WIRELEN + 1, 65_000))]
    if kind == "pcap":
        data = pcap_bytes(frames_)
    else:
        data = pcapng_bytes([(1, 9)], [(0, ts, f, wl) for ts, f, wl in frames_])
    parser = CaptureParser("odd")
    batches = [*parser.feed(data), *parser.flush()]
    # A GRO super-frame (65,000 on the wire, 60 captured) is believed; 4 GiB and 1 MiB + 1 are not.
    assert [p[1] for p in packets_of(batches)] == [60, 60, 60, 65_000]
    assert parser.wirelen_clamped == 2


def test_pcapng_wirelen_item() -> None:
    data = pcapng_bytes([(1, 9)], [(0, 5, b"\x01\x02", 1514)])
    assert packets_of(parse_all(data)) == [(b"\x01\x02", 1514, 5, 1)]


def test_power_of_two_resolution() -> None:
    raw = (1_700_000_000 << 20) + 123_457  # 2^-20 s units
    data = pcapng_shb() + pcapng_idb(1, tsresol=0x80 | 20) + pcapng_epb(0, raw, b"frame")
    (pkt,) = packets_of(parse_all(data))
    assert pkt[2] == raw * NS >> 20 == 1_700_000_000_117_737_770  # 123457 / 2**20 s = 117737770.08 ns


RESOLUTIONS = [
    0,
    1,
    3,
    6,
    9,
    10,
    12,
    19,
    28,
    30,
    127,
    0x80,
    0x80 | 1,
    0x80 | 20,
    0x80 | 34,
    0x80 | 35,
    0x80 | 64,
]


@pytest.mark.parametrize("tsoffset", [0, -3600, 86_400 * 365])
@pytest.mark.parametrize("tsresol", RESOLUTIONS)
def test_timestamp_conversion_is_exact(tsresol: int, tsoffset: int) -> None:
    units = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol
    rnd = random.Random(tsresol)
    raws = [
        0,
        1,
        units - 1,
        units,
        1_700_000_000 * units + rnd.randrange(units),
        rnd.getrandbits(64),
        (1 << 64) - 1,
    ]
    raws = [r for r in raws if 0 <= r < 1 << 64]
    blocks = [pcapng_shb(), pcapng_idb(1, tsresol=tsresol, tsoffset=tsoffset)]
    blocks += [pcapng_epb(0, r, b"") for r in raws]
    # the same packets once more through the per-block path (obsolete Packet Block, type 2)
    blocks += [pcapng_block(2, struct.pack("<HHIIII", 0, 0, r >> 32, r & 0xFFFFFFFF, 0, 0)) for r in raws]
    parser = CaptureParser()
    got = [p[2] for p in packets_of(parser.feed(b"".join(blocks)) + parser.flush())]
    # More units a second than 64 bits count (10^20, 2^64 and up) puts every time in 1970's first seconds:
    # such a resolution is replaced by the default (microseconds) and counted.
    unusable = units >= 1 << 64
    expected = [min(r * NS // (10**6 if unusable else units) + tsoffset * NS, INT64_MAX) for r in raws]
    assert got == expected * 2
    assert parser.ts_clamped == 2 * sum(e == INT64_MAX for e in expected)
    assert parser.tsresol_rejected == int(unusable)


@pytest.mark.parametrize(("tsresol", "shown"), [(0xFF, "2^-127"), (127, "10^-127"), (20, "10^-20")])
def test_a_resolution_beyond_64_bits_is_replaced_with_a_warning(
    tsresol: int, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    """realtraffic's a04/a05: if_tsresol 2^-127 and 10^-127 gave silent 1970 timestamps."""
    t = 1_700_000_000 * 10**6 + 5  # microseconds
    data = pcapng_shb() + pcapng_idb(1, tsresol=tsresol) + pcapng_epb(0, t, b"x")
    parser = CaptureParser("res.pcapng")
    with caplog.at_level("WARNING"):
        got = packets_of(parser.feed(data) + parser.flush())
    assert [p[2] for p in got] == [t * 1000]
    assert parser.tsresol_rejected == 1
    assert f"if_tsresol {shown} s" in caplog.text and "res.pcapng" in caplog.text


def test_the_finest_resolutions_64_bits_count_are_kept() -> None:
    data = pcapng_shb() + pcapng_idb(1, tsresol=19) + pcapng_idb(1, tsresol=0x80 | 63)
    data += pcapng_epb(0, 10**19, b"a") + pcapng_epb(1, 1 << 63, b"b")
    parser = CaptureParser()
    assert [p[2] for p in packets_of(parser.feed(data) + parser.flush())] == [NS, NS]
    assert parser.tsresol_rejected == 0


def test_simple_packet_block_and_snaplen() -> None:
    frame = bytes(range(100))
    data = pcapng_shb() + pcapng_idb(101, snaplen=64) + pcapng_spb(frame, 1500) + pcapng_spb(b"xyz")
    assert packets_of(parse_all(data)) == [(frame[:64], 1500, 0, 101), (b"xyz", 3, 0, 101)]


def test_simple_packet_block_before_any_interface() -> None:
    good = pcapng_shb()
    data = good + pcapng_spb(b"abc")
    got, err = drain(data, "spb.pcapng")
    assert got == []
    reason = "simple packet block before any interface description block"
    assert str(err) == f"spb.pcapng: {reason} at byte offset {len(good)}"


def test_obsolete_packet_block() -> None:
    raw = 1_700_000_000_000_000  # µs
    body = struct.pack("<HHIIII", 1, 0, raw >> 32, raw & 0xFFFFFFFF, 3, 60) + b"abc"
    data = pcapng_shb() + pcapng_idb(1) + pcapng_idb(105) + pcapng_block(2, body)
    assert packets_of(parse_all(data)) == [(b"abc", 60, 1_700_000_000_000_000_000, 105)]


def test_other_blocks_are_skipped_and_order_is_kept() -> None:
    nrb = pcapng_block(4, struct.pack("<HH", 0, 0))
    isb = pcapng_block(5, struct.pack("<III", 0, 0, 0))
    dsb = pcapng_block(0x0A, b"secrets")
    custom = pcapng_block(0x00000BAD, b"\x00\x00\x7e\x5f" + b"hello")
    local = pcapng_block(0x80000001, b"")
    data = b"".join(
        [
            pcapng_shb(options=[pcapng_option(4, b"camwatch test")]),
            pcapng_idb(1, tsresol=9),
            pcapng_epb(0, 1, b"a"),
            nrb,
            pcapng_spb(b"b"),
            pcapng_epb(0, 3, b"c"),
            isb,
            dsb,
            pcapng_block(2, struct.pack("<HHIIII", 0, 0, 0, 4, 1, 1) + b"d"),
            custom,
            pcapng_epb(0, 5, b"e"),
            local,
        ]
    )
    assert [(p[0], p[2]) for p in packets_of(parse_all(data))] == [
        (b"a", 1),
        (b"b", 0),
        (b"c", 3),
        (b"d", 4),
        (b"e", 5),
    ]


def test_new_section_resets_interfaces_and_byte_order() -> None:
    sec1 = pcapng_shb() + pcapng_idb(1, tsresol=6) + pcapng_idb(101, tsresol=9)
    sec1 += pcapng_epb(0, 7, b"one") + pcapng_epb(1, 8, b"two")
    sec2 = pcapng_shb(big_endian=True) + pcapng_idb(113, tsresol=3, big_endian=True)
    sec2 += pcapng_epb(0, 9, b"three", big_endian=True)
    bad = pcapng_epb(1, 10, b"four", big_endian=True)  # interface 1 existed only in the first section
    data = sec1 + sec2 + bad
    got, err = drain(data, "sections.pcapng")
    assert packets_of(got) == [
        (b"one", 3, 7000, 1),
        (b"two", 3, 8, 101),
        (b"three", 5, 9_000_000, 113),
    ]
    assert isinstance(err, CaptureError)
    assert not isinstance(err, TruncatedCaptureError)
    assert str(err) == (
        f"sections.pcapng: enhanced packet block: unknown interface 1 (1 in this section) "
        f"at byte offset {len(sec1) + len(sec2)}"
    )


# ---------------------------------------------------------------- faults: good packets first, then the error


def sample_pcap(n: int = 5) -> tuple[bytes, list[int]]:
    """A pcap of ``n`` packets and the offset of each record header."""
    writer = PcapWriter(1, snaplen=65535)
    parts = [writer.header()]
    offsets = []
    pos = 24
    for i, frame in enumerate(frames(n, seed=5, max_len=90)):
        rec = writer.record(1_700_000_000 * NS + i * 1000, frame)
        offsets.append(pos)
        parts.append(rec)
        pos += len(rec)
    return b"".join(parts), offsets


def sample_pcapng(n: int = 5) -> tuple[bytes, list[int]]:
    head = pcapng_shb() + pcapng_idb(1, tsresol=9)
    parts = [head]
    offsets = []
    pos = len(head)
    for i, frame in enumerate(frames(n, seed=6, max_len=90)):
        blk = pcapng_epb(0, i, frame)
        offsets.append(pos)
        parts.append(blk)
        pos += len(blk)
    return b"".join(parts), offsets


@pytest.mark.parametrize("where", ["mid-record", "mid-header", "after-header-length"])
@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_truncated_capture(kind: str, where: str) -> None:
    data, offsets = sample_pcap() if kind == "pcap" else sample_pcapng()
    full = packets_of(parse_all(data))
    cut_at = {
        "mid-record": offsets[4] - 1,
        "mid-header": offsets[3] + 5,
        "after-header-length": offsets[3] + 13,
    }[where]
    for chunk_size in (1, 7, 1 << 20):
        got, err = drain(data[:cut_at], f"cut.{kind}", batch_size=2, chunk_size=chunk_size)
        assert packets_of(got) == full[:3]
        assert isinstance(err, TruncatedCaptureError)
        assert err.offset == offsets[3]
        assert str(err).startswith(f"cut.{kind}: truncated ")
        assert str(err).endswith(f" at byte offset {offsets[3]}")


@pytest.mark.parametrize("cut", [0, 3, 10, 23])
def test_truncated_file_header(cut: int) -> None:
    data, _ = sample_pcap()
    got, err = drain(data[:cut], "short.pcap")
    assert got == []
    assert isinstance(err, TruncatedCaptureError)
    reason = (
        "empty input (the capture is empty: 0 bytes)" if cut == 0 else f"truncated file header ({cut} bytes)"
    )
    assert str(err) == f"short.pcap: {reason} at byte offset 0"


def test_garbage_magic() -> None:
    for data in (b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 100):
        got, err = drain(data, "junk.bin")
        assert got == []
        assert str(err) == "junk.bin: not a pcap or pcapng file at byte offset 0"
        assert not isinstance(err, TruncatedCaptureError)


@pytest.mark.parametrize(
    ("head", "fmt", "command"),
    [
        (b"\x1f\x8b\x08\x00", "gzip", "gunzip"),
        (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
        (b"\x04\x22\x4d\x18", "lz4", "unlz4"),
        (b"\xfd7zXZ\x00", "xz", "unxz"),
        (b"BZh9", "bzip2", "bunzip2"),
        (b"PK\x03\x04", "zip", "unzip"),
    ],
)
def test_a_compressed_capture_says_so_and_how_to_decompress_it(head: bytes, fmt: str, command: str) -> None:
    got, err = drain(head + bytes(100), "site.pcap.x")
    assert got == []
    assert str(err) == (
        f"site.pcap.x: {fmt}-compressed, not a pcap or pcapng file: decompress it first "
        f"({command} site.pcap.x) at byte offset 0"
    )


def test_a_compressed_file_shorter_than_a_pcap_magic_still_says_it_is_compressed() -> None:
    _, err = drain(b"\x1f\x8b\x08", "tiny.gz")
    assert str(err) == (
        "tiny.gz: gzip-compressed, not a pcap or pcapng file: decompress it first (gunzip tiny.gz) "
        "at byte offset 0"
    )


def test_a_gzip_compressed_pcap() -> None:
    import gzip

    data, _ = sample_pcap()
    _, err = drain(gzip.compress(data), "site.pcap.gz")
    assert str(err) == (
        "site.pcap.gz: gzip-compressed, not a pcap or pcapng file: decompress it first (gunzip site.pcap.gz) "
        "at byte offset 0"
    )


def test_an_original_length_below_the_captured_length_counts_the_captured_one() -> None:
    """realtraffic's a16: an 81-byte frame whose record says 10 bytes on the wire was counted as 10."""
    frame = bytes(81)
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    records = b"".join(struct.pack("<IIII", 1, 0, len(frame), wire) + frame for wire in (10, 81, 1500))
    parser = CaptureParser("short-wire.pcap")
    (batch,) = parser.feed(header + records) + parser.flush()
    assert batch.wirelen.tolist() == [81, 81, 1500]
    assert (parser.wirelen_below_caplen, parser.wirelen_clamped) == (1, 0)


def corrupt_u32(data: bytes, pos: int, value: int) -> bytes:
    return data[:pos] + struct.pack("<I", value) + data[pos + 4 :]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("length", 45, "block length 45 is not a multiple of 4 and >= 12"),
        ("length", 8, "block length 8 is not a multiple of 4 and >= 12"),
        ("length", MAX_BLOCK + 4, f"block length {MAX_BLOCK + 4} exceeds the limit of {MAX_BLOCK} bytes"),
        ("trailer", 1234, "trailing block length 1234 does not match block length {blen}"),
        ("caplen", 1000, "enhanced packet block: captured length 1000 does not fit in block length {blen}"),
        ("interface", 3, "enhanced packet block: unknown interface 3 (1 in this section)"),
    ],
)
@pytest.mark.parametrize("victim", [0, 3, 4])
def test_corrupt_pcapng_block(field: str, value: int, reason: str, victim: int) -> None:
    data, offsets = sample_pcapng()
    full = packets_of(parse_all(data))
    pos = offsets[victim]
    blen = struct.unpack_from("<I", data, pos + 4)[0]
    field_pos = {"length": pos + 4, "trailer": pos + blen - 4, "caplen": pos + 20, "interface": pos + 8}[
        field
    ]
    bad = corrupt_u32(data, field_pos, value)
    for chunk_size in (3, 64, 1 << 20):
        got, err = drain(bad, "bad.pcapng", batch_size=2, chunk_size=chunk_size)
        assert packets_of(got) == full[:victim]
        assert str(err) == f"bad.pcapng: {reason.format(blen=blen)} at byte offset {pos}"


def test_corrupt_section_header() -> None:
    data, _ = sample_pcapng()
    bad_bom = data[:8] + b"\x01\x02\x03\x04" + data[12:]
    assert (
        str(drain(bad_bom, "x")[1])
        == "x: section header block: bad byte-order magic 0x01020304 at byte offset 0"
    )
    version2 = data[:12] + struct.pack("<H", 2) + data[14:]
    assert str(drain(version2, "x")[1]) == "x: unsupported pcapng version 2.0 at byte offset 0"


@pytest.mark.parametrize("victim", [0, 2, 4])
def test_pcap_record_too_long(victim: int) -> None:
    data, offsets = sample_pcap()
    full = packets_of(parse_all(data))
    bad = corrupt_u32(data, offsets[victim] + 8, 300_000)
    for chunk_size in (5, 1 << 20):
        got, err = drain(bad, "long.pcap", chunk_size=chunk_size)
        assert packets_of(got) == full[:victim]
        assert str(err) == (
            f"long.pcap: record length 300000 exceeds the limit of 69631 bytes (snaplen 65535) "
            f"at byte offset {offsets[victim]}"
        )


def test_pcap_record_limit_tolerates_small_declared_snaplen() -> None:
    # dpkt writes snaplen 1500 by default whatever the frame size; such files must still read
    frame = bytes(9000)
    data = pcap_bytes([(0, frame)], snaplen=262144)
    data = data[:16] + struct.pack("<I", 1500) + data[20:]
    assert packets_of(parse_all(data)) == [(frame, 9000, 0, 1)]


def test_parser_is_dead_after_an_error() -> None:
    data, offsets = sample_pcap()
    parser = CaptureParser("dead.pcap")
    with pytest.raises(TruncatedCaptureError) as first:
        parser.feed(data[: offsets[2] + 3])
        parser.flush()
    assert len(packets_of(first.value.batches)) == 2
    calls: list[Callable[[], list[PacketBatch]]] = [lambda: parser.feed(b"more"), parser.flush]
    for call in calls:
        with pytest.raises(TruncatedCaptureError) as again:
            call()
        assert str(again.value) == str(first.value)
        assert again.value.batches == []


def test_feed_after_flush_is_a_usage_error() -> None:
    parser = CaptureParser()
    parser.feed(pcap_bytes([]))
    parser.flush()
    with pytest.raises(RuntimeError):
        parser.feed(b"")


def test_capture_error_is_a_value_error_with_fields() -> None:
    err = CaptureError("f.pcap", 42, "broken")
    assert isinstance(err, ValueError)
    assert (err.name, err.offset, err.reason, err.batches) == ("f.pcap", 42, "broken", [])
    assert str(err) == "f.pcap: broken at byte offset 42"


# ---------------------------------------------------------------- batches and buffering


def test_batch_splitting() -> None:
    items = [(i * NS, bytes([i]) * (i + 1)) for i in range(10)]
    data = pcap_bytes(items)
    parser = CaptureParser("b.pcap", batch_size=3)
    full = parser.feed(data)
    assert [len(b) for b in full] == [3, 3, 3]
    last = parser.flush()
    assert [len(b) for b in last] == [1]
    assert parser.packets == 10
    assert parser.offset == len(data)
    assert packets_of(full + last) == [(f, len(f), t, 1) for t, f in items]


def test_batch_size_exact_multiple_leaves_nothing_for_flush() -> None:
    parser = CaptureParser(batch_size=2)
    assert [len(b) for b in parser.feed(pcap_bytes([(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]))] == [2, 2]
    assert parser.flush() == []


def test_batch_arrays() -> None:
    data = pcap_bytes([(5, b"hello"), (6, b"")])
    chunk_bytes = data
    (batch,) = parse_all(chunk_bytes)
    assert batch.data.dtype == np.uint8 and batch.data.ndim == 1
    assert batch.offsets.dtype == np.int64
    assert batch.caplen.dtype == np.int64
    assert batch.wirelen.dtype == np.int64
    assert batch.ts_ns.dtype == np.int64
    assert batch.linktype.dtype == np.uint16
    assert len(batch) == 2
    assert batch.packet(0) == b"hello" and batch.packet(1) == b""
    for arr in (batch.data, batch.offsets, batch.caplen, batch.wirelen, batch.ts_ns, batch.linktype):
        assert not arr.flags.writeable
    # one fed chunk: the batch is a view of the caller's bytes, no copy
    assert np.shares_memory(batch.data, np.frombuffer(chunk_bytes, dtype=np.uint8))


def test_batches_spanning_feeds_are_contiguous() -> None:
    payloads = frames(30, seed=7, max_len=60)
    data = pcap_bytes([(i, f) for i, f in enumerate(payloads)])
    parser = CaptureParser(batch_size=7)
    batches: list[PacketBatch] = []
    for i in range(0, len(data), 50):
        batches += parser.feed(data[i : i + 50])
    batches += parser.flush()
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    for b in batches:
        assert b.data.flags.c_contiguous
        ends = b.offsets + b.caplen
        assert int(ends.max()) <= len(b.data)
        assert (b.offsets[1:] >= ends[:-1]).all()
    assert [p[0] for p in packets_of(batches)] == payloads


def test_mutable_buffers_are_copied() -> None:
    buf = bytearray(pcap_bytes([(0, b"keep")]))
    parser = CaptureParser()
    parser.feed(buf)
    buf[-4:] = b"\xde\xad\xbe\xef"
    (batch,) = parser.flush()
    assert batch.packet(0) == b"keep"


def test_offset_counts_complete_units_only() -> None:
    data, offsets = sample_pcap()
    parser = CaptureParser()
    parser.feed(data[: offsets[1] + 10])
    assert parser.offset == offsets[1]
    parser.feed(data[offsets[1] + 10 :])
    assert parser.offset == len(data)


# ---------------------------------------------------------------- chunking does not matter (hypothesis)


@st.composite
def captures(draw: st.DrawFn) -> tuple[bytes, list[Packet]]:
    """A random capture in one of the 6 layouts, with the packets it must yield."""
    layout = draw(st.sampled_from(["pcap-le-us", "pcap-be-us", "pcap-le-ns", "pcap-be-ns", "ng-le", "ng-be"]))
    n = draw(st.integers(0, 12))
    pkts = draw(
        st.lists(
            st.tuples(st.integers(0, 1), st.integers(0, 4_000_000_000 * NS), st.binary(max_size=70)),
            min_size=n,
            max_size=n,
        )
    )
    if layout.startswith("pcap"):
        nano = layout.endswith("ns")
        data = pcap_bytes([(t, f) for _, t, f in pkts], 1, nanosecond=nano, big_endian="-be-" in layout)
        expected = [(f, len(f), t if nano else t // 1000 * 1000, 1) for _, t, f in pkts]
    else:
        interfaces = [(1, 6), (101, 9)]
        data = pcapng_bytes(interfaces, pkts, big_endian=layout == "ng-be")
        expected = [(f, len(f), t if i else t // 1000 * 1000, interfaces[i][0]) for i, t, f in pkts]
    return data, expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capture=captures(),
    cuts=st.lists(st.integers(0, 2000), max_size=25),
    batch_size=st.integers(1, 5),
    truncate=st.none() | st.integers(1, 60),
)
def test_chunking_does_not_change_the_result(
    capture: tuple[bytes, list[Packet]], cuts: list[int], batch_size: int, truncate: int | None
) -> None:
    data, expected = capture
    if truncate is not None:
        data = data[: max(len(data) - truncate, 0)]
    cuts = [c for c in cuts if c <= len(data)]
    whole, whole_err = parse_chunked(data, [], batch_size)
    pieces, pieces_err = parse_chunked(data, cuts, batch_size)
    assert pieces_err == whole_err
    assert [len(b) for b in pieces] == [len(b) for b in whole]
    assert packets_of(pieces) == packets_of(whole)
    if truncate is None:
        assert whole_err is None
        assert packets_of(whole) == expected
    else:
        got = packets_of(whole)
        assert got == expected[: len(got)]
    # byte by byte, the slowest way in
    if len(data) < 400:
        bytewise, bytewise_err = parse_chunked(data, list(range(len(data))), batch_size)
        assert bytewise_err == whole_err
        assert packets_of(bytewise) == packets_of(whole)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capture=captures(),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 2000), max_size=25),
    batch_size=st.integers(1, 5),
)
def test_corruption_raises_only_capture_error(
    capture: tuple[bytes, list[Packet]], edits: list[tuple[int, int]], cuts: list[int], batch_size: int
) -> None:
    damaged = bytearray(capture[0])
    for pos, value in edits:
        damaged[pos % len(damaged)] = value
    data = bytes(damaged)
    # parse_chunked lets nothing but CaptureError through; the outcome must not depend on the chunking
    whole, whole_err = parse_chunked(data, [], batch_size)
    pieces, pieces_err = parse_chunked(data, [c for c in cuts if c <= len(data)], batch_size)
    assert pieces_err == whole_err
    assert [len(b) for b in pieces] == [len(b) for b in whole]
    assert packets_of(pieces) == packets_of(whole)
