"""Fuzz the DNS analyzer: only AnalyzerError may escape ``parse``/``split_tcp_messages``; ``looks_like`` never
raises. Seeds: every DNS payload of the corpus (UDP 53/5353/5355, TCP 53 messages).

Run: ``python -m fuzz.fuzz_dns [runs] [--engine atheris|mutate]`` (also driven by ``fuzz/run_all.py``).
"""

from __future__ import annotations

import contextlib
import sys

from monitor.analyzers import AnalyzerError, dns

NAME = "dns"


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    dns.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        msg = dns.parse(data)
        for rec in (*msg.answers, *msg.authority, *msg.additional):
            if not isinstance(rec.value, str) or any(not isinstance(t, str) for t in rec.txt):
                raise AssertionError(f"record value of the wrong type: {rec!r}")
        _ = msg.truncated
        for resolved in dns.resolved_addresses(msg):  # the binding's DnsAnswer content
            if not resolved.names or resolved.names[0] != msg.questions[0][0]:
                raise AssertionError(f"an answer off the question's chain: {resolved!r}")
    with contextlib.suppress(AnalyzerError):
        parts = dns.split_tcp_messages(data)
        if sum(len(p) + 2 for p in parts) != len(data):
            raise AssertionError("split_tcp_messages lost or invented bytes")
    dns.split_tcp_messages(data, partial_ok=True)


def seeds() -> list[bytes]:
    """The DNS payloads of the corpus."""
    from tests.monitor.analyzers.payloads import tcp_streams, udp_payloads
    from tests.truth.paths import PCAPS

    out: list[bytes] = []
    for pcap in sorted(p for p in PCAPS.rglob("*") if p.is_file()):
        for port in (53, 5353, 5355):
            out += [p.payload for p in udp_payloads(pcap, port)]
        for stream in tcp_streams(pcap, 53).values():
            out.append(stream)
            out += dns.split_tcp_messages(stream, partial_ok=True)
    return list(dict.fromkeys(o for o in out if o))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
