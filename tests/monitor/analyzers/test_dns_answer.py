"""The DNS binding reports answers as ``DnsAnswer`` events: addresses, the chain of names, TTLs.

Messages are built with scapy (an independent encoder, with name compression) and with the lab's plain
builder; the engine test checks who received the answer.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from lab import synth
from lab.payloads import dns_query
from lab.sitelife import a_record, cname_record, dns_response
from monitor.analyzers import dns
from monitor.events import DnsAnswer, ResolvedAddress
from monitor.policy import SitePolicy
from tests.enginerun import run_frames

NS = 1_000_000_000


def _scapy(question: str, answers: list[DNSRR], rcode: int = 0) -> bytes:
    msg = DNS(id=7, qr=1, rd=1, ra=1, rcode=rcode, qd=DNSQR(qname=question), an=answers)
    return bytes(msg)


def test_addresses_carry_the_chain_from_the_question_and_its_smallest_ttl() -> None:
    data = _scapy(
        "vms.cloud.example.com",
        [
            DNSRR(rrname="vms.cloud.example.com", type="CNAME", ttl=300, rdata="edge.cdn.example.net"),
            DNSRR(rrname="edge.cdn.example.net", type="CNAME", ttl=120, rdata="e1.cdn.example.net"),
            DNSRR(rrname="e1.cdn.example.net", type="A", ttl=600, rdata="203.0.113.5"),
            DNSRR(rrname="e1.cdn.example.net", type="AAAA", ttl=30, rdata="2001:db8::5"),
        ],
    )
    chain = ("vms.cloud.example.com", "edge.cdn.example.net", "e1.cdn.example.net")
    assert dns.resolved_addresses(dns.parse(data)) == (
        ResolvedAddress("203.0.113.5", 120, chain),
        ResolvedAddress("2001:db8::5", 30, chain),
    )


def test_records_off_the_questions_chain_explain_nothing() -> None:
    data = _scapy(
        "ntp.example.org",
        [
            DNSRR(rrname="ntp.example.org", type="A", ttl=60, rdata="192.0.2.10"),
            # Unsolicited: an address for a name nobody asked about (a poisoning attempt looks like this).
            DNSRR(rrname="bank.example.com", type="A", ttl=60, rdata="198.51.100.1"),
        ],
    )
    assert dns.resolved_addresses(dns.parse(data)) == (
        ResolvedAddress("192.0.2.10", 60, ("ntp.example.org",)),
    )


@pytest.mark.parametrize(
    "data",
    [
        _scapy("gone.example.com", [], rcode=3),  # NXDOMAIN
        _scapy("x.example.com", [DNSRR(rrname="x.example.com", type="A", ttl=5, rdata="192.0.2.1")], rcode=2),
        _scapy("txt.example.com", [DNSRR(rrname="txt.example.com", type="TXT", ttl=5, rdata="hello")]),
        # A CNAME loop never reaches an address.
        _scapy(
            "a.example.com",
            [
                DNSRR(rrname="a.example.com", type="CNAME", ttl=5, rdata="b.example.com"),
                DNSRR(rrname="b.example.com", type="CNAME", ttl=5, rdata="a.example.com"),
            ],
        ),
    ],
)
def test_answers_without_usable_addresses_report_none(data: bytes) -> None:
    assert dns.resolved_addresses(dns.parse(data)) == ()


def test_a_loop_still_leaves_the_addresses_before_it() -> None:
    records = [
        cname_record("a.example.com", "b.example.com", 50),
        cname_record("b.example.com", "a.example.com", 50),
        a_record("b.example.com", "192.0.2.9", 500),
    ]
    msg = dns.parse(dns_response(1, "a.example.com", records))
    assert dns.resolved_addresses(msg) == (
        ResolvedAddress("192.0.2.9", 50, ("a.example.com", "b.example.com")),
    )


def test_the_engine_reports_the_answer_to_the_device_that_asked() -> None:
    cam, gw = ("44:19:b6:00:00:01", "10.20.0.11"), ("02:00:00:00:00:01", "10.20.0.1")
    query = dns_query(9, "time.example.org")
    answer = dns_response(9, "time.example.org", [a_record("time.example.org", "192.0.2.10", 600)])
    frames = [
        (1 * NS, synth.udp4_frame(cam[0], gw[0], cam[1], gw[1], 40000, 53, query)),
        (1 * NS + 1000, synth.udp4_frame(gw[0], cam[0], gw[1], cam[1], 53, 40000, answer)),
    ]
    engine, _, _ = run_frames(frames, policy=SitePolicy.default())
    # One batch: its events are still on the analysis.
    seen = [e for e in engine.analysis.events if isinstance(e, DnsAnswer)]
    assert len(seen) == 1
    event = seen[0]
    assert event.name == "time.example.org" and event.ts_ns == 1 * NS + 1000
    # The resolver sent it: the camera (the flow's source, which asked) received it.
    assert not event.from_src and event.flow.src[0] == cam[1]
    assert event.addresses == (ResolvedAddress("192.0.2.10", 600, ("time.example.org",)),)


_names = st.sampled_from(["a.example.com", "b.example.com", "c.example.net", "x.example.org"])
_records = st.lists(
    st.one_of(
        st.builds(lambda o, t, ttl: cname_record(o, t, ttl), _names, _names, st.integers(0, 2**31 - 1)),
        st.builds(
            lambda o, last, ttl: a_record(o, f"192.0.2.{last}", ttl),
            _names,
            st.integers(0, 255),
            st.integers(0, 2**31 - 1),
        ),
    ),
    max_size=8,
)


@settings(max_examples=300)
@given(_names, _records)
def test_every_reported_address_lies_on_the_questions_chain(
    question: str, records: list[tuple[str, int, int, bytes]]
) -> None:
    msg = dns.parse(dns_response(1, question, records))
    cnames: dict[str, str] = {}
    cname_ttls: dict[str, int] = {}
    for r in msg.answers:
        if r.rtype == dns.TYPE_CNAME and r.name not in cnames:
            cnames[r.name], cname_ttls[r.name] = r.value, r.ttl
    for resolved in dns.resolved_addresses(msg):
        chain = resolved.names
        assert chain[0] == question and len(set(chain)) == len(chain)
        # Each step is an alias the answer gave (the first one given for that name).
        assert all(cnames.get(a) == b for a, b in itertools.pairwise(chain))
        owners = {r.name for r in msg.answers if r.rtype == dns.TYPE_A and r.value == resolved.address}
        assert chain[-1] in owners
        # The TTL is no longer than any alias on the way, nor than the address record.
        assert all(resolved.ttl <= cname_ttls[a] for a in chain[:-1])
        assert resolved.ttl <= max(
            r.ttl for r in msg.answers if r.rtype == dns.TYPE_A and r.name == chain[-1]
        )
