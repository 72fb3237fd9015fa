"""Fuzz the TLS analyzer: only AnalyzerError may escape ``parse`` and the message parsers (the DER walker
included); ``looks_like`` and the stream parser never raise and the stream parser stays bounded.

Run: ``python -m fuzz.fuzz_tls [runs]`` (also driven by ``fuzz/run_all.py``); not part of pytest.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from fuzz.common import feed_in_pieces
from monitor.analyzers import AnalyzerError, tls

NAME = "tls"
_ROOT = Path(__file__).parents[1]
_FIXTURES = _ROOT / "tests" / "data" / "fixtures" / "tls"
_MAX_HANDSHAKE = 4096


def parse(data: bytes) -> None:
    """Exercise every entry point on one input; raise on a real bug."""
    tls.looks_like(data)
    with contextlib.suppress(AnalyzerError):
        for msg in tls.parse(data):
            if isinstance(msg, tls.CertificateInfo):
                _ = (str(msg.subject), msg.subject.organization, msg.self_signed)
    # The record payload may be a bare handshake body or DER: try each parser on it.
    for kind in (tls.ClientHello, tls.ServerHello, tls.CertificateInfo, tls.DistinguishedName):
        with contextlib.suppress(AnalyzerError):
            kind.parse(data)
    with contextlib.suppress(AnalyzerError):
        tls.CertificateInfo.from_der(data)
    # Bound: a partial handshake message plus a partial record (its header and up to MAX_RECORD bytes).
    bound = _MAX_HANDSHAKE + tls.RECORD_HEADER + tls.MAX_RECORD
    feed_in_pieces(tls.TlsStreamParser(max_handshake=_MAX_HANDSHAKE), data, bound, "TlsStreamParser")


def seeds() -> list[bytes]:
    """The hand-built Hikvision flight and certificate, and the TLS streams of the corpus."""
    out = [p.read_bytes() for p in sorted(_FIXTURES.glob("*")) if p.suffix in (".bin", ".der")]
    try:
        from tests.monitor.analyzers.payloads import tcp_streams

        pcaps = _ROOT / "tests" / "data" / "corpus" / "pcaps"
        for rel in (
            "zeek/tls/ecdhe.pcap",
            "ndpi/tls_alert.pcap",
            "arkime/tls13.pcap",
            "ndpi/google_ssl.pcap",
        ):
            for v in tcp_streams(pcaps / rel).values():
                if v:
                    _, used = tls.parse_records(v[:8192]) if tls.looks_like(v) else ([], 0)
                    out.append(v[: used or 2048])
    except (ImportError, OSError, AnalyzerError):
        pass
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    from fuzz.common import main

    sys.exit(main(NAME, parse, seeds))
