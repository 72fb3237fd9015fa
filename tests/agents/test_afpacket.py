"""Live AF_PACKET capture over a veth pair between two namespaces (root only; skipped otherwise)."""

from __future__ import annotations

import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from agents.capture.afpacket import CaptureOpenError, RecvSource, RingSource, open_live
from agents.capture.source import CaptureSource, CaptureStats, LiveCaptureSource
from lab import synth
from tests.agents.netns import NetnsPair, exec_in, inside, netns_pair, send_frames

__all__ = ["netns_pair"]  # the fixture, imported for pytest

OTHER_MAC = "02:cc:00:00:00:99"  # neither end's address: B's IP stack ignores the frames (no replies)

Factory = Callable[..., RingSource | RecvSource]
METHODS: dict[str, Factory] = {
    "ring": RingSource,
    "ring-copy": lambda iface, **kw: RingSource(iface, copy=True, **kw),
    "recv": RecvSource,
}


@dataclass
class Collector:
    """Runs batches() in a thread, copying every packet out before the next batch is requested."""

    source: RingSource | RecvSource
    packets: list[tuple[bytes, int, int, int]] = field(default_factory=list)  # bytes, caplen, wirelen, ts
    batch_sizes: list[int] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> Collector:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            for batch in self.source.batches():
                self.batch_sizes.append(len(batch))
                for i in range(len(batch)):
                    self.packets.append(
                        (batch.packet(i), int(batch.caplen[i]), int(batch.wirelen[i]), int(batch.ts_ns[i]))
                    )
        except BaseException as exc:
            self.error = exc

    def marked(self, marker: bytes) -> list[tuple[bytes, int, int, int]]:
        return [p for p in list(self.packets) if marker in p[0]]

    def wait_for(self, marker: bytes, count: int, timeout: float = 5.0) -> list[tuple[bytes, int, int, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.marked(marker)) < count:
            time.sleep(0.02)
        return self.marked(marker)

    def stop(self) -> None:
        self.source.close()
        assert self.thread is not None
        self.thread.join(5)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture(params=sorted(METHODS))
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _open(pair: NetnsPair, method: str, **kw: object) -> RingSource | RecvSource:
    with inside(pair.ns_b):
        return METHODS[method](pair.if_b, **kw).open()


@pytest.fixture
def capture(netns_pair: NetnsPair, method: str) -> Iterator[Collector]:
    coll = Collector(_open(netns_pair, method, idle_s=0.1)).start()
    yield coll
    coll.stop()


def _frames(pair: NetnsPair, marker: bytes) -> list[bytes]:
    """Frames of many sizes and kinds, each carrying ``marker`` and its index."""
    out = []
    for i, size in enumerate((0, 1, 18, 100, 512, 1000, 1400, 1472)):  # 1472: a full 1514-byte frame
        payload = (marker + struct.pack("!H", i) + bytes(range(256)) * 6)[: max(size, len(marker) + 2)]
        out.append(synth.udp4_frame(pair.mac_a, OTHER_MAC, pair.addr_a, pair.addr_b, 5004, 6004, payload))
    rtp = synth.RtpTemplate(pair.mac_a, OTHER_MAC, pair.addr_a, pair.addr_b, 8000, 9000, 1200, 0xC0FFEE)
    out += [f[:42] + marker + f[42 + len(marker) :] for f in (rtp.frame(s, s * 3600) for s in range(20))]
    out.append(synth.tcp4_frame(pair.mac_a, OTHER_MAC, pair.addr_a, pair.addr_b, 40000, 554,
                                b"OPTIONS rtsp://cam/ RTSP/1.0\r\nCSeq: 1\r\nX: " + marker + b"\r\n\r\n",
                                flags=synth.TCP_PSH | synth.TCP_ACK))  # fmt: skip
    # A non-IP frame of the minimum Ethernet header size plus the marker.
    out.append(synth.ether(pair.mac_a, OTHER_MAC, 0x88B5, marker))
    return out


def test_frames_arrive_intact(netns_pair: NetnsPair, capture: Collector) -> None:
    marker = b"CW-INTACT-" + str(id(capture)).encode()
    frames = _frames(netns_pair, marker)
    before = time.time_ns()
    send_frames(netns_pair.ns_a, netns_pair.if_a, frames)
    got = capture.wait_for(marker, len(frames))
    after = time.time_ns()
    assert [g[0] for g in got] == frames  # same bytes, same order, nothing extra or missing
    for data, caplen, wirelen, ts in got:
        assert caplen == wirelen == len(data)
        assert before - 1_000_000 <= ts <= after
    stamps = [g[3] for g in got]
    assert stamps == sorted(stamps)
    st = capture.source.stats()
    assert st.packets >= len(frames) and st.kernel_packets >= len(frames) and st.kernel_drops == 0
    assert st.bytes >= sum(map(len, frames))


def test_vlan_tags_restored(netns_pair: NetnsPair, capture: Collector) -> None:
    """The kernel strips the outer tag into metadata; the source puts it back (as libpcap does)."""
    p = netns_pair
    marker = b"CW-VLAN-" + str(id(capture)).encode()

    def udp(vlans: tuple[int, ...]) -> bytes:
        return synth.udp4_frame(p.mac_a, OTHER_MAC, p.addr_a, p.addr_b, 5004, 6004, marker + bytes(64), vlans)

    def tag(tpid: int, tci: int, inner: bytes) -> bytes:
        return inner[:12] + struct.pack("!HH", tpid, tci) + inner[12:]

    untagged = udp(())
    frames = [
        udp((100,)),  # 802.1Q, VLAN 100
        tag(0x8100, (5 << 13) | 0, untagged),  # priority tag: VLAN 0, PCP 5 (TP_STATUS_VLAN_VALID matters)
        tag(0x8100, (3 << 13) | 4094, untagged),  # PCP bits and the highest VLAN id
        tag(0x88A8, 200, udp((300,))),  # QinQ: 802.1ad outer (stripped, TPID kept), 802.1Q inner
        udp((10, 20)),  # two 802.1Q tags
        untagged,
    ]
    send_frames(p.ns_a, p.if_a, frames)
    got = capture.wait_for(marker, len(frames))
    assert [g[0].hex() for g in got] == [f.hex() for f in frames]
    assert all(g[1] == g[2] == len(g[0]) for g in got)


def test_close_from_another_thread_stops_batches(netns_pair: NetnsPair, method: str) -> None:
    # idle_s far longer than the test: only close() can end the wait
    coll = Collector(_open(netns_pair, method, idle_s=30.0)).start()
    time.sleep(0.3)
    assert coll.thread is not None and coll.thread.is_alive()
    started = time.monotonic()
    coll.source.close()
    coll.thread.join(1.0)
    assert not coll.thread.is_alive(), "batches() still running 1 s after close()"
    assert time.monotonic() - started < 1.0
    assert coll.error is None
    assert coll.source.fileno() == -1
    coll.source.close()  # idempotent


def test_idle_link_yields_periodically(netns_pair: NetnsPair, method: str) -> None:
    source = _open(netns_pair, method, idle_s=0.1)
    stamps: list[float] = []
    started = time.monotonic()
    try:
        for batch in source.batches():
            stamps.append(time.monotonic() - started)
            assert len(batch) == 0  # nothing is sent: an idle link (IPv6 is off, no ARP)
            if len(stamps) == 6:
                break
    finally:
        source.close()
    assert stamps[-1] < 2.0, stamps
    gaps = [b - a for a, b in zip([0.0, *stamps], stamps, strict=False)]
    assert max(gaps) < 0.5, gaps


@pytest.mark.parametrize("kind", ["ring", "recv"])
def test_kernel_drops_are_counted_and_accumulated(netns_pair: NetnsPair, kind: str) -> None:
    p = netns_pair
    if kind == "ring":  # two 4 KiB blocks hold a handful of these frames
        source = _open(p, "ring", block_size=4096, block_count=2, frame_size=2048, retire_ms=10)
    else:  # the smallest receive buffer the kernel allows
        source = _open(p, "recv", rcvbuf=1)
    try:
        frame = synth.udp4_frame(p.mac_a, OTHER_MAC, p.addr_a, p.addr_b, 5004, 6004, bytes(1000))
        sent = send_frames(p.ns_a, p.if_a, [frame] * 300)  # and nobody reads: a stalled reader
        first = source.stats()
        assert first.kernel_drops > 0
        assert first.kernel_packets >= sent  # the kernel counts drops as packets too
        assert first.kernel_packets - first.kernel_drops < sent
        if kind == "ring":
            assert first.kernel_freeze_q is not None and first.kernel_freeze_q > 0
        else:
            assert first.kernel_freeze_q is None
        # Reading resets the kernel's counters; the source keeps the totals.
        send_frames(p.ns_a, p.if_a, [frame] * 50)
        second = source.stats()
        assert second.kernel_drops >= first.kernel_drops + 40
        assert second.kernel_packets >= first.kernel_packets + 50
        # The first frames were kept and are delivered once the reader runs.
        batches = source.batches()
        delivered = 0
        for batch in batches:
            if len(batch) == 0:
                break
            delivered += len(batch)
        batches.close()
        assert 0 < delivered < sent
    finally:
        source.close()
    final = source.stats()  # still answers after close: the totals read before the socket went
    assert final.kernel_drops >= second.kernel_drops


def test_promiscuous_while_open(netns_pair: NetnsPair, method: str) -> None:
    def promiscuity() -> int:
        out = exec_in(netns_pair.ns_b, "ip", "-d", "link", "show", "dev", netns_pair.if_b).stdout
        match = re.search(r"promiscuity (\d+)", out)
        assert match, out
        return int(match.group(1))

    base = promiscuity()
    source = _open(netns_pair, method)
    try:
        assert promiscuity() == base + 1
    finally:
        source.close()
    assert promiscuity() == base


def test_ring_copy_batches_outlive_the_next_request(netns_pair: NetnsPair) -> None:
    """With copy=True a batch stays valid after the ring block went back to the kernel."""
    p = netns_pair
    source = _open(p, "ring-copy", idle_s=0.1, retire_ms=5)
    marker = b"CW-COPY"
    kept = []
    try:
        it = source.batches()
        for round_ in range(3):
            frame = synth.udp4_frame(
                p.mac_a, OTHER_MAC, p.addr_a, p.addr_b, 1, 2, marker + bytes([round_]) * 64
            )
            send_frames(p.ns_a, p.if_a, [frame])
            for batch in it:
                if len(batch):
                    kept.append((batch, frame))
                    break
        it.close()
        for batch, frame in kept:
            assert batch.packet(0) == frame
            assert not batch.data.flags.writeable
    finally:
        source.close()


def test_open_errors_are_one_line(netns_pair: NetnsPair) -> None:
    with inside(netns_pair.ns_b), pytest.raises(CaptureOpenError, match="no-such-if0: cannot bind"):
        RingSource("no-such-if0").open()
    with pytest.raises(CaptureOpenError, match="not open"):
        next(RecvSource(netns_pair.if_b).batches())
    with pytest.raises(ValueError, match="unknown capture method"):
        open_live(netns_pair.if_b, method="pcap")


@pytest.mark.parametrize("method_name", ["ring", "recv", "auto"])
def test_open_live_and_interface(netns_pair: NetnsPair, method_name: str) -> None:
    with inside(netns_pair.ns_b):
        source = open_live(netns_pair.if_b, method=method_name, batch_size=128)
    try:
        assert isinstance(source, LiveCaptureSource) and isinstance(source, CaptureSource)
        assert source.fileno() >= 0
        assert isinstance(source.stats(), CaptureStats) and source.stats().interface == netns_pair.if_b
        assert isinstance(source, RecvSource if method_name == "recv" else RingSource)
    finally:
        source.close()
