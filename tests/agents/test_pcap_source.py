"""The file source: memory-mapped windows parsed in place give every packet exactly once."""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from agents.capture.pcap_source import PcapFileSource
from lab import scenario
from monitor.pcapfile import CaptureError, CaptureParser, PacketBatch
from monitor.pcapwrite import pcap_bytes, pcapng_bytes
from tests.truth.paths import pcap as corpus_pcap

WINDOW = mmap.ALLOCATIONGRANULARITY * 4  # small windows: many records straddle two of them


def packets_of(batches: list[PacketBatch]) -> list[tuple[int, int, bytes]]:
    return [(int(b.ts_ns[i]), int(b.wirelen[i]), b.packet(i)) for b in batches for i in range(len(b))]


def reference(data: bytes) -> list[tuple[int, int, bytes]]:
    parser = CaptureParser("ref", batch_size=1 << 20)
    return packets_of(parser.feed(data) + parser.flush())


@pytest.fixture(scope="module")
def site_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "site.pcap"
    path.write_bytes(pcap_bytes(scenario.site_packets(scenario.SiteShape(seconds=3.0, video_pps=200))))
    return path


@pytest.mark.parametrize("batch_size", [7, 1000, 65536])
def test_windows_give_every_packet_once_in_order(site_pcap: Path, batch_size: int) -> None:
    # Copy each batch's packets out before asking for the next: batches are views of a window.
    got: list[tuple[int, int, bytes]] = []
    sizes = []
    for batch in PcapFileSource(site_pcap, batch_size, window=WINDOW).batches():
        sizes.append(len(batch))
        got += packets_of([batch])
    assert got == reference(site_pcap.read_bytes())
    assert max(sizes) <= batch_size
    assert site_pcap.stat().st_size > 20 * WINDOW  # the test did cross many window edges


def test_pcapng_and_corpus_files(tmp_path: Path) -> None:
    frames = [
        (i % 2, 1_700_000_000_000_000_000 + i * 1000, bytes([i % 256]) * (60 + i % 1500)) for i in range(3000)
    ]
    path = tmp_path / "two-if.pcapng"
    path.write_bytes(pcapng_bytes([(1, 6), (113, 9)], frames))
    for p in (path, corpus_pcap("zeek/pcapng-multi-interface.pcapng"), corpus_pcap("ndpi/443-chrome.pcap")):
        got = [x for b in PcapFileSource(p, 64, window=WINDOW).batches() for x in packets_of([b])]
        assert got == reference(p.read_bytes()), p


def test_truncated_file_yields_everything_before_the_fault(site_pcap: Path, tmp_path: Path) -> None:
    data = site_pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 100])
    got: list[tuple[int, int, bytes]] = []
    with pytest.raises(CaptureError) as err:
        for batch in PcapFileSource(cut, 500, window=WINDOW).batches():
            got += packets_of([batch])
    parser = CaptureParser("ref", batch_size=1 << 20)
    with pytest.raises(CaptureError) as ref_err:
        parser.feed(data[: len(data) - 100])
        parser.flush()
    expected = packets_of(ref_err.value.batches)
    assert got == expected and len(expected) > len(reference(data)) - 3
    assert str(cut) in str(err.value) and "offset" in str(err.value)


def test_a_pipe_is_read_in_chunks(site_pcap: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    data = site_pcap.read_bytes()

    def writer() -> None:
        with fifo.open("wb") as fh:
            fh.write(data)

    t = threading.Thread(target=writer, name="fifo-writer")
    t.start()
    got = [x for b in PcapFileSource(fifo, 1000).batches() for x in packets_of([b])]
    t.join(timeout=10)
    assert got == reference(data)


def test_progress_reaches_the_file_size(site_pcap: Path) -> None:
    seen: list[tuple[int, int]] = []
    batches = list(PcapFileSource(site_pcap, 4096, window=WINDOW).batches(lambda d, t: seen.append((d, t))))
    assert batches and seen[-1][0] == seen[-1][1] == site_pcap.stat().st_size
    assert np.all(np.diff([d for d, _ in seen]) >= 0)
