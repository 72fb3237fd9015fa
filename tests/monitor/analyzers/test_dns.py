"""DNS analyzer: real payloads from the corpus against Zeek's dns.log, Arkime's dns fields and nDPI's
hostnames; hand-built edge cases (compression loops, forward pointers, long names); malformed input.

Payloads are extracted with camwatch's own reader and decoder (`payloads.py`). Zeek's rows on port 137
(NetBIOS name service, which Zeek logs as DNS) are not DNS wire format and are left out. Fragmented
datagrams (zeek/ipv6-fragmented-dns.pcap, ndpi/dns_fragmented.pcap) need IP reassembly, which is not
this analyzer's job: rows whose messages only exist reassembled are counted, and asserted to be
exactly the rows we miss.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError, dns
from tests.monitor.analyzers.payloads import (
    only_analyzer_errors,
    print_table,
    tcp_streams,
    udp_first_fragments,
    udp_fragmented,
    udp_payloads,
)
from tests.monitor.analyzers.sniffing import sniffer_verdicts
from tests.truth import arkime
from tests.truth.ndpi import read_ndpi_out
from tests.truth.paths import PCAPS, arkime_pairs, ndpi_pairs, zeek_log_pairs
from tests.truth.zeek import ZeekLog, ZeekValue, as_int, as_list, as_str, read_zeek_log

DNS_PORTS = (53, 5353, 5355)
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "LOC": 29}
QTYPES |= {"SRV": 33, "ANY": 255}
RTYPE_NAMES = {v: k for k, v in QTYPES.items()}


@dataclass(frozen=True)
class Seen:
    """One parsed message with its endpoints."""

    src: str
    sport: int
    dst: str
    dport: int
    msg: dns.DnsMessage


def _messages(pcap: Path) -> tuple[list[Seen], int]:
    """Every DNS message of a capture (UDP on the DNS ports, TCP 53 streams) and the parse failures."""
    seen: list[Seen] = []
    failures = 0
    for port in DNS_PORTS:
        for p in udp_payloads(pcap, port):
            try:
                seen.append(Seen(p.src, p.sport, p.dst, p.dport, dns.parse(p.payload)))
            except AnalyzerError:
                failures += 1
    for (src, sport, dst, dport), stream in tcp_streams(pcap, 53).items():
        for raw in dns.split_tcp_messages(stream, partial_ok=True):
            try:
                seen.append(Seen(src, sport, dst, dport, dns.parse(raw)))
            except AnalyzerError:
                failures += 1
    return seen, failures


def _zeek_answer(rec: dns.DnsRecord) -> str:
    # Zeek's dns.log writes each TXT string as "TXT <len> <text>".
    if rec.rtype == dns.TYPE_TXT:
        return " ".join(f"TXT {len(s)} {s}" for s in rec.txt)
    return rec.value


def _query_name(msg: dns.DnsMessage) -> str | None:
    if msg.questions:
        return msg.questions[0][0]
    return msg.answers[0].name if msg.answers else None


def _endpoints_match(s: Seen, row: Mapping[str, ZeekValue]) -> bool:
    ends = {(s.src, s.sport), (s.dst, s.dport)}
    orig = (row["id.orig_h"], int(str(row["id.orig_p"])))
    resp = (row["id.resp_h"], int(str(row["id.resp_p"])))
    return ends == {orig, resp}


ZEEK_DNS = [(p, t) for p, t in zeek_log_pairs() if t.name == "dns.log"]


def _zeek_rows(log: ZeekLog) -> Iterator[Mapping[str, ZeekValue]]:
    for row in log.rows:
        if as_str(row["id.resp_p"]) == "137" or as_str(row["id.orig_p"]) == "137":
            continue  # NetBIOS-NS
        yield row


def _zeek_row_matches(row: Mapping[str, ZeekValue], seen: list[Seen]) -> tuple[bool, bool]:
    """(query found, answers found) for one dns.log row."""
    trans_id = as_int(row["trans_id"])
    query = (as_str(row["query"]) or "").lower()
    qtype = as_int(row["qtype"])
    rcode = as_int(row["rcode"])
    answers = as_list(row["answers"])
    cands = [s.msg for s in seen if s.msg.id == trans_id and _endpoints_match(s, row)]
    q_ok = any(
        _query_name(m) == query and (qtype is None or not m.questions or m.questions[0][1] == qtype)
        for m in cands
    )
    responses = [m for m in cands if m.is_response and _query_name(m) == query]
    a_ok = any(
        (rcode is None or m.rcode == rcode)
        and (not answers or [_zeek_answer(a) for a in m.answers] == answers)
        for m in responses
    ) or (rcode is None and not answers)
    return q_ok, a_ok


def test_dns_matches_zeek_dns_log(capsys: pytest.CaptureFixture[str]) -> None:
    table: list[tuple[object, ...]] = []
    failures: list[str] = []
    for pcap, log in ZEEK_DNS:
        seen, bad = _messages(pcap)
        fragments = udp_fragmented(pcap)
        rows = list(_zeek_rows(read_zeek_log(log)))
        q_ok = a_ok = need_reassembly = 0
        for row in rows:
            q, a = _zeek_row_matches(row, seen)
            if q and a:
                q_ok += 1
                a_ok += 1
            elif fragments:
                need_reassembly += 1  # the message only exists after IP reassembly
            else:
                q_ok += q
                a_ok += a
                failures.append(f"{pcap.name}: {row['query']} {row['answers']} (query {q}, answers {a})")
        table.append((pcap.name, len(rows), q_ok, a_ok, need_reassembly, len(seen), bad))
    print_table(
        capsys,
        "DNS vs Zeek dns.log",
        ("capture", "rows", "query ok", "answers ok", "reassembly", "our msgs", "parse err"),
        table,
    )
    assert not failures, failures


def test_ipv6_fragmented_dns_needs_reassembly() -> None:
    """The known divergence, asserted: the dns.log rows we miss are exactly those answered by a datagram that
    only exists after IPv6 fragment reassembly (not the analyzer's job), and of those only the answer is
    missing; every other row agrees. The first fragment holds the DNS header, which names the transaction."""
    pcap = PCAPS / "zeek" / "ipv6-fragmented-dns.pcap"
    log = next(t for p, t in ZEEK_DNS if p == pcap)
    seen, bad = _messages(pcap)
    assert bad == 0
    fragmented = {
        (frozenset({(f.src, f.sport), (f.dst, f.dport)}), struct.unpack_from("!H", f.payload)[0])
        for f in udp_first_fragments(pcap, 53)
    }
    assert fragmented  # the capture still has a fragmented DNS datagram
    rows = list(_zeek_rows(read_zeek_log(log)))
    missed: list[tuple[int, bool, bool]] = []
    need_reassembly: list[tuple[int, bool, bool]] = []
    for n, row in enumerate(rows):
        q, a = _zeek_row_matches(row, seen)
        if not (q and a):
            missed.append((n, q, a))
        ends = frozenset(
            {
                (as_str(row[h]), as_int(row[p]))
                for h, p in (("id.orig_h", "id.orig_p"), ("id.resp_h", "id.resp_p"))
            }
        )
        if (ends, as_int(row["trans_id"])) in fragmented and as_int(row["rcode"]) is not None:
            need_reassembly.append((n, True, False))  # the query was seen, its answer is in the fragments
    assert len(rows) == 3 and len(rows) > len(missed)  # some rows agree
    assert missed == need_reassembly != []


def _arkime_answer_matches(ans: Mapping[str, ZeekValue], records: list[dns.DnsRecord]) -> bool:
    name = str(ans.get("name", "")).lower()
    rtype = QTYPES.get(str(ans.get("type")))
    value: str | None = None
    for key in ("ip", "cname", "nameserver", "mx"):
        if key in ans:
            value = str(ans[key]).lower()
    if "txt" in ans:
        txt = ans["txt"]
        value = " ".join(str(t) for t in txt) if isinstance(txt, list) else str(txt)
    return any(r.name == name and r.rtype == rtype and (value is None or r.value == value) for r in records)


def test_dns_matches_arkime(capsys: pytest.CaptureFixture[str]) -> None:
    table: list[tuple[object, ...]] = []
    failures: list[str] = []
    for pcap, truth in arkime_pairs():
        sessions = arkime.read_arkime_test(truth)
        if not any(s.get("dns") for s in sessions):
            continue
        seen, bad = _messages(pcap)
        ours = {q[0] for s in seen for q in s.msg.questions}
        hosts = [h.lower() for s in sessions for h in arkime.dns_query_hosts(s)]
        n_tx = n_ok = n_ans = n_ans_ok = 0
        for session in sessions:
            dns_field = session.get("dns")
            for tx in dns_field if isinstance(dns_field, list) else [dns_field] if dns_field else []:
                n_tx += 1
                host = str(tx.get("queryHost", "")).lower()
                qtype = QTYPES.get(str(tx.get("qt")))
                status = tx.get("status")
                cands = [
                    s.msg
                    for s in seen
                    if s.msg.questions and s.msg.questions[0][0] == host and s.msg.questions[0][1] == qtype
                ]
                replies = [m for m in cands if m.is_response and RCODES.get(m.rcode) == status]
                if cands and (status is None or replies):
                    n_ok += 1
                else:
                    failures.append(f"{pcap.name}: transaction {host} {tx.get('qt')} {status}")
                for ans in tx.get("answers", []):
                    n_ans += 1
                    records = [r for m in replies for r in (*m.answers, *m.authority, *m.additional)]
                    if _arkime_answer_matches(ans, records):
                        n_ans_ok += 1
                    else:
                        failures.append(f"{pcap.name}: answer {ans}")
        missing = sorted(set(hosts) - ours)
        failures += [f"{pcap.name}: queryHost {h} not seen" for h in missing]
        table.append((pcap.name, len(set(hosts)), len(set(hosts) & ours), n_tx, n_ok, n_ans, n_ans_ok, bad))
    print_table(
        capsys,
        "DNS vs Arkime dns[]",
        ("capture", "hosts", "hosts ok", "tx", "tx ok", "answers", "answers ok", "parse err"),
        table,
    )
    assert table, "no Arkime DNS truth found"
    assert not failures, failures


def test_dns_matches_ndpi_hostnames(capsys: pytest.CaptureFixture[str]) -> None:
    """nDPI's `Hostname/SNI` of each DNS flow is a question name of that flow's messages."""
    table: list[tuple[object, ...]] = []
    failures: list[str] = []
    for pcap, out in ndpi_pairs():
        flows = [f for f in read_ndpi_out(out).flows if f.protocol == "DNS" and f.hostname]
        if not flows:
            continue
        seen, bad = _messages(pcap)
        ok = frag = 0
        fragments = udp_fragmented(pcap, 53)
        for f in flows:
            ends = {(f.src_ip.strip("[]"), f.src_port), (f.dst_ip.strip("[]"), f.dst_port)}
            names = {_query_name(s.msg) for s in seen if {(s.src, s.sport), (s.dst, s.dport)} == ends}
            if (f.hostname or "").lower() in names:
                ok += 1
            elif fragments and not names:
                frag += 1
            else:
                failures.append(f"{pcap.name}: {f.hostname} not in {names}")
        table.append((pcap.name, len(flows), ok, frag, len(seen), bad))
    print_table(
        capsys,
        "DNS vs nDPI hostnames",
        ("capture", "DNS flows", "hostname ok", "reassembly", "our msgs", "parse err"),
        table,
    )
    assert not failures, failures


def test_malformed_dns_capture_is_rejected_cleanly() -> None:
    # nDPI flags these responses "Malformed Packet / Invalid DNS Query Length": a 1388-byte name.
    payloads = [p.payload for p in udp_payloads(PCAPS / "ndpi" / "malformed_dns.pcap", 53)]
    outcomes = []
    for data in payloads:
        try:
            outcomes.append(dns.parse(data).questions[0][0])
        except AnalyzerError as exc:
            outcomes.append(exc.reason)
    assert outcomes.count("name longer than 255 octets") == 4
    assert "www.xt.com" in outcomes


def test_dns_over_tcp_split() -> None:
    streams = tcp_streams(PCAPS / "arkime" / "dns-tcp.pcap", 53)
    names = sorted(dns.parse(m).questions[0][0] for s in streams.values() for m in dns.split_tcp_messages(s))
    assert names == ["aol.com", "aol.com", "google.com", "google.com"]
    assert dns.split_tcp_messages(b"\x00\x02ab\x00\x01c") == [b"ab", b"c"]
    with pytest.raises(AnalyzerError):
        dns.split_tcp_messages(b"\x00\x05abc")
    assert dns.split_tcp_messages(b"\x00\x02ab\x00", partial_ok=True) == [b"ab"]


# --- hand-built messages ---------------------------------------------------------------------------


def _header(qd: int = 1, an: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qd, an, 0, 0)


def _name(*labels: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\x00"


def test_compression_and_record_types() -> None:
    q = _header(qd=1, an=4, flags=0x8180) + _name("Cam", "Example", "COM") + struct.pack("!HH", 1, 1)
    ptr = b"\xc0\x0c"  # to the question name at offset 12
    a = ptr + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 7])
    cname_target = b"\x03www" + ptr
    cname = ptr + struct.pack("!HHIH", 5, 1, 30, len(cname_target)) + cname_target
    txt_data = b"\x07model=X\x05fw=1."
    txt = ptr + struct.pack("!HHIH", 16, 1, 30, len(txt_data)) + txt_data
    aaaa = ptr + struct.pack("!HHIH", 28, 1, 30, 16) + bytes(15) + b"\x01"
    msg = dns.parse(q + a + cname + txt + aaaa)
    assert msg.is_response and msg.rcode == 0 and msg.opcode == 0 and msg.id == 0x1234
    assert msg.questions == (("cam.example.com", 1, 1),)
    assert [(r.name, r.rtype, r.value) for r in msg.answers] == [
        ("cam.example.com", 1, "192.0.2.7"),
        ("cam.example.com", 5, "www.cam.example.com"),
        ("cam.example.com", 16, "model=X fw=1."),
        ("cam.example.com", 28, "::1"),
    ]
    assert msg.answers[2].txt == ("model=X", "fw=1.")
    assert dns.looks_like(q + a + cname + txt + aaaa)


@pytest.mark.parametrize(
    ("name_bytes", "reason"),
    [
        (b"\xc0\x0c", "does not point backwards"),  # points at itself
        (b"\xc0\x20", "does not point backwards"),  # points forwards
        (b"\x01a\xc0\x0c", "does not point backwards"),  # loops to its own start
        (b"\x40", "unsupported label type"),
        (b"\x05ab", "label runs past"),
        (b"\xc0", "compression pointer cut"),
        (
            b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\x00",
            "longer",
        ),
    ],
)
def test_bad_names(name_bytes: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        dns.read_name(_header() + name_bytes, 12)


def test_pointer_chain_back_is_fine_but_a_cycle_is_not() -> None:
    # name1 at 12: "a" + root; name2 at 19: "b" -> name1; name3: pointer -> name2 (chain of two hops)
    body = _name("a") + struct.pack("!HH", 1, 1)
    body += b"\x01b\xc0\x0c" + struct.pack("!HH", 1, 1)
    body += b"\xc0\x13" + struct.pack("!HH", 1, 1)
    msg = dns.parse(_header(qd=3) + body)
    assert [q[0] for q in msg.questions] == ["a", "b.a", "b.a"]
    # Two names pointing at each other: 12 -> 14 is forward, so it never loops.
    cyclic = _header(qd=1) + b"\xc0\x0e\xc0\x0c" + struct.pack("!HH", 1, 1)
    with pytest.raises(AnalyzerError):
        dns.parse(cyclic)


def test_counts_that_cannot_fit() -> None:
    with pytest.raises(AnalyzerError, match="cannot fit"):
        dns.parse(struct.pack("!HHHHHH", 1, 0, 0xFFFF, 0, 0, 0) + bytes(20))
    assert not dns.looks_like(struct.pack("!HHHHHH", 1, 0, 0xFFFF, 0, 0, 0) + bytes(20))
    assert not dns.looks_like(b"")


def _netbios_encoded(name: bytes) -> str:
    """RFC 1001 first-level encoding: each half-byte of the 16-byte padded name as a letter A-P."""
    padded = name.ljust(16, b" ")
    return "".join(chr(ord("A") + (b >> 4)) + chr(ord("A") + (b & 0xF)) for b in padded)


def test_netbios_name_service_is_not_dns() -> None:
    """NBNS (udp/137) shares DNS's wire format; its names are a 32-letter A-P label, which DNS never has."""
    nb = _netbios_encoded(b"WORKGROUP")
    assert len(nb) == 32 and set(nb) <= set("ABCDEFGHIJKLMNOP")
    query = _header(flags=0x0110) + _name(nb) + struct.pack("!HH", 0x20, 1)  # NB query, broadcast
    assert dns.parse(query).questions == ((nb.lower(), 0x20, 1),)  # it parses: the format is DNS's
    assert not dns.looks_like(query)
    answer = _header(qd=0, an=1, flags=0x8500) + _name(nb) + struct.pack("!HHIH", 0x20, 1, 300, 6) + bytes(6)
    assert not dns.looks_like(answer)
    # A 32-character label that is not NetBIOS-encoded is left alone (lower case, or letters past P).
    for label in (nb.lower(), "Q" * 32, nb[:31]):
        assert dns.looks_like(_header() + _name(label, "example") + struct.pack("!HH", 1, 1)), label


def test_looks_like_agrees_with_ndpi_on_netbios_and_dns() -> None:
    """On the nDPI captures it fires on every UDP flow nDPI finds DNS and on none it finds NetBIOS."""
    verdicts = sniffer_verdicts(dns.looks_like, "UDP")
    by_protocol = {p: [v for v in verdicts if v.flow.protocol == p] for p in ("DNS", "NetBIOS")}
    assert len(by_protocol["DNS"]) >= 40 and len(by_protocol["NetBIOS"]) >= 12
    assert [str(v) for v in by_protocol["DNS"] if not v.fired] == []
    assert [str(v) for v in by_protocol["NetBIOS"] if v.fired] == []


# --- robustness ------------------------------------------------------------------------------------


def _corpus_samples() -> list[bytes]:
    out: list[bytes] = []
    for rel in ("zeek/wikipedia.pcap", "arkime/dns-wiresharkrepo.pcap", "zeek/dns/mdns.pcap"):
        out += [p.payload for p in udp_payloads(PCAPS / rel)][:40]
    return [p for p in out if p]


SAMPLES = _corpus_samples()


def test_every_truncation_raises_only_analyzer_error() -> None:
    assert SAMPLES
    for data in SAMPLES:
        for n in range(len(data)):
            only_analyzer_errors(dns.parse, data[:n])
            assert isinstance(dns.looks_like(data[:n]), bool)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    only_analyzer_errors(dns.parse, data)
    only_analyzer_errors(dns.split_tcp_messages, data)
    assert isinstance(dns.looks_like(data), bool)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(min_value=0), st.binary(min_size=1, max_size=4))
def test_mutated_payloads_raise_only_analyzer_error(data: bytes, where: int, patch: bytes) -> None:
    pos = where % len(data)
    only_analyzer_errors(dns.parse, data[:pos] + patch + data[pos + len(patch) :])
