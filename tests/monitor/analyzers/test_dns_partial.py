"""DNS messages cut short: `dns.parse(data, partial_ok=True)` keeps the questions and records that are whole.

camwatch does not reassemble IP fragments, so the analyzer gets the first fragment of an answer larger than
the path MTU (EDNS0 answers of up to 4096 bytes) as if it were the whole datagram. These tests cut hand-built
messages at every byte, parse the first fragments of real fragmented answers (nDPI's dns_fragmented.pcap), and
check that cut, malformed or hostile data still only raises AnalyzerError and always ends.
"""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, dns
from monitor.events import DnsAnswer, ResolvedAddress
from tests.monitor.analyzers import test_dns
from tests.monitor.analyzers.payloads import only_analyzer_errors, udp_first_fragments
from tests.monitor.analyzers.recording import RecordingContext, make_flow
from tests.truth.paths import PCAPS

QUESTION = "vms.cloudvms.example.com"


def _name(*labels: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\x00"


def _rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def _message(flags: int = 0x8180) -> tuple[bytes, int, list[int]]:
    """A response with every kind of record the parser reads, in all three sections.

    Returns the message, where its question ends and where each record ends (in order)."""
    at_q = b"\xc0\x0c"  # the question name, at offset 12
    qname = _name(*QUESTION.split("."))
    at_example = struct.pack("!H", 0xC000 | (12 + qname.index(b"\x07example")))  # example.com, in it
    body = qname + struct.pack("!HH", 1, 1)
    question_end = 12 + len(body)
    records = [
        _rr(at_q, dns.TYPE_CNAME, 300, _name("edge", "cdn", "example", "net")),
        _rr(_name("edge", "cdn", "example", "net"), dns.TYPE_A, 60, bytes([203, 0, 113, 1])),
        _rr(at_q, dns.TYPE_A, 60, bytes([203, 0, 113, 2])),
        _rr(at_q, dns.TYPE_AAAA, 60, bytes(15) + b"\x01"),
        _rr(at_q, dns.TYPE_TXT, 60, b"\x07model=X\x05fw=1."),
        _rr(at_q, dns.TYPE_MX, 60, b"\x00\x0a\x02mx" + at_q),
        # authority: one SOA, for example.com
        _rr(at_example, dns.TYPE_SOA, 60, b"\x02ns" + at_example + b"\x00" + bytes(20)),
        # additional: an SRV and the EDNS0 OPT pseudo-record that ends most large answers
        _rr(at_q, dns.TYPE_SRV, 60, struct.pack("!HHH", 0, 0, 443) + b"\x01s" + at_q),
        b"\x00" + struct.pack("!HHIH", dns.TYPE_OPT, 4096, 0, 0),
    ]
    ends = []
    for rec in records:
        body += rec
        ends.append(12 + len(body))
    header = struct.pack("!HHHHHH", 0x4242, flags, 1, 6, 1, 2)
    return header + body, question_end, ends


def _all_records(msg: dns.DnsMessage) -> list[dns.DnsRecord]:
    return [*msg.answers, *msg.authority, *msg.additional]


def test_a_message_cut_at_every_byte_keeps_exactly_the_whole_records() -> None:
    data, question_end, ends = _message()
    whole = dns.parse(data)
    assert not whole.partial and len(_all_records(whole)) == len(ends) == 9
    assert ends[-1] == len(data)
    for n in range(len(data)):
        cut = data[:n]
        with pytest.raises(AnalyzerError):
            dns.parse(cut)  # without partial_ok a cut message is an error, as before
        if n < question_end:
            # Nothing whole: no question, so nothing to say this was DNS.
            with pytest.raises(AnalyzerError):
                dns.parse(cut, partial_ok=True)
            continue
        msg = dns.parse(cut, partial_ok=True)
        kept = sum(1 for end in ends if end <= n)
        assert msg.partial, n
        assert msg.questions == whole.questions, n
        assert _all_records(msg) == _all_records(whole)[:kept], n
        # Each whole record stays in its own section.
        assert msg.answers == whole.answers[: len(msg.answers)]
        assert (msg.id, msg.flags, msg.rcode, msg.is_response) == (0x4242, 0x8180, 0, True)
    assert dns.parse(data, partial_ok=True) == whole  # whole: partial_ok changes nothing


def test_a_cut_answer_gives_the_addresses_of_its_whole_records() -> None:
    data, _, ends = _message()
    # Cut inside the AAAA record (the fourth): the CNAME and both A records are whole.
    msg = dns.parse(data[: ends[3] - 5], partial_ok=True)
    assert msg.partial
    assert dns.resolved_addresses(msg) == (
        ResolvedAddress("203.0.113.1", 60, (QUESTION, "edge.cdn.example.net")),
        ResolvedAddress("203.0.113.2", 60, (QUESTION,)),
    )


def test_the_handler_reads_a_cut_udp_answer() -> None:
    data, _, ends = _message()
    flow = make_flow("10.20.0.11", 40001, "10.20.0.1", 53, proto=17)
    flow.protocol = "dns"
    ctx = RecordingContext()
    assert dns.handle_dns(ctx, flow, False, data[: ends[2] + 3], 1)
    (answer,) = ctx.of(DnsAnswer)
    assert isinstance(answer, DnsAnswer) and answer.name == QUESTION
    assert [a.address for a in answer.addresses] == ["203.0.113.1", "203.0.113.2"]
    # Over TCP a message is whole by its length prefix: one that is cut inside is malformed.
    tcp = make_flow("10.20.0.11", 40001, "10.20.0.1", 53, proto=6)
    cut = data[: ends[2] + 3]
    with pytest.raises(AnalyzerError):
        dns.handle_dns(RecordingContext(), tcp, False, len(cut).to_bytes(2, "big") + cut, 1)


def test_a_big_answer_cut_like_a_first_fragment() -> None:
    # 120 A records for the name (16 bytes each with compression): 1962 bytes, more than 1472 (what an IPv4
    # first fragment on a 1500-byte MTU carries after the UDP header).
    body = _name(*QUESTION.split(".")) + struct.pack("!HH", 1, 1)
    for i in range(120):
        body += _rr(b"\xc0\x0c", dns.TYPE_A, 300, bytes([203, 0, 113, i + 1]))
    data = struct.pack("!HHHHHH", 7, 0x8180, 1, 120, 0, 0) + body
    with pytest.raises(AnalyzerError, match="record header cut at 1468"):
        dns.parse(data[:1472])
    msg = dns.parse(data[:1472], partial_ok=True)
    assert msg.partial and len(msg.answers) == (1472 - 12 - 30) // 16 == 89
    assert [r.value for r in msg.answers] == [f"203.0.113.{i + 1}" for i in range(89)]


def test_tc_bit_answers() -> None:
    data, _, ends = _message(flags=0x8380)  # TC set
    # A server that cut at a record and fixed the counts (RFC 2181 9): whole, with its TC bit.
    header = struct.pack("!HHHHHH", 0x4242, 0x8380, 1, 3, 0, 0)
    whole = dns.parse(header + data[12 : ends[2]])
    assert whole.truncated and not whole.partial
    assert [a.address for a in dns.resolved_addresses(whole)] == ["203.0.113.1", "203.0.113.2"]
    # One that cut in the middle of a record and left the counts: the whole records, partial.
    cut = dns.parse(data[: ends[2] + 7], partial_ok=True)
    assert cut.truncated and cut.partial
    assert [a.address for a in dns.resolved_addresses(cut)] == ["203.0.113.1", "203.0.113.2"]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_rr(b"\xc0\x0c", dns.TYPE_A, 60, bytes(5)), "A record with 5 bytes"),
        (_rr(b"\xff\xff", dns.TYPE_A, 60, bytes(4)), "does not point backwards"),
        (_rr(b"\x40", dns.TYPE_A, 60, bytes(4)), "unsupported label type"),
        # Its RDATA is all there, but the name in it runs past RDLENGTH and the end of the data.
        (_rr(b"\xc0\x0c", dns.TYPE_CNAME, 60, b"\x05ab"), "name in RDATA runs past RDLENGTH"),
        (_rr(b"\xc0\x0c", dns.TYPE_TXT, 60, b"\x09abc"), "TXT character-string"),
    ],
)
def test_malformed_records_are_errors_even_when_the_message_is_cut(record: bytes, reason: str) -> None:
    data, _, ends = _message()
    # The bad record follows the first one and the data ends with it (the header counts 8 more records):
    # the message is cut, which does not excuse a record that is all there and malformed.
    bad = data[: ends[0]] + record
    with pytest.raises(AnalyzerError, match=reason):
        dns.parse(bad, partial_ok=True)


