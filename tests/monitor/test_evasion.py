"""Requests that evade a monitor reading only a flow's first packets, believing the first copy of a segment,
or skipping super-frames: each must still reach the exploit matchers (``exploit.attempt``)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from lab import attacks, synth
from monitor.reassembly import OrderStats, TcpOrder
from tests.enginerun import run_frames
from tests.monitor.rules.traffic import ATTACKER, HIK, MS, POLICY, T0, alerts, exchange, of_rule

RULE = "exploit.attempt"
EXPLOIT = attacks.http_request("GET", f"/System/configurationFile?auth={attacks.AUTH_BYPASS_TOKEN}", HIK.ip)
HARMLESS = attacks.http_request("GET", "/index.html", HIK.ip)
OK = attacks.http_response(200, b"<html></html>")
CPORT = 40000
A, S, F, P = synth.TCP_ACK, synth.TCP_SYN, synth.TCP_FIN, synth.TCP_PSH


def _raw(src: str, dst: str, sport: int, dport: int, payload: bytes, flags: int, seq: int, ack: int) -> bytes:
    """An IPv4 packet carrying a TCP segment with a valid checksum."""
    return synth.ipv4(src, dst, 6, synth.tcp(src, dst, sport, dport, payload, flags=flags, seq=seq, ack=ack))


def _frame(ip: bytes, from_client: bool) -> bytes:
    smac, dmac = (ATTACKER.mac, HIK.mac) if from_client else (HIK.mac, ATTACKER.mac)
    return synth.ether(smac, dmac, 0x0800, ip)


def _connection(
    segments: Callable[[int], list[tuple[int, bytes]]], answer: bytes = OK
) -> list[tuple[int, bytes]]:
    """Handshake, the client's packets (``segments(seq)``: (seq, IP packet) from its first data byte), the
    device's answer, FIN both ways."""
    cseq, sseq = 1000, 5000
    out: list[tuple[int, bytes]] = []

    def c(data: bytes, fl: int, seq: int) -> None:
        out.append(
            (T0 + len(out) * MS, _frame(_raw(ATTACKER.ip, HIK.ip, CPORT, 80, data, fl, seq, sseq), True))
        )

    def s(data: bytes, fl: int, ack: int) -> None:
        nonlocal sseq
        out.append(
            (T0 + len(out) * MS, _frame(_raw(HIK.ip, ATTACKER.ip, 80, CPORT, data, fl, sseq, ack), False))
        )
        sseq += len(data) + (1 if fl & (S | F) else 0)

    c(b"", S, cseq)
    s(b"", S | A, cseq + 1)
    c(b"", A, cseq + 1)
    end = cseq + 1
    for seq, ip in segments(cseq + 1):
        out.append((T0 + len(out) * MS, _frame(ip, True)))
        end = max(end, seq)
    s(answer, P | A, end)
    c(b"", F | A, end)
    s(b"", F | A, end + 1)
    return out


def _pieces(data: bytes, size: int) -> Callable[[int], list[tuple[int, bytes]]]:
    def build(seq: int) -> list[tuple[int, bytes]]:
        return [
            (
                seq + i + len(data[i : i + size]),
                _raw(ATTACKER.ip, HIK.ip, CPORT, 80, data[i : i + size], P | A, seq + i, 5001),
            )
            for i in range(0, len(data), size)
        ]

    return build


def test_an_exploit_after_many_requests_on_a_kept_alive_connection() -> None:
    # Six harmless exchanges fill the flow's first packets: the seventh request is read all the same.
    turns = [(HARMLESS, OK)] * 6 + [(EXPLOIT, attacks.http_response(200, b"config"))]
    (a,) = of_rule(alerts(exchange(T0, ATTACKER, HIK, CPORT, 80, turns)), RULE)
    assert a["camwatch"]["exploit"]["matcher"] == "hikvision-auth-param"  # type: ignore[index]


@pytest.mark.parametrize("size", [1, 5, 9])
def test_an_exploit_cut_in_many_tcp_segments(size: int) -> None:
    # 1 byte a segment: not even the method fits in the first one.
    assert len(of_rule(alerts(_connection(_pieces(EXPLOIT, size))), RULE)) == 1


@pytest.mark.parametrize("size", [1, 3])
def test_an_exploit_in_one_byte_segments_in_reverse_order(size: int) -> None:
    # fragroute's "tcp_seg 1" with "order reverse": every byte waits behind the hole the first one leaves,
    # as the camera's stack queues them, until the first byte arrives last.
    def reversed_pieces(seq: int) -> list[tuple[int, bytes]]:
        return _pieces(EXPLOIT, size)(seq)[::-1]

    assert len(EXPLOIT) > 64
    assert len(of_rule(alerts(_connection(reversed_pieces)), RULE)) == 1


@pytest.mark.parametrize("broken", ["flipped", "zero"])
def test_a_bad_checksum_copy_does_not_hide_the_request(broken: str) -> None:
    # A junk segment with a broken checksum at the request's sequence number (the camera drops it), then the
    # request: the copy whose checksum holds is the one read. A zero checksum is no exception: the camera's
    # stack drops that junk too.
    def build(seq: int) -> list[tuple[int, bytes]]:
        junk = bytearray(_raw(ATTACKER.ip, HIK.ip, CPORT, 80, b"X" * len(EXPLOIT), P | A, seq, 5001))
        if broken == "zero":
            junk[20 + 16 : 20 + 18] = b"\0\0"
        else:
            junk[20 + 16] ^= 0xFF
        real = _raw(ATTACKER.ip, HIK.ip, CPORT, 80, EXPLOIT, P | A, seq, 5001)
        return [(seq, bytes(junk)), (seq + len(EXPLOIT), real)]

    assert len(of_rule(alerts(_connection(build)), RULE)) == 1


