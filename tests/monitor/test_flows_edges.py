"""Flow table branches the corpus comparisons do not reach: an idle gap inside one batch, timestamps that
go backwards, eviction at the size bound, and configuration errors. Each case is run at several batch
sizes: a flow's fate must depend only on its own packets, not on where batches end."""

from __future__ import annotations

import io

import pytest

from lab.synth import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, tcp4_frame, udp4_frame
from monitor.decode import decode
from monitor.flows import Flow, FlowConfig, FlowTable
from monitor.pcapfile import iter_batches
from monitor.pcapwrite import pcap_bytes

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
A_MAC, B_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
BATCH_SIZES = [1, 2, 3, 1000]

Record = tuple[object, ...]


def _udp(t_s: float, sport: int = 5000, size: int = 10, reply: bool = False) -> tuple[int, bytes]:
    src, dst, sp, dp = (
        ("10.0.0.1", "10.0.0.2", sport, 53) if not reply else ("10.0.0.2", "10.0.0.1", 53, sport)
    )
    return T0 + int(t_s * NS), udp4_frame(A_MAC, B_MAC, src, dst, sp, dp, bytes(size))


def _tcp(t_s: float, flags: int, reply: bool = False) -> tuple[int, bytes]:
    src, dst, sp, dp = (
        ("10.0.0.1", "10.0.0.3", 40000, 80) if not reply else ("10.0.0.3", "10.0.0.1", 80, 40000)
    )
    return T0 + int(t_s * NS), tcp4_frame(A_MAC, B_MAC, src, dst, sp, dp, flags=flags)


def _run(packets: list[tuple[int, bytes]], batch_size: int, config: FlowConfig | None = None) -> list[Record]:
    """Every flow as (src port, start s, end s, packets, end reason), in the order the table ended them;
    the flows still live at the end come last, with reason "live"."""
    table = FlowTable(config or FlowConfig())
    ended: list[Flow] = []
    for batch in iter_batches(io.BytesIO(pcap_bytes(packets)), "t", batch_size):
        ended += table.update(decode(batch))[1]
    out = [(f.src[1], (f.start_ns - T0) / NS, (f.last_ns - T0) / NS, f.packets, f.end_reason) for f in ended]
    return out + [
        (f.src[1], (f.start_ns - T0) / NS, (f.last_ns - T0) / NS, f.packets, "live") for f in table.flows()
    ]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_an_idle_gap_splits_the_flow_whatever_the_batches(batch_size: int) -> None:
    # UDP idle timeout 60 s: a gap of 90 s ends the first flow, the next packet starts a second one.
    packets = [_udp(0), _udp(0.5, reply=True), _udp(10), _udp(100), _udp(101, reply=True), _udp(110)]
    assert _run(packets, batch_size) == [(5000, 0.0, 10.0, 3, "idle"), (5000, 100.0, 110.0, 3, "live")]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_a_timestamp_before_the_flow_start_moves_the_start(batch_size: int) -> None:
    # Captures merged from two interfaces are not always in time order: a packet stamped before the
    # flow's first one moves the start back (the duration never goes negative).
    packets = [_udp(10), _udp(11, reply=True), _udp(9.5), _udp(12)]
    assert _run(packets, batch_size) == [(5000, 9.5, 12.0, 4, "live")]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_a_timestamp_before_the_start_of_a_closing_tcp_flow(batch_size: int) -> None:
    # The same in the packet-by-packet path, which a FIN forces.
    packets = [
        _tcp(10, TCP_SYN),
        _tcp(10.1, TCP_SYN | TCP_ACK, reply=True),
        _tcp(9.0, TCP_ACK),
        _tcp(11, TCP_FIN | TCP_ACK),
        _tcp(11.1, TCP_FIN | TCP_ACK, reply=True),
    ]
    (record,) = _run(packets, batch_size, FlowConfig(tcp_close_linger=0.5))
    assert record == (40000, 9.0, 11.1, 5, "live")  # closed, ending after the linger


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_the_size_bound_evicts_the_least_recently_active_flow(batch_size: int) -> None:
    # Bound 2. The TCP flow is older than both UDP flows, so it goes first; then the oldest UDP flow.
    packets = [_tcp(0, TCP_SYN), _udp(1, sport=5001), _udp(2, sport=5002), _udp(3, sport=5003)]
    assert _run(packets, batch_size, FlowConfig(max_flows=2)) == [
        (40000, 0.0, 0.0, 1, "evicted"),
        (5001, 1.0, 1.0, 1, "evicted"),
        (5002, 2.0, 2.0, 1, "live"),
        (5003, 3.0, 3.0, 1, "live"),
    ]
    # Here the UDP flow is the least recently active: it goes, the TCP flow stays.
    packets = [_udp(0, sport=5001), _tcp(1, TCP_SYN), _udp(2, sport=5002)]
    assert _run(packets, batch_size, FlowConfig(max_flows=2)) == [
        (5001, 0.0, 0.0, 1, "evicted"),
        (40000, 1.0, 1.0, 1, "live"),
        (5002, 2.0, 2.0, 1, "live"),
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tcp_idle_timeout", 0, "tcp_idle_timeout must be > 0"),
        ("udp_idle_timeout", -1, "udp_idle_timeout must be > 0"),
        ("other_idle_timeout", 0, "other_idle_timeout must be > 0"),
        ("active_timeout", 0, "active_timeout must be > 0"),
        ("tcp_close_linger", -0.1, "tcp_close_linger must be >= 0"),
        ("max_flows", 0, "max_flows must be >= 1"),
    ],
)
def test_config_errors_name_the_field(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FlowConfig(**{field: value})  # type: ignore[arg-type]
    FlowConfig(tcp_close_linger=0)  # no linger is allowed


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_a_syn_after_a_close_starts_a_new_connection(batch_size: int) -> None:
    # The client reuses its port right after closing (within the linger): the closed flow ends "closed"
    # and the SYN starts the next one; the last ACK of the close still belongs to the first.
    close = [_tcp(0, TCP_SYN), _tcp(0.1, TCP_SYN | TCP_ACK, reply=True), _tcp(0.2, TCP_ACK)]
    close += [_tcp(1, TCP_FIN | TCP_ACK), _tcp(1.1, TCP_FIN | TCP_ACK, reply=True), _tcp(1.2, TCP_ACK)]
    reopen = [_tcp(2, TCP_SYN), _tcp(2.1, TCP_SYN | TCP_ACK, reply=True)]
    assert _run(close + reopen, batch_size) == [
        (40000, 0.0, 1.2, 6, "closed"),
        (40000, 2.0, 2.1, 2, "live"),
    ]


def test_flush_gives_each_flow_the_reason_it_would_have_had() -> None:
    # At the end of input: a UDP flow idle past its timeout ends "idle", a closed TCP flow "closed", a
    # recent one "end", whenever the expiry scan last ran.
    packets = [_udp(0, sport=5001)]
    packets += [_tcp(1, TCP_SYN), _tcp(1.1, TCP_RST | TCP_ACK, reply=True)]
    packets += [_udp(100, sport=5002)]
    table = FlowTable(FlowConfig())
    for batch in iter_batches(io.BytesIO(pcap_bytes(packets)), "t", 1000):
        table.update(decode(batch))
    ended = table.flush(T0 + 101 * NS)
    assert sorted((f.src[1], f.end_reason) for f in ended) == [
        (5001, "idle"),
        (5002, "end"),
        (40000, "closed"),
    ]
    assert len(table) == 0