def test_counts_no_message_could_hold_are_an_error() -> None:
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 0xFFFF, 0, 0)
    data = header + _name("a") + struct.pack("!HH", 1, 1) + bytes(40)
    with pytest.raises(AnalyzerError, match="cannot fit in 65535 bytes"):
        dns.parse(data, partial_ok=True)


def test_hostile_counts_end_quickly() -> None:
    # The largest counts a message could hold, over data that keeps satisfying them as long as it lasts: a
    # question of one root name, then records of a root name and no RDATA. The loops end at the data's end.
    qd, an = 1000, 5000
    data = struct.pack("!HHHHHH", 1, 0x8180, qd, an, 0, 0) + (b"\x00" + bytes(4)) * qd
    data += (b"\x00" + struct.pack("!HHIH", 99, 1, 0, 0)) * 2000
    started = time.perf_counter()
    msg = dns.parse(data, partial_ok=True)
    assert time.perf_counter() - started < 1.0
    assert msg.partial and len(msg.questions) == qd and len(msg.answers) == 2000
    # Pointers only go backwards, so a cut message cannot make a name loop either.
    looping = struct.pack("!HHHHHH", 1, 0x8180, 1, 2, 0, 0) + b"\xc0\x0e\xc0\x0c" + bytes(4)
    with pytest.raises(AnalyzerError, match="does not point backwards"):
        dns.parse(looping, partial_ok=True)


