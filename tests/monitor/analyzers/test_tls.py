"""TLS analyzer: golden checks (Zeek, nDPI, Arkime), a hand-built Hikvision certificate, malformed input.

Golden sources: Zeek `ssl.log`/`x509.log` (tls/ecdhe.pcap); nDPI's `[Hostname/SNI]`, `[TLSvX]`,
`[(Advertised) ALPNs]`, `[Subject]` and `[Issuer]` on every TLS flow of the nDPI captures; Arkime
`tls13.test` (JA3/JA3S strings: versions, cipher suites and extension lists, and the TLS 1.3 draft
version). The Hikvision factory certificate (`O=HIKVISION`) is hand-built: see
`tests/data/fixtures/tls/README.md`; the DER helpers below build the malformed variants.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.analyzers import AnalyzerError
from monitor.analyzers.tls import (
    MAX_RECORD,
    CertificateInfo,
    ClientHello,
    DistinguishedName,
    HandshakeMessage,
    ServerHello,
    TlsAlert,
    TlsMessage,
    TlsStreamParser,
    looks_like,
    parse,
    parse_records,
    version_name,
)
from tests.monitor.analyzers.payloads import tcp_streams
from tests.monitor.analyzers.sniffing import sniffer_verdicts
from tests.truth.arkime import read_arkime_test
from tests.truth.ndpi import NdpiFlow, read_ndpi_out
from tests.truth.paths import arkime_pairs, ndpi_pairs, pcap, zeek_log_pairs
from tests.truth.zeek import as_list, as_str, read_zeek_log

FIXTURES = Path(__file__).parents[2] / "data" / "fixtures" / "tls"


# --- helpers --------------------------------------------------------------------------------------


def der(tag: int, content: bytes) -> bytes:
    """A DER item with a minimal definite length."""
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + content


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return der(0x06, bytes(body))


def name(*attrs: tuple[str, str]) -> bytes:
    rdns = b"".join(der(0x31, der(0x30, oid(t) + der(0x0C, v.encode()))) for t, v in attrs)
    return der(0x30, rdns)


def certificate(subject: bytes, issuer: bytes) -> bytes:
    alg = der(0x30, oid("1.2.840.113549.1.1.11") + b"\x05\x00")
    validity = der(0x30, der(0x17, b"200101000000Z") + der(0x17, b"300101000000Z"))
    spki = der(0x30, der(0x30, oid("1.2.840.113549.1.1.1") + b"\x05\x00") + der(0x03, b"\x00\x01"))
    tbs = der(
        0x30, der(0xA0, der(0x02, b"\x02")) + der(0x02, b"\x01") + alg + issuer + validity + subject + spki
    )
    return der(0x30, tbs + alg + der(0x03, b"\x00" + bytes(16)))


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def record(content_type: int, fragment: bytes, version: int = 0x0303) -> bytes:
    return bytes([content_type]) + version.to_bytes(2, "big") + len(fragment).to_bytes(2, "big") + fragment


def ext(ext_type: int, data: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def vec(len_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(len_size, "big") + data


def client_hello(*extensions: bytes, version: int = 0x0303) -> bytes:
    body = (
        version.to_bytes(2, "big")
        + bytes(32)
        + vec(1, bytes(32))
        + vec(2, bytes.fromhex("1a1a13011302c02f"))
        + vec(1, b"\x00")
        + vec(2, b"".join(extensions))
    )
    return handshake(1, body)


def sni(host: bytes) -> bytes:
    return ext(0, vec(2, b"\x00" + vec(2, host)))


def messages(data: bytes, size: int) -> tuple[list[TlsMessage], TlsStreamParser]:
    parser = TlsStreamParser()
    out: list[TlsMessage] = []
    for i in range(0, max(len(data), 1), size):
        out.extend(parser.feed(data[i : i + size]))
    return out, parser


def _first(msgs: list[TlsMessage], kind: type) -> object | None:
    return next((m for m in msgs if isinstance(m, kind)), None)


def _table(title: str, rows: list[tuple[str, int, int]]) -> None:
    print(f"\n{title}")
    print(f"  {'check':<44} {'checked':>8} {'agree':>8}")
    for check, checked, agree in rows:
        print(f"  {check:<44} {checked:>8} {agree:>8}")


# --- golden: Zeek ---------------------------------------------------------------------------------

_ZEEK_SSL = [(c, log) for c, log in zeek_log_pairs() if log.name == "ssl.log"]


@pytest.mark.parametrize("capture,log_path", _ZEEK_SSL, ids=[c.name for c, _ in _ZEEK_SSL])
def test_zeek_ssl_and_x509(capture: Path, log_path: Path) -> None:
    ssl = read_zeek_log(log_path)
    x509 = {as_str(r["fingerprint"]): r for r in read_zeek_log(log_path.parent / "x509.log").rows}
    streams = tcp_streams(capture)
    rows: list[tuple[str, int, int]] = []
    sni_n = sni_ok = ver_n = ver_ok = cert_n = cert_ok = 0
    for row in ssl.rows:
        orig = (as_str(row["id.orig_h"]) or "", int(as_str(row["id.orig_p"]) or 0))
        resp = (as_str(row["id.resp_h"]) or "", int(as_str(row["id.resp_p"]) or 0))
        client, _ = messages(streams[(*orig, *resp)], 1460)
        server, _ = messages(streams[(*resp, *orig)], 1460)
        hello = _first(client, ClientHello)
        shello = _first(server, ServerHello)
        cert = _first(server, CertificateInfo)
        assert isinstance(hello, ClientHello) and isinstance(shello, ServerHello)
        sni_n += 1
        sni_ok += hello.server_name == as_str(row["server_name"])
        ver_n += 1
        # Zeek writes "TLSv12"; version_name gives "TLS 1.2".
        ver_ok += version_name(shello.version).replace("TLS ", "TLSv").replace(".", "") == as_str(
            row["version"]
        )
        chain = as_list(row["cert_chain_fps"])
        if chain:
            cert_n += 1
            host = x509[chain[0]]
            assert isinstance(cert, CertificateInfo)
            # Zeek prints names in RFC 2253 order (last RDN first) without spaces.
            expected = (as_str(host["certificate.subject"]), as_str(host["certificate.issuer"]))
            got = (
                ",".join(f"{k}={v}" for k, v in reversed(cert.subject.attributes)),
                ",".join(f"{k}={v}" for k, v in reversed(cert.issuer.attributes)),
            )
            serial_ok = cert.serial.upper().lstrip("0") == (as_str(host["certificate.serial"]) or "").lstrip(
                "0"
            )
            cert_ok += expected == got and serial_ok and cert.chain_length == len(chain)
    rows = [
        ("server_name", sni_n, sni_ok),
        ("version", ver_n, ver_ok),
        ("x509 subject/issuer/serial", cert_n, cert_ok),
    ]
    _table(f"Zeek {capture.name} ssl.log/x509.log vs camwatch tls", rows)
    assert all(n == ok for _, n, ok in rows) and sni_n > 0 and cert_n > 0


# --- golden: nDPI ---------------------------------------------------------------------------------

# nDPI prints only these attributes in [Subject]/[Issuer] (it drops DC, UID, serialNumber, ...).
_NDPI_DN_ATTRS = ("C", "ST", "L", "O", "OU", "CN", "emailAddress")


def _ndpi_dn(dn: DistinguishedName) -> str:
    return ", ".join(f"{k}={v}" for k, v in dn.attributes if k in _NDPI_DN_ATTRS)


def _ndpi_tls_flows() -> list[tuple[Path, list[NdpiFlow]]]:
    out = []
    for capture, truth in ndpi_pairs():
        flows = [f for f in read_ndpi_out(truth).flows if f.l4 == "TCP" and "TLS" in f.protocol]
        if flows:
            out.append((capture, flows))
    return out


_NDPI_TLS = _ndpi_tls_flows()


@pytest.mark.parametrize("capture,flows", _NDPI_TLS, ids=[c.name for c, _ in _NDPI_TLS])
def test_ndpi_tls_attributes(capture: Path, flows: list[NdpiFlow]) -> None:
    streams = tcp_streams(capture)
    counts = {k: [0, 0] for k in ("Hostname/SNI", "TLS version", "ALPNs", "Subject/Issuer")}
    mismatches = []
    for flow in flows:
        client, _ = messages(streams.get((flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port), b""), 1448)
        server, _ = messages(streams.get((flow.dst_ip, flow.dst_port, flow.src_ip, flow.src_port), b""), 1448)
        hello = _first(client, ClientHello)
        cert = _first(server, CertificateInfo)
        checks: list[tuple[str, object, object]] = []
        if flow.hostname is not None:
            checks.append(
                ("Hostname/SNI", flow.hostname, hello.server_name if isinstance(hello, ClientHello) else None)
            )
        version = next((k for k in flow.attrs if k.startswith("TLSv")), None)
        if version is not None:
            # nDPI reports the highest version the client offered.
            got = version_name(hello.max_version) if isinstance(hello, ClientHello) else None
            checks.append(("TLS version", version, got and got.replace("TLS ", "TLSv").replace("v1.0", "v1")))
        if "(Advertised) ALPNs" in flow.attrs:
            alpn = ";".join(hello.alpn) if isinstance(hello, ClientHello) else None
            checks.append(("ALPNs", flow.attrs["(Advertised) ALPNs"], alpn))
        if "Subject" in flow.attrs:
            expected = (flow.attrs["Subject"], flow.attrs.get("Issuer"))
            got_dn = (
                (_ndpi_dn(cert.subject), _ndpi_dn(cert.issuer)) if isinstance(cert, CertificateInfo) else None
            )
            checks.append(("Subject/Issuer", expected, got_dn))
        for check, expected_value, got_value in checks:
            counts[check][0] += 1
            if expected_value == got_value:
                counts[check][1] += 1
            else:
                mismatches.append(
                    f"flow {flow.index} {check}: expected {expected_value!r}, got {got_value!r}"
                )
    _table(
        f"nDPI {capture.name} ({len(flows)} TLS flows) vs camwatch tls",
        [(k, n, ok) for k, (n, ok) in counts.items()],
    )
    assert not mismatches, "\n".join(mismatches[:10])


# --- golden: Arkime -------------------------------------------------------------------------------


def _no_grease(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if not ((v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF))]


def test_arkime_tls13_draft() -> None:
    pairs = [(c, t) for c, t in arkime_pairs() if c.name == "tls13.pcap"]
    assert pairs
    capture, truth = pairs[0]
    session = read_arkime_test(truth)[0]
    src, dst = session["source"], session["destination"]
    streams = tcp_streams(capture)
    client, _ = messages(streams[(src["ip"], src["port"], dst["ip"], dst["port"])], 1440)
    server, sparser = messages(streams[(dst["ip"], dst["port"], src["ip"], src["port"])], 1440)
    hello = _first(client, ClientHello)
    shello = _first(server, ServerHello)
    assert isinstance(hello, ClientHello) and isinstance(shello, ServerHello)
    # JA3 = version,ciphers,extensions,groups,point formats (GREASE removed); we check the first three.
    version, ciphers, extensions = session["tls"]["ja3string"][0].split(",")[:3]
    assert hello.legacy_version == int(version)
    assert _no_grease(hello.cipher_suites) == [int(c) for c in ciphers.split("-")]
    assert _no_grease(hello.extensions) == [int(e) for e in extensions.split("-")]
    sversion, scipher, sexts = session["tls"]["ja3sstring"][0].split(",")
    assert (shello.version, shello.cipher_suite, list(shello.extensions)) == (
        int(sversion),
        int(scipher),
        [int(e) for e in sexts.split("-")],
    )
    assert (
        version_name(shello.version).replace("TLS 1.3 draft ", "TLSv1.3-draft-")
        == session["tls"]["version"][0]
    )
    assert hello.server_name == "blog.cloudflare.com" and hello.alpn == ("h2", "http/1.1")
    assert 0x7F12 in hello.versions and sparser.encrypted  # draft 18: encrypted after the ServerHello
    _table("Arkime tls13.test vs camwatch tls", [("ja3/ja3s strings, version", 1, 1)])


# --- hand-built: Hikvision factory certificate ----------------------------------------------------


def test_hikvision_certificate_der() -> None:
    info = CertificateInfo.from_der((FIXTURES / "hikvision_selfsigned.der").read_bytes())
    assert info.subject.organization == "HIKVISION"
    assert info.subject.common_name == "10.20.0.11"
    assert info.subject.organizational_unit == "Video"  # a BMPString
    assert info.self_signed and info.serial == "00c3a1b2c3d4e5f607"
    assert str(info.subject) == "C=CN, ST=ZheJiang, L=HangZhou, O=HIKVISION, OU=Video, CN=10.20.0.11"


def test_hikvision_server_flight_any_segmentation() -> None:
    data = (FIXTURES / "hikvision_server_flight.bin").read_bytes()
    whole = parse(data)
    assert [type(m) for m in whole] == [ServerHello, CertificateInfo, HandshakeMessage]
    cert = whole[1]
    assert isinstance(cert, CertificateInfo) and cert.subject.organization == "HIKVISION"
    for size in (1, 2, 3, 5, 7, 64, 100, 811):
        got, parser = messages(data, size)
        assert got == whole and parser.error is None and parser.buffered == 0


# --- behaviour ------------------------------------------------------------------------------------


def test_client_hello_fields_and_grease() -> None:
    alpn = ext(16, vec(2, vec(1, b"h2") + vec(1, b"http/1.1")))
    versions = ext(43, vec(1, bytes.fromhex("3a3a03040303")))
    hello = client_hello(ext(0x2A2A, b""), sni(b"litedev.ezvizlife.com"), alpn, versions)
    msgs = parse(record(22, hello, 0x0301))
    assert len(msgs) == 1 and isinstance(msgs[0], ClientHello)
    ch = msgs[0]
    assert ch.server_name == "litedev.ezvizlife.com" and ch.alpn == ("h2", "http/1.1")
    assert ch.versions == (0x0304, 0x0303) and ch.max_version == 0x0304
    assert ch.cipher_suites == (0x1A1A, 0x1301, 0x1302, 0xC02F) and ch.extensions == (0x2A2A, 0, 16, 43)
    assert looks_like(record(22, hello, 0x0301))


@pytest.mark.parametrize(
    "written", [b"LiteDev.EzvizLife.COM", b"litedev.ezvizlife.com.", b"LITEDEV.EZVIZLIFE.COM."]
)
def test_the_server_name_compares_in_lower_case_without_a_final_dot(written: bytes) -> None:
    # As DNS names and the policy's name rules do (docs/policy.md): else an allow rule for *.ezvizlife.com
    # would not cover a client that writes the name in capitals or with the root's dot.
    (ch,) = parse(record(22, client_hello(sni(written)), 0x0301))
    assert isinstance(ch, ClientHello) and ch.server_name == "litedev.ezvizlife.com"
    with pytest.raises(AnalyzerError, match="dots only"):
        parse(record(22, client_hello(sni(b"..")), 0x0301))


def test_hello_retry_request_and_tls13_server_hello() -> None:
    hrr_random = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    body = b"\x03\x03" + hrr_random + vec(1, b"") + b"\x13\x01\x00" + vec(2, ext(43, b"\x03\x04"))
    sh = ServerHello.parse(body)
    assert sh.hello_retry and sh.version == 0x0304 and sh.legacy_version == 0x0303
    assert version_name(0x7F12) == "TLS 1.3 draft 18" and version_name(0x0301) == "TLS 1.0"


def test_sslv2_client_hello_google_ssl() -> None:
    streams = tcp_streams(pcap("ndpi/google_ssl.pcap"))
    client, parser = messages(streams[("172.31.3.224", 42835, "216.58.212.100", 443)], 1448)
    hello = _first(client, ClientHello)
    assert isinstance(hello, ClientHello) and hello.sslv2 and hello.legacy_version == 0x0301
    assert hello.server_name is None and parser.encrypted


def test_alerts_and_encryption() -> None:
    data = record(21, b"\x02\x28") + record(20, b"\x01") + record(22, b"encrypted finished")
    got, parser = messages(data, 3)
    assert got == [TlsAlert(2, 40)] and parser.encrypted and parser.done
    # An alert longer than 2 bytes is an encrypted one: stop quietly.
    got, parser = messages(record(21, bytes(26)), 100)
    assert got == [] and parser.encrypted and parser.error is None


def test_records_and_truncation() -> None:
    data = record(22, client_hello(sni(b"a.example")))
    records, used = parse_records(data + data[:7])
    assert len(records) == 1 and used == len(data)
    with pytest.raises(AnalyzerError, match="truncated"):
        parse(data[:-1])
    with pytest.raises(AnalyzerError, match="content type"):
        parse(b"\x63\x03\x03\x00\x01\x00")


@pytest.mark.parametrize(
    "bad,reason",
    [
        (b"\x30\x80\x00\x00", "indefinite"),
        (b"\x30\x81\x05hello", "non-minimal"),
        (b"\x30\x82\x00\x85" + bytes(0x85), "non-minimal"),
        (b"\x30\x85\x00\x00\x00\x00\x01\x00", "length of 5"),
        (b"\x30\x05abc", "exceeds"),
        (b"\x3f\x01\x00", "multi-byte tag"),
    ],
)
def test_der_strict_lengths(bad: bytes, reason: str) -> None:
    with pytest.raises(AnalyzerError, match=reason):
        CertificateInfo.from_der(bad)


def test_der_name_checks() -> None:
    good = name(("2.5.4.10", "HIKVISION"), ("2.5.4.3", "cam"), ("1.2.3.4", "x"))
    dn = DistinguishedName.parse(good)
    assert dn.attributes == (("O", "HIKVISION"), ("CN", "cam"), ("1.2.3.4", "x"))
    with pytest.raises(AnalyzerError, match="trailing"):
        DistinguishedName.parse(good + b"\x00")
    cert = certificate(name(("2.5.4.3", "leaf")), name(("2.5.4.10", "CA")))
    info = CertificateInfo.from_der(cert)
    assert info.subject.common_name == "leaf" and info.issuer.organization == "CA" and not info.self_signed
    with pytest.raises(AnalyzerError):
        CertificateInfo.from_der(cert[:-1])
    # An inner length that overruns its container (but not the buffer) is caught too.
    broken = bytearray(cert)
    pos = broken.index(oid("2.5.4.3"))
    broken[pos + 1] = 0x7F
    with pytest.raises(AnalyzerError):
        CertificateInfo.from_der(bytes(broken))


def test_handshake_spanning_records_is_bounded() -> None:
    parser = TlsStreamParser(max_handshake=1024)
    header = handshake(11, bytes(60000))[:4]
    parser.feed(record(22, header + bytes(1000)))
    assert parser.error is None and parser.buffered <= 1024 + 5
    parser.feed(record(22, bytes(1000)))
    assert parser.error is not None and parser.done and parser.buffered == 0


def test_looks_like() -> None:
    assert looks_like(b"\x16\x03\x01\x02\x00\x01") and looks_like(b"\x16\x03\x03")
    assert not looks_like(b"\x16\x03\x05\x00\x10") and not looks_like(b"\x17\x03\x03\x00\x10")
    assert not looks_like(b"\x16\x03\x01\x00\x00") and not looks_like(b"\x16\x03\x01\x00\x10\x0b")
    assert not looks_like(b"") and not looks_like(b"GET / HTTP/1.1")


def test_looks_like_mid_connection() -> None:
    """Whole records of the TLS content types that fill the payload exactly: a capture that starts after
    the handshake, or a connection whose only data is an encrypted alert (ndpi/tls_alert.pcap)."""
    alert = b"\x15\x03\x03\x00\x1a" + bytes(26)
    data = b"\x17\x03\x03\x00\x20" + bytes(32)
    assert looks_like(alert) and looks_like(data) and looks_like(data + alert)
    assert looks_like(b"\x14\x03\x03\x00\x01\x01" + b"\x16\x03\x03\x00\x28" + bytes(40))  # CCS, Finished
    assert not looks_like(data[:-1]) and not looks_like(data + b"\x17")  # must fill the payload exactly
    assert not looks_like(b"\x17\x03\x03\x00\x00") and not looks_like(b"\x17\x03\x05\x00\x01\x00")
    assert not looks_like(b"\x18\x03\x03\x00\x03" + bytes(3))  # heartbeat: not how a connection is met
    assert not looks_like(b"\x19\x03\x03\x00\x01\x00") and not looks_like(data + b"\x19\x03\x03\x00\x01\x00")
    assert not looks_like(b"\x17\x02\x00\x00\x01\x00")  # SSL 2 version bytes
    big = b"\x17\x03\x03" + (MAX_RECORD + 1).to_bytes(2, "big")
    assert not looks_like(big + bytes(MAX_RECORD + 1))


def test_looks_like_agrees_with_ndpi_flow_by_flow() -> None:
    """On the nDPI captures it fires only on flows nDPI finds TLS (possibly with an application on top:
    TLS.Ookla, TLS.Sonos), and on every flow nDPI finds TLS."""
    verdicts = sniffer_verdicts(looks_like, "TCP")
    assert [str(v) for v in verdicts if v.fired and v.flow.master != "TLS" and v.flow.app != "TLS"] == []
    tls_flows = [v for v in verdicts if v.flow.protocol == "TLS"]
    assert len(tls_flows) >= 90
    assert [str(v) for v in tls_flows if not v.fired] == []


# --- malformed input: only AnalyzerError ----------------------------------------------------------


def _samples() -> list[bytes]:
    samples = [(FIXTURES / "hikvision_server_flight.bin").read_bytes()]
    for rel in ("zeek/tls/ecdhe.pcap", "ndpi/tls_alert.pcap", "arkime/tls13.pcap"):
        for data in tcp_streams(pcap(rel)).values():
            if looks_like(data):
                _, used = parse_records(data[:6000])
                samples.append(data[:used] if used else data[:600])
    return samples


_SAMPLES = _samples()


def _parse_quietly(data: bytes) -> None:
    with contextlib.suppress(AnalyzerError):
        parse(data)


@pytest.mark.parametrize("index", range(len(_SAMPLES)))
def test_truncation_at_every_length(index: int) -> None:
    data = _SAMPLES[index]
    for cut in range(len(data) + 1):
        _parse_quietly(data[:cut])
    der_blob = (FIXTURES / "hikvision_selfsigned.der").read_bytes()
    for cut in range(len(der_blob)):
        with pytest.raises(AnalyzerError):
            CertificateInfo.from_der(der_blob[:cut])


@given(st.binary(max_size=600))
@settings(max_examples=1000, deadline=None)
def test_random_bytes_raise_only_analyzer_error(data: bytes) -> None:
    _parse_quietly(data)
    _parse_quietly(b"\x16\x03\x03" + len(data).to_bytes(2, "big") + data)
    looks_like(data)
    for kind in (ClientHello, ServerHello, CertificateInfo, DistinguishedName):
        with contextlib.suppress(AnalyzerError):
            kind.parse(data)


@given(st.sampled_from(_SAMPLES), st.integers(0, 10**6), st.binary(min_size=1, max_size=6))
@settings(max_examples=1000, deadline=None)
def test_mutations_raise_only_analyzer_error(data: bytes, where: int, junk: bytes) -> None:
    where %= len(data) + 1
    _parse_quietly(data[:where] + junk + data[where + len(junk) :])


@given(st.lists(st.binary(max_size=5000), max_size=40))
@settings(max_examples=200, deadline=None)
def test_stream_bounded_on_garbage(chunks: list[bytes]) -> None:
    parser = TlsStreamParser(max_handshake=4096)
    for chunk in chunks:
        parser.feed(b"\x16\x03\x01" + chunk)
        assert parser.buffered <= 4096 + 5 + 18432


@given(st.sampled_from(_SAMPLES), st.lists(st.integers(1, 700), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_stream_segmentation_does_not_matter(data: bytes, sizes: list[int]) -> None:
    whole, _ = messages(data, len(data) or 1)
    parser = TlsStreamParser()
    got: list[TlsMessage] = []
    pos = i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        got.extend(parser.feed(data[pos : pos + size]))
        pos += size
        i += 1
    assert got == whole