def test_an_ipv6_decoy_with_ipv4_mapped_addresses_does_not_hide_the_request() -> None:
    # A decoy at the request's sequence number in an IPv6 packet from ::ffff:<attacker> to ::ffff:<camera>:
    # no stack takes it as a segment of the IPv4 connection (RFC 4291 2.5.5.2; Linux drops it), so neither may
    # camwatch (it stores IPv4 addresses IPv4-mapped): the request that follows is the one read.
    frames = _connection(_pieces(EXPLOIT, len(EXPLOIT)))
    at = next(i for i, (_, f) in enumerate(frames) if EXPLOIT[:16] in f)
    src, dst = f"::ffff:{ATTACKER.ip}", f"::ffff:{HIK.ip}"
    seq = struct.unpack_from("!I", frames[at][1], 14 + 20 + 4)[0]
    segment = synth.tcp(src, dst, CPORT, 80, b"X" * len(EXPLOIT), flags=P | A, seq=seq, ack=5001)
    decoy = synth.ether(ATTACKER.mac, HIK.mac, 0x86DD, synth.ipv6(src, dst, 6, segment))
    t = frames[at][0]
    engine, flows, records = run_frames([*frames[:at], (t, decoy), *frames[at:]], policy=POLICY)
    assert len(of_rule(records, RULE)) == 1
    assert len(flows) == 1 and engine.stats.truncated == 1  # malformed: in no flow


@pytest.mark.parametrize("checksum", [b"\0\0", b"\x12\x34"])
def test_a_request_whose_checksum_was_left_to_the_nic_is_still_read(checksum: bytes) -> None:
    # No conflicting copy: a checksum of 0, or a partial one left to the NIC on the capturing host, must not
    # lose the request (the device's answer acknowledges it).
    def build(seq: int) -> list[tuple[int, bytes]]:
        ip = bytearray(_raw(ATTACKER.ip, HIK.ip, CPORT, 80, EXPLOIT, P | A, seq, 5001))
        ip[20 + 16 : 20 + 18] = checksum
        return [(seq + len(EXPLOIT), bytes(ip))]

    assert len(of_rule(alerts(_connection(build)), RULE)) == 1


def test_a_big_tcp_super_frame_with_total_length_zero_is_read() -> None:
    def build(seq: int) -> list[tuple[int, bytes]]:
        ip = bytearray(_raw(ATTACKER.ip, HIK.ip, CPORT, 80, EXPLOIT, P | A, seq, 5001))
        ip[2:4] = b"\0\0"  # Linux BIG TCP / TSO: the IPv4 total length is 0
        ip[10:12] = b"\0\0"
        ip[10:12] = struct.pack("!H", synth.checksum(bytes(ip[:20])))
        return [(seq + len(EXPLOIT), bytes(ip))]

    assert len(of_rule(alerts(_connection(build)), RULE)) == 1


def test_an_upload_body_is_skipped_and_the_next_request_read() -> None:
    # A 60 kB POST body on a kept-alive connection: its segments are not all analysed, the next head is.
    body = b"\x00" * 60_000
    post = attacks.http_request("POST", "/upload", HIK.ip, body=body, content_type="application/octet-stream")
    turns = [(HARMLESS, OK)] * 6 + [(post, OK), (EXPLOIT, OK)]
    frames = exchange(T0, ATTACKER, HIK, CPORT, 80, turns)
    engine, _, records = run_frames(_segmented(frames, 1400), policy=POLICY)
    assert len(of_rule(records, RULE)) == 1
    assert engine.analysis.stats.packets < 30  # 43 segments carry the body


def _segmented(frames: list[tuple[int, bytes]], mss: int) -> list[tuple[int, bytes]]:
    """The frames with their TCP payloads cut at ``mss`` bytes (tcp_exchange sends one segment a turn)."""
    out: list[tuple[int, bytes]] = []
    for ts, frame in frames:
        ip = frame[14:]
        head = ip[20:40]
        payload = ip[40:]
        if len(payload) <= mss:
            out.append((ts, frame))
            continue
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        sport, dport, seq, ack = struct.unpack("!HHII", head[:12])
        for i in range(0, len(payload), mss):
            seg = _raw(src, dst, sport, dport, payload[i : i + mss], head[13], seq + i, ack)
            out.append((ts + i, frame[:14] + seg))
    return out


def test_a_suspect_segment_waits_for_a_good_copy_or_for_the_stream_to_go_on() -> None:
    stats = OrderStats()
    order = TcpOrder()
    assert order.feed(100, False, b"junk", 1, stats, valid=False) == []
    assert order.feed(100, False, b"real", 2, stats) == [(b"real", 2)] and stats.bad_checksums == 1
    # Unverified and never contradicted: delivered once the sender goes past it, or the receiver acks it.
    assert order.feed(104, False, b"next", 3, stats, valid=False) == []
    assert order.feed(108, False, b"more", 4, stats) == [(b"next", 3), (b"more", 4)]
    assert order.feed(112, False, b"last", 5, stats, valid=False) == []
    assert order.confirm(115, stats) == [] and order.confirm(116, stats) == [(b"last", 5)]


def test_an_exploit_with_a_lowercase_method_is_read() -> None:
    # GoAhead and its kin upper-case the method: "get /System/configurationFile?auth=..." is served as GET.
    lower = b"get" + EXPLOIT[3:]
    assert EXPLOIT.startswith(b"GET ")
    assert len(of_rule(alerts(_connection(_pieces(lower, len(lower)))), RULE)) == 1