def test_first_fragments_of_real_answers() -> None:
    """nDPI's dns_fragmented.pcap: EDNS0 answers (DNSSEC) in IPv4 fragments. The first fragment of each holds
    the question and the first records; the A/AAAA answers are whole in it, their RRSIGs cut."""
    fragments = udp_first_fragments(PCAPS / "ndpi" / "dns_fragmented.pcap", 53)
    assert len(fragments) >= 6
    resolved: set[tuple[str, str]] = set()
    for f in fragments:
        with pytest.raises(AnalyzerError):
            dns.parse(f.payload)
        msg = dns.parse(f.payload, partial_ok=True)
        assert msg.partial and msg.is_response and len(msg.questions) == 1
        resolved |= {(a.names[0], a.address) for a in dns.resolved_addresses(msg)}
    assert resolved == {("fg2.weberlab.de", "194.247.4.10"), ("pa.weberlab.de", "2001:470:1f0b:1024::2")}


# The strict parser's corpus samples (real DNS and mDNS messages), cut here instead.
SAMPLES = test_dns.SAMPLES


def _lenient(data: bytes) -> dns.DnsMessage:
    return dns.parse(data, partial_ok=True)


def test_every_cut_of_real_messages_keeps_a_prefix_of_their_records() -> None:
    assert SAMPLES
    for data in SAMPLES:
        try:
            whole = dns.parse(data)
        except AnalyzerError:
            continue
        for n in range(len(data) + 1):
            try:
                msg = _lenient(data[:n])
            except AnalyzerError:
                continue
            assert msg.questions == whole.questions[: len(msg.questions)]
            assert _all_records(msg) == _all_records(whole)[: len(_all_records(msg))]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_analyzer_error_when_partial_is_ok(data: bytes) -> None:
    only_analyzer_errors(_lenient, data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(SAMPLES), st.integers(min_value=0), st.binary(min_size=1, max_size=4), st.integers(0, 600)
)
def test_mutated_cut_payloads_raise_only_analyzer_error(
    data: bytes, where: int, patch: bytes, cut: int
) -> None:
    pos = where % len(data)
    mutated = data[:pos] + patch + data[pos + len(patch) :]
    only_analyzer_errors(_lenient, mutated[:cut])
